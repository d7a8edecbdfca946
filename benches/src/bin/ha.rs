//! `rdfs-ha-bench`: the hot standby's costs and speeds (issue 5, item 5).
//!
//! 1. Metadata operations per second (`mkdir`, each acknowledged after its record is fsynced
//!    on the primary — and on the standby when one is attached), serial and with 16 parallel
//!    clients, without and with a standby. Real `dfs master` / `dfs chunkserver` processes
//!    (the `dfs` binary next to this one), 3 chunkservers (the witnesses), loopback.
//! 2. For each namespace size (default 100,000 and 1,000,000 files of one chunk each, written
//!    straight into a checkpoint): master restart (recovery) time, the standby's bootstrap
//!    time (checkpoint transfer and load), failover time after kill -9 of the primary (until
//!    the standby acknowledges a mutation) and the old primary's rejoin time.
//! 3. Master memory per file and per chunk: resident size after recovering N empty files,
//!    N one-chunk files, and an empty namespace.
//!
//! Usage: `cargo build --release --workspace && target/release/rdfs-ha-bench [--files
//! 100000,1000000] [--ops 2000] [--failover-timeout 5s] [--dir DIR]`. Figures depend on the
//! disk's fsync latency and on what else runs: the output names the conditions.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdfs_client::{Client, ClientConfig};
use rdfs_master::namespace::{Namespace, NewNode, Op};
use rdfs_proto::ids::ChunkVersion;

const CHUNK_SIZE: u64 = 1 << 20;
const FILES_PER_DIR: usize = 1000;
const CHUNKSERVERS: usize = 3;
const PARALLEL_CLIENTS: usize = 16;
/// How long a master may take to answer after start (1,000,000 files included).
const START_LIMIT: Duration = Duration::from_secs(600);

struct Opts {
    files: Vec<usize>,
    ops: usize,
    failover_timeout: String,
    dir: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Opts> {
    let mut o = Opts {
        files: vec![100_000, 1_000_000],
        ops: 2000,
        failover_timeout: "5s".into(),
        dir: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--files" => {
                o.files = v
                    .split(',')
                    .map(|n| n.parse().context("--files: numbers"))
                    .collect::<anyhow::Result<_>>()?
            }
            "--ops" => o.ops = v.parse().context("--ops")?,
            "--failover-timeout" => o.failover_timeout = v,
            "--dir" => o.dir = Some(PathBuf::from(v)),
            _ => bail!("unknown option {a}"),
        }
    }
    Ok(o)
}

/// A server process, SIGKILLed when dropped.
struct Proc {
    child: Child,
    addr: String,
}

impl Proc {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Resident memory (VmRSS) in bytes.
    fn rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("VmRSS")?;
        Ok(kb * 1024)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

struct Bench {
    dfs: PathBuf,
    root: PathBuf,
    failover_timeout: String,
    rt: tokio::runtime::Runtime,
}

impl Bench {
    fn spawn(&self, args: &[&str], log: &str) -> anyhow::Result<Proc> {
        let mut child = Command::new(&self.dfs)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.root.join(log))?)
            .spawn()
            .with_context(|| format!("start dfs {args:?}"))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_string();
        if addr.is_empty() {
            bail!("dfs {args:?} did not start; see {log}");
        }
        Ok(Proc { child, addr })
    }

    fn master(
        &self,
        data: &Path,
        listen: &str,
        standby_of: Option<&str>,
        log: &str,
    ) -> anyhow::Result<Proc> {
        let data = data.to_str().context("path")?;
        let mut args = vec![
            "master",
            "--data",
            data,
            "--listen",
            listen,
            "--chunk-size",
            "1048576",
            "--failover-timeout",
            &self.failover_timeout,
        ];
        if let Some(p) = standby_of {
            args.extend(["--standby-of", p]);
        }
        self.spawn(&args, log)
    }

    fn chunkservers(&self, masters: &str, tag: &str) -> anyhow::Result<Vec<Proc>> {
        (0..CHUNKSERVERS)
            .map(|i| {
                let data = self.root.join(format!("{tag}-cs{i}"));
                let data = data.to_str().context("path")?.to_string();
                self.spawn(
                    &[
                        "--master",
                        masters,
                        "chunkserver",
                        "--data",
                        &data,
                        "--listen",
                        "127.0.0.1:0",
                    ],
                    &format!("{tag}-cs{i}.log"),
                )
            })
            .collect()
    }

    fn client(&self, masters: &str) -> anyhow::Result<Client> {
        let mut cfg = ClientConfig::new(masters.split(',').map(str::to_string).collect());
        cfg.timeout = Duration::from_secs(120);
        self.rt.block_on(Client::connect(cfg)).context("connect")
    }

    /// A master's ClusterStatus, asked of it alone.
    fn status(&self, addr: &str) -> Option<rdfs_client::ClusterStatusResponse> {
        let mut cfg = ClientConfig::new(vec![addr.to_string()]);
        cfg.timeout = Duration::from_secs(2);
        self.rt
            .block_on(async { Client::connect(cfg).await?.cluster_status().await })
            .ok()
    }

    /// Waits until `cond` holds for master `addr`'s status; returns how long it took.
    fn wait(
        &self,
        addr: &str,
        what: &str,
        cond: impl Fn(&rdfs_client::ClusterStatusResponse) -> bool,
    ) -> anyhow::Result<Duration> {
        let t = Instant::now();
        loop {
            if self.status(addr).is_some_and(|s| cond(&s)) {
                return Ok(t.elapsed());
            }
            if t.elapsed() > START_LIMIT {
                bail!("{addr}: {what} did not happen within {START_LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_in_sync(&self, primary: &str, standby: &str) -> anyhow::Result<Duration> {
        let t = Instant::now();
        self.wait(primary, "standby in sync", |s| {
            s.role == "primary" && s.standby.as_ref().is_some_and(|b| b.state == "in_sync")
        })?;
        self.wait(standby, "standby caught up", |s| s.role == "standby")?;
        Ok(t.elapsed())
    }
}

/// mkdirs per second: serial, then `PARALLEL_CLIENTS` clients at once.
fn ops_per_sec(b: &Bench, masters: &str, ops: usize, tag: &str) -> anyhow::Result<(f64, f64)> {
    let c = b.client(masters)?;
    b.rt.block_on(c.mkdir(&format!("/{tag}"), 0o755, false))?;
    let t = Instant::now();
    for i in 0..ops {
        b.rt.block_on(c.mkdir(&format!("/{tag}/s{i}"), 0o755, false))?;
    }
    let serial = ops as f64 / t.elapsed().as_secs_f64();
    let clients: Vec<Client> = (0..PARALLEL_CLIENTS)
        .map(|_| b.client(masters))
        .collect::<anyhow::Result<_>>()?;
    let per = ops / PARALLEL_CLIENTS;
    let t = Instant::now();
    b.rt.block_on(async {
        let tasks: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(k, c)| {
                let tag = tag.to_string();
                tokio::spawn(async move {
                    for i in 0..per {
                        c.mkdir(&format!("/{tag}/p{k}-{i}"), 0o755, false).await?;
                    }
                    Ok::<_, rdfs_client::ClientError>(())
                })
            })
            .collect();
        for t in tasks {
            t.await??;
        }
        anyhow::Ok(())
    })?;
    let parallel = (per * PARALLEL_CLIENTS) as f64 / t.elapsed().as_secs_f64();
    Ok((serial, parallel))
}

fn metadata_table(b: &Bench, ops: usize) -> anyhow::Result<()> {
    println!("metadata ops/s (mkdir, fsynced before the answer; {ops} ops; {CHUNKSERVERS} chunkservers as witnesses)");
    println!(
        "{:<28} {:>12} {:>22}",
        "",
        "serial",
        format!("{PARALLEL_CLIENTS} clients")
    );
    // Without a standby.
    let m = b.master(&b.root.join("solo"), "127.0.0.1:0", None, "solo.log")?;
    let _cs = b.chunkservers(&m.addr, "solo")?;
    b.wait(&m.addr, "witness lease", |s| {
        s.lease_valid && s.witnesses as usize == CHUNKSERVERS
    })?;
    let (s1, p1) = ops_per_sec(b, &m.addr, ops, "solo")?;
    println!("{:<28} {:>12.0} {:>22.0}", "primary alone", s1, p1);
    drop(_cs);
    drop(m);
    // With a standby acknowledging every record.
    let p = b.master(&b.root.join("pair-p"), "127.0.0.1:0", None, "pair-p.log")?;
    let s = b.master(
        &b.root.join("pair-s"),
        "127.0.0.1:0",
        Some(&p.addr),
        "pair-s.log",
    )?;
    let masters = format!("{},{}", p.addr, s.addr);
    let _cs = b.chunkservers(&masters, "pair")?;
    b.wait(&p.addr, "witness lease", |st| {
        st.lease_valid && st.witnesses as usize == CHUNKSERVERS
    })?;
    b.wait_in_sync(&p.addr, &s.addr)?;
    let (s2, p2) = ops_per_sec(b, &masters, ops, "pair")?;
    println!("{:<28} {:>12.0} {:>22.0}", "primary + sync standby", s2, p2);
    println!(
        "{:<28} {:>12.2} {:>22.2}",
        "ratio (with / without)",
        s2 / s1,
        p2 / p1
    );
    Ok(())
}

/// A master data directory whose checkpoint holds `files` files (one chunk each with
/// `chunks`), built in memory and written like the master writes it.
fn build_dir(dir: &Path, files: usize, chunks: bool) -> anyhow::Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("{e}");
    let mut ns = Namespace::new();
    let node = NewNode {
        mode: 0o644,
        uid: 0,
        gid: 0,
        replication: 3,
        time_ns: 1,
    };
    for i in 0..files {
        let d = format!("/n/d{:04}", i / FILES_PER_DIR);
        if i % FILES_PER_DIR == 0 {
            for op in ns.plan_mkdir(&d, &node, true).map_err(|e| err(&e))? {
                ns.apply(&op).map_err(|e| err(&e))?;
            }
        }
        let path = format!("{d}/f{:04}", i % FILES_PER_DIR);
        let op = ns.plan_create(&path, &node, false).map_err(|e| err(&e))?;
        ns.apply(&op).map_err(|e| err(&e))?;
        if chunks {
            let inode = ns.resolve(&path).map_err(|e| err(&e))?;
            let chunk_id = ns.next_chunk_id();
            ns.apply(&Op::AllocateChunk {
                inode,
                index: 0,
                chunk_id,
                version: ChunkVersion(1),
            })
            .map_err(|e| err(&e))?;
            ns.apply(&Op::CommitWrite {
                inode,
                end: CHUNK_SIZE,
                mtime_ns: 1,
            })
            .map_err(|e| err(&e))?;
        }
    }
    std::fs::create_dir_all(dir)?;
    rdfs_master::identity::open_or_init(dir, CHUNK_SIZE).map_err(|e| err(&e))?;
    let ckpt = rdfs_master::checkpoint::checkpoint_dir(dir);
    std::fs::create_dir_all(&ckpt)?;
    let image = rdfs_master::checkpoint::encode(&ns, 1).map_err(|e| err(&e))?;
    rdfs_master::checkpoint::write(&ckpt, 1, &image).map_err(|e| err(&e))?;
    Ok(())
}

/// Starts a master on `dir` and returns it with its recovery time and resident size.
fn recover(b: &Bench, dir: &Path, log: &str) -> anyhow::Result<(Proc, Duration, u64)> {
    let t = Instant::now();
    let m = b.master(dir, "127.0.0.1:0", None, log)?;
    // A primary listens only once it has recovered: the first answer ends recovery.
    let d = t.elapsed() + b.wait(&m.addr, "answer", |_| true)?;
    std::thread::sleep(Duration::from_millis(500));
    let rss = m.rss()?;
    Ok((m, d, rss))
}

fn per_size(b: &Bench, files: usize, empty_rss: u64) -> anyhow::Result<()> {
    let tag = format!("n{files}");
    let t = Instant::now();
    let plain = b.root.join(format!("{tag}-plain"));
    build_dir(&plain, files, false)?;
    let full = b.root.join(format!("{tag}-p"));
    build_dir(&full, files, true)?;
    let image = std::fs::metadata(
        rdfs_master::checkpoint::list(&rdfs_master::checkpoint::checkpoint_dir(&full))
            .map_err(|e| anyhow::anyhow!("{e}"))?[0]
            .1
            .clone(),
    )?
    .len();
    println!();
    println!(
        "{files} files (checkpoint {:.1} MiB, built in {:.1}s):",
        image as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );
    // Memory: empty files, then one-chunk files.
    let (m, _, rss_plain) = recover(b, &plain, &format!("{tag}-plain.log"))?;
    drop(m);
    let (mut p, recovery, rss_full) = recover(b, &full, &format!("{tag}-p.log"))?;
    let per_file = rss_plain.saturating_sub(empty_rss) as f64 / files as f64;
    let per_chunk = rss_full.saturating_sub(rss_plain) as f64 / files as f64;
    println!(
        "  master restart (recovery) time       {:>8.2} s",
        recovery.as_secs_f64()
    );
    println!(
        "  master memory per file               {per_file:>8.0} B   (resident {:.0} MiB)",
        rss_plain as f64 / (1 << 20) as f64
    );
    println!("  master memory per chunk              {per_chunk:>8.0} B   (resident {:.0} MiB with one chunk per file)", rss_full as f64 / (1 << 20) as f64);
    // The standby: bootstrap from the primary's checkpoint.
    let t = Instant::now();
    let s = b.master(
        &b.root.join(format!("{tag}-s")),
        "127.0.0.1:0",
        Some(&p.addr),
        &format!("{tag}-s.log"),
    )?;
    let masters = format!("{},{}", p.addr, s.addr);
    let _cs = b.chunkservers(&masters, &tag)?;
    b.wait(&p.addr, "witnesses", |st| {
        st.witnesses as usize == CHUNKSERVERS && st.lease_valid
    })?;
    b.wait_in_sync(&p.addr, &s.addr)?;
    println!(
        "  standby bootstrap (checkpoint) time  {:>8.2} s",
        t.elapsed().as_secs_f64()
    );
    // Failover: kill -9 the primary; the standby answers a mutation.
    let c = b.client(&masters)?;
    b.rt.block_on(c.mkdir("/before", 0o755, false))?;
    let paddr = p.addr.clone();
    let t = Instant::now();
    p.kill9();
    b.rt.block_on(c.mkdir("/after", 0o755, false))?;
    let failover = t.elapsed();
    println!(
        "  failover time (kill -9 -> acked)     {:>8.2} s   (--failover-timeout {})",
        failover.as_secs_f64(),
        b.failover_timeout
    );
    // The old primary comes back and rejoins.
    let t = Instant::now();
    let old = b.master(&full, &paddr, None, &format!("{tag}-p2.log"))?;
    b.wait_in_sync(&s.addr, &old.addr)?;
    println!(
        "  old primary rejoin (in sync) time    {:>8.2} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let o = parse_args()?;
    let tmp;
    let root = match &o.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&root)?;
    let exe = std::env::current_exe()?;
    let dfs = exe.parent().context("exe dir")?.join("dfs");
    if !dfs.exists() {
        bail!("{} not found: build the workspace first", dfs.display());
    }
    let b = Bench {
        dfs,
        root,
        failover_timeout: o.failover_timeout.clone(),
        rt: tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    println!(
        "rdfs-ha-bench: {} CPUs, data in {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        b.root.display()
    );
    metadata_table(&b, o.ops)?;
    let empty = b.root.join("empty");
    build_dir(&empty, 0, false)?;
    let (m, _, empty_rss) = recover(&b, &empty, "empty.log")?;
    drop(m);
    for &n in &o.files {
        per_size(&b, n, empty_rss)?;
    }
    Ok(())
}
