//! Item 3: partitions. The standby reaches the primary through a TCP proxy the test cuts.
//! Two probes send mutations continuously, each to one master only, recording who
//! acknowledged what and when.
//!
//! 1. Masters cut apart: the primary gives up on the standby (marking it out of sync on the
//!    witnesses) and keeps serving; the standby cannot take over (the primary's lease runs
//!    and the witnesses say it is out of sync), so it never acknowledges.
//! 2. Healed: the standby catches up and is in sync again.
//! 3. The primary isolated from everything (SIGSTOP): the standby takes over; when the old
//!    primary resumes it acknowledges nothing in its old epoch and rejoins as standby.
//!
//! Throughout, no two masters acknowledge at once (epochs never interleave), and at the end
//! one history survives on both masters holding every acknowledged probe.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::common::ha::*;

/// Deadline of one probe attempt.
const PROBE_ATTEMPT: Duration = Duration::from_secs(1);

fn acked_by(results: &[ProbeResult], master: usize, after: Instant, before: Instant) -> usize {
    results
        .iter()
        .filter(|r| r.acked && r.master == master && r.sent >= after && r.answered <= before)
        .count()
}

#[test]
fn no_two_masters_acknowledge_at_once_and_one_history_survives() {
    let (mut c, proxy) = HaCluster::start_with_proxy(3);
    let client = c.client();
    c.rt.block_on(client.mkdir("/probe", 0o755, false)).unwrap();
    c.wait_in_sync(Duration::from_secs(60));

    let stop = Arc::new(AtomicBool::new(false));
    let probes: Vec<_> = (0..2)
        .map(|i| probe(c.addrs[i].clone(), i, stop.clone(), PROBE_ATTEMPT))
        .collect();
    std::thread::sleep(Duration::from_secs(1));

    // 1. Partition between the masters, for several failover timeouts.
    let cut = Instant::now();
    proxy.block();
    std::thread::sleep(Duration::from_secs(5));
    let s0 = c.state(0).unwrap();
    assert_eq!(s0.role, "primary");
    assert_eq!(s0.epoch, 1, "nobody took over during the partition");
    assert_ne!(s0.standby_state, "in_sync");
    assert_eq!(c.state(1).unwrap().role, "standby");
    let healed = Instant::now();
    proxy.heal();

    // 2. Healed: the standby catches up.
    assert_eq!(c.wait_in_sync(Duration::from_secs(60)), 0);

    // 3. The primary isolated from everything: the standby takes over.
    let frozen = Instant::now();
    c.signal(0, Signal::SIGSTOP);
    c.wait_primary_is(1, TAKEOVER_LIMIT);
    std::thread::sleep(Duration::from_secs(1));
    c.signal(0, Signal::SIGCONT);
    // It learns it was deposed and follows the new primary.
    assert_eq!(c.wait_in_sync(Duration::from_secs(60)), 1);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let results: Vec<ProbeResult> = probes.into_iter().flat_map(|p| p.join().unwrap()).collect();

    assert_no_overlap(&results);
    // During the partition only the primary acknowledged, and it did keep acknowledging.
    assert_eq!(acked_by(&results, 1, cut, healed), 0);
    assert!(
        acked_by(&results, 0, cut, healed) > 0,
        "the primary stopped serving"
    );
    // While frozen and after resuming, the old primary acknowledged nothing it was sent.
    assert_eq!(
        acked_by(&results, 0, frozen, Instant::now()),
        0,
        "the deposed primary acknowledged in its old epoch"
    );
    assert!(acked_by(&results, 1, frozen, Instant::now()) > 0);

    // One history: both masters at the same seq in the same epoch, holding every
    // acknowledged probe.
    let (m0, m1) = (c.state(0).unwrap(), c.state(1).unwrap());
    assert_eq!((m0.epoch, m1.epoch), (2, 2));
    assert_eq!(m0.last_op_seq, m1.last_op_seq);
    let present: BTreeSet<String> =
        c.rt.block_on(client.list("/probe"))
            .unwrap()
            .into_iter()
            .map(|e| format!("/probe/{}", e.name))
            .collect();
    let acked: Vec<&ProbeResult> = results.iter().filter(|r| r.acked).collect();
    for r in &acked {
        assert!(
            present.contains(&r.path),
            "acknowledged {} is missing",
            r.path
        );
    }
    eprintln!(
        "{} probes, {} acknowledged ({} by master 0, {} by master 1), {} present",
        results.len(),
        acked.len(),
        acked.iter().filter(|r| r.master == 0).count(),
        acked.iter().filter(|r| r.master == 1).count(),
        present.len()
    );
    // The same tree when read through the other master, after one more failover.
    c.kill9(1);
    c.wait_primary_is(0, TAKEOVER_LIMIT);
    let again: BTreeSet<String> =
        c.rt.block_on(c.client().list("/probe"))
            .unwrap()
            .into_iter()
            .map(|e| format!("/probe/{}", e.name))
            .collect();
    assert_eq!(again, present);
}
