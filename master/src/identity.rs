//! Data-directory identity: the `LOCK` file (flock, one process per directory) and the
//! `CLUSTER` file (magic `RDFSCLST`, version, 128-bit cluster id, chunk size, CRC32), fixed
//! when an empty directory is initialised. A non-empty directory without it is refused.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::MasterError;
use crate::fsutil::{durable_write, fsync_dir};

pub const CLUSTER_MAGIC: &[u8; 8] = b"RDFSCLST";
pub const CLUSTER_VERSION: u32 = 1;
const CLUSTER_ID_BYTES: usize = 16;
/// magic + version + id + chunk size + crc.
const CLUSTER_FILE_BYTES: usize = 8 + 4 + CLUSTER_ID_BYTES + 8 + 4;
pub const LOCK_FILE: &str = "LOCK";
pub const CLUSTER_FILE: &str = "CLUSTER";
/// This master's own id (not the cluster's): random hex, created once per data directory.
/// The witnesses know a primary and a standby by it.
pub const MASTER_ID_FILE: &str = "MASTER_ID";
/// Random bytes of a master id.
const MASTER_ID_BYTES: usize = 16;

/// Holds the flock for as long as it lives.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterIdentity {
    /// 32 lowercase hex digits.
    pub cluster_id: String,
    pub chunk_size: u64,
}

/// Takes an exclusive, non-blocking flock on `<dir>/LOCK`.
pub fn lock_dir(dir: &Path) -> Result<DirLock, MasterError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| MasterError::io(&path, "opening lock file", e))?;
    // SAFETY: flock on a valid, owned file descriptor has no memory-safety preconditions.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(MasterError::Locked {
                path: dir.to_path_buf(),
            });
        }
        return Err(MasterError::io(&path, "flock", err));
    }
    Ok(DirLock { _file: file })
}

fn encode(id: &ClusterIdentity) -> Result<Vec<u8>, MasterError> {
    let raw = hex::decode(&id.cluster_id)
        .map_err(|e| MasterError::Config(format!("cluster id {}: {e}", id.cluster_id)))?;
    let mut out = Vec::with_capacity(CLUSTER_FILE_BYTES);
    out.extend_from_slice(CLUSTER_MAGIC);
    out.extend_from_slice(&CLUSTER_VERSION.to_le_bytes());
    out.extend_from_slice(&raw);
    out.extend_from_slice(&id.chunk_size.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn decode(buf: &[u8]) -> Result<ClusterIdentity, String> {
    if buf.len() != CLUSTER_FILE_BYTES || &buf[..8] != CLUSTER_MAGIC {
        return Err("bad magic or length".into());
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err("checksum mismatch".into());
    }
    if body[8..12] != CLUSTER_VERSION.to_le_bytes() {
        return Err("unsupported format version".into());
    }
    let mut cs = [0u8; 8];
    cs.copy_from_slice(&body[12 + CLUSTER_ID_BYTES..]);
    Ok(ClusterIdentity {
        cluster_id: hex::encode(&body[12..12 + CLUSTER_ID_BYTES]),
        chunk_size: u64::from_le_bytes(cs),
    })
}

/// Reads `CLUSTER` if the directory has one.
pub fn read(dir: &Path) -> Result<Option<ClusterIdentity>, MasterError> {
    let path = dir.join(CLUSTER_FILE);
    match fs::read(&path) {
        Ok(buf) => decode(&buf)
            .map(Some)
            .map_err(|reason| MasterError::ForeignDir {
                path: path.clone(),
                reason: format!("CLUSTER file invalid: {reason}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(MasterError::io(&path, "reading cluster identity", e)),
    }
}

/// Initialises an empty directory with the identity of an existing cluster (a new standby
/// takes its primary's); a directory that already has one must match it.
pub fn init_with(dir: &Path, id: &ClusterIdentity) -> Result<(), MasterError> {
    if let Some(have) = read(dir)? {
        if have.cluster_id != id.cluster_id {
            return Err(MasterError::ForeignDir {
                path: dir.to_path_buf(),
                reason: format!(
                    "it belongs to cluster {}, the primary serves cluster {}",
                    have.cluster_id, id.cluster_id
                ),
            });
        }
        return Ok(());
    }
    let path = dir.join(CLUSTER_FILE);
    durable_write(&path, &encode(id)?)?;
    fsync_dir(dir)?;
    tracing::info!(cluster_id = %id.cluster_id, dir = %dir.display(), "joined cluster as a standby");
    Ok(())
}

/// This master's id: read from `MASTER_ID`, created (random) when missing.
pub fn master_id(dir: &Path) -> Result<String, MasterError> {
    let path = dir.join(MASTER_ID_FILE);
    match fs::read_to_string(&path) {
        Ok(s) if s.trim().len() == 2 * MASTER_ID_BYTES && hex::decode(s.trim()).is_ok() => {
            Ok(s.trim().to_string())
        }
        Ok(_) => Err(MasterError::ForeignDir {
            path,
            reason: "MASTER_ID is not a master id".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = hex::encode(rand::random::<[u8; MASTER_ID_BYTES]>());
            durable_write(&path, id.as_bytes())?;
            Ok(id)
        }
        Err(e) => Err(MasterError::io(&path, "reading the master id", e)),
    }
}

/// Reads `CLUSTER`, or initialises an empty directory (only `LOCK` present) with a fresh id.
/// Returns the identity and whether the directory was just initialised.
pub fn open_or_init(dir: &Path, chunk_size: u64) -> Result<(ClusterIdentity, bool), MasterError> {
    let path = dir.join(CLUSTER_FILE);
    match fs::read(&path) {
        Ok(buf) => {
            let id = decode(&buf).map_err(|reason| MasterError::ForeignDir {
                path: path.clone(),
                reason: format!("CLUSTER file invalid: {reason}"),
            })?;
            return Ok((id, false));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(MasterError::io(&path, "reading cluster identity", e)),
    }
    let others: Vec<String> = fs::read_dir(dir)
        .map_err(|e| MasterError::io(dir, "listing data directory", e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // A leftover CLUSTER.partial is an initialisation that crashed before its rename.
        .filter(|n| {
            n != LOCK_FILE
                && n != "CLUSTER.partial"
                && n != MASTER_ID_FILE
                && n != "MASTER_ID.partial"
        })
        .collect();
    if !others.is_empty() {
        return Err(MasterError::ForeignDir {
            path: dir.to_path_buf(),
            reason: format!(
                "no CLUSTER file but not empty (holds {})",
                others.join(", ")
            ),
        });
    }
    let raw: [u8; CLUSTER_ID_BYTES] = rand::random();
    let id = ClusterIdentity {
        cluster_id: hex::encode(raw),
        chunk_size,
    };
    durable_write(&path, &encode(&id)?)?;
    fsync_dir(dir)?;
    tracing::info!(cluster_id = %id.cluster_id, chunk_size, dir = %dir.display(), "initialised new cluster");
    Ok((id, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_and_is_stable() {
        let tmp = tempfile::tempdir().unwrap();
        let _lock = lock_dir(tmp.path()).unwrap();
        let (a, fresh) = open_or_init(tmp.path(), 1 << 20).unwrap();
        assert!(fresh);
        assert_eq!(a.cluster_id.len(), 32);
        let (b, fresh) = open_or_init(tmp.path(), 4 << 20).unwrap();
        assert!(!fresh);
        assert_eq!(a, b, "chunk size is fixed at initialisation");
    }

    #[test]
    fn foreign_and_corrupt_dirs_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("STATE"), b"chunkserver").unwrap();
        assert!(matches!(
            open_or_init(tmp.path(), 1 << 20),
            Err(MasterError::ForeignDir { .. })
        ));
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(CLUSTER_FILE), b"garbage").unwrap();
        assert!(matches!(
            open_or_init(tmp.path(), 1 << 20),
            Err(MasterError::ForeignDir { .. })
        ));
    }

    #[test]
    fn a_standby_takes_its_primarys_identity_and_keeps_its_own_master_id() {
        let tmp = tempfile::tempdir().unwrap();
        let me = master_id(tmp.path()).unwrap();
        assert_eq!(me.len(), 32);
        assert_eq!(master_id(tmp.path()).unwrap(), me, "stable");
        let theirs = ClusterIdentity {
            cluster_id: "00112233445566778899aabbccddeeff".into(),
            chunk_size: 1 << 20,
        };
        assert_eq!(read(tmp.path()).unwrap(), None);
        init_with(tmp.path(), &theirs).unwrap();
        assert_eq!(read(tmp.path()).unwrap(), Some(theirs.clone()));
        let (again, fresh) = open_or_init(tmp.path(), 4 << 20).unwrap();
        assert!(!fresh);
        assert_eq!(again, theirs);
        let other = ClusterIdentity {
            cluster_id: "ffeeddccbbaa99887766554433221100".into(),
            chunk_size: 1 << 20,
        };
        assert!(matches!(
            init_with(tmp.path(), &other),
            Err(MasterError::ForeignDir { .. })
        ));
    }

    #[test]
    fn second_lock_on_same_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let first = lock_dir(tmp.path()).unwrap();
        assert!(matches!(
            lock_dir(tmp.path()),
            Err(MasterError::Locked { .. })
        ));
        drop(first);
        assert!(lock_dir(tmp.path()).is_ok());
    }
}
