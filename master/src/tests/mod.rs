//! In-crate integration tests: a real tonic client against [`crate::run`] on 127.0.0.1:0
//! with a temp data dir, and fake chunkservers that answer every data-plane frame with Ok.

mod chunkservers;
mod inode_rpc;
mod namespace_rpc;
mod recovery;
mod writes;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rdfs_proto::dataplane::{DataConn, Msg};
use rdfs_proto::pb::master_client::MasterClient;
use rdfs_proto::pb::*;
use rdfs_proto::ErrorCode;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::{run, MasterConfig, MasterError};

pub const TEST_CHUNK_SIZE: u64 = 1 << 20;

pub fn config(dir: &Path) -> MasterConfig {
    let mut c = MasterConfig::new(dir.to_path_buf());
    c.chunk_size_bytes = TEST_CHUNK_SIZE;
    c.heartbeat_interval = Duration::from_millis(100);
    c.heartbeat_timeout = Duration::from_millis(600);
    c.replication_scan_interval = Duration::from_millis(50);
    // Fake chunkservers (and unreachable addresses) register here: no witness lease.
    c.witnesses = false;
    c
}

pub struct TestMaster {
    pub addr: String,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<Result<(), MasterError>>,
}

impl TestMaster {
    pub async fn start(cfg: MasterConfig) -> TestMaster {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(run(cfg, listener, shutdown.clone()));
        TestMaster {
            addr,
            shutdown,
            handle,
        }
    }

    pub async fn client(&self) -> MasterClient<Channel> {
        for _ in 0..100 {
            if let Ok(c) = MasterClient::connect(self.addr.clone()).await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("master at {} did not come up", self.addr);
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let r = tokio::time::timeout(Duration::from_secs(20), self.handle).await;
        r.expect("master stops in time").unwrap().unwrap();
    }
}

/// Runs a master expected to fail at startup; returns its error.
pub async fn start_err(cfg: MasterConfig) -> MasterError {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        run(cfg, listener, CancellationToken::new()),
    );
    r.await
        .expect("startup error is prompt")
        .expect_err("startup must fail")
}

pub fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> ErrorCode {
    ErrorCode::of_status(&r.expect_err("expected an error status"))
}

/// Copies a (live) data dir: every acknowledged op is fsynced, so this is a crash image.
pub fn crash_copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dst: PathBuf = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            crash_copy(&entry.path(), &dst);
        } else {
            std::fs::copy(entry.path(), dst).unwrap();
        }
    }
}

pub async fn create(c: &mut MasterClient<Channel>, path: &str) -> Result<FileAttr, tonic::Status> {
    let r = c
        .create(CreateRequest {
            path: path.into(),
            mode: 0o644,
            ..Default::default()
        })
        .await?;
    Ok(r.into_inner().attr.unwrap())
}

pub async fn mkdir(
    c: &mut MasterClient<Channel>,
    path: &str,
    parents: bool,
) -> Result<(), tonic::Status> {
    c.mkdir(MkdirRequest {
        path: path.into(),
        mode: 0o755,
        parents,
        ..Default::default()
    })
    .await
    .map(|_| ())
}

pub async fn exists(c: &mut MasterClient<Channel>, path: &str) -> bool {
    match c
        .stat(StatRequest {
            path: path.into(),
            caller: None,
        })
        .await
    {
        Ok(_) => true,
        Err(s) if ErrorCode::of_status(&s) == ErrorCode::NotFound => false,
        Err(s) => panic!("stat {path}: {s}"),
    }
}

/// A fake chunkserver data plane: answers every frame with `Msg::Ok` (a witness request
/// with a grant that echoes its mark); counts requests.
pub struct FakeChunkserver {
    pub addr: String,
    pub requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: JoinHandle<()>,
}

impl FakeChunkserver {
    pub async fn start() -> FakeChunkserver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let mut conn = DataConn::from_stream(stream, peer.to_string());
                    while let Ok(frame) = conn.recv_idle().await {
                        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let reply = match frame.msg {
                            Msg::Witness(w) => Msg::WitnessReply(grant(&w.op)),
                            _ => Msg::Ok,
                        };
                        if conn.send(&reply, &[]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        FakeChunkserver {
            addr,
            requests,
            task,
        }
    }

    /// Stops answering: the port closes.
    pub fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for FakeChunkserver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A witness grant that holds whatever mark the request carried.
fn grant(op: &rdfs_proto::dataplane::WitnessOp) -> rdfs_proto::dataplane::WitnessReply {
    use rdfs_proto::dataplane::{WitnessOp, WitnessReply};
    let (epoch, mark) = match op {
        WitnessOp::Renew { epoch, mark, .. } => (*epoch, mark.clone().unwrap_or_default()),
        WitnessOp::Promote { epoch, .. } | WitnessOp::Release { epoch, .. } => {
            (*epoch, Default::default())
        }
        WitnessOp::Query => (Default::default(), Default::default()),
    };
    WitnessReply {
        granted: true,
        epoch,
        promised: epoch,
        mark,
        ..WitnessReply::default()
    }
}

pub async fn register(
    c: &mut MasterClient<Channel>,
    addr: &str,
    node: &str,
    chunks: Vec<ChunkReport>,
) -> RegisterResponse {
    c.register(RegisterRequest {
        cluster_id: String::new(),
        data_addr: addr.into(),
        capacity: 1 << 40,
        used: 0,
        chunks,
        highest_epoch: 0,
        node_id: node.into(),
    })
    .await
    .unwrap()
    .into_inner()
}

pub async fn heartbeat(c: &mut MasterClient<Channel>, id: u64) -> HeartbeatResponse {
    c.heartbeat(HeartbeatRequest {
        chunkserver_id: id,
        capacity: 1 << 40,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

pub(crate) fn deletes(cmds: &[Command]) -> Vec<u64> {
    cmds.iter()
        .filter_map(|c| match &c.kind {
            Some(command::Kind::Delete(d)) => Some(d.chunk_id),
            _ => None,
        })
        .collect()
}

pub fn report(chunk_id: u64, version: u64) -> ChunkReport {
    ChunkReport {
        chunk_id,
        version,
        size: 0,
    }
}
