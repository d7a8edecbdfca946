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
use crate::runtime::MasterCell;
use crate::state::{Master, State};

/// The gRPC face of the master: routes each call to the current incarnation, refusing
/// client calls (`NotPrimary`, with a hint) unless it is the primary.
#[derive(Clone)]
pub struct MasterService {
    pub cell: Arc<MasterCell>,
}

impl MasterService {
    fn primary(&self) -> Result<Arc<Master>, Status> {
        self.cell.primary()
    }

    fn any(&self) -> Result<Arc<Master>, Status> {
        self.cell.any()
    }
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
        self.mutate_ops_req(
            &r.request_id,
            |st| {
                st.ns
                    .check_path_create(&p, &cred)
                    .map_err(|e| ns_status(&p, e))?;
                st.ns
                    .plan_mkdir(&p, &node, r.parents)
                    .map_err(|e| ns_status(&p, e))
            },
            |st| {
                Ok(MkdirResponse {
                    attr: Some(st.attr_of_path(&p)?),
                })
            },
        )
        .await
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
        self.mutate_ops_req(
            &r.request_id,
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
            |st| {
                Ok(CreateResponse {
                    attr: Some(st.attr_of_path(&p)?),
                })
            },
        )
        .await
    }

    pub async fn delete(&self, r: DeleteRequest) -> Result<DeleteResponse, Status> {
        let p = norm(&r.path)?;
        let cred = cred_of(&r.caller);
        let t = now_ns();
        self.mutate_ops_req(
            &r.request_id,
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
            |_| Ok(DeleteResponse {}),
        )
        .await
    }

    pub async fn rename(&self, r: RenameRequest) -> Result<RenameResponse, Status> {
        let src = norm(&r.src)?;
        let dst = norm(&r.dst)?;
        let cred = cred_of(&r.caller);
        let t = now_ns();
        self.mutate_ops_req(
            &r.request_id,
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
            |_| Ok(RenameResponse {}),
        )
        .await
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
        self.mutate_ops_req(
            &r.request_id,
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
            |st| {
                Ok(CommitWriteResponse {
                    attr: Some(st.attr_of_inode(inode)?),
                })
            },
        )
        .await
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

    pub async fn register(
        self: &Arc<Self>,
        r: RegisterRequest,
    ) -> Result<RegisterResponse, Status> {
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
        let standby = !self.ha.is_primary();
        if !r.node_id.is_empty() {
            self.ha.members.update_addr(&r.node_id, &r.data_addr);
            if !standby && self.config.witnesses && !self.ha.members.contains(&r.node_id) {
                // Not awaited: a fresh chunkserver adopts the cluster id only when this
                // answer arrives, and cannot grant a lease (which acknowledging the
                // addition may need) before that.
                let (m, node, addr) = (self.clone(), r.node_id.clone(), r.data_addr.clone());
                tokio::spawn(async move {
                    if let Err(e) = m.add_witness(&node, &addr).await {
                        tracing::warn!(node_id = %node, error = %e, "adding a witness failed; the next registration retries");
                    }
                });
            }
        }
        if !standby {
            self.adopt_versions(adopt).await?;
        }
        let commands = self.state.lock().cmap.drain(id);
        Ok(RegisterResponse {
            cluster_id: self.identity.cluster_id.clone(),
            chunkserver_id: id.0,
            epoch,
            heartbeat_interval_ms: self.config.heartbeat_interval.as_millis() as u64,
            chunk_size: self.identity.chunk_size,
            commands,
            standby,
        })
    }

    pub async fn heartbeat(&self, r: HeartbeatRequest) -> Result<HeartbeatResponse, Status> {
        let (out, epoch) = {
            let mut st = self.state.lock();
            (st.heartbeat(&r, Instant::now()), st.ns.epoch().0)
        };
        let standby = !self.ha.is_primary();
        let Some((commands, adopt)) = out else {
            return Ok(HeartbeatResponse {
                commands: vec![],
                reregister: true,
                epoch,
                standby,
            });
        };
        if !standby {
            self.adopt_versions(adopt).await?;
        }
        Ok(HeartbeatResponse {
            commands,
            reregister: false,
            epoch,
            standby,
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
        let standby = !self.ha.is_primary();
        if !standby {
            self.adopt_versions(adopt).await?;
        }
        Ok(BlockReportResponse { commands, standby })
    }

    /// Makes a registering chunkserver a witness (logged once per node id). One addition at
    /// a time: the membership a standby knows then differs from ours by at most one member,
    /// so majorities of the two always intersect (see ARCHITECTURE.md, "Failover").
    async fn add_witness(&self, node_id: &str, addr: &str) -> Result<(), Status> {
        if self.ha.members.contains(node_id) {
            return Ok(());
        }
        let _one = self.witness_add.lock().await;
        if self.ha.members.contains(node_id) {
            return Ok(());
        }
        tracing::info!(node_id, addr, "chunkserver joins the witnesses");
        self.mutate_ops(
            |st| {
                Ok(if st.ns.ha().witnesses.contains_key(node_id) {
                    vec![]
                } else {
                    vec![Op::AddWitness {
                        node_id: node_id.to_string(),
                        addr: addr.to_string(),
                    }]
                })
            },
            |_| (),
        )
        .await
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

impl Master {
    /// Runs a mutation at most once per request id: a retry whose first answer was lost gets
    /// the logged answer instead of running again, once that answer's record may be
    /// acknowledged. (The handler itself logs the answer with the mutation.)
    async fn once<R, F>(&self, id: Option<RequestId>, run: F) -> Result<Response<R>, Status>
    where
        R: prost::Message + Default,
        F: std::future::Future<Output = Result<R, Status>>,
    {
        if let Some((answer, seq)) = self.retry.get::<R>(&id) {
            self.wait_durable(seq).await?;
            self.commit_gate(seq).await?;
            return Ok(Response::new(answer));
        }
        run.await.map(Response::new)
    }
}

#[tonic::async_trait]
impl MasterRpc for MasterService {
    #[tracing::instrument(skip_all, fields(path = %r.get_ref().path))]
    async fn stat(&self, r: Request<StatRequest>) -> Result<Response<StatResponse>, Status> {
        self.primary()?.stat(r.into_inner()).map(Response::new)
    }
    #[tracing::instrument(skip_all, fields(path = %r.get_ref().path))]
    async fn list(&self, r: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        self.primary()?.list(r.into_inner()).map(Response::new)
    }
    #[tracing::instrument(skip_all, fields(path = %r.get_ref().path))]
    async fn mkdir(&self, r: Request<MkdirRequest>) -> Result<Response<MkdirResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        let m = self.primary()?;
        m.once(id, m.mkdir(r)).await
    }
    #[tracing::instrument(skip_all, fields(path = %r.get_ref().path))]
    async fn create(&self, r: Request<CreateRequest>) -> Result<Response<CreateResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        let m = self.primary()?;
        m.once(id, m.create(r)).await
    }
    #[tracing::instrument(skip_all, fields(path = %r.get_ref().path))]
    async fn delete(&self, r: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        let m = self.primary()?;
        m.once(id, m.delete(r)).await
    }
    #[tracing::instrument(skip_all, fields(src = %r.get_ref().src, dst = %r.get_ref().dst))]
    async fn rename(&self, r: Request<RenameRequest>) -> Result<Response<RenameResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        let m = self.primary()?;
        m.once(id, m.rename(r)).await
    }
    #[tracing::instrument(skip_all, fields(inode = r.get_ref().inode))]
    async fn get_chunks(
        &self,
        r: Request<GetChunksRequest>,
    ) -> Result<Response<GetChunksResponse>, Status> {
        self.primary()?
            .get_chunks(r.into_inner())
            .map(Response::new)
    }
    async fn prepare_write(
        &self,
        r: Request<PrepareWriteRequest>,
    ) -> Result<Response<PrepareWriteResponse>, Status> {
        let r = r.into_inner();
        let m = self.primary()?;
        {
            let cred = cred_of(&r.caller);
            let st = m.state.lock();
            st.ns
                .check_data_access(InodeId(r.inode), &cred, W)
                .map_err(|e| ns_status(&format!("inode {}", r.inode), e))?;
        }
        let resp = m
            .prepare_write(InodeId(r.inode), r.chunk_index, r.failed_replicas)
            .await?;
        Ok(Response::new(resp))
    }
    async fn list_trash(
        &self,
        r: Request<ListTrashRequest>,
    ) -> Result<Response<ListTrashResponse>, Status> {
        self.primary()?
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
        let m = self.primary()?;
        m.once(id, m.restore_trash(r)).await
    }
    async fn empty_trash(
        &self,
        r: Request<EmptyTrashRequest>,
    ) -> Result<Response<EmptyTrashResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        let m = self.primary()?;
        m.once(id, m.empty_trash(r)).await
    }
    async fn snapshot(
        &self,
        r: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        let m = self.primary()?;
        m.once(id, m.snapshot(r)).await
    }
    async fn prepare_append(
        &self,
        r: Request<PrepareAppendRequest>,
    ) -> Result<Response<PrepareAppendResponse>, Status> {
        let r = r.into_inner();
        let m = self.primary()?;
        {
            let cred = cred_of(&r.caller);
            let st = m.state.lock();
            st.ns
                .check_data_access(InodeId(r.inode), &cred, W)
                .map_err(|e| ns_status(&format!("inode {}", r.inode), e))?;
        }
        let resp = m
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
        let m = self.primary()?;
        m.once(id, m.commit_write(r)).await
    }
    #[tracing::instrument(skip_all, fields(chunk_id = r.get_ref().chunk_id, replica = %r.get_ref().replica))]
    async fn report_bad_replica(
        &self,
        r: Request<ReportBadReplicaRequest>,
    ) -> Result<Response<ReportBadReplicaResponse>, Status> {
        self.primary()?
            .report_bad_replica(r.into_inner())
            .map(Response::new)
    }
    async fn cluster_status(
        &self,
        _r: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        Ok(Response::new(self.any()?.cluster_status()))
    }
    #[tracing::instrument(skip_all, fields(path = %r.get_ref().path))]
    async fn fsck(&self, r: Request<FsckRequest>) -> Result<Response<FsckResponse>, Status> {
        self.primary()?.fsck(r.into_inner()).map(Response::new)
    }
    #[tracing::instrument(skip_all, fields(addr = %r.get_ref().data_addr))]
    async fn register(
        &self,
        r: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        self.any()?
            .register(r.into_inner())
            .await
            .map(Response::new)
    }
    #[tracing::instrument(level = "debug", skip_all, fields(server = r.get_ref().chunkserver_id))]
    async fn heartbeat(
        &self,
        r: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.any()?
            .heartbeat(r.into_inner())
            .await
            .map(Response::new)
    }
    #[tracing::instrument(skip_all, fields(server = r.get_ref().chunkserver_id))]
    async fn block_report(
        &self,
        r: Request<BlockReportRequest>,
    ) -> Result<Response<BlockReportResponse>, Status> {
        self.any()?
            .block_report(r.into_inner())
            .await
            .map(Response::new)
    }
    async fn lookup(&self, r: Request<LookupRequest>) -> Result<Response<LookupResponse>, Status> {
        self.primary()?
            .lookup(r.into_inner())
            .await
            .map(Response::new)
    }
    async fn get_attr(
        &self,
        r: Request<GetAttrRequest>,
    ) -> Result<Response<GetAttrResponse>, Status> {
        self.primary()?
            .get_attr(r.into_inner())
            .await
            .map(Response::new)
    }
    async fn read_dir(
        &self,
        r: Request<ReadDirRequest>,
    ) -> Result<Response<ReadDirResponse>, Status> {
        self.primary()?
            .read_dir(r.into_inner())
            .await
            .map(Response::new)
    }
    async fn create_at(
        &self,
        r: Request<CreateAtRequest>,
    ) -> Result<Response<CreateAtResponse>, Status> {
        let mut r = r.into_inner();
        let id = r.request_id.clone();
        let (session, file_type) = (std::mem::take(&mut r.open_session), r.file_type);
        let m = self.primary()?;
        let mut resp = m.once(id.clone(), m.create_at(r)).await?.into_inner();
        m.open_created(&session, file_type, id.as_ref(), &mut resp)?;
        Ok(Response::new(resp))
    }
    async fn unlink_at(
        &self,
        r: Request<UnlinkAtRequest>,
    ) -> Result<Response<UnlinkAtResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        let m = self.primary()?;
        m.once(id, m.unlink_at(r)).await
    }
    async fn rename_at(
        &self,
        r: Request<RenameAtRequest>,
    ) -> Result<Response<RenameAtResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        let m = self.primary()?;
        m.once(id, m.rename_at(r)).await
    }
    async fn link_at(&self, r: Request<LinkAtRequest>) -> Result<Response<LinkAtResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        let m = self.primary()?;
        m.once(id, m.link_at(r)).await
    }
    async fn read_link(
        &self,
        r: Request<ReadLinkRequest>,
    ) -> Result<Response<ReadLinkResponse>, Status> {
        self.primary()?
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
        let m = self.primary()?;
        m.once(id, m.set_attr(r)).await
    }
    async fn set_xattr(
        &self,
        r: Request<SetXattrRequest>,
    ) -> Result<Response<SetXattrResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        let m = self.primary()?;
        m.once(id, m.set_xattr(r)).await
    }
    async fn get_xattr(
        &self,
        r: Request<GetXattrRequest>,
    ) -> Result<Response<GetXattrResponse>, Status> {
        self.primary()?
            .get_xattr(r.into_inner())
            .await
            .map(Response::new)
    }
    async fn list_xattr(
        &self,
        r: Request<ListXattrRequest>,
    ) -> Result<Response<ListXattrResponse>, Status> {
        self.primary()?
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
        let m = self.primary()?;
        m.once(id, m.remove_xattr(r)).await
    }
    async fn open_file(
        &self,
        r: Request<OpenFileRequest>,
    ) -> Result<Response<OpenFileResponse>, Status> {
        self.primary()?
            .open_file(r.into_inner())
            .await
            .map(Response::new)
    }
    async fn close_file(
        &self,
        r: Request<CloseFileRequest>,
    ) -> Result<Response<CloseFileResponse>, Status> {
        self.primary()?
            .close_file(r.into_inner())
            .await
            .map(Response::new)
    }
    async fn renew_session(
        &self,
        r: Request<RenewSessionRequest>,
    ) -> Result<Response<RenewSessionResponse>, Status> {
        self.primary()?
            .renew_session(r.into_inner())
            .await
            .map(Response::new)
    }
    async fn safe_mode(
        &self,
        r: Request<SafeModeRequest>,
    ) -> Result<Response<SafeModeResponse>, Status> {
        self.primary()?.safe_mode(r.into_inner()).map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(addr = %r.get_ref().addr, cancel = r.get_ref().cancel))]
    async fn decommission(
        &self,
        r: Request<DecommissionRequest>,
    ) -> Result<Response<DecommissionResponse>, Status> {
        self.primary()?
            .decommission(r.into_inner())
            .map(Response::new)
    }

    async fn balance(
        &self,
        r: Request<BalanceRequest>,
    ) -> Result<Response<BalanceResponse>, Status> {
        self.primary()?.balance(r.into_inner()).map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(path = %r.get_ref().path))]
    async fn set_replication(
        &self,
        r: Request<SetReplicationRequest>,
    ) -> Result<Response<SetReplicationResponse>, Status> {
        let r = r.into_inner();
        let id = r.request_id.clone();
        let m = self.primary()?;
        m.once(id, m.set_replication(r)).await
    }

    async fn stat_fs(&self, r: Request<StatFsRequest>) -> Result<Response<StatFsResponse>, Status> {
        self.primary()?
            .stat_fs(r.into_inner())
            .await
            .map(Response::new)
    }
}

/// The `MasterHa` service: op-log streaming to a standby, checkpoint transfer, handover.
#[derive(Clone)]
pub struct HaService {
    pub cell: Arc<MasterCell>,
}

#[tonic::async_trait]
impl rdfs_proto::pb::master_ha_server::MasterHa for HaService {
    type FollowStream = crate::ha::stream::FollowStream;
    type FetchCheckpointStream = crate::ha::stream::CheckpointStream;

    async fn follow(
        &self,
        r: Request<tonic::Streaming<FollowRequest>>,
    ) -> Result<Response<Self::FollowStream>, Status> {
        let m = self.cell.primary()?;
        m.follow(r.into_inner()).await.map(Response::new)
    }

    async fn fetch_checkpoint(
        &self,
        r: Request<FetchCheckpointRequest>,
    ) -> Result<Response<Self::FetchCheckpointStream>, Status> {
        let m = self.cell.primary()?;
        m.fetch_checkpoint(r.into_inner()).await.map(Response::new)
    }

    async fn failover(
        &self,
        _r: Request<FailoverRequest>,
    ) -> Result<Response<FailoverResponse>, Status> {
        let m = self.cell.primary()?;
        m.failover().await.map(Response::new)
    }
}

/// Adds the answering master's epoch (`rdfs-epoch`) to every response, so clients can
/// refuse a master older than one they have seen.
#[derive(Clone)]
pub struct EpochLayer {
    pub cell: Arc<MasterCell>,
}

impl<S> tower::Layer<S> for EpochLayer {
    type Service = EpochService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        EpochService {
            inner,
            cell: self.cell.clone(),
        }
    }
}

#[derive(Clone)]
pub struct EpochService<S> {
    inner: S,
    cell: Arc<MasterCell>,
}

impl<S, B, RB> tower::Service<tonic::codegen::http::Request<B>> for EpochService<S>
where
    S: tower::Service<
        tonic::codegen::http::Request<B>,
        Response = tonic::codegen::http::Response<RB>,
    >,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        let cell = self.cell.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            // Read after the call: a promotion during it shows the epoch the answer was
            // given in (or a later one, never an earlier one).
            if let Ok(m) = cell.any() {
                if let Ok(v) = m.ha.epoch().0.to_string().parse() {
                    resp.headers_mut().insert(crate::ha::EPOCH_METADATA_KEY, v);
                }
            }
            Ok(resp)
        })
    }
}
