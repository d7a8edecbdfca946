//! Namespace and cluster commands: `cat`, `ls`, `mkdir`, `rm`, `mv`, `stat`, `du`, `df`,
//! `fsck`. Each error names its path (`dfs: PATH: cause`); commands over several paths go on
//! after a failure and exit 1 at the end, as coreutils do.

use std::future::Future;
use std::io::Write;
use std::pin::Pin;

use anyhow::Context;
use clap::Args;
use rdfs_client::{Client, ClientError, FileAttr, DEFAULT_DIR_MODE};
use rdfs_proto::ErrorCode;
use serde_json::{json, Value};

use crate::format::{
    dfs_basename, dfs_path, entry_json, human_bytes, is_dir, long_line, mode_string, secs,
    time_string, type_name,
};
use crate::{report, AlreadyReported};

#[derive(Debug, Args)]
pub struct CatArgs {
    /// Files to print.
    #[arg(required = true)]
    paths: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Long format: mode, size in bytes, mtime, name.
    #[arg(short = 'l', long)]
    long: bool,
    /// List subdirectories recursively.
    #[arg(short = 'R', long)]
    recursive: bool,
    /// Print one JSON array of entries.
    #[arg(long)]
    json: bool,
    /// Directory or file to list.
    #[arg(default_value = "/")]
    path: String,
}

#[derive(Debug, Args)]
pub struct MkdirArgs {
    /// Create missing parents; no error if the directory exists.
    #[arg(short = 'p', long)]
    parents: bool,
    /// Directories to create.
    #[arg(required = true)]
    paths: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Remove directories and their contents.
    #[arg(short = 'r', short_alias = 'R', long)]
    recursive: bool,
    /// Remove at once instead of moving to your trash (`dfs trash`).
    #[arg(long)]
    skip_trash: bool,
    /// Paths to remove.
    #[arg(required = true)]
    paths: Vec<String>,
}

#[derive(Debug, Args)]
pub struct MvArgs {
    /// Source path.
    src: String,
    /// Destination path; an existing directory receives DST/basename(SRC).
    dst: String,
}

#[derive(Debug, Args)]
pub struct StatArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Path to describe.
    path: String,
}

#[derive(Debug, Args)]
pub struct DuArgs {
    /// Print only the total for PATH.
    #[arg(short = 's', long)]
    summarize: bool,
    /// Path to measure.
    #[arg(default_value = "/")]
    path: String,
}

#[derive(Debug, Args)]
pub struct DfArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct FsckArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// List every chunk with its replica count and problem.
    #[arg(long)]
    chunks: bool,
    /// List every file with its worst problem.
    #[arg(long)]
    files: bool,
    /// With the chunk list, name each replica's chunkserver (implies --chunks).
    #[arg(long)]
    locations: bool,
    /// Subtree to check.
    #[arg(default_value = "/")]
    path: String,
}

/// Attributes of `path`, or `None` when it does not exist.
pub async fn stat_opt(client: &Client, path: &str) -> Result<Option<FileAttr>, ClientError> {
    match client.stat(path).await {
        Ok(attr) => Ok(Some(attr)),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// An error about `path` with a wire code and no detail (`dfs: PATH: Is a directory`).
pub fn path_error(path: &str, code: ErrorCode) -> anyhow::Error {
    anyhow::Error::msg(code.describe()).context(path.to_string())
}

/// Turns a list of per-path failures into the exit status.
fn finish(failed: bool) -> anyhow::Result<()> {
    if failed {
        Err(AlreadyReported.into())
    } else {
        Ok(())
    }
}

pub async fn cat(client: &Client, args: CatArgs) -> anyhow::Result<()> {
    let mut failed = false;
    for arg in &args.paths {
        let path = dfs_path(arg);
        let res = match crate::transfer::stdout_file() {
            Ok(out) => crate::transfer::copy_out(client, &path, out, |_| {})
                .await
                .with_context(|| path.clone()),
            Err(e) => Err(e),
        };
        if let Err(e) = res {
            report(&e);
            failed = true;
        }
    }
    finish(failed)
}

pub async fn ls(client: &Client, args: LsArgs) -> anyhow::Result<()> {
    let path = dfs_path(&args.path);
    let attr = client.stat(&path).await.with_context(|| path.clone())?;
    let mut out = std::io::stdout().lock();
    if !is_dir(&attr) {
        let name = dfs_basename(&path).to_string();
        if args.json {
            let all = Value::Array(vec![entry_json(&name, &path, &attr)]);
            writeln!(out, "{all}")?;
        } else if args.long {
            writeln!(out, "{}", long_line(&path, &attr))?;
        } else {
            writeln!(out, "{path}")?;
        }
        return Ok(());
    }
    let mut json_entries = Vec::new();
    // Directories still to list, in display order (a stack, so pushed in reverse).
    let mut pending = vec![path.clone()];
    let mut first = true;
    while let Some(dir) = pending.pop() {
        let entries = client.list(&dir).await.with_context(|| dir.clone())?;
        if args.recursive && !args.json {
            if !first {
                writeln!(out)?;
            }
            writeln!(out, "{dir}:")?;
        }
        first = false;
        let mut subdirs = Vec::new();
        for entry in &entries {
            let Some(attr) = entry.attr.as_ref() else {
                continue;
            };
            let child = rdfs_proto::path::join(&dir, &entry.name);
            if args.json {
                json_entries.push(entry_json(&entry.name, &child, attr));
            } else if args.long {
                writeln!(out, "{}", long_line(&entry.name, attr))?;
            } else {
                writeln!(out, "{}", entry.name)?;
            }
            if args.recursive && is_dir(attr) {
                subdirs.push(child);
            }
        }
        pending.extend(subdirs.into_iter().rev());
    }
    if args.json {
        writeln!(out, "{}", Value::Array(json_entries))?;
    }
    Ok(())
}

pub async fn mkdir(client: &Client, args: MkdirArgs) -> anyhow::Result<()> {
    let mut failed = false;
    for arg in &args.paths {
        let path = dfs_path(arg);
        let res = client.mkdir(&path, DEFAULT_DIR_MODE, args.parents).await;
        let res = match res {
            // `mkdir -p` of an existing directory succeeds, as in coreutils.
            Err(e) if args.parents && e.code() == ErrorCode::AlreadyExists => {
                match client.stat(&path).await {
                    Ok(attr) if is_dir(&attr) => Ok(()),
                    _ => Err(e),
                }
            }
            other => other.map(|_| ()),
        };
        if let Err(e) = res {
            report(&anyhow::Error::new(e).context(path));
            failed = true;
        }
    }
    finish(failed)
}

pub async fn rm(client: &Client, args: RmArgs) -> anyhow::Result<()> {
    let mut failed = false;
    for arg in &args.paths {
        let path = dfs_path(arg);
        if let Err(e) = rm_one(client, &path, args.recursive, args.skip_trash).await {
            report(&e);
            failed = true;
        }
    }
    finish(failed)
}

async fn rm_one(
    client: &Client,
    path: &str,
    recursive: bool,
    skip_trash: bool,
) -> anyhow::Result<()> {
    if path == "/" {
        return Err(anyhow::Error::msg("refusing to remove the root directory").context("/"));
    }
    if !recursive {
        let attr = client.stat(path).await.with_context(|| path.to_string())?;
        if is_dir(&attr) {
            return Err(path_error(path, ErrorCode::IsADirectory));
        }
    }
    let removed = if skip_trash {
        client.delete(path, recursive).await
    } else {
        client.trash(path, recursive).await
    };
    removed.with_context(|| path.to_string())
}

pub async fn mv(client: &Client, args: MvArgs) -> anyhow::Result<()> {
    let src = dfs_path(&args.src);
    let mut dst = dfs_path(&args.dst);
    // Like mv(1): moving into an existing directory keeps the source's name.
    if let Some(attr) = stat_opt(client, &dst).await.with_context(|| dst.clone())? {
        if is_dir(&attr) {
            let name = dfs_basename(&src);
            if name.is_empty() {
                return Err(path_error(&src, ErrorCode::InvalidArgument));
            }
            dst = rdfs_proto::path::join(&dst, name);
        }
    }
    client.rename(&src, &dst).await.with_context(|| src.clone())
}

pub async fn stat(client: &Client, args: StatArgs) -> anyhow::Result<()> {
    let path = dfs_path(&args.path);
    let attr = client.stat(&path).await.with_context(|| path.clone())?;
    let chunks = if is_dir(&attr) {
        Vec::new()
    } else {
        client
            .chunk_locations(&path)
            .await
            .with_context(|| path.clone())?
            .chunks
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let chunk_list: Vec<Value> = chunks
            .iter()
            .map(|c| {
                json!({
                    "index": c.index,
                    "id": c.chunk_id,
                    "version": c.version,
                    "replicas": c.replicas,
                    "primary": c.primary,
                })
            })
            .collect();
        let v = json!({
            "path": path,
            "type": type_name(&attr),
            "size": attr.size,
            "mode": attr.mode,
            "uid": attr.uid,
            "gid": attr.gid,
            "mtime": secs(attr.mtime_ns),
            "mtime_ns": attr.mtime_ns,
            "ctime": secs(attr.ctime_ns),
            "inode": attr.inode,
            "nlink": attr.nlink,
            "replication": attr.replication,
            "chunks": chunk_list,
        });
        writeln!(out, "{v}")?;
        return Ok(());
    }
    writeln!(out, "path:        {path}")?;
    writeln!(out, "type:        {}", type_name(&attr))?;
    writeln!(out, "size:        {}", attr.size)?;
    writeln!(
        out,
        "mode:        {:04o} ({})",
        attr.mode,
        mode_string(&attr)
    )?;
    writeln!(out, "uid:         {}", attr.uid)?;
    writeln!(out, "gid:         {}", attr.gid)?;
    writeln!(out, "mtime:       {}", time_string(attr.mtime_ns))?;
    writeln!(out, "inode:       {}", attr.inode)?;
    if !is_dir(&attr) {
        writeln!(out, "replication: {}", attr.replication)?;
        writeln!(out, "chunks:      {}", chunks.len())?;
        for c in &chunks {
            writeln!(
                out,
                "  [{}] id {} version {} replicas {}",
                c.index,
                c.chunk_id,
                c.version,
                if c.replicas.is_empty() {
                    "(none)".to_string()
                } else {
                    c.replicas.join(",")
                }
            )?;
        }
    }
    Ok(())
}

pub async fn du(client: &Client, args: DuArgs) -> anyhow::Result<()> {
    let path = dfs_path(&args.path);
    let attr = client.stat(&path).await.with_context(|| path.clone())?;
    let mut lines = Vec::new();
    let total = if is_dir(&attr) {
        du_dir(client, path.clone(), !args.summarize, &mut lines).await?
    } else {
        attr.size
    };
    let mut out = std::io::stdout().lock();
    for (size, dir) in &lines {
        writeln!(out, "{size}\t{dir}")?;
    }
    // Without -s the last line of du_dir already is PATH itself.
    if args.summarize || !is_dir(&attr) {
        writeln!(out, "{total}\t{path}")?;
    }
    Ok(())
}

/// Bytes under `dir`; with `each`, records every directory's total, children first (du order).
/// Recursion depth is bounded by the namespace's maximum path depth.
fn du_dir<'a>(
    client: &'a Client,
    dir: String,
    each: bool,
    lines: &'a mut Vec<(u64, String)>,
) -> Pin<Box<dyn Future<Output = anyhow::Result<u64>> + 'a>> {
    Box::pin(async move {
        let entries = client.list(&dir).await.with_context(|| dir.clone())?;
        let mut total = 0u64;
        for entry in entries {
            let Some(attr) = entry.attr else { continue };
            if is_dir(&attr) {
                let child = rdfs_proto::path::join(&dir, &entry.name);
                total = total.saturating_add(du_dir(client, child, each, lines).await?);
            } else {
                total = total.saturating_add(attr.size);
            }
        }
        if each {
            lines.push((total, dir));
        }
        Ok(total)
    })
}

pub async fn df(client: &Client, args: DfArgs) -> anyhow::Result<()> {
    let status = client.cluster_status().await.context("cluster status")?;
    let free = status.capacity.saturating_sub(status.used);
    let live = status
        .chunkservers
        .iter()
        .filter(|c| c.state == "live")
        .count();
    let mut out = std::io::stdout().lock();
    if args.json {
        // The same per-server shape as `dfs admin report --json` and the dashboard's API.
        let servers: Vec<Value> = status
            .chunkservers
            .iter()
            .map(rdfs_master::dashboard::json::server_json)
            .collect();
        let v = json!({
            "capacity": status.capacity,
            "used": status.used,
            "free": free,
            "chunkservers": servers,
            "live_chunkservers": live,
            "files": status.files,
            "dirs": status.dirs,
            "chunks": status.chunks,
            "under_replicated": status.under_replicated,
            "safe_mode": status.safe_mode,
        });
        writeln!(out, "{v}")?;
        return Ok(());
    }
    let use_pct = if status.capacity == 0 {
        0.0
    } else {
        status.used as f64 * 100.0 / status.capacity as f64
    };
    writeln!(
        out,
        "{:>16} {:>16} {:>16} {:>6}  Chunkservers",
        "Capacity", "Used", "Free", "Use%"
    )?;
    writeln!(
        out,
        "{:>16} {:>16} {:>16} {:>5.1}%  {live}/{}",
        status.capacity,
        status.used,
        free,
        use_pct,
        status.chunkservers.len()
    )?;
    writeln!(
        out,
        "({} capacity, {} used, {} free{})",
        human_bytes(status.capacity),
        human_bytes(status.used),
        human_bytes(free),
        if status.safe_mode {
            "; master in safe mode"
        } else {
            ""
        }
    )?;
    if !status.chunkservers.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "{:<24} {:<15} {:>16} {:>16} {:>8}",
            "Chunkserver", "State", "Capacity", "Used", "Chunks"
        )?;
        for c in &status.chunkservers {
            writeln!(
                out,
                "{:<24} {:<15} {:>16} {:>16} {:>8}",
                c.addr, c.state, c.capacity, c.used, c.chunks
            )?;
        }
    }
    Ok(())
}

pub async fn fsck(client: &Client, args: FsckArgs) -> anyhow::Result<()> {
    let path = dfs_path(&args.path);
    let list_chunks = args.chunks || args.locations;
    let report_data = client
        .fsck_lists(&path, list_chunks, args.files)
        .await
        .with_context(|| path.clone())?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut v = json!({
            "path": path,
            "files": report_data.files,
            "dirs": report_data.dirs,
            "chunks": report_data.chunks,
            "under_replicated": report_data.under_replicated,
            "over_replicated": report_data.over_replicated,
            "corrupt": report_data.corrupt,
            "missing": report_data.missing,
            "total_bytes": report_data.total_bytes,
            "healthy": report_data.healthy,
        });
        if args.files {
            let list: Vec<Value> = report_data
                .files_detail
                .iter()
                .map(|f| {
                    json!({
                        "path": f.path,
                        "size": f.size,
                        "chunks": f.chunks,
                        "replication": f.expected,
                        "problem": f.problem,
                    })
                })
                .collect();
            v["files_detail"] = Value::Array(list);
        }
        if list_chunks {
            let list: Vec<Value> = report_data
                .chunks_detail
                .iter()
                .map(|c| {
                    let mut v = json!({
                        "path": c.path,
                        "index": c.index,
                        "id": c.chunk_id,
                        "version": c.version,
                        "expected": c.expected,
                        "live": c.live,
                        "problem": c.problem,
                    });
                    if args.locations || args.chunks {
                        v["replicas"] = json!(c.replicas);
                    }
                    v
                })
                .collect();
            v["chunks_detail"] = Value::Array(list);
        }
        writeln!(out, "{v}")?;
    } else {
        writeln!(out, "fsck {path}")?;
        writeln!(out, "  files:            {}", report_data.files)?;
        writeln!(out, "  directories:      {}", report_data.dirs)?;
        writeln!(out, "  bytes:            {}", report_data.total_bytes)?;
        writeln!(out, "  chunks:           {}", report_data.chunks)?;
        writeln!(out, "  under-replicated: {}", report_data.under_replicated)?;
        writeln!(out, "  over-replicated:  {}", report_data.over_replicated)?;
        writeln!(out, "  corrupt:          {}", report_data.corrupt)?;
        writeln!(out, "  missing:          {}", report_data.missing)?;
        for f in &report_data.files_detail {
            writeln!(
                out,
                "  {} {} bytes, {} chunks, replication {}: {}",
                f.path,
                f.size,
                f.chunks,
                f.expected,
                if f.problem.is_empty() {
                    "OK".to_string()
                } else {
                    f.problem.to_uppercase()
                }
            )?;
        }
        if list_chunks {
            for c in &report_data.chunks_detail {
                let at = if args.locations {
                    format!(" at {}", c.replicas.join(","))
                } else {
                    String::new()
                };
                writeln!(
                    out,
                    "  {}[{}] id {} v{} {}/{} live{}{}",
                    c.path,
                    c.index,
                    c.chunk_id,
                    c.version,
                    c.live,
                    c.expected,
                    at,
                    if c.problem.is_empty() {
                        String::new()
                    } else {
                        format!(" {}", c.problem.to_uppercase())
                    }
                )?;
            }
        }
        writeln!(
            out,
            "Status: {}",
            if report_data.healthy {
                "HEALTHY"
            } else {
                "UNHEALTHY"
            }
        )?;
    }
    out.flush()?;
    // JSON consumers read `healthy` (and poll fsck while the cluster heals), so only the
    // human report turns an unhealthy file system into a failing exit status.
    if report_data.healthy || args.json {
        Ok(())
    } else {
        Err(anyhow::Error::msg("file system is not healthy").context(path))
    }
}
