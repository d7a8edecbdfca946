//! FUSE tests: real `dfs mount` processes over real multi-process clusters (1 MiB chunks),
//! driven with std::fs, libc calls and everyday tools. CI runs as root, so mounts are real;
//! every mount is unmounted in `Drop`, even when a test panics (`umount -l` fallback).
//!
//! | module | what it shows (issue 3, "What it must show") |
//! |---|---|
//! | [`basics`] | data round trips across remounts, fsync, a crashed mount, `cluster up --mount` |
//! | [`posix`] | our POSIX conformance set, with exact expected values (item 2) |
//! | [`tools`] | tar + sha256sum, cp -a, rsync -a, git, cargo build on the mount (item 1) |
//! | [`fsx`] | the random-operation exerciser against an in-memory model (item 3) |
//! | [`consistency`] | two mounts of one cluster: close-to-open (item 4) |
//! | [`faults`] | kill -9 of a chunkserver during `cp`, EIO and recovery (item 5) |
//! | [`ha`] | issue 5, item 4: writes through a mount and a `dfs put` continue through a failover |
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;
mod mount;

mod basics;
mod consistency;
mod faults;
mod fsx;
mod ha;
mod posix;
mod tools;
