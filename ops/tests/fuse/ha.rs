//! Issue 5, item 4: a file written through a FUSE mount and a `dfs put` both continue
//! through a failover (kill -9 of the primary master while both are in flight): a pause,
//! no error, and the exact bytes afterwards. CI moves 48 MiB each way; the 1 GiB run is
//! `#[ignore]`d (`cargo test -p rdfs-ops --test fuse -- --ignored failover_1gib`).

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::common::ha::*;
use crate::common::*;
use crate::mount::*;

/// Bytes per write(2) through the mount.
const WRITE_BYTES: usize = 1 << 20;

/// The i-th MiB of a test file (deterministic, so big files need not sit in memory).
fn block(i: usize) -> Vec<u8> {
    test_bytes(WRITE_BYTES, 7_000 + i as u64)
}

fn sha_of_blocks(n: usize) -> String {
    let mut h = Sha256::new();
    for i in 0..n {
        h.update(block(i));
    }
    hex::encode(h.finalize())
}

fn failover_during_writes(mib: usize) {
    let mut c = HaCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    // A deadline far above a takeover: the mount pauses, it does not fail.
    let m = FuseMount::start_masters(&c.master_list(), "60s", &work.path().join("mnt"), &[]);
    let src = work.path().join("src.bin");
    {
        let mut f = std::fs::File::create(&src).unwrap();
        for i in 0..mib {
            f.write_all(&block(i)).unwrap();
        }
    }
    let want = sha_of_blocks(mib);

    let written = Arc::new(AtomicU64::new(0));
    let target = m.path("through-mount.bin");
    let writer = {
        let (written, target) = (written.clone(), target.clone());
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&target)?;
            for i in 0..mib {
                f.write_all(&block(i))?;
                written.fetch_add(WRITE_BYTES as u64, Ordering::SeqCst);
            }
            f.sync_all()
        })
    };
    let put = Command::new(dfs_bin())
        .args(["--master", &c.master_list(), "--timeout", "60s", "put"])
        .arg(&src)
        .arg("/put.bin")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the primary once a quarter has gone through the mount.
    let quarter = (mib * WRITE_BYTES / 4) as u64;
    must_eventually(Duration::from_secs(120), "writes to get going", || {
        (written.load(Ordering::SeqCst) >= quarter).then_some(())
    });
    let primary = c.primary().expect("a primary");
    let killed = Instant::now();
    c.kill9(primary);
    let took = c.wait_primary_is(1 - primary, TAKEOVER_LIMIT);
    eprintln!(
        "took over in {took:?} with {} MiB through the mount",
        written.load(Ordering::SeqCst) >> 20
    );
    writer
        .join()
        .unwrap()
        .expect("writes through the mount continue through the failover");
    let out = put.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dfs put failed through the failover: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("both finished {:?} after the kill", killed.elapsed());
    // Exact bytes: through the mount, and of the put through the CLI.
    let (len, sha) = sha_stream(std::fs::File::open(&target).unwrap());
    assert_eq!(
        (len, sha.as_str()),
        (mib * WRITE_BYTES, want.as_str()),
        "file written through the mount"
    );
    let mut cat = Command::new(dfs_bin())
        .args([
            "--master",
            &c.master_list(),
            "--timeout",
            "60s",
            "cat",
            "/put.bin",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (len, sha) = sha_stream(cat.stdout.take().unwrap());
    assert!(cat.wait().unwrap().success());
    assert_eq!(
        (len, sha.as_str()),
        (mib * WRITE_BYTES, want.as_str()),
        "file put with dfs put"
    );
}

/// (length, sha256) of everything `r` yields.
fn sha_stream(mut r: impl std::io::Read) -> (usize, String) {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0;
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            return (len, hex::encode(h.finalize()));
        }
        len += n;
        h.update(&buf[..n]);
    }
}

#[test]
fn writes_through_a_mount_and_a_put_continue_through_a_failover() {
    failover_during_writes(48);
}

#[test]
#[ignore = "moves 1 GiB twice; run on demand"]
fn failover_1gib() {
    failover_during_writes(1024);
}
