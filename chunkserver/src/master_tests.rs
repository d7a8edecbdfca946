//! Tests of `run` and the master loop against a fake master (tonic server on 127.0.0.1:0).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdfs_proto::ids::{ChunkId, ChunkVersion, LeaseSerial};
use rdfs_proto::pb::{
    self,
    master_server::{Master, MasterServer},
};
use rdfs_proto::ErrorCode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::store::ChunkStore;
use crate::{run, ChunkserverConfig, ChunkserverError};

#[derive(Default)]
struct Seen {
    registers: Vec<pb::RegisterRequest>,
    heartbeats: Vec<pb::HeartbeatRequest>,
    block_reports: usize,
}

struct FakeMaster {
    cluster_id: String,
    /// Answer a foreign cluster id with a ClusterMismatch status (else: with our id).
    refuse_foreign: bool,
    /// Answer as a standby master (its commands must not be obeyed).
    standby: bool,
    seen: Arc<Mutex<Seen>>,
    commands: Arc<Mutex<Vec<pb::Command>>>,
}

type Rpc<T> = Result<Response<T>, Status>;

fn unimplemented<T>() -> Rpc<T> {
    Err(Status::unimplemented("fake master"))
}

#[tonic::async_trait]
impl Master for FakeMaster {
    async fn safe_mode(&self, _: Request<pb::SafeModeRequest>) -> Rpc<pb::SafeModeResponse> {
        unimplemented()
    }
    async fn decommission(
        &self,
        _: Request<pb::DecommissionRequest>,
    ) -> Rpc<pb::DecommissionResponse> {
        unimplemented()
    }
    async fn balance(&self, _: Request<pb::BalanceRequest>) -> Rpc<pb::BalanceResponse> {
        unimplemented()
    }
    async fn set_replication(
        &self,
        _: Request<pb::SetReplicationRequest>,
    ) -> Rpc<pb::SetReplicationResponse> {
        unimplemented()
    }
    async fn lookup(&self, _: Request<pb::LookupRequest>) -> Rpc<pb::LookupResponse> {
        unimplemented()
    }
    async fn get_attr(&self, _: Request<pb::GetAttrRequest>) -> Rpc<pb::GetAttrResponse> {
        unimplemented()
    }
    async fn read_dir(&self, _: Request<pb::ReadDirRequest>) -> Rpc<pb::ReadDirResponse> {
        unimplemented()
    }
    async fn create_at(&self, _: Request<pb::CreateAtRequest>) -> Rpc<pb::CreateAtResponse> {
        unimplemented()
    }
    async fn unlink_at(&self, _: Request<pb::UnlinkAtRequest>) -> Rpc<pb::UnlinkAtResponse> {
        unimplemented()
    }
    async fn rename_at(&self, _: Request<pb::RenameAtRequest>) -> Rpc<pb::RenameAtResponse> {
        unimplemented()
    }
    async fn link_at(&self, _: Request<pb::LinkAtRequest>) -> Rpc<pb::LinkAtResponse> {
        unimplemented()
    }
    async fn read_link(&self, _: Request<pb::ReadLinkRequest>) -> Rpc<pb::ReadLinkResponse> {
        unimplemented()
    }
    async fn set_attr(&self, _: Request<pb::SetAttrRequest>) -> Rpc<pb::SetAttrResponse> {
        unimplemented()
    }
    async fn set_xattr(&self, _: Request<pb::SetXattrRequest>) -> Rpc<pb::SetXattrResponse> {
        unimplemented()
    }
    async fn get_xattr(&self, _: Request<pb::GetXattrRequest>) -> Rpc<pb::GetXattrResponse> {
        unimplemented()
    }
    async fn list_xattr(&self, _: Request<pb::ListXattrRequest>) -> Rpc<pb::ListXattrResponse> {
        unimplemented()
    }
    async fn remove_xattr(
        &self,
        _: Request<pb::RemoveXattrRequest>,
    ) -> Rpc<pb::RemoveXattrResponse> {
        unimplemented()
    }
    async fn open_file(&self, _: Request<pb::OpenFileRequest>) -> Rpc<pb::OpenFileResponse> {
        unimplemented()
    }
    async fn close_file(&self, _: Request<pb::CloseFileRequest>) -> Rpc<pb::CloseFileResponse> {
        unimplemented()
    }
    async fn renew_session(
        &self,
        _: Request<pb::RenewSessionRequest>,
    ) -> Rpc<pb::RenewSessionResponse> {
        unimplemented()
    }
    async fn stat_fs(&self, _: Request<pb::StatFsRequest>) -> Rpc<pb::StatFsResponse> {
        unimplemented()
    }
    async fn stat(&self, _: Request<pb::StatRequest>) -> Rpc<pb::StatResponse> {
        unimplemented()
    }
    async fn list(&self, _: Request<pb::ListRequest>) -> Rpc<pb::ListResponse> {
        unimplemented()
    }
    async fn mkdir(&self, _: Request<pb::MkdirRequest>) -> Rpc<pb::MkdirResponse> {
        unimplemented()
    }
    async fn create(&self, _: Request<pb::CreateRequest>) -> Rpc<pb::CreateResponse> {
        unimplemented()
    }
    async fn delete(&self, _: Request<pb::DeleteRequest>) -> Rpc<pb::DeleteResponse> {
        unimplemented()
    }
    async fn rename(&self, _: Request<pb::RenameRequest>) -> Rpc<pb::RenameResponse> {
        unimplemented()
    }
    async fn get_chunks(&self, _: Request<pb::GetChunksRequest>) -> Rpc<pb::GetChunksResponse> {
        unimplemented()
    }
    async fn prepare_write(
        &self,
        _: Request<pb::PrepareWriteRequest>,
    ) -> Rpc<pb::PrepareWriteResponse> {
        unimplemented()
    }
    async fn prepare_append(
        &self,
        _: Request<pb::PrepareAppendRequest>,
    ) -> Rpc<pb::PrepareAppendResponse> {
        unimplemented()
    }
    async fn snapshot(&self, _: Request<pb::SnapshotRequest>) -> Rpc<pb::SnapshotResponse> {
        unimplemented()
    }
    async fn list_trash(&self, _: Request<pb::ListTrashRequest>) -> Rpc<pb::ListTrashResponse> {
        unimplemented()
    }
    async fn restore_trash(
        &self,
        _: Request<pb::RestoreTrashRequest>,
    ) -> Rpc<pb::RestoreTrashResponse> {
        unimplemented()
    }
    async fn empty_trash(&self, _: Request<pb::EmptyTrashRequest>) -> Rpc<pb::EmptyTrashResponse> {
        unimplemented()
    }
    async fn commit_write(
        &self,
        _: Request<pb::CommitWriteRequest>,
    ) -> Rpc<pb::CommitWriteResponse> {
        unimplemented()
    }
    async fn report_bad_replica(
        &self,
        _: Request<pb::ReportBadReplicaRequest>,
    ) -> Rpc<pb::ReportBadReplicaResponse> {
        unimplemented()
    }
    async fn cluster_status(
        &self,
        _: Request<pb::ClusterStatusRequest>,
    ) -> Rpc<pb::ClusterStatusResponse> {
        unimplemented()
    }
    async fn fsck(&self, _: Request<pb::FsckRequest>) -> Rpc<pb::FsckResponse> {
        unimplemented()
    }

    async fn register(&self, req: Request<pb::RegisterRequest>) -> Rpc<pb::RegisterResponse> {
        let req = req.into_inner();
        let foreign = !req.cluster_id.is_empty() && req.cluster_id != self.cluster_id;
        self.seen.lock().registers.push(req);
        if foreign && self.refuse_foreign {
            return Err(ErrorCode::ClusterMismatch.status("another cluster"));
        }
        Ok(Response::new(pb::RegisterResponse {
            cluster_id: self.cluster_id.clone(),
            chunkserver_id: 1,
            epoch: 2,
            heartbeat_interval_ms: 50,
            chunk_size: 1 << 20,
            commands: vec![],
            standby: self.standby,
        }))
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> Rpc<pb::HeartbeatResponse> {
        self.seen.lock().heartbeats.push(req.into_inner());
        let commands = std::mem::take(&mut *self.commands.lock());
        Ok(Response::new(pb::HeartbeatResponse {
            commands,
            reregister: false,
            epoch: 2,
            standby: self.standby,
        }))
    }

    async fn block_report(
        &self,
        _: Request<pb::BlockReportRequest>,
    ) -> Rpc<pb::BlockReportResponse> {
        self.seen.lock().block_reports += 1;
        Ok(Response::new(pb::BlockReportResponse {
            commands: vec![],
            standby: self.standby,
        }))
    }
}

struct Fake {
    addr: String,
    seen: Arc<Mutex<Seen>>,
    commands: Arc<Mutex<Vec<pb::Command>>>,
    stop: CancellationToken,
}

async fn fake_master(cluster_id: &str, refuse_foreign: bool) -> Fake {
    fake_master_as(cluster_id, refuse_foreign, false).await
}

async fn fake_master_as(cluster_id: &str, refuse_foreign: bool, standby: bool) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let commands = Arc::new(Mutex::new(Vec::new()));
    let svc = FakeMaster {
        cluster_id: cluster_id.into(),
        refuse_foreign,
        standby,
        seen: seen.clone(),
        commands: commands.clone(),
    };
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(MasterServer::new(svc))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                s.cancelled_owned(),
            )
            .await
    });
    Fake {
        addr,
        seen,
        commands,
        stop,
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

fn seed_chunk(dir: &std::path::Path, id: u64, bytes: &[u8]) {
    let (store, _) = ChunkStore::open(dir, None).unwrap();
    store
        .create(ChunkId(id), ChunkVersion(3), LeaseSerial(0))
        .unwrap();
    store.write(ChunkId(id), 0, bytes).unwrap();
    store.commit(ChunkId(id), true).unwrap();
}

async fn start_run(
    dir: &std::path::Path,
    masters: Vec<String>,
) -> (
    String,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), ChunkserverError>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut cfg = ChunkserverConfig::new(dir.to_path_buf(), masters);
    cfg.block_report_interval = Duration::from_millis(100);
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(cfg, listener, stop.clone()));
    (addr, stop, task)
}

#[tokio::test]
async fn registers_heartbeats_reports_and_deletes() {
    let tmp = tempfile::tempdir().unwrap();
    seed_chunk(tmp.path(), 0x10, b"hello");
    seed_chunk(tmp.path(), 0x11, b"world!");
    let fake = fake_master("cluster-1", true);
    let fake = fake.await;
    // The first address answers nothing: the loop moves on to the next.
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let (data_addr, stop, task) = start_run(tmp.path(), vec![dead, fake.addr.clone()]).await;
    wait_for("registration", || !fake.seen.lock().registers.is_empty()).await;
    {
        let seen = fake.seen.lock();
        let reg = &seen.registers[0];
        assert_eq!(reg.cluster_id, "");
        assert_eq!(reg.data_addr, data_addr);
        assert_eq!(reg.used, 11);
        let chunks: Vec<_> = reg
            .chunks
            .iter()
            .map(|c| (c.chunk_id, c.version, c.size))
            .collect();
        assert_eq!(chunks, vec![(0x10, 3, 5), (0x11, 3, 6)]);
        assert_eq!(reg.node_id.len(), 32);
    }
    fake.commands.lock().push(pb::Command {
        kind: Some(pb::command::Kind::Delete(pb::DeleteChunkCommand {
            chunk_id: 0x10,
            version: 3,
        })),
    });
    wait_for("removal report", || {
        fake.seen
            .lock()
            .heartbeats
            .iter()
            .any(|h| h.removed == vec![0x10])
    })
    .await;
    assert!(!tmp.path().join("chunks/10/0000000000000010.data").exists());
    assert!(tmp.path().join("chunks/11/0000000000000011.data").exists());
    wait_for("block report", || fake.seen.lock().block_reports > 0).await;
    let last = fake.seen.lock().heartbeats.last().cloned().unwrap();
    assert_eq!((last.chunk_count, last.used), (1, 6));
    // An idle client connection must not keep the directory locked after shutdown.
    let _idle = rdfs_proto::dataplane::DataConn::connect(&data_addr)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let (_, stop, task) = start_run(tmp.path(), vec![fake.addr.clone()]).await;
    wait_for("second registration", || {
        fake.seen.lock().registers.len() >= 2
    })
    .await;
    assert_eq!(
        fake.seen.lock().registers.last().unwrap().cluster_id,
        "cluster-1"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    fake.stop.cancel();
}

#[tokio::test]
async fn every_master_gets_reports_but_only_the_active_one_is_obeyed() {
    let tmp = tempfile::tempdir().unwrap();
    seed_chunk(tmp.path(), 0x20, b"kept");
    seed_chunk(tmp.path(), 0x21, b"gone");
    let primary = fake_master_as("cluster-1", true, false).await;
    let standby = fake_master_as("cluster-1", true, true).await;
    let (_, stop, task) =
        start_run(tmp.path(), vec![standby.addr.clone(), primary.addr.clone()]).await;
    wait_for("both registrations", || {
        !primary.seen.lock().registers.is_empty() && !standby.seen.lock().registers.is_empty()
    })
    .await;
    let delete = |id| pb::Command {
        kind: Some(pb::command::Kind::Delete(pb::DeleteChunkCommand {
            chunk_id: id,
            version: 3,
        })),
    };
    // The standby's command is ignored; the primary's is carried out and both hear of it.
    standby.commands.lock().push(delete(0x20));
    wait_for("the standby's command delivered", || {
        standby.commands.lock().is_empty() && standby.seen.lock().heartbeats.len() >= 2
    })
    .await;
    primary.commands.lock().push(delete(0x21));
    for (name, m) in [("primary", &primary), ("standby", &standby)] {
        wait_for(&format!("removal reported to the {name}"), || {
            m.seen
                .lock()
                .heartbeats
                .iter()
                .any(|h| h.removed == vec![0x21])
        })
        .await;
    }
    assert!(tmp.path().join("chunks/20/0000000000000020.data").exists());
    assert!(!tmp.path().join("chunks/21/0000000000000021.data").exists());
    stop.cancel();
    task.await.unwrap().unwrap();
    primary.stop.cancel();
    standby.stop.cancel();
}

#[tokio::test]
async fn foreign_cluster_is_refused_and_nothing_is_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    seed_chunk(tmp.path(), 0x20, b"keep me");
    let home = fake_master("cluster-a", true).await;
    let (_, stop, task) = start_run(tmp.path(), vec![home.addr.clone()]).await;
    wait_for("registration", || !home.seen.lock().registers.is_empty()).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    for refuse in [true, false] {
        let foreign = fake_master("cluster-b", refuse).await;
        let (_, _stop, task) = start_run(tmp.path(), vec![foreign.addr.clone()]).await;
        let res = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        match res {
            Err(ChunkserverError::ClusterMismatch { ours, theirs, .. }) => {
                assert_eq!(ours, "cluster-a");
                let want = if refuse {
                    "another cluster"
                } else {
                    "cluster-b"
                };
                assert_eq!(theirs, want);
            }
            other => panic!("expected a cluster mismatch, got {other:?}"),
        }
        assert_eq!(foreign.seen.lock().registers[0].cluster_id, "cluster-a");
        assert!(tmp.path().join("chunks/20/0000000000000020.data").exists());
        foreign.stop.cancel();
    }
    home.stop.cancel();
}
