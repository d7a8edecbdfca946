//! Our POSIX conformance set, run on a real mount with exact expected values: names of 255
//! and 256 bytes, a 10,000-entry directory, timestamps, O_APPEND/O_TRUNC/O_EXCL, truncate,
//! sparse files, mmap, link counts, unlink and rename while open, rename rules and error
//! codes, permissions and ownership (umask, setgid directories, sticky bit, other users).

use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use crate::mount::*;

/// (seconds, nanoseconds) of atime, mtime and ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Times {
    a: (i64, i64),
    m: (i64, i64),
    c: (i64, i64),
}

fn times_of(md: &Metadata) -> Times {
    Times {
        a: (md.atime(), md.atime_nsec()),
        m: (md.mtime(), md.mtime_nsec()),
        c: (md.ctime(), md.ctime_nsec()),
    }
}

/// Times of `p` (not following a final symlink).
fn times(p: &Path) -> Times {
    times_of(&std::fs::symlink_metadata(p).unwrap())
}

/// Lets the clock move on, so "changed" and "unchanged" times cannot coincide.
fn tick() {
    std::thread::sleep(Duration::from_millis(5));
}

fn mount_one(c: &ProcCluster, work: &Path) -> FuseMount {
    FuseMount::start(c, &work.join("mnt"))
}

#[test]
fn names_of_255_bytes_work_256_fail_and_10000_entries_list_exactly_once() {
    let c = ProcCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let m = mount_one(&c, work.path());

    // 255 bytes work for every kind of name, multi-byte UTF-8 too.
    let name = |first: char| format!("{first}{}", "n".repeat(254));
    let multibyte = format!("{}x", "é".repeat(127));
    assert_eq!((name('f').len(), multibyte.len()), (255, 255));
    std::fs::write(m.path(&name('f')), b"255").unwrap();
    std::fs::write(m.path(&multibyte), b"mb").unwrap();
    std::fs::create_dir(m.path(&name('d'))).unwrap();
    std::os::unix::fs::symlink(name('f'), m.path(&name('s'))).unwrap();
    std::fs::hard_link(m.path(&name('f')), m.path(&name('l'))).unwrap();
    std::fs::rename(m.path(&name('l')), m.path(&name('r'))).unwrap();
    assert_eq!(std::fs::read(m.path(&name('s'))).unwrap(), b"255");
    assert_eq!(std::fs::read(m.path(&name('r'))).unwrap(), b"255");
    assert_eq!(std::fs::read(m.path(&multibyte)).unwrap(), b"mb");
    let mut listed: Vec<String> = std::fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    let mut expected = vec![name('d'), name('f'), name('r'), name('s'), multibyte];
    expected.sort();
    assert_eq!(listed, expected);

    // 256 bytes: ENAMETOOLONG from every call that takes a name.
    let long = "x".repeat(256);
    let p = m.path(&long);
    let existing = m.path(&name('f'));
    assert_eq!(errno_of(File::create(&p)), libc::ENAMETOOLONG);
    assert_eq!(errno_of(std::fs::create_dir(&p)), libc::ENAMETOOLONG);
    assert_eq!(
        errno_of(std::os::unix::fs::symlink("t", &p)),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        errno_of(std::fs::hard_link(&existing, &p)),
        libc::ENAMETOOLONG
    );
    assert_eq!(errno_of(std::fs::rename(&existing, &p)), libc::ENAMETOOLONG);
    assert_eq!(errno_of(std::fs::metadata(&p)), libc::ENAMETOOLONG);
    assert_eq!(
        std::fs::read(&existing).unwrap(),
        b"255",
        "failed rename left it"
    );

    // 10,000 entries, created by 4 writers at once.
    const N: usize = 10_000;
    const WRITERS: usize = 4;
    let big = m.path("big");
    std::fs::create_dir(&big).unwrap();
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let big = &big;
            s.spawn(move || {
                for i in (w..N).step_by(WRITERS) {
                    File::create(big.join(format!("e{i:05}"))).unwrap();
                }
            });
        }
    });
    let expected: Vec<String> = (0..N).map(|i| format!("e{i:05}")).collect();
    let mut names = Vec::with_capacity(N);
    let mut inos = HashMap::new();
    for e in std::fs::read_dir(&big).unwrap() {
        let e = e.unwrap();
        let n = e.file_name().into_string().unwrap();
        inos.insert(n.clone(), e.ino());
        names.push(n);
    }
    assert_eq!(names.len(), N, "no duplicates, none missing");
    names.sort();
    assert_eq!(names, expected);
    for n in expected.iter().step_by(500) {
        let ino = std::fs::metadata(big.join(n)).unwrap().ino();
        assert_eq!(inos[n], ino, "d_ino of {n} is its st_ino");
    }
    let ls = run(Command::new("ls").arg("-f").arg(&big));
    assert_eq!(ls.lines().count(), N + 2, "ls -f lists . and .. too");
    assert_eq!(std::fs::metadata(&big).unwrap().nlink(), 2);

    // Deleting entries during a listing: every entry not deleted appears exactly once;
    // rewinddir shows the directory as it is now; seekdir returns to a telldir position.
    let dir = cstr(&big);
    let mut seen: HashMap<String, usize> = HashMap::new();
    // SAFETY: `d` is a valid DIR* from opendir until closedir; entries are read before the
    // next readdir call on it.
    unsafe {
        let d = libc::opendir(dir.as_ptr());
        assert!(!d.is_null());
        let next = |d: *mut libc::DIR| -> Option<String> {
            loop {
                let e = libc::readdir(d);
                if e.is_null() {
                    return None;
                }
                let n = CStr::from_ptr((*e).d_name.as_ptr())
                    .to_string_lossy()
                    .into_owned();
                if n != "." && n != ".." {
                    return Some(n);
                }
            }
        };
        for _ in 0..3000 {
            let n = next(d).unwrap();
            *seen.entry(n).or_default() += 1;
        }
        for i in 9000..N {
            std::fs::remove_file(big.join(format!("e{i:05}"))).unwrap();
        }
        while let Some(n) = next(d) {
            *seen.entry(n).or_default() += 1;
        }
        for (n, count) in &seen {
            assert_eq!(*count, 1, "{n} listed {count} times");
        }
        for n in &expected[..9000] {
            assert!(seen.contains_key(n), "{n} missing from the listing");
        }
        libc::rewinddir(d);
        let mut again = 0;
        while next(d).is_some() {
            again += 1;
        }
        assert_eq!(again, 9000, "after rewinddir the deleted entries are gone");
        libc::rewinddir(d);
        for _ in 0..10 {
            next(d).unwrap();
        }
        let pos = libc::telldir(d);
        let at = next(d).unwrap();
        next(d).unwrap();
        libc::seekdir(d, pos);
        assert_eq!(next(d).unwrap(), at, "seekdir to a telldir position");
        assert_eq!(libc::closedir(d), 0);
    }
}

#[test]
fn timestamps_are_updated_as_posix_says() {
    let c = ProcCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let m = mount_one(&c, work.path());
    // Reads do not update atime: the mount says so.
    let opts = mount_options(&m.dir);
    assert!(opts.split(',').any(|o| o == "noatime"), "{opts}");

    let d = m.path("d");
    std::fs::create_dir(&d).unwrap();
    let d0 = times(&d);
    tick();

    // Create: the file's three times are the creation time, and so are its directory's
    // mtime and ctime (one operation, one time).
    let f = d.join("f");
    File::create(&f).unwrap();
    let f1 = times(&f);
    assert_eq!((f1.a, f1.m), (f1.c, f1.c));
    let d1 = times(&d);
    assert_eq!((d1.m, d1.c), (f1.c, f1.c), "parent of a create");
    assert_eq!(d1.a, d0.a);
    assert!(d1.m > d0.m);
    tick();

    // write(2) marks mtime and ctime at once (fstat before close sees them); close
    // publishes that same time; the directory and atime are untouched.
    let mut w = OpenOptions::new().write(true).open(&f).unwrap();
    w.write_all(b"data").unwrap();
    let f2 = times_of(&w.metadata().unwrap());
    assert!(f2.m > f1.m, "{f2:?} {f1:?}");
    assert_eq!((f2.c, f2.a), (f2.m, f1.a));
    drop(w);
    assert_eq!(times(&f), f2, "close publishes the write's time");
    assert_eq!(times(&d), d1, "writing a file leaves its directory alone");
    tick();

    // Reads change nothing (noatime).
    assert_eq!(std::fs::read(&f).unwrap(), b"data");
    assert_eq!(times(&f), f2);

    // chmod and chown: ctime only.
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let f3 = times(&f);
    assert!(f3.c > f2.c);
    assert_eq!((f3.a, f3.m), (f2.a, f2.m));
    tick();
    std::os::unix::fs::chown(&f, Some(42), Some(43)).unwrap();
    let f4 = times(&f);
    assert!(f4.c > f3.c);
    assert_eq!((f4.a, f4.m), (f3.a, f3.m));
    tick();

    // utimensat: exact times to the nanosecond; ctime becomes now.
    let set = |a: libc::timespec, m: libc::timespec| {
        let ts = [a, m];
        // SAFETY: a valid path and a two-element timespec array.
        let rc = unsafe { libc::utimensat(libc::AT_FDCWD, cstr(&f).as_ptr(), ts.as_ptr(), 0) };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    };
    let ts = |sec: i64, nsec: i64| libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    set(
        ts(1_000_000_000, 123_456_789),
        ts(1_500_000_000, 987_654_321),
    );
    let f5 = times(&f);
    assert_eq!(f5.a, (1_000_000_000, 123_456_789));
    assert_eq!(f5.m, (1_500_000_000, 987_654_321));
    assert!(f5.c > f4.c);
    tick();
    // UTIME_OMIT keeps atime; UTIME_NOW sets mtime (and ctime) to now.
    set(ts(0, libc::UTIME_OMIT), ts(0, libc::UTIME_NOW));
    let f6 = times(&f);
    assert_eq!(f6.a, f5.a);
    assert!(f6.m > f4.c && f6.c >= f6.m, "{f6:?}");
    tick();

    // truncate that changes the size: mtime and ctime.
    OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(2)
        .unwrap();
    let f7 = times(&f);
    assert!(f7.m > f6.m);
    assert_eq!((f7.c, f7.a), (f7.m, f6.a));
    tick();

    // setxattr: ctime only.
    let name = std::ffi::CString::new("user.k").unwrap();
    // SAFETY: valid path, name and value buffers.
    let rc =
        unsafe { libc::setxattr(cstr(&f).as_ptr(), name.as_ptr(), b"v".as_ptr().cast(), 1, 0) };
    assert_eq!(rc, 0);
    let f8 = times(&f);
    assert!(f8.c > f7.c);
    assert_eq!((f8.a, f8.m), (f7.a, f7.m));
    tick();

    // rename across directories: both directories' mtime/ctime and the file's ctime take
    // the rename's time; its mtime (data) stays.
    let e = m.path("e");
    std::fs::create_dir(&e).unwrap();
    tick();
    let g = e.join("g");
    std::fs::rename(&f, &g).unwrap();
    let g1 = times(&g);
    assert!(g1.c > f8.c);
    assert_eq!((g1.a, g1.m), (f8.a, f8.m));
    let (d2, e1) = (times(&d), times(&e));
    assert_eq!((d2.m, d2.c, e1.m, e1.c), (g1.c, g1.c, g1.c, g1.c));
    tick();

    // link: the inode's ctime and the new parent's mtime/ctime.
    let l = d.join("l");
    std::fs::hard_link(&g, &l).unwrap();
    let l1 = times(&l);
    assert_eq!((l1.a, l1.m), (g1.a, g1.m));
    assert!(l1.c > g1.c);
    let d3 = times(&d);
    assert_eq!((d3.m, d3.c), (l1.c, l1.c));
    assert_eq!(times(&e), e1, "the other link's directory is untouched");
    tick();

    // unlink of one link: the inode's ctime and the parent's mtime/ctime.
    std::fs::remove_file(&g).unwrap();
    let l2 = times(&l);
    assert!(l2.c > l1.c);
    assert_eq!(l2.m, l1.m);
    let e2 = times(&e);
    assert_eq!((e2.m, e2.c), (l2.c, l2.c));
    tick();

    // mkdir / symlink: the new node's three times equal its parent's new mtime/ctime.
    let sub = e.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let s1 = times(&sub);
    assert_eq!((s1.a, s1.m), (s1.c, s1.c));
    let e3 = times(&e);
    assert_eq!((e3.m, e3.c), (s1.c, s1.c));
    tick();
    let sym = e.join("sym");
    std::os::unix::fs::symlink("sub", &sym).unwrap();
    let y1 = times(&sym);
    assert_eq!((y1.a, y1.m), (y1.c, y1.c));
    assert_eq!(times(&e).m, y1.c);
    tick();

    // rmdir: the parent's mtime/ctime.
    std::fs::remove_dir(&sub).unwrap();
    let e4 = times(&e);
    assert!(e4.m > y1.c);
    assert_eq!(e4.c, e4.m);
}

#[test]
fn file_data_semantics_append_truncate_sparse_mmap_and_open_unlinked_files() {
    let c = ProcCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let m = mount_one(&c, work.path());
    let cs = CHUNK_SIZE as usize;

    // Sparse: writes at 0 and far past the end leave holes that read as zeros and hold no
    // chunk; the cluster stores exactly the written bytes (three replicas each).
    // First on a fresh cluster, so the stored bytes are exactly this file's.
    assert_eq!(used_bytes(&c), 0);
    let sparse = m.path("sparse");
    let mut s = File::create(&sparse).unwrap();
    s.write_all(b"head").unwrap();
    s.seek(SeekFrom::Start(5 * CHUNK_SIZE + 3)).unwrap();
    s.write_all(b"tail").unwrap();
    drop(s);
    let body = std::fs::read(&sparse).unwrap();
    assert_eq!(body.len() as u64, 5 * CHUNK_SIZE + 7);
    assert_eq!(&body[..4], b"head");
    assert!(body[4..body.len() - 4].iter().all(|b| *b == 0));
    assert_eq!(&body[body.len() - 4..], b"tail");
    let st = c.must_json(&["stat", "--json", "/sparse"]);
    let indexes: Vec<u64> = st["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, vec![0, 5], "holes take no chunks: {st}");
    // Chunk 0 holds 4 bytes, chunk 5 holds 3 zeros + 4 bytes; 3 replicas each.
    must_eventually(Duration::from_secs(20), "used bytes reported", || {
        (used_bytes(&c) == 3 * (4 + 7)).then_some(())
    });
    // Reading across a hole and at or past the end.
    let f = File::open(&sparse).unwrap();
    let mut buf = vec![1u8; 16];
    assert_eq!(f.read_at(&mut buf, CHUNK_SIZE - 8).unwrap(), 16);
    assert_eq!(buf, vec![0u8; 16]);
    assert_eq!(f.read_at(&mut buf, 5 * CHUNK_SIZE).unwrap(), 7);
    assert_eq!(&buf[..7], b"\0\0\0tail");
    assert_eq!(f.read_at(&mut buf, 5 * CHUNK_SIZE + 7).unwrap(), 0, "EOF");
    assert_eq!(f.read_at(&mut buf, 9 * CHUNK_SIZE).unwrap(), 0, "past EOF");
    drop(f);

    // O_TRUNC empties; O_CREAT without O_EXCL opens the existing file untouched; O_EXCL
    // refuses it.
    let p = m.path("t");
    std::fs::write(&p, b"0123456789").unwrap();
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&p)
        .unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"0123456789");
    std::fs::write(&p, b"ab").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"ab");
    let excl = OpenOptions::new().write(true).create_new(true).open(&p);
    assert_eq!(errno_of(excl), libc::EEXIST);

    // O_APPEND: every write lands at the current end, whatever the offset, also after
    // another descriptor extended the file; on Linux even pwrite appends.
    let mut a = OpenOptions::new().append(true).open(&p).unwrap();
    let mut plain = OpenOptions::new().write(true).open(&p).unwrap();
    a.write_all(b"cd").unwrap();
    a.seek(SeekFrom::Start(0)).unwrap();
    a.write_all(b"ef").unwrap();
    plain.seek(SeekFrom::Start(6)).unwrap();
    plain.write_all(b"GH").unwrap();
    a.write_all(b"ij").unwrap();
    a.write_at(b"kl", 0).unwrap();
    drop((a, plain));
    assert_eq!(std::fs::read(&p).unwrap(), b"abcdefGHijkl");

    // truncate across a chunk boundary: grow reads zeros, shrink cuts, growing again
    // reads zeros (never the old bytes), all through one descriptor with buffered data.
    let data = test_bytes(2 * cs + 1000, 3);
    std::fs::write(&p, &data).unwrap();
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    f.set_len((cs + 10) as u64).unwrap();
    assert_eq!(f.metadata().unwrap().len(), (cs + 10) as u64);
    f.write_all_at(b"tail", (cs + 10) as u64).unwrap();
    f.set_len(100).unwrap();
    f.set_len((3 * cs) as u64).unwrap();
    drop(f);
    let body = std::fs::read(&p).unwrap();
    let mut want = data[..100].to_vec();
    want.resize(3 * cs, 0);
    assert_eq!(body.len(), 3 * cs);
    assert_eq!(
        sha256(&body),
        sha256(&want),
        "zeros after a shrink and grow"
    );
    std::fs::File::create(&p).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);

    // mmap: shared writable mappings reach the file (and the cluster); reads through a
    // mapping see bytes written with write(2).
    let mapped = m.path("mapped");
    let pattern = test_bytes(cs + 8192, 9);
    std::fs::write(&mapped, &pattern).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&mapped)
        .unwrap();
    let len = pattern.len();
    // SAFETY: a fresh shared mapping of an open file of `len` bytes, unmapped before the
    // descriptor closes; nothing else maps or truncates it meanwhile.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        let bytes = std::slice::from_raw_parts_mut(p.cast::<u8>(), len);
        assert_eq!(sha256(bytes), sha256(&pattern), "mapped reads");
        bytes[cs - 2..cs + 3].copy_from_slice(b"mmap!");
        assert_eq!(libc::msync(p, len, libc::MS_SYNC), 0);
        assert_eq!(libc::munmap(p, len), 0);
    }
    drop(f);
    let mut want = pattern.clone();
    want[cs - 2..cs + 3].copy_from_slice(b"mmap!");
    assert_eq!(sha256_file(&mapped), sha256(&want));
    let out = c.dfs(&["cat", "/mapped"]);
    assert_eq!(
        sha256(&out.stdout),
        sha256(&want),
        "written back to the cluster"
    );

    // Unlink while open: the descriptor keeps reading and writing the data (nlink 0);
    // the last close frees its chunks.
    let chunks_before = chunk_count(&c);
    let gone = m.path("gone");
    let v = test_bytes(cs + 5, 4);
    std::fs::write(&gone, &v).unwrap();
    assert_eq!(chunk_count(&c), chunks_before + 2);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&gone)
        .unwrap();
    std::fs::remove_file(&gone).unwrap();
    assert_eq!(errno_of(std::fs::metadata(&gone)), libc::ENOENT);
    let md = f.metadata().unwrap();
    assert_eq!((md.nlink(), md.len()), (0, v.len() as u64));
    let mut back = Vec::new();
    f.read_to_end(&mut back).unwrap();
    assert_eq!(sha256(&back), sha256(&v));
    f.write_all(b"!").unwrap();
    f.seek(SeekFrom::Start(cs as u64)).unwrap();
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, [&v[cs..], b"!"].concat());
    drop(f);
    must_eventually(
        Duration::from_secs(20),
        "chunks of the closed file freed",
        || (chunk_count(&c) == chunks_before).then_some(()),
    );

    // Rename over a file that is open: the old data stays readable through the descriptor.
    std::fs::write(m.path("old"), b"old data").unwrap();
    std::fs::write(m.path("new"), b"new data").unwrap();
    let mut held = File::open(m.path("old")).unwrap();
    std::fs::rename(m.path("new"), m.path("old")).unwrap();
    let mut s = String::new();
    held.read_to_string(&mut s).unwrap();
    assert_eq!(s, "old data");
    assert_eq!(std::fs::read(m.path("old")).unwrap(), b"new data");
}

#[test]
fn links_renames_and_their_error_codes() {
    let c = ProcCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let m = mount_one(&c, work.path());
    let nlink = |p: &str| std::fs::symlink_metadata(m.path(p)).unwrap().nlink();

    // Hard links: nlink counts names, data is shared, the last name keeps it.
    std::fs::write(m.path("h1"), b"linked").unwrap();
    std::fs::create_dir(m.path("b")).unwrap();
    std::fs::hard_link(m.path("h1"), m.path("b/h2")).unwrap();
    std::fs::hard_link(m.path("h1"), m.path("h3")).unwrap();
    assert_eq!(nlink("h1"), 3);
    let ino = |p: &str| std::fs::metadata(m.path(p)).unwrap().ino();
    assert_eq!((ino("h1"), ino("h3")), (ino("b/h2"), ino("b/h2")));
    std::fs::remove_file(m.path("h1")).unwrap();
    std::fs::remove_file(m.path("h3")).unwrap();
    assert_eq!(nlink("b/h2"), 1);
    assert_eq!(std::fs::read(m.path("b/h2")).unwrap(), b"linked");
    assert_eq!(
        errno_of(std::fs::hard_link(m.path("b"), m.path("dirlink"))),
        libc::EPERM,
        "no hard links to directories"
    );
    assert_eq!(
        errno_of(std::fs::hard_link(m.path("b/h2"), m.path("b/h2"))),
        libc::EEXIST
    );

    // Directory link counts: 2 + subdirectories, across mkdir, rename and rmdir.
    std::fs::create_dir(m.path("p")).unwrap();
    std::fs::create_dir(m.path("q")).unwrap();
    assert_eq!((nlink("p"), nlink("q")), (2, 2));
    std::fs::create_dir(m.path("p/s")).unwrap();
    std::fs::create_dir(m.path("p/t")).unwrap();
    assert_eq!(nlink("p"), 4);
    std::fs::rename(m.path("p/s"), m.path("q/s")).unwrap();
    assert_eq!((nlink("p"), nlink("q")), (3, 3));
    std::fs::remove_dir(m.path("q/s")).unwrap();
    assert_eq!(nlink("q"), 2);
    let root_links = std::fs::metadata(&m.dir).unwrap().nlink();
    assert_eq!(root_links, 2 + 3, "root holds b, p and q");

    // Symlinks: the target is returned as written; lstat size is its length.
    std::os::unix::fs::symlink("b/h2", m.path("sym")).unwrap();
    assert_eq!(
        std::fs::read_link(m.path("sym")).unwrap(),
        Path::new("b/h2")
    );
    assert_eq!(std::fs::symlink_metadata(m.path("sym")).unwrap().len(), 4);
    assert_eq!(std::fs::read(m.path("sym")).unwrap(), b"linked");
    std::os::unix::fs::symlink("loop", m.path("loop")).unwrap();
    assert_eq!(errno_of(std::fs::read(m.path("loop"))), libc::ELOOP);

    // rename over an existing file, across directories.
    std::fs::write(m.path("p/src"), b"new").unwrap();
    std::fs::write(m.path("q/dst"), b"old").unwrap();
    std::fs::rename(m.path("p/src"), m.path("q/dst")).unwrap();
    assert_eq!(std::fs::read(m.path("q/dst")).unwrap(), b"new");
    assert_eq!(errno_of(std::fs::metadata(m.path("p/src"))), libc::ENOENT);
    // RENAME_NOREPLACE refuses an existing target and leaves both alone.
    std::fs::write(m.path("p/one"), b"1").unwrap();
    let renameat2 = |from: &str, to: &str, flags: u32| {
        // SAFETY: valid NUL-terminated paths; renameat2 only reads them.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                cstr(&m.path(from)).as_ptr(),
                libc::AT_FDCWD,
                cstr(&m.path(to)).as_ptr(),
                flags,
            )
        };
        if rc == 0 {
            0
        } else {
            last_errno()
        }
    };
    assert_eq!(
        renameat2("p/one", "q/dst", libc::RENAME_NOREPLACE),
        libc::EEXIST
    );
    assert_eq!(std::fs::read(m.path("q/dst")).unwrap(), b"new");
    assert_eq!(renameat2("p/one", "q/fresh", libc::RENAME_NOREPLACE), 0);
    assert_eq!(std::fs::read(m.path("q/fresh")).unwrap(), b"1");
    // Directory rules: over an empty directory works; over a non-empty one is ENOTEMPTY;
    // a directory over a file ENOTDIR, a file over a directory EISDIR; into its own
    // subtree EINVAL; a rename onto itself does nothing.
    std::fs::create_dir(m.path("empty")).unwrap();
    std::fs::create_dir(m.path("full")).unwrap();
    std::fs::write(m.path("full/x"), b"x").unwrap();
    std::fs::create_dir(m.path("mover")).unwrap();
    std::fs::rename(m.path("mover"), m.path("empty")).unwrap();
    assert!(m.path("empty").is_dir() && !m.path("mover").exists());
    assert_eq!(renameat2("empty", "full", 0), libc::ENOTEMPTY);
    assert_eq!(renameat2("empty", "q/dst", 0), libc::ENOTDIR);
    assert_eq!(renameat2("q/dst", "empty", 0), libc::EISDIR);
    assert_eq!(renameat2("p", "p/t/inside", 0), libc::EINVAL);
    assert_eq!(renameat2("q/dst", "q/dst", 0), 0);
    assert_eq!(std::fs::read(m.path("q/dst")).unwrap(), b"new");

    // Other namespace error codes.
    assert_eq!(errno_of(std::fs::create_dir(m.path("p"))), libc::EEXIST);
    assert_eq!(
        errno_of(std::fs::remove_dir(m.path("full"))),
        libc::ENOTEMPTY
    );
    assert_eq!(
        errno_of(std::fs::remove_dir(m.path("q/dst"))),
        libc::ENOTDIR
    );
    assert_eq!(errno_of(std::fs::remove_file(m.path("p"))), libc::EISDIR);
    assert_eq!(
        errno_of(std::fs::metadata(m.path("q/dst/x"))),
        libc::ENOTDIR
    );
    assert_eq!(
        errno_of(OpenOptions::new().write(true).open(m.path("p"))),
        libc::EISDIR
    );
    assert_eq!(errno_of(std::fs::remove_file(m.path("nope"))), libc::ENOENT);

    // mknod: FIFOs are stored; devices are refused.
    run(Command::new("mkfifo").arg(m.path("pipe")));
    use std::os::unix::fs::FileTypeExt;
    let ft = std::fs::metadata(m.path("pipe")).unwrap().file_type();
    assert!(ft.is_fifo());

    // Extended attributes: set, size query, get, list, ERANGE, XATTR_CREATE/REPLACE, remove.
    let x = cstr(&m.path("q/dst"));
    let name = std::ffi::CString::new("user.color").unwrap();
    let other = std::ffi::CString::new("user.other").unwrap();
    // SAFETY: valid pointers and lengths for the duration of each call.
    unsafe {
        assert_eq!(
            libc::setxattr(x.as_ptr(), name.as_ptr(), b"blue".as_ptr().cast(), 4, 0),
            0
        );
        assert_eq!(
            libc::getxattr(x.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0),
            4
        );
        let mut buf = [0u8; 64];
        let n = libc::getxattr(x.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 64);
        assert_eq!(&buf[..n as usize], b"blue");
        let n = libc::getxattr(x.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 2);
        assert_eq!((n, last_errno()), (-1, libc::ERANGE));
        let rc = libc::setxattr(
            x.as_ptr(),
            name.as_ptr(),
            b"red".as_ptr().cast(),
            3,
            libc::XATTR_CREATE,
        );
        assert_eq!((rc, last_errno()), (-1, libc::EEXIST));
        let rc = libc::setxattr(
            x.as_ptr(),
            other.as_ptr(),
            b"z".as_ptr().cast(),
            1,
            libc::XATTR_REPLACE,
        );
        assert_eq!((rc, last_errno()), (-1, libc::ENODATA));
        assert_eq!(
            libc::setxattr(x.as_ptr(), other.as_ptr(), b"z".as_ptr().cast(), 1, 0),
            0
        );
        let n = libc::listxattr(x.as_ptr(), buf.as_mut_ptr().cast(), 64);
        let mut names: Vec<&[u8]> = buf[..n as usize]
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .collect();
        names.sort();
        assert_eq!(names, vec![&b"user.color"[..], &b"user.other"[..]]);
        assert_eq!(libc::removexattr(x.as_ptr(), name.as_ptr()), 0);
        let n = libc::getxattr(x.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 64);
        assert_eq!((n, last_errno()), (-1, libc::ENODATA));
    }

    // statfs reports the cluster's capacity and NAME_MAX.
    let df = c.must_json(&["df", "--json"]);
    // SAFETY: `st` is a valid out-pointer for the duration of the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(cstr(&m.dir).as_ptr(), &mut st) }, 0);
    assert_eq!((st.f_namemax, st.f_frsize), (255, 4096));
    // Capacity follows the chunkservers' free disk space, which other processes change.
    let capacity = df["capacity"].as_u64().unwrap();
    let reported = st.f_blocks * st.f_frsize;
    assert!(
        reported.abs_diff(capacity) < capacity / 100,
        "statfs {reported} vs df {capacity}"
    );
}

#[test]
fn permissions_and_ownership_decide_for_every_user() {
    let c = ProcCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let m = mount_one(&c, work.path());
    const NOBODY: u32 = 65534;
    const ALICE: u32 = 1001;
    const BOB: u32 = 1002;
    let path = |rel: &str| m.path(rel).to_str().unwrap().to_string();
    let mode = |rel: &str| std::fs::symlink_metadata(m.path(rel)).unwrap().mode() & 0o7777;
    let owner = |rel: &str| {
        let md = std::fs::symlink_metadata(m.path(rel)).unwrap();
        (md.uid(), md.gid())
    };
    std::fs::set_permissions(&m.dir, std::fs::Permissions::from_mode(0o755)).unwrap();

    // Another user reads a 0644 file but not a 0600 one, and cannot write either.
    std::fs::write(m.path("public"), b"for everyone").unwrap();
    std::fs::set_permissions(m.path("public"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(m.path("private"), b"root only").unwrap();
    std::fs::set_permissions(m.path("private"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = must_sh_as(NOBODY, NOBODY, &format!("cat {}", path("public")));
    assert_eq!(out, "for everyone");
    for script in [
        format!("cat {}", path("private")),
        format!("echo x >> {}", path("public")),
        format!("touch {}", path("nobody-was-here")),
        format!("mkdir {}", path("nobody-dir")),
        format!("rm -f {}", path("public")),
    ] {
        let out = sh_as(NOBODY, NOBODY, &script);
        assert!(!out.status.success(), "{script} succeeded");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(std::fs::read(m.path("public")).unwrap(), b"for everyone");
    // Root reads a mode-0 file; nobody executes a 0644 script, a 0755 one runs.
    std::fs::write(m.path("none"), b"zero").unwrap();
    std::fs::set_permissions(m.path("none"), std::fs::Permissions::from_mode(0o000)).unwrap();
    assert_eq!(std::fs::read(m.path("none")).unwrap(), b"zero");
    std::fs::write(m.path("script"), b"#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(m.path("script"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = sh_as(NOBODY, NOBODY, &path("script"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
    std::fs::set_permissions(m.path("script"), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(must_sh_as(NOBODY, NOBODY, &path("script")), "ran\n");

    // New files belong to their creator, with the mode masked by the umask.
    std::fs::create_dir(m.path("shared")).unwrap();
    std::fs::set_permissions(m.path("shared"), std::fs::Permissions::from_mode(0o777)).unwrap();
    must_sh_as(
        ALICE,
        ALICE,
        &format!(
            "umask 027 && touch {0}/f && mkdir {0}/d && umask 0 && mkdir -m 0777 {0}/open",
            path("shared")
        ),
    );
    assert_eq!(
        (mode("shared/f"), mode("shared/d"), mode("shared/open")),
        (0o640, 0o750, 0o777)
    );
    assert_eq!(owner("shared/f"), (ALICE, ALICE));
    assert_eq!(owner("shared/d"), (ALICE, ALICE));
    // Only the owner may chmod; only root may chown.
    let out = sh_as(BOB, BOB, &format!("chmod 777 {}", path("shared/f")));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"));
    let out = sh_as(ALICE, ALICE, &format!("chown {BOB} {}", path("shared/f")));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"));
    must_sh_as(ALICE, ALICE, &format!("chmod 604 {}", path("shared/f")));
    assert_eq!(mode("shared/f"), 0o604);
    std::os::unix::fs::chown(m.path("shared/f"), Some(BOB), Some(BOB)).unwrap();
    assert_eq!(owner("shared/f"), (BOB, BOB));

    // A setgid directory passes its group on, and its setgid bit to subdirectories.
    std::fs::create_dir(m.path("sgid")).unwrap();
    std::os::unix::fs::chown(m.path("sgid"), None, Some(4321)).unwrap();
    std::fs::set_permissions(m.path("sgid"), std::fs::Permissions::from_mode(0o2777)).unwrap();
    assert_eq!(mode("sgid"), 0o2777);
    must_sh_as(
        ALICE,
        ALICE,
        &format!("umask 022 && touch {0}/f && mkdir {0}/d", path("sgid")),
    );
    assert_eq!(owner("sgid/f"), (ALICE, 4321));
    assert_eq!(owner("sgid/d"), (ALICE, 4321));
    assert_eq!((mode("sgid/f"), mode("sgid/d")), (0o644, 0o2755));

    // The sticky bit: in a 1777 directory only an entry's owner (or root) removes it.
    std::fs::create_dir(m.path("tmp")).unwrap();
    std::fs::set_permissions(m.path("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    must_sh_as(ALICE, ALICE, &format!("echo a > {}/alice", path("tmp")));
    let out = sh_as(BOB, BOB, &format!("rm -f {}/alice", path("tmp")));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sh_as(BOB, BOB, &format!("mv {0}/alice {0}/bob", path("tmp")));
    assert!(!out.status.success());
    must_sh_as(ALICE, ALICE, &format!("rm {}/alice", path("tmp")));
    assert!(!m.path("tmp/alice").exists());

    // Search permission on a directory guards what is below it.
    std::fs::create_dir(m.path("locked")).unwrap();
    std::fs::write(m.path("locked/inside"), b"secret").unwrap();
    std::fs::set_permissions(
        m.path("locked/inside"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(m.path("locked"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = sh_as(NOBODY, NOBODY, &format!("cat {}", path("locked/inside")));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"));
}
