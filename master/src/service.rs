//! The tonic `Master` service: validates every request field, then calls into the state.
//! Namespace mutations go through [`Master::mutate`] (answer after fsync); reads take the
//! state lock briefly. Errors carry an `ErrorCode` and name the path or id.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rdfs_proto::ids::{ChunkId, ChunkVersion, ChunkserverId, InodeId};
use rdfs_proto::limits::{MAX_FILE_SIZE, MAX_LIST_ENTRIES, MAX_REPLICATION};
use rdfs_proto::pb::master_server::Master as MasterRpc;
use rdfs_proto::pb::*;
use rdfs_proto::{path, ErrorCode};
use tonic::{Request, Response, Status};

use crate::chunkservers::Adopt;
use crate::namespace::{Inode, NewNode, NodeKind, NsError, Op};
use crate::state::{Master, State};

/// The gRPC face of the master.
#[derive(Clone)]
pub struct MasterService {
    pub master: Arc<Master>,
}

pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// An error about a path: "PATH: cause (detail)".
fn ns_status(path: &str, e: NsError) -> Status {
    e.code
        .status(format!("{path}: {} ({})", e.code.describe(), e.detail))
}

/// Normalises a user path or fails with its code.
fn norm(p: &str) -> Result<String, Status> {
    path::normalize(p).map_err(|c| c.status(format!("{p:?}: {}", c.describe())))
}

pub(crate) fn attr(ino: &Inode, default_replication: u32) -> FileAttr {
    let (file_type, size, chunk_count, replication) = match &ino.kind {
        NodeKind::File { size, chunks } => {
            let r = if ino.replication == 0 {
                default_replication
            } else {
                ino.replication
            };
            (FileType::File, *size, chunks.len() as u64, r)
        }
        NodeKind::Dir { .. } => (FileType::Dir, 0, 0, 0),
    };
    FileAttr {
        inode: ino.id.0,
        file_type: file_type as i32,
        mode: ino.mode,
        uid: ino.uid,
        gid: ino.gid,
        size,
        mtime_ns: ino.mtime_ns,
        ctime_ns: ino.ctime_ns,
        atime_ns: ino.atime_ns,
        nlink: ino.nlink,
        replication,
        chunk_count,
    }
}

impl State {
    fn attr_of_path(&self, p: &str) -> Result<FileAttr, Status> {
        let id = self.ns.resolve(p).map_err(|e| ns_status(p, e))?;
        let ino = self
            .ns
            .inode(id)
            .ok_or_else(|| ErrorCode::Internal.status(format!("{p}: dangling inode {id}")))?;
        Ok(attr(ino, self.default_replication))
    }

    fn attr_of_inode(&self, id: InodeId) -> Result<FileAttr, Status> {
        let ino = self
            .ns
            .inode(id)
            .ok_or_else(|| ErrorCode::NotFound.status(format!("inode {id}: not found")))?;
        Ok(attr(ino, self.default_replication))
    }

    /// Data-plane addresses of the live current replicas (version rule; bad ones excluded).
    pub fn replica_addrs(&self, chunk: ChunkId, v: ChunkVersion) -> Vec<String> {
        self.cmap
            .current_replicas(chunk, v)
            .into_iter()
            .filter_map(|s| self.cmap.addr(s).map(str::to_string))
            .collect()
    }
}

fn caller(c: &Option<Caller>) -> (u32, u32) {
    c.as_ref().map(|c| (c.uid, c.gid)).unwrap_or((0, 0))
}

impl Master {
    pub async fn mkdir(&self, r: MkdirRequest) -> Result<MkdirResponse, Status> {
        let p = norm(&r.path)?;
        let (uid, gid) = caller(&r.caller);
        let node = NewNode {
            mode: r.mode,
            uid,
            gid,
            replication: 0,
            time_ns: now_ns(),
        };
        let attr = self
            .mutate_ops(
                |st| {
                    st.ns
                        .plan_mkdir(&p, &node, r.parents)
                        .map_err(|e| ns_status(&p, e))
                },
                |st| st.attr_of_path(&p),
            )
            .await??;
        Ok(MkdirResponse { attr: Some(attr) })
    }

    pub async fn create(&self, r: CreateRequest) -> Result<CreateResponse, Status> {
        let p = norm(&r.path)?;
        if r.replication > MAX_REPLICATION {
            return Err(ErrorCode::InvalidArgument.status(format!(
                "{p}: replication {} above the maximum {MAX_REPLICATION}",
                r.replication
            )));
        }
        let (uid, gid) = caller(&r.caller);
        let replication = if r.replication == 0 {
            self.config.replication
        } else {
            r.replication
        };
        let node = NewNode {
            mode: r.mode,
            uid,
            gid,
            replication,
            time_ns: now_ns(),
        };
        let attr = self
            .mutate_ops(
                |st| {
                    let op = st
                        .ns
                        .plan_create(&p, &node, r.overwrite)
                        .map_err(|e| ns_status(&p, e))?;
                    Ok(vec![op])
                },
                |st| st.attr_of_path(&p),
            )
            .await??;
        Ok(CreateResponse { attr: Some(attr) })
    }

    pub async fn delete(&self, r: DeleteRequest) -> Result<DeleteResponse, Status> {
        let p = norm(&r.path)?;
        let t = now_ns();
        self.mutate_ops(
            |st| {
                Ok(vec![st
                    .ns
                    .plan_delete(&p, r.recursive, t)
                    .map_err(|e| ns_status(&p, e))?])
            },
            |_| (),
        )
        .await?;
        Ok(DeleteResponse {})
    }

    pub async fn rename(&self, r: RenameRequest) -> Result<RenameResponse, Status> {
        let src = norm(&r.src)?;
        let dst = norm(&r.dst)?;
        let t = now_ns();
        self.mutate_ops(
            |st| {
                let op = st
                    .ns
                    .plan_rename(&src, &dst, r.no_replace, t)
                    .map_err(|e| ns_status(&format!("{src} -> {dst}"), e))?;
                Ok(op.into_iter().collect())
            },
            |_| (),
        )
        .await?;
        Ok(RenameResponse {})
    }

    pub async fn commit_write(&self, r: CommitWriteRequest) -> Result<CommitWriteResponse, Status> {
        let inode = InodeId(r.inode);
        if r.end_offset > MAX_FILE_SIZE {
            return Err(ErrorCode::InvalidArgument.status(format!(
                "inode {inode}: end offset {} beyond the largest file size",
                r.end_offset
            )));
        }
        let mtime_ns = if r.mtime_ns == 0 {
            now_ns()
        } else {
            r.mtime_ns
        };
        let attr = self
            .mutate_ops(
                |st| {
                    st.ns.file(inode).map_err(|e| {
                        e.code
                            .status(format!("inode {inode}: {}", e.code.describe()))
                    })?;
                    Ok(vec![Op::CommitWrite {
                        inode,
                        end: r.end_offset,
                        mtime_ns,
                    }])
                },
                |st| st.attr_of_inode(inode),
            )
            .await??;
        Ok(CommitWriteResponse { attr: Some(attr) })
    }

    pub fn stat(&self, r: StatRequest) -> Result<StatResponse, Status> {
        let p = norm(&r.path)?;
        let attr = self.state.lock().attr_of_path(&p)?;
        Ok(StatResponse { attr: Some(attr) })
    }

    pub fn list(&self, r: ListRequest) -> Result<ListResponse, Status> {
        let p = norm(&r.path)?;
        let limit = if r.limit == 0 {
            MAX_LIST_ENTRIES
        } else {
            r.limit.min(MAX_LIST_ENTRIES)
        };
        let st = self.state.lock();
        let id = st.ns.resolve(&p).map_err(|e| ns_status(&p, e))?;
        let (page, more) = st
            .ns
            .list(id, &r.start_after, limit as usize)
            .map_err(|e| ns_status(&p, e))?;
        let entries = page
            .into_iter()
            .map(|(name, ino)| DirEntry {
                name: name.to_string(),
                attr: Some(attr(ino, st.default_replication)),
            })
            .collect();
        Ok(ListResponse { entries, more })
    }

    pub fn get_chunks(&self, r: GetChunksRequest) -> Result<GetChunksResponse, Status> {
        let inode = InodeId(r.inode);
        let st = self.state.lock();
        let ino = st.ns.file(inode).map_err(|e| {
            e.code
                .status(format!("inode {inode}: {}", e.code.describe()))
        })?;
        let NodeKind::File { size, chunks } = &ino.kind else {
            return Err(ErrorCode::IsADirectory.status(format!("inode {inode}")));
        };
        let last = if r.count == 0 {
            u64::MAX
        } else {
            r.first_index.saturating_add(r.count - 1)
        };
        let chunks = chunks
            .range(r.first_index..=last)
            .filter_map(|(index, id)| {
                let v = st.ns.chunk(*id)?.version;
                Some(ChunkLocation {
                    index: *index,
                    chunk_id: id.0,
                    version: v.0,
                    replicas: st.replica_addrs(*id, v),
                })
            })
            .collect();
        Ok(GetChunksResponse {
            chunks,
            file_size: *size,
            chunk_size: self.identity.chunk_size,
        })
    }

    pub fn report_bad_replica(
        &self,
        r: ReportBadReplicaRequest,
    ) -> Result<ReportBadReplicaResponse, Status> {
        let chunk = ChunkId(r.chunk_id);
        let mut st = self.state.lock();
        let Some(server) = st.cmap.live_by_addr(&r.replica) else {
            return Err(ErrorCode::NotFound.status(format!(
                "chunk {chunk}: no live chunkserver at {:?}",
                r.replica
            )));
        };
        let Some((_, v)) = st.cmap.replicas(chunk).find(|(s, _)| *s == server) else {
            // Already dropped (reported before, or never known): nothing to do.
            return Ok(ReportBadReplicaResponse {});
        };
        tracing::warn!(chunk_id = %chunk, replica = %r.replica, reason = %r.reason, "client reported a bad replica");
        st.report_bad(server, chunk, v);
        Ok(ReportBadReplicaResponse {})
    }

    pub fn cluster_status(&self) -> ClusterStatusResponse {
        let st = self.state.lock();
        let now = Instant::now();
        let (files, dirs) = st.ns.counts();
        let under = st
            .ns
            .chunks()
            .filter(|(c, _)| {
                let (l, e) = st.health(**c);
                l < e
            })
            .count() as u64;
        let chunkservers: Vec<ChunkserverStatus> = st
            .cmap
            .servers()
            .map(|s| ChunkserverStatus {
                id: s.id.0,
                addr: s.addr.clone(),
                state: if s.live { "live" } else { "dead" }.to_string(),
                capacity: s.capacity,
                used: s.used,
                chunks: s.chunk_count,
                last_heartbeat_ms: now.saturating_duration_since(s.last_heartbeat).as_millis()
                    as u64,
                no_space: s.no_space,
            })
            .collect();
        let live = st.cmap.live_servers();
        let (capacity, used) = live.fold((0u64, 0u64), |(c, u), s| {
            (c.saturating_add(s.capacity), u.saturating_add(s.used))
        });
        ClusterStatusResponse {
            cluster_id: self.identity.cluster_id.clone(),
            chunk_size: self.identity.chunk_size,
            replication: self.config.replication,
            capacity,
            used,
            files,
            dirs,
            chunks: st.ns.chunk_count() as u64,
            epoch: st.ns.epoch().0,
            safe_mode: st.safe_mode,
            chunkservers,
            under_replicated: under,
            last_op_seq: st.last_seq,
        }
    }

    pub async fn register(&self, r: RegisterRequest) -> Result<RegisterResponse, Status> {
        if !r.cluster_id.is_empty() && r.cluster_id != self.identity.cluster_id {
            return Err(ErrorCode::ClusterMismatch.status(format!(
                "chunkserver {} belongs to cluster {}, this master is cluster {}",
                r.data_addr, r.cluster_id, self.identity.cluster_id
            )));
        }
        if r.data_addr.is_empty() {
            return Err(ErrorCode::InvalidArgument.status("register: empty data address"));
        }
        let (id, adopt, epoch) = {
            let mut st = self.state.lock();
            let (id, adopt) = st.register_server(&r, Instant::now());
            (id, adopt, st.ns.epoch().0)
        };
        self.adopt_versions(adopt).await?;
        let commands = self.state.lock().cmap.drain(id);
        Ok(RegisterResponse {
            cluster_id: self.identity.cluster_id.clone(),
            chunkserver_id: id.0,
            epoch,
            heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u64,
            chunk_size: self.identity.chunk_size,
            commands,
        })
    }

    pub async fn heartbeat(&self, r: HeartbeatRequest) -> Result<HeartbeatResponse, Status> {
        let (out, epoch) = {
            let mut st = self.state.lock();
            (st.heartbeat(&r, Instant::now()), st.ns.epoch().0)
        };
        let Some((commands, adopt)) = out else {
            return Ok(HeartbeatResponse {
                commands: vec![],
                reregister: true,
                epoch,
            });
        };
        self.adopt_versions(adopt).await?;
        Ok(HeartbeatResponse {
            commands,
            reregister: false,
            epoch,
        })
    }

    pub async fn block_report(&self, r: BlockReportRequest) -> Result<BlockReportResponse, Status> {
        let id = ChunkserverId(r.chunkserver_id);
        let out = self.state.lock().block_report(id, &r.chunks);
        let Some((commands, adopt)) = out else {
            return Err(ErrorCode::NotFound.status(format!(
                "chunkserver {id} is not registered; register again"
            )));
        };
        self.adopt_versions(adopt).await?;
        Ok(BlockReportResponse { commands })
    }

    /// Logs versions reported newer than the master's (GFS: the master adopts them).
    async fn adopt_versions(&self, adopt: Adopt) -> Result<(), Status> {
        if adopt.is_empty() {
            return Ok(());
        }
        self.mutate_ops(
            |st| {
                Ok(adopt
                    .iter()
                    .filter(|(c, v)| st.ns.chunk(*c).is_some_and(|m| m.version < *v))
                    .map(|(c, v)| {
                        tracing::warn!(chunk_id = %c, version = %v, "adopting a newer reported version");
                        Op::SetChunkVersion { chunk_id: *c, version: *v }
                    })
                    .collect())
            },
            |st| {
                for (c, v) in &adopt {
                    st.cmap.confirm(*c, *v);
                }
            },
        )
        .await
    }
}

#[tonic::async_trait]
impl MasterRpc for MasterService {
    #[tracing::instrument(skip_all, fields(path = %r.get_ref().path))]
    async fn stat(&self, r: Request<StatRequest>) -> Result<Response<StatResponse>, Status> {
        self.master.stat(r.into_inner()).map(Response::new)
    }
    #[tracing::instrument(skip_all, fields(path = %r.get_ref().path))]
    async fn list(&self, r: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        self.master.list(r.into_inner()).map(Response::new)
    }
    #[tracing::instrument(skip_all, fields(path = %r.get_ref().path))]
    async fn mkdir(&self, r: Request<MkdirRequest>) -> Result<Response<MkdirResponse>, Status> {
        self.master.mkdir(r.into_inner()).await.map(Response::new)
    }
    #[tracing::instrument(skip_all, fields(path = %r.get_ref().path))]
    async fn create(&self, r: Request<CreateRequest>) -> Result<Response<CreateResponse>, Status> {
        self.master.create(r.into_inner()).await.map(Response::new)
    }
    #[tracing::instrument(skip_all, fields(path = %r.get_ref().path))]
    async fn delete(&self, r: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        self.master.delete(r.into_inner()).await.map(Response::new)
    }
    #[tracing::instrument(skip_all, fields(src = %r.get_ref().src, dst = %r.get_ref().dst))]
    async fn rename(&self, r: Request<RenameRequest>) -> Result<Response<RenameResponse>, Status> {
        self.master.rename(r.into_inner()).await.map(Response::new)
    }
    #[tracing::instrument(skip_all, fields(inode = r.get_ref().inode))]
    async fn get_chunks(
        &self,
        r: Request<GetChunksRequest>,
    ) -> Result<Response<GetChunksResponse>, Status> {
        self.master.get_chunks(r.into_inner()).map(Response::new)
    }
    async fn prepare_write(
        &self,
        r: Request<PrepareWriteRequest>,
    ) -> Result<Response<PrepareWriteResponse>, Status> {
        let r = r.into_inner();
        let resp = self
            .master
            .prepare_write(InodeId(r.inode), r.chunk_index, r.failed_replicas)
            .await?;
        Ok(Response::new(resp))
    }
    #[tracing::instrument(skip_all, fields(inode = r.get_ref().inode, end = r.get_ref().end_offset))]
    async fn commit_write(
        &self,
        r: Request<CommitWriteRequest>,
    ) -> Result<Response<CommitWriteResponse>, Status> {
        self.master
            .commit_write(r.into_inner())
            .await
            .map(Response::new)
    }
    #[tracing::instrument(skip_all, fields(chunk_id = r.get_ref().chunk_id, replica = %r.get_ref().replica))]
    async fn report_bad_replica(
        &self,
        r: Request<ReportBadReplicaRequest>,
    ) -> Result<Response<ReportBadReplicaResponse>, Status> {
        self.master
            .report_bad_replica(r.into_inner())
            .map(Response::new)
    }
    async fn cluster_status(
        &self,
        _r: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        Ok(Response::new(self.master.cluster_status()))
    }
    #[tracing::instrument(skip_all, fields(path = %r.get_ref().path))]
    async fn fsck(&self, r: Request<FsckRequest>) -> Result<Response<FsckResponse>, Status> {
        self.master.fsck(r.into_inner()).map(Response::new)
    }
    #[tracing::instrument(skip_all, fields(addr = %r.get_ref().data_addr))]
    async fn register(
        &self,
        r: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        self.master
            .register(r.into_inner())
            .await
            .map(Response::new)
    }
    #[tracing::instrument(level = "debug", skip_all, fields(server = r.get_ref().chunkserver_id))]
    async fn heartbeat(
        &self,
        r: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.master
            .heartbeat(r.into_inner())
            .await
            .map(Response::new)
    }
    #[tracing::instrument(skip_all, fields(server = r.get_ref().chunkserver_id))]
    async fn block_report(
        &self,
        r: Request<BlockReportRequest>,
    ) -> Result<Response<BlockReportResponse>, Status> {
        self.master
            .block_report(r.into_inner())
            .await
            .map(Response::new)
    }
}
