//! `dfs trash ls|restore|empty`: the per-user trash `dfs rm` moves entries to (purged by the
//! master after `--trash-grace`).

use std::io::Write;

use anyhow::Context;
use clap::{Args, Subcommand};
use rdfs_client::{Client, TrashTarget};
use serde_json::{json, Value};

use crate::format::{dfs_path, secs, time_string, type_name};

#[derive(Debug, Subcommand)]
pub enum TrashCommand {
    /// List your trashed entries, newest first.
    Ls(LsArgs),
    /// Move a trashed entry back (to where it was, or --to DST).
    Restore(RestoreArgs),
    /// Remove every entry of your trash now.
    Empty,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print one JSON array.
    #[arg(long)]
    json: bool,
    /// Every user's entries (root only).
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The path the entry had (its most recent deletion), or with --name the entry name.
    path: String,
    /// PATH is a trash entry name as `dfs trash ls` shows it.
    #[arg(long)]
    name: bool,
    /// Restore here instead (missing parent directories are created).
    #[arg(long)]
    to: Option<String>,
}

pub async fn run(client: &Client, command: TrashCommand) -> anyhow::Result<()> {
    match command {
        TrashCommand::Ls(args) => ls(client, args).await,
        TrashCommand::Restore(args) => restore(client, args).await,
        TrashCommand::Empty => {
            let n = client.empty_trash().await.context("trash")?;
            println!("{n} entries removed");
            Ok(())
        }
    }
}

async fn ls(client: &Client, args: LsArgs) -> anyhow::Result<()> {
    let (entries, more) = client.list_trash(args.all).await.context("trash")?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let list: Vec<Value> = entries
            .iter()
            .map(|e| {
                let attr = e.attr.clone().unwrap_or_default();
                json!({
                    "name": e.name,
                    "origin": e.origin,
                    "deleted": secs(e.deleted_ns),
                    "deleted_ns": e.deleted_ns,
                    "expires": secs(e.expires_ns),
                    "uid": e.uid,
                    "type": type_name(&attr),
                    "size": attr.size,
                })
            })
            .collect();
        writeln!(out, "{}", Value::Array(list))?;
        return Ok(());
    }
    for e in &entries {
        let attr = e.attr.clone().unwrap_or_default();
        writeln!(
            out,
            "{}  {:>12}  {:<4}  {}  ({}, purged {})",
            time_string(e.deleted_ns),
            attr.size,
            type_name(&attr),
            e.origin,
            e.name,
            time_string(e.expires_ns)
        )?;
    }
    if more {
        writeln!(out, "(more entries not shown)")?;
    }
    Ok(())
}

async fn restore(client: &Client, args: RestoreArgs) -> anyhow::Result<()> {
    let (which, shown) = if args.name {
        (TrashTarget::Name(args.path.clone()), args.path.clone())
    } else {
        let p = dfs_path(&args.path);
        (TrashTarget::Path(p.clone()), p)
    };
    let to = args.to.as_deref().map(dfs_path);
    let restored = client
        .restore_trash(&which, to.as_deref())
        .await
        .with_context(|| shown.clone())?;
    println!("restored {restored}");
    Ok(())
}
