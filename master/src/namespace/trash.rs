//! The per-user trash: `dfs rm` moves an entry to `/.Trash/<uid>/<deletion time ns>` and
//! records where it was and when (`trash`, in checkpoints); `restore` moves it back; after the
//! grace period the master purges it (logged like any removal), and its chunks become garbage.
//!
//! `/.Trash` (root-owned, sticky, 1777) and `/.Trash/<uid>` (the user's, 0700) are created on
//! demand by ordinary `Mkdir` ops in the same mutation. `/.Trash` is hidden from listings of
//! the root (and so from FUSE readdir) but can be looked up. FUSE unlink and the library's
//! `delete` never use the trash.
//!
//! Invariant: a `trash` record names an inode whose one entry is its name in its user's trash
//! directory; moving the inode (rename, restore), unlinking that entry or removing the inode
//! drops the record.

use rdfs_proto::ids::InodeId;
use rdfs_proto::{path, ErrorCode};

use super::perm::Cred;
use super::{Applied, Inode, Namespace, NewNode, NodeKind, NsError, Op, TrashEntry};

/// Name of the trash directory under the root.
pub const TRASH_DIR: &str = ".Trash";
/// Mode of `/.Trash`: everyone may create their own directory, nobody may remove another's.
const TRASH_ROOT_MODE: u32 = 0o1777;
/// Mode of `/.Trash/<uid>`: private to its user.
const TRASH_USER_MODE: u32 = 0o700;
/// Most `.N` suffixes tried when two deletions of one user share a timestamp.
const MAX_NAME_SUFFIX: u32 = 1000;

/// One trashed entry as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrashItem<'a> {
    pub inode: &'a Inode,
    pub entry: &'a TrashEntry,
}

/// Which trashed entry a restore means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreWhich<'a> {
    /// The most recently deleted entry that was at this path.
    Origin(&'a str),
    /// The entry with this name in the user's trash directory.
    Name(&'a str),
}

impl Namespace {
    /// Whether `p` is `/.Trash` or inside it (removals there are permanent).
    pub fn is_trash_path(p: &str) -> bool {
        let trash = format!("/{TRASH_DIR}");
        p == trash || p.starts_with(&format!("{trash}/"))
    }

    /// Plans `rm` to the trash: the same checks as a removal (write and search on the parent,
    /// sticky rule, every directory of a recursive removal), then the trash directories as
    /// needed and `MoveToTrash`.
    pub fn plan_trash(
        &self,
        cred: &Cred,
        p: &str,
        recursive: bool,
        time_ns: i64,
    ) -> Result<Vec<Op>, NsError> {
        let (parent, name) = self.resolve_parent_as(p, cred)?;
        let id = self
            .child(parent, name)
            .ok_or_else(|| NsError::new(ErrorCode::NotFound, "remove"))?;
        let victim = self.get(id)?;
        if let NodeKind::Dir { entries } = &victim.kind {
            if !entries.is_empty() && !recursive {
                return Err(NsError::new(ErrorCode::DirectoryNotEmpty, "remove"));
            }
            if recursive {
                self.check_subtree_delete(id, cred)?;
            }
        }
        self.check_dir_write(parent, cred)?;
        cred.check_sticky(self.get(parent)?, victim)?;
        let mut ops = Vec::new();
        let mut next = self.next_inode().0;
        let mut mkdir = |parent: InodeId, name: String, mode: u32, uid: u32, gid: u32| {
            let inode = InodeId(next);
            next += 1;
            ops.push(Op::Mkdir {
                parent,
                name,
                inode,
                mode,
                uid,
                gid,
                time_ns,
            });
            inode
        };
        let root = match self.child(InodeId::ROOT, TRASH_DIR) {
            Some(t) if self.get(t)?.is_dir() => t,
            Some(_) => {
                return Err(NsError::new(
                    ErrorCode::NotADirectory,
                    format!("/{TRASH_DIR} is not a directory"),
                ))
            }
            None => mkdir(InodeId::ROOT, TRASH_DIR.into(), TRASH_ROOT_MODE, 0, 0),
        };
        let uid_name = cred.uid.to_string();
        let user_dir = match self.child(root, &uid_name) {
            Some(d) if self.get(d)?.is_dir() => d,
            Some(_) => {
                return Err(NsError::new(
                    ErrorCode::NotADirectory,
                    format!("/{TRASH_DIR}/{uid_name} is not a directory"),
                ))
            }
            None => mkdir(root, uid_name, TRASH_USER_MODE, cred.uid, cred.gid),
        };
        let entry = self.free_entry_name(user_dir, time_ns)?;
        ops.push(Op::MoveToTrash {
            parent,
            name: name.to_string(),
            user_dir,
            entry,
            uid: cred.uid,
            origin: p.to_string(),
            time_ns,
        });
        Ok(ops)
    }

    /// `<time_ns>`, or `<time_ns>.N` when that name is taken.
    fn free_entry_name(&self, user_dir: InodeId, time_ns: i64) -> Result<String, NsError> {
        let base = time_ns.to_string();
        if self.child(user_dir, &base).is_none() {
            return Ok(base);
        }
        (1..MAX_NAME_SUFFIX)
            .map(|n| format!("{base}.{n}"))
            .find(|n| self.child(user_dir, n).is_none())
            .ok_or_else(|| NsError::new(ErrorCode::Busy, "too many deletions at one instant"))
    }

    pub(super) fn apply_move_to_trash(
        &mut self,
        parent: InodeId,
        name: &str,
        user_dir: InodeId,
        entry: &str,
        trashed: TrashEntry,
        time_ns: i64,
    ) -> Result<Applied, NsError> {
        let id = self
            .child(parent, name)
            .ok_or_else(|| NsError::new(ErrorCode::NotFound, name.to_string()))?;
        if self.child(user_dir, entry).is_some() {
            return Err(NsError::new(
                ErrorCode::Internal,
                format!("trash entry {entry} exists"),
            ));
        }
        self.rename_at(parent, name, user_dir, entry, time_ns)?;
        self.trash.insert(id, trashed);
        Ok(Applied::default())
    }

    pub(super) fn apply_untrash(
        &mut self,
        user_dir: InodeId,
        entry: &str,
        dst_parent: InodeId,
        dst_name: &str,
        time_ns: i64,
    ) -> Result<Applied, NsError> {
        if self.child(dst_parent, dst_name).is_some() {
            return Err(NsError::new(ErrorCode::AlreadyExists, dst_name.to_string()));
        }
        // rename_at drops the trash record of the moved inode.
        self.rename_at(user_dir, entry, dst_parent, dst_name, time_ns)
    }

    /// Trashed entries of `uid` (every user's with `None`), newest first.
    pub fn trash_items(&self, uid: Option<u32>) -> Vec<TrashItem<'_>> {
        let mut out: Vec<TrashItem<'_>> = self
            .trash
            .iter()
            .filter(|(_, e)| uid.is_none_or(|u| e.uid == u))
            .filter_map(|(id, entry)| {
                Some(TrashItem {
                    inode: self.inodes.get(id)?,
                    entry,
                })
            })
            .collect();
        out.sort_by(|a, b| {
            (b.entry.deleted_ns, &b.inode.name).cmp(&(a.entry.deleted_ns, &a.inode.name))
        });
        out
    }

    /// Trashed inodes deleted at or before `cutoff_ns`, oldest first, at most `limit`.
    pub fn expired_trash(&self, cutoff_ns: i64, limit: usize) -> Vec<InodeId> {
        let mut old: Vec<(i64, InodeId)> = self
            .trash
            .iter()
            .filter(|(_, e)| e.deleted_ns <= cutoff_ns)
            .map(|(id, e)| (e.deleted_ns, *id))
            .collect();
        old.sort();
        old.into_iter().take(limit).map(|(_, id)| id).collect()
    }

    /// Plans removing trashed inode `id` for good: a directory goes with its subtree
    /// (`Delete`); a file loses its trash link (`Unlink`) and the returned orphan goes too
    /// unless an open handle holds it.
    pub fn plan_purge(&self, id: InodeId, time_ns: i64) -> Result<(Op, Option<InodeId>), NsError> {
        if !self.trash.contains_key(&id) {
            return Err(NsError::new(
                ErrorCode::NotFound,
                format!("inode {id} is not in the trash"),
            ));
        }
        let ino = self.get(id)?;
        if self.child(ino.parent, &ino.name) != Some(id) {
            return Err(NsError::new(
                ErrorCode::Internal,
                format!("trashed inode {id} has no entry"),
            ));
        }
        let (parent, name) = (ino.parent, ino.name.clone());
        if ino.is_dir() {
            return Ok((
                Op::Delete {
                    parent,
                    name,
                    time_ns,
                },
                None,
            ));
        }
        let orphan = (ino.nlink <= 1).then_some(id);
        Ok((
            Op::Unlink {
                parent,
                name,
                time_ns,
            },
            orphan,
        ))
    }

    /// Plans restoring a trashed entry of `cred`'s (root: anyone's) to `dst` (default: where
    /// it was), creating missing parent directories. Returns the ops and the path restored to.
    pub fn plan_restore(
        &self,
        cred: &Cred,
        which: RestoreWhich<'_>,
        dst: Option<&str>,
        time_ns: i64,
    ) -> Result<(Vec<Op>, String), NsError> {
        let mine = |e: &TrashEntry| cred.is_root() || e.uid == cred.uid;
        let item = self
            .trash_items(None)
            .into_iter()
            .filter(|t| mine(t.entry))
            .find(|t| match which {
                RestoreWhich::Origin(p) => t.entry.origin == p,
                RestoreWhich::Name(n) => t.inode.name == n,
            })
            .ok_or_else(|| NsError::new(ErrorCode::NotFound, "no such entry in the trash"))?;
        let target = dst.unwrap_or(&item.entry.origin).to_string();
        let parts = path::components(&target).map_err(|c| NsError::new(c, "restore path"))?;
        let Some((dst_name, dirs)) = parts.split_last() else {
            return Err(NsError::new(
                ErrorCode::InvalidArgument,
                "cannot restore as the root",
            ));
        };
        let dst_name = dst_name.to_string();
        let parent_path = format!("/{}", dirs.join("/"));
        let mut ops = Vec::new();
        let dst_parent = match self.resolve_as(&parent_path, cred) {
            Ok(id) => {
                if self.child(id, &dst_name).is_some() {
                    return Err(NsError::new(
                        ErrorCode::AlreadyExists,
                        format!("restore target {target}"),
                    ));
                }
                self.check_dir_write(id, cred)?;
                id
            }
            Err(e) if e.code == ErrorCode::NotFound => {
                self.check_path_create(&parent_path, cred)?;
                let node = NewNode {
                    mode: 0o755,
                    uid: cred.uid,
                    gid: cred.gid,
                    replication: 0,
                    time_ns,
                };
                ops = self.plan_mkdir(&parent_path, &node, true)?;
                InodeId(self.next_inode().0 + ops.len() as u64 - 1)
            }
            Err(e) => return Err(e),
        };
        ops.push(Op::Untrash {
            user_dir: item.inode.parent,
            entry: item.inode.name.clone(),
            dst_parent,
            dst_name,
            time_ns,
        });
        Ok((ops, target))
    }
}
