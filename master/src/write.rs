//! PrepareWrite: leases and version bumps.
//!
//! Order (SPEC "Version bumps"): log the new version (or the chunk allocation) → have the
//! replicas persist it over the data plane (`SetVersion`) → grant the lease to those that
//! answered, primary first. The data-plane calls run without the state lock; `granting`
//! keeps a second writer from bumping the same chunk meanwhile.

use std::time::{Duration, Instant};

use futures::future::join_all;
use rdfs_proto::dataplane::{CopyChunkRequest, DataConn, Msg, SetVersionRequest};
use rdfs_proto::ids::{ChunkId, ChunkVersion, ChunkserverId, InodeId, LeaseSerial};
use rdfs_proto::limits::MAX_FILE_SIZE;
use rdfs_proto::pb::{PrepareAppendResponse, PrepareWriteResponse};
use rdfs_proto::ErrorCode;
use tonic::Status;

use crate::lease::Lease;
use crate::namespace::{NodeKind, Op};
use crate::placement::pick_weighted;
use crate::state::{Master, State};

/// Deadline for one SetVersion round trip (connect included).
pub const SET_VERSION_TIMEOUT: Duration = Duration::from_secs(2);
/// Deadline for one local chunk copy (copy-on-write): read, write, fsync and verify of up
/// to a whole chunk.
pub const COPY_CHUNK_TIMEOUT: Duration = Duration::from_secs(120);

/// What the locked planning step decided.
enum Decision {
    /// A valid lease exists: hand it out again.
    Reuse(PrepareWriteResponse),
    /// Ask `targets` to persist `version` (creating the chunk when `create`) — or, with
    /// `copy_from`, to make the chunk a local copy of that (shared) chunk at that version.
    Grant {
        chunk: ChunkId,
        version: ChunkVersion,
        targets: Vec<ChunkserverId>,
        create: bool,
        copy_from: Option<(ChunkId, ChunkVersion)>,
    },
}

impl State {
    /// Picks up to `want` placeable servers not in `exclude`, weighted by free space.
    pub fn place(&self, want: usize, exclude: &[ChunkserverId]) -> Vec<ChunkserverId> {
        let cands: Vec<_> = self
            .cmap
            .live_servers()
            .filter(|s| s.placeable() && !exclude.contains(&s.id))
            .map(|s| (s.id, s.free()))
            .collect();
        pick_weighted(&cands, want, &mut rand::rng())
    }

    /// Servers for a new chunk: min(replication, placeable) but at least `min`.
    fn place_new(&self, replication: u32, min: u32) -> Result<Vec<ChunkserverId>, Status> {
        let chosen = self.place(replication as usize, &[]);
        let need = min.min(replication) as usize;
        if chosen.len() >= need {
            return Ok(chosen);
        }
        let live = self.cmap.live_servers().count();
        let code = if live >= need {
            ErrorCode::NoSpace
        } else {
            ErrorCode::Unavailable
        };
        Err(code.status(format!(
            "{} chunkservers can take a new chunk ({live} live), need at least {need}",
            chosen.len()
        )))
    }

    fn addrs(&self, ids: &[ChunkserverId]) -> Vec<String> {
        ids.iter()
            .filter_map(|id| self.cmap.addr(*id).map(str::to_string))
            .collect()
    }

    /// Returns the existing lease if it is still good for this client.
    fn reusable_lease(
        &self,
        chunk: ChunkId,
        failed: &[String],
        ctx: &GrantCtx,
    ) -> Option<PrepareWriteResponse> {
        let lease = self.leases.active(chunk, Instant::now())?;
        let version = self.ns.chunk(chunk)?.version;
        let chain = self.addrs(&lease.chain);
        let all_live = lease
            .chain
            .iter()
            .all(|s| self.cmap.server(*s).is_some_and(|x| x.live));
        let ok = lease.version == version
            && all_live
            && chain.len() == lease.chain.len()
            && !chain.iter().any(|a| failed.contains(a));
        let remaining = lease.expires.saturating_duration_since(Instant::now());
        ok.then(|| ctx.response(chunk, version, chain, lease.serial, remaining))
    }

    /// The chunk index a record append goes to: the file's last chunk, or the one after
    /// `after` when the client found that one full (allocated by whoever asks first, so
    /// concurrent appenders converge on one new chunk), or `retry` when the client retries
    /// a record on the chunk it first tried.
    fn append_index(
        &self,
        inode: InodeId,
        after: Option<u64>,
        retry: Option<u64>,
    ) -> Result<u64, Status> {
        let ino = self
            .ns
            .file(inode)
            .map_err(|e| e.code.status(format!("inode {inode}: {}", e.detail)))?;
        let NodeKind::File { chunks, .. } = &ino.kind else {
            return Err(ErrorCode::IsADirectory.status(format!("inode {inode}")));
        };
        if let Some(r) = retry.filter(|r| chunks.contains_key(r)) {
            return Ok(r);
        }
        let last = chunks.keys().next_back().copied();
        let index = match (last, after) {
            (None, None) => 0,
            (Some(l), None) => l,
            (Some(l), Some(a)) if l > a => l,
            (_, Some(a)) => a.checked_add(1).ok_or_else(|| {
                ErrorCode::InvalidArgument.status(format!("inode {inode}: chunk index overflow"))
            })?,
        };
        Ok(index)
    }

    fn plan_prepare(
        &self,
        req: &PrepareReq,
        ctx: &GrantCtx,
    ) -> Result<(Vec<Op>, Decision), Status> {
        if self.safe_mode {
            return Err(ErrorCode::SafeMode.status("master is in safe mode; retry"));
        }
        let ino = self
            .ns
            .file(req.inode)
            .map_err(|e| e.code.status(format!("inode {}: {}", req.inode, e.detail)))?;
        let NodeKind::File { size, chunks } = &ino.kind else {
            return Err(ErrorCode::IsADirectory.status(format!("inode {}", req.inode)));
        };
        let replication = if ino.replication == 0 {
            self.default_replication
        } else {
            ino.replication
        };
        let Some(chunk) = chunks.get(&req.index).copied() else {
            return self.plan_new_chunk(req, replication, ctx);
        };
        if self.frozen.contains_key(&chunk) {
            let msg = format!("chunk {chunk}: a snapshot is being taken");
            return Err(ErrorCode::Busy.status(msg));
        }
        let meta =
            self.ns.chunk(chunk).copied().ok_or_else(|| {
                ErrorCode::Internal.status(format!("chunk {chunk} not in the table"))
            })?;
        if meta.refs > 1 {
            return self.plan_copy_on_write(req, chunk, meta.version);
        }
        if let Some(resp) = self.reusable_lease(chunk, &req.failed, ctx) {
            return Ok((vec![], Decision::Reuse(resp)));
        }
        // Nothing acknowledged lives in a chunk the file ends before.
        let empty = *size <= req.index * ctx.chunk_size;
        self.plan_bump(chunk, empty, replication, ctx)
    }

    /// A new chunk: allocation logged first, then version 1 on the chosen servers.
    fn plan_new_chunk(
        &self,
        req: &PrepareReq,
        replication: u32,
        ctx: &GrantCtx,
    ) -> Result<(Vec<Op>, Decision), Status> {
        let chunk = self.ns.next_chunk_id();
        let targets = self.place_new(replication, ctx.min_replicas)?;
        let version = ChunkVersion(1);
        let op = Op::AllocateChunk {
            inode: req.inode,
            index: req.index,
            chunk_id: chunk,
            version,
        };
        let create = true;
        Ok((
            vec![op],
            Decision::Grant {
                chunk,
                version,
                targets,
                create,
                copy_from: None,
            },
        ))
    }

    /// The first write to a chunk a snapshot shares: the file gets a new chunk id (logged),
    /// made a local copy of the shared chunk on every live replica holding it; the write
    /// then goes to the copy, and the shared chunk stays as the other files know it.
    fn plan_copy_on_write(
        &self,
        req: &PrepareReq,
        shared: ChunkId,
        version: ChunkVersion,
    ) -> Result<(Vec<Op>, Decision), Status> {
        let sources = self.cmap.current_replicas(shared, version);
        if sources.is_empty() {
            return Err(ErrorCode::Unavailable.status(format!(
                "chunk {shared} (shared with a snapshot): no live replica at version {version} to copy"
            )));
        }
        let op = self
            .ns
            .plan_copy_on_write(req.inode, req.index)
            .map_err(|e| e.code.status(format!("inode {}: {}", req.inode, e.detail)))?;
        let Op::CopyOnWrite { to, version: v, .. } = &op else {
            return Err(ErrorCode::Internal.status("copy-on-write plan"));
        };
        let (to, v) = (*to, *v);
        tracing::info!(chunk_id = %shared, copy = %to, inode = %req.inode, index = req.index, "copy-on-write of a shared chunk");
        Ok((
            vec![op],
            Decision::Grant {
                chunk: to,
                version: v,
                targets: sources,
                create: true,
                copy_from: Some((shared, version)),
            },
        ))
    }

    /// An existing chunk without a usable lease: bump its version on the live current
    /// replicas (or, when none is left and it holds nothing acknowledged, start it afresh
    /// on new servers instead of failing forever).
    fn plan_bump(
        &self,
        chunk: ChunkId,
        empty: bool,
        replication: u32,
        ctx: &GrantCtx,
    ) -> Result<(Vec<Op>, Decision), Status> {
        if self.leases.is_granting(chunk) {
            let msg = format!("chunk {chunk}: a lease grant is in progress");
            return Err(ErrorCode::Busy.status(msg));
        }
        let meta = self.ns.chunk(chunk).copied();
        let v = meta.map(|m| m.version).unwrap_or_default();
        let mut targets = self.cmap.current_replicas(chunk, v);
        let create = targets.is_empty();
        let mut copy_from = None;
        if create {
            let source = meta.and_then(|m| m.copy_of).and_then(|src| {
                let sv = self.ns.chunk(src)?.version;
                Some((src, sv, self.cmap.current_replicas(src, sv)))
            });
            match source {
                // A copy-on-write copy not made yet anywhere: make it again.
                Some((src, sv, holders)) if !holders.is_empty() => {
                    targets = holders;
                    copy_from = Some((src, sv));
                }
                _ if !empty => {
                    let msg = format!("chunk {chunk}: no live replica at version {v}");
                    return Err(ErrorCode::Unavailable.status(msg));
                }
                _ => targets = self.place_new(replication, ctx.min_replicas)?,
            }
        }
        let version = ChunkVersion(v.0 + 1);
        let op = Op::SetChunkVersion {
            chunk_id: chunk,
            version,
        };
        Ok((
            vec![op],
            Decision::Grant {
                chunk,
                version,
                targets,
                create,
                copy_from,
            },
        ))
    }
}

struct PrepareReq {
    inode: InodeId,
    index: u64,
    failed: Vec<String>,
}

/// Cluster constants a grant needs.
struct GrantCtx {
    chunk_size: u64,
    min_replicas: u32,
    epoch: u64,
}

impl GrantCtx {
    fn response(
        &self,
        chunk: ChunkId,
        v: ChunkVersion,
        chain: Vec<String>,
        serial: LeaseSerial,
        remaining: Duration,
    ) -> PrepareWriteResponse {
        PrepareWriteResponse {
            chunk_id: chunk.0,
            version: v.0,
            chain,
            lease_serial: serial.0,
            epoch: self.epoch,
            chunk_size: self.chunk_size,
            token: Vec::new(),
            lease_remaining_ms: remaining.as_millis() as u64,
        }
    }
}

/// What a decided grant does, once the decision is logged.
struct GrantPlan {
    version: ChunkVersion,
    targets: Vec<ChunkserverId>,
    create: bool,
    copy_from: Option<(ChunkId, ChunkVersion)>,
}

/// Ends a chunk's grant-in-progress mark when dropped.
pub(crate) struct GrantGuard<'a> {
    pub(crate) master: &'a Master,
    pub(crate) chunk: ChunkId,
}

impl Drop for GrantGuard<'_> {
    fn drop(&mut self) {
        self.master.state.lock().leases.end_grant(self.chunk);
    }
}

/// One master → chunkserver data-plane round trip (`SetVersion`, `CopyChunk`) answered `Ok`.
async fn call_replica(addr: String, msg: Msg, timeout: Duration) -> Result<(), String> {
    let call = async {
        let connect = timeout.min(SET_VERSION_TIMEOUT);
        let mut conn = DataConn::connect_timeout(&addr, connect)
            .await
            .map_err(|e| e.to_string())?;
        conn.set_io_timeout(timeout);
        let frame = conn.call(&msg).await.map_err(|e| e.to_string())?;
        match frame.msg {
            Msg::Ok => Ok(()),
            Msg::Error { code, message } => Err(format!("{code}: {message}")),
            other => Err(format!("unexpected reply {}", other.kind())),
        }
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| "timed out".to_string())?
}

impl Master {
    fn grant_ctx(&self) -> GrantCtx {
        GrantCtx {
            chunk_size: self.identity.chunk_size,
            min_replicas: self.config.min_replicas,
            epoch: self.state.lock().ns.epoch().0,
        }
    }

    #[tracing::instrument(skip_all, fields(inode = inode.0, index))]
    pub async fn prepare_write(
        &self,
        inode: InodeId,
        index: u64,
        failed: Vec<String>,
    ) -> Result<PrepareWriteResponse, Status> {
        let (grant, _) = self.prepare(inode, |_| Ok(index), failed).await?;
        Ok(grant)
    }

    /// A grant for record append (see `State::append_index` for which chunk).
    #[tracing::instrument(skip_all, fields(inode = inode.0, ?after, ?retry))]
    pub async fn prepare_append(
        &self,
        inode: InodeId,
        after: Option<u64>,
        retry: Option<u64>,
        failed: Vec<String>,
    ) -> Result<PrepareAppendResponse, Status> {
        let choose = |st: &State| st.append_index(inode, after, retry);
        let (grant, index) = self.prepare(inode, choose, failed).await?;
        Ok(PrepareAppendResponse {
            grant: Some(grant),
            chunk_index: index,
        })
    }

    /// Grants a lease on chunk `choose(state)` of `inode` (decided under the state lock, so
    /// concurrent callers see each other's allocations). Returns the grant and the index.
    async fn prepare(
        &self,
        inode: InodeId,
        choose: impl FnOnce(&State) -> Result<u64, Status>,
        failed: Vec<String>,
    ) -> Result<(PrepareWriteResponse, u64), Status> {
        let chunk_size = self.identity.chunk_size;
        self.state
            .lock()
            .metrics
            .count(crate::metrics::Rate::WriteGrants, 1);
        let ctx = self.grant_ctx();
        let (decision, index) = self
            .mutate(
                |st| {
                    let index = choose(st)?;
                    if index
                        .checked_mul(chunk_size)
                        .is_none_or(|off| off >= MAX_FILE_SIZE)
                    {
                        return Err(ErrorCode::InvalidArgument.status(format!(
                            "inode {inode}: chunk index {index} beyond the largest file size"
                        )));
                    }
                    let req = PrepareReq {
                        inode,
                        index,
                        failed,
                    };
                    let (ops, d) = st.plan_prepare(&req, &ctx)?;
                    Ok((ops, (d, index)))
                },
                |st, (d, index)| {
                    if let Decision::Grant { chunk, .. } = &d {
                        st.leases.begin_grant(*chunk);
                    }
                    (d, index)
                },
            )
            .await?;
        let (chunk, plan) = match decision {
            Decision::Reuse(resp) => return Ok((resp, index)),
            Decision::Grant {
                chunk,
                version,
                targets,
                create,
                copy_from,
            } => (
                chunk,
                GrantPlan {
                    version,
                    targets,
                    create,
                    copy_from,
                },
            ),
        };
        // The guard clears the in-progress mark even if the client goes away mid-grant
        // (tonic drops the handler future), so the chunk cannot stay Busy forever.
        let _guard = GrantGuard {
            master: self,
            chunk,
        };
        let grant = self.grant(chunk, plan, &ctx).await?;
        self.finish_copy(chunk).await?;
        Ok((grant, index))
    }

    /// Logs `CopyDone` for a copy-on-write chunk that now has replicas — before the grant
    /// is handed out, so no client write lands in a copy that could still be made again.
    async fn finish_copy(&self, chunk: ChunkId) -> Result<(), Status> {
        self.mutate_ops(
            |st| {
                let pending = st.ns.chunk(chunk).is_some_and(|m| m.copy_of.is_some());
                Ok(if pending {
                    vec![Op::CopyDone { chunk }]
                } else {
                    vec![]
                })
            },
            |_| (),
        )
        .await
    }

    /// Has the targets persist `version` (or make their copy), then grants the lease to
    /// those that did.
    async fn grant(
        &self,
        chunk: ChunkId,
        plan: GrantPlan,
        ctx: &GrantCtx,
    ) -> Result<PrepareWriteResponse, Status> {
        let GrantPlan {
            version,
            targets,
            create,
            copy_from,
        } = plan;
        let serial = self.next_lease_serial();
        let req = SetVersionRequest {
            chunk_id: chunk,
            version,
            epoch: rdfs_proto::ids::Epoch(ctx.epoch),
            lease_serial: serial,
            create,
        };
        let mut tried = targets.clone();
        let mut ok = match copy_from {
            Some((src, src_version)) => {
                let copy = CopyChunkRequest {
                    src,
                    src_version,
                    dst: chunk,
                    dst_version: version,
                    epoch: req.epoch,
                    lease_serial: serial,
                };
                self.copy_chunks(&targets, &copy).await
            }
            None => self.set_versions(chunk, &targets, &req).await,
        };
        // Degraded placement applies to new chunks; a copy can only be made where its
        // source is (re-replication adds the missing copies later).
        if create && copy_from.is_none() && ok.len() < ctx.min_replicas as usize {
            // Degraded placement: try other servers for the missing replicas once.
            let more = {
                let st = self.state.lock();
                st.place(ctx.min_replicas as usize - ok.len(), &tried)
            };
            tried.extend(&more);
            ok.extend(self.set_versions(chunk, &more, &req).await);
        }
        let mut st = self.state.lock();
        if ok.is_empty() {
            return Err(ErrorCode::Unavailable.status(format!(
                "chunk {chunk}: no replica accepted version {version}"
            )));
        }
        for s in &ok {
            st.cmap.set_location(*s, chunk, version);
        }
        st.cmap.confirm(chunk, version);
        st.cmap.cancel_pending(chunk);
        let expires = Instant::now() + self.config.lease_duration;
        st.leases.grant(
            chunk,
            Lease {
                version,
                chain: ok.clone(),
                serial,
                expires,
            },
        );
        let chain = st.addrs(&ok);
        tracing::info!(chunk_id = %chunk, %version, serial = serial.0, chain = ?chain, "lease granted");
        Ok(ctx.response(chunk, version, chain, serial, self.config.lease_duration))
    }

    /// SetVersion on every target concurrently; returns those that answered Ok, in order.
    pub(crate) async fn set_versions(
        &self,
        chunk: ChunkId,
        targets: &[ChunkserverId],
        req: &SetVersionRequest,
    ) -> Vec<ChunkserverId> {
        let msg = Msg::SetVersion(req.clone());
        self.call_replicas(chunk, targets, &msg, SET_VERSION_TIMEOUT, "SetVersion")
            .await
    }

    /// CopyChunk on every target concurrently; returns those whose copy is made, in order.
    async fn copy_chunks(
        &self,
        targets: &[ChunkserverId],
        req: &CopyChunkRequest,
    ) -> Vec<ChunkserverId> {
        let msg = Msg::CopyChunk(req.clone());
        self.call_replicas(req.dst, targets, &msg, COPY_CHUNK_TIMEOUT, "CopyChunk")
            .await
    }

    /// Sends `msg` to every target concurrently; returns those that answered Ok, in order.
    async fn call_replicas(
        &self,
        chunk: ChunkId,
        targets: &[ChunkserverId],
        msg: &Msg,
        timeout: Duration,
        what: &str,
    ) -> Vec<ChunkserverId> {
        let addrs: Vec<(ChunkserverId, String)> = {
            let st = self.state.lock();
            targets
                .iter()
                .filter_map(|id| st.cmap.addr(*id).map(|a| (*id, a.to_string())))
                .collect()
        };
        let calls = addrs
            .iter()
            .map(|(_, a)| call_replica(a.clone(), msg.clone(), timeout));
        let results = join_all(calls).await;
        let mut ok = Vec::new();
        for ((id, addr), r) in addrs.into_iter().zip(results) {
            match r {
                Ok(()) => ok.push(id),
                Err(e) => tracing::warn!(chunk_id = %chunk, %addr, error = %e, "{what} failed"),
            }
        }
        ok
    }
}
