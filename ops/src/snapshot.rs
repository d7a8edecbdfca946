//! `dfs snapshot SRC DST`: a copy-on-write snapshot of a file or a directory tree. Like
//! `mv`, an existing directory DST receives `DST/basename(SRC)`; an existing file is an error.

use anyhow::Context;
use clap::Args;
use rdfs_client::Client;
use rdfs_proto::ErrorCode;

use crate::commands::{path_error, stat_opt};
use crate::format::{dfs_basename, dfs_path, is_dir};

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// File or directory to snapshot.
    src: String,
    /// Name of the snapshot (an existing directory receives DST/basename(SRC)).
    dst: String,
    /// Print what was copied.
    #[arg(short = 'v', long)]
    verbose: bool,
}

pub async fn snapshot(client: &Client, args: SnapshotArgs) -> anyhow::Result<()> {
    let src = dfs_path(&args.src);
    let mut dst = dfs_path(&args.dst);
    if let Some(attr) = stat_opt(client, &dst).await.with_context(|| dst.clone())? {
        if !is_dir(&attr) {
            return Err(path_error(&dst, ErrorCode::AlreadyExists));
        }
        let name = dfs_basename(&src);
        if name.is_empty() {
            return Err(path_error(&src, ErrorCode::InvalidArgument));
        }
        dst = rdfs_proto::path::join(&dst, name);
    }
    let info = client
        .snapshot(&src, &dst)
        .await
        .with_context(|| src.clone())?;
    if args.verbose {
        println!(
            "{src} -> {dst}: {} inodes, {} shared chunks",
            info.inodes, info.chunks
        );
    }
    Ok(())
}
