//! The POSIX side of the namespace: inode-based lookups and plans (create, unlink, rename,
//! hard link, setattr, truncate, xattrs) with permission checks against a [`Cred`], and the
//! `apply` of the ops they produce.
//!
//! Plans never consult open handles (they are not in the namespace): a plan that may leave an
//! inode without links says which one, and the caller appends `RemoveOrphan` when no handle
//! holds it, so replay stays deterministic.

use std::collections::BTreeMap;

use rdfs_proto::ids::InodeId;
use rdfs_proto::limits::{MAX_FILE_SIZE, MAX_LIST_ENTRIES, MAX_NAME_LEN, MAX_PATH_LEN};
use rdfs_proto::path;
use rdfs_proto::ErrorCode;

use super::perm::{Cred, R, S_ISGID, S_ISUID, S_IXGRP, W, X};
use super::{Applied, Inode, ListPage, Namespace, NewKind, NodeKind, NsError, Op, MODE_MASK};

/// Largest extended-attribute value (Linux's XATTR_SIZE_MAX).
pub const MAX_XATTR_VALUE: usize = 64 * 1024;
/// Most extended attributes one inode may carry; bounds the memory one inode can hold.
pub const MAX_XATTRS_PER_INODE: usize = 128;
/// Namespaces an xattr name may use; `system.` (ACLs) is not supported.
const XATTR_PREFIXES: [&str; 3] = ["user.", "trusted.", "security."];
/// Xattr namespace only root may read or write.
const XATTR_TRUSTED: &str = "trusted.";

/// Result of planning an inode-based create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreatePlan {
    /// `O_CREAT` without `O_EXCL` on an existing file: return it unchanged.
    Existing(InodeId),
    New(Op),
}

/// The attributes a setattr request asks to change (already checked for shape).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetAttrPlan {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime_ns: Option<i64>,
    pub mtime_ns: Option<i64>,
    /// Set atime / mtime to `now` (UTIME_NOW: write permission suffices).
    pub atime_now: bool,
    pub mtime_now: bool,
}

/// What a planned setattr does: the ops, and the file range the client must zero (a shrink
/// that cut a chunk in the middle), as `(from, to)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAttrOps {
    pub ops: Vec<Op>,
    pub zero: Option<(u64, u64)>,
}

fn valid_name(name: &str) -> Result<(), NsError> {
    path::validate_name(name).map_err(|c| NsError::new(c, format!("name {name:?}")))
}

impl Namespace {
    /// The inode `id` or NotFound.
    pub fn get(&self, id: InodeId) -> Result<&Inode, NsError> {
        self.inodes
            .get(&id)
            .ok_or_else(|| NsError::new(ErrorCode::NotFound, format!("inode {id}")))
    }

    /// The directory `id`, or NotFound / NotADirectory.
    fn dir(&self, id: InodeId) -> Result<&Inode, NsError> {
        let ino = self.get(id)?;
        if !ino.is_dir() {
            return Err(NsError::new(
                ErrorCode::NotADirectory,
                format!("inode {id}"),
            ));
        }
        Ok(ino)
    }

    /// Inodes kept only for open handles.
    pub fn orphans(&self) -> impl Iterator<Item = InodeId> + '_ {
        self.orphans.iter().copied()
    }

    pub fn is_orphan(&self, id: InodeId) -> bool {
        self.orphans.contains(&id)
    }

    /// Number of inodes, directories and orphans included (statfs `files`).
    pub fn inode_count(&self) -> u64 {
        self.inodes.len() as u64
    }

    /// Resolves a path checking search (x) permission on every directory traversed.
    pub fn resolve_as(&self, p: &str, cred: &Cred) -> Result<InodeId, NsError> {
        let parts = path::components(p).map_err(|c| NsError::new(c, "path"))?;
        let mut cur = InodeId::ROOT;
        for part in parts {
            let dir = self.dir(cur)?;
            cred.check(dir, X, "search")?;
            cur = self
                .child(cur, part)
                .ok_or_else(|| NsError::new(ErrorCode::NotFound, "path"))?;
        }
        Ok(cur)
    }

    /// Resolves the parent of a non-root path with search checks; returns it and the name.
    pub fn resolve_parent_as<'p>(
        &self,
        p: &'p str,
        cred: &Cred,
    ) -> Result<(InodeId, &'p str), NsError> {
        let parts = path::components(p).map_err(|c| NsError::new(c, "path"))?;
        let Some((last, dirs)) = parts.split_last() else {
            return Err(NsError::new(ErrorCode::InvalidArgument, "the root"));
        };
        let mut cur = InodeId::ROOT;
        for part in dirs {
            let dir = self.dir(cur)?;
            cred.check(dir, X, "search")?;
            cur = self
                .child(cur, part)
                .ok_or_else(|| NsError::new(ErrorCode::NotFound, "parent directory"))?;
        }
        let dir = self.dir(cur)?;
        cred.check(dir, X, "search")?;
        Ok((cur, last))
    }

    /// Path-based mkdir (with parents): search on every existing directory traversed and
    /// write+search on the directory the first missing component is created in.
    pub fn check_path_create(&self, p: &str, cred: &Cred) -> Result<(), NsError> {
        let parts = path::components(p).map_err(|c| NsError::new(c, "path"))?;
        let mut cur = InodeId::ROOT;
        for part in parts {
            let Ok(dir) = self.dir(cur) else {
                // Not a directory: the plan reports it with its own code.
                return Ok(());
            };
            match self.child(cur, part) {
                Some(next) => {
                    cred.check(dir, X, "search")?;
                    cur = next;
                }
                None => return cred.check(dir, W | X, "create in directory"),
            }
        }
        Ok(())
    }

    /// Checks that `cred` may create entries in (or remove entries from) directory `dir`.
    pub fn check_dir_write(&self, dir: InodeId, cred: &Cred) -> Result<(), NsError> {
        let d = self.dir(dir)?;
        cred.check(d, W | X, "write to directory")
    }

    /// Path-based recursive delete: `cred` needs write+search on every directory in the
    /// subtree (each entry is removed from its own directory) and read to list it.
    pub fn check_subtree_delete(&self, root: InodeId, cred: &Cred) -> Result<(), NsError> {
        if cred.is_root() {
            return Ok(());
        }
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            let ino = self.get(id)?;
            if let NodeKind::Dir { entries } = &ino.kind {
                cred.check(ino, R | W | X, "delete directory contents")?;
                for child in entries.values() {
                    let c = self.get(*child)?;
                    cred.check_sticky(ino, c)?;
                    if c.is_dir() {
                        stack.push(*child);
                    }
                }
            }
        }
        Ok(())
    }

    /// Entry `name` of directory `parent` (search permission on `parent` needed).
    pub fn lookup(&self, parent: InodeId, name: &str, cred: &Cred) -> Result<&Inode, NsError> {
        let dir = self.dir(parent)?;
        if name.len() > MAX_NAME_LEN {
            return Err(NsError::new(ErrorCode::NameTooLong, "lookup"));
        }
        cred.check(dir, X, "search")?;
        let id = self
            .child(parent, name)
            .ok_or_else(|| NsError::new(ErrorCode::NotFound, format!("no entry {name:?}")))?;
        self.get(id)
    }

    /// A page of directory `dir` (read permission needed).
    pub fn read_dir(
        &self,
        dir: InodeId,
        start_after: &str,
        limit: u32,
        cred: &Cred,
    ) -> Result<ListPage<'_>, NsError> {
        let d = self.dir(dir)?;
        cred.check(d, R, "read directory")?;
        let limit = if limit == 0 {
            MAX_LIST_ENTRIES
        } else {
            limit.min(MAX_LIST_ENTRIES)
        };
        self.list(dir, start_after, limit as usize)
    }

    /// Target of symlink `id`.
    pub fn read_link(&self, id: InodeId) -> Result<&str, NsError> {
        match &self.get(id)?.kind {
            NodeKind::Symlink { target } => Ok(target),
            _ => Err(NsError::new(
                ErrorCode::InvalidArgument,
                format!("inode {id} is not a symlink"),
            )),
        }
    }

    /// Data access to file `id`: the owner always (a file created read-only stays writable
    /// through the descriptor that created it), others by mode bits.
    pub fn check_data_access(&self, id: InodeId, cred: &Cred, want: u32) -> Result<(), NsError> {
        let ino = self.get(id)?;
        if cred.uid == ino.uid {
            return Ok(());
        }
        cred.check(ino, want, if want & W != 0 { "write" } else { "read" })
    }

    #[allow(clippy::too_many_arguments)] // one per field of the request
    pub fn plan_create_at(
        &self,
        cred: &Cred,
        parent: InodeId,
        name: &str,
        kind: NewKind,
        mode: u32,
        exclusive: bool,
        replication: u32,
        time_ns: i64,
    ) -> Result<CreatePlan, NsError> {
        let dir = self.dir(parent)?;
        valid_name(name)?;
        if let NewKind::Symlink(target) = &kind {
            if target.is_empty() || target.len() > MAX_PATH_LEN || target.contains('\0') {
                return Err(NsError::new(ErrorCode::InvalidArgument, "symlink target"));
            }
        }
        cred.check(dir, X, "search")?;
        if let Some(id) = self.child(parent, name) {
            let existing = self.get(id)?;
            return match kind {
                NewKind::File if !exclusive => {
                    if existing.is_dir() {
                        Err(NsError::new(ErrorCode::IsADirectory, "create"))
                    } else {
                        Ok(CreatePlan::Existing(id))
                    }
                }
                _ => Err(NsError::new(ErrorCode::AlreadyExists, format!("{name:?}"))),
            };
        }
        cred.check(dir, W | X, "create in directory")?;
        let setgid_parent = dir.mode & S_ISGID != 0;
        let gid = if setgid_parent { dir.gid } else { cred.gid };
        let mut mode = mode & MODE_MASK;
        if setgid_parent && kind == NewKind::Dir {
            mode |= S_ISGID;
        } else if mode & S_ISGID != 0 && !cred.is_root() && !cred.in_group(gid) {
            // Linux drops setgid on a new file whose group the creator is not in.
            mode &= !S_ISGID;
        }
        Ok(CreatePlan::New(Op::CreateNode {
            parent,
            name: name.to_string(),
            inode: self.next_inode(),
            kind: kind.clone(),
            mode,
            uid: cred.uid,
            gid,
            replication: if kind == NewKind::File {
                replication
            } else {
                0
            },
            time_ns,
        }))
    }

    /// Plans removing entry `name` of `parent`; also returns the inode the unlink leaves
    /// without links (the caller decides whether it goes now or stays for open handles).
    pub fn plan_unlink_at(
        &self,
        cred: &Cred,
        parent: InodeId,
        name: &str,
        is_dir: bool,
        time_ns: i64,
    ) -> Result<(Op, Option<InodeId>), NsError> {
        let dir = self.dir(parent)?;
        if name.len() > MAX_NAME_LEN {
            return Err(NsError::new(ErrorCode::NameTooLong, "unlink"));
        }
        cred.check(dir, X, "search")?;
        let id = self
            .child(parent, name)
            .ok_or_else(|| NsError::new(ErrorCode::NotFound, format!("no entry {name:?}")))?;
        let victim = self.get(id)?;
        match (&victim.kind, is_dir) {
            (NodeKind::Dir { entries }, true) => {
                if !entries.is_empty() {
                    return Err(NsError::new(ErrorCode::DirectoryNotEmpty, "rmdir"));
                }
            }
            (NodeKind::Dir { .. }, false) => {
                return Err(NsError::new(ErrorCode::IsADirectory, "unlink"))
            }
            (_, true) => return Err(NsError::new(ErrorCode::NotADirectory, "rmdir")),
            (_, false) => {}
        }
        cred.check(dir, W | X, "remove from directory")?;
        cred.check_sticky(dir, victim)?;
        let orphan = (!victim.is_dir() && victim.nlink <= 1).then_some(id);
        Ok((
            Op::Unlink {
                parent,
                name: name.to_string(),
                time_ns,
            },
            orphan,
        ))
    }

    /// Plans a POSIX rename; `None` when both names are links to the same inode (nothing to
    /// do). Also returns the replaced inode left without links, if any.
    #[allow(clippy::too_many_arguments)] // one per field of the request
    pub fn plan_rename_at(
        &self,
        cred: &Cred,
        src_parent: InodeId,
        src_name: &str,
        dst_parent: InodeId,
        dst_name: &str,
        no_replace: bool,
        time_ns: i64,
    ) -> Result<Option<(Op, Option<InodeId>)>, NsError> {
        let sdir = self.dir(src_parent)?;
        let ddir = self.dir(dst_parent)?;
        if src_name.len() > MAX_NAME_LEN {
            return Err(NsError::new(ErrorCode::NameTooLong, "rename source"));
        }
        valid_name(dst_name)?;
        cred.check(sdir, X, "search")?;
        cred.check(ddir, X, "search")?;
        let src_id = self
            .child(src_parent, src_name)
            .ok_or_else(|| NsError::new(ErrorCode::NotFound, format!("no entry {src_name:?}")))?;
        let src = self.get(src_id)?;
        let src_is_dir = src.is_dir();
        if src_is_dir && self.is_within(dst_parent, src_id) {
            return Err(NsError::new(
                ErrorCode::InvalidArgument,
                "cannot move a directory into its own subtree",
            ));
        }
        let mut orphan = None;
        if let Some(dst_id) = self.child(dst_parent, dst_name) {
            if dst_id == src_id {
                return Ok(None);
            }
            if no_replace {
                return Err(NsError::new(ErrorCode::AlreadyExists, "rename destination"));
            }
            let dst = self.get(dst_id)?;
            match (src_is_dir, &dst.kind) {
                (false, NodeKind::Dir { .. }) => {
                    return Err(NsError::new(ErrorCode::IsADirectory, "rename destination"))
                }
                (true, NodeKind::Dir { entries }) if !entries.is_empty() => {
                    return Err(NsError::new(
                        ErrorCode::DirectoryNotEmpty,
                        "rename destination",
                    ))
                }
                (true, NodeKind::Dir { .. }) => {}
                (true, _) => {
                    return Err(NsError::new(ErrorCode::NotADirectory, "rename destination"))
                }
                (false, _) => {}
            }
            cred.check_sticky(ddir, dst)?;
            if !dst.is_dir() && dst.nlink <= 1 {
                orphan = Some(dst_id);
            }
        }
        cred.check(sdir, W | X, "rename from directory")?;
        cred.check(ddir, W | X, "rename into directory")?;
        cred.check_sticky(sdir, src)?;
        if src_is_dir && src_parent != dst_parent {
            // Its ".." entry changes.
            cred.check(src, W, "move directory")?;
        }
        Ok(Some((
            Op::RenameAt {
                src_parent,
                src_name: src_name.to_string(),
                dst_parent,
                dst_name: dst_name.to_string(),
                time_ns,
            },
            orphan,
        )))
    }

    pub fn plan_link(
        &self,
        cred: &Cred,
        inode: InodeId,
        parent: InodeId,
        name: &str,
        time_ns: i64,
    ) -> Result<Op, NsError> {
        let target = self.get(inode)?;
        if target.is_dir() {
            return Err(NsError::new(
                ErrorCode::OperationNotPermitted,
                "hard link to a directory",
            ));
        }
        if target.nlink == 0 {
            return Err(NsError::new(ErrorCode::NotFound, "inode has no links left"));
        }
        let dir = self.dir(parent)?;
        valid_name(name)?;
        cred.check(dir, X, "search")?;
        if self.child(parent, name).is_some() {
            return Err(NsError::new(ErrorCode::AlreadyExists, format!("{name:?}")));
        }
        cred.check(dir, W | X, "link into directory")?;
        Ok(Op::Link {
            inode,
            parent,
            name: name.to_string(),
            time_ns,
        })
    }

    /// Plans chmod / chown / truncate / utimens. `chunk_size` decides which chunks a shrink
    /// drops and which bytes the client must zero.
    pub fn plan_set_attr(
        &self,
        cred: &Cred,
        id: InodeId,
        req: &SetAttrPlan,
        chunk_size: u64,
        now_ns: i64,
    ) -> Result<SetAttrOps, NsError> {
        let ino = self.get(id)?;
        let mut ops = Vec::new();
        let mut zero = None;
        let mut mode = req.mode.map(|m| m & MODE_MASK);
        if mode.is_some() && !cred.owns(ino) {
            return Err(NsError::new(
                ErrorCode::OperationNotPermitted,
                "chmod: not the owner",
            ));
        }
        let new_gid = req.gid.filter(|g| *g != ino.gid);
        let new_uid = req.uid.filter(|u| *u != ino.uid);
        if new_uid.is_some() && !cred.is_root() {
            return Err(NsError::new(
                ErrorCode::OperationNotPermitted,
                "chown: only root may change the owner",
            ));
        }
        if let Some(g) = new_gid {
            if !(cred.is_root() || cred.uid == ino.uid && cred.in_group(g)) {
                return Err(NsError::new(
                    ErrorCode::OperationNotPermitted,
                    "chgrp: not the owner or not a member of the group",
                ));
            }
        }
        if (req.uid.is_some() || req.gid.is_some()) && !cred.is_root() && cred.uid != ino.uid {
            return Err(NsError::new(
                ErrorCode::OperationNotPermitted,
                "chown: not the owner",
            ));
        }
        if let Some(m) = mode.as_mut() {
            let group = new_gid.unwrap_or(ino.gid);
            if !cred.is_root() && !cred.in_group(group) && !ino.is_dir() {
                // chmod by a non-member cannot set setgid (it would grant the group).
                *m &= !S_ISGID;
            }
        }
        if (new_uid.is_some() || new_gid.is_some()) && !ino.is_dir() && mode.is_none() {
            // chown of a non-directory clears setuid, and setgid when it means group-exec.
            let mut m = ino.mode & !S_ISUID;
            if m & S_IXGRP != 0 {
                m &= !S_ISGID;
            }
            if m != ino.mode {
                mode = Some(m);
            }
        }
        let explicit_times = req.atime_ns.is_some() || req.mtime_ns.is_some();
        if explicit_times && !cred.owns(ino) {
            return Err(NsError::new(
                ErrorCode::OperationNotPermitted,
                "utimes: only the owner may set explicit times",
            ));
        }
        if (req.atime_now || req.mtime_now) && !cred.owns(ino) {
            cred.check(ino, W, "utimes")?;
        }
        let atime = if req.atime_now {
            Some(now_ns)
        } else {
            req.atime_ns
        };
        let mtime = if req.mtime_now {
            Some(now_ns)
        } else {
            req.mtime_ns
        };
        if let Some(size) = req.size {
            let NodeKind::File { size: old, chunks } = &ino.kind else {
                return Err(if ino.is_dir() {
                    NsError::new(ErrorCode::IsADirectory, "truncate")
                } else {
                    NsError::new(ErrorCode::InvalidArgument, "truncate: not a regular file")
                });
            };
            if size > MAX_FILE_SIZE {
                return Err(NsError::new(
                    ErrorCode::InvalidArgument,
                    "truncate: size too large",
                ));
            }
            if chunk_size == 0 {
                return Err(NsError::new(ErrorCode::Internal, "chunk size 0"));
            }
            self.check_data_access(id, cred, W)?;
            let drop_from_index = size.div_ceil(chunk_size);
            if size < *old && size % chunk_size != 0 && chunks.contains_key(&(size / chunk_size)) {
                let chunk_end = (size / chunk_size + 1) * chunk_size;
                zero = Some((size, chunk_end.min(*old)));
            }
            ops.push(Op::Truncate {
                inode: id,
                size,
                drop_from_index,
                time_ns: now_ns,
            });
        }
        let changes = mode.is_some()
            || new_uid.is_some()
            || new_gid.is_some()
            || atime.is_some()
            || mtime.is_some();
        // A chown to the same ids still updates ctime, as on Linux.
        if changes || req.uid.is_some() || req.gid.is_some() {
            ops.push(Op::SetAttr {
                inode: id,
                mode,
                uid: new_uid,
                gid: new_gid,
                atime_ns: atime,
                mtime_ns: mtime,
                ctime_ns: now_ns,
            });
        }
        Ok(SetAttrOps { ops, zero })
    }

    /// Checks an xattr name and whether `cred` may touch it (`write` for set/remove).
    fn check_xattr(
        &self,
        ino: &Inode,
        name: &str,
        cred: &Cred,
        write: bool,
    ) -> Result<(), NsError> {
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains('\0') {
            return Err(NsError::new(ErrorCode::InvalidArgument, "xattr name"));
        }
        if !XATTR_PREFIXES
            .iter()
            .any(|p| name.starts_with(p) && name.len() > p.len())
        {
            return Err(NsError::new(
                ErrorCode::NotSupported,
                format!("xattr namespace of {name:?}"),
            ));
        }
        if name.starts_with(XATTR_TRUSTED) && !cred.is_root() {
            return Err(NsError::new(
                ErrorCode::OperationNotPermitted,
                "trusted xattrs need root",
            ));
        }
        if write {
            if matches!(ino.kind, NodeKind::Symlink { .. } | NodeKind::Fifo)
                && name.starts_with("user.")
            {
                return Err(NsError::new(
                    ErrorCode::OperationNotPermitted,
                    "user xattrs on a symlink or FIFO",
                ));
            }
            if !cred.owns(ino) {
                cred.check(ino, W, "set xattr")?;
            }
        } else {
            cred.check(ino, R, "get xattr")?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)] // one per field of the request
    pub fn plan_set_xattr(
        &self,
        cred: &Cred,
        id: InodeId,
        name: &str,
        value: &[u8],
        create: bool,
        replace: bool,
        time_ns: i64,
    ) -> Result<Op, NsError> {
        let ino = self.get(id)?;
        self.check_xattr(ino, name, cred, true)?;
        if value.len() > MAX_XATTR_VALUE {
            return Err(NsError::new(
                ErrorCode::InvalidArgument,
                "xattr value too large",
            ));
        }
        let exists = ino.xattrs.contains_key(name);
        if create && exists {
            return Err(NsError::new(
                ErrorCode::AlreadyExists,
                format!("xattr {name:?}"),
            ));
        }
        if replace && !exists {
            return Err(NsError::new(ErrorCode::NoData, format!("xattr {name:?}")));
        }
        if !exists && ino.xattrs.len() >= MAX_XATTRS_PER_INODE {
            return Err(NsError::new(
                ErrorCode::NoSpace,
                "too many xattrs on this inode",
            ));
        }
        Ok(Op::SetXattr {
            inode: id,
            name: name.to_string(),
            value: value.to_vec(),
            time_ns,
        })
    }

    pub fn get_xattr(&self, cred: &Cred, id: InodeId, name: &str) -> Result<&[u8], NsError> {
        let ino = self.get(id)?;
        self.check_xattr(ino, name, cred, false)?;
        ino.xattrs
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| NsError::new(ErrorCode::NoData, format!("xattr {name:?}")))
    }

    /// Names of `id`'s xattrs; `trusted.*` only for root.
    pub fn list_xattr(&self, cred: &Cred, id: InodeId) -> Result<Vec<String>, NsError> {
        let ino = self.get(id)?;
        Ok(ino
            .xattrs
            .keys()
            .filter(|n| cred.is_root() || !n.starts_with(XATTR_TRUSTED))
            .cloned()
            .collect())
    }

    pub fn plan_remove_xattr(
        &self,
        cred: &Cred,
        id: InodeId,
        name: &str,
        time_ns: i64,
    ) -> Result<Op, NsError> {
        let ino = self.get(id)?;
        self.check_xattr(ino, name, cred, true)?;
        if !ino.xattrs.contains_key(name) {
            return Err(NsError::new(ErrorCode::NoData, format!("xattr {name:?}")));
        }
        Ok(Op::RemoveXattr {
            inode: id,
            name: name.to_string(),
            time_ns,
        })
    }

    /// Adds `delta` to a directory's link count (a subdirectory's "..").
    pub(super) fn add_links(&mut self, dir: InodeId, delta: i32) {
        if let Some(d) = self.inodes.get_mut(&dir) {
            d.nlink = d.nlink.saturating_add_signed(delta);
        }
    }

    /// Applies the ops added for the POSIX surface.
    pub(super) fn apply_posix(&mut self, op: &Op) -> Result<Applied, NsError> {
        match op {
            Op::CreateNode {
                parent,
                name,
                inode,
                kind,
                mode,
                uid,
                gid,
                replication,
                time_ns,
            } => {
                let kind = match kind {
                    NewKind::File => NodeKind::File {
                        size: 0,
                        chunks: BTreeMap::new(),
                    },
                    NewKind::Dir => NodeKind::Dir {
                        entries: BTreeMap::new(),
                    },
                    NewKind::Symlink(target) => NodeKind::Symlink {
                        target: target.clone(),
                    },
                    NewKind::Fifo => NodeKind::Fifo,
                };
                let attrs = (*mode, *uid, *gid, *replication, *time_ns);
                self.insert_node(*parent, name, *inode, kind, attrs)?;
                Ok(Applied::default())
            }
            Op::Unlink {
                parent,
                name,
                time_ns,
            } => self.unlink(*parent, name, *time_ns),
            Op::RemoveOrphan { inode } => self.remove_orphan(*inode),
            Op::RenameAt {
                src_parent,
                src_name,
                dst_parent,
                dst_name,
                time_ns,
            } => self.rename_at(*src_parent, src_name, *dst_parent, dst_name, *time_ns),
            Op::Link {
                inode,
                parent,
                name,
                time_ns,
            } => {
                valid_name(name)?;
                let target = self.get(*inode)?;
                if target.is_dir() || target.nlink == 0 {
                    return Err(NsError::new(
                        ErrorCode::Internal,
                        format!("link to inode {inode}"),
                    ));
                }
                let entries = self.entries_mut(*parent)?;
                if entries.contains_key(name.as_str()) {
                    return Err(NsError::new(ErrorCode::AlreadyExists, name.clone()));
                }
                entries.insert(name.clone(), *inode);
                if let Some(t) = self.inodes.get_mut(inode) {
                    t.nlink += 1;
                    t.ctime_ns = *time_ns;
                }
                self.touch_dir(*parent, *time_ns);
                Ok(Applied::default())
            }
            Op::SetAttr {
                inode,
                mode,
                uid,
                gid,
                atime_ns,
                mtime_ns,
                ctime_ns,
            } => {
                let ino = self
                    .inodes
                    .get_mut(inode)
                    .ok_or_else(|| NsError::new(ErrorCode::NotFound, format!("inode {inode}")))?;
                if let Some(m) = mode {
                    ino.mode = m & MODE_MASK;
                }
                if let Some(u) = uid {
                    ino.uid = *u;
                }
                if let Some(g) = gid {
                    ino.gid = *g;
                }
                if let Some(t) = atime_ns {
                    ino.atime_ns = *t;
                }
                if let Some(t) = mtime_ns {
                    ino.mtime_ns = *t;
                }
                ino.ctime_ns = *ctime_ns;
                Ok(Applied::default())
            }
            Op::Truncate {
                inode,
                size,
                drop_from_index,
                time_ns,
            } => {
                let ino = self.file_mut(*inode)?;
                ino.mtime_ns = *time_ns;
                ino.ctime_ns = *time_ns;
                let NodeKind::File { size: cur, chunks } = &mut ino.kind else {
                    return Err(NsError::new(ErrorCode::Internal, "truncate of a non-file"));
                };
                *cur = *size;
                let dropped = chunks.split_off(drop_from_index);
                Ok(Applied {
                    freed_chunks: self.release_chunks(dropped.into_values().collect()),
                })
            }
            Op::SetXattr {
                inode,
                name,
                value,
                time_ns,
            } => {
                let ino = self
                    .inodes
                    .get_mut(inode)
                    .ok_or_else(|| NsError::new(ErrorCode::NotFound, format!("inode {inode}")))?;
                ino.xattrs.insert(name.clone(), value.clone());
                ino.ctime_ns = *time_ns;
                Ok(Applied::default())
            }
            Op::RemoveXattr {
                inode,
                name,
                time_ns,
            } => {
                let ino = self
                    .inodes
                    .get_mut(inode)
                    .ok_or_else(|| NsError::new(ErrorCode::NotFound, format!("inode {inode}")))?;
                ino.xattrs.remove(name);
                ino.ctime_ns = *time_ns;
                Ok(Applied::default())
            }
            other => Err(NsError::new(
                ErrorCode::Internal,
                format!("op {} is not a POSIX op", other.kind()),
            )),
        }
    }

    /// Removes one entry: an empty directory goes, any other inode loses a link and becomes
    /// an orphan at zero.
    fn unlink(&mut self, parent: InodeId, name: &str, time_ns: i64) -> Result<Applied, NsError> {
        let id = self
            .child(parent, name)
            .ok_or_else(|| NsError::new(ErrorCode::NotFound, name.to_string()))?;
        if let Some(NodeKind::Dir { entries }) = self.inodes.get(&id).map(|i| &i.kind) {
            if !entries.is_empty() {
                return Err(NsError::new(ErrorCode::DirectoryNotEmpty, name.to_string()));
            }
        }
        self.entries_mut(parent)?.remove(name);
        self.trash.remove(&id);
        self.release_link(id, parent, name, time_ns);
        self.touch_dir(parent, time_ns);
        Ok(Applied::default())
    }

    /// Drops one link to `id` whose entry `name` in `parent` was just removed.
    fn release_link(&mut self, id: InodeId, parent: InodeId, name: &str, time_ns: i64) {
        let Some(ino) = self.inodes.get_mut(&id) else {
            return;
        };
        if ino.is_dir() {
            self.inodes.remove(&id);
            self.trash.remove(&id);
            self.add_links(parent, -1);
            return;
        }
        ino.nlink = ino.nlink.saturating_sub(1);
        ino.ctime_ns = time_ns;
        if ino.nlink == 0 {
            self.orphans.insert(id);
            return;
        }
        if ino.parent != parent || ino.name != name {
            return;
        }
        // The recorded name was this link: point it at a remaining one. Only hard-linked
        // files unlinked by that name pay for the scan (same directory first).
        let in_parent = self.dir_entries(parent).and_then(|entries| {
            entries
                .iter()
                .find(|(_, v)| **v == id)
                .map(|(n, _)| (parent, n.clone()))
        });
        let found = in_parent.or_else(|| {
            self.inodes.values().find_map(|d| match &d.kind {
                NodeKind::Dir { entries } => entries
                    .iter()
                    .find(|(_, v)| **v == id)
                    .map(|(n, _)| (d.id, n.clone())),
                _ => None,
            })
        });
        if let (Some((p, n)), Some(ino)) = (found, self.inodes.get_mut(&id)) {
            ino.parent = p;
            ino.name = n;
        }
    }

    pub(super) fn remove_orphan(&mut self, id: InodeId) -> Result<Applied, NsError> {
        if !self.orphans.remove(&id) {
            return Err(NsError::new(
                ErrorCode::Internal,
                format!("inode {id} is not an orphan"),
            ));
        }
        let dropped = match self.inodes.remove(&id).map(|i| i.kind) {
            Some(NodeKind::File { chunks, .. }) => chunks.into_values().collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        self.trash.remove(&id);
        Ok(Applied {
            freed_chunks: self.release_chunks(dropped),
        })
    }

    pub(super) fn rename_at(
        &mut self,
        src_parent: InodeId,
        src_name: &str,
        dst_parent: InodeId,
        dst_name: &str,
        time_ns: i64,
    ) -> Result<Applied, NsError> {
        valid_name(dst_name)?;
        let id = self
            .child(src_parent, src_name)
            .ok_or_else(|| NsError::new(ErrorCode::NotFound, src_name.to_string()))?;
        let is_dir = self.dir_entries(id).is_some();
        if is_dir && self.is_within(dst_parent, id) {
            return Err(NsError::new(
                ErrorCode::InvalidArgument,
                "rename into own subtree",
            ));
        }
        self.entries_mut(dst_parent)?;
        let replaced = self.child(dst_parent, dst_name);
        if replaced == Some(id) {
            return Ok(Applied::default());
        }
        if let Some(old) = replaced {
            match self.dir_entries(old) {
                Some(entries) if !entries.is_empty() => {
                    return Err(NsError::new(
                        ErrorCode::DirectoryNotEmpty,
                        dst_name.to_string(),
                    ))
                }
                _ => {}
            }
            self.entries_mut(dst_parent)?.remove(dst_name);
            self.release_link(old, dst_parent, dst_name, time_ns);
        }
        self.entries_mut(src_parent)?.remove(src_name);
        self.entries_mut(dst_parent)?
            .insert(dst_name.to_string(), id);
        // A moved entry is no longer where its trash record says (restore, or a plain mv).
        self.trash.remove(&id);
        if is_dir && src_parent != dst_parent {
            self.add_links(src_parent, -1);
            self.add_links(dst_parent, 1);
        }
        if let Some(ino) = self.inodes.get_mut(&id) {
            ino.parent = dst_parent;
            ino.name = dst_name.to_string();
            ino.ctime_ns = time_ns;
        }
        self.touch_dir(src_parent, time_ns);
        self.touch_dir(dst_parent, time_ns);
        Ok(Applied::default())
    }
}
