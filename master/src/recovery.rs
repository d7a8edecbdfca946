//! Startup recovery: newest valid checkpoint, then replay of every later op-log record in
//! seq order. A torn tail is cut off; any other damage (a bad record followed by a valid
//! one, a seq gap, an op that does not apply) stops the master with the file and offset.

use std::fs;
use std::path::{Path, PathBuf};

use crate::checkpoint;
use crate::error::MasterError;
use crate::fsutil::fsync_dir;
use crate::namespace::{Namespace, Op};
use crate::oplog::{self, ScannedSegment};

#[derive(Debug)]
pub struct Recovered {
    pub ns: Namespace,
    /// Seq of the last record applied (or of the checkpoint).
    pub last_seq: u64,
    /// Seq the loaded checkpoint covers (0 = none).
    pub checkpoint_seq: u64,
    /// The segment new records are appended to, if one exists.
    pub last_segment: Option<(u64, PathBuf)>,
    /// Answers of requests (`RequestDone`) found in every segment still on disk, those
    /// before the checkpoint included: the retry cache a restarted master starts with.
    pub answers: Vec<RecoveredAnswer>,
}

/// One `RequestDone` record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredAnswer {
    pub seq: u64,
    pub client_id: Vec<u8>,
    pub call_id: u64,
    pub answer: Vec<u8>,
}

/// Creates `oplog/` and `checkpoint/` if missing (fsyncing the data dir when it did).
fn ensure_dirs(data_dir: &Path) -> Result<(), MasterError> {
    let mut created = false;
    for d in [
        oplog::segment_dir(data_dir),
        checkpoint::checkpoint_dir(data_dir),
    ] {
        if !d.is_dir() {
            fs::create_dir_all(&d).map_err(|e| MasterError::io(&d, "creating directory", e))?;
            created = true;
        }
    }
    if created {
        fsync_dir(data_dir)?;
    }
    Ok(())
}

pub fn recover(data_dir: &Path) -> Result<Recovered, MasterError> {
    ensure_dirs(data_dir)?;
    let (checkpoint_seq, mut ns) =
        checkpoint::load_newest(&checkpoint::checkpoint_dir(data_dir))?.unwrap_or_default();
    let seg_dir = oplog::segment_dir(data_dir);
    let segments = oplog::list_segments(&seg_dir)?
        .into_iter()
        .map(|(seq, path)| oplog::scan_segment(seq, &path))
        .collect::<Result<Vec<_>, _>>()?;
    let mut last_seq = checkpoint_seq;
    let mut answers = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        let later_valid = segments[i + 1..].iter().any(|s| !s.records.is_empty());
        check_damage(seg, later_valid)?;
        for (seq, op) in &seg.records {
            if let Op::RequestDone {
                client_id,
                call_id,
                answer,
            } = op
            {
                answers.push(RecoveredAnswer {
                    seq: *seq,
                    client_id: client_id.clone(),
                    call_id: *call_id,
                    answer: answer.clone(),
                });
            }
            if *seq <= checkpoint_seq {
                continue;
            }
            if *seq != last_seq + 1 {
                return Err(MasterError::Recovery(format!(
                    "{}: record seq {seq} follows seq {last_seq}: a gap in the operation log",
                    seg.path.display()
                )));
            }
            ns.apply(op).map_err(|e| {
                MasterError::Recovery(format!(
                    "{}: record seq {seq} ({}) does not apply: {e}",
                    seg.path.display(),
                    op.kind()
                ))
            })?;
            last_seq = *seq;
        }
    }
    let last_segment = segments.last().map(|s| (s.first_seq, s.path.clone()));
    tracing::info!(
        checkpoint_seq,
        last_seq,
        segments = segments.len(),
        "recovered namespace"
    );
    // Answers past the last record applied were cut with a torn tail or never existed.
    answers.retain(|a| a.seq <= last_seq);
    Ok(Recovered {
        ns,
        last_seq,
        checkpoint_seq,
        last_segment,
        answers,
    })
}

/// Cuts a torn tail, or refuses damage that valid records follow.
fn check_damage(seg: &ScannedSegment, later_valid: bool) -> Result<(), MasterError> {
    if seg.torn_header {
        if later_valid {
            return Err(MasterError::Corrupt {
                path: seg.path.clone(),
                offset: 0,
                reason: "truncated segment header followed by valid segments".into(),
            });
        }
        tracing::warn!(path = %seg.path.display(), "segment with a torn header: rewriting it empty");
        return oplog::truncate_segment(&seg.path, 0);
    }
    let Some((offset, reason)) = &seg.bad_at else {
        return Ok(());
    };
    if seg.valid_after_bad || later_valid {
        return Err(MasterError::Corrupt {
            path: seg.path.clone(),
            offset: *offset,
            reason: format!("{reason}, followed by valid records (not a torn tail)"),
        });
    }
    tracing::warn!(path = %seg.path.display(), offset, %reason, "cutting torn op-log tail");
    oplog::truncate_segment(&seg.path, *offset)
}

/// Removes segments wholly covered by the checkpoint at `covered_seq`: a segment is
/// covered when the next segment starts at or before `covered_seq + 1`.
pub fn remove_covered_segments(seg_dir: &Path, covered_seq: u64) -> Result<usize, MasterError> {
    let segments = oplog::list_segments(seg_dir)?;
    let mut removed = 0;
    for pair in segments.windows(2) {
        if pair[1].0 <= covered_seq + 1 {
            fs::remove_file(&pair[0].1)
                .map_err(|e| MasterError::io(&pair[0].1, "removing covered segment", e))?;
            removed += 1;
        }
    }
    if removed > 0 {
        fsync_dir(seg_dir)?;
    }
    Ok(removed)
}
