//! Item 2: the old primary, restarted after a takeover, learns from the witnesses that it
//! was deposed, rejoins as the standby and catches up; killing the new primary then fails
//! back to it. And a deposed primary that had durable records the new primary never got
//! cuts them off before following.

use std::time::{Duration, Instant};

use crate::common::ha::*;

fn ls(c: &HaCluster) -> Vec<String> {
    let client = c.client();
    let mut names: Vec<String> =
        c.rt.block_on(client.list("/"))
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
    names.sort();
    names
}

fn mkdir(c: &HaCluster, path: &str) {
    let client = c.client();
    c.rt.block_on(client.mkdir(path, 0o755, false)).unwrap();
}

#[test]
fn the_old_primary_rejoins_as_standby_catches_up_and_takes_over_again() {
    let mut c = HaCluster::start(3);
    mkdir(&c, "/a");
    c.kill9(0);
    c.wait_primary_is(1, TAKEOVER_LIMIT);
    // Written while the old primary is down: it must catch up on these.
    for d in ["/b", "/b2", "/b3"] {
        mkdir(&c, d);
    }
    c.restart(0);
    assert_eq!(c.wait_in_sync(Duration::from_secs(60)), 1);
    let (m0, m1) = (c.state(0).unwrap(), c.state(1).unwrap());
    assert_eq!(m0.role, "standby");
    assert_eq!((m0.epoch, m1.epoch), (2, 2));
    assert_eq!(m0.last_op_seq, m1.last_op_seq);
    assert!(c.master_log(0).contains("deposed: rejoining as a standby"));
    // Fail back.
    c.kill9(1);
    c.wait_primary_is(0, TAKEOVER_LIMIT);
    mkdir(&c, "/c");
    assert_eq!(ls(&c), ["a", "b", "b2", "b3", "c"]);
    assert_eq!(c.state(0).unwrap().epoch, 3);
}

#[test]
fn a_deposed_primary_cuts_off_records_the_new_primary_never_had() {
    // The standby follows through a proxy, so the link can go silent with records in
    // flight that are then lost (a stopped process would still read them later from its
    // socket; a closed connection makes the primary drop the standby at once).
    let (mut c, proxy) = HaCluster::start_with_proxy(3);
    mkdir(&c, "/kept");
    c.wait_in_sync(Duration::from_secs(60));
    // Silence the link; the primary logs a record it cannot acknowledge, and dies before it
    // gives up on the standby (which would mark it out of sync).
    let mut attempts = 0;
    let diverged_seq = loop {
        attempts += 1;
        assert!(
            attempts <= 3,
            "could not stage the divergence\n{}",
            c.dump_logs()
        );
        let before = c.state(0).unwrap();
        proxy.stall();
        let addrs = c.master_list();
        let pending = std::thread::spawn(move || {
            std::process::Command::new(crate::common::dfs_bin())
                .args(["--master", &addrs, "--timeout", "60s", "mkdir", "/lost"])
                .output()
                .unwrap()
        });
        let deadline = Instant::now() + Duration::from_millis(400);
        let mut logged = None;
        while Instant::now() < deadline {
            let s = c.state(0).unwrap();
            if s.last_op_seq > before.last_op_seq {
                logged = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        match logged {
            Some(s) if s.standby_state == "in_sync" => {
                c.kill9(0);
                // What the stalled link held never arrives.
                proxy.block();
                let out = pending.join().unwrap();
                // The client retried at the new primary, which never had the record: it
                // ran the mkdir itself, once.
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                break s.last_op_seq;
            }
            _ => {
                // Too slow (the primary already gave up on the standby): try again.
                proxy.heal();
                let _ = pending.join();
                c.wait_in_sync(Duration::from_secs(60));
                let client = c.client();
                let _ = c.rt.block_on(client.delete("/lost", false));
                c.wait_in_sync(Duration::from_secs(60));
            }
        }
    };
    c.wait_primary_is(1, TAKEOVER_LIMIT);
    let m1 = c.state(1).unwrap();
    // The old primary had records past the new epoch's start that the new one never had.
    c.restart(0);
    assert_eq!(c.wait_in_sync(Duration::from_secs(60)), 1);
    let log = c.master_log(0);
    assert!(
        log.contains("cutting the local op log back") || log.contains("loading the primary's"),
        "the deposed primary kept its unreplicated records (up to seq {diverged_seq}; new primary at {})\n{}",
        m1.last_op_seq,
        c.dump_logs()
    );
    let (m0, m1) = (c.state(0).unwrap(), c.state(1).unwrap());
    assert_eq!(m0.last_op_seq, m1.last_op_seq);
    assert_eq!(ls(&c), ["kept", "lost"]);
    // And it can take over with the cut log.
    c.kill9(1);
    c.wait_primary_is(0, TAKEOVER_LIMIT);
    assert_eq!(ls(&c), ["kept", "lost"]);
}

/// After a takeover the new primary acknowledges writes alone (the old one is down); then
/// both stop and come back the other way round: the stale master as primary, the newer one
/// as its standby (a fresh-clone trial lost `/after` this way through `dfs cluster up`: the
/// stale master told the newer one to cut its log back). The stale master must refuse to
/// lead it, be deposed by the witnesses, and the newer one must come back as primary (the
/// witnesses let the last primary take the next epoch) with every acknowledged write.
#[test]
fn a_stale_master_started_as_primary_never_cuts_a_newer_standby_back() {
    let mut c = HaCluster::start(3);
    mkdir(&c, "/a");
    c.kill9(0);
    c.wait_primary_is(1, TAKEOVER_LIMIT);
    mkdir(&c, "/after");
    c.kill9(1);
    c.restart(0);
    c.restart_as_standby_of(1, 0);
    let took = c.wait_primary_is(1, Duration::from_secs(60));
    eprintln!("the newer master was primary again after {took:?}");
    assert_eq!(ls(&c), ["a", "after"]);
    assert_eq!(c.wait_in_sync(Duration::from_secs(60)), 1);
    assert_eq!(c.state(0).unwrap().role, "standby");
    // Given only the standby, the CLI says where the primary is instead of timing out.
    let out = std::process::Command::new(crate::common::dfs_bin())
        .args(["--master", &c.addrs[0], "--timeout", "20s", "ls", "/"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("is a standby; the primary is at {}", c.addrs[1])),
        "{err}"
    );
}
