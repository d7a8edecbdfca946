//! Conversions between the master's attributes and what the kernel wants.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};
use rdfs_client::FileAttr as PbAttr;
use rdfs_client::FileType as PbType;

/// `st_blksize` reported to the kernel: large, so `cp` and friends use big buffers.
pub const REPORTED_BLOCK_SIZE: u32 = 1 << 20;
/// Unit of `st_blocks`.
const STAT_BLOCK_UNIT: u64 = 512;

/// The kernel's file type for a master file type.
pub fn kind_of(file_type: i32) -> FileType {
    match PbType::try_from(file_type) {
        Ok(PbType::Dir) => FileType::Directory,
        Ok(PbType::Symlink) => FileType::Symlink,
        Ok(PbType::Fifo) => FileType::NamedPipe,
        _ => FileType::RegularFile,
    }
}

/// Nanoseconds since the epoch (possibly negative) as a `SystemTime`.
pub fn time_of(ns: i64) -> SystemTime {
    let magnitude = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH.checked_sub(magnitude).unwrap_or(UNIX_EPOCH)
    }
}

/// A `SystemTime` as nanoseconds since the epoch, saturating.
pub fn ns_of(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos())
            .map(|n| -n)
            .unwrap_or(i64::MIN),
    }
}

/// The kernel's attributes for `a`, with `size` overriding the master's (buffered writes).
pub fn to_fuse(a: &PbAttr, size: u64) -> FileAttr {
    let kind = kind_of(a.file_type);
    let size = match kind {
        // A symlink's size is the length of its target.
        FileType::Symlink if size == 0 => a.symlink_target.len() as u64,
        _ => size,
    };
    FileAttr {
        ino: INodeNo(a.inode),
        size,
        blocks: size.div_ceil(STAT_BLOCK_UNIT),
        atime: time_of(a.atime_ns),
        mtime: time_of(a.mtime_ns),
        ctime: time_of(a.ctime_ns),
        crtime: time_of(a.ctime_ns),
        kind,
        perm: (a.mode & 0o7777) as u16,
        // 0 for a file unlinked while open, as fstat reports it.
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: REPORTED_BLOCK_SIZE,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_including_before_the_epoch() {
        for ns in [0i64, 1, 1_700_000_000_123_456_789, -5_000_000_001] {
            assert_eq!(ns_of(time_of(ns)), ns);
        }
    }

    #[test]
    fn attributes_convert_with_the_buffered_size() {
        let a = PbAttr {
            inode: 7,
            file_type: PbType::File as i32,
            mode: 0o100644,
            uid: 5,
            gid: 6,
            size: 10,
            nlink: 2,
            ..Default::default()
        };
        let f = to_fuse(&a, 1000);
        assert_eq!(f.ino, INodeNo(7));
        assert_eq!(f.size, 1000);
        assert_eq!(f.blocks, 2);
        assert_eq!(f.perm, 0o644);
        assert_eq!((f.uid, f.gid, f.nlink), (5, 6, 2));
        assert_eq!(f.kind, FileType::RegularFile);
        assert_eq!(kind_of(PbType::Dir as i32), FileType::Directory);
        assert_eq!(kind_of(PbType::Fifo as i32), FileType::NamedPipe);
    }
}
