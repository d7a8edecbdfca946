//! Issue 4 through real processes. Record append: 8 `dfs append` producers on one file with
//! 1 MiB chunks, `dfs records` reading back, kill -9 of the primary chunkserver mid-stream,
//! and the `append`/`records` CLI contract. Snapshots: `dfs snapshot` of a file and a tree,
//! overwritten originals, kill -9 of the master (the op log replays the snapshot and the
//! copies).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Records of 1 B – 64 KiB of printable bytes (no newline), as `dfs append` input lines.
fn producer_lines(producer: usize, count: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(count);
    for seq in 0..count {
        let seed = (producer as u64) << 32 | seq as u64;
        let raw = test_bytes(64 << 10, seed);
        let len = 1 + (u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize % (64 << 10));
        out.push(raw[..len].iter().map(|b| b'!' + b % 94).collect());
    }
    out
}

/// Starts one `dfs append` process fed from a file holding `lines`.
fn spawn_producer(c: &ProcCluster, path: &str, producer: usize, lines: &[Vec<u8>]) -> Child {
    let input = c.dir.path().join(format!("producer{producer}.txt"));
    std::fs::write(&input, lines.join(&b'\n')).unwrap();
    Command::new(dfs_bin())
        .args([
            "--master",
            &c.master.addr,
            "--timeout",
            "60s",
            "append",
            path,
        ])
        .arg(&input)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Multiset of records: bytes → count.
fn counts(records: impl IntoIterator<Item = Vec<u8>>) -> BTreeMap<Vec<u8>, usize> {
    let mut m = BTreeMap::new();
    for r in records {
        *m.entry(r).or_insert(0) += 1;
    }
    m
}

/// The primary of the file's last chunk, waiting until one is under a lease.
fn last_primary(c: &ProcCluster, path: &str) -> String {
    must_eventually(Duration::from_secs(30), "a leased last chunk", || {
        let out = c.dfs(&["stat", "--json", path]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let last = v["chunks"].as_array()?.last()?.clone();
        let p = last["primary"].as_str()?.to_string();
        (!p.is_empty()).then_some(p)
    })
}

/// 8 producers × `per_producer` records appended concurrently; with `kill`, the primary of
/// the last chunk is killed with SIGKILL once a few chunks are written. Every producer must
/// succeed, and `dfs records` must return exactly the records sent, each once.
fn run_producers(per_producer: usize, kill: bool) {
    let mut c = ProcCluster::start(4);
    let path = "/log";
    let all: Vec<Vec<Vec<u8>>> = (0..8).map(|p| producer_lines(p, per_producer)).collect();
    let bytes: usize = all.iter().flatten().map(Vec::len).sum();
    let started = Instant::now();
    let mut children: Vec<Child> = all
        .iter()
        .enumerate()
        .map(|(p, lines)| spawn_producer(&c, path, p, lines))
        .collect();
    if kill {
        must_eventually(Duration::from_secs(60), "a few chunks appended", || {
            let out = c.dfs(&["stat", "--json", path]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (v["chunks"].as_array()?.len() >= 3).then_some(())
        });
        let primary = last_primary(&c, path);
        let victim = c
            .chunkservers
            .iter_mut()
            .find(|p| p.addr == primary)
            .expect("the primary is one of ours");
        victim.kill9();
        eprintln!("killed primary {primary} after {:?}", started.elapsed());
    }
    for (p, child) in children.iter_mut().enumerate() {
        let out = wait_child(child, Duration::from_secs(1800));
        assert!(
            out.0.success(),
            "producer {p} failed ({}): {}\n{}",
            out.0,
            out.1,
            c.dump_logs()
        );
    }
    let elapsed = started.elapsed();
    let out = c.must_dfs_bytes(&["records", path]);
    let mut got: Vec<Vec<u8>> = out.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    assert_eq!(got.pop(), Some(Vec::new()), "output ends with a newline");
    let n = 8 * per_producer;
    assert_eq!(got.len(), n, "records read back");
    assert_eq!(
        counts(got),
        counts(all.into_iter().flatten()),
        "every acknowledged record exactly once with its exact bytes"
    );
    println!(
        "{n} records ({:.1} MiB) from 8 producers{} in {:.1}s: {:.0} records/s, {:.1} MiB/s",
        bytes as f64 / (1 << 20) as f64,
        if kill {
            " with kill -9 of the primary"
        } else {
            ""
        },
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        bytes as f64 / (1 << 20) as f64 / elapsed.as_secs_f64()
    );
}

/// Waits for a child with a deadline; returns its status and stderr.
fn wait_child(child: &mut Child, timeout: Duration) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            return (status, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("producer did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn eight_producer_processes_get_every_record_back_exactly_once() {
    run_producers(300, false);
}

#[test]
fn eight_producers_survive_kill_9_of_the_primary_without_loss_or_duplicates() {
    run_producers(300, true);
}

/// The full-size run of issue 4 (8 × 20,000 records, about 5 GiB): run on demand with
/// `cargo test --release -p rdfs-ops --test gfs -- --ignored --nocapture`.
#[test]
#[ignore]
fn full_size_eight_by_twenty_thousand_with_kill_9() {
    run_producers(20_000, true);
}

#[test]
fn append_and_records_follow_the_cli_contract() {
    let c = ProcCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("in.txt");
    std::fs::write(&input, b"alpha\n\nbeta gamma\nlast line without newline").unwrap();
    let err = c.dfs(&["append", "/missing/dir/a", input.to_str().unwrap()]);
    assert!(!err.status.success());
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert!(stderr.starts_with("dfs: /missing/dir/a"), "{stderr}");
    c.must_dfs(&["mkdir", "/logs"]);
    // Creates the missing file; each line (without its newline) is one record.
    c.must_dfs(&["append", "/logs/a", input.to_str().unwrap()]);
    // Appending again never truncates; --whole makes the input one record; stdin works.
    c.must_dfs(&["append", "--whole", "/logs/a", input.to_str().unwrap()]);
    let mut child = Command::new(dfs_bin())
        .args(["--master", &c.master.addr, "append", "/logs/a", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"from stdin\n")
            .unwrap();
    }
    assert!(child.wait().unwrap().success());
    let out = c.must_dfs(&["records", "/logs/a"]);
    assert_eq!(
        out,
        "alpha\n\nbeta gamma\nlast line without newline\n\
         alpha\n\nbeta gamma\nlast line without newline\nfrom stdin\n"
    );
    let nul = c.must_dfs_bytes(&["records", "-0", "/logs/a"]);
    assert_eq!(
        nul.iter().filter(|b| **b == 0).count(),
        6,
        "4 lines, 1 whole input, 1 from stdin"
    );
    assert!(nul.starts_with(b"alpha\0\0beta gamma\0"));
    // A line over a quarter chunk (1 MiB chunks) is refused with the path and the cause.
    std::fs::write(&input, vec![b'x'; 300 << 10]).unwrap();
    let big = c.dfs(&["append", "/logs/a", input.to_str().unwrap()]);
    assert!(!big.status.success());
    let stderr = String::from_utf8_lossy(&big.stderr);
    assert!(
        stderr.starts_with("dfs: /logs/a: input line 1") && stderr.contains("record limit"),
        "{stderr}"
    );
    // Appending to a directory and reading records of one are clear errors.
    let dir = c.dfs(&["append", "/logs", input.to_str().unwrap()]);
    assert!(!dir.status.success());
    assert!(String::from_utf8_lossy(&dir.stderr).contains("Is a directory"));
    let dir = c.dfs(&["records", "/logs"]);
    assert!(String::from_utf8_lossy(&dir.stderr).starts_with("dfs: /logs: Is a directory"));
}

#[test]
fn snapshot_cli_keeps_old_bytes_across_overwrites_and_a_master_kill_9() {
    let mut c = ProcCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let v1 = work.path().join("v1.bin");
    let v2 = work.path().join("v2.bin");
    std::fs::write(&v1, test_bytes(3 * CHUNK_SIZE as usize + 777, 41)).unwrap();
    std::fs::write(&v2, test_bytes(2 * CHUNK_SIZE as usize + 5, 42)).unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a.txt"), b"alpha").unwrap();
    std::fs::write(tree.join("sub/b.txt"), b"beta").unwrap();
    c.must_dfs(&["put", v1.to_str().unwrap(), "/f"]);
    c.must_dfs(&["put", tree.to_str().unwrap(), "/tree"]);
    c.must_dfs(&["mkdir", "/snaps"]);
    let out = c.must_dfs(&["snapshot", "-v", "/f", "/f.snap"]);
    assert_eq!(out, "/f -> /f.snap: 1 inodes, 4 shared chunks\n");
    // An existing directory receives DST/basename, like mv.
    c.must_dfs(&["snapshot", "/tree", "/snaps"]);
    // The originals change: /f replaced, a file of the tree replaced, one removed.
    c.must_dfs(&["put", "-f", v2.to_str().unwrap(), "/f"]);
    std::fs::write(tree.join("a.txt"), b"ALPHA v2").unwrap();
    c.must_dfs(&[
        "put",
        "-f",
        tree.join("a.txt").to_str().unwrap(),
        "/tree/a.txt",
    ]);
    c.must_dfs(&["rm", "/tree/sub/b.txt"]);
    let check = |c: &ProcCluster| {
        let got = work.path().join("got");
        let _ = std::fs::remove_dir_all(&got);
        std::fs::create_dir_all(&got).unwrap();
        c.must_dfs(&["get", "/f.snap", got.join("f.snap").to_str().unwrap()]);
        c.must_dfs(&["get", "/f", got.join("f").to_str().unwrap()]);
        assert_eq!(sha256_file(&got.join("f.snap")), sha256_file(&v1));
        assert_eq!(sha256_file(&got.join("f")), sha256_file(&v2));
        assert_eq!(c.must_dfs(&["cat", "/snaps/tree/a.txt"]), "alpha");
        assert_eq!(c.must_dfs(&["cat", "/snaps/tree/sub/b.txt"]), "beta");
        assert_eq!(c.must_dfs(&["cat", "/tree/a.txt"]), "ALPHA v2");
    };
    check(&c);
    // kill -9 of the master: the snapshot is durable (replayed from the op log).
    c.restart_master();
    c.wait_live(3);
    check(&c);
    // Clear errors: an existing file as DST, a missing SRC.
    let err = c.dfs(&["snapshot", "/f", "/f.snap"]);
    assert!(!err.status.success());
    assert_eq!(
        String::from_utf8_lossy(&err.stderr),
        "dfs: /f.snap: File exists\n"
    );
    let err = c.dfs(&["snapshot", "/nope", "/x"]);
    assert!(
        String::from_utf8_lossy(&err.stderr).starts_with("dfs: /nope: No such file or directory")
    );
}

#[test]
fn rm_goes_to_the_trash_until_the_grace_period_and_skip_trash_does_not() {
    let c = ProcCluster::start_with(3, &["--trash-grace", "4s"], None);
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data.bin");
    std::fs::write(&data, test_bytes(2 * CHUNK_SIZE as usize + 99, 51)).unwrap();
    c.must_dfs(&["mkdir", "/d"]);
    c.must_dfs(&["put", data.to_str().unwrap(), "/d/a.bin"]);
    c.must_dfs(&["put", data.to_str().unwrap(), "/d/b.bin"]);
    c.must_dfs(&["put", data.to_str().unwrap(), "/gone.bin"]);
    let used = |c: &ProcCluster| c.must_json(&["df", "--json"])["used"].as_u64().unwrap();
    let full = 9 * (2 * CHUNK_SIZE + 99);
    must_eventually(Duration::from_secs(30), "3 files on 3 replicas", || {
        (used(&c) == full).then_some(())
    });
    // rm moves to the trash: hidden from `ls /`, listed by `trash ls`, space still used.
    c.must_dfs(&["rm", "/d/a.bin"]);
    c.must_dfs(&["rm", "-r", "/d"]);
    let root = c.must_json(&["ls", "--json", "/"]);
    let names: Vec<&str> = root
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["gone.bin"], "the trash is hidden");
    let listed = c.must_json(&["trash", "ls", "--json"]);
    let origins: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["origin"].as_str().unwrap())
        .collect();
    assert_eq!(origins, vec!["/d", "/d/a.bin"]);
    assert_eq!(listed[1]["size"], 2 * CHUNK_SIZE + 99);
    // --skip-trash removes at once: not listed, space given back.
    c.must_dfs(&["rm", "--skip-trash", "/gone.bin"]);
    must_eventually(Duration::from_secs(30), "skip-trash space back", || {
        (used(&c) == full * 2 / 3).then_some(())
    });
    // Restore before the grace period: the tree, then the file into it, bytes intact.
    assert_eq!(c.must_dfs(&["trash", "restore", "/d"]), "restored /d\n");
    let out = c.must_dfs(&["trash", "restore", "/d/a.bin", "--to", "/back/a.bin"]);
    assert_eq!(out, "restored /back/a.bin\n");
    let got = work.path().join("got.bin");
    c.must_dfs(&["get", "/back/a.bin", got.to_str().unwrap()]);
    assert_eq!(sha256_file(&got), sha256_file(&data));
    let err = c.dfs(&["trash", "restore", "/d/a.bin"]);
    assert!(!err.status.success());
    assert!(
        String::from_utf8_lossy(&err.stderr).starts_with("dfs: /d/a.bin: No such file"),
        "{}",
        String::from_utf8_lossy(&err.stderr)
    );
    // rm again and let the grace period pass: purged, space back to nothing.
    c.must_dfs(&["rm", "-r", "/d", "/back"]);
    let started = Instant::now();
    must_eventually(Duration::from_secs(60), "purged after the grace", || {
        let empty = c
            .must_json(&["trash", "ls", "--json"])
            .as_array()?
            .is_empty();
        (empty && used(&c) == 0).then_some(())
    });
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "not purged early"
    );
    // `trash empty` purges at once.
    c.must_dfs(&["put", data.to_str().unwrap(), "/x.bin"]);
    c.must_dfs(&["rm", "/x.bin"]);
    assert_eq!(c.must_dfs(&["trash", "empty"]), "1 entries removed\n");
    assert_eq!(c.must_dfs(&["trash", "ls"]), "");
}
