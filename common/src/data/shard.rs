//! Deterministic epoch order and data-parallel sharding.
//!
//! The global order of an epoch depends only on (seed, epoch, n). Each step takes the next
//! `global_batch` indices of that order and gives every rank a contiguous, equal part of it, so a
//! run with any world size sees the same global batches in the same order, and a resumed run needs
//! nothing but the step number.

use crate::error::{Error, Result};
use crate::rng::{hash_words, SplitMix};

/// Separates the epoch-order stream from other uses of the same seed.
const ORDER_STREAM: u64 = 0x4550_4F43_484F_5244; // "EPOCHORD"

/// Fisher–Yates shuffle driven by `rng`.
pub(crate) fn shuffle<T>(v: &mut [T], rng: &mut SplitMix) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

/// A seeded permutation of `0..n` for `epoch`; independent of world size and rank.
pub fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut rng = SplitMix::new(hash_words(&[ORDER_STREAM, seed, epoch]));
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, &mut rng);
    order
}

/// The epoch order of the epoch in progress, recomputed only when the epoch changes (a step loop
/// asks for it every step; a resumed run starts in the middle of an epoch).
#[derive(Debug, Clone)]
pub struct EpochOrders {
    seed: u64,
    n: usize,
    current: Option<(u64, Vec<usize>)>,
}

impl EpochOrders {
    pub fn new(seed: u64, n: usize) -> Self {
        EpochOrders { seed, n, current: None }
    }

    pub fn get(&mut self, epoch: u64) -> &[usize] {
        if self.current.as_ref().is_none_or(|(e, _)| *e != epoch) {
            self.current = Some((epoch, epoch_order(self.seed, epoch, self.n)));
        }
        self.current.as_ref().map_or(&[], |(_, order)| order.as_slice())
    }
}

/// Full global batches in an epoch of `n` examples (the last partial batch is dropped, so every
/// rank takes the same number of equal steps). A zero batch has zero steps.
pub fn steps_per_epoch(n: usize, global_batch: usize) -> usize {
    n.checked_div(global_batch).unwrap_or(0)
}

fn check(global_batch: usize, rank: usize, world: usize) -> Result<usize> {
    if world == 0 || global_batch == 0 {
        return Err(Error::Invalid(format!(
            "global batch ({global_batch}) and world size ({world}) must both be at least 1"
        )));
    }
    if !global_batch.is_multiple_of(world) {
        return Err(Error::Invalid(format!("global batch {global_batch} is not divisible by world size {world}")));
    }
    if rank >= world {
        return Err(Error::Invalid(format!("rank {rank} out of range for world size {world}")));
    }
    Ok(global_batch / world)
}

/// This rank's contiguous part of step `step_in_epoch`'s global batch.
pub fn rank_slice(
    order: &[usize],
    step_in_epoch: usize,
    global_batch: usize,
    rank: usize,
    world: usize,
) -> Result<&[usize]> {
    let per_rank = check(global_batch, rank, world)?;
    let steps = steps_per_epoch(order.len(), global_batch);
    if step_in_epoch >= steps {
        return Err(Error::Invalid(format!(
            "step {step_in_epoch} out of range: an epoch of {} examples has {steps} steps of global batch {global_batch}",
            order.len()
        )));
    }
    let start = step_in_epoch * global_batch + rank * per_rank;
    Ok(&order[start..start + per_rank])
}

/// All of this rank's indices for the epoch: its `rank_slice` of every step, concatenated. Every rank
/// gets `steps_per_epoch * global_batch / world` indices.
pub fn shard(order: &[usize], global_batch: usize, rank: usize, world: usize) -> Result<Vec<usize>> {
    let per_rank = check(global_batch, rank, world)?;
    let steps = steps_per_epoch(order.len(), global_batch);
    let mut out = Vec::with_capacity(steps * per_rank);
    for step in 0..steps {
        out.extend_from_slice(rank_slice(order, step, global_batch, rank, world)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_a_permutation_and_repeatable() {
        for n in [0, 1, 2, 7, 100, 1000] {
            let o = epoch_order(3, 1, n);
            let mut sorted = o.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..n).collect::<Vec<_>>());
            assert_eq!(o, epoch_order(3, 1, n));
        }
    }

    #[test]
    fn golden_first_indices() {
        // Computed by an independent Python re-implementation of rng.rs's SplitMix64/hash_words and
        // this Fisher–Yates loop. A change here changes every run's data order: make it deliberately.
        assert_eq!(epoch_order(0, 0, 100)[..8], [90, 96, 94, 86, 4, 12, 30, 80]);
    }

    #[test]
    fn epochs_and_seeds_differ() {
        let a = epoch_order(0, 0, 1000);
        assert_ne!(a, epoch_order(0, 1, 1000));
        assert_ne!(a, epoch_order(1, 0, 1000));
        assert_ne!(a, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn shards_cover_each_index_once_with_equal_sizes() {
        for (n, gb, world) in [(100, 10, 1), (100, 10, 2), (100, 12, 4), (1003, 64, 8), (7, 8, 2), (60, 6, 3)] {
            let order = epoch_order(5, 2, n);
            let steps = steps_per_epoch(n, gb);
            let shards: Vec<Vec<usize>> =
                (0..world).map(|r| shard(&order, gb, r, world).expect("valid shard")).collect();
            for s in &shards {
                assert_eq!(s.len(), steps * gb / world, "n={n} gb={gb} world={world}");
            }
            let mut all: Vec<usize> = shards.concat();
            all.sort_unstable();
            let mut want = order[..steps * gb].to_vec();
            want.sort_unstable();
            assert_eq!(all, want, "n={n} gb={gb} world={world}");
        }
    }

    #[test]
    fn world_size_does_not_change_the_global_batches() {
        let order = epoch_order(9, 4, 500);
        let gb = 24;
        for world in [1, 2, 3, 4, 6, 8, 12, 24] {
            for step in 0..steps_per_epoch(500, gb) {
                let glued: Vec<usize> =
                    (0..world).flat_map(|r| rank_slice(&order, step, gb, r, world).expect("valid").to_vec()).collect();
                assert_eq!(glued, order[step * gb..(step + 1) * gb], "world {world} step {step}");
            }
        }
    }

    #[test]
    fn bad_arguments_are_errors_naming_the_values() {
        let order = epoch_order(0, 0, 100);
        let e = |r: Result<&[usize]>| r.expect_err("expected an error").to_string();
        assert!(e(rank_slice(&order, 0, 10, 0, 3)).contains("global batch 10 is not divisible by world size 3"));
        assert!(e(rank_slice(&order, 0, 10, 2, 2)).contains("rank 2 out of range for world size 2"));
        assert!(e(rank_slice(&order, 10, 10, 0, 2)).contains("step 10 out of range"));
        assert!(e(rank_slice(&order, 0, 0, 0, 1)).contains("global batch (0)"));
        assert!(shard(&order, 10, 0, 0).is_err());
        assert_eq!(steps_per_epoch(100, 0), 0);
        assert_eq!(steps_per_epoch(99, 10), 9);
    }
}
