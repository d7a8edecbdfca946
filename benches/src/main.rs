//! `rdfs-bench`: end-to-end throughput of `dfs put` / `dfs cat` against the local disk,
//! measured in the same run on the same disk (these machines are noisy; absolute figures
//! drift, ratios are what we compare). With `--fuse`, file-system figures through a `dfs
//! mount` and on a local directory instead ([`fuse`]).
//!
//! Usage: `cargo build --release --workspace && target/release/rdfs-bench [--size-mib N]
//! [--dir DIR] [--record-bytes B] [--append-secs S] [--fuse [--files N]]`. It runs real `dfs master` /
//! `dfs chunkserver` processes (the `dfs` binary next to this one) with 4 chunkservers and
//! replication 3 on loopback.
//!
//! Record append: 1, 4 and 16 concurrent producers (separate clients) append `B`-byte
//! records to one file for `S` seconds each, acknowledged after every replica fsynced (the
//! durability of `dfs put`, printed next to it) and, for comparison, after every replica has
//! them in memory.
//!
//! Durability measured: the local write ends with fsync; `dfs put` exits 0 only after every
//! replica fsynced (the same durability). Caches are dropped before each read when the
//! process may write `/proc/sys/vm/drop_caches` (root); the output says whether it could.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

mod append;
mod fuse;

const BLOCK_BYTES: usize = 1 << 20;
/// Four chunkservers with replication 3, so one can die and be re-replicated away.
const CHUNKSERVERS: usize = 4;

struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM for a clean stop; SIGKILL if it lingers.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(dfs: &Path, args: &[&str], log: &Path) -> anyhow::Result<(Server, String)> {
    let mut child = Command::new(dfs)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .with_context(|| format!("start {} {args:?}", dfs.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    if addr.is_empty() {
        bail!("{args:?} did not start; see {}", log.display());
    }
    Ok((Server(child, addr.clone()), addr))
}

/// Starts a master (with `master_args`) and `n` chunkservers under `dir`, on loopback, and
/// waits until every chunkserver is live. Returns the master, its address, the chunkservers.
fn start_cluster(
    dfs: &Path,
    dir: &Path,
    n: usize,
    master_args: &[&str],
) -> anyhow::Result<(Server, String, Vec<Server>)> {
    let data = dir.join("m");
    let mut args = vec![
        "master",
        "--data",
        data.to_str().context("path")?,
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(master_args);
    let (master, maddr) = spawn(dfs, &args, &dir.join("master.log"))?;
    let mut servers = Vec::new();
    for k in 0..n {
        let d = dir.join(format!("cs{k}"));
        let (s, _) = spawn(
            dfs,
            &[
                "--master",
                &maddr,
                "chunkserver",
                "--data",
                d.to_str().context("path")?,
                "--listen",
                "127.0.0.1:0",
            ],
            &dir.join(format!("cs{k}.log")),
        )?;
        servers.push(s);
    }
    wait_live(dfs, &maddr, n)?;
    Ok((master, maddr, servers))
}

/// Waits until `n` chunkservers are live.
fn wait_live(dfs: &Path, maddr: &str, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new(dfs)
            .args(["--master", maddr, "df", "--json"])
            .output()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let live = v["chunkservers"]
            .as_array()
            .map(|a| a.iter().filter(|c| c["state"] == "live").count());
        if live == Some(n) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("chunkservers did not register");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn drop_caches() -> bool {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn local_write(path: &Path, size: u64) -> anyhow::Result<Duration> {
    let block: Vec<u8> = (0..BLOCK_BYTES).map(|i| (i * 31 % 251) as u8).collect();
    let t = Instant::now();
    let mut f = std::fs::File::create(path)?;
    let mut left = size;
    let mut n = 0u64;
    while left > 0 {
        let k = left.min(BLOCK_BYTES as u64) as usize;
        // Vary each block so nothing can deduplicate or compress it away.
        let mut b = block[..k].to_vec();
        b[..8].copy_from_slice(&n.to_le_bytes());
        f.write_all(&b)?;
        left -= k as u64;
        n += 1;
    }
    f.sync_all()?;
    Ok(t.elapsed())
}

fn local_read(path: &Path) -> anyhow::Result<(Duration, u64)> {
    let t = Instant::now();
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; BLOCK_BYTES];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    Ok((t.elapsed(), total))
}

fn dfs_json(dfs: &Path, maddr: &str, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(dfs)
        .args(["--master", maddr])
        .args(args)
        .output()?;
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Kills (SIGKILL) one chunkserver and measures how fast its replicas are recreated
/// elsewhere, from the moment the master reports chunks under-replicated to healthy.
fn rereplication(dfs: &Path, maddr: &str, servers: &mut [Server]) -> anyhow::Result<()> {
    let st = dfs_json(dfs, maddr, &["stat", "--json", "/bench.bin"])?;
    let report = dfs_json(dfs, maddr, &["df", "--json"])?;
    let victim_addr = report["chunkservers"][0]["addr"]
        .as_str()
        .context("addr")?
        .to_string();
    let chunks = st["chunks"].as_array().context("chunks")?;
    let lost = chunks
        .iter()
        .filter(|c| {
            c["replicas"]
                .as_array()
                .is_some_and(|r| r.iter().any(|a| a == victim_addr.as_str()))
        })
        .count();
    // Chunks of the benchmark file are full except perhaps the last: average is exact enough.
    let avg_chunk_bytes = st["size"].as_u64().unwrap_or(0) / chunks.len().max(1) as u64;
    // Find the process by its address: servers were started in order and df lists by id.
    let victim = servers
        .iter_mut()
        .find(|s| s.1 == victim_addr)
        .context("victim process")?;
    let _ = victim.0.kill();
    let _ = victim.0.wait();
    let mut noticed = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    let killed = Instant::now();
    loop {
        let f = dfs_json(dfs, maddr, &["fsck", "--json"])?;
        let under =
            f["under_replicated"].as_u64().unwrap_or(0) + f["missing"].as_u64().unwrap_or(0);
        if under > 0 && noticed.is_none() {
            noticed = Some(Instant::now());
        }
        if noticed.is_some() && f["healthy"] == true {
            break;
        }
        if Instant::now() > deadline {
            bail!("not healed within 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let noticed = noticed.context("never saw under-replication")?;
    let secs = noticed.elapsed().as_secs_f64();
    let bytes = lost as u64 * avg_chunk_bytes;
    println!();
    println!(
        "re-replication after kill -9 of 1 of {CHUNKSERVERS}: {lost} chunks in {secs:.2}s = {:.1} chunks/s, {:.1} MiB/s (detected after {:.1}s with a 3s heartbeat timeout)",
        lost as f64 / secs,
        bytes as f64 / (1 << 20) as f64 / secs,
        (noticed - killed).as_secs_f64()
    );
    Ok(())
}

/// Record-append throughput for 1, 4 and 16 producers, printed next to `dfs put`.
fn append_table(
    maddr: &str,
    put_mib_s: f64,
    record_bytes: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    println!();
    println!(
        "record append: {record_bytes}-byte records to one file, {}s per row, 3 replicas",
        duration.as_secs()
    );
    println!(
        "{:<34} {:>10} {:>10} {:>8}",
        "measure", "records/s", "MiB/s", "vs put"
    );
    println!(
        "{:<34} {:>10} {:>10.1} {:>8}",
        "dfs put (3 replicas, fsynced)", "-", put_mib_s, "1.00"
    );
    for sync in [true, false] {
        for producers in [1usize, 4, 16] {
            let path = format!("/append-{producers}-{}", if sync { "sync" } else { "mem" });
            let r = rt.block_on(append::run(
                maddr,
                &path,
                producers,
                record_bytes,
                duration,
                sync,
            ))?;
            let what = format!(
                "append x{} ({})",
                r.producers,
                if r.sync { "fsynced" } else { "in memory" }
            );
            println!(
                "{:<34} {:>10.0} {:>10.1} {:>8.2}",
                what,
                r.records_per_s(),
                r.mib_per_s(),
                r.mib_per_s() / put_mib_s
            );
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mut size_mib = 1024u64;
    let mut dir = PathBuf::from("target/bench-tmp");
    let mut record_bytes = 4096usize;
    let mut append_secs = 10u64;
    let mut fuse_mode = false;
    let mut files = 10_000usize;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--size-mib" => size_mib = args.get(i + 1).context("--size-mib N")?.parse()?,
            "--dir" => dir = PathBuf::from(args.get(i + 1).context("--dir DIR")?),
            "--record-bytes" => {
                record_bytes = args.get(i + 1).context("--record-bytes B")?.parse()?
            }
            "--append-secs" => append_secs = args.get(i + 1).context("--append-secs S")?.parse()?,
            "--files" => files = args.get(i + 1).context("--files N")?.parse()?,
            "--fuse" => {
                fuse_mode = true;
                i += 1;
                continue;
            }
            other => {
                bail!("unknown argument {other}; usage: rdfs-bench [--size-mib N] [--dir DIR] [--record-bytes B] [--append-secs S] [--fuse [--files N]]")
            }
        }
        i += 2;
    }
    let dfs = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .join("dfs");
    if !dfs.exists() {
        bail!(
            "{} not found: run `cargo build --release --workspace` first",
            dfs.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    if fuse_mode {
        let res = fuse::run(&dfs, &dir, size_mib, files);
        let _ = std::fs::remove_dir_all(&dir);
        return res;
    }
    let size = size_mib << 20;
    let src = dir.join("local.bin");

    println!("rdfs-bench: {size_mib} MiB, 1 MiB blocks, {CHUNKSERVERS} chunkservers, replication 3, one disk");
    let w = local_write(&src, size)?;
    let dropped = drop_caches();
    let (r, _) = local_read(&src)?;
    println!(
        "caches dropped before reads: {}",
        if dropped {
            "yes"
        } else {
            "NO (not root): read figures include page cache"
        }
    );
    let local_w = mib_per_s(size, w);
    let local_r = mib_per_s(size, r);

    let (_master, maddr, mut servers) =
        start_cluster(&dfs, &dir, CHUNKSERVERS, &["--heartbeat-timeout", "3s"])?;
    let run = |args: &[&str], stdout: Stdio| -> anyhow::Result<Duration> {
        let t = Instant::now();
        let st = Command::new(&dfs)
            .args(["--master", &maddr, "--timeout", "600s"])
            .args(args)
            .stdout(stdout)
            .status()?;
        if !st.success() {
            bail!("dfs {args:?} failed: {st}");
        }
        Ok(t.elapsed())
    };
    let put = run(
        &["put", src.to_str().context("path")?, "/bench.bin"],
        Stdio::null(),
    )?;
    drop_caches();
    let get = run(&["cat", "/bench.bin"], Stdio::null())?;
    let put_r = mib_per_s(size, put);
    let get_r = mib_per_s(size, get);

    println!();
    println!("{:<34} {:>10} {:>8}", "measure", "MiB/s", "ratio");
    println!(
        "{:<34} {:>10.1} {:>8}",
        "local write (1 MiB blocks, fsync)", local_w, "1.00"
    );
    println!("{:<34} {:>10.1} {:>8}", "local read", local_r, "1.00");
    println!(
        "{:<34} {:>10.1} {:>8.2}",
        "dfs put (3 replicas, fsynced)",
        put_r,
        put_r / local_w
    );
    println!(
        "{:<34} {:>10.1} {:>8.2}",
        "dfs cat > /dev/null",
        get_r,
        get_r / local_r
    );
    println!();
    println!("targets: put >= 0.20x local write, get >= 0.60x local read");

    append_table(
        &maddr,
        put_r,
        record_bytes,
        Duration::from_secs(append_secs),
    )?;

    rereplication(&dfs, &maddr, &mut servers)?;
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
