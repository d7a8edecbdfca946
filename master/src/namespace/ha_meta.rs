//! The part of the namespace that high availability needs to be durable and identical on
//! every master: the epoch history (which epoch wrote which records, so a deposed primary
//! can find the last record it shares with the new one) and the witness membership (the
//! chunkservers whose majority grants the primary's lease).

use std::collections::BTreeMap;

use rdfs_proto::ids::Epoch;
use serde::{Deserialize, Serialize};

/// The first epoch of every cluster, written by its first record.
pub const FIRST_EPOCH: Epoch = Epoch(1);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaMeta {
    /// `(epoch, first seq written in it)` for every epoch after the first, oldest first.
    pub epochs: Vec<(Epoch, u64)>,
    /// Witness members: chunkserver node id → data-plane address it registered with first
    /// (a hint until it registers again).
    pub witnesses: BTreeMap<String, String>,
}

impl HaMeta {
    /// The whole history, the first epoch (from seq 1) included.
    pub fn history(&self) -> Vec<(Epoch, u64)> {
        let mut h = Vec::with_capacity(self.epochs.len() + 1);
        h.push((FIRST_EPOCH, 1));
        h.extend(self.epochs.iter().copied());
        h
    }
}

/// The last seq two logs agree on, from their epoch histories (oldest first, each starting
/// with the first epoch at seq 1) and last seqs.
///
/// Only one primary writes in an epoch, and everybody's records of that epoch are a prefix
/// of what it wrote, starting at the same seq. So the logs agree up to the end of the
/// newest epoch they both have (starting at the same seq), capped by both logs' ends
/// within it; before it, every epoch was followed by the same next one.
pub fn shared_seq(a: &[(Epoch, u64)], a_last: u64, b: &[(Epoch, u64)], b_last: u64) -> u64 {
    let end_of = |h: &[(Epoch, u64)], i: usize, last: u64| match h.get(i + 1) {
        Some(next) => next.1.saturating_sub(1).min(last),
        None => last,
    };
    for (i, (epoch, start)) in b.iter().enumerate().rev() {
        let Some(j) = a.iter().position(|(e, s)| e == epoch && s == start) else {
            continue;
        };
        let b_end = end_of(b, i, b_last);
        let a_end = end_of(a, j, a_last);
        if b_end + 1 < *start || a_end + 1 < *start {
            // The epoch holds no record on one side: look at older ones.
            continue;
        }
        return b_end.min(a_end);
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &[(u64, u64)]) -> Vec<(Epoch, u64)> {
        v.iter().map(|(e, s)| (Epoch(*e), *s)).collect()
    }

    #[test]
    fn a_standby_behind_in_the_same_epoch_shares_all_it_has() {
        let p = h(&[(1, 1)]);
        assert_eq!(shared_seq(&p, 100, &p, 40), 40);
        // A standby ahead of a primary that lost its tail keeps only what the primary has.
        assert_eq!(shared_seq(&p, 30, &p, 40), 30);
    }

    #[test]
    fn a_deposed_primary_cuts_back_to_where_the_new_epoch_began() {
        // The new primary took over at seq 51 in epoch 2; the old one wrote 51..60 in epoch 1.
        let new = h(&[(1, 1), (2, 51)]);
        let old = h(&[(1, 1)]);
        assert_eq!(shared_seq(&new, 80, &old, 60), 50);
        // An old primary that had written less than the new one saw keeps all of it.
        assert_eq!(shared_seq(&new, 80, &old, 45), 45);
    }

    #[test]
    fn an_epoch_the_primary_never_saw_is_cut_entirely() {
        // The old node promoted itself to epoch 3 at seq 61 but lost; the winner's epoch 3
        // does not exist (it took epoch 4 at seq 58).
        let winner = h(&[(1, 1), (2, 51), (4, 58)]);
        let loser = h(&[(1, 1), (2, 51), (3, 61)]);
        assert_eq!(shared_seq(&winner, 90, &loser, 70), 57);
        // Histories with nothing in common but the start share nothing past what both hold.
        assert_eq!(shared_seq(&h(&[(1, 1)]), 0, &loser, 70), 0);
    }
}
