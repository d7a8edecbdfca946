//! Operation counters and their recent history: every `RATE_SAMPLE_INTERVAL` the sampler
//! task records the cumulative totals, keeping the last hour (`RATE_HISTORY_SAMPLES`), so
//! the dashboard can chart per-second rates and `/metrics` can export the counters. Memory
//! only: a restarted master starts a new hour.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

/// Time between two samples of the counters.
pub const RATE_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// Samples kept: one hour.
pub const RATE_HISTORY_SAMPLES: usize = 720;
/// Window the repair rate (for the time-to-redundancy estimate) is averaged over.
pub const REPAIR_RATE_WINDOW: Duration = Duration::from_secs(60);

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// Op-log records applied (namespace mutations).
    Mutations = 0,
    /// `GetChunks` calls (reads and stats looking up chunk locations).
    ChunkLookups,
    /// `PrepareWrite` calls (write grants).
    WriteGrants,
    Heartbeats,
    /// Replica copies that completed (re-replication, decommission, balancer).
    ReplicasCopied,
    /// Replicas reported corrupt (reads or the scrubber).
    CorruptReplicas,
}

pub const RATES: [Rate; 6] = [
    Rate::Mutations,
    Rate::ChunkLookups,
    Rate::WriteGrants,
    Rate::Heartbeats,
    Rate::ReplicasCopied,
    Rate::CorruptReplicas,
];

impl Rate {
    /// Label value in `/metrics` and key in the JSON API.
    pub fn name(self) -> &'static str {
        match self {
            Rate::Mutations => "mutations",
            Rate::ChunkLookups => "chunk_lookups",
            Rate::WriteGrants => "write_grants",
            Rate::Heartbeats => "heartbeats",
            Rate::ReplicasCopied => "replicas_copied",
            Rate::CorruptReplicas => "corrupt_replicas",
        }
    }
}

/// Cumulative totals at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub unix_ms: u64,
    pub totals: [u64; RATES.len()],
}

#[derive(Debug)]
pub struct Metrics {
    counters: [AtomicU64; RATES.len()],
    history: Mutex<VecDeque<Sample>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            counters: Default::default(),
            history: Mutex::new(VecDeque::with_capacity(RATE_HISTORY_SAMPLES)),
        };
        m.sample(); // a zero baseline, so the first interval has a rate
        m
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Metrics {
    pub fn count(&self, rate: Rate, n: u64) {
        self.counters[rate as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn total(&self, rate: Rate) -> u64 {
        self.counters[rate as usize].load(Ordering::Relaxed)
    }

    fn totals(&self) -> [u64; RATES.len()] {
        std::array::from_fn(|i| self.counters[i].load(Ordering::Relaxed))
    }

    /// Records the current totals (the sampler calls this every interval).
    pub fn sample(&self) {
        let s = Sample {
            unix_ms: unix_ms(),
            totals: self.totals(),
        };
        let mut h = self.history.lock();
        if h.len() == RATE_HISTORY_SAMPLES {
            h.pop_front();
        }
        h.push_back(s);
    }

    /// Per-second rates between consecutive samples, oldest first: (end time, rates).
    pub fn rate_series(&self) -> Vec<(u64, [f64; RATES.len()])> {
        let h = self.history.lock();
        h.iter()
            .zip(h.iter().skip(1))
            .map(|(a, b)| {
                let secs = (b.unix_ms.saturating_sub(a.unix_ms) as f64 / 1000.0).max(0.001);
                let r =
                    std::array::from_fn(|i| b.totals[i].saturating_sub(a.totals[i]) as f64 / secs);
                (b.unix_ms, r)
            })
            .collect()
    }

    /// Average per-second rate over about the last `window` (from the newest sample at
    /// least that old, or the oldest one), up to now.
    pub fn recent_rate(&self, rate: Rate, window: Duration) -> f64 {
        let now = unix_ms();
        let h = self.history.lock();
        let cutoff = now.saturating_sub(window.as_millis() as u64);
        let Some(from) = h
            .iter()
            .rev()
            .find(|s| s.unix_ms <= cutoff)
            .or_else(|| h.front())
        else {
            return 0.0;
        };
        let secs = now.saturating_sub(from.unix_ms) as f64 / 1000.0;
        if secs < 1.0 {
            return 0.0;
        }
        self.total(rate).saturating_sub(from.totals[rate as usize]) as f64 / secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_bounded_and_rates_are_per_second_deltas() {
        let m = Metrics::default();
        for i in 0..(RATE_HISTORY_SAMPLES + 10) {
            m.count(Rate::Mutations, i as u64);
            m.sample();
        }
        assert_eq!(m.history.lock().len(), RATE_HISTORY_SAMPLES);
        let series = m.rate_series();
        assert_eq!(series.len(), RATE_HISTORY_SAMPLES - 1);
        assert_eq!(
            m.total(Rate::Mutations),
            (0..RATE_HISTORY_SAMPLES as u64 + 10).sum::<u64>()
        );
        // Two samples 0 ms apart are treated as 1 ms: rates stay finite.
        assert!(series.iter().all(|(_, r)| r.iter().all(|x| x.is_finite())));
    }
}
