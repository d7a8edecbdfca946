//! rdfs-tests: an in-process cluster harness for integration tests.
//!
//! `Cluster::builder().chunkservers(3).start().await` runs a real master and real
//! chunkservers (the same `run` functions the `dfs` binary calls) on loopback, each on a
//! listener bound to port 0 before the server starts, with state in one temp dir. Nodes can
//! be stopped and restarted on the same address and data directory. Helpers that panic on
//! failure are named `must_*`.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdfs_client::{Client, ClientConfig};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Small chunks so tests cross chunk boundaries with little data.
pub const TEST_CHUNK_SIZE: u64 = 1 << 20;

pub struct ClusterBuilder {
    chunkservers: usize,
    chunk_size: u64,
    replication: u32,
    heartbeat_interval: Duration,
    heartbeat_timeout: Duration,
    lease: Duration,
    client_timeout: Duration,
    trash_grace: Option<Duration>,
}

impl ClusterBuilder {
    pub fn chunkservers(mut self, n: usize) -> Self {
        self.chunkservers = n;
        self
    }
    pub fn chunk_size(mut self, bytes: u64) -> Self {
        self.chunk_size = bytes;
        self
    }
    pub fn replication(mut self, n: u32) -> Self {
        self.replication = n;
        self
    }
    pub fn heartbeat_timeout(mut self, d: Duration) -> Self {
        self.heartbeat_timeout = d;
        self
    }
    pub fn lease(mut self, d: Duration) -> Self {
        self.lease = d;
        self
    }
    pub fn client_timeout(mut self, d: Duration) -> Self {
        self.client_timeout = d;
        self
    }
    /// How long `rm` keeps entries in the trash (default: the master's default, a day).
    pub fn trash_grace(mut self, d: Duration) -> Self {
        self.trash_grace = Some(d);
        self
    }

    pub async fn start(self) -> Cluster {
        init_tracing();
        let dir = tempfile::tempdir().expect("create temp dir");
        let mut cluster = Cluster {
            master: None,
            master_addr: String::new(),
            chunkservers: Vec::new(),
            cfg: self,
            dir,
        };
        cluster.start_master(None).await;
        for _ in 0..cluster.cfg.chunkservers {
            cluster.add_chunkserver().await;
        }
        let n = cluster.cfg.chunkservers;
        cluster.must_wait_live_chunkservers(n).await;
        cluster
    }
}

struct Node {
    addr: String,
    token: CancellationToken,
    task: JoinHandle<Result<(), String>>,
}

impl Node {
    async fn stop(self) -> Result<(), String> {
        self.token.cancel();
        match tokio::time::timeout(Duration::from_secs(20), self.task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(format!("task failed: {e}")),
            Err(_) => Err("did not stop within 20s".into()),
        }
    }
}

pub struct Cluster {
    master: Option<Node>,
    pub master_addr: String,
    chunkservers: Vec<(String, Option<Node>)>,
    cfg: ClusterBuilder,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            chunkservers: 3,
            chunk_size: TEST_CHUNK_SIZE,
            replication: 3,
            heartbeat_interval: Duration::from_millis(100),
            heartbeat_timeout: Duration::from_secs(2),
            lease: Duration::from_secs(5),
            client_timeout: Duration::from_secs(20),
            trash_grace: None,
        }
    }

    pub fn master_dir(&self) -> PathBuf {
        self.dir.path().join("master")
    }

    pub fn chunkserver_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("cs{i}"))
    }

    pub fn chunkserver_addr(&self, i: usize) -> String {
        self.chunkservers[i].0.clone()
    }

    pub fn master_config(&self) -> rdfs_master::MasterConfig {
        let mut cfg = rdfs_master::MasterConfig::new(self.master_dir());
        cfg.chunk_size_bytes = self.cfg.chunk_size;
        cfg.replication = self.cfg.replication;
        cfg.min_replicas = cfg.min_replicas.min(self.cfg.replication);
        cfg.heartbeat_interval = self.cfg.heartbeat_interval;
        cfg.heartbeat_timeout = self.cfg.heartbeat_timeout;
        cfg.lease_duration = self.cfg.lease;
        cfg.replication_scan_interval = Duration::from_millis(100);
        cfg.block_report_interval = Duration::from_secs(2);
        if let Some(grace) = self.cfg.trash_grace {
            cfg.trash_grace = grace;
        }
        cfg
    }

    async fn start_master(&mut self, addr: Option<String>) {
        let listener = bind(addr.as_deref()).await;
        let addr = listener.local_addr().expect("local addr").to_string();
        let token = CancellationToken::new();
        let cfg = self.master_config();
        let t = token.clone();
        let task = tokio::spawn(async move {
            rdfs_master::run(cfg, listener, t)
                .await
                .map_err(|e| e.to_string())
        });
        self.master_addr = addr.clone();
        self.master = Some(Node { addr, token, task });
    }

    /// Stops the master cleanly (it writes a checkpoint) and starts it again on the same address.
    pub async fn restart_master(&mut self) {
        let node = self.master.take().expect("master running");
        let addr = node.addr.clone();
        node.stop().await.expect("master stopped cleanly");
        self.start_master(Some(addr)).await;
    }

    /// Stops the master; returns what `run` returned.
    pub async fn stop_master(&mut self) -> Result<(), String> {
        self.master.take().expect("master running").stop().await
    }

    pub async fn start_master_again(&mut self) {
        let addr = self.master_addr.clone();
        self.start_master(Some(addr)).await;
    }

    fn chunkserver_config(&self, i: usize) -> rdfs_chunkserver::ChunkserverConfig {
        let mut cfg = rdfs_chunkserver::ChunkserverConfig::new(
            self.chunkserver_dir(i),
            vec![self.master_addr.clone()],
        );
        cfg.block_report_interval = Duration::from_secs(2);
        cfg
    }

    async fn spawn_chunkserver(&self, i: usize, addr: Option<&str>) -> Node {
        let listener = bind(addr).await;
        let addr = listener.local_addr().expect("local addr").to_string();
        let token = CancellationToken::new();
        let cfg = self.chunkserver_config(i);
        let t = token.clone();
        let task = tokio::spawn(async move {
            rdfs_chunkserver::run(cfg, listener, t)
                .await
                .map_err(|e| e.to_string())
        });
        Node { addr, token, task }
    }

    /// Adds a chunkserver with a fresh data directory; returns its index.
    pub async fn add_chunkserver(&mut self) -> usize {
        let i = self.chunkservers.len();
        let node = self.spawn_chunkserver(i, None).await;
        self.chunkservers.push((node.addr.clone(), Some(node)));
        i
    }

    /// Stops chunkserver `i` (its address and data stay reserved for a restart).
    pub async fn stop_chunkserver(&mut self, i: usize) {
        if let Some(node) = self.chunkservers[i].1.take() {
            node.stop().await.expect("chunkserver stopped cleanly");
        }
    }

    pub async fn start_chunkserver(&mut self, i: usize) {
        let addr = self.chunkservers[i].0.clone();
        let node = self.spawn_chunkserver(i, Some(&addr)).await;
        self.chunkservers[i].1 = Some(node);
    }

    pub async fn client(&self) -> Client {
        Client::connect(ClientConfig {
            masters: vec![self.master_addr.clone()],
            timeout: self.cfg.client_timeout,
            uid: 0,
            gid: 0,
        })
        .await
        .expect("client connects")
    }

    pub async fn must_wait_live_chunkservers(&self, n: usize) {
        let client = self.client().await;
        must_eventually(Duration::from_secs(30), "chunkservers live", || {
            let client = client.clone();
            async move {
                let st = client.cluster_status().await.ok()?;
                let live = st.chunkservers.iter().filter(|c| c.state == "live").count();
                (live >= n).then_some(())
            }
        })
        .await;
    }

    /// Every `.data` file of chunk `chunk_id` under chunkserver `i`'s data directory.
    pub fn chunk_files(&self, i: usize, chunk_id: u64) -> Vec<PathBuf> {
        let name = format!("{chunk_id:016x}.data");
        walk(&self.chunkserver_dir(i))
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|f| f == name.as_str()))
            .collect()
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.chunkservers.len() {
            self.stop_chunkserver(i).await;
        }
        if let Some(m) = self.master.take() {
            m.stop().await.expect("master stopped cleanly");
        }
    }
}

async fn bind(addr: Option<&str>) -> TcpListener {
    let addr = addr.unwrap_or("127.0.0.1:0");
    // A restarted node reuses its address; the old socket may linger for a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("bind {addr}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("bind {addr}: {e}"),
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Polls `f` until it returns `Some`, panicking with `what` after `timeout`.
pub async fn must_eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Deterministic pseudo-random bytes (a seeded xorshift), so failures reproduce.
pub fn test_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
