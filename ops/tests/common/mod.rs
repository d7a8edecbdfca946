//! Multi-process harness: real `dfs master` / `dfs chunkserver` processes on loopback,
//! each started with `--listen 127.0.0.1:0` and read back from its first stdout line.
//! Every process is killed in `Drop`, so a failing test leaves nothing behind.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

pub mod dash;
pub mod ha;

pub const CHUNK_SIZE: u64 = 1 << 20;

pub fn dfs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_dfs")
}

pub struct Proc {
    pub name: String,
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
    /// Stdout lines after the first (the master's dashboard line).
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl Proc {
    pub fn spawn(name: &str, args: &[String], log: &Path) -> Proc {
        let log_file = std::fs::File::create(log).unwrap();
        let mut child = Command::new(dfs_bin())
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.try_send(l);
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "{name} did not start; log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        };
        let addr = line.rsplit(' ').next().unwrap().to_string();
        Proc {
            name: name.into(),
            child,
            addr,
            log: log.to_path_buf(),
            lines: rx,
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).unwrap();
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = kill(self.pid(), Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fields drop in order: the servers are killed before their data directory is removed
/// (a running chunkserver would recreate files under a removal in progress).
pub struct ProcCluster {
    pub master: Proc,
    pub chunkservers: Vec<Proc>,
    /// The master's dashboard address (HOST:PORT).
    pub http: String,
    /// Extra `dfs master` flags, kept across restarts.
    pub master_args: Vec<String>,
    /// `--capacity` of new chunkservers.
    pub chunkserver_capacity: Option<u64>,
    pub dir: tempfile::TempDir,
}

impl ProcCluster {
    pub fn start(chunkservers: usize) -> ProcCluster {
        Self::start_with(chunkservers, &[], None)
    }

    /// A cluster whose master gets `master_args` too and whose chunkservers offer
    /// `capacity` bytes each.
    pub fn start_with(
        chunkservers: usize,
        master_args: &[&str],
        capacity: Option<u64>,
    ) -> ProcCluster {
        let dir = tempfile::tempdir().unwrap();
        let master_args: Vec<String> = master_args.iter().map(|s| s.to_string()).collect();
        let master = Self::spawn_master_with(dir.path(), "127.0.0.1:0", &master_args);
        let http = dashboard_addr(&master);
        let mut c = ProcCluster {
            dir,
            master,
            chunkservers: Vec::new(),
            http,
            master_args,
            chunkserver_capacity: capacity,
        };
        for _ in 0..chunkservers {
            c.add_chunkserver();
        }
        c.wait_live(chunkservers);
        c
    }

    pub fn spawn_master(dir: &Path, listen: &str) -> Proc {
        Self::spawn_master_with(dir, listen, &[])
    }

    pub fn spawn_master_with(dir: &Path, listen: &str, extra: &[String]) -> Proc {
        let mut args = master_args(&dir.join("master"), listen);
        args.extend(["--http".to_string(), "127.0.0.1:0".to_string()]);
        args.extend(extra.iter().cloned());
        Proc::spawn("master", &args, &dir.join("master.log"))
    }

    pub fn restart_master(&mut self) {
        let addr = self.master.addr.clone();
        self.master.kill9();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The port may linger briefly after the kill.
            let probe = std::net::TcpListener::bind(&addr);
            if probe.is_ok() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.master = Self::spawn_master_with(self.dir.path(), &addr, &self.master_args);
        self.http = dashboard_addr(&self.master);
    }

    pub fn chunkserver_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("cs{i}"))
    }

    pub fn add_chunkserver(&mut self) -> usize {
        let i = self.chunkservers.len();
        let p = self.spawn_chunkserver(i, "127.0.0.1:0", &self.master.addr.clone());
        self.chunkservers.push(p);
        i
    }

    pub fn spawn_chunkserver(&self, i: usize, listen: &str, master: &str) -> Proc {
        let mut args: Vec<String> = [
            "--master",
            master,
            "chunkserver",
            "--data",
            self.chunkserver_dir(i).to_str().unwrap(),
            "--listen",
            listen,
            "--block-report-interval",
            "2s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(cap) = self.chunkserver_capacity {
            args.extend(["--capacity".to_string(), cap.to_string()]);
        }
        Proc::spawn(
            &format!("cs{i}"),
            &args,
            &self
                .dir
                .path()
                .join(format!("cs{i}.{}.log", listen.replace(':', "_"))),
        )
    }

    /// Runs `dfs --master ADDR ARGS...`.
    pub fn dfs(&self, args: &[&str]) -> Output {
        Command::new(dfs_bin())
            .arg("--master")
            .arg(&self.master.addr)
            .arg("--timeout")
            .arg("30s")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs dfs and asserts success; returns stdout.
    pub fn must_dfs(&self, args: &[&str]) -> String {
        let out = self.dfs(args);
        assert!(
            out.status.success(),
            "dfs {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs dfs and asserts success; returns stdout as bytes.
    pub fn must_dfs_bytes(&self, args: &[&str]) -> Vec<u8> {
        let out = self.dfs(args);
        assert!(
            out.status.success(),
            "dfs {args:?} failed ({}):\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    pub fn must_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.must_dfs(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("dfs {args:?}: bad json {e}: {out}"))
    }

    /// Tails of every server log, for failure messages.
    pub fn dump_logs(&self) -> String {
        let mut out = String::new();
        for p in std::iter::once(&self.master).chain(&self.chunkservers) {
            let text = p.log_text();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("==== {} ({})\n", p.name, p.addr));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    pub fn wait_live(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.live_count() < n {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} live chunkservers\n{}",
                self.dump_logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn live_count(&self) -> usize {
        let live = || -> Option<usize> {
            let out = self.dfs(&["df", "--json"]);
            if !out.status.success() {
                return None;
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let live = v["chunkservers"]
                .as_array()?
                .iter()
                .filter(|c| c["state"] == "live")
                .count();
            Some(live)
        };
        live().unwrap_or(0)
    }

    /// Chunk files (`*.data`) for `chunk_id` under chunkserver `i`.
    pub fn chunk_files(&self, i: usize, chunk_id: u64) -> Vec<PathBuf> {
        let name = format!("{chunk_id:016x}.data");
        walk(&self.chunkserver_dir(i))
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|f| f == name.as_str()))
            .collect()
    }
}

/// `dfs master` arguments with the short timings every multi-process test uses.
pub fn master_args(data: &Path, listen: &str) -> Vec<String> {
    [
        "master",
        "--data",
        data.to_str().unwrap(),
        "--listen",
        listen,
        "--chunk-size",
        &CHUNK_SIZE.to_string(),
        "--heartbeat-interval",
        "200ms",
        "--heartbeat-timeout",
        "2s",
        "--lease",
        "2s",
        "--block-report-interval",
        "2s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The dashboard address a master printed on its second stdout line.
fn dashboard_addr(master: &Proc) -> String {
    let line = master
        .lines
        .recv_timeout(Duration::from_secs(30))
        .expect("master printed no dashboard line");
    line.rsplit(' ')
        .next()
        .unwrap()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            out.extend(walk(&p));
        } else if ft.is_file() {
            out.push(p);
        }
    }
    out.sort();
    out
}

pub fn must_eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn sha256_file(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

pub fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Deterministic pseudo-random bytes.
pub fn test_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Copies up to `max_files` regular files of a real tree (symlinks skipped) into `dst`.
pub fn copy_real_tree(src: &Path, dst: &Path, max_files: usize) -> usize {
    let mut n = 0;
    for p in walk(src) {
        if n >= max_files {
            break;
        }
        let rel = p.strip_prefix(src).unwrap();
        let to = dst.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        if std::fs::copy(&p, &to).is_ok() {
            n += 1;
        }
    }
    n
}
