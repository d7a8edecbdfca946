//! `rdfs-bench --fuse`: the same file-system figures through a `dfs mount` and on a local
//! directory of the same disk, in one run, with ratios (issue 3, item 6).
//!
//! Figures: sequential write of SIZE in 1 MiB blocks ending with fsync, sequential read of it
//! (caches dropped first), 4 KiB random reads (caches dropped, one reader), and metadata rates:
//! create / stat / unlink of N empty files, mkdir, readdir of the N-entry directory (caches
//! dropped), plus create with several threads at once (what group commit gives).
//!
//! Durability measured, stated in the output: the write figures end with fsync on both sides
//! (rdfs: every replica's disk). Local metadata operations are in the ext4 journal, not
//! fsynced one by one; every rdfs metadata operation is acknowledged only after the master
//! fsynced its op-log record (group commit shares one fsync between concurrent operations).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::{drop_caches, BLOCK_BYTES};

/// Bytes of one random read.
const RANDOM_READ_BYTES: usize = 4096;
/// How long the random-read figure runs.
const RANDOM_READ_TIME: Duration = Duration::from_secs(10);
/// Directories created for the mkdir figure.
const MKDIRS: usize = 2_000;
/// Threads of the concurrent-create figure.
const CREATE_THREADS: usize = 8;

/// One row of results: figure name, unit, local value, rdfs value; higher is better.
struct Row {
    name: String,
    unit: &'static str,
    local: f64,
    rdfs: f64,
}

/// Everything measured on one directory.
#[derive(Default)]
struct Figures {
    seq_write: f64,
    seq_read: f64,
    rand_read: f64,
    create: f64,
    create_parallel: f64,
    stat: f64,
    readdir: f64,
    unlink: f64,
    mkdir: f64,
}

/// A `dfs mount` process, unmounted (SIGTERM) when dropped.
struct Mount {
    child: Child,
    dir: PathBuf,
}

impl Drop for Mount {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mount(dfs: &Path, maddr: &str, dir: &Path, log: &Path) -> anyhow::Result<Mount> {
    std::fs::create_dir_all(dir)?;
    let mut child = Command::new(dfs)
        .args(["--master", maddr, "--timeout", "60s", "mount"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(File::create(log)?)
        .spawn()
        .context("start dfs mount")?;
    let mut line = String::new();
    let mut out = child.stdout.take().context("stdout")?;
    let mut byte = [0u8; 1];
    while out.read(&mut byte)? == 1 && byte[0] != b'\n' {
        line.push(byte[0] as char);
    }
    let m = Mount {
        child,
        dir: dir.to_path_buf(),
    };
    if !line.starts_with("rdfs mounted at") {
        bail!("dfs mount did not start; see {}", log.display());
    }
    Ok(m)
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / f64::from(1u32 << 20) / d.as_secs_f64()
}

/// Sequential write of `size` bytes in 1 MiB blocks, then fsync.
fn seq_write(path: &Path, size: u64) -> anyhow::Result<f64> {
    let mut block = vec![0u8; BLOCK_BYTES];
    for (i, b) in block.iter_mut().enumerate() {
        *b = (i * 31 % 251) as u8;
    }
    let t = Instant::now();
    let mut f = File::create(path)?;
    let mut n = 0u64;
    while n * (BLOCK_BYTES as u64) < size {
        // Vary each block so nothing can deduplicate it.
        block[..8].copy_from_slice(&n.to_le_bytes());
        f.write_all(&block)?;
        n += 1;
    }
    f.sync_all()?;
    drop(f);
    Ok(mib_s(size, t.elapsed()))
}

fn seq_read(path: &Path) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; BLOCK_BYTES];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    Ok(mib_s(total, t.elapsed()))
}

/// 4 KiB reads at random 4 KiB-aligned offsets for a fixed time, one reader; IOPS.
fn random_reads(path: &Path, size: u64) -> anyhow::Result<f64> {
    let f = File::open(path)?;
    // SAFETY: advice on a descriptor we own; the kernel then skips read-ahead.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM);
    }
    let slots = size / RANDOM_READ_BYTES as u64;
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut buf = vec![0u8; RANDOM_READ_BYTES];
    let t = Instant::now();
    let mut n = 0usize;
    while t.elapsed() < RANDOM_READ_TIME {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let offset = (x % slots) * RANDOM_READ_BYTES as u64;
        f.read_exact_at(&mut buf, offset)?;
        n += 1;
    }
    Ok(rate(n, t.elapsed()))
}

/// Creates `n` empty files in `dir` (create + close each). With several threads each works in
/// its own subdirectory: the kernel serialises creates within one directory (the parent's
/// lock), so only separate directories show what concurrent requests (and the master's group
/// commit) give.
fn create_files(dir: &Path, n: usize, threads: usize) -> anyhow::Result<f64> {
    std::fs::create_dir_all(dir)?;
    let subdirs: Vec<PathBuf> = if threads == 1 {
        vec![dir.to_path_buf()]
    } else {
        (0..threads).map(|t| dir.join(format!("t{t}"))).collect()
    };
    for d in &subdirs {
        std::fs::create_dir_all(d)?;
    }
    let t = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let workers: Vec<_> = subdirs
            .iter()
            .enumerate()
            .map(|(w, d)| {
                s.spawn(move || -> anyhow::Result<()> {
                    for i in (w..n).step_by(threads) {
                        File::options()
                            .write(true)
                            .create_new(true)
                            .open(d.join(format!("f{i:05}")))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("create thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(rate(n, t.elapsed()))
}

fn stat_files(dir: &Path, n: usize) -> anyhow::Result<f64> {
    let t = Instant::now();
    for i in 0..n {
        std::fs::metadata(dir.join(format!("f{i:05}")))?;
    }
    Ok(rate(n, t.elapsed()))
}

/// Milliseconds to list the directory (caches dropped first); returned as entries/s.
fn readdir(dir: &Path, n: usize) -> anyhow::Result<f64> {
    drop_caches();
    let t = Instant::now();
    let listed = std::fs::read_dir(dir)?.count();
    let d = t.elapsed();
    if listed != n {
        bail!("{}: listed {listed} entries, want {n}", dir.display());
    }
    Ok(rate(n, d))
}

fn unlink_files(dir: &Path, n: usize) -> anyhow::Result<f64> {
    let t = Instant::now();
    for i in 0..n {
        std::fs::remove_file(dir.join(format!("f{i:05}")))?;
    }
    Ok(rate(n, t.elapsed()))
}

fn mkdirs(dir: &Path) -> anyhow::Result<f64> {
    std::fs::create_dir_all(dir)?;
    let t = Instant::now();
    for i in 0..MKDIRS {
        std::fs::create_dir(dir.join(format!("d{i:05}")))?;
    }
    Ok(rate(MKDIRS, t.elapsed()))
}

/// Every figure on `dir` (a local directory or the mount).
fn measure(dir: &Path, size: u64, files: usize) -> anyhow::Result<Figures> {
    let mut f = Figures::default();
    let data = dir.join("seq.bin");
    f.seq_write = seq_write(&data, size)?;
    drop_caches();
    f.seq_read = seq_read(&data)?;
    drop_caches();
    f.rand_read = random_reads(&data, size)?;
    std::fs::remove_file(&data)?;
    let flat = dir.join("files");
    f.create = create_files(&flat, files, 1)?;
    f.stat = stat_files(&flat, files)?;
    f.readdir = readdir(&flat, files)?;
    f.unlink = unlink_files(&flat, files)?;
    let par = dir.join("parallel");
    f.create_parallel = create_files(&par, files, CREATE_THREADS)?;
    f.mkdir = mkdirs(&dir.join("dirs"))?;
    Ok(f)
}

fn rows(local: &Figures, rdfs: &Figures, size_mib: u64, files: usize) -> Vec<Row> {
    let row = |name: String, unit, l, r| Row {
        name,
        unit,
        local: l,
        rdfs: r,
    };
    vec![
        row(
            format!("seq write {size_mib} MiB, 1 MiB blocks, fsync"),
            "MiB/s",
            local.seq_write,
            rdfs.seq_write,
        ),
        row(
            format!("seq read {size_mib} MiB cold"),
            "MiB/s",
            local.seq_read,
            rdfs.seq_read,
        ),
        row(
            "4 KiB random reads cold, 1 reader".into(),
            "IOPS",
            local.rand_read,
            rdfs.rand_read,
        ),
        row(
            format!("create {files} empty files"),
            "ops/s",
            local.create,
            rdfs.create,
        ),
        row(
            format!("create {files}, {CREATE_THREADS} threads, own dirs"),
            "ops/s",
            local.create_parallel,
            rdfs.create_parallel,
        ),
        row(
            format!("stat {files} files"),
            "ops/s",
            local.stat,
            rdfs.stat,
        ),
        row(
            format!("readdir {files} entries cold"),
            "entries/s",
            local.readdir,
            rdfs.readdir,
        ),
        row(
            format!("unlink {files} files"),
            "ops/s",
            local.unlink,
            rdfs.unlink,
        ),
        row(format!("mkdir {MKDIRS}"), "ops/s", local.mkdir, rdfs.mkdir),
    ]
}

/// Runs the FUSE benchmark: a cluster (master + 3 chunkservers, replication 3) under `dir`,
/// mounted at `dir/mnt`; local figures in `dir/local`.
pub fn run(dfs: &Path, dir: &Path, size_mib: u64, files: usize) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("--fuse needs root (mounting without libfuse, dropping caches)");
    }
    let size = size_mib << 20;
    println!(
        "rdfs-bench --fuse: {size_mib} MiB file, {files} files, 3 chunkservers, replication 3, one disk"
    );
    let local_dir = dir.join("local");
    std::fs::create_dir_all(&local_dir)?;
    let local = measure(&local_dir, size, files)?;

    let (_master, maddr, servers) = crate::start_cluster(dfs, dir, 3, &[])?;
    let mnt = dir.join("mnt");
    let m = mount(dfs, &maddr, &mnt, &dir.join("mount.log"))?;
    let rdfs = measure(&mnt, size, files)?;
    drop(m);

    println!();
    println!(
        "{:<44} {:>10} {:>12} {:>12} {:>7}",
        "figure", "unit", "local", "rdfs mount", "ratio"
    );
    for r in rows(&local, &rdfs, size_mib, files) {
        println!(
            "{:<44} {:>10} {:>12.1} {:>12.1} {:>7.2}",
            r.name,
            r.unit,
            r.local,
            r.rdfs,
            r.rdfs / r.local
        );
    }
    println!();
    println!(
        "durability: seq write ends with fsync on both sides (rdfs: on every replica's disk);"
    );
    println!("local metadata ops are journaled, not fsynced one by one; every rdfs metadata op is");
    println!("acknowledged after the master fsynced its log record (group commit across concurrent ops).");
    drop(servers);
    Ok(())
}
