//! Opening the store: scanning the fan-out directories and recovering each replica
//! (torn tails cut back to the last CRC-valid block; untrustworthy metas reported bad).

use std::fs::{self, File};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;
use rdfs_proto::dataplane::ChunkInfo;
use rdfs_proto::ids::{ChunkId, ChunkVersion, LeaseSerial};
use rdfs_proto::limits::BLOCK_SIZE;

use super::{
    blocks_for, chunk_paths, open_rw, read_at_zero_fill, write_meta, ChunkMeta, ChunkStore,
    OpenReport, Replica, Result, StoreError, TMP_SUFFIX,
};

/// What recovering one replica found.
enum Recovered {
    Intact(ChunkMeta),
    Trimmed(ChunkMeta),
    Bad(String),
}

impl ChunkStore {
    /// Scans `<chunks>/<xx>/` and loads every replica found.
    pub(super) fn scan(&self) -> Result<OpenReport> {
        let root = &self.chunks_dir;
        let dir_err = |e| StoreError::io(ChunkId(0), "scan", root, e);
        fs::create_dir_all(root).map_err(dir_err)?;
        let mut report = OpenReport::default();
        for entry in fs::read_dir(root).map_err(dir_err)? {
            let entry = entry.map_err(dir_err)?;
            let name = entry.file_name();
            let Some(fan) = name.to_str().and_then(parse_fan_dir) else {
                tracing::warn!(path = %entry.path().display(), "ignoring unexpected entry in the chunk store");
                continue;
            };
            self.scan_fan_dir(&entry.path(), fan, &mut report)?;
        }
        Ok(report)
    }

    fn scan_fan_dir(&self, dir: &Path, fan: u64, report: &mut OpenReport) -> Result<()> {
        let dir_err = |e| StoreError::io(ChunkId(0), "scan", dir, e);
        for entry in fs::read_dir(dir).map_err(dir_err)? {
            let entry = entry.map_err(dir_err)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(TMP_SUFFIX) {
                // Our own unfinished copy or meta rewrite: never acknowledged, safe to drop.
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let Some(id) = name.strip_suffix(".meta").and_then(parse_stem) else {
                continue;
            };
            if id.0 % 256 != fan {
                tracing::warn!(chunk_id = %id, "meta file in the wrong directory; ignored");
                continue;
            }
            self.load(id, report)?;
        }
        Ok(())
    }

    fn load(&self, id: ChunkId, report: &mut OpenReport) -> Result<()> {
        let (meta, quarantined) = match recover(&self.chunks_dir, id)? {
            Recovered::Intact(meta) => (meta, false),
            Recovered::Trimmed(meta) => {
                report.trimmed.push(id);
                (meta, false)
            }
            Recovered::Bad(reason) => {
                tracing::error!(chunk_id = %id, %reason, "replica meta is corrupt; reporting it bad");
                let meta = ChunkMeta::new(id, ChunkVersion(0), LeaseSerial(0));
                report.bad.push(ChunkInfo {
                    chunk_id: id,
                    version: meta.version,
                    len: 0,
                });
                (meta, true)
            }
        };
        self.used.fetch_add(meta.len, Ordering::Relaxed);
        let replica = Replica {
            meta,
            quarantined,
            deleted: false,
            file_generation: 0,
        };
        self.replicas
            .lock()
            .insert(id, Arc::new(Mutex::new(replica)));
        Ok(())
    }
}

/// Checks a replica's meta and cuts its data back to the last block whose CRC matches.
fn recover(chunks_dir: &Path, id: ChunkId) -> Result<Recovered> {
    let paths = chunk_paths(chunks_dir, id)?;
    let bytes = match fs::read(&paths.meta) {
        Ok(bytes) => bytes,
        Err(e) => return Ok(Recovered::Bad(format!("read meta: {e}"))),
    };
    let mut meta = match ChunkMeta::decode(&bytes, id) {
        Ok(meta) => meta,
        Err(reason) => return Ok(Recovered::Bad(reason)),
    };
    let file = match File::open(&paths.data) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(StoreError::io(id, "open", &paths.data, e)),
    };
    let file_len = match &file {
        Some(f) => f
            .metadata()
            .map_err(|e| StoreError::io(id, "stat", &paths.data, e))?
            .len(),
        None => 0,
    };
    let mut len = meta.len.min(file_len);
    let mut blocks = blocks_for(len);
    let mut buf = vec![0u8; BLOCK_SIZE as usize];
    // Walk back from the end: normally the first block checked is intact.
    while let (true, Some(f)) = (blocks > 0, &file) {
        let block = blocks - 1;
        let start = block * BLOCK_SIZE;
        let recorded = (meta.len - start).min(BLOCK_SIZE);
        if len - start == recorded {
            let b = &mut buf[..recorded as usize];
            read_at_zero_fill(f, b, start)
                .map_err(|e| StoreError::io(id, "read", &paths.data, e))?;
            if crc32fast::hash(b) == meta.crcs[block as usize] {
                break;
            }
        }
        blocks = block;
        len = start;
    }
    if len == meta.len && file_len == len {
        return Ok(Recovered::Intact(meta));
    }
    tracing::warn!(chunk_id = %id, recorded = meta.len, on_disk = file_len, kept = len, "cutting a torn replica tail");
    if file.is_none() {
        File::create(&paths.data).map_err(|e| StoreError::io(id, "create", &paths.data, e))?;
    }
    let data = open_rw(id, &paths.data)?;
    data.set_len(len)
        .map_err(|e| StoreError::io(id, "truncate", &paths.data, e))?;
    data.sync_all()
        .map_err(|e| StoreError::io(id, "fsync", &paths.data, e))?;
    meta.len = len;
    meta.crcs.truncate(blocks as usize);
    write_meta(&paths, &meta, true)?;
    Ok(Recovered::Trimmed(meta))
}

/// `"3f"` → 0x3f: a fan-out directory is exactly two lowercase hex digits.
fn parse_fan_dir(name: &str) -> Option<u64> {
    let ok = name.len() == 2 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then(|| u64::from_str_radix(name, 16).ok()).flatten()
}

/// A file stem is exactly 16 lowercase hex digits of a non-zero id.
fn parse_stem(stem: &str) -> Option<ChunkId> {
    let ok = stem.len() == 16 && stem.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let id = ok.then(|| u64::from_str_radix(stem, 16).ok()).flatten()?;
    (id != 0).then_some(ChunkId(id))
}
