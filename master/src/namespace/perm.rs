//! POSIX permission checks against a caller's credentials.
//!
//! Root (uid 0) passes every read/write/search check, but executing (x on a non-directory)
//! still needs some x bit, as on Linux. Mode bits are picked owner → group → other: the first
//! class the caller belongs to decides, even when a later class would allow more.

use rdfs_proto::ErrorCode;

use super::{Inode, NsError};

/// Read permission bit (within one class).
pub const R: u32 = 4;
/// Write permission bit.
pub const W: u32 = 2;
/// Execute / search permission bit.
pub const X: u32 = 1;
/// Any execute bit (owner, group, other).
const ANY_X: u32 = 0o111;
/// Set-user-id bit.
pub const S_ISUID: u32 = 0o4000;
/// Set-group-id bit.
pub const S_ISGID: u32 = 0o2000;
/// Sticky (restricted deletion) bit.
pub const S_ISVTX: u32 = 0o1000;
/// Group execute bit (a setgid file without it is mandatory locking, not setgid-exec).
pub const S_IXGRP: u32 = 0o010;

/// Who is asking: uid, primary gid and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cred {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Cred {
    /// The superuser (requests without a caller are trusted internal calls).
    pub fn root() -> Cred {
        Cred {
            uid: 0,
            gid: 0,
            groups: Vec::new(),
        }
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Whether the caller is a member of `gid` (primary or supplementary).
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    /// Whether the caller owns `ino` or is root (chmod, utimes to explicit times).
    pub fn owns(&self, ino: &Inode) -> bool {
        self.is_root() || self.uid == ino.uid
    }

    /// Whether `want` (a mask of [`R`], [`W`], [`X`]) is allowed on `ino`.
    pub fn may(&self, ino: &Inode, want: u32) -> bool {
        if self.is_root() {
            return want & X == 0 || ino.is_dir() || ino.mode & ANY_X != 0;
        }
        let bits = if self.uid == ino.uid {
            (ino.mode >> 6) & 7
        } else if self.in_group(ino.gid) {
            (ino.mode >> 3) & 7
        } else {
            ino.mode & 7
        };
        bits & want == want
    }

    /// `Ok` when `want` is allowed on `ino`, else `PermissionDenied` naming `what`.
    pub fn check(&self, ino: &Inode, want: u32, what: &str) -> Result<(), NsError> {
        if self.may(ino, want) {
            Ok(())
        } else {
            Err(NsError::new(
                ErrorCode::PermissionDenied,
                format!("{what} (inode {}, mode {:o})", ino.id, ino.mode),
            ))
        }
    }

    /// The sticky-directory rule: in a sticky `dir` only the owner of `victim`, the owner
    /// of `dir` or root may remove or rename `victim` (`OperationNotPermitted` otherwise).
    pub fn check_sticky(&self, dir: &Inode, victim: &Inode) -> Result<(), NsError> {
        if dir.mode & S_ISVTX == 0
            || self.is_root()
            || self.uid == dir.uid
            || self.uid == victim.uid
        {
            return Ok(());
        }
        Err(NsError::new(
            ErrorCode::OperationNotPermitted,
            format!(
                "sticky directory {}: not the owner of inode {}",
                dir.id, victim.id
            ),
        ))
    }
}
