//! A `dfs mount` child process and the small helpers every FUSE test uses.

use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// Deadline the mounts use for each cluster call: short, so a dead server fails fast.
pub const MOUNT_TIMEOUT: &str = "5s";
/// How long a mount may take to appear in /proc/mounts.
pub const MOUNT_WAIT: Duration = Duration::from_secs(30);
/// How long `dfs mount` may take to exit after SIGTERM.
pub const UNMOUNT_WAIT: Duration = Duration::from_secs(15);

/// A `dfs mount` child process and its mount point.
pub struct FuseMount {
    child: Child,
    pub dir: PathBuf,
    pub log: PathBuf,
    /// The child was waited for: its pid may belong to someone else now.
    reaped: bool,
}

pub fn is_mounted(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let want = dir.to_str().unwrap();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want) && l.contains("fuse"))
}

/// The options column of `dir`'s line in /proc/mounts.
pub fn mount_options(dir: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let want = dir.to_str().unwrap();
    mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(want))
        .and_then(|l| l.split(' ').nth(3))
        .unwrap_or_default()
        .to_string()
}

impl FuseMount {
    /// Mounts `c` at `dir` with the default options.
    pub fn start(c: &ProcCluster, dir: &Path) -> FuseMount {
        Self::start_with(c, dir, &[])
    }

    /// Mounts `c` at `dir`, passing `extra` to `dfs mount` (e.g. `--attr-ttl 60s`).
    pub fn start_with(c: &ProcCluster, dir: &Path, extra: &[&str]) -> FuseMount {
        Self::start_masters(&c.master.addr, MOUNT_TIMEOUT, dir, extra)
    }

    /// Mounts the cluster whose masters are `masters` (`a,b`) at `dir`, with `timeout` as
    /// the deadline of each cluster call.
    pub fn start_masters(masters: &str, timeout: &str, dir: &Path, extra: &[&str]) -> FuseMount {
        // A dead mount answers ENOTCONN to everything: resolve through the parent.
        let dir = dir
            .parent()
            .unwrap()
            .canonicalize()
            .unwrap()
            .join(dir.file_name().unwrap());
        if let Err(e) = std::fs::create_dir(&dir) {
            assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
        }
        let log = dir.with_extension("mount.log");
        let mut child = Command::new(dfs_bin())
            .args(["--master", masters, "--timeout", timeout, "mount"])
            .arg(&dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        // `dfs mount` prints its first line once the kernel handshake is done.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(|l| l.ok()).unwrap_or_default());
            for _ in lines {}
        });
        let m = FuseMount {
            child,
            dir,
            log,
            reaped: false,
        };
        let line = rx.recv_timeout(MOUNT_WAIT).unwrap_or_default();
        assert!(
            line.starts_with("rdfs mounted at"),
            "dfs mount did not start ({line:?}):\n{}",
            m.log_text()
        );
        assert!(is_mounted(&m.dir), "not in /proc/mounts:\n{}", m.log_text());
        m
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped = true;
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait for a clean exit; true when it unmounted by itself.
    pub fn stop(&mut self) -> bool {
        if self.reaped {
            return !is_mounted(&self.dir);
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + UNMOUNT_WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.reaped = true;
                return st.success() && !is_mounted(&self.dir);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        self.stop();
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The errno of a failed std call (0 on success).
pub fn errno_of<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

/// The errno of the last failed libc call.
pub fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

pub fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// Runs `cmd`, asserts success, returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `sh -c script` as `uid`/`gid` (std drops the supplementary groups when it
/// changes the uid of a root parent).
pub fn sh_as(uid: u32, gid: u32, script: &str) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap()
}

/// `sh_as` that must succeed; returns stdout.
pub fn must_sh_as(uid: u32, gid: u32, script: &str) -> String {
    let out = sh_as(uid, gid, script);
    assert!(
        out.status.success(),
        "as {uid}:{gid}: {script}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Bytes the cluster stores (all replicas), from `dfs df --json`.
pub fn used_bytes(c: &ProcCluster) -> u64 {
    c.must_json(&["df", "--json"])["used"].as_u64().unwrap()
}

/// Chunks the namespace references, from `dfs fsck --json`.
pub fn chunk_count(c: &ProcCluster) -> u64 {
    c.must_json(&["fsck", "--json"])["chunks"].as_u64().unwrap()
}
