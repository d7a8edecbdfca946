//! Inode-based namespace calls (the FUSE surface): lookups, creates and removals by
//! (parent inode, name), hard links, attributes, extended attributes, open handles and
//! statfs. Every call checks permissions against the request's caller (none = root, for
//! internal and legacy callers); mutations go through [`Master::mutate`] like the path calls.
//!
//! Unlinks that leave an inode without links append `RemoveOrphan` in the same mutation
//! unless a handle holds it; otherwise the orphan goes when its last handle closes or its
//! session expires ([`Master::reap_sessions`]).

use std::time::Instant;

use rdfs_proto::ids::InodeId;
use rdfs_proto::pb::*;
use rdfs_proto::ErrorCode;
use tonic::Status;

use crate::handles::{HandleError, MAX_SESSION_ID_BYTES};
use crate::namespace::{CreatePlan, Cred, NewKind, NsError, Op, SetAttrPlan};
use crate::service::{attr, now_ns, ns_status};
use crate::state::{Master, State};

/// Credentials of a request; a request without a caller is trusted (root).
pub(crate) fn cred_of(c: &Option<Caller>) -> Cred {
    match c {
        Some(c) => Cred {
            uid: c.uid,
            gid: c.gid,
            groups: c.groups.clone(),
        },
        None => Cred::root(),
    }
}

fn at_inode(id: u64) -> impl Fn(NsError) -> Status {
    move |e| ns_status(&format!("inode {id}"), e)
}

fn at_entry(parent: u64, name: &str) -> impl Fn(NsError) -> Status + '_ {
    move |e| ns_status(&format!("inode {parent}/{name}"), e)
}

/// The handle id a create-and-open with this request id asks for: the same on a retry, and
/// as unpredictable as the client's random id otherwise.
fn handle_for_request(id: &RequestId) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    id.client_id.hash(&mut h);
    id.call_id.hash(&mut h);
    h.finish()
}

fn check_session(session: &[u8]) -> Result<(), Status> {
    if session.is_empty() || session.len() > MAX_SESSION_ID_BYTES {
        return Err(ErrorCode::InvalidArgument.status(format!(
            "session id of {} bytes (1..={MAX_SESSION_ID_BYTES})",
            session.len()
        )));
    }
    Ok(())
}

impl State {
    fn attr_answer(&self, id: InodeId) -> Result<FileAttr, Status> {
        let ino = self
            .ns
            .inode(id)
            .ok_or_else(|| ErrorCode::NotFound.status(format!("inode {id}: not found")))?;
        Ok(attr(ino, self.default_replication))
    }

    /// `op` plus `RemoveOrphan` for `orphan` when no handle holds it.
    pub(crate) fn with_orphan(&self, op: Op, orphan: Option<InodeId>) -> Vec<Op> {
        let mut ops = vec![op];
        if let Some(o) = orphan {
            if !self.handles.is_open(o) {
                ops.push(Op::RemoveOrphan { inode: o });
            }
        }
        ops
    }
}

impl Master {
    pub async fn lookup(&self, r: LookupRequest) -> Result<LookupResponse, Status> {
        let cred = cred_of(&r.caller);
        let st = self.state.lock();
        let ino = st
            .ns
            .lookup(InodeId(r.parent), &r.name, &cred)
            .map_err(at_entry(r.parent, &r.name))?;
        Ok(LookupResponse {
            attr: Some(attr(ino, st.default_replication)),
        })
    }

    pub async fn get_attr(&self, r: GetAttrRequest) -> Result<GetAttrResponse, Status> {
        let st = self.state.lock();
        let ino = st.ns.get(InodeId(r.inode)).map_err(at_inode(r.inode))?;
        Ok(GetAttrResponse {
            attr: Some(attr(ino, st.default_replication)),
        })
    }

    pub async fn read_dir(&self, r: ReadDirRequest) -> Result<ReadDirResponse, Status> {
        let cred = cred_of(&r.caller);
        let st = self.state.lock();
        let (page, more) = st
            .ns
            .read_dir(InodeId(r.inode), &r.start_after, r.limit, &cred)
            .map_err(at_inode(r.inode))?;
        let entries = page
            .into_iter()
            .map(|(name, ino)| DirEntry {
                name: name.to_string(),
                attr: Some(attr(ino, st.default_replication)),
            })
            .collect();
        Ok(ReadDirResponse { entries, more })
    }

    pub async fn create_at(&self, r: CreateAtRequest) -> Result<CreateAtResponse, Status> {
        let cred = cred_of(&r.caller);
        let kind = match FileType::try_from(r.file_type) {
            Ok(FileType::File) => NewKind::File,
            Ok(FileType::Dir) => NewKind::Dir,
            Ok(FileType::Symlink) => NewKind::Symlink(r.symlink_target.clone()),
            Ok(FileType::Fifo) => NewKind::Fifo,
            _ => {
                return Err(ErrorCode::InvalidArgument
                    .status(format!("create: unknown file type {}", r.file_type)))
            }
        };
        if r.replication > rdfs_proto::limits::MAX_REPLICATION {
            return Err(ErrorCode::InvalidArgument
                .status(format!("create: replication {} too large", r.replication)));
        }
        let replication = if r.replication == 0 {
            self.config.replication
        } else {
            r.replication
        };
        let t = now_ns();
        self.mutate_req(
            &r.request_id,
            |st| {
                let plan = st
                    .ns
                    .plan_create_at(
                        &cred,
                        InodeId(r.parent),
                        &r.name,
                        kind,
                        r.mode,
                        r.exclusive,
                        replication,
                        t,
                    )
                    .map_err(at_entry(r.parent, &r.name))?;
                Ok(match plan {
                    CreatePlan::Existing(id) => (vec![], id),
                    CreatePlan::New(op) => {
                        let id = match &op {
                            Op::CreateNode { inode, .. } => *inode,
                            _ => st.ns.next_inode(),
                        };
                        (vec![op], id)
                    }
                })
            },
            |st, id| {
                Ok(CreateAtResponse {
                    attr: Some(st.attr_answer(id)?),
                    handle: 0,
                    session_ttl_ms: 0,
                })
            },
        )
        .await
    }

    /// Registers the open handle a create-and-open asked for. Runs after the logged create
    /// and also when a retry was answered from the retry cache: handles are soft state, not
    /// part of the logged answer, and a retry registers the same handle again (idempotent)
    /// instead of a second one that would hold the inode until the session ends.
    pub fn open_created(
        &self,
        session: &[u8],
        file_type: i32,
        request_id: Option<&RequestId>,
        resp: &mut CreateAtResponse,
    ) -> Result<(), Status> {
        let inode = match &resp.attr {
            Some(attr) if !session.is_empty() && file_type == FileType::File as i32 => attr.inode,
            _ => return Ok(()),
        };
        let preferred = request_id.map(handle_for_request);
        let (handle, ttl) = self.open_handle(session, InodeId(inode), preferred)?;
        resp.handle = handle;
        resp.session_ttl_ms = ttl;
        Ok(())
    }

    pub async fn unlink_at(&self, r: UnlinkAtRequest) -> Result<UnlinkAtResponse, Status> {
        let cred = cred_of(&r.caller);
        let t = now_ns();
        self.mutate_ops_req(
            &r.request_id,
            |st| {
                let (op, orphan) = st
                    .ns
                    .plan_unlink_at(&cred, InodeId(r.parent), &r.name, r.is_dir, t)
                    .map_err(at_entry(r.parent, &r.name))?;
                Ok(st.with_orphan(op, orphan))
            },
            |_| Ok(UnlinkAtResponse {}),
        )
        .await
    }

    pub async fn rename_at(&self, r: RenameAtRequest) -> Result<RenameAtResponse, Status> {
        let cred = cred_of(&r.caller);
        let t = now_ns();
        self.mutate_ops_req(
            &r.request_id,
            |st| {
                let planned = st
                    .ns
                    .plan_rename_at(
                        &cred,
                        InodeId(r.parent),
                        &r.name,
                        InodeId(r.new_parent),
                        &r.new_name,
                        r.no_replace,
                        t,
                    )
                    .map_err(at_entry(r.parent, &r.name))?;
                Ok(match planned {
                    None => vec![],
                    Some((op, orphan)) => st.with_orphan(op, orphan),
                })
            },
            |_| Ok(RenameAtResponse {}),
        )
        .await
    }

    pub async fn link_at(&self, r: LinkAtRequest) -> Result<LinkAtResponse, Status> {
        let cred = cred_of(&r.caller);
        let t = now_ns();
        let inode = InodeId(r.inode);
        self.mutate_ops_req(
            &r.request_id,
            |st| {
                let op = st
                    .ns
                    .plan_link(&cred, inode, InodeId(r.new_parent), &r.new_name, t)
                    .map_err(at_entry(r.new_parent, &r.new_name))?;
                Ok(vec![op])
            },
            |st| {
                Ok(LinkAtResponse {
                    attr: Some(st.attr_answer(inode)?),
                })
            },
        )
        .await
    }

    pub async fn read_link(&self, r: ReadLinkRequest) -> Result<ReadLinkResponse, Status> {
        let st = self.state.lock();
        let target = st
            .ns
            .read_link(InodeId(r.inode))
            .map_err(at_inode(r.inode))?;
        Ok(ReadLinkResponse {
            target: target.to_string(),
        })
    }

    pub async fn set_attr(&self, r: SetAttrRequest) -> Result<SetAttrResponse, Status> {
        let cred = cred_of(&r.caller);
        let inode = InodeId(r.inode);
        let plan = SetAttrPlan {
            mode: r.mode,
            uid: r.uid,
            gid: r.gid,
            size: r.size,
            atime_ns: r.atime_ns,
            mtime_ns: r.mtime_ns,
            atime_now: r.atime_now,
            mtime_now: r.mtime_now,
        };
        let chunk_size = self.identity.chunk_size;
        let t = now_ns();
        self.mutate_req(
            &r.request_id,
            |st| {
                let planned = st
                    .ns
                    .plan_set_attr(&cred, inode, &plan, chunk_size, t)
                    .map_err(at_inode(r.inode))?;
                Ok((planned.ops, planned.zero))
            },
            |st, zero| {
                let (zero_from, zero_to) = zero.unwrap_or((0, 0));
                Ok(SetAttrResponse {
                    attr: Some(st.attr_answer(inode)?),
                    zero_from,
                    zero_to,
                })
            },
        )
        .await
    }

    pub async fn set_xattr(&self, r: SetXattrRequest) -> Result<SetXattrResponse, Status> {
        let cred = cred_of(&r.caller);
        let t = now_ns();
        self.mutate_ops_req(
            &r.request_id,
            |st| {
                let op = st
                    .ns
                    .plan_set_xattr(
                        &cred,
                        InodeId(r.inode),
                        &r.name,
                        &r.value,
                        r.create,
                        r.replace,
                        t,
                    )
                    .map_err(at_inode(r.inode))?;
                Ok(vec![op])
            },
            |_| Ok(SetXattrResponse {}),
        )
        .await
    }

    pub async fn get_xattr(&self, r: GetXattrRequest) -> Result<GetXattrResponse, Status> {
        let cred = cred_of(&r.caller);
        let st = self.state.lock();
        let value = st
            .ns
            .get_xattr(&cred, InodeId(r.inode), &r.name)
            .map_err(at_inode(r.inode))?;
        Ok(GetXattrResponse {
            value: value.to_vec(),
        })
    }

    pub async fn list_xattr(&self, r: ListXattrRequest) -> Result<ListXattrResponse, Status> {
        let cred = cred_of(&r.caller);
        let st = self.state.lock();
        let names = st
            .ns
            .list_xattr(&cred, InodeId(r.inode))
            .map_err(at_inode(r.inode))?;
        Ok(ListXattrResponse { names })
    }

    pub async fn remove_xattr(&self, r: RemoveXattrRequest) -> Result<RemoveXattrResponse, Status> {
        let cred = cred_of(&r.caller);
        let t = now_ns();
        self.mutate_ops_req(
            &r.request_id,
            |st| {
                let op = st
                    .ns
                    .plan_remove_xattr(&cred, InodeId(r.inode), &r.name, t)
                    .map_err(at_inode(r.inode))?;
                Ok(vec![op])
            },
            |_| Ok(RemoveXattrResponse {}),
        )
        .await
    }

    pub async fn open_file(&self, r: OpenFileRequest) -> Result<OpenFileResponse, Status> {
        let (handle, session_ttl_ms) = self.open_handle(&r.session, InodeId(r.inode), None)?;
        Ok(OpenFileResponse {
            handle,
            session_ttl_ms,
        })
    }

    /// Registers an open handle on `inode` for `session`, as `preferred` when that id is
    /// free (or already this same registration); returns (handle, session TTL in ms).
    fn open_handle(
        &self,
        session: &[u8],
        inode: InodeId,
        preferred: Option<u64>,
    ) -> Result<(u64, u64), Status> {
        check_session(session)?;
        let ttl = self.config.session_ttl;
        let mut st = self.state.lock();
        st.ns.get(inode).map_err(at_inode(inode.0))?;
        let mut preferred = preferred.filter(|h| *h != 0);
        // Random ids: a master restarted without the table cannot hand out an id a client
        // still holds (and will re-register).
        let handle = loop {
            let h: u64 = preferred.take().unwrap_or_else(rand::random);
            if h == 0 {
                continue;
            }
            match st.handles.open(h, session, inode, Instant::now(), ttl) {
                Ok(()) => break h,
                Err(HandleError::Conflict) => continue,
                Err(HandleError::TooMany) => {
                    return Err(ErrorCode::Busy.status("too many open handles on the master"))
                }
            }
        };
        Ok((handle, ttl.as_millis() as u64))
    }

    pub async fn close_file(&self, r: CloseFileRequest) -> Result<CloseFileResponse, Status> {
        check_session(&r.session)?;
        let released = self.state.lock().handles.close(r.handle, &r.session);
        if let Some(inode) = released {
            self.remove_unheld_orphans(vec![inode]).await?;
        }
        Ok(CloseFileResponse {})
    }

    pub async fn renew_session(
        &self,
        r: RenewSessionRequest,
    ) -> Result<RenewSessionResponse, Status> {
        check_session(&r.session)?;
        let ttl = self.config.session_ttl;
        let now = Instant::now();
        let mut st = self.state.lock();
        let known = st.handles.renew(&r.session, now, ttl);
        for h in &r.handles {
            let inode = InodeId(h.inode);
            // Only inodes that still exist can be held again; a handle another session
            // took meanwhile stays theirs.
            if h.handle != 0 && st.ns.inode(inode).is_some() {
                let _ = st.handles.open(h.handle, &r.session, inode, now, ttl);
            }
        }
        Ok(RenewSessionResponse {
            session_ttl_ms: ttl.as_millis() as u64,
            known,
        })
    }

    pub async fn stat_fs(&self, _r: StatFsRequest) -> Result<StatFsResponse, Status> {
        let st = self.state.lock();
        let (capacity, used) = st.cmap.live_servers().fold((0u64, 0u64), |(c, u), s| {
            (c.saturating_add(s.capacity), u.saturating_add(s.used))
        });
        Ok(StatFsResponse {
            capacity,
            used,
            files: st.ns.inode_count(),
            chunk_size: self.identity.chunk_size,
        })
    }

    /// Drops expired sessions and removes orphans no handle holds any more (after the
    /// post-recovery grace period, orphans nobody re-registered as well).
    pub async fn reap_sessions(&self, now: Instant) -> Result<(), Status> {
        let candidates = {
            let mut st = self.state.lock();
            let mut c = st.handles.expire(now);
            if now >= st.orphan_grace_until {
                c.extend(st.ns.orphans());
            }
            c
        };
        self.remove_unheld_orphans(candidates).await
    }

    /// Logs `RemoveOrphan` for those of `inodes` that are orphans no handle holds.
    async fn remove_unheld_orphans(&self, mut inodes: Vec<InodeId>) -> Result<(), Status> {
        inodes.sort();
        inodes.dedup();
        {
            // Most reaper ticks find nothing: do not touch the log queue for them.
            let st = self.state.lock();
            inodes.retain(|i| st.ns.is_orphan(*i) && !st.handles.is_open(*i));
        }
        if inodes.is_empty() {
            return Ok(());
        }
        self.mutate_ops(
            |st| {
                Ok(inodes
                    .iter()
                    .filter(|i| st.ns.is_orphan(**i) && !st.handles.is_open(**i))
                    .map(|i| Op::RemoveOrphan { inode: *i })
                    .collect())
            },
            |_| (),
        )
        .await
    }
}
