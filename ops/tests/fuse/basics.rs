//! Data round trips across remounts, fsync, a crashed mount, `cluster up --mount`.

use std::fs::File;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::mount::*;

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
        // One 8 MiB write(2): the kernel splits it into requests of at most max_write.
        let big = test_bytes(8 << 20, 77);
        std::fs::write(m.path("one-write"), &big).unwrap();
        assert_eq!(sha256_file(&m.path("one-write")), sha256(&big));
        // Unmounted here (Drop): the session's last log line reports the request sizes.
    }
    assert!(
        !is_mounted(&mnt.canonicalize().unwrap()),
        "unmounted on SIGTERM"
    );
    let log = std::fs::read_to_string(mnt.with_extension("mount.log")).unwrap();
    assert!(
        log.contains("largest write request 1048576 bytes"),
        "max_write of 1 MiB was not negotiated:\n{log}"
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
