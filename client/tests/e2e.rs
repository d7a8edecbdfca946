//! Scratch end-to-end test: the client against a real in-process master and three
//! chunkservers on loopback (the lead's harness in `tests/` supersedes it).
#![allow(clippy::unwrap_used)] // test helpers: a failure should panic with its cause

use std::time::Duration;

use rdfs_client::{Client, ClientConfig};
use rdfs_proto::ErrorCode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const CHUNK: u64 = 1 << 20;

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Mini {
    _dir: tempfile::TempDir,
    master: String,
    servers: Vec<(String, CancellationToken)>,
    token: CancellationToken,
}

async fn start(n: usize) -> Mini {
    start_with_chunk(n, CHUNK).await
}

async fn start_with_chunk(n: usize, chunk: u64) -> Mini {
    let dir = tempfile::tempdir().unwrap();
    let token = CancellationToken::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let master = listener.local_addr().unwrap().to_string();
    let mut cfg = rdfs_master::MasterConfig::new(dir.path().join("master"));
    cfg.chunk_size_bytes = chunk;
    cfg.heartbeat_interval = Duration::from_millis(100);
    cfg.heartbeat_timeout = Duration::from_secs(2);
    cfg.lease_duration = Duration::from_secs(5);
    let t = token.clone();
    tokio::spawn(async move { rdfs_master::run(cfg, listener, t).await });
    let mut servers = Vec::new();
    for i in 0..n {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let cfg = rdfs_chunkserver::ChunkserverConfig::new(
            dir.path().join(format!("cs{i}")),
            vec![master.clone()],
        );
        let t = token.child_token();
        let t2 = t.clone();
        tokio::spawn(async move { rdfs_chunkserver::run(cfg, l, t2).await });
        servers.push((addr, t));
    }
    let mini = Mini {
        _dir: dir,
        master,
        servers,
        token,
    };
    let c = mini.client().await;
    for _ in 0..300 {
        let st = c.cluster_status().await.unwrap();
        if st.chunkservers.iter().filter(|s| s.state == "live").count() >= n {
            return mini;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chunkservers did not come up");
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_read_put_get_and_a_dead_replica() {
    let mini = start(4).await;
    let c = mini.client().await;
    assert_eq!(c.chunk_size(), CHUNK);

    // Ranged writes and reads across chunk boundaries.
    let data = bytes((3 * CHUNK + CHUNK / 2 + 17) as usize, 1);
    let f = c.create("/f", 0o644, false).await.unwrap();
    c.write_at(f.inode, 0, &data, true).await.unwrap();
    assert_eq!(c.stat("/f").await.unwrap().size, data.len() as u64);
    let back = c
        .read_at(f.inode, 0, data.len() as u64 + 100)
        .await
        .unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back[..] == data[..]);
    let mid = c.read_at(f.inode, CHUNK - 3, 6).await.unwrap();
    assert_eq!(&mid[..], &data[(CHUNK - 3) as usize..(CHUNK + 3) as usize]);

    // Holes read as zeros.
    let h = c.create("/hole", 0o644, false).await.unwrap();
    c.write_at(h.inode, 2 * CHUNK + 5, b"xyz", false)
        .await
        .unwrap();
    let back = c.read_at(h.inode, 0, 3 * CHUNK).await.unwrap();
    assert_eq!(back.len() as u64, 2 * CHUNK + 8);
    assert!(back[..(2 * CHUNK + 5) as usize].iter().all(|b| *b == 0));
    assert_eq!(&back[(2 * CHUNK + 5) as usize..], b"xyz");

    // Streams.
    let big = bytes((5 * CHUNK + 1234) as usize, 2);
    let n = c.put_stream(&big[..], "/big", false, |_| {}).await.unwrap();
    assert_eq!(n, big.len() as u64);
    let err = c
        .put_stream(&b"x"[..], "/big", false, |_| {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::AlreadyExists);
    let mut out = Vec::new();
    let got = c.get_stream("/big", &mut out, |_| {}).await.unwrap();
    assert_eq!(got, big.len() as u64);
    assert!(out == big);
    let empty = c
        .put_stream(&b""[..], "/empty", false, |_| {})
        .await
        .unwrap();
    assert_eq!(empty, 0);
    let mut out = Vec::new();
    assert_eq!(c.get_stream("/empty", &mut out, |_| {}).await.unwrap(), 0);

    // Listing pages and namespace errors.
    c.mkdir("/d/e", 0o755, true).await.unwrap();
    let names: Vec<String> = c
        .list("/")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec!["big", "d", "empty", "f", "hole"]);
    assert_eq!(
        c.stat("/nope").await.unwrap_err().code(),
        ErrorCode::NotFound
    );

    // Kill one chunkserver: reads fail over, writes re-grant without it.
    let locs = c.chunk_locations("/big").await.unwrap();
    let victim = locs.chunks[0].replicas[0].clone();
    let (_, token) = mini.servers.iter().find(|(a, _)| *a == victim).unwrap();
    token.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut out = Vec::new();
    c.get_stream("/big", &mut out, |_| {}).await.unwrap();
    assert!(out == big);
    let patch = bytes(300_000, 3);
    c.write_at(locs_inode(&c, "/big").await, CHUNK - 1000, &patch, true)
        .await
        .unwrap();
    let back = c
        .read_at(locs_inode(&c, "/big").await, CHUNK - 1000, 300_000)
        .await
        .unwrap();
    assert!(back[..] == patch[..]);
    let after = c.chunk_locations("/big").await.unwrap();
    assert!(
        !after.chunks[0].replicas.contains(&victim),
        "{:?}",
        after.chunks[0]
    );
    mini.token.cancel();
}

/// A put whose input ends exactly at a piece boundary inside a chunk: EOF is seen only
/// after the last piece was written (a fresh clone found 16, 32, 48 and 80 MiB files stored
/// as 0 bytes and 400 MiB as 256 MiB with 64 MiB chunks, `dfs put` exiting 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_ending_on_a_piece_boundary_inside_a_chunk_commits_every_byte() {
    use sha2::{Digest, Sha256};
    let piece = rdfs_client::PUT_PIECE_BYTES;
    let mini = start_with_chunk(3, 4 * piece).await;
    let c = mini.client().await;
    for (name, len) in [("one", piece), ("two", 2 * piece), ("five", 5 * piece)] {
        let data = bytes(len as usize, len);
        let path = format!("/{name}");
        let n = c.put_stream(&data[..], &path, false, |_| {}).await.unwrap();
        assert_eq!(n, len);
        assert_eq!(c.stat(&path).await.unwrap().size, len, "{path}");
        let mut out = Vec::new();
        assert_eq!(c.get_stream(&path, &mut out, |_| {}).await.unwrap(), len);
        assert_eq!(Sha256::digest(&out), Sha256::digest(&data), "{path}");
    }
    mini.token.cancel();
}

async fn locs_inode(c: &Client, path: &str) -> u64 {
    c.stat(path).await.unwrap().inode
}

/// Manual aid: `RDFS_SERVE_SECS=300 cargo test -p rdfs-client --test e2e -- --ignored serve`
/// runs a cluster and writes its master address to `$RDFS_SERVE_ADDR_FILE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn serve_for_manual_cli_checks() {
    let mini = start(3).await;
    let file = std::env::var("RDFS_SERVE_ADDR_FILE").unwrap_or("/tmp/rdfs-master-addr".into());
    std::fs::write(&file, &mini.master).unwrap();
    let secs: u64 = std::env::var("RDFS_SERVE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    mini.token.cancel();
}
