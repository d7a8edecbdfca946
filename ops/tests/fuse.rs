//! FUSE tests: real `dfs mount` processes over a real multi-process cluster, driven with
//! std::fs, libc calls and everyday tools (cp, tar, git). CI runs as root, so mounts are
//! real; every mount is unmounted in `Drop`, even when a test panics (`umount -l` fallback).
#![allow(clippy::unwrap_used)]

mod common;

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Deadline the mounts use for each cluster call: short, so a dead master fails fast.
const MOUNT_TIMEOUT: &str = "5s";
/// How long a mount may take to appear in /proc/mounts.
const MOUNT_WAIT: Duration = Duration::from_secs(30);
/// How long `dfs mount` may take to exit after SIGTERM.
const UNMOUNT_WAIT: Duration = Duration::from_secs(15);

/// A `dfs mount` child process and its mount point.
struct FuseMount {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
    /// The child was waited for: its pid may belong to someone else now.
    reaped: bool,
}

fn is_mounted(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let want = dir.to_str().unwrap();
    mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(want) && l.contains("fuse"))
}

impl FuseMount {
    fn start(c: &ProcCluster, dir: &Path) -> FuseMount {
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
            .args([
                "--master",
                &c.master.addr,
                "--timeout",
                MOUNT_TIMEOUT,
                "mount",
            ])
            .arg(&dir)
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

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped = true;
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait for a clean exit; true when it unmounted by itself.
    fn stop(&mut self) -> bool {
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

fn errno_of(r: std::io::Result<impl Sized>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn run(cmd: &mut Command) -> String {
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

#[test]
fn files_written_through_the_mount_read_back_identically_after_remount() {
    let c = ProcCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let mnt = work.path().join("mnt");
    let sizes = [
        0usize,
        1,
        4095,
        CHUNK_SIZE as usize,
        3 * CHUNK_SIZE as usize + 777,
    ];
    let mut sums = Vec::new();
    {
        let m = FuseMount::start(&c, &mnt);
        std::fs::create_dir(m.path("d")).unwrap();
        for (i, len) in sizes.iter().enumerate() {
            let data = test_bytes(*len, i as u64 + 1);
            std::fs::write(m.path(&format!("d/f{i}")), &data).unwrap();
            assert_eq!(
                std::fs::metadata(m.path(&format!("d/f{i}"))).unwrap().len(),
                *len as u64
            );
            assert_eq!(sha256_file(&m.path(&format!("d/f{i}"))), sha256(&data));
            sums.push(sha256(&data));
        }
        // Small writes are gathered: 4 KiB at a time, read back while still open.
        let mut f = File::create(m.path("small")).unwrap();
        let data = test_bytes(2 * CHUNK_SIZE as usize + 100, 99);
        for piece in data.chunks(4096) {
            f.write_all(piece).unwrap();
        }
        assert_eq!(
            f.metadata().unwrap().len(),
            data.len() as u64,
            "size includes buffered"
        );
        let mut back = Vec::new();
        File::open(m.path("small"))
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(sha256(&back), sha256(&data), "reads see buffered writes");
        f.sync_all().unwrap();
        drop(f);
        sums.push(sha256(&data));
    }
    assert!(
        !is_mounted(&mnt.canonicalize().unwrap()),
        "unmounted on SIGTERM"
    );
    // The data is in the cluster: the CLI sees it, and so does a fresh mount.
    let ls = c.must_json(&["ls", "--json", "/d"]);
    assert_eq!(ls.as_array().unwrap().len(), sizes.len());
    let m = FuseMount::start(&c, &mnt);
    for (i, sum) in sums.iter().take(sizes.len()).enumerate() {
        assert_eq!(&sha256_file(&m.path(&format!("d/f{i}"))), sum, "f{i}");
    }
    assert_eq!(sha256_file(&m.path("small")), sums[sizes.len()]);
}

#[test]
fn posix_semantics_hold_on_the_mount() {
    let c = ProcCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let m = FuseMount::start(&c, &work.path().join("mnt"));

    // truncate: grow reads zeros, shrink cuts, grow again reads zeros (not old bytes).
    let p = m.path("t");
    std::fs::write(&p, b"hello world").unwrap();
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(CHUNK_SIZE + 10).unwrap();
    drop(f);
    let body = std::fs::read(&p).unwrap();
    assert_eq!(body.len() as u64, CHUNK_SIZE + 10);
    assert_eq!(&body[..11], b"hello world");
    assert!(body[11..].iter().all(|b| *b == 0));
    OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(5)
        .unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"hello");
    OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(8)
        .unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"hello\0\0\0");

    // O_TRUNC and O_APPEND.
    std::fs::write(&p, b"0123456789").unwrap();
    std::fs::write(&p, b"ab").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"ab");
    let mut a = OpenOptions::new().append(true).open(&p).unwrap();
    a.write_all(b"cd").unwrap();
    a.seek(SeekFrom::Start(0)).unwrap();
    a.write_all(b"ef").unwrap();
    drop(a);
    assert_eq!(std::fs::read(&p).unwrap(), b"abcdef");

    // O_EXCL.
    let excl = OpenOptions::new().write(true).create_new(true).open(&p);
    assert_eq!(errno_of(excl), libc::EEXIST);

    // Names: 255 bytes fine, 256 refused.
    let ok = "n".repeat(255);
    std::fs::write(m.path(&ok), b"x").unwrap();
    assert_eq!(std::fs::read(m.path(&ok)).unwrap(), b"x");
    let long = "n".repeat(256);
    assert_eq!(
        errno_of(std::fs::write(m.path(&long), b"x")),
        libc::ENAMETOOLONG
    );

    // rename over an existing file, across directories; RENAME_NOREPLACE.
    std::fs::create_dir(m.path("a")).unwrap();
    std::fs::create_dir(m.path("b")).unwrap();
    std::fs::write(m.path("a/src"), b"new").unwrap();
    std::fs::write(m.path("b/dst"), b"old").unwrap();
    std::fs::rename(m.path("a/src"), m.path("b/dst")).unwrap();
    assert_eq!(std::fs::read(m.path("b/dst")).unwrap(), b"new");
    assert_eq!(errno_of(std::fs::metadata(m.path("a/src"))), libc::ENOENT);
    std::fs::write(m.path("a/one"), b"1").unwrap();
    // SAFETY: valid NUL-terminated paths; renameat2 only reads them.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cstr(&m.path("a/one")).as_ptr(),
            libc::AT_FDCWD,
            cstr(&m.path("b/dst")).as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EEXIST)
    );
    assert_eq!(std::fs::read(m.path("b/dst")).unwrap(), b"new");
    // rmdir of a non-empty directory fails; rename over an empty directory works.
    assert_eq!(errno_of(std::fs::remove_dir(m.path("a"))), libc::ENOTEMPTY);
    std::fs::create_dir(m.path("empty")).unwrap();
    std::fs::create_dir(m.path("c")).unwrap();
    std::fs::rename(m.path("c"), m.path("empty")).unwrap();
    assert!(m.path("empty").is_dir() && !m.path("c").exists());

    // Hard links: nlink counts names; data shared.
    std::fs::write(m.path("h1"), b"linked").unwrap();
    std::fs::hard_link(m.path("h1"), m.path("b/h2")).unwrap();
    assert_eq!(std::fs::metadata(m.path("h1")).unwrap().nlink(), 2);
    assert_eq!(
        std::fs::metadata(m.path("h1")).unwrap().ino(),
        std::fs::metadata(m.path("b/h2")).unwrap().ino()
    );
    std::fs::remove_file(m.path("h1")).unwrap();
    assert_eq!(std::fs::metadata(m.path("b/h2")).unwrap().nlink(), 1);
    assert_eq!(std::fs::read(m.path("b/h2")).unwrap(), b"linked");

    // Symlinks.
    std::os::unix::fs::symlink("b/h2", m.path("sym")).unwrap();
    assert_eq!(
        std::fs::read_link(m.path("sym")).unwrap(),
        Path::new("b/h2")
    );
    assert_eq!(std::fs::read(m.path("sym")).unwrap(), b"linked");
    assert!(std::fs::symlink_metadata(m.path("sym"))
        .unwrap()
        .file_type()
        .is_symlink());

    // chmod, chown, utimens.
    std::fs::set_permissions(m.path("b/h2"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let md = std::fs::metadata(m.path("b/h2")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o600);
    std::os::unix::fs::chown(m.path("b/h2"), Some(1234), Some(5678)).unwrap();
    let md = std::fs::metadata(m.path("b/h2")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    let when = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    File::options()
        .write(true)
        .open(m.path("b/h2"))
        .unwrap()
        .set_modified(when)
        .unwrap();
    assert_eq!(
        std::fs::metadata(m.path("b/h2")).unwrap().mtime(),
        1_000_000_000
    );

    // Timestamps: a write moves mtime, a chmod moves ctime.
    let ts = m.path("times");
    std::fs::write(&ts, b"1").unwrap();
    let before = std::fs::metadata(&ts).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&ts, b"22").unwrap();
    let after = std::fs::metadata(&ts).unwrap();
    assert!(
        after.modified().unwrap() > before.modified().unwrap(),
        "mtime moved"
    );
    std::thread::sleep(Duration::from_millis(20));
    std::fs::set_permissions(&ts, std::fs::Permissions::from_mode(0o640)).unwrap();
    let chmodded = std::fs::metadata(&ts).unwrap();
    assert!(
        (chmodded.ctime(), chmodded.ctime_nsec()) > (after.ctime(), after.ctime_nsec()),
        "ctime moved"
    );
    assert_eq!(chmodded.mtime(), after.mtime(), "chmod leaves mtime");

    // umask and mode on create.
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(m.path("moded"))
        .unwrap();
    drop(f);
    assert_eq!(
        std::fs::metadata(m.path("moded")).unwrap().mode() & 0o777,
        0o640 & !0o022
    );

    // Unlink while open: still readable and writable through the descriptor.
    std::fs::write(m.path("gone"), b"still here").unwrap();
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("gone"))
        .unwrap();
    std::fs::remove_file(m.path("gone")).unwrap();
    assert_eq!(errno_of(std::fs::metadata(m.path("gone"))), libc::ENOENT);
    assert_eq!(
        f.metadata().unwrap().nlink(),
        0,
        "fstat of an unlinked open file"
    );
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "still here");
    f.write_all(b"!").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    s.clear();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "still here!");
    drop(f);

    // Extended attributes through the syscalls.
    let x = cstr(&m.path("b/dst"));
    let name = CString::new("user.color").unwrap();
    // SAFETY: valid pointers and lengths for the duration of each call.
    unsafe {
        assert_eq!(
            libc::setxattr(x.as_ptr(), name.as_ptr(), b"blue".as_ptr().cast(), 4, 0),
            0
        );
        let mut buf = [0u8; 64];
        let n = libc::getxattr(
            x.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        );
        assert_eq!(&buf[..n as usize], b"blue");
        let n = libc::listxattr(x.as_ptr(), buf.as_mut_ptr().cast(), buf.len());
        assert!(n > 0);
        assert!(buf[..n as usize]
            .split(|b| *b == 0)
            .any(|s| s == b"user.color"));
        assert_eq!(
            libc::setxattr(
                x.as_ptr(),
                name.as_ptr(),
                b"red".as_ptr().cast(),
                3,
                libc::XATTR_CREATE
            ),
            -1
        );
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EEXIST)
        );
        assert_eq!(libc::removexattr(x.as_ptr(), name.as_ptr()), 0);
        let n = libc::getxattr(
            x.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        );
        assert_eq!(n, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ENODATA)
        );
    }

    // FIFO via mknod.
    run(Command::new("mkfifo").arg(m.path("pipe")));
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(m.path("pipe"))
        .unwrap()
        .file_type()
        .is_fifo());

    // Sparse file: a write far past the end leaves a hole that reads as zeros and holds no
    // chunk.
    let sparse = m.path("sparse");
    let mut f = File::create(&sparse).unwrap();
    f.seek(SeekFrom::Start(5 * CHUNK_SIZE + 3)).unwrap();
    f.write_all(b"tail").unwrap();
    drop(f);
    let body = std::fs::read(&sparse).unwrap();
    assert_eq!(body.len() as u64, 5 * CHUNK_SIZE + 7);
    assert!(body[..body.len() - 4].iter().all(|b| *b == 0));
    assert_eq!(&body[body.len() - 4..], b"tail");
    let st = c.must_json(&["stat", "--json", "/sparse"]);
    assert_eq!(
        st["chunks"].as_array().unwrap().len(),
        1,
        "holes take no chunks: {st}"
    );

    // Shared writable mmap: stores reach the file, and a fresh read sees them.
    let mapped = m.path("mapped");
    std::fs::write(&mapped, vec![b'.'; 8192]).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&mapped)
        .unwrap();
    // SAFETY: a fresh shared mapping of an open 8 KiB file, unmapped before the file closes.
    unsafe {
        use std::os::fd::AsRawFd;
        let p = libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        let bytes = std::slice::from_raw_parts_mut(p.cast::<u8>(), 8192);
        assert_eq!(bytes[100], b'.');
        bytes[4096..4101].copy_from_slice(b"mmap!");
        assert_eq!(libc::msync(p, 8192, libc::MS_SYNC), 0);
        assert_eq!(libc::munmap(p, 8192), 0);
    }
    drop(f);
    let body = std::fs::read(&mapped).unwrap();
    assert_eq!(&body[4096..4101], b"mmap!");
    assert_eq!(body.len(), 8192);
    let in_cluster = c.must_dfs(&["cat", "/mapped"]);
    assert_eq!(&in_cluster.as_bytes()[4096..4101], b"mmap!", "written back");

    // statfs reports the cluster's capacity.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer.
    assert_eq!(unsafe { libc::statvfs(cstr(&m.dir).as_ptr(), &mut st) }, 0);
    assert!(st.f_blocks > 0 && st.f_bsize > 0);
    assert_eq!(st.f_namemax, 255);
}

#[test]
fn readdir_of_2000_entries_lists_each_exactly_once() {
    const N: usize = 2000;
    let c = ProcCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let m = FuseMount::start(&c, &work.path().join("mnt"));
    std::fs::create_dir(m.path("big")).unwrap();
    for i in 0..N {
        File::create(m.path(&format!("big/entry-{i:05}"))).unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir(m.path("big"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), N, "no duplicates, none missing");
    names.sort();
    names.dedup();
    assert_eq!(names.len(), N);
    assert_eq!(names[0], "entry-00000");
    assert_eq!(names[N - 1], format!("entry-{:05}", N - 1));
    // ls sees the same (it uses large getdents buffers).
    let ls = run(Command::new("ls").arg("-1").arg(m.path("big")));
    assert_eq!(ls.lines().count(), N);
}

#[test]
fn everyday_tools_work_on_the_mount() {
    let c = ProcCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let m = FuseMount::start(&c, &work.path().join("mnt"));
    let src = work.path().join("src");
    let n = copy_real_tree(Path::new("/usr/share/doc"), &src, 300);
    assert!(n >= 100, "only {n} real files found");

    // cp -a, then diff -r.
    run(Command::new("cp").arg("-a").arg(&src).arg(m.path("copy")));
    run(Command::new("diff").arg("-r").arg(&src).arg(m.path("copy")));

    // tar -x of a tarball of the same tree, then diff -r.
    let tarball = work.path().join("tree.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(&src)
        .arg("."));
    std::fs::create_dir(m.path("untar")).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&tarball)
        .arg("-C")
        .arg(m.path("untar")));
    run(Command::new("diff")
        .arg("-r")
        .arg(&src)
        .arg(m.path("untar")));

    // git init / add / commit / fsck on the mount.
    let repo = m.path("repo");
    run(Command::new("cp").arg("-a").arg(&src).arg(&repo));
    let git = |args: &[&str]| {
        run(Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(["-c", "init.defaultBranch=main", "-c", "safe.directory=*"])
            .args(args)
            .current_dir(&repo))
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "tree on rdfs"]);
    git(&["fsck", "--full"]);
    let status = git(&["status", "--porcelain"]);
    assert!(status.is_empty(), "clean after commit: {status}");
}

#[test]
fn permissions_decide_what_another_user_may_read() {
    let c = ProcCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let m = FuseMount::start(&c, &work.path().join("mnt"));
    std::fs::set_permissions(&m.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(m.path("public"), b"for everyone").unwrap();
    std::fs::set_permissions(m.path("public"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(m.path("private"), b"root only").unwrap();
    std::fs::set_permissions(m.path("private"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .args(args)
            .output()
            .unwrap()
    };
    let public = m.path("public");
    let out = as_nobody(&["cat", public.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"for everyone");
    let private = m.path("private");
    let out = as_nobody(&["cat", private.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // nobody cannot create in a 0755 root-owned directory either.
    let newfile = m.path("nobody-was-here");
    let out = as_nobody(&["touch", newfile.to_str().unwrap()]);
    assert!(!out.status.success());
}

#[test]
fn two_mounts_see_each_others_files_after_close() {
    let c = ProcCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let a = FuseMount::start(&c, &work.path().join("a"));
    let b = FuseMount::start(&c, &work.path().join("b"));
    let v1 = test_bytes(CHUNK_SIZE as usize + 5, 1);
    std::fs::write(a.path("shared"), &v1).unwrap();
    assert_eq!(sha256_file(&b.path("shared")), sha256(&v1));
    // Rewrite with a different size on A; B (which has it cached) sees it at its next open.
    let v2 = test_bytes(2 * CHUNK_SIZE as usize + 17, 2);
    std::fs::write(a.path("shared"), &v2).unwrap();
    assert_eq!(std::fs::read(b.path("shared")).unwrap().len(), v2.len());
    assert_eq!(sha256_file(&b.path("shared")), sha256(&v2));
    let v3 = b"short".to_vec();
    std::fs::write(b.path("shared"), &v3).unwrap();
    assert_eq!(std::fs::read(a.path("shared")).unwrap(), v3);
}

#[test]
fn a_dead_master_makes_calls_fail_with_eio_instead_of_hanging() {
    let mut c = ProcCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let m = FuseMount::start(&c, &work.path().join("mnt"));
    std::fs::write(m.path("before"), b"x").unwrap();
    c.master.kill9();
    let start = Instant::now();
    let r = std::fs::metadata(m.path("never-seen"));
    assert_eq!(errno_of(r), libc::EIO);
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn fsync_and_a_crashed_mount_are_handled() {
    let c = ProcCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("mnt");
    let mut m = FuseMount::start(&c, &dir);
    // fsync after buffered writes spanning chunks: the data is published and durable.
    let data = test_bytes(3 * CHUNK_SIZE as usize + 123, 5);
    let mut f = File::create(m.path("synced")).unwrap();
    for piece in data.chunks(64 << 10) {
        f.write_all(piece).unwrap();
    }
    f.sync_all().unwrap();
    let st = c.must_json(&["stat", "--json", "/synced"]);
    assert_eq!(
        st["size"].as_u64(),
        Some(data.len() as u64),
        "fsync published the size"
    );
    drop(f);

    // kill -9 of `dfs mount` leaves a dead mount; mounting again clears it.
    m.kill9();
    assert_eq!(errno_of(std::fs::metadata(&m.dir)), libc::ENOTCONN);
    let again = FuseMount::start(&c, &dir);
    assert_eq!(sha256_file(&again.path("synced")), sha256(&data));
    drop(again);
    drop(m);
    assert!(!is_mounted(&dir.canonicalize().unwrap()));
    let log = std::fs::read_to_string(dir.with_extension("mount.log")).unwrap();
    assert!(
        log.contains("dead"),
        "the second mount reported the dead one:\n{log}"
    );
}

#[test]
fn cluster_up_with_mount_serves_and_unmounts_on_ctrl_c() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let mnt = work.path().join("mnt");
    let mut up = Command::new(dfs_bin())
        .args(["cluster", "up", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .arg("--mount")
        .arg(&mnt)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + MOUNT_WAIT;
    while !mnt.exists() || !is_mounted(&mnt.canonicalize().unwrap()) {
        if Instant::now() > deadline || up.try_wait().unwrap().is_some() {
            let _ = up.kill();
            let _ = up.wait();
            panic!("cluster up --mount did not mount");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mnt = mnt.canonicalize().unwrap();
    let wrote = std::fs::write(mnt.join("hello"), b"from cluster up");
    let read = std::fs::read(mnt.join("hello"));
    let pid = nix::unistd::Pid::from_raw(up.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
    let deadline = Instant::now() + UNMOUNT_WAIT * 2;
    while up.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if is_mounted(&mnt) {
        let _ = Command::new("umount").arg("-l").arg(&mnt).status();
        let _ = up.kill();
        let _ = up.wait();
        panic!("the mount outlived cluster up");
    }
    let _ = up.kill();
    let _ = up.wait();
    wrote.unwrap();
    assert_eq!(read.unwrap(), b"from cluster up");
}
