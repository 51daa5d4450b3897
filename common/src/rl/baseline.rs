//! Reward baselines held outside the training step. Workers only *record* reward statistics per
//! (control node, action); the statistics are plain sums so that workers' shares merge exactly,
//! and a `BaselineStore` (a local one in a single process, the coordinator's later) turns the
//! pooled statistics into the values sent with the next step.

use super::{index_vector, rewards_of_rows, vector_len};
use crate::error::{Error, Result};
use crate::host;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Per (node, action): how many decisions took the action and the sum and sum of squares of
/// their bag rewards (a decision's reward is the reward of its example's bag).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RewardStats {
    count: Vec<Vec<u64>>,
    sum: Vec<Vec<f64>>,
    sum_sq: Vec<Vec<f64>>,
}

impl RewardStats {
    pub fn new(actions_per_node: &[usize]) -> Self {
        Self {
            count: actions_per_node.iter().map(|&k| vec![0; k]).collect(),
            sum: actions_per_node.iter().map(|&k| vec![0.0; k]).collect(),
            sum_sq: actions_per_node.iter().map(|&k| vec![0.0; k]).collect(),
        }
    }

    /// Number of actions of each node.
    pub fn actions_per_node(&self) -> Vec<usize> {
        self.count.iter().map(Vec::len).collect()
    }

    /// What one step's decisions of `node` (`actions`/`rows` i64 `[n]`, `bag_rewards [B/m]`) add to
    /// its statistics, left on the device for the caller to read with its other statistics and pass
    /// to [`add`](Self::add): f64 `[3k]`, per action the count of decisions, the sum of their rewards
    /// and the sum of squares. Out-of-range actions or rows fail inside torch (debug builds check first).
    pub fn sums_of(
        &self,
        node: usize,
        actions: &Tensor,
        rows: &Tensor,
        bag_rewards: &Tensor,
        bag_size: usize,
    ) -> Result<Tensor> {
        let k = match self.count.get(node) {
            Some(c) => c.len() as i64,
            None => {
                return Err(Error::Invalid(format!(
                    "reward stats: node {node} out of range ({} nodes)",
                    self.count.len()
                )))
            }
        };
        let n = vector_len("actions", actions)?;
        index_vector("actions", actions, n)?;
        index_vector("rows", rows, n)?;
        host::debug_check_range("reward stats: actions", actions, k)?;
        let r = rewards_of_rows(rows, bag_rewards, bag_size)?.f_to_kind(Kind::Double)?;
        let per_action = |src: &Tensor| -> Result<Tensor> {
            Ok(Tensor::f_zeros([k], (Kind::Double, r.device()))?.f_index_add(0, actions, src)?)
        };
        Ok(Tensor::f_cat(&[per_action(&r.f_ones_like()?)?, per_action(&r)?, per_action(&r.f_square()?)?], 0)?)
    }

    /// Adds `sums` (as [`sums_of`](Self::sums_of) returns them, read to the host) to `node`'s.
    pub fn add(&mut self, node: usize, sums: &[f64]) -> Result<()> {
        let k = self.count.get(node).map_or(0, Vec::len);
        if k == 0 || sums.len() != 3 * k {
            return Err(Error::Invalid(format!("reward stats: {} sums for node {node} of {k} actions", sums.len())));
        }
        for a in 0..k {
            self.count[node][a] += sums[a] as u64;
            self.sum[node][a] += sums[k + a];
            self.sum_sq[node][a] += sums[2 * k + a];
        }
        Ok(())
    }

    /// Adds another share of the same statistics. Merging into an empty `default()` adopts the
    /// other's shape, so pooling can start from nothing.
    pub fn merge(&mut self, other: &RewardStats) -> Result<()> {
        if self.count.is_empty() {
            *self = other.clone();
            return Ok(());
        }
        if self.actions_per_node() != other.actions_per_node() {
            return Err(Error::Invalid(format!(
                "reward stats: cannot merge actions per node {:?} with {:?}",
                other.actions_per_node(),
                self.actions_per_node()
            )));
        }
        for (node, counts) in other.count.iter().enumerate() {
            for (a, &c) in counts.iter().enumerate() {
                self.count[node][a] += c;
                self.sum[node][a] += other.sum[node][a];
                self.sum_sq[node][a] += other.sum_sq[node][a];
            }
        }
        Ok(())
    }

    pub fn count(&self, node: usize, action: usize) -> u64 {
        self.count.get(node).and_then(|c| c.get(action)).copied().unwrap_or(0)
    }

    /// Mean reward of the action's decisions; None when it was never taken.
    pub fn mean(&self, node: usize, action: usize) -> Option<f64> {
        let c = self.count(node, action);
        (c > 0).then(|| self.sum[node][action] / c as f64)
    }

    /// Population variance of the action's rewards; None when it was never taken.
    pub fn variance(&self, node: usize, action: usize) -> Option<f64> {
        let mean = self.mean(node, action)?;
        let c = self.count(node, action) as f64;
        // E[r²] − E[r]² can round slightly below zero.
        Some((self.sum_sq[node][action] / c - mean * mean).max(0.0))
    }

    /// Mean reward of all the node's decisions, whatever the action: the action-independent
    /// baseline that keeps REINFORCE unbiased. None when the node made no decision.
    pub fn node_mean(&self, node: usize) -> Option<f64> {
        let c: u64 = self.count.get(node)?.iter().sum();
        (c > 0).then(|| self.sum[node].iter().sum::<f64>() / c as f64)
    }
}

/// Where baselines live between steps.
pub trait BaselineStore {
    /// Current baseline, `[node][action]`.
    fn values(&self) -> Vec<Vec<f64>>;
    /// Folds in one step's pooled statistics (all workers merged).
    /// One value per node, the same for all its actions: the baseline REINFORCE subtracts. A baseline
    /// that differed between actions would bias the gradient (Σ_a b(a)·∇π(a) ≠ 0).
    fn node_values(&self) -> Vec<f64>;
    fn update(&mut self, pooled: &RewardStats);
}

/// Exponential moving average of each (node, action)'s mean reward. An action's first
/// observation sets its value outright, so the baseline does not start biased towards 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmaBaseline {
    /// Weight of the old value, in [0, 1].
    pub decay: f64,
    pub values: Vec<Vec<f64>>,
    pub seen: Vec<Vec<bool>>,
    /// EMA of each node's mean reward over all its actions.
    pub node: Vec<f64>,
    pub node_seen: Vec<bool>,
}

impl EmaBaseline {
    pub fn new(actions_per_node: &[usize], decay: f64) -> Self {
        Self {
            decay,
            values: actions_per_node.iter().map(|&k| vec![0.0; k]).collect(),
            seen: actions_per_node.iter().map(|&k| vec![false; k]).collect(),
            node: vec![0.0; actions_per_node.len()],
            node_seen: vec![false; actions_per_node.len()],
        }
    }
}

impl BaselineStore for EmaBaseline {
    fn values(&self) -> Vec<Vec<f64>> {
        self.values.clone()
    }

    fn node_values(&self) -> Vec<f64> {
        self.node.clone()
    }

    /// # Panics
    /// If `pooled` has another shape: both come from the same graph, so a mismatch is a bug.
    fn update(&mut self, pooled: &RewardStats) {
        let shape: Vec<usize> = self.values.iter().map(Vec::len).collect();
        assert_eq!(shape, pooled.actions_per_node(), "EmaBaseline::update: actions per node differ");
        let decay = self.decay;
        let ema = |value: &mut f64, seen: &mut bool, mean: f64| {
            *value = if *seen { decay * *value + (1.0 - decay) * mean } else { mean };
            *seen = true;
        };
        for (node, value) in self.node.iter_mut().enumerate() {
            if let Some(mean) = pooled.node_mean(node) {
                ema(value, &mut self.node_seen[node], mean);
            }
        }
        for (node, values) in self.values.iter_mut().enumerate() {
            for (a, value) in values.iter_mut().enumerate() {
                let Some(mean) = pooled.mean(node, a) else {
                    continue;
                };
                ema(value, &mut self.seen[node][a], mean);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rl::test_util::*;

    fn approx(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn record_equals_hand_computation() {
        let mut s = RewardStats::new(&[2, 3]);
        // rows / 2 = [0, 0, 1, 1, 2] → rewards [1, 1, 0.5, 0.5, −0.5]
        record(&mut s, 1, &i64s(&[0, 2, 2, 0, 1]), &i64s(&[0, 1, 2, 3, 5]), &f32s(&[1.0, 0.5, -0.5]), 2).unwrap();
        assert_eq!((s.count(1, 0), s.count(1, 1), s.count(1, 2), s.count(0, 0)), (2, 1, 2, 0));
        assert!(approx(s.mean(1, 0), 0.75) && approx(s.variance(1, 0), 0.0625));
        assert!(approx(s.mean(1, 2), 0.75) && approx(s.variance(1, 2), 0.0625));
        assert!(approx(s.mean(1, 1), -0.5) && approx(s.variance(1, 1), 0.0));
        assert_eq!((s.mean(0, 0), s.variance(0, 1), s.mean(5, 0)), (None, None, None));
        assert!(approx(s.node_mean(1), 2.5 / 5.0));
        assert_eq!(s.node_mean(0), None);
    }

    #[test]
    fn merged_halves_equal_the_whole() {
        let actions = [0i64, 1, 1, 0, 2, 1, 0, 2];
        let rows = [0i64, 1, 2, 3, 4, 5, 6, 7];
        let r = f32s(&[0.9, -0.2, 0.4, 0.7]);
        let mut whole = RewardStats::new(&[3]);
        record(&mut whole, 0, &i64s(&actions), &i64s(&rows), &r, 2).unwrap();
        let mut a = RewardStats::new(&[3]);
        let mut b = RewardStats::new(&[3]);
        record(&mut a, 0, &i64s(&actions[..3]), &i64s(&rows[..3]), &r, 2).unwrap();
        record(&mut b, 0, &i64s(&actions[3..]), &i64s(&rows[3..]), &r, 2).unwrap();
        let mut pooled = RewardStats::default();
        pooled.merge(&a).unwrap();
        pooled.merge(&b).unwrap();
        for act in 0..3 {
            assert_eq!(pooled.count(0, act), whole.count(0, act));
            assert!(approx(pooled.mean(0, act), whole.mean(0, act).unwrap()));
            assert!(approx(pooled.variance(0, act), whole.variance(0, act).unwrap()));
        }
    }

    #[test]
    fn merge_and_record_reject_mismatches() {
        let mut s = RewardStats::new(&[2]);
        let e = s.merge(&RewardStats::new(&[3])).unwrap_err().to_string();
        assert!(e.contains("[3]") && e.contains("[2]"), "{e}");
        let r = f32s(&[1.0]);
        assert!(record(&mut s, 1, &i64s(&[0]), &i64s(&[0]), &r, 1).is_err(), "node");
        assert!(record(&mut s, 0, &i64s(&[2]), &i64s(&[0]), &r, 1).is_err(), "action");
        assert!(record(&mut s, 0, &i64s(&[0]), &i64s(&[1]), &r, 1).is_err(), "row");
        assert!(record(&mut s, 0, &i64s(&[0]), &i64s(&[0]), &r, 0).is_err(), "m = 0");
        assert_eq!(s, RewardStats::new(&[2]), "failed records leave the stats untouched");
    }

    #[test]
    fn serde_round_trip() {
        let mut s = RewardStats::new(&[2, 1]);
        record(&mut s, 0, &i64s(&[1]), &i64s(&[0]), &f32s(&[0.5]), 1).unwrap();
        let back: RewardStats = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    /// Pooled stats of one step: `(node, action, reward)` decisions, one example per bag.
    fn step(decisions: &[(usize, i64, f32)]) -> RewardStats {
        let mut s = RewardStats::new(&[2, 1]);
        for &(node, action, reward) in decisions {
            record(&mut s, node, &i64s(&[action]), &i64s(&[0]), &f32s(&[reward]), 1).unwrap();
        }
        s
    }

    #[test]
    fn ema_over_three_updates() {
        let mut b = EmaBaseline::new(&[2, 1], 0.9);
        b.update(&step(&[(0, 0, 1.0), (1, 0, 0.25), (1, 0, 0.75)]));
        assert_eq!(b.values(), vec![vec![1.0, 0.0], vec![0.5]], "first sight sets the mean");
        assert_eq!(b.seen, vec![vec![true, false], vec![true]]);
        b.update(&step(&[(0, 0, 0.0), (0, 1, 2.0)]));
        // node 0 action 0: 0.9·1 + 0.1·0; action 1 first seen; node 1 untouched
        assert_close(&b.values().concat(), &[0.9, 2.0, 0.5], 1e-12);
        b.update(&step(&[(0, 0, 1.0), (0, 1, 0.0), (1, 0, -0.5)]));
        assert_close(&b.values().concat(), &[0.9 * 0.9 + 0.1, 0.9 * 2.0, 0.9 * 0.5 - 0.1 * 0.5], 1e-12);
    }

    #[test]
    #[should_panic(expected = "actions per node differ")]
    fn ema_rejects_other_shapes() {
        EmaBaseline::new(&[2], 0.9).update(&RewardStats::new(&[3]));
    }
}
