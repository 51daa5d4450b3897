//! Each worker's share of a step's global batch (`train.balance`): equal, or in proportion to the
//! examples per second each worker's replica measured on its last steps.
use d2nn_common::config::Balance;
use d2nn_common::data::shares;
use d2nn_worker::protocol::StepReport;

use super::RuntimeError;

/// Weight of the newest step in a worker's rate: a few steps smooth out one slow step.
const RATE_WEIGHT: f64 = 0.3;

pub(super) struct Balancer {
    mode: Balance,
    /// Per rank: examples per second of compute, smoothed; None until it has run a step.
    rates: Vec<Option<f64>>,
}

impl Balancer {
    pub(super) fn new(mode: Balance, world: usize) -> Balancer {
        Balancer { mode, rates: vec![None; world] }
    }

    /// A new generation: ranks are other processes now, their rates unknown.
    pub(super) fn reset(&mut self, world: usize) {
        self.rates = vec![None; world];
    }

    /// The ranks' shares of a global batch of `global_batch` in whole mini-bags of `bag_size`:
    /// equal until every rank has a measured rate.
    pub(super) fn shares(&self, global_batch: usize, bag_size: usize) -> Result<Vec<usize>, RuntimeError> {
        let world = self.rates.len();
        let rates: Option<Vec<f64>> = match self.mode {
            Balance::Equal => None,
            Balance::Throughput => self.rates.iter().copied().collect(),
        };
        shares(global_batch, bag_size, world, rates.as_deref()).map_err(|e| RuntimeError::Coordinator(e.to_string()))
    }

    /// Folds the step's compute times into the rates (ranks that reported a share and a time).
    pub(super) fn observe(&mut self, reports: &[StepReport], shares: &[usize]) {
        for ((rate, report), &share) in self.rates.iter_mut().zip(reports).zip(shares) {
            if report.compute_seconds > 0.0 && share > 0 {
                let now = share as f64 / report.compute_seconds;
                *rate = Some(rate.map_or(now, |r| (1.0 - RATE_WEIGHT) * r + RATE_WEIGHT * now));
            }
        }
    }
}
