//! Two mounts of one cluster: close-to-open consistency. Mount B caches attributes and
//! names for a minute, so every check below that passes on B passes because `open`
//! revalidates, not because a cache happened to expire.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};

use crate::common::*;
use crate::mount::*;

#[test]
fn close_to_open_holds_between_two_mounts() {
    let c = ProcCluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let a = FuseMount::start(&c, &work.path().join("a"));
    let b = FuseMount::start_with(&c, &work.path().join("b"), &["--attr-ttl", "60s"]);
    let cs = CHUNK_SIZE as usize;

    // B reads the file: its pages, attributes and name are now cached on B.
    let v1 = test_bytes(cs + 5, 1);
    std::fs::write(a.path("shared"), &v1).unwrap();
    assert_eq!(sha256_file(&b.path("shared")), sha256(&v1));

    // A rewrites it with the same size (only content and mtime differ): B's next open
    // sees the new bytes, not its cached pages.
    let v2 = test_bytes(cs + 5, 2);
    std::fs::write(a.path("shared"), &v2).unwrap();
    assert_eq!(sha256_file(&b.path("shared")), sha256(&v2));

    // A appends: the size B's descriptor reports right after open is the new one.
    let tail = test_bytes(1000, 3);
    OpenOptions::new()
        .append(true)
        .open(a.path("shared"))
        .unwrap()
        .write_all(&tail)
        .unwrap();
    let mut f = File::open(b.path("shared")).unwrap();
    assert_eq!(f.metadata().unwrap().len(), (cs + 5 + 1000) as u64);
    let mut back = Vec::new();
    f.read_to_end(&mut back).unwrap();
    assert_eq!(sha256(&back), sha256(&[&v2[..], &tail[..]].concat()));
    drop(f);

    // B writes (small writes, buffered, published at close); A reads it identically.
    let v3 = test_bytes(2 * cs + 17, 4);
    let mut w = File::create(b.path("shared")).unwrap();
    for piece in v3.chunks(4096) {
        w.write_all(piece).unwrap();
    }
    drop(w);
    assert_eq!(sha256_file(&a.path("shared")), sha256(&v3));

    // A deletes the file and makes a new one under the same name. B still has the old
    // name → inode entry cached, yet its open finds the new file (the gone inode answers
    // ESTALE, so the kernel looks the name up again).
    std::fs::remove_file(a.path("shared")).unwrap();
    std::fs::write(a.path("shared"), b"recreated").unwrap();
    assert_eq!(std::fs::read(b.path("shared")).unwrap(), b"recreated");

    // A name B looked up and did not find appears on B once A creates it.
    assert!(!b.path("fresh").exists());
    std::fs::write(a.path("fresh"), b"new on a").unwrap();
    assert_eq!(std::fs::read(b.path("fresh")).unwrap(), b"new on a");

    // Both mounts list the same directory.
    let list = |m: &FuseMount| {
        let mut v: Vec<String> = std::fs::read_dir(&m.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(list(&a), vec!["fresh".to_string(), "shared".to_string()]);
    assert_eq!(list(&b), list(&a));
}
