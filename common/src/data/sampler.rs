//! The run's sample order, owned by whoever drives the steps (the coordinator, or the local loop):
//! which training examples each step trains on, and the record that every epoch committed each of
//! its examples exactly once, whatever happened to the workers meanwhile.
//!
//! An epoch is the seeded permutation `shard::epoch_order(seed, epoch, n)` cut into full global
//! batches (the tail that does not fill one is not part of the epoch, as before). Batches are handed
//! out in order; a batch whose step is aborted is handed out again, whole, before any new one (so
//! every batch stays full and every rank's share stays whole mini-bags), up to [`MAX_ATTEMPTS`]
//! times; after that its examples are skipped for the epoch and counted as such. The next epoch
//! starts only once every batch of this one is committed or skipped.
use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::shard::{epoch_order, steps_per_epoch};
use crate::error::{Error, Result};

/// Aborted steps a batch may take before its examples are skipped for the epoch: a batch that
/// fails for itself (not because a worker was lost) must not stop the run forever.
pub const MAX_ATTEMPTS: u32 = 3;

/// One epoch's record: how many of its examples were committed, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochCoverage {
    pub epoch: u64,
    /// Examples of the epoch's order in full global batches.
    pub examples_in_epoch: u64,
    /// Distinct examples whose gradients went into a committed update.
    pub examples_committed: u64,
    /// Commits of an example already committed in this epoch: 0 unless something is wrong.
    pub duplicates: u64,
    /// Examples handed out again: after an aborted step, or a step re-run by a re-formed cluster
    /// (counted once per retry).
    pub examples_retried: u64,
    /// Examples dropped for the epoch after [`MAX_ATTEMPTS`] aborted steps.
    pub examples_skipped: u64,
}

impl EpochCoverage {
    fn new(epoch: u64, examples_in_epoch: u64) -> EpochCoverage {
        EpochCoverage {
            epoch,
            examples_in_epoch,
            examples_committed: 0,
            duplicates: 0,
            examples_retried: 0,
            examples_skipped: 0,
        }
    }

    /// Every example of the epoch committed once, none twice, none skipped.
    pub fn exactly_once(&self) -> bool {
        self.examples_committed == self.examples_in_epoch && self.duplicates == 0 && self.examples_skipped == 0
    }
}

/// A batch waiting to be handed out again, and the aborted steps it has taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBatch {
    pub ids: Vec<u32>,
    pub attempts: u32,
}

/// What a checkpoint keeps of the sampler (taken between steps, so nothing is in flight); with the
/// seed and the split's size it rebuilds the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerState {
    pub epoch: u64,
    /// Examples of the epoch's order handed out so far (a multiple of the global batch).
    pub cursor: u64,
    /// Batches of aborted steps, to be handed out again first.
    pub retry: Vec<RetryBatch>,
    /// Examples of this epoch skipped after too many aborted steps.
    pub skipped: Vec<u32>,
    /// Every epoch begun so far, the current one last.
    pub coverage: Vec<EpochCoverage>,
}

#[derive(Debug)]
struct InFlight {
    ids: Vec<u32>,
    attempts: u32,
}

/// See the module docs.
#[derive(Debug)]
pub struct Sampler {
    seed: u64,
    n: usize,
    global_batch: usize,
    epochs: u64,
    epoch: u64,
    order: Vec<u32>,
    epoch_len: usize,
    cursor: usize,
    retry: VecDeque<RetryBatch>,
    skipped: Vec<u32>,
    committed: Vec<bool>,
    coverage: Vec<EpochCoverage>,
    in_flight: Option<InFlight>,
}

fn invalid(message: String) -> Error {
    Error::Invalid(message)
}

fn order_u32(seed: u64, epoch: u64, n: usize) -> Vec<u32> {
    // `Sampler::new` refuses splits beyond u32, so every index fits.
    epoch_order(seed, epoch, n).into_iter().map(|i| i as u32).collect()
}

impl Sampler {
    /// A run of `epochs` epochs over `n` examples in global batches of `global_batch`.
    pub fn new(seed: u64, n: usize, global_batch: usize, epochs: u64) -> Result<Sampler> {
        if u32::try_from(n).is_err() {
            return Err(invalid(format!("a training split of {n} examples is beyond the 2^32 a sample order holds")));
        }
        let steps = steps_per_epoch(n, global_batch);
        if steps == 0 {
            return Err(invalid(format!("a global batch of {global_batch} does not fit {n} training examples")));
        }
        let epoch_len = steps * global_batch;
        Ok(Sampler {
            seed,
            n,
            global_batch,
            epochs,
            epoch: 0,
            order: order_u32(seed, 0, n),
            epoch_len,
            cursor: 0,
            retry: VecDeque::new(),
            skipped: Vec::new(),
            committed: vec![false; n],
            coverage: vec![EpochCoverage::new(0, epoch_len as u64)],
            in_flight: None,
        })
    }

    /// The sampler a checkpoint's state describes, checked against this run's split and batch.
    pub fn restore(seed: u64, n: usize, global_batch: usize, epochs: u64, state: &SamplerState) -> Result<Sampler> {
        let mut s = Sampler::new(seed, n, global_batch, epochs)?;
        let cursor = usize::try_from(state.cursor).unwrap_or(usize::MAX);
        if cursor > s.epoch_len || !cursor.is_multiple_of(global_batch) {
            return Err(invalid(format!(
                "sampler cursor {} is not a whole number of global batches of {global_batch} within an epoch of {}",
                state.cursor, s.epoch_len
            )));
        }
        let current = state.coverage.last().filter(|c| c.epoch == state.epoch);
        let Some(current) = current else {
            return Err(invalid(format!("sampler coverage does not end with epoch {}", state.epoch)));
        };
        s.epoch = state.epoch;
        s.order = order_u32(seed, state.epoch, n);
        s.cursor = cursor;
        for &id in &s.order[..cursor] {
            s.committed[id as usize] = true;
        }
        let pending = state.retry.iter().flat_map(|b| b.ids.iter()).chain(&state.skipped);
        for &id in pending {
            match s.committed.get_mut(id as usize) {
                Some(slot) if *slot => *slot = false,
                _ => return Err(invalid(format!("sampler retries or skips example {id}, not handed out this epoch"))),
            }
        }
        if state.retry.iter().any(|b| b.ids.len() != global_batch) {
            return Err(invalid(format!("sampler retries a batch that is not one global batch of {global_batch}")));
        }
        let committed = s.committed.iter().filter(|&&c| c).count() as u64;
        if committed != current.examples_committed || current.examples_in_epoch != s.epoch_len as u64 {
            return Err(invalid(format!(
                "sampler coverage of epoch {} says {} of {} committed; its order and cursor say {committed} of {}",
                state.epoch, current.examples_committed, current.examples_in_epoch, s.epoch_len
            )));
        }
        s.retry = state.retry.iter().cloned().collect();
        s.skipped = state.skipped.clone();
        s.coverage = state.coverage.clone();
        Ok(s)
    }

    /// The state of a checkpoint written before the sampler existed: its runs took the batches of
    /// each epoch in order, one per step, so the step says how far the order was taken. Earlier
    /// epochs' coverage is unknown and not invented.
    pub fn from_step(seed: u64, n: usize, global_batch: usize, epochs: u64, step: u64) -> Result<Sampler> {
        let s = Sampler::new(seed, n, global_batch, epochs)?;
        let steps = (s.epoch_len / global_batch) as u64;
        let (mut epoch, mut cursor) = (step / steps, (step % steps) as usize * global_batch);
        if cursor == 0 && epoch > 0 {
            // At an epoch's end: that epoch complete, not the next one begun.
            (epoch, cursor) = (epoch - 1, s.epoch_len);
        }
        let mut coverage = EpochCoverage::new(epoch, s.epoch_len as u64);
        coverage.examples_committed = cursor as u64;
        let state =
            SamplerState { epoch, cursor: cursor as u64, retry: vec![], skipped: vec![], coverage: vec![coverage] };
        Sampler::restore(seed, n, global_batch, epochs, &state)
    }

    pub fn state(&self) -> SamplerState {
        SamplerState {
            epoch: self.epoch,
            cursor: self.cursor as u64,
            retry: self.retry.iter().cloned().collect(),
            skipped: self.skipped.clone(),
            coverage: self.coverage.clone(),
        }
    }

    pub fn coverage(&self) -> &[EpochCoverage] {
        &self.coverage
    }

    fn epoch_complete(&self) -> bool {
        self.in_flight.is_none() && self.retry.is_empty() && self.cursor == self.epoch_len
    }

    /// Every epoch's examples committed (or skipped).
    pub fn finished(&self) -> bool {
        self.epoch >= self.epochs || (self.epoch + 1 == self.epochs && self.epoch_complete())
    }

    /// The epoch the next batch comes from, and how many of its batches were taken from the order.
    pub fn place(&self) -> (u64, u64) {
        let (epoch, cursor) =
            if self.epoch_complete() && !self.finished() { (self.epoch + 1, 0) } else { (self.epoch, self.cursor) };
        (epoch, (cursor / self.global_batch) as u64)
    }

    /// Epochs with at least one batch handed out.
    pub fn epochs_begun(&self) -> u64 {
        if self.cursor == 0 && self.retry.is_empty() && self.in_flight.is_none() {
            self.epoch
        } else {
            self.epoch + 1
        }
    }

    /// The examples of the next step, in the order the ranks take them. A batch still in flight (its
    /// step neither committed nor aborted, e.g. re-run after the cluster re-formed) is handed out
    /// again as it was. None once the run's epochs are done.
    pub fn next_batch(&mut self) -> Option<&[u32]> {
        if let Some(n) = self.in_flight.as_ref().map(|b| b.ids.len() as u64) {
            self.current().examples_retried += n;
        } else {
            if self.finished() {
                return None;
            }
            if self.epoch_complete() {
                self.epoch += 1;
                self.order = order_u32(self.seed, self.epoch, self.n);
                self.cursor = 0;
                self.skipped.clear();
                self.committed.iter_mut().for_each(|c| *c = false);
                self.coverage.push(EpochCoverage::new(self.epoch, self.epoch_len as u64));
            }
            let batch = match self.retry.pop_front() {
                Some(b) => InFlight { ids: b.ids, attempts: b.attempts },
                None => {
                    let ids = self.order[self.cursor..self.cursor + self.global_batch].to_vec();
                    self.cursor += self.global_batch;
                    InFlight { ids, attempts: 0 }
                }
            };
            self.in_flight = Some(batch);
        }
        self.in_flight.as_ref().map(|b| b.ids.as_slice())
    }

    fn current(&mut self) -> &mut EpochCoverage {
        // `new` starts the list and every epoch change pushes to it: never empty.
        let last = self.coverage.len() - 1;
        &mut self.coverage[last]
    }

    /// The step of the batch in flight was committed: its examples count for the epoch.
    pub fn commit(&mut self) -> Result<()> {
        let batch = self.in_flight.take().ok_or_else(|| invalid("commit with no batch in flight".into()))?;
        let (mut fresh, mut again) = (0, 0);
        for &id in &batch.ids {
            let slot = &mut self.committed[id as usize];
            if *slot {
                again += 1;
            } else {
                *slot = true;
                fresh += 1;
            }
        }
        let c = self.current();
        c.examples_committed += fresh;
        c.duplicates += again;
        Ok(())
    }

    /// The step of the batch in flight was aborted: hand it out again next, or skip it for the
    /// epoch after [`MAX_ATTEMPTS`].
    pub fn abort(&mut self) -> Result<()> {
        let batch = self.in_flight.take().ok_or_else(|| invalid("abort with no batch in flight".into()))?;
        let attempts = batch.attempts + 1;
        let n = batch.ids.len() as u64;
        if attempts >= MAX_ATTEMPTS {
            tracing::warn!(epoch = self.epoch, examples = n, attempts, "a batch aborted too often: skipped this epoch");
            self.skipped.extend_from_slice(&batch.ids);
            self.current().examples_skipped += n;
        } else {
            self.current().examples_retried += n;
            self.retry.push_front(RetryBatch { ids: batch.ids, attempts });
        }
        Ok(())
    }
}

/// Each rank's share of a global batch of `global_batch` examples: whole multiples of `unit` (the
/// mini-bag), proportional to `weights` (examples per second; equal when None), each at least one
/// unit, summing to the batch. Largest remainders take the units left after rounding down.
pub fn shares(global_batch: usize, unit: usize, world: usize, weights: Option<&[f64]>) -> Result<Vec<usize>> {
    let unit = unit.max(1);
    if world == 0 || !global_batch.is_multiple_of(unit) || global_batch / unit < world {
        return Err(invalid(format!(
            "a global batch of {global_batch} cannot give {world} workers whole mini-bags of {unit}"
        )));
    }
    let units = global_batch / unit;
    let equal = vec![1.0; world];
    let w = match weights {
        Some(w) if w.len() == world && w.iter().all(|x| x.is_finite() && *x > 0.0) => w,
        _ => &equal,
    };
    let total: f64 = w.iter().sum();
    // One unit each up front, the rest in proportion.
    let spare = (units - world) as f64;
    let exact: Vec<f64> = w.iter().map(|x| spare * x / total).collect();
    let mut take: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut left = units - world - take.iter().sum::<usize>();
    let mut by_remainder: Vec<usize> = (0..world).collect();
    by_remainder
        .sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b)));
    for &r in by_remainder.iter().cycle() {
        if left == 0 {
            break;
        }
        take[r] += 1;
        left -= 1;
    }
    Ok(take.into_iter().map(|t| (t + 1) * unit).collect())
}

/// Cuts `ids` into consecutive parts of the given sizes (which sum to its length).
pub fn split<'a>(ids: &'a [u32], shares: &[usize]) -> Vec<&'a [u32]> {
    let mut rest = ids;
    shares
        .iter()
        .map(|&k| {
            let (part, tail) = rest.split_at(k.min(rest.len()));
            rest = tail;
            part
        })
        .collect()
}

#[cfg(test)]
#[path = "sampler_tests.rs"]
mod tests;
