//! The chunkserver's identity on disk: `<data>/LOCK` (an `flock` held for the life of the
//! process, so a second chunkserver on the same directory is refused) and `<data>/STATE`.
//!
//! STATE layout (little-endian): magic `RDFSCSST` | format u32 | cluster_id (u32 len + UTF-8)
//! | node_id (u32 len + UTF-8) | highest_epoch u64 | (format 2:) the witness record: promised
//! epoch u64 | holder id (str) | holder address (str) | lease ms u64 | mark epoch u64 | mark
//! serial u64 | mark in-sync standby (str) | mark out-of-sync seq u64 | crc32 of everything
//! before. Format 1 (no witness record) is still read, with an empty record.
//! It is replaced crash-safely: `.partial`, fsync, rename, fsync the directory. The node id
//! is random and created once; the cluster id is adopted at the first registration; the
//! highest epoch only ever rises.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rdfs_proto::dataplane::StandbyMark;
use rdfs_proto::ids::Epoch;

/// First bytes of the STATE file.
const STATE_MAGIC: &[u8; 8] = b"RDFSCSST";
/// Bumped on any layout change. 2: the witness record.
const STATE_FORMAT_VERSION: u32 = 2;
/// The format before the witness record; still read.
const STATE_FORMAT_V1: u32 = 1;
/// Longest id string we accept from disk or from a master.
const MAX_ID_LEN: usize = 256;
/// Random bytes in a node id (printed as hex).
const NODE_ID_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("data directory {0} is in use by another chunkserver")]
    Locked(PathBuf),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: corrupt chunkserver state: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// What STATE records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// Empty until the first successful registration.
    pub cluster_id: String,
    pub node_id: String,
    pub highest_epoch: Epoch,
    /// What this chunkserver, as a witness for the masters' leases, has promised.
    pub witness: WitnessRecord,
}

/// The durable part of the witness state (the lease expiry itself lives in memory).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WitnessRecord {
    /// Highest epoch promised to a promotion candidate.
    pub promised: Epoch,
    /// The master holding (or last holding) the lease.
    pub holder_id: String,
    pub holder_addr: String,
    /// Length of the last lease granted: after a restart the lease is assumed to run that
    /// long again from the restart, since its real expiry was lost.
    pub lease_ms: u64,
    /// The newest standby mark a primary recorded here.
    pub mark: StandbyMark,
}

/// The locked data directory and its STATE, updated durably.
pub struct StateFile {
    path: PathBuf,
    state: Mutex<NodeState>,
    /// Holds the flock; released when the process (or this value) goes away.
    _lock: File,
}

impl StateFile {
    /// Locks `data_dir` (creating it) and loads STATE, creating it with a fresh node id.
    pub fn open(data_dir: &Path) -> Result<StateFile, StateError> {
        fs::create_dir_all(data_dir).map_err(io("create", data_dir))?;
        let lock_path = data_dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io("open", &lock_path))?;
        // SAFETY: flock on a descriptor we own; no memory is shared.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(StateError::Locked(data_dir.to_path_buf()));
        }
        let path = data_dir.join("STATE");
        let state = match fs::read(&path) {
            Ok(bytes) => decode(&bytes).map_err(|reason| StateError::Corrupt {
                path: path.clone(),
                reason,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let fresh = NodeState {
                    cluster_id: String::new(),
                    node_id: hex::encode(rand::random::<[u8; NODE_ID_BYTES]>()),
                    highest_epoch: Epoch(0),
                    witness: WitnessRecord::default(),
                };
                write_durably(&path, &fresh)?;
                fresh
            }
            Err(e) => return Err(io("read", &path)(e)),
        };
        Ok(StateFile {
            path,
            state: Mutex::new(state),
            _lock: lock,
        })
    }

    pub fn get(&self) -> NodeState {
        self.state.lock().clone()
    }

    /// Records a cluster id adopted at the first registration.
    pub fn set_cluster_id(&self, cluster_id: &str) -> Result<(), StateError> {
        let mut st = self.state.lock();
        let mut next = st.clone();
        next.cluster_id = cluster_id.to_string();
        write_durably(&self.path, &next)?;
        *st = next;
        Ok(())
    }

    /// Applies `change` to a copy of the state and, if that changed anything, makes it
    /// durable before it becomes visible. Returns the state after the change.
    pub fn update(&self, change: impl FnOnce(&mut NodeState)) -> Result<NodeState, StateError> {
        self.update_with(change).map(|(st, ())| st)
    }

    /// Like [`StateFile::update`], also returning what `change` returned.
    pub fn update_with<T>(
        &self,
        change: impl FnOnce(&mut NodeState) -> T,
    ) -> Result<(NodeState, T), StateError> {
        let mut st = self.state.lock();
        let mut next = st.clone();
        let out = change(&mut next);
        if next != *st {
            write_durably(&self.path, &next)?;
            *st = next;
        }
        Ok((st.clone(), out))
    }

    /// Durably raises the highest epoch seen; a lower or equal one changes nothing.
    pub fn raise_epoch(&self, epoch: Epoch) -> Result<(), StateError> {
        let mut st = self.state.lock();
        if epoch <= st.highest_epoch {
            return Ok(());
        }
        let mut next = st.clone();
        next.highest_epoch = epoch;
        write_durably(&self.path, &next)?;
        *st = next;
        Ok(())
    }
}

/// Builds the `map_err` closure for an I/O step on `path`.
fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io { op, path, source }
}

fn encode(st: &NodeState) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(STATE_MAGIC);
    out.extend_from_slice(&STATE_FORMAT_VERSION.to_le_bytes());
    put_str(&mut out, &st.cluster_id);
    put_str(&mut out, &st.node_id);
    out.extend_from_slice(&st.highest_epoch.0.to_le_bytes());
    let w = &st.witness;
    out.extend_from_slice(&w.promised.0.to_le_bytes());
    put_str(&mut out, &w.holder_id);
    put_str(&mut out, &w.holder_addr);
    out.extend_from_slice(&w.lease_ms.to_le_bytes());
    out.extend_from_slice(&w.mark.epoch.0.to_le_bytes());
    out.extend_from_slice(&w.mark.serial.to_le_bytes());
    put_str(&mut out, &w.mark.in_sync);
    out.extend_from_slice(&w.mark.out_of_sync_at.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn decode(bytes: &[u8]) -> Result<NodeState, String> {
    let body_len = bytes.len().checked_sub(4).ok_or("file too short")?;
    let (body, crc) = bytes.split_at(body_len);
    if crc32fast::hash(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err("checksum mismatch".into());
    }
    let mut cur = Cursor { buf: body, pos: 0 };
    if cur.take(8)? != STATE_MAGIC {
        return Err("bad magic".into());
    }
    let format = u32::from_le_bytes(cur.array()?);
    if format != STATE_FORMAT_VERSION && format != STATE_FORMAT_V1 {
        return Err(format!("unknown format version {format}"));
    }
    let cluster_id = cur.string()?;
    let node_id = cur.string()?;
    let highest_epoch = Epoch(cur.u64()?);
    let witness = if format == STATE_FORMAT_V1 {
        WitnessRecord::default()
    } else {
        WitnessRecord {
            promised: Epoch(cur.u64()?),
            holder_id: cur.string()?,
            holder_addr: cur.string()?,
            lease_ms: cur.u64()?,
            mark: StandbyMark {
                epoch: Epoch(cur.u64()?),
                serial: cur.u64()?,
                in_sync: cur.string()?,
                out_of_sync_at: cur.u64()?,
            },
        }
    };
    if cur.pos != body.len() {
        return Err("trailing bytes".into());
    }
    Ok(NodeState {
        cluster_id,
        node_id,
        highest_epoch,
        witness,
    })
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or("truncated")?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, String> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        if len > MAX_ID_LEN {
            return Err(format!("id of {len} bytes"));
        }
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| "id is not UTF-8".to_string())
    }
}

/// `.partial`, fsync, rename, fsync the directory: STATE is never half-written.
fn write_durably(path: &Path, st: &NodeState) -> Result<(), StateError> {
    let partial = path.with_extension("partial");
    let mut f = File::create(&partial).map_err(io("create", &partial))?;
    f.write_all(&encode(st)).map_err(io("write", &partial))?;
    f.sync_all().map_err(io("fsync", &partial))?;
    fs::rename(&partial, path).map_err(io("rename", &partial))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync dir", dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_created_once_and_survives_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let first = StateFile::open(tmp.path()).unwrap();
        let st = first.get();
        assert_eq!(st.cluster_id, "");
        assert_eq!(st.node_id.len(), 2 * NODE_ID_BYTES);
        first.set_cluster_id("cluster-a").unwrap();
        first.raise_epoch(Epoch(7)).unwrap();
        first.raise_epoch(Epoch(3)).unwrap();
        drop(first);
        let again = StateFile::open(tmp.path()).unwrap().get();
        assert_eq!(
            again,
            NodeState {
                cluster_id: "cluster-a".into(),
                node_id: st.node_id,
                highest_epoch: Epoch(7),
                witness: WitnessRecord::default(),
            }
        );
    }

    #[test]
    fn witness_record_survives_reopen_and_format_1_still_loads() {
        let tmp = tempfile::tempdir().unwrap();
        let first = StateFile::open(tmp.path()).unwrap();
        let node_id = first.get().node_id;
        let after = first
            .update(|st| {
                st.witness.promised = Epoch(5);
                st.witness.holder_id = "m-a".into();
                st.witness.holder_addr = "127.0.0.1:9000".into();
                st.witness.lease_ms = 1500;
                st.witness.mark = StandbyMark {
                    epoch: Epoch(4),
                    serial: 9,
                    in_sync: "m-b".into(),
                    out_of_sync_at: 0,
                };
            })
            .unwrap();
        drop(first);
        let again = StateFile::open(tmp.path()).unwrap().get();
        assert_eq!(again, after);
        assert_eq!(again.witness.mark.in_sync, "m-b");
        // A format-1 file (written before the witness record existed) loads with none.
        let mut v1 = Vec::new();
        v1.extend_from_slice(STATE_MAGIC);
        v1.extend_from_slice(&STATE_FORMAT_V1.to_le_bytes());
        put_str(&mut v1, "cluster-a");
        put_str(&mut v1, &node_id);
        v1.extend_from_slice(&3u64.to_le_bytes());
        let crc = crc32fast::hash(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let old = decode(&v1).unwrap();
        assert_eq!(old.highest_epoch, Epoch(3));
        assert_eq!(old.witness, WitnessRecord::default());
    }

    #[test]
    fn second_open_of_a_locked_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let _held = StateFile::open(tmp.path()).unwrap();
        assert!(matches!(
            StateFile::open(tmp.path()),
            Err(StateError::Locked(_))
        ));
    }

    #[test]
    fn corrupt_state_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        drop(StateFile::open(tmp.path()).unwrap());
        let path = tmp.path().join("STATE");
        let mut bytes = fs::read(&path).unwrap();
        bytes[14] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            StateFile::open(tmp.path()),
            Err(StateError::Corrupt { .. })
        ));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err());
        }
    }
}
