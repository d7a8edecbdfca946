//! High-availability tests (issue 5, "What it must show"): real `dfs master` processes — a
//! primary and a hot standby with a 1 s failover timeout — and real chunkservers reporting
//! to both, with kill -9, SIGSTOP and a TCP proxy the test cuts between the masters.
//!
//! | module | what it shows |
//! |---|---|
//! | [`t10_kill9_workload`] | item 1: kill -9 of the primary three times during creates, writes, renames and deletes; every acknowledged operation present, none applied twice; takeover times |
//! | [`t20_rejoin`] | item 2: the old primary rejoins as a standby and catches up, then fails back; a deposed primary cuts its unreplicated records |
//! | [`t30_partition`] | item 3: a partition between the masters and an isolated primary: never two masters acknowledging; one history with every acknowledged operation |
//!
//! Item 4 (FUSE and `dfs put` through a failover) is in the FUSE test crate (`fuse/ha.rs`),
//! item 5 is the `rdfs-ha-bench` benchmark.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;

mod t10_kill9_workload;
mod t20_rejoin;
mod t30_partition;
