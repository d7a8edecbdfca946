//! Inode-based metadata calls (the surface the FUSE adapter codes against): lookups, creates
//! and removals by (parent inode, name), hard links, attributes, extended attributes, open
//! handles and file-system statistics.
//!
//! Every request carries this client's [`Caller`]; the master checks POSIX permissions
//! against it. Open handles belong to this client's session: the first `open_file` starts a
//! background task that renews the session lease while the client lives, so the master can
//! release the handles of a client that died.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use rdfs_proto::{pb, ErrorCode};

use crate::error::{ClientError, Result};
use crate::{need_attr, Client, Inner};

/// Longest pause between session renewals while handles may be open.
const SESSION_RENEW_INTERVAL: Duration = Duration::from_secs(3);
/// Renewals per announced session TTL, so a couple of lost renewals do not expire it.
const RENEWALS_PER_TTL: u32 = 3;
/// Shortest pause between renewals, whatever TTL the master announces.
const MIN_SESSION_RENEW_INTERVAL: Duration = Duration::from_millis(100);
/// Largest extended-attribute value sent to the master (Linux's XATTR_SIZE_MAX).
pub const MAX_XATTR_VALUE_BYTES: usize = 64 * 1024;
/// `SetAttr::atime_ns` / `mtime_ns` value meaning "now, by the master's clock"
/// (`UTIME_NOW`): write permission suffices, where an explicit time needs ownership.
pub const SET_TIME_NOW: i64 = i64::MIN;

/// Who a request is made as; the master checks permissions against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary gid need not be repeated).
    pub groups: Vec<u32>,
}

/// What [`Client::create_at`] makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewNode {
    File,
    Dir,
    /// A symbolic link to the given target (stored verbatim).
    Symlink(String),
    Fifo,
}

/// Attributes [`Client::setattr`] changes; `None` leaves one as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Truncate (shrink or grow) to this size.
    pub size: Option<u64>,
    /// Nanoseconds since the epoch, or [`SET_TIME_NOW`].
    pub atime_ns: Option<i64>,
    /// Nanoseconds since the epoch, or [`SET_TIME_NOW`].
    pub mtime_ns: Option<i64>,
}

/// File-system statistics (`statfs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    /// Bytes offered by live chunkservers.
    pub capacity: u64,
    /// Bytes used on live chunkservers.
    pub used: u64,
    /// Inodes in the namespace (directories included).
    pub files: u64,
    pub chunk_size: u64,
}

fn what_inode(inode: u64) -> String {
    format!("inode {inode}")
}

fn what_entry(parent: u64, name: &str) -> String {
    format!("inode {parent}/{name}")
}

/// Splits an optional time into (explicit value, "now" flag) for the wire.
fn wire_time(t: Option<i64>) -> (Option<i64>, bool) {
    match t {
        Some(SET_TIME_NOW) => (None, true),
        other => (other, false),
    }
}

impl Client {
    /// A client that makes every later request as `caller`; shares connections and caches
    /// (and the session) with `self`.
    pub fn with_caller(&self, caller: Caller) -> Client {
        let mut groups = caller.groups;
        if !groups.contains(&caller.gid) {
            groups.push(caller.gid);
        }
        Client {
            inner: self.inner.clone(),
            caller: Arc::new(pb::Caller {
                uid: caller.uid,
                gid: caller.gid,
                groups,
            }),
        }
    }

    /// Attributes of entry `name` in directory `parent`.
    pub async fn lookup(&self, parent: u64, name: &str) -> Result<pb::FileAttr> {
        let what = what_entry(parent, name);
        let req = pb::LookupRequest {
            parent,
            name: name.to_string(),
            caller: self.caller(),
        };
        let resp = self
            .inner
            .masters
            .call("lookup", &what, self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.lookup(req).await }
            })
            .await?;
        need_attr(resp.attr, &what)
    }

    /// Attributes of `inode`.
    pub async fn getattr(&self, inode: u64) -> Result<pb::FileAttr> {
        let what = what_inode(inode);
        let req = pb::GetAttrRequest {
            inode,
            caller: self.caller(),
        };
        let resp = self
            .inner
            .masters
            .call("getattr", &what, self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.get_attr(req).await }
            })
            .await?;
        need_attr(resp.attr, &what)
    }

    /// One page of directory `inode`: entries named strictly after `start_after`, at most
    /// `limit` (0 = the master's page size), and whether more follow.
    pub async fn readdir(
        &self,
        inode: u64,
        start_after: &str,
        limit: u32,
    ) -> Result<(Vec<pb::DirEntry>, bool)> {
        let what = what_inode(inode);
        let req = pb::ReadDirRequest {
            inode,
            start_after: start_after.to_string(),
            limit,
            caller: self.caller(),
        };
        let resp = self
            .inner
            .masters
            .call("readdir", &what, self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.read_dir(req).await }
            })
            .await?;
        Ok((resp.entries, resp.more))
    }

    /// Creates `name` in `parent`. `mode` has the umask applied already. With `exclusive`
    /// false an existing non-directory is returned unchanged (`O_CREAT` without `O_EXCL`).
    pub async fn create_at(
        &self,
        parent: u64,
        name: &str,
        node: NewNode,
        mode: u32,
        exclusive: bool,
    ) -> Result<pb::FileAttr> {
        let what = what_entry(parent, name);
        let resp = self
            .create_at_call(parent, name, node, mode, exclusive, false)
            .await?;
        need_attr(resp.attr, &what)
    }

    /// [`Client::create_at`] of a regular file that also opens it (as [`Client::open_file`]
    /// would) in the same round trip; returns its attributes and the open handle.
    pub async fn create_open_at(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        exclusive: bool,
    ) -> Result<(pb::FileAttr, u64)> {
        let what = what_entry(parent, name);
        let resp = self
            .create_at_call(parent, name, NewNode::File, mode, exclusive, true)
            .await?;
        let attr = need_attr(resp.attr, &what)?;
        if resp.handle == 0 {
            // A retry answered from the master's retry cache carries no handle.
            let handle = self.open_file(attr.inode).await?;
            return Ok((attr, handle));
        }
        self.note_open(resp.handle, attr.inode, resp.session_ttl_ms);
        Ok((attr, resp.handle))
    }

    async fn create_at_call(
        &self,
        parent: u64,
        name: &str,
        node: NewNode,
        mode: u32,
        exclusive: bool,
        open: bool,
    ) -> Result<pb::CreateAtResponse> {
        let what = what_entry(parent, name);
        let (file_type, symlink_target) = match node {
            NewNode::File => (pb::FileType::File, String::new()),
            NewNode::Dir => (pb::FileType::Dir, String::new()),
            NewNode::Symlink(target) => (pb::FileType::Symlink, target),
            NewNode::Fifo => (pb::FileType::Fifo, String::new()),
        };
        let req = pb::CreateAtRequest {
            parent,
            name: name.to_string(),
            file_type: file_type as i32,
            symlink_target,
            mode,
            exclusive,
            caller: self.caller(),
            request_id: self.request_id(),
            replication: 0,
            open_session: if open {
                self.inner.client_id.clone()
            } else {
                Vec::new()
            },
        };
        self.inner
            .masters
            .call("create", &what, self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.create_at(req).await }
            })
            .await
    }

    /// Removes entry `name` of `parent`: `rmdir` when `is_dir`, `unlink` otherwise.
    pub async fn unlink_at(&self, parent: u64, name: &str, is_dir: bool) -> Result<()> {
        let what = what_entry(parent, name);
        let req = pb::UnlinkAtRequest {
            parent,
            name: name.to_string(),
            is_dir,
            caller: self.caller(),
            request_id: self.request_id(),
        };
        self.inner
            .masters
            .call("unlink", &what, self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.unlink_at(req).await }
            })
            .await?;
        Ok(())
    }

    /// POSIX rename of `parent/name` to `new_parent/new_name`; `no_replace` refuses an
    /// existing destination with `AlreadyExists`.
    pub async fn rename_at(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        no_replace: bool,
    ) -> Result<()> {
        let what = what_entry(parent, name);
        let req = pb::RenameAtRequest {
            parent,
            name: name.to_string(),
            new_parent,
            new_name: new_name.to_string(),
            no_replace,
            caller: self.caller(),
            request_id: self.request_id(),
        };
        self.inner
            .masters
            .call("rename", &what, self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.rename_at(req).await }
            })
            .await?;
        Ok(())
    }

    /// Hard link: a new entry `new_parent/new_name` for `inode` (not a directory).
    pub async fn link_at(
        &self,
        inode: u64,
        new_parent: u64,
        new_name: &str,
    ) -> Result<pb::FileAttr> {
        let what = what_entry(new_parent, new_name);
        let req = pb::LinkAtRequest {
            inode,
            new_parent,
            new_name: new_name.to_string(),
            caller: self.caller(),
            request_id: self.request_id(),
        };
        let resp = self
            .inner
            .masters
            .call("link", &what, self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.link_at(req).await }
            })
            .await?;
        need_attr(resp.attr, &what)
    }

    /// Target of symlink `inode`.
    pub async fn readlink(&self, inode: u64) -> Result<String> {
        let what = what_inode(inode);
        let req = pb::ReadLinkRequest {
            inode,
            caller: self.caller(),
        };
        let resp = self
            .inner
            .masters
            .call("readlink", &what, self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.read_link(req).await }
            })
            .await?;
        Ok(resp.target)
    }

    /// chmod / chown / truncate / utimens in one call. A shrink that cuts a chunk in the
    /// middle is followed by zeroing the cut-off bytes of that chunk (without raising the
    /// size), so growing the file again later reads zeros there.
    pub async fn setattr(&self, inode: u64, set: SetAttr) -> Result<pb::FileAttr> {
        let what = what_inode(inode);
        let (atime_ns, atime_now) = wire_time(set.atime_ns);
        let (mtime_ns, mtime_now) = wire_time(set.mtime_ns);
        let req = pb::SetAttrRequest {
            inode,
            mode: set.mode,
            uid: set.uid,
            gid: set.gid,
            size: set.size,
            atime_ns,
            mtime_ns,
            atime_now,
            mtime_now,
            caller: self.caller(),
            request_id: self.request_id(),
        };
        let deadline = self.deadline();
        let resp = self
            .inner
            .masters
            .call("setattr", &what, deadline, |mut m| {
                let req = req.clone();
                async move { m.set_attr(req).await }
            })
            .await?;
        if set.size.is_some() {
            self.invalidate(inode);
        }
        if resp.zero_to > resp.zero_from {
            let len = usize::try_from(resp.zero_to - resp.zero_from)
                .map_err(|_| ClientError::Protocol(format!("{what}: zero range too large")))?;
            if len as u64 > self.chunk_size().max(1) {
                return Err(ClientError::Protocol(format!(
                    "{what}: master asked to zero {len} bytes, more than one chunk"
                )));
            }
            let zeros = vec![0u8; len];
            self.write_range(inode, resp.zero_from, &zeros, false, deadline)
                .await?;
        }
        need_attr(resp.attr, &what)
    }

    /// Sets extended attribute `name`; `create` fails with `AlreadyExists` when it exists,
    /// `replace` fails with `NoData` when it does not.
    pub async fn set_xattr(
        &self,
        inode: u64,
        name: &str,
        value: &[u8],
        create: bool,
        replace: bool,
    ) -> Result<()> {
        let what = what_inode(inode);
        if value.len() > MAX_XATTR_VALUE_BYTES {
            return Err(ClientError::remote(
                &what,
                ErrorCode::InvalidArgument,
                format!("xattr value of {} bytes is too large", value.len()),
            ));
        }
        let req = pb::SetXattrRequest {
            inode,
            name: name.to_string(),
            value: value.to_vec(),
            create,
            replace,
            caller: self.caller(),
            request_id: self.request_id(),
        };
        self.inner
            .masters
            .call("setxattr", &what, self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.set_xattr(req).await }
            })
            .await?;
        Ok(())
    }

    /// Value of extended attribute `name` (missing → `ErrorCode::NoData`).
    pub async fn get_xattr(&self, inode: u64, name: &str) -> Result<Vec<u8>> {
        let what = what_inode(inode);
        let req = pb::GetXattrRequest {
            inode,
            name: name.to_string(),
            caller: self.caller(),
        };
        let resp = self
            .inner
            .masters
            .call("getxattr", &what, self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.get_xattr(req).await }
            })
            .await?;
        Ok(resp.value)
    }

    /// Names of `inode`'s extended attributes, sorted.
    pub async fn list_xattr(&self, inode: u64) -> Result<Vec<String>> {
        let what = what_inode(inode);
        let req = pb::ListXattrRequest {
            inode,
            caller: self.caller(),
        };
        let resp = self
            .inner
            .masters
            .call("listxattr", &what, self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.list_xattr(req).await }
            })
            .await?;
        Ok(resp.names)
    }

    /// Removes extended attribute `name` (missing → `ErrorCode::NoData`).
    pub async fn remove_xattr(&self, inode: u64, name: &str) -> Result<()> {
        let what = what_inode(inode);
        let req = pb::RemoveXattrRequest {
            inode,
            name: name.to_string(),
            caller: self.caller(),
            request_id: self.request_id(),
        };
        self.inner
            .masters
            .call("removexattr", &what, self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.remove_xattr(req).await }
            })
            .await?;
        Ok(())
    }

    /// Registers an open handle on `inode` (keeps an unlinked inode alive until closed);
    /// returns the handle id for [`Client::close_file`].
    pub async fn open_file(&self, inode: u64) -> Result<u64> {
        let what = what_inode(inode);
        let req = pb::OpenFileRequest {
            inode,
            session: self.inner.client_id.clone(),
            caller: self.caller(),
            request_id: self.request_id(),
        };
        let resp = self
            .inner
            .masters
            .call("open", &what, self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.open_file(req).await }
            })
            .await?;
        self.note_open(resp.handle, inode, resp.session_ttl_ms);
        Ok(resp.handle)
    }

    /// Remembers an open handle (re-sent with every session renewal) and keeps the session
    /// renewed.
    fn note_open(&self, handle: u64, inode: u64, session_ttl_ms: u64) {
        self.inner.handles.lock().insert(handle, inode);
        if session_ttl_ms != 0 {
            self.inner
                .session_ttl_ms
                .store(session_ttl_ms, Ordering::Relaxed);
        }
        self.start_session_renewal();
    }

    /// Releases a handle from [`Client::open_file`].
    pub async fn close_file(&self, handle: u64) -> Result<()> {
        let what = format!("handle {handle}");
        // Forget it first: even if the master cannot be told, renewals must not revive it
        // (the session expiry releases it on the master).
        self.inner.handles.lock().remove(&handle);
        let req = pb::CloseFileRequest {
            handle,
            session: self.inner.client_id.clone(),
            request_id: self.request_id(),
        };
        self.inner
            .masters
            .call("close", &what, self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.close_file(req).await }
            })
            .await?;
        Ok(())
    }

    /// File-system statistics.
    pub async fn statfs(&self) -> Result<StatFs> {
        let req = pb::StatFsRequest {
            caller: self.caller(),
        };
        let resp = self
            .inner
            .masters
            .call("statfs", "", self.deadline(), |mut m| {
                let req = req.clone();
                async move { m.stat_fs(req).await }
            })
            .await?;
        Ok(StatFs {
            capacity: resp.capacity,
            used: resp.used,
            files: resp.files,
            chunk_size: resp.chunk_size,
        })
    }

    /// Starts the background session renewal once per client (shared by clones). The task
    /// holds only a weak reference, so it ends when the last clone is dropped.
    fn start_session_renewal(&self) {
        if self.inner.session_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(renew_session_loop(weak));
    }
}

/// How long to wait before the next renewal, given the TTL the master announced.
fn renew_interval(ttl_ms: u64) -> Duration {
    if ttl_ms == 0 {
        return SESSION_RENEW_INTERVAL;
    }
    (Duration::from_millis(ttl_ms) / RENEWALS_PER_TTL)
        .clamp(MIN_SESSION_RENEW_INTERVAL, SESSION_RENEW_INTERVAL)
}

/// Renews the session (re-sending the open handles) until the client is gone.
async fn renew_session_loop(weak: Weak<Inner>) {
    let mut pause = SESSION_RENEW_INTERVAL;
    loop {
        if let Some(inner) = weak.upgrade() {
            pause = renew_interval(inner.session_ttl_ms.load(Ordering::Relaxed));
        }
        tokio::time::sleep(pause).await;
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let handles = inner
            .handles
            .lock()
            .iter()
            .map(|(h, i)| pb::OpenHandle {
                handle: *h,
                inode: *i,
            })
            .collect();
        let req = pb::RenewSessionRequest {
            session: inner.client_id.clone(),
            handles,
        };
        let deadline = tokio::time::Instant::now() + inner.timeout.min(pause);
        let res = inner
            .masters
            .call("renew session", "", deadline, |mut m| {
                let req = req.clone();
                async move { m.renew_session(req).await }
            })
            .await;
        match res {
            Ok(resp) if !resp.known => {
                // A restarted master, or one that expired us: the handles sent with this
                // renewal were registered again (orphans already removed are gone).
                tracing::warn!(
                    "master did not know this client's session; open handles re-registered"
                );
            }
            Ok(resp) => {
                if resp.session_ttl_ms != 0 {
                    inner
                        .session_ttl_ms
                        .store(resp.session_ttl_ms, Ordering::Relaxed);
                }
            }
            Err(e) => tracing::warn!(error = %e, "session renewal failed"),
        }
        // Drop the strong reference before sleeping so the client can go away.
        drop(inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_come_three_times_per_ttl_within_bounds() {
        assert_eq!(renew_interval(0), Duration::from_secs(3));
        assert_eq!(renew_interval(15_000), Duration::from_secs(3));
        assert_eq!(renew_interval(3_000), Duration::from_secs(1));
        assert_eq!(renew_interval(30), Duration::from_millis(100));
    }

    #[test]
    fn time_now_goes_on_the_wire_as_a_flag() {
        assert_eq!(wire_time(Some(SET_TIME_NOW)), (None, true));
        assert_eq!(wire_time(Some(42)), (Some(42), false));
        assert_eq!(wire_time(None), (None, false));
    }

    #[tokio::test]
    async fn with_caller_adds_the_primary_group_and_changes_only_the_caller() {
        let base = Client::offline_for_tests();
        let c = base.with_caller(Caller {
            uid: 1000,
            gid: 100,
            groups: vec![4],
        });
        let wire = c.caller().expect("always set");
        assert_eq!(wire.uid, 1000);
        assert_eq!(wire.gid, 100);
        assert_eq!(wire.groups, vec![4, 100]);
        assert_eq!(base.caller().expect("always set").uid, 0);
        assert!(Arc::ptr_eq(&base.inner, &c.inner));
    }
}
