//! End-to-end tests of the inode-based (FUSE) client API against an in-process master and
//! chunkservers on loopback: exact attributes and error codes, hard links, rename rules,
//! truncate zeroing, xattrs, unlink-while-open, permissions, and a master restart.
#![allow(clippy::unwrap_used)] // test helpers: a failure should panic with its cause

use std::time::Duration;

use rdfs_client::{Caller, Client, ClientConfig, FileType, NewNode, SetAttr, SET_TIME_NOW};
use rdfs_proto::ErrorCode;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const CHUNK: u64 = 1 << 20;
const ROOT: u64 = 1;
/// Short so session expiry is observable in a test.
const SESSION_TTL: Duration = Duration::from_secs(2);

struct Mini {
    dir: tempfile::TempDir,
    master: String,
    master_token: CancellationToken,
    master_task: Option<JoinHandle<()>>,
    token: CancellationToken,
}

async fn start_master(
    dir: &std::path::Path,
    addr: &str,
    token: CancellationToken,
) -> JoinHandle<()> {
    let mut listener = None;
    for _ in 0..100 {
        match TcpListener::bind(addr).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let listener = listener.expect("master port free again");
    let mut cfg = rdfs_master::MasterConfig::new(dir.join("master"));
    cfg.chunk_size_bytes = CHUNK;
    cfg.heartbeat_interval = Duration::from_millis(100);
    cfg.heartbeat_timeout = Duration::from_secs(2);
    cfg.lease_duration = Duration::from_secs(5);
    cfg.session_ttl = SESSION_TTL;
    tokio::spawn(async move {
        rdfs_master::run(cfg, listener, token).await.unwrap();
    })
}

async fn start(n: usize) -> Mini {
    let dir = tempfile::tempdir().unwrap();
    let token = CancellationToken::new();
    let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let master = probe.local_addr().unwrap().to_string();
    drop(probe);
    let master_token = token.child_token();
    let task = start_master(dir.path(), &master, master_token.clone()).await;
    for i in 0..n {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg = rdfs_chunkserver::ChunkserverConfig::new(
            dir.path().join(format!("cs{i}")),
            vec![master.clone()],
        );
        let t = token.child_token();
        tokio::spawn(async move { rdfs_chunkserver::run(cfg, l, t).await });
    }
    let mini = Mini {
        dir,
        master,
        master_token,
        master_task: Some(task),
        token,
    };
    mini.wait_live(n).await;
    mini
}

impl Mini {
    async fn client(&self) -> Client {
        Client::connect(ClientConfig {
            masters: vec![self.master.clone()],
            timeout: Duration::from_secs(20),
            uid: 0,
            gid: 0,
        })
        .await
        .unwrap()
    }

    async fn wait_live(&self, n: usize) {
        let c = self.client().await;
        for _ in 0..300 {
            let st = c.cluster_status().await.unwrap();
            if !st.safe_mode && st.chunkservers.iter().filter(|s| s.state == "live").count() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chunkservers did not come up");
    }

    /// Stops the master (it checkpoints) and starts it again on the same address.
    async fn restart_master(&mut self, n: usize) {
        self.master_token.cancel();
        if let Some(t) = self.master_task.take() {
            t.await.unwrap();
        }
        self.master_token = self.token.child_token();
        self.master_task =
            Some(start_master(self.dir.path(), &self.master, self.master_token.clone()).await);
        self.wait_live(n).await;
    }
}

impl Drop for Mini {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

fn alice() -> Caller {
    Caller {
        uid: 1000,
        gid: 100,
        groups: vec![],
    }
}

fn bob() -> Caller {
    Caller {
        uid: 2000,
        gid: 200,
        groups: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inode_calls_with_exact_values_and_codes() {
    let mini = start(2).await;
    let c = mini.client().await;

    let d = c
        .create_at(ROOT, "d", NewNode::Dir, 0o755, true)
        .await
        .unwrap();
    assert_eq!(d.file_type, FileType::Dir as i32);
    assert_eq!((d.mode, d.nlink, d.uid, d.gid), (0o755, 2, 0, 0));
    let root = c.getattr(ROOT).await.unwrap();
    assert_eq!(root.nlink, 3);
    assert_eq!(
        root.mtime_ns, d.mtime_ns,
        "creating updates the parent's mtime"
    );

    let f = c
        .create_at(d.inode, "f", NewNode::File, 0o640, true)
        .await
        .unwrap();
    assert_eq!(
        (f.file_type, f.mode, f.size, f.nlink),
        (FileType::File as i32, 0o640, 0, 1)
    );
    let again = c
        .create_at(d.inode, "f", NewNode::File, 0o600, false)
        .await
        .unwrap();
    assert_eq!(
        (again.inode, again.mode),
        (f.inode, 0o640),
        "O_CREAT returns it unchanged"
    );
    let err = c
        .create_at(d.inode, "f", NewNode::File, 0o600, true)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::AlreadyExists);
    let err = c
        .create_at(d.inode, &"n".repeat(256), NewNode::File, 0o600, true)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NameTooLong);

    let l = c
        .create_at(d.inode, "l", NewNode::Symlink("f".into()), 0o777, true)
        .await
        .unwrap();
    assert_eq!(
        (l.file_type, l.size, l.symlink_target.as_str()),
        (FileType::Symlink as i32, 1, "f")
    );
    assert_eq!(c.readlink(l.inode).await.unwrap(), "f");
    assert_eq!(
        c.readlink(f.inode).await.unwrap_err().code(),
        ErrorCode::InvalidArgument
    );
    let p = c
        .create_at(d.inode, "p", NewNode::Fifo, 0o600, true)
        .await
        .unwrap();
    assert_eq!(p.file_type, FileType::Fifo as i32);

    assert_eq!(c.lookup(d.inode, "f").await.unwrap().inode, f.inode);
    assert_eq!(
        c.lookup(d.inode, "x").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(
        c.lookup(f.inode, "x").await.unwrap_err().code(),
        ErrorCode::NotADirectory
    );
    assert_eq!(
        c.getattr(987_654).await.unwrap_err().code(),
        ErrorCode::NotFound
    );

    // readdir pages.
    let (page, more) = c.readdir(d.inode, "", 2).await.unwrap();
    let names: Vec<&str> = page.iter().map(|e| e.name.as_str()).collect();
    assert_eq!((names, more), (vec!["f", "l"], true));
    let (page, more) = c.readdir(d.inode, "l", 2).await.unwrap();
    let names: Vec<&str> = page.iter().map(|e| e.name.as_str()).collect();
    assert_eq!((names, more), (vec!["p"], false));

    // Hard links.
    let linked = c.link_at(f.inode, ROOT, "hard").await.unwrap();
    assert_eq!((linked.inode, linked.nlink), (f.inode, 2));
    assert_eq!(
        c.link_at(d.inode, ROOT, "dl").await.unwrap_err().code(),
        ErrorCode::OperationNotPermitted
    );
    c.write_at(f.inode, 0, b"hello", false).await.unwrap();
    c.unlink_at(d.inode, "f", false).await.unwrap();
    let via_other = c.lookup(ROOT, "hard").await.unwrap();
    assert_eq!((via_other.nlink, via_other.size), (1, 5));
    assert_eq!(&c.read_at(f.inode, 0, 5).await.unwrap()[..], b"hello");

    // unlink / rmdir codes.
    assert_eq!(
        c.unlink_at(ROOT, "d", false).await.unwrap_err().code(),
        ErrorCode::IsADirectory
    );
    assert_eq!(
        c.unlink_at(ROOT, "d", true).await.unwrap_err().code(),
        ErrorCode::DirectoryNotEmpty
    );
    assert_eq!(
        c.unlink_at(ROOT, "hard", true).await.unwrap_err().code(),
        ErrorCode::NotADirectory
    );

    // rename: over a file, no_replace, dir over dir, into own subtree.
    let g = c
        .create_at(ROOT, "g", NewNode::File, 0o644, true)
        .await
        .unwrap();
    c.rename_at(ROOT, "hard", ROOT, "g", false).await.unwrap();
    assert_eq!(c.lookup(ROOT, "g").await.unwrap().inode, f.inode);
    assert_eq!(
        c.getattr(g.inode).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    let e = c
        .create_at(ROOT, "e", NewNode::Dir, 0o755, true)
        .await
        .unwrap();
    assert_eq!(
        c.rename_at(ROOT, "g", ROOT, "e", true)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::AlreadyExists
    );
    assert_eq!(
        c.rename_at(ROOT, "g", ROOT, "e", false)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::IsADirectory
    );
    assert_eq!(
        c.rename_at(ROOT, "e", ROOT, "d", false)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::DirectoryNotEmpty
    );
    assert_eq!(
        c.rename_at(ROOT, "d", d.inode, "inside", false)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::InvalidArgument
    );
    c.rename_at(ROOT, "e", d.inode, "e2", false).await.unwrap();
    assert_eq!(c.lookup(d.inode, "e2").await.unwrap().inode, e.inode);
    assert_eq!(c.getattr(d.inode).await.unwrap().nlink, 3);

    // setattr: chmod, chown, utimens (explicit and now); ctime moves.
    let before = c.getattr(f.inode).await.unwrap();
    let a = c
        .setattr(
            f.inode,
            SetAttr {
                mode: Some(0o600),
                uid: Some(7),
                gid: Some(8),
                atime_ns: Some(1_000),
                mtime_ns: Some(2_000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (a.mode, a.uid, a.gid, a.atime_ns, a.mtime_ns),
        (0o600, 7, 8, 1_000, 2_000)
    );
    assert!(a.ctime_ns >= before.ctime_ns);
    let a = c
        .setattr(
            f.inode,
            SetAttr {
                mtime_ns: Some(SET_TIME_NOW),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(a.mtime_ns > 2_000);

    // xattrs.
    c.set_xattr(f.inode, "user.k", b"v1", true, false)
        .await
        .unwrap();
    assert_eq!(
        c.set_xattr(f.inode, "user.k", b"v2", true, false)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::AlreadyExists
    );
    assert_eq!(
        c.set_xattr(f.inode, "user.z", b"v", false, true)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::NoData
    );
    c.set_xattr(f.inode, "user.k", b"v2", false, true)
        .await
        .unwrap();
    c.set_xattr(f.inode, "user.a", b"", false, false)
        .await
        .unwrap();
    assert_eq!(c.get_xattr(f.inode, "user.k").await.unwrap(), b"v2");
    assert_eq!(c.get_xattr(f.inode, "user.a").await.unwrap(), b"");
    assert_eq!(
        c.list_xattr(f.inode).await.unwrap(),
        vec!["user.a", "user.k"]
    );
    c.remove_xattr(f.inode, "user.k").await.unwrap();
    assert_eq!(
        c.get_xattr(f.inode, "user.k").await.unwrap_err().code(),
        ErrorCode::NoData
    );
    assert_eq!(
        c.remove_xattr(f.inode, "user.k").await.unwrap_err().code(),
        ErrorCode::NoData
    );

    let fs = c.statfs().await.unwrap();
    assert_eq!(fs.chunk_size, CHUNK);
    // root, d, f, l, p, e
    assert_eq!(fs.files, 6);
    assert!(fs.capacity > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn truncate_shrink_then_grow_reads_zeros() {
    let mini = start(2).await;
    let c = mini.client().await;
    let f = c
        .create_at(ROOT, "t", NewNode::File, 0o644, true)
        .await
        .unwrap();
    let data: Vec<u8> = (1..=100u8).collect();
    c.write_at(f.inode, 0, &data, false).await.unwrap();
    let a = c
        .setattr(
            f.inode,
            SetAttr {
                size: Some(10),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(a.size, 10);
    assert_eq!(&c.read_at(f.inode, 0, 100).await.unwrap()[..], &data[..10]);
    let a = c
        .setattr(
            f.inode,
            SetAttr {
                size: Some(100),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(a.size, 100);
    let back = c.read_at(f.inode, 0, 100).await.unwrap();
    assert_eq!(&back[..10], &data[..10]);
    assert_eq!(&back[10..], &[0u8; 90][..]);

    // Across chunks: the chunks past the cut go, the cut one is zeroed past it.
    let big: Vec<u8> = (0..(2 * CHUNK + 50)).map(|i| (i % 251) as u8 + 1).collect();
    c.write_at(f.inode, 0, &big, false).await.unwrap();
    assert_eq!(c.getattr(f.inode).await.unwrap().chunk_count, 3);
    let a = c
        .setattr(
            f.inode,
            SetAttr {
                size: Some(CHUNK - 7),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((a.size, a.chunk_count), (CHUNK - 7, 1));
    c.setattr(
        f.inode,
        SetAttr {
            size: Some(3 * CHUNK),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let back = c.read_at(f.inode, CHUNK - 10, 20).await.unwrap();
    assert_eq!(
        &back[..3],
        &big[(CHUNK - 10) as usize..(CHUNK - 7) as usize]
    );
    assert_eq!(&back[3..], &[0u8; 17][..]);
    let tail = c.read_at(f.inode, 2 * CHUNK, 100).await.unwrap();
    assert_eq!(&tail[..], &[0u8; 100][..]);
    assert_eq!(
        c.setattr(
            ROOT,
            SetAttr {
                size: Some(0),
                ..Default::default()
            }
        )
        .await
        .unwrap_err()
        .code(),
        ErrorCode::IsADirectory
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unlinked_open_files_live_until_closed_or_their_session_expires() {
    let mini = start(2).await;
    let c = mini.client().await;
    let f = c
        .create_at(ROOT, "open", NewNode::File, 0o644, true)
        .await
        .unwrap();
    c.write_at(f.inode, 0, b"still here", false).await.unwrap();
    let h = c.open_file(f.inode).await.unwrap();
    c.unlink_at(ROOT, "open", false).await.unwrap();
    assert_eq!(
        c.lookup(ROOT, "open").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    let a = c.getattr(f.inode).await.unwrap();
    assert_eq!((a.nlink, a.size), (0, 10));
    assert_eq!(&c.read_at(f.inode, 0, 10).await.unwrap()[..], b"still here");
    c.write_at(f.inode, 10, b"!", false).await.unwrap();
    assert_eq!(
        &c.read_at(f.inode, 0, 11).await.unwrap()[..],
        b"still here!"
    );
    let chunks_before = c.cluster_status().await.unwrap().chunks;
    c.close_file(h).await.unwrap();
    assert_eq!(
        c.getattr(f.inode).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(c.cluster_status().await.unwrap().chunks, chunks_before - 1);
    // A retried close is harmless.
    c.close_file(h).await.unwrap();

    // Renaming over an open file keeps it too.
    let a = c
        .create_at(ROOT, "a", NewNode::File, 0o644, true)
        .await
        .unwrap();
    let b = c
        .create_at(ROOT, "b", NewNode::File, 0o644, true)
        .await
        .unwrap();
    let hb = c.open_file(b.inode).await.unwrap();
    c.rename_at(ROOT, "a", ROOT, "b", false).await.unwrap();
    assert_eq!(c.lookup(ROOT, "b").await.unwrap().inode, a.inode);
    assert_eq!(c.getattr(b.inode).await.unwrap().nlink, 0);
    c.close_file(hb).await.unwrap();
    assert_eq!(
        c.getattr(b.inode).await.unwrap_err().code(),
        ErrorCode::NotFound
    );

    // A client that goes away without closing: its session expires and the orphan goes.
    let gone = mini.client().await;
    let o = gone
        .create_at(ROOT, "o", NewNode::File, 0o644, true)
        .await
        .unwrap();
    gone.open_file(o.inode).await.unwrap();
    gone.unlink_at(ROOT, "o", false).await.unwrap();
    drop(gone);
    assert_eq!(c.getattr(o.inode).await.unwrap().nlink, 0);
    let mut freed = false;
    for _ in 0..100 {
        if c.getattr(o.inode).await.is_err() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "the orphan of an expired session is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn permissions_are_checked_for_non_root_callers() {
    let mini = start(2).await;
    let root = mini.client().await;
    let home = root
        .create_at(ROOT, "home", NewNode::Dir, 0o755, true)
        .await
        .unwrap();
    root.setattr(
        home.inode,
        SetAttr {
            uid: Some(1000),
            gid: Some(100),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let a = root.with_caller(alice());
    let b = root.with_caller(bob());

    let secret = a
        .create_at(home.inode, "secret", NewNode::File, 0o600, true)
        .await
        .unwrap();
    assert_eq!((secret.uid, secret.gid), (1000, 100));
    a.write_at(secret.inode, 0, b"mine", false).await.unwrap();
    assert_eq!(&a.read_at(secret.inode, 0, 4).await.unwrap()[..], b"mine");

    assert_eq!(
        b.read_at(secret.inode, 0, 4).await.unwrap_err().code(),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        b.write_at(secret.inode, 0, b"x", false)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        b.lookup(home.inode, "secret").await.unwrap().inode,
        secret.inode
    );
    assert_eq!(
        b.create_at(home.inode, "x", NewNode::File, 0o644, true)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        b.unlink_at(home.inode, "secret", false)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        b.setattr(
            secret.inode,
            SetAttr {
                mode: Some(0o666),
                ..Default::default()
            }
        )
        .await
        .unwrap_err()
        .code(),
        ErrorCode::OperationNotPermitted
    );
    assert_eq!(
        a.setattr(
            secret.inode,
            SetAttr {
                uid: Some(2000),
                ..Default::default()
            }
        )
        .await
        .unwrap_err()
        .code(),
        ErrorCode::OperationNotPermitted
    );
    assert_eq!(
        b.setattr(
            secret.inode,
            SetAttr {
                size: Some(0),
                ..Default::default()
            }
        )
        .await
        .unwrap_err()
        .code(),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        b.get_xattr(secret.inode, "user.x")
            .await
            .unwrap_err()
            .code(),
        ErrorCode::PermissionDenied
    );
    // Root reads anything; the path API checks too.
    assert_eq!(
        &root.read_at(secret.inode, 0, 4).await.unwrap()[..],
        b"mine"
    );
    let private = a
        .create_at(home.inode, "private", NewNode::Dir, 0o700, true)
        .await
        .unwrap();
    a.create_at(private.inode, "in", NewNode::File, 0o644, true)
        .await
        .unwrap();
    assert_eq!(
        b.lookup(private.inode, "in").await.unwrap_err().code(),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        b.readdir(private.inode, "", 0).await.unwrap_err().code(),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        b.stat("/home/private/in").await.unwrap_err().code(),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        b.mkdir("/home/nope", 0o755, false)
            .await
            .unwrap_err()
            .code(),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        b.delete("/home/secret", false).await.unwrap_err().code(),
        ErrorCode::PermissionDenied
    );
    // Sticky /tmp.
    let tmp = root
        .create_at(ROOT, "tmp", NewNode::Dir, 0o1777, true)
        .await
        .unwrap();
    a.create_at(tmp.inode, "a", NewNode::File, 0o666, true)
        .await
        .unwrap();
    assert_eq!(
        b.unlink_at(tmp.inode, "a", false).await.unwrap_err().code(),
        ErrorCode::OperationNotPermitted
    );
    a.unlink_at(tmp.inode, "a", false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_master_finds_every_new_kind_of_change() {
    let mut mini = start(2).await;
    let c = mini.client().await;
    let d = c
        .create_at(ROOT, "d", NewNode::Dir, 0o2775, true)
        .await
        .unwrap();
    let f = c
        .create_at(d.inode, "f", NewNode::File, 0o644, true)
        .await
        .unwrap();
    c.write_at(f.inode, 0, b"0123456789", true).await.unwrap();
    c.link_at(f.inode, ROOT, "f2").await.unwrap();
    c.create_at(d.inode, "l", NewNode::Symlink("/d/f".into()), 0o777, true)
        .await
        .unwrap();
    c.create_at(d.inode, "p", NewNode::Fifo, 0o600, true)
        .await
        .unwrap();
    c.set_xattr(f.inode, "user.k", b"v", true, false)
        .await
        .unwrap();
    c.setattr(
        f.inode,
        SetAttr {
            mode: Some(0o600),
            uid: Some(5),
            mtime_ns: Some(77),
            size: Some(4),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let gone = c
        .create_at(ROOT, "gone", NewNode::File, 0o644, true)
        .await
        .unwrap();
    c.unlink_at(ROOT, "gone", false).await.unwrap();
    let o = c
        .create_at(ROOT, "orphan", NewNode::File, 0o644, true)
        .await
        .unwrap();
    c.write_at(o.inode, 0, b"orphan data", true).await.unwrap();
    let h = c.open_file(o.inode).await.unwrap();
    c.unlink_at(ROOT, "orphan", false).await.unwrap();
    c.rename_at(ROOT, "f2", d.inode, "f3", false).await.unwrap();

    mini.restart_master(2).await;
    let c2 = mini.client().await;
    let f_attr = c2.lookup(d.inode, "f").await.unwrap();
    assert_eq!(
        (
            f_attr.inode,
            f_attr.nlink,
            f_attr.mode,
            f_attr.uid,
            f_attr.mtime_ns,
            f_attr.size
        ),
        (f.inode, 2, 0o600, 5, 77, 4)
    );
    assert_eq!(c2.lookup(d.inode, "f3").await.unwrap().inode, f.inode);
    assert_eq!(
        c2.lookup(ROOT, "f2").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(&c2.read_at(f.inode, 0, 10).await.unwrap()[..], b"0123");
    let l = c2.lookup(d.inode, "l").await.unwrap();
    assert_eq!(c2.readlink(l.inode).await.unwrap(), "/d/f");
    assert_eq!(
        c2.lookup(d.inode, "p").await.unwrap().file_type,
        FileType::Fifo as i32
    );
    assert_eq!(c2.get_xattr(f.inode, "user.k").await.unwrap(), b"v");
    assert_eq!(c2.getattr(d.inode).await.unwrap().mode, 0o2775);
    assert_eq!(
        c2.getattr(gone.inode).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    // The open orphan survived the restart (its handle comes back with the next renewal).
    assert_eq!(
        &c2.read_at(o.inode, 0, 11).await.unwrap()[..],
        b"orphan data"
    );
    tokio::time::sleep(SESSION_TTL * 2).await;
    assert_eq!(
        c2.getattr(o.inode).await.unwrap().nlink,
        0,
        "re-registered handle keeps it"
    );
    c.close_file(h).await.unwrap();
    assert_eq!(
        c2.getattr(o.inode).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
}
