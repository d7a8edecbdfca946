//! The primary's acknowledgement rules as a state machine, driven by scripted witness
//! rounds (no network): what may be acknowledged in each sync state, when a standby becomes
//! required, when it stops being required, and deposition.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdfs_proto::dataplane::{StandbyMark, WitnessOp};
use rdfs_proto::ids::Epoch;

use super::witness::{Members, Round, Witness};
use super::*;

/// A witness the tests never ask (rounds are scripted); it only reports a membership.
struct Scripted;

#[tonic::async_trait]
impl Witness for Scripted {
    async fn ask(&self, _op: WitnessOp) -> Round {
        Round::default()
    }
    fn member_count(&self) -> usize {
        3
    }
}

fn ha() -> Ha {
    let members = Arc::new(Members::default());
    for n in ["n1", "n2", "n3"] {
        members.set(n, &format!("{n}:1"));
    }
    Ha::new(
        "primary-id".into(),
        "127.0.0.1:9000".into(),
        Timing::from_failover_timeout(Duration::from_secs(1)),
        Arc::new(Scripted),
        members,
        Role::Primary,
        Epoch(3),
    )
}

/// A round in which `granted` of 3 granted and held the round's mark.
fn round_for(op: &WitnessOp, granted: usize) -> Round {
    let mut r = Round {
        members: 3,
        ..Round::default()
    };
    let mark = match op {
        WitnessOp::Renew { mark, .. } => mark.clone().unwrap_or_default(),
        _ => StandbyMark::default(),
    };
    for i in 0..3 {
        let reply = rdfs_proto::dataplane::WitnessReply {
            granted: i < granted,
            epoch: Epoch(3),
            mark: mark.clone(),
            ..Default::default()
        };
        r.add(op, Ok(reply));
    }
    r
}

/// Runs one round where `granted` members grant; returns the mark it carried.
fn one_round(ha: &Ha, granted: usize, durable: u64) -> Option<StandbyMark> {
    let op = ha
        .plan_round(Instant::now(), durable)
        .expect("primary renews");
    let mark = match &op {
        WitnessOp::Renew { mark, .. } => mark.clone(),
        _ => None,
    };
    assert!(ha
        .finish_round(Instant::now(), &round_for(&op, granted), durable)
        .is_none());
    mark
}

fn acks(ha: &Ha, seq: u64) -> bool {
    matches!(ha.can_ack(seq, Instant::now()), Ack::Yes)
}

#[test]
fn nothing_is_acknowledged_before_no_standby_in_sync_is_recorded() {
    let ha = ha();
    assert!(!acks(&ha, 1), "no lease yet");
    // First round: lease granted, marks learnt, nothing recorded yet.
    assert_eq!(one_round(&ha, 2, 10), None);
    assert_eq!(ha.sync(), Sync::Starting);
    assert!(!acks(&ha, 1));
    // Second round records "no standby in sync" on a majority.
    let mark = one_round(&ha, 2, 10).expect("a mark");
    assert_eq!((mark.in_sync.as_str(), mark.out_of_sync_at), ("", 10));
    assert_eq!(ha.sync(), Sync::Detached);
    assert!(acks(&ha, 10));
}

#[test]
fn a_standby_attached_while_starting_is_caught_up_afterwards() {
    let ha = ha();
    let conn = ha.attach("standby-id", "127.0.0.1:9001", 0).unwrap();
    assert_eq!(ha.sync(), Sync::Starting);
    one_round(&ha, 3, 4);
    one_round(&ha, 3, 4);
    assert_eq!(ha.sync(), Sync::CatchingUp);
    ha.on_ack(conn, 4);
    assert_eq!(
        one_round(&ha, 3, 4).map(|m| m.in_sync),
        Some("standby-id".into())
    );
    assert_eq!(ha.sync(), Sync::InSync);
}

#[test]
fn a_caught_up_standby_becomes_required_and_then_marked() {
    let ha = ha();
    one_round(&ha, 3, 5);
    one_round(&ha, 3, 5);
    let conn = ha.attach("standby-id", "127.0.0.1:9001", 2).unwrap();
    assert_eq!(ha.sync(), Sync::CatchingUp);
    assert!(acks(&ha, 5), "a catching-up standby is not waited for");
    ha.on_ack(conn, 5);
    // Caught up to the durable seq: acknowledgements now wait for it, then it is marked.
    let mark = one_round(&ha, 2, 5).expect("mark");
    assert_eq!(mark.in_sync, "standby-id");
    assert_eq!(ha.sync(), Sync::InSync);
    assert!(acks(&ha, 5));
    assert!(!acks(&ha, 6), "record 6 waits for the standby");
    ha.on_ack(conn, 6);
    assert!(acks(&ha, 6));
    // A second standby cannot attach while this one is required.
    assert!(ha.attach("other", "127.0.0.1:9002", 0).is_err());
}

#[test]
fn a_standby_chasing_a_moving_log_becomes_required_within_the_slack() {
    let ha = ha();
    one_round(&ha, 3, 5);
    one_round(&ha, 3, 5);
    let conn = ha.attach("standby-id", "127.0.0.1:9001", 2).unwrap();
    let durable = 5000;
    ha.on_ack(conn, durable - CATCH_UP_SLACK_RECORDS - 1);
    assert!(one_round(&ha, 3, durable).is_none_or(|m| m.in_sync.is_empty()));
    assert_eq!(
        ha.sync(),
        Sync::CatchingUp,
        "too far behind: not waited for"
    );
    assert!(acks(&ha, durable));
    ha.on_ack(conn, durable - 10);
    one_round(&ha, 3, durable);
    assert_eq!(ha.sync(), Sync::Syncing { from: durable });
    assert!(
        !acks(&ha, durable),
        "within the slack: acknowledgements wait for the standby"
    );
    ha.on_ack(conn, durable);
    assert!(acks(&ha, durable));
    let mark = one_round(&ha, 3, durable).expect("the in-sync mark");
    assert_eq!(mark.in_sync, "standby-id");
    assert_eq!(ha.sync(), Sync::InSync);
}

#[test]
fn a_standby_that_stops_acking_is_dropped_only_after_the_mark_holds() {
    let ha = ha();
    one_round(&ha, 3, 5);
    one_round(&ha, 3, 5);
    let conn = ha.attach("standby-id", "127.0.0.1:9001", 5).unwrap();
    one_round(&ha, 3, 5);
    assert_eq!(ha.sync(), Sync::InSync);
    assert!(!acks(&ha, 7));
    std::thread::sleep(ha.timing.ack_timeout + Duration::from_millis(20));
    // The next round carries "out of sync at 5", but only a minority holds it: still waiting.
    let mark = one_round(&ha, 1, 7).expect("mark");
    assert_eq!((mark.in_sync.as_str(), mark.out_of_sync_at), ("", 5));
    assert_eq!(ha.sync(), Sync::Dropping);
    assert!(
        !acks(&ha, 7),
        "no ack until a majority holds the out-of-sync mark"
    );
    one_round(&ha, 2, 7);
    assert_eq!(ha.sync(), Sync::CatchingUp);
    assert!(acks(&ha, 7));
    ha.detach(conn);
    assert_eq!(ha.sync(), Sync::Detached);
}

#[test]
fn a_lapsed_lease_stops_acknowledgements_and_a_newer_epoch_deposes() {
    let ha = ha();
    one_round(&ha, 3, 1);
    one_round(&ha, 3, 1);
    assert!(acks(&ha, 1));
    let later = Instant::now() + ha.timing.valid_for + Duration::from_millis(1);
    assert!(matches!(ha.can_ack(1, later), Ack::Wait));
    let op = ha.plan_round(Instant::now(), 1).unwrap();
    let mut r = round_for(&op, 1);
    r.add(
        &op,
        Ok(rdfs_proto::dataplane::WitnessReply {
            granted: false,
            epoch: Epoch(4),
            holder_addr: "127.0.0.1:9001".into(),
            ..Default::default()
        }),
    );
    assert_eq!(
        ha.finish_round(Instant::now(), &r, 1),
        Some("127.0.0.1:9001".to_string())
    );
    assert!(ha.deposed.is_cancelled());
    assert!(matches!(ha.can_ack(1, Instant::now()), Ack::No(_)));
    assert_eq!(ha.plan_round(Instant::now(), 1), None);
}

#[test]
fn a_new_witness_must_hold_the_mark_before_the_next_acknowledgement() {
    let ha = ha();
    one_round(&ha, 3, 5);
    one_round(&ha, 3, 5);
    let conn = ha.attach("standby-id", "127.0.0.1:9001", 5).unwrap();
    one_round(&ha, 3, 5);
    assert_eq!(ha.sync(), Sync::InSync);
    ha.on_ack(conn, 6);
    assert!(acks(&ha, 6));
    ha.members.set("n4", "n4:1");
    ha.membership_changed();
    assert!(
        !acks(&ha, 6),
        "lease and mark from the old membership no longer count"
    );
    let mark = one_round(&ha, 3, 6).expect("the in-sync mark again");
    assert_eq!(mark.in_sync, "standby-id");
    assert!(acks(&ha, 6));
}
