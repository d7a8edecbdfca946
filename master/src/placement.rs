//! Replica placement: distinct chunkservers chosen at random, weighted by free space, so
//! new chunks spread out while emptier servers fill faster. Pure; callers pass candidates
//! that are already live and not out of space.

use rand::Rng;
use rdfs_proto::ids::ChunkserverId;

/// Picks up to `n` distinct servers from `(id, free_bytes)`, weighted by free space.
pub fn pick_weighted<R: Rng>(
    candidates: &[(ChunkserverId, u64)],
    n: usize,
    rng: &mut R,
) -> Vec<ChunkserverId> {
    let mut pool: Vec<(ChunkserverId, u64)> = candidates
        .iter()
        // A server reporting zero free bytes still gets a tiny weight: its capacity
        // report may lag, and no_space servers were filtered out already.
        .map(|&(id, free)| (id, free.max(1)))
        .collect();
    let mut out = Vec::with_capacity(n.min(pool.len()));
    while out.len() < n && !pool.is_empty() {
        let total: u128 = pool.iter().map(|c| c.1 as u128).sum();
        let mut x = rng.random_range(0..total);
        let mut chosen = pool.len() - 1;
        for (i, c) in pool.iter().enumerate() {
            if x < c.1 as u128 {
                chosen = i;
                break;
            }
            x -= c.1 as u128;
        }
        out.push(pool.swap_remove(chosen).0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn ids(v: &[u64]) -> Vec<(ChunkserverId, u64)> {
        v.iter()
            .enumerate()
            .map(|(i, f)| (ChunkserverId(i as u64 + 1), *f))
            .collect()
    }

    #[test]
    fn picks_distinct_and_at_most_available() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let got = pick_weighted(&ids(&[10, 10, 10]), 5, &mut rng);
        assert_eq!(got.len(), 3);
        let mut sorted = got.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 3);
        assert!(pick_weighted(&[], 2, &mut rng).is_empty());
    }

    #[test]
    fn prefers_free_space() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let cands = ids(&[1_000_000, 1]);
        let firsts = (0..1000)
            .filter(|_| pick_weighted(&cands, 1, &mut rng)[0] == ChunkserverId(1))
            .count();
        assert!(firsts > 990, "emptier server chosen {firsts}/1000 times");
    }
}
