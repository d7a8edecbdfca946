//! `dfs put` and `dfs get`: `cp -r` semantics between the local file system and rdfs.
//!
//! - An existing directory DEST receives `DEST/basename(SRC)`; a missing DEST becomes the copy.
//! - Several sources need DEST to be an existing directory.
//! - An existing file at the target is an error unless `-f`.
//! - Directories are copied recursively (into an existing target directory, merging).
//!
//! A failed file copy removes its partial target, so nothing that looks complete is left;
//! so does Ctrl-C/SIGTERM during `put` (the targets being written are deleted before exit).
//! Symbolic links inside a tree are skipped with a warning (never followed, so link loops
//! cannot recurse).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use rdfs_client::{Client, FileAttr, DEFAULT_DIR_MODE};
use rdfs_proto::ErrorCode;
use tokio::io::AsyncRead;

use crate::commands::{path_error, stat_opt};
use crate::format::{dfs_basename, dfs_path, is_dir};
use crate::AlreadyReported;

/// Targets of `put` being written right now: removed on Ctrl-C/SIGTERM so an interrupted
/// put never leaves a file that looks complete.
static IN_FLIGHT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn in_flight() -> std::sync::MutexGuard<'static, Vec<String>> {
    IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Exit status of a command stopped by SIGINT (128 + 2), as shells report it.
const EXIT_INTERRUPTED: i32 = 130;

/// Runs `work` until it ends or a SIGINT/SIGTERM arrives; then deletes the partial targets.
async fn interruptible(
    client: &Client,
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    tokio::select! {
        r = work => r,
        _ = term.recv() => cleanup_and_exit(client).await,
        _ = int.recv() => cleanup_and_exit(client).await,
    }
}

async fn cleanup_and_exit(client: &Client) -> ! {
    let targets: Vec<String> = std::mem::take(&mut *in_flight());
    for t in targets {
        match client.delete(&t, false).await {
            Ok(()) => eprintln!("dfs: {t}: interrupted; partial file removed"),
            Err(e) => eprintln!("dfs: {t}: interrupted; could not remove the partial file: {e}"),
        }
    }
    std::process::exit(EXIT_INTERRUPTED);
}

/// Files at most this big are copied several at a time when putting a directory tree.
const SMALL_FILE_BYTES: u64 = 4 << 20;
/// Small files of a tree copied at once (bounds memory to this many small buffers).
const PARALLEL_SMALL_FILES: usize = 8;
/// How often a progress bar redraws.
const PROGRESS_TICK: Duration = Duration::from_millis(200);

#[derive(Debug, Args)]
#[command(override_usage = "dfs put [-f] SRC... DEST")]
pub struct PutArgs {
    /// Overwrite existing files.
    #[arg(short = 'f', long)]
    force: bool,
    /// Local sources (`-` reads stdin), then the rdfs destination.
    #[arg(required = true, num_args = 2.., value_name = "PATH")]
    paths: Vec<String>,
}

#[derive(Debug, Args)]
#[command(override_usage = "dfs get [-f] SRC... DEST")]
pub struct GetArgs {
    /// Overwrite existing local files.
    #[arg(short = 'f', long)]
    force: bool,
    /// rdfs sources, then the local destination (`-` writes one file to stdout).
    #[arg(required = true, num_args = 2.., value_name = "PATH")]
    paths: Vec<String>,
}

/// Prints an error unless it only says that errors were already printed.
fn report_once(err: &anyhow::Error) {
    if err.downcast_ref::<AlreadyReported>().is_none() {
        crate::report(err);
    }
}

fn finish(failed: bool) -> anyhow::Result<()> {
    if failed {
        Err(AlreadyReported.into())
    } else {
        Ok(())
    }
}

/// A progress bar on stderr, only when stdout is a terminal (scripts see nothing).
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(total: Option<u64>, label: &str) -> Progress {
        if !std::io::stdout().is_terminal() {
            return Progress { bar: None };
        }
        let (bar, template) = match total {
            Some(total) => (
                ProgressBar::new(total),
                "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            ),
            None => (
                ProgressBar::new_spinner(),
                "{msg} {spinner} {bytes} {binary_bytes_per_sec}",
            ),
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_string());
        bar.enable_steady_tick(PROGRESS_TICK);
        Progress { bar: Some(bar) }
    }

    /// A bar counting files rather than bytes.
    fn new_count(total: u64, label: &str) -> Progress {
        if total == 0 || !std::io::stdout().is_terminal() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::new(total);
        if let Ok(style) =
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} files ETA {eta}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_string());
        bar.enable_steady_tick(PROGRESS_TICK);
        Progress { bar: Some(bar) }
    }

    /// Runs `f` (printing an error) without the bar drawing over it.
    fn suspend(&self, f: impl FnOnce()) {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    fn set(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Splits `SRC... DEST` (clap guarantees at least two).
fn split_last(paths: &[String]) -> anyhow::Result<(&[String], &str)> {
    match paths.split_last() {
        Some((dest, sources)) if !sources.is_empty() => Ok((sources, dest.as_str())),
        _ => anyhow::bail!("need at least one source and a destination"),
    }
}

pub async fn put(client: &Client, args: PutArgs) -> anyhow::Result<()> {
    interruptible(client, put_all(client, args)).await
}

async fn put_all(client: &Client, args: PutArgs) -> anyhow::Result<()> {
    let (sources, raw_dest) = split_last(&args.paths)?;
    let dest = dfs_path(raw_dest);
    let dest_attr = stat_opt(client, &dest)
        .await
        .with_context(|| dest.clone())?;
    let dest_is_dir = dest_attr.as_ref().is_some_and(is_dir);
    if sources.len() > 1 && !dest_is_dir {
        let code = if dest_attr.is_none() {
            ErrorCode::NotFound
        } else {
            ErrorCode::NotADirectory
        };
        return Err(path_error(&dest, code));
    }
    // `cp f missing/` and `cp f file/` fail: a trailing slash promises a directory.
    let wants_dir = raw_dest.ends_with('/') && dest != "/";
    let any_file = sources
        .iter()
        .any(|s| s == "-" || std::fs::metadata(s).is_ok_and(|m| !m.is_dir()));
    if wants_dir && !dest_is_dir && (dest_attr.is_some() || any_file) {
        return Err(path_error(&dest, ErrorCode::NotADirectory));
    }
    let mut failed = false;
    for src in sources {
        let res = async {
            let target = if dest_is_dir {
                rdfs_proto::path::join(&dest, &local_basename(src)?)
            } else {
                dest.clone()
            };
            put_one(client, src, &target, args.force).await
        }
        .await;
        if let Err(e) = res {
            report_once(&e);
            failed = true;
        }
    }
    finish(failed)
}

/// The name a local source gets inside a destination directory.
fn local_basename(src: &str) -> anyhow::Result<String> {
    if src == "-" {
        return Err(
            anyhow::Error::msg("standard input needs a file destination, not a directory")
                .context("-"),
        );
    }
    let path = Path::new(src);
    let name = match path.file_name() {
        Some(name) => name.to_os_string(),
        // `.` or `..`: the name of the directory they stand for.
        None => std::fs::canonicalize(path)
            .with_context(|| src.to_string())?
            .file_name()
            .map(|n| n.to_os_string())
            .ok_or_else(|| {
                anyhow::Error::msg("cannot copy the root directory by name")
                    .context(src.to_string())
            })?,
    };
    name.into_string()
        .map_err(|_| anyhow::Error::msg("file name is not valid UTF-8").context(src.to_string()))
}

async fn put_one(client: &Client, src: &str, target: &str, force: bool) -> anyhow::Result<()> {
    if src == "-" {
        return put_reader(
            client,
            tokio::io::stdin(),
            None,
            "stdin",
            target,
            force,
            true,
        )
        .await;
    }
    let meta = std::fs::metadata(src).with_context(|| src.to_string())?;
    if meta.is_dir() {
        put_dir(client, Path::new(src), target, force).await
    } else {
        put_file(client, Path::new(src), target, force).await
    }
}

async fn put_file(client: &Client, src: &Path, target: &str, force: bool) -> anyhow::Result<()> {
    let label = src.display().to_string();
    let file = tokio::fs::File::open(src)
        .await
        .with_context(|| label.clone())?;
    let size = file.metadata().await.with_context(|| label.clone())?.len();
    put_reader(client, file, Some(size), &label, target, force, true).await
}

async fn put_reader<R: AsyncRead>(
    client: &Client,
    reader: R,
    size: Option<u64>,
    label: &str,
    target: &str,
    force: bool,
    show_progress: bool,
) -> anyhow::Result<()> {
    if force {
        // Overwriting truncates a file; it must never replace a directory.
        if let Some(attr) = stat_opt(client, target)
            .await
            .with_context(|| target.to_string())?
        {
            if is_dir(&attr) {
                return Err(path_error(target, ErrorCode::IsADirectory));
            }
        }
    }
    let progress = if show_progress {
        Progress::new(size, label)
    } else {
        Progress { bar: None }
    };
    in_flight().push(target.to_string());
    let res = client
        .put_stream(reader, target, force, |n| progress.set(n))
        .await;
    in_flight().retain(|t| t != target);
    progress.finish();
    res.with_context(|| target.to_string())?;
    Ok(())
}

/// Copies a local tree: directories first (parents before children), then the small files
/// several at a time (a tree of small files is bound by round trips, not bandwidth), then
/// the large ones one by one with their own progress bar.
async fn put_dir(client: &Client, src: &Path, target: &str, force: bool) -> anyhow::Result<()> {
    let mut failed = false;
    let mut small: Vec<(PathBuf, String)> = Vec::new();
    let mut large: Vec<(PathBuf, String)> = Vec::new();
    let mut pending = vec![(src.to_path_buf(), target.to_string())];
    while let Some((local, remote)) = pending.pop() {
        if let Err(e) = ensure_remote_dir(client, &remote).await {
            report_once(&e);
            failed = true;
            continue;
        }
        let entries = match sorted_local_entries(&local) {
            Ok(entries) => entries,
            Err(e) => {
                report_once(&e);
                failed = true;
                continue;
            }
        };
        let mut subdirs = Vec::new();
        for (name, path) in entries {
            let child = rdfs_proto::path::join(&remote, &name);
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_symlink() => eprintln!(
                    "dfs: {}: symbolic link skipped (put copies regular files and directories)",
                    path.display()
                ),
                Ok(meta) if meta.is_dir() => subdirs.push((path, child)),
                Ok(meta) if meta.is_file() && meta.len() <= SMALL_FILE_BYTES => {
                    small.push((path, child))
                }
                Ok(meta) if meta.is_file() => large.push((path, child)),
                Ok(_) => eprintln!(
                    "dfs: {}: not a regular file or directory, skipped",
                    path.display()
                ),
                Err(e) => {
                    report_once(&anyhow::Error::new(e).context(path.display().to_string()));
                    failed = true;
                }
            }
        }
        pending.extend(subdirs.into_iter().rev());
    }
    let progress = Progress::new_count(small.len() as u64, &src.display().to_string());
    let mut done = 0u64;
    let mut small_puts = futures::stream::iter(small)
        .map(|(path, child)| async move {
            let label = path.display().to_string();
            let res = async {
                let file = tokio::fs::File::open(&path)
                    .await
                    .with_context(|| label.clone())?;
                put_reader(client, file, None, &label, &child, force, false).await
            }
            .await;
            res
        })
        .buffer_unordered(PARALLEL_SMALL_FILES);
    while let Some(res) = small_puts.next().await {
        done += 1;
        progress.set(done);
        if let Err(e) = res {
            progress.suspend(|| report_once(&e));
            failed = true;
        }
    }
    progress.finish();
    for (path, child) in large {
        if let Err(e) = put_file(client, &path, &child, force).await {
            report_once(&e);
            failed = true;
        }
    }
    finish(failed)
}

/// Makes sure `remote` is a directory (creating it when missing).
async fn ensure_remote_dir(client: &Client, remote: &str) -> anyhow::Result<()> {
    match stat_opt(client, remote)
        .await
        .with_context(|| remote.to_string())?
    {
        Some(attr) if is_dir(&attr) => Ok(()),
        Some(_) => Err(path_error(remote, ErrorCode::NotADirectory)),
        None => {
            client
                .mkdir(remote, DEFAULT_DIR_MODE, false)
                .await
                .with_context(|| remote.to_string())?;
            Ok(())
        }
    }
}

/// A local directory's entries as (UTF-8 name, path), sorted by name.
fn sorted_local_entries(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let label = || dir.display().to_string();
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(label)? {
        let entry = entry.with_context(label)?;
        let path = entry.path();
        let name = entry.file_name().into_string().map_err(|_| {
            anyhow::Error::msg("file name is not valid UTF-8").context(path.display().to_string())
        })?;
        entries.push((name, path));
    }
    entries.sort();
    Ok(entries)
}

/// Copies rdfs file `src` into the local `file` (a regular file or stdout). Pieces are
/// written on a blocking thread straight from the buffers the reads filled, while the
/// next pieces are already being read: no copy through an async writer's buffer, which
/// costs a pass over every byte (the `dfs cat` throughput target). `progress` gets the
/// total bytes written so far.
pub async fn copy_out(
    client: &Client,
    src: &str,
    file: std::fs::File,
    progress: impl Fn(u64),
) -> Result<u64, rdfs_client::ClientError> {
    use std::io::Write;
    let mut pieces = client.read_pieces(src).await?;
    let file = std::sync::Arc::new(file);
    while let Some(data) = pieces.next_piece().await? {
        let f = file.clone();
        let written = tokio::task::spawn_blocking(move || (&*f).write_all(&data))
            .await
            .map_err(|e| std::io::Error::other(format!("write task failed: {e}")))?;
        if let Err(e) = written {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                die_of_sigpipe();
            }
            return Err(e.into());
        }
        progress(pieces.position());
    }
    Ok(pieces.position())
}

/// The reader of our output went away (`dfs cat f | head`): end as `cat` does, killed by
/// SIGPIPE. The write ran on a runtime thread, where SIGPIPE is blocked so that sockets fail
/// with EPIPE instead; only a pipe (never a regular file) gives EPIPE here.
fn die_of_sigpipe() -> ! {
    crate::sigpipe_mask(libc::SIG_UNBLOCK);
    // SAFETY: restoring the default disposition and raising the signal ends the process; no
    // memory is touched.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(128 + libc::SIGPIPE)
}

/// This process's stdout as a `File` (a duplicate descriptor, so dropping it leaves fd 1
/// open), for [`copy_out`].
pub fn stdout_file() -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsFd;
    let fd = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicate stdout")?;
    Ok(std::fs::File::from(fd))
}

pub async fn get(client: &Client, args: GetArgs) -> anyhow::Result<()> {
    let (sources, dest) = split_last(&args.paths)?;
    if dest == "-" {
        if sources.len() != 1 {
            anyhow::bail!("writing to stdout (`-`) takes exactly one source");
        }
        let src = dfs_path(&sources[0]);
        copy_out(client, &src, stdout_file()?, |_| {})
            .await
            .with_context(|| src.clone())?;
        return Ok(());
    }
    let dest = PathBuf::from(dest);
    let dest_label = dest.display().to_string();
    let dest_meta = match std::fs::metadata(&dest) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(anyhow::Error::new(e).context(dest_label)),
    };
    let dest_is_dir = dest_meta.as_ref().is_some_and(|m| m.is_dir());
    if sources.len() > 1 && !dest_is_dir {
        let code = if dest_meta.is_none() {
            ErrorCode::NotFound
        } else {
            ErrorCode::NotADirectory
        };
        return Err(path_error(&dest_label, code));
    }
    let mut failed = false;
    for src in sources {
        let src = dfs_path(src);
        let res = async {
            let attr = client.stat(&src).await.with_context(|| src.clone())?;
            let name = dfs_basename(&src);
            let target = if dest_is_dir && !name.is_empty() {
                dest.join(name)
            } else {
                dest.clone()
            };
            if is_dir(&attr) {
                get_dir(client, &src, &target, args.force).await
            } else {
                get_file(client, &src, &attr, &target, args.force).await
            }
        }
        .await;
        if let Err(e) = res {
            report_once(&e);
            failed = true;
        }
    }
    finish(failed)
}

async fn get_file(
    client: &Client,
    src: &str,
    attr: &FileAttr,
    target: &Path,
    force: bool,
) -> anyhow::Result<()> {
    let label = target.display().to_string();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        // Atomic "fail if it exists": no check-then-create race.
        opts.create_new(true);
    }
    let file = opts.open(target).with_context(|| label.clone())?;
    let progress = Progress::new(Some(attr.size), src);
    let res = copy_out(client, src, file, |n| progress.set(n)).await;
    progress.finish();
    if let Err(e) = res {
        if let Err(cleanup) = tokio::fs::remove_file(target).await {
            tracing::info!(path = %label, error = %cleanup, "could not remove partial file");
        }
        return Err(anyhow::Error::new(e).context(src.to_string()));
    }
    Ok(())
}

async fn get_dir(client: &Client, src: &str, target: &Path, force: bool) -> anyhow::Result<()> {
    let mut failed = false;
    let mut pending = vec![(src.to_string(), target.to_path_buf())];
    while let Some((remote, local)) = pending.pop() {
        if let Err(e) = ensure_local_dir(&local) {
            report_once(&e);
            failed = true;
            continue;
        }
        let entries = match client.list(&remote).await.with_context(|| remote.clone()) {
            Ok(entries) => entries,
            Err(e) => {
                report_once(&e);
                failed = true;
                continue;
            }
        };
        let mut subdirs = Vec::new();
        for entry in entries {
            let Some(attr) = entry.attr else { continue };
            let child_remote = rdfs_proto::path::join(&remote, &entry.name);
            let child_local = local.join(&entry.name);
            if is_dir(&attr) {
                subdirs.push((child_remote, child_local));
            } else if let Err(e) = get_file(client, &child_remote, &attr, &child_local, force).await
            {
                report_once(&e);
                failed = true;
            }
        }
        pending.extend(subdirs.into_iter().rev());
    }
    finish(failed)
}

/// Makes sure `local` is a directory (creating it when missing).
fn ensure_local_dir(local: &Path) -> anyhow::Result<()> {
    let label = || local.display().to_string();
    match std::fs::metadata(local) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(path_error(&label(), ErrorCode::NotADirectory)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir(local).with_context(label)
        }
        Err(e) => Err(anyhow::Error::new(e).context(label())),
    }
}
