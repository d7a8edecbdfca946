//! The operation log: segments `<data>/oplog/<first-seq:020>.log`, each a header (magic
//! `RDFSOLOG`, format version) followed by records
//! `magic u32 | len u32 | crc32 u32 | seq u64 | bincode(Op)` (little-endian; the CRC covers
//! seq and payload).
//!
//! Writing: one group-commit thread fed by a bounded channel. Callers encode records (with
//! seqs assigned under the state lock, so channel order is seq order); the thread writes
//! every queued record with one write and one fdatasync, then completes each waiter. After
//! a write or fsync error the log is failed for good: an fsync is never retried.
//!
//! Recovery: a bad record with no valid record anywhere after it is a torn tail and is cut
//! off; a bad record followed by a valid one is an error naming the file and offset.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bincode::Options;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::MasterError;
use crate::fsutil::fsync_dir;
use crate::namespace::Op;

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"RDFSOLOG";
/// Segment format version (after the magic, u32 LE).
pub const SEGMENT_VERSION: u32 = 1;
/// Segment header: magic + version.
pub const SEGMENT_HEADER_BYTES: usize = 12;
/// "RDOP" little-endian: first word of every record.
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"RDOP");
/// magic, len, crc, seq.
pub const RECORD_PREFIX_BYTES: usize = 20;
/// Largest encoded op accepted (a longer length field is corruption).
pub const MAX_RECORD_PAYLOAD_BYTES: usize = 1 << 20;
/// Queue depth between mutations and the writer thread.
pub const LOG_QUEUE_DEPTH: usize = 1024;
/// Most bytes written by one group commit before it is fsynced.
const MAX_BATCH_BYTES: usize = 8 << 20;

fn op_codec() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(MAX_RECORD_PAYLOAD_BYTES as u64)
        .reject_trailing_bytes()
}

pub fn segment_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("oplog")
}

pub fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.log"))
}

/// Appends one encoded record to `out`.
pub fn encode_record(seq: u64, op: &Op, out: &mut Vec<u8>) -> Result<(), MasterError> {
    let payload = op_codec()
        .serialize(op)
        .map_err(|e| MasterError::Log(format!("encoding {} op: {e}", op.kind())))?;
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&payload);
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// Decodes the record at `buf[off..]`: (seq, op, encoded length), or why it is invalid.
pub fn decode_record(buf: &[u8], off: usize) -> Result<(u64, Op, usize), String> {
    let (seq, total) = check_record(buf, off)?;
    let payload = &buf[off + RECORD_PREFIX_BYTES..off + total];
    let op = op_codec()
        .deserialize(payload)
        .map_err(|e| format!("undecodable record: {e}"))?;
    Ok((seq, op, total))
}

/// Checks the framing and CRC of the record at `buf[off..]` without decoding its op:
/// (seq, encoded length), or why it is invalid.
pub fn check_record(buf: &[u8], off: usize) -> Result<(u64, usize), String> {
    let rest = buf.get(off..).unwrap_or(&[]);
    if rest.len() < RECORD_PREFIX_BYTES {
        return Err(format!("truncated record prefix ({} bytes)", rest.len()));
    }
    let word = |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
    if word(0) != RECORD_MAGIC {
        return Err(format!("bad record magic {:#010x}", word(0)));
    }
    let len = word(4) as usize;
    if len > MAX_RECORD_PAYLOAD_BYTES {
        return Err(format!("record length {len} exceeds the limit"));
    }
    let total = RECORD_PREFIX_BYTES + len;
    if rest.len() < total {
        return Err(format!(
            "truncated record ({} of {total} bytes)",
            rest.len()
        ));
    }
    let body = &rest[12..total];
    if crc32fast::hash(body) != word(8) {
        return Err("record checksum mismatch".into());
    }
    let mut seq_bytes = [0u8; 8];
    seq_bytes.copy_from_slice(&body[..8]);
    Ok((u64::from_le_bytes(seq_bytes), total))
}

/// Decodes a run of encoded records (as shipped to a standby), checking that their seqs
/// follow `after` one by one.
pub fn decode_run(buf: &[u8], after: u64) -> Result<Vec<(u64, Op)>, String> {
    let mut out = Vec::new();
    let mut off = 0;
    let mut want = after + 1;
    while off < buf.len() {
        let (seq, op, len) = decode_record(buf, off)?;
        if seq != want {
            return Err(format!("record seq {seq} where {want} was expected"));
        }
        out.push((seq, op));
        off += len;
        want += 1;
    }
    Ok(out)
}

/// Reads encoded records from `from` on (at most `max_bytes`, at most up to `upto`) out of
/// the segments in `dir`: (bytes, last seq), or `None` when record `from` is no longer on
/// disk (a checkpoint covered it and its segment was removed).
pub fn read_from(
    dir: &Path,
    from: u64,
    upto: u64,
    max_bytes: usize,
) -> Result<Option<(Vec<u8>, u64)>, MasterError> {
    let from = from.max(1);
    let segments = list_segments(dir)?;
    let Some(start) = segments.iter().rposition(|(first, _)| *first <= from) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    let mut last = from - 1;
    for (_, path) in &segments[start..] {
        let buf = fs::read(path).map_err(|e| MasterError::io(path, "reading segment", e))?;
        let mut off = SEGMENT_HEADER_BYTES.min(buf.len());
        while off < buf.len() && last < upto {
            let Ok((seq, len)) = check_record(&buf, off) else {
                break; // the tail being written, or a torn one: stop at what is valid
            };
            if seq > last + 1 {
                return Ok(if last < from { None } else { Some((out, last)) });
            }
            if seq == last + 1 {
                if !out.is_empty() && out.len() + len > max_bytes {
                    return Ok(Some((out, last)));
                }
                out.extend_from_slice(&buf[off..off + len]);
                last = seq;
            }
            off += len;
        }
        if last >= upto {
            break;
        }
    }
    Ok((last >= from).then_some((out, last)))
}

/// Cuts the log in `dir` back so that its last record is `keep` (0: no record at all):
/// later segments are removed and the segment holding `keep` is truncated after it.
/// Used by a deposed primary whose newest records the new primary never had.
pub fn truncate_after(dir: &Path, keep: u64) -> Result<(), MasterError> {
    for (first, path) in list_segments(dir)? {
        if first > keep {
            fs::remove_file(&path).map_err(|e| MasterError::io(&path, "removing segment", e))?;
            continue;
        }
        let buf = fs::read(&path).map_err(|e| MasterError::io(&path, "reading segment", e))?;
        let mut off = SEGMENT_HEADER_BYTES.min(buf.len());
        while off < buf.len() {
            match check_record(&buf, off) {
                Ok((seq, len)) if seq <= keep => off += len,
                _ => break,
            }
        }
        if off < buf.len() {
            truncate_segment(&path, off as u64)?;
        }
    }
    fsync_dir(dir)
}

fn segment_header() -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h
}

/// Segments in the directory, sorted by first seq.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, MasterError> {
    let mut out = Vec::new();
    let rd = fs::read_dir(dir).map_err(|e| MasterError::io(dir, "listing segments", e))?;
    for entry in rd {
        let entry = entry.map_err(|e| MasterError::io(dir, "listing segments", e))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".log")) else {
            continue;
        };
        if let Ok(seq) = stem.parse::<u64>() {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// One segment read at recovery.
pub struct ScannedSegment {
    pub first_seq: u64,
    pub path: PathBuf,
    pub records: Vec<(u64, Op)>,
    /// Offset of the first bad record (end of valid data), if any.
    pub bad_at: Option<(u64, String)>,
    /// Whether a valid record follows the bad one inside this segment.
    pub valid_after_bad: bool,
    /// The header itself is missing or short (a crash while creating the segment).
    pub torn_header: bool,
}

/// Reads a segment; corruption is reported in the result, not as an error.
pub fn scan_segment(first_seq: u64, path: &Path) -> Result<ScannedSegment, MasterError> {
    let buf = fs::read(path).map_err(|e| MasterError::io(path, "reading segment", e))?;
    let mut seg = ScannedSegment {
        first_seq,
        path: path.to_path_buf(),
        records: Vec::new(),
        bad_at: None,
        valid_after_bad: false,
        torn_header: false,
    };
    if buf.len() < SEGMENT_HEADER_BYTES {
        seg.torn_header = true;
        return Ok(seg);
    }
    if buf[..SEGMENT_HEADER_BYTES] != segment_header() {
        return Err(MasterError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            reason: "bad segment header (magic or format version)".into(),
        });
    }
    let mut off = SEGMENT_HEADER_BYTES;
    while off < buf.len() {
        match decode_record(&buf, off) {
            Ok((seq, op, len)) => {
                seg.records.push((seq, op));
                off += len;
            }
            Err(reason) => {
                seg.bad_at = Some((off as u64, reason));
                seg.valid_after_bad = valid_record_after(&buf, off + 1);
                break;
            }
        }
    }
    Ok(seg)
}

/// Scans forward for the record magic and tries to decode a record at each hit.
fn valid_record_after(buf: &[u8], from: usize) -> bool {
    let magic = RECORD_MAGIC.to_le_bytes();
    let mut i = from;
    while i + RECORD_PREFIX_BYTES <= buf.len() {
        if buf[i..i + 4] == magic && decode_record(buf, i).is_ok() {
            return true;
        }
        i += 1;
    }
    false
}

/// Cuts a segment back to `len` bytes (a torn tail) and makes that durable.
pub fn truncate_segment(path: &Path, len: u64) -> Result<(), MasterError> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| MasterError::io(path, "opening segment to cut its tail", e))?;
    f.set_len(len)
        .map_err(|e| MasterError::io(path, "cutting torn tail", e))?;
    if len < SEGMENT_HEADER_BYTES as u64 {
        // The header itself was torn: rewrite it so the file is a valid empty segment.
        (&f).write_all(&segment_header())
            .map_err(|e| MasterError::io(path, "rewriting segment header", e))?;
    }
    f.sync_all()
        .map_err(|e| MasterError::io(path, "fsync after cutting torn tail", e))
}

/// Creates an empty segment (header only), fsyncs it and its directory.
fn create_segment(dir: &Path, first_seq: u64) -> Result<File, MasterError> {
    let path = segment_path(dir, first_seq);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|e| MasterError::io(&path, "creating segment", e))?;
    f.write_all(&segment_header())
        .map_err(|e| MasterError::io(&path, "writing segment header", e))?;
    f.sync_all()
        .map_err(|e| MasterError::io(&path, "fsync new segment", e))?;
    fsync_dir(dir)?;
    Ok(f)
}

/// Opens the segment to append to: the existing last one, or a new one at `next_seq`.
fn open_for_append(
    dir: &Path,
    last: Option<(u64, PathBuf)>,
    next_seq: u64,
) -> Result<(u64, File), MasterError> {
    match last {
        Some((first, path)) => {
            let f = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| MasterError::io(&path, "opening segment for append", e))?;
            Ok((first, f))
        }
        None => Ok((next_seq, create_segment(dir, next_seq)?)),
    }
}

/// Result a waiter gets once its records are durable (or the log has failed).
pub type Durable = Result<(), String>;

pub enum LogCmd {
    /// Encoded records `first_seq..=last_seq`; `done` fires after they are fsynced.
    Append {
        bytes: Vec<u8>,
        first_seq: u64,
        last_seq: u64,
        done: oneshot::Sender<Durable>,
    },
    /// Start a new segment whose first record will be `first_seq` (after a checkpoint);
    /// `done` fires once every earlier record is durable and the new segment exists.
    Rotate {
        first_seq: u64,
        done: oneshot::Sender<Durable>,
    },
    /// Stop after everything queued before it (clean shutdown).
    Stop,
}

/// The mutation side of the log: a bounded queue and the sticky failure flag, plus what
/// is durable (the highest fsynced seq and the newest fsynced records, for standbys).
#[derive(Clone)]
pub struct LogHandle {
    pub tx: mpsc::Sender<LogCmd>,
    pub failed: Arc<AtomicBool>,
    /// Highest seq known durable; changes after every group commit.
    pub durable: watch::Receiver<u64>,
    /// The newest durable records, in memory.
    pub tail: Arc<LogTail>,
}

impl LogHandle {
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    pub fn durable_seq(&self) -> u64 {
        *self.durable.borrow()
    }
}

/// Bytes of recent durable records kept in memory for standbys; one further behind reads
/// the segments.
pub const LOG_TAIL_BYTES: usize = 64 << 20;

/// The newest durable records, as group-committed batches (contiguous seqs).
#[derive(Default)]
pub struct LogTail {
    batches: parking_lot::Mutex<TailInner>,
}

#[derive(Default)]
struct TailInner {
    batches: std::collections::VecDeque<(u64, u64, Arc<Vec<u8>>)>,
    bytes: usize,
}

impl LogTail {
    fn push(&self, first: u64, last: u64, bytes: Vec<u8>) {
        let mut t = self.batches.lock();
        if t.batches.back().is_some_and(|b| b.1 + 1 != first) {
            // Not contiguous (a standby's log restarted elsewhere): start afresh.
            t.batches.clear();
            t.bytes = 0;
        }
        t.bytes += bytes.len();
        t.batches.push_back((first, last, Arc::new(bytes)));
        while t.bytes > LOG_TAIL_BYTES && t.batches.len() > 1 {
            if let Some(old) = t.batches.pop_front() {
                t.bytes -= old.2.len();
            }
        }
    }

    /// Records from `from` on, whole batches up to about `max_bytes`: (bytes, last seq).
    /// `None` when `from` is older than the tail (read the segments) or not written yet.
    pub fn read_from(&self, from: u64, max_bytes: usize) -> Option<(Vec<u8>, u64)> {
        let t = self.batches.lock();
        let i = t.batches.iter().position(|b| b.0 <= from && from <= b.1)?;
        let mut out = Vec::new();
        let mut last = 0;
        for (first, end, bytes) in t.batches.iter().skip(i) {
            if !out.is_empty() && out.len() + bytes.len() > max_bytes {
                break;
            }
            if *first < from {
                // The batch starts before `from`: skip its leading records.
                let mut off = 0;
                let mut seq = *first;
                while seq < from {
                    let (_, len) = check_record(bytes, off).ok()?;
                    off += len;
                    seq += 1;
                }
                out.extend_from_slice(&bytes[off..]);
            } else {
                out.extend_from_slice(bytes);
            }
            last = *end;
        }
        Some((out, last))
    }
}

/// Starts the writer thread appending to the last segment in `dir` (or a new one at
/// `next_seq`). The thread exits once every `LogHandle` is dropped.
pub fn start_writer(
    dir: &Path,
    last_segment: Option<(u64, PathBuf)>,
    next_seq: u64,
) -> Result<(LogHandle, std::thread::JoinHandle<()>), MasterError> {
    let (first, file) = open_for_append(dir, last_segment, next_seq)?;
    let (tx, rx) = mpsc::channel(LOG_QUEUE_DEPTH);
    let failed = Arc::new(AtomicBool::new(false));
    let (durable_tx, durable) = watch::channel(next_seq - 1);
    let tail = Arc::new(LogTail::default());
    let mut writer = Writer {
        dir: dir.to_path_buf(),
        file,
        first_seq: first,
        rx,
        failed: failed.clone(),
        durable: durable_tx,
        tail: tail.clone(),
    };
    let join = std::thread::Builder::new()
        .name("rdfs-oplog".into())
        .spawn(move || writer.run())
        .map_err(|e| MasterError::io(dir, "spawning op-log writer", e))?;
    Ok((
        LogHandle {
            tx,
            failed,
            durable,
            tail,
        },
        join,
    ))
}

struct Writer {
    dir: PathBuf,
    file: File,
    first_seq: u64,
    rx: mpsc::Receiver<LogCmd>,
    failed: Arc<AtomicBool>,
    durable: watch::Sender<u64>,
    tail: Arc<LogTail>,
}

impl Writer {
    fn run(&mut self) {
        while let Some(cmd) = self.rx.blocking_recv() {
            let mut bytes = Vec::new();
            let mut waiters = Vec::new();
            let mut rotate = None;
            let mut stop = false;
            let mut seqs: Option<(u64, u64)> = None;
            let mut next = Some(cmd);
            while let Some(cmd) = next.take() {
                match cmd {
                    LogCmd::Append {
                        bytes: b,
                        first_seq,
                        last_seq,
                        done,
                    } => {
                        bytes.extend_from_slice(&b);
                        waiters.push(done);
                        seqs = Some((seqs.map_or(first_seq, |s| s.0), last_seq));
                    }
                    LogCmd::Rotate { first_seq, done } => {
                        rotate = Some((first_seq, done));
                        break;
                    }
                    LogCmd::Stop => {
                        stop = true;
                        break;
                    }
                }
                if bytes.len() < MAX_BATCH_BYTES {
                    next = self.rx.try_recv().ok();
                }
            }
            let result = self.commit(&bytes);
            if let (Ok(()), Some((first, last))) = (&result, seqs) {
                // Published before the waiters hear, so a standby can be sent a record as
                // soon as it could be acknowledged.
                self.tail.push(first, last, bytes);
                self.durable.send_replace(last);
            }
            for w in waiters {
                let _ = w.send(result.clone());
            }
            if let Some((first_seq, done)) = rotate {
                let r = result.and_then(|()| self.rotate(first_seq));
                let _ = done.send(r);
            }
            if stop {
                return;
            }
        }
    }

    fn commit(&mut self, bytes: &[u8]) -> Durable {
        if self.failed.load(Ordering::SeqCst) {
            return Err("operation log failed earlier; not acknowledging".into());
        }
        if bytes.is_empty() {
            return Ok(());
        }
        let r = self
            .file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data());
        r.map_err(|e| {
            // Never retried: after a failed fsync the page cache state is unknown.
            self.failed.store(true, Ordering::SeqCst);
            tracing::error!(error = %e, "op-log write/fsync failed; no more acknowledgements");
            format!("op-log write/fsync failed: {e}")
        })
    }

    fn rotate(&mut self, first_seq: u64) -> Durable {
        if first_seq == self.first_seq {
            return Ok(());
        }
        match create_segment(&self.dir, first_seq) {
            Ok(f) => {
                self.file = f;
                self.first_seq = first_seq;
                Ok(())
            }
            Err(e) => {
                self.failed.store(true, Ordering::SeqCst);
                Err(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdfs_proto::ids::InodeId;

    fn op(i: u64) -> Op {
        Op::CommitWrite {
            inode: InodeId(i),
            end: i * 10,
            mtime_ns: i as i64,
        }
    }

    #[test]
    fn record_round_trip_and_damage_detection() {
        let mut buf = Vec::new();
        encode_record(7, &op(3), &mut buf).unwrap();
        let (seq, decoded, len) = decode_record(&buf, 0).unwrap();
        assert_eq!((seq, decoded, len), (7, op(3), buf.len()));
        let mut flipped = buf.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert_eq!(
            decode_record(&flipped, 0).unwrap_err(),
            "record checksum mismatch"
        );
        assert!(decode_record(&buf[..buf.len() - 1], 0)
            .unwrap_err()
            .starts_with("truncated record"));
    }

    #[tokio::test]
    async fn writer_group_commits_and_scan_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let (log, join) = start_writer(tmp.path(), None, 1).unwrap();
        let mut waiters = Vec::new();
        for seq in 1..=50u64 {
            let mut bytes = Vec::new();
            encode_record(seq, &op(seq), &mut bytes).unwrap();
            let (tx, rx) = oneshot::channel();
            log.tx
                .send(LogCmd::Append {
                    bytes,
                    first_seq: seq,
                    last_seq: seq,
                    done: tx,
                })
                .await
                .unwrap();
            waiters.push(rx);
        }
        for w in waiters {
            assert_eq!(w.await.unwrap(), Ok(()));
        }
        assert_eq!(log.durable_seq(), 50);
        let (tail, last) = log.tail.read_from(48, 1 << 20).unwrap();
        assert_eq!(last, 50);
        let run = decode_run(&tail, 47).unwrap();
        assert_eq!(
            run.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![48, 49, 50]
        );
        let (tx, rx) = oneshot::channel();
        log.tx
            .send(LogCmd::Rotate {
                first_seq: 51,
                done: tx,
            })
            .await
            .unwrap();
        assert_eq!(rx.await.unwrap(), Ok(()));
        log.tx.send(LogCmd::Stop).await.unwrap();
        join.join().unwrap();
        let segs = list_segments(tmp.path()).unwrap();
        assert_eq!(segs.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 51]);
        let seg = scan_segment(1, &segs[0].1).unwrap();
        assert_eq!(seg.records.len(), 50);
        assert_eq!(seg.records[49], (50, op(50)));
        assert!(seg.bad_at.is_none());
        let empty = scan_segment(51, &segs[1].1).unwrap();
        assert!(empty.records.is_empty() && empty.bad_at.is_none());
        // Reading from the segments: a middle range, then a cut after seq 20.
        let (bytes, last) = read_from(tmp.path(), 10, 30, 1 << 20).unwrap().unwrap();
        assert_eq!(last, 30);
        assert_eq!(decode_run(&bytes, 9).unwrap().len(), 21);
        assert!(read_from(tmp.path(), 60, 70, 1 << 20).unwrap().is_none());
        truncate_after(tmp.path(), 20).unwrap();
        let segs = list_segments(tmp.path()).unwrap();
        assert_eq!(segs.len(), 1, "the later, empty segment is gone");
        let seg = scan_segment(1, &segs[0].1).unwrap();
        assert_eq!(seg.records.last().map(|r| r.0), Some(20));
        assert!(seg.bad_at.is_none());
    }
}
