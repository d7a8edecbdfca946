//! In-process cluster tests: a real master and real chunkservers on loopback.
//! Files are numbered t10_ (basic) … t50_ (faults); see `tests/src/lib.rs` for the harness.
#![allow(clippy::unwrap_used)]

mod t10_round_trip;
mod t20_placement;
mod t30_rereplication;
mod t40_corruption;
mod t50_master_recovery;
mod t60_bad_input;
mod t70_append;
mod t80_snapshot;
mod t90_trash_gc;
