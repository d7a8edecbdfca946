//! Faults under a mount: kill -9 of a chunkserver during `cp`, dead or hung servers
//! (EIO within the deadline, never a hang) and recovery once they are back.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::common::*;
use crate::mount::*;

/// Files in the tree `cp` copies, and the size of each (1–3 chunks).
const CP_FILES: usize = 48;
/// How long a dead or hung server may make a call wait before it fails (mount `--timeout
/// 5s`, a few rounds of retries).
const FAIL_WITHIN: Duration = Duration::from_secs(30);

fn cp_file_len(i: usize) -> usize {
    (CHUNK_SIZE as usize) * (1 + i % 3) + i * 4099
}

/// Writes the local source tree; returns each file's relative path and sha256.
fn make_tree(src: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for i in 0..CP_FILES {
        let rel = format!("d{}/f{i:02}", i % 4);
        let data = test_bytes(cp_file_len(i), 1000 + i as u64);
        let p = src.join(&rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &data).unwrap();
        files.push((rel, sha256(&data)));
    }
    files
}

#[test]
fn kill_9_of_a_chunkserver_during_cp_loses_nothing_cp_reported_written() {
    let mut c = ProcCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let m = FuseMount::start(&c, &work.path().join("mnt"));
    let src = work.path().join("src");
    let files = make_tree(&src);

    let mut cp = Command::new("cp")
        .arg("-r")
        .arg(&src)
        .arg(m.path("dst"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill a chunkserver once a few files have landed, while cp is still writing.
    must_eventually(Duration::from_secs(60), "cp to start writing", || {
        let landed = (0..4)
            .filter_map(|d| std::fs::read_dir(m.path(&format!("dst/d{d}"))).ok())
            .map(|rd| rd.count())
            .sum::<usize>();
        (landed >= 4).then_some(())
    });
    let still_copying = cp.try_wait().unwrap().is_none();
    let victim_addr = c.chunkservers[1].addr.clone();
    c.chunkservers[1].kill9();
    let out = cp.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        still_copying,
        "cp finished before the kill: the test proves nothing"
    );

    // The copy completes (the client re-grants chains without the dead replica); if cp
    // did report errors, only the files it named may be wrong.
    let failed: Vec<&str> = files
        .iter()
        .map(|(rel, _)| rel.as_str())
        .filter(|rel| stderr.contains(rel))
        .collect();
    assert!(
        out.status.success(),
        "cp failed after the kill of {victim_addr} (files named: {failed:?}):\n{stderr}\n{}",
        c.dump_logs()
    );
    // Every file cp wrote reads back identical: through the CLI (the cluster's bytes, no
    // kernel cache) and through a second, fresh mount.
    let fresh = FuseMount::start(&c, &work.path().join("fresh"));
    for (rel, sum) in &files {
        let out = c.dfs(&["cat", &format!("/dst/{rel}")]);
        assert!(out.status.success(), "dfs cat /dst/{rel}: {:?}", out);
        assert_eq!(&sha256(&out.stdout), sum, "/dst/{rel} in the cluster");
        assert_eq!(
            &sha256_file(&fresh.path(&format!("dst/{rel}"))),
            sum,
            "{rel}"
        );
    }

    // The chunkserver comes back: the cluster heals to full replication.
    let master = c.master.addr.clone();
    c.chunkservers[1] = c.spawn_chunkserver(1, "127.0.0.1:0", &master);
    must_eventually(
        Duration::from_secs(60),
        "fsck healthy after restart",
        || (c.must_json(&["fsck", "--json"])["healthy"] == true).then_some(()),
    );
}

#[test]
fn dead_or_hung_servers_give_eio_and_the_mount_recovers_when_they_return() {
    let mut c = ProcCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let m = FuseMount::start(&c, &work.path().join("mnt"));
    // Written through the CLI, so the mount has none of it in its page cache.
    let data = test_bytes(2 * CHUNK_SIZE as usize + 9, 8);
    let local = work.path().join("data");
    std::fs::write(&local, &data).unwrap();
    c.must_dfs(&["put", local.to_str().unwrap(), "/data"]);

    // Every chunkserver hung (SIGSTOP): a read fails with EIO within the deadline.
    for cs in &c.chunkservers {
        cs.signal(Signal::SIGSTOP);
    }
    let start = Instant::now();
    let r = std::fs::read(m.path("data"));
    let took = start.elapsed();
    for cs in &c.chunkservers {
        cs.signal(Signal::SIGCONT);
    }
    assert_eq!(errno_of(r), libc::EIO);
    assert!(took < FAIL_WITHIN, "read took {took:?}");
    // Back: the same mount reads the data.
    assert_eq!(sha256_file(&m.path("data")), sha256(&data));

    // The master killed: metadata calls fail with EIO within the deadline.
    c.master.kill9();
    let start = Instant::now();
    assert_eq!(errno_of(std::fs::metadata(m.path("never-seen"))), libc::EIO);
    assert_eq!(errno_of(std::fs::write(m.path("new"), b"x")), libc::EIO);
    assert!(start.elapsed() < 2 * FAIL_WITHIN, "{:?}", start.elapsed());
    // Restarted on the same address: the mount works again without remounting.
    c.restart_master();
    c.wait_live(3);
    must_eventually(Duration::from_secs(30), "mount usable again", || {
        std::fs::write(m.path("after"), b"recovered").ok()
    });
    assert_eq!(std::fs::read(m.path("after")).unwrap(), b"recovered");
    assert_eq!(sha256_file(&m.path("data")), sha256(&data));
    let mut names: Vec<String> = std::fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["after".to_string(), "data".to_string()]);
}
