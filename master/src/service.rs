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
use crate::inode_ops::cred_of;
use crate::namespace::perm::{R, W};
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
pub(crate) fn ns_status(path: &str, e: NsError) -> Status {
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
        NodeKind::Symlink { target } => (FileType::Symlink, target.len() as u64, 0, 0),
        NodeKind::Fifo => (FileType::Fifo, 0, 0, 0),
    };
    let symlink_target = match &ino.kind {
        NodeKind::Symlink { target } => target.clone(),
        _ => String::new(),
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
        symlink_target,
        rdev: 0,
    }
}

impl State {
    pub(crate) fn attr_of_path(&self, p: &str) -> Result<FileAttr, Status> {
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

    /// Data-plane addresses of the live current replicas (version rule; bad ones excluded),
    /// replicas on draining servers last so readers prefer the others.
    pub fn replica_addrs(&self, chunk: ChunkId, v: ChunkVersion) -> Vec<String> {
        let mut servers: Vec<_> = self
            .cmap
            .current_replicas(chunk, v)
            .into_iter()
            .filter_map(|s| self.cmap.server(s))
            .collect();
        servers.sort_by_key(|s| !s.counts());
        servers.into_iter().map(|s| s.addr.clone()).collect()
    }
}

fn caller(c: &Option<Caller>) -> (u32, u32) {
    c.as_ref().map(|c| (c.uid, c.gid)).unwrap_or((0, 0))
}

impl Master {
    pub async fn mkdir(&self, r: MkdirRequest) -> Result<MkdirResponse, Status> {
        let p = norm(&r.path)?;
        let (uid, gid) = caller(&r.caller);
        let cred = cred_of(&r.caller);
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
                        .check_path_create(&p, &cred)
                        .map_err(|e| ns_status(&p, e))?;
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
        let cred = cred_of(&r.caller);
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
                    let (parent, name) = st
                        .ns
                        .resolve_parent_as(&p, &cred)
                        .map_err(|e| ns_status(&p, e))?;
                    match st.ns.child(parent, name) {
                        Some(existing) if r.overwrite => st
                            .ns
                            .check_data_access(existing, &cred, W)
                            .map_err(|e| ns_status(&p, e))?,
                        Some(_) => {}
                        None => st
                            .ns
                            .check_dir_write(parent, &cred)
                            .map_err(|e| ns_status(&p, e))?,
                    }
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
        let cred = cred_of(&r.caller);
        let t = now_ns();
        self.mutate_ops(
            |st| {
                let err = |e| ns_status(&p, e);
                let (parent, name) = st.ns.resolve_parent_as(&p, &cred).map_err(err)?;
                let id = st
                    .ns
                    .child(parent, name)
                    .ok_or_else(|| err(NsError::new(ErrorCode::NotFound, "delete")))?;
                if r.to_trash {
                    if let Some(planned) = self.plan_delete_to_trash(st, &p, r.recursive, &cred, t)
                    {
                        return planned;
                    }
                }
                let is_dir = st.ns.inode(id).is_some_and(Inode::is_dir);
                if !is_dir {
                    // One link of a file: open handles keep it as an orphan.
                    let (op, orphan) = st
                        .ns
                        .plan_unlink_at(&cred, parent, name, false, t)
                        .map_err(err)?;
                    return Ok(st.with_orphan(op, orphan));
                }
                st.ns.check_dir_write(parent, &cred).map_err(err)?;
                if let (Some(d), Some(v)) = (st.ns.inode(parent), st.ns.inode(id)) {
                    cred.check_sticky(d, v).map_err(err)?;
                }
                if r.recursive {
                    st.ns.check_subtree_delete(id, &cred).map_err(err)?;
                }
                Ok(vec![st.ns.plan_delete(&p, r.recursive, t).map_err(err)?])
            },
            |_| (),
        )
        .await?;
        Ok(DeleteResponse {})
    }

    pub async fn rename(&self, r: RenameRequest) -> Result<RenameResponse, Status> {
        let src = norm(&r.src)?;
        let dst = norm(&r.dst)?;
        let cred = cred_of(&r.caller);
        let t = now_ns();
        self.mutate_ops(
            |st| {
                let err = |e| ns_status(&format!("{src} -> {dst}"), e);
                let (sp, sn) = st.ns.resolve_parent_as(&src, &cred).map_err(err)?;
                let (dp, dn) = st.ns.resolve_parent_as(&dst, &cred).map_err(err)?;
                let planned = st
                    .ns
                    .plan_rename_at(&cred, sp, sn, dp, dn, r.no_replace, t)
                    .map_err(err)?;
                Ok(match planned {
                    None => vec![],
                    Some((op, orphan)) => st.with_orphan(op, orphan),
                })
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
        let cred = cred_of(&r.caller);
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
                    st.ns
                        .check_data_access(inode, &cred, W)
                        .map_err(|e| ns_status(&format!("inode {inode}"), e))?;
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
        let cred = cred_of(&r.caller);
        let st = self.state.lock();
        st.ns.resolve_as(&p, &cred).map_err(|e| ns_status(&p, e))?;
        let attr = st.attr_of_path(&p)?;
        Ok(StatResponse { attr: Some(attr) })
    }

    pub fn list(&self, r: ListRequest) -> Result<ListResponse, Status> {
        let p = norm(&r.path)?;
        let limit = if r.limit == 0 {
            MAX_LIST_ENTRIES
        } else {
            r.limit.min(MAX_LIST_ENTRIES)
        };
        let cred = cred_of(&r.caller);
        let st = self.state.lock();
        let id = st.ns.resolve_as(&p, &cred).map_err(|e| ns_status(&p, e))?;
        if let Some(ino) = st.ns.inode(id).filter(|i| i.is_dir()) {
            cred.check(ino, R, "read directory")
                .map_err(|e| ns_status(&p, e))?;
        }
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
        let cred = cred_of(&r.caller);
        let st = self.state.lock();
        st.metrics.count(crate::metrics::Rate::ChunkLookups, 1);
        let ino = st.ns.file(inode).map_err(|e| {
            e.code
                .status(format!("inode {inode}: {}", e.code.describe()))
        })?;
        st.ns
            .check_data_access(inode, &cred, R)
            .map_err(|e| ns_status(&format!("inode {inode}"), e))?;
        let NodeKind::File { size, chunks } = &ino.kind else {
            return Err(ErrorCode::IsADirectory.status(format!("inode {inode}")));
        };
        let last = if r.count == 0 {
            u64::MAX
        } else {
            r.first_index.saturating_add(r.count - 1)
        };
        let now = Instant::now();
        let chunks = chunks
            .range(r.first_index..=last)
            .filter_map(|(index, id)| {
                let v = st.ns.chunk(*id)?.version;
                let primary = st
                    .leases
                    .active(*id, now)
                    .and_then(|l| l.chain.first())
                    .and_then(|s| st.cmap.addr(*s))
                    .unwrap_or_default()
                    .to_string();
                Some(ChunkLocation {
                    index: *index,
                    chunk_id: id.0,
                    version: v.0,
                    replicas: st.replica_addrs(*id, v),
                    primary,
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

impl MasterService {
    /// Runs a mutation at most once per request id: a retry whose first answer was lost gets
    /// the cached answer instead of running again.
    async fn once<R, F>(&self, id: Option<RequestId>, run: F) -> Result<Response<R>, Status>
    where
        R: prost::Message + Default,
        F: std::future::Future<Output = Result<R, Status>>,
    {
        if let Some(answer) = self.master.retry.get::<R>(&id) {
            return Ok(Response::new(answer));
        }
        let answer = run.await?;
        self.master.retry.put(&id, &answer);
        Ok(Response::new(answer))
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
        let r = r.into_inner();
        let id = r.request_id.clone();
        self.once(id, self.master.mkdir(r)).await
    }
    #[tracing::instrument(skip_all, fields(path = %r.get_ref().path))]
    async fn create(&self, r: Request<CreateRequest>) -> Result<Response<CreateResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        self.once(id, self.master.create(r)).await
    }
    #[tracing::instrument(skip_all, fields(path = %r.get_ref().path))]
    async fn delete(&self, r: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        self.once(id, self.master.delete(r)).await
    }
    #[tracing::instrument(skip_all, fields(src = %r.get_ref().src, dst = %r.get_ref().dst))]
    async fn rename(&self, r: Request<RenameRequest>) -> Result<Response<RenameResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        self.once(id, self.master.rename(r)).await
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
        {
            let cred = cred_of(&r.caller);
            let st = self.master.state.lock();
            st.ns
                .check_data_access(InodeId(r.inode), &cred, W)
                .map_err(|e| ns_status(&format!("inode {}", r.inode), e))?;
        }
        let resp = self
            .master
            .prepare_write(InodeId(r.inode), r.chunk_index, r.failed_replicas)
            .await?;
        Ok(Response::new(resp))
    }
    async fn list_trash(
        &self,
        r: Request<ListTrashRequest>,
    ) -> Result<Response<ListTrashResponse>, Status> {
        self.master
            .list_trash(r.into_inner())
            .await
            .map(Response::new)
    }
    async fn restore_trash(
        &self,
        r: Request<RestoreTrashRequest>,
    ) -> Result<Response<RestoreTrashResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        self.once(id, self.master.restore_trash(r)).await
    }
    async fn empty_trash(
        &self,
        r: Request<EmptyTrashRequest>,
    ) -> Result<Response<EmptyTrashResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        self.once(id, self.master.empty_trash(r)).await
    }
    async fn snapshot(
        &self,
        r: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        self.once(id, self.master.snapshot(r)).await
    }
    async fn prepare_append(
        &self,
        r: Request<PrepareAppendRequest>,
    ) -> Result<Response<PrepareAppendResponse>, Status> {
        let r = r.into_inner();
        {
            let cred = cred_of(&r.caller);
            let st = self.master.state.lock();
            st.ns
                .check_data_access(InodeId(r.inode), &cred, W)
                .map_err(|e| ns_status(&format!("inode {}", r.inode), e))?;
        }
        let resp = self
            .master
            .prepare_append(
                InodeId(r.inode),
                r.after_index,
                r.retry_index,
                r.failed_replicas,
            )
            .await?;
        Ok(Response::new(resp))
    }
    #[tracing::instrument(skip_all, fields(inode = r.get_ref().inode, end = r.get_ref().end_offset))]
    async fn commit_write(
        &self,
        r: Request<CommitWriteRequest>,
    ) -> Result<Response<CommitWriteResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        self.once(id, self.master.commit_write(r)).await
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
    async fn lookup(&self, r: Request<LookupRequest>) -> Result<Response<LookupResponse>, Status> {
        self.master.lookup(r.into_inner()).await.map(Response::new)
    }
    async fn get_attr(
        &self,
        r: Request<GetAttrRequest>,
    ) -> Result<Response<GetAttrResponse>, Status> {
        self.master
            .get_attr(r.into_inner())
            .await
            .map(Response::new)
    }
    async fn read_dir(
        &self,
        r: Request<ReadDirRequest>,
    ) -> Result<Response<ReadDirResponse>, Status> {
        self.master
            .read_dir(r.into_inner())
            .await
            .map(Response::new)
    }
    async fn create_at(
        &self,
        r: Request<CreateAtRequest>,
    ) -> Result<Response<CreateAtResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        self.once(id, self.master.create_at(r)).await
    }
    async fn unlink_at(
        &self,
        r: Request<UnlinkAtRequest>,
    ) -> Result<Response<UnlinkAtResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        self.once(id, self.master.unlink_at(r)).await
    }
    async fn rename_at(
        &self,
        r: Request<RenameAtRequest>,
    ) -> Result<Response<RenameAtResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        self.once(id, self.master.rename_at(r)).await
    }
    async fn link_at(&self, r: Request<LinkAtRequest>) -> Result<Response<LinkAtResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        self.once(id, self.master.link_at(r)).await
    }
    async fn read_link(
        &self,
        r: Request<ReadLinkRequest>,
    ) -> Result<Response<ReadLinkResponse>, Status> {
        self.master
            .read_link(r.into_inner())
            .await
            .map(Response::new)
    }
    async fn set_attr(
        &self,
        r: Request<SetAttrRequest>,
    ) -> Result<Response<SetAttrResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        self.once(id, self.master.set_attr(r)).await
    }
    async fn set_xattr(
        &self,
        r: Request<SetXattrRequest>,
    ) -> Result<Response<SetXattrResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        self.once(id, self.master.set_xattr(r)).await
    }
    async fn get_xattr(
        &self,
        r: Request<GetXattrRequest>,
    ) -> Result<Response<GetXattrResponse>, Status> {
        self.master
            .get_xattr(r.into_inner())
            .await
            .map(Response::new)
    }
    async fn list_xattr(
        &self,
        r: Request<ListXattrRequest>,
    ) -> Result<Response<ListXattrResponse>, Status> {
        self.master
            .list_xattr(r.into_inner())
            .await
            .map(Response::new)
    }
    async fn remove_xattr(
        &self,
        r: Request<RemoveXattrRequest>,
    ) -> Result<Response<RemoveXattrResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        self.once(id, self.master.remove_xattr(r)).await
    }
    async fn open_file(
        &self,
        r: Request<OpenFileRequest>,
    ) -> Result<Response<OpenFileResponse>, Status> {
        self.master
            .open_file(r.into_inner())
            .await
            .map(Response::new)
    }
    async fn close_file(
        &self,
        r: Request<CloseFileRequest>,
    ) -> Result<Response<CloseFileResponse>, Status> {
        self.master
            .close_file(r.into_inner())
            .await
            .map(Response::new)
    }
    async fn renew_session(
        &self,
        r: Request<RenewSessionRequest>,
    ) -> Result<Response<RenewSessionResponse>, Status> {
        self.master
            .renew_session(r.into_inner())
            .await
            .map(Response::new)
    }
    async fn safe_mode(
        &self,
        r: Request<SafeModeRequest>,
    ) -> Result<Response<SafeModeResponse>, Status> {
        self.master.safe_mode(r.into_inner()).map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(addr = %r.get_ref().addr, cancel = r.get_ref().cancel))]
    async fn decommission(
        &self,
        r: Request<DecommissionRequest>,
    ) -> Result<Response<DecommissionResponse>, Status> {
        self.master.decommission(r.into_inner()).map(Response::new)
    }

    async fn balance(
        &self,
        r: Request<BalanceRequest>,
    ) -> Result<Response<BalanceResponse>, Status> {
        self.master.balance(r.into_inner()).map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(path = %r.get_ref().path))]
    async fn set_replication(
        &self,
        r: Request<SetReplicationRequest>,
    ) -> Result<Response<SetReplicationResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        self.once(id, self.master.set_replication(r)).await
    }

    async fn stat_fs(&self, r: Request<StatFsRequest>) -> Result<Response<StatFsResponse>, Status> {
        self.master.stat_fs(r.into_inner()).await.map(Response::new)
    }
}
