use serde::{Deserialize, Serialize};

use crate::rl::RewardStats;
use crate::Result;

/// Where steps' wall time went when they ran on replicas, in seconds, averaged over the workers:
/// forward, backward and the update; reducing the gradients; waiting at the barrier for the slowest
/// rank (the cost of uneven routing between ranks); and the rest of the step, the coordinator's
/// messages and bookkeeping. Named as `metrics.jsonl` names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct StepSplit {
    #[serde(rename = "compute_seconds")]
    pub compute: f64,
    #[serde(rename = "allreduce_seconds")]
    pub allreduce: f64,
    #[serde(rename = "wait_seconds")]
    pub wait: f64,
    #[serde(rename = "coordination_seconds")]
    pub coordination: f64,
}

impl std::ops::Add for StepSplit {
    type Output = StepSplit;

    fn add(self, o: StepSplit) -> StepSplit {
        StepSplit {
            compute: self.compute + o.compute,
            allreduce: self.allreduce + o.allreduce,
            wait: self.wait + o.wait,
            coordination: self.coordination + o.coordination,
        }
    }
}

/// What one step measured on some examples. Sums, so the statistics of several workers merge into
/// those of the global batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    pub examples: u64,
    /// Loss terms, each already divided by the global batch (or bag) count: they add across workers.
    pub loss: f64,
    pub task_loss: f64,
    pub control_loss: f64,
    pub correct: u64,
    pub cost_fraction_sum: f64,
    pub bags: u64,
    pub reward_sum: f64,
    pub rewards: RewardStats,
    /// REINFORCE advantages: count, sum and sum of squares, for their variance.
    pub advantage_count: u64,
    pub advantage_sum: f64,
    pub advantage_sq_sum: f64,
    /// Per controller and action: how many examples took it.
    pub actions: Vec<Vec<u64>>,
}

impl StepStats {
    pub fn merge(&mut self, other: &StepStats) -> Result<()> {
        self.examples += other.examples;
        self.loss += other.loss;
        self.task_loss += other.task_loss;
        self.control_loss += other.control_loss;
        self.correct += other.correct;
        self.cost_fraction_sum += other.cost_fraction_sum;
        self.bags += other.bags;
        self.reward_sum += other.reward_sum;
        self.rewards.merge(&other.rewards)?;
        self.advantage_count += other.advantage_count;
        self.advantage_sum += other.advantage_sum;
        self.advantage_sq_sum += other.advantage_sq_sum;
        if self.actions.is_empty() {
            self.actions = other.actions.clone();
        } else {
            for (mine, theirs) in self.actions.iter_mut().zip(&other.actions) {
                for (a, b) in mine.iter_mut().zip(theirs) {
                    *a += b;
                }
            }
        }
        Ok(())
    }

    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.examples.max(1) as f64
    }

    pub fn mean_cost_fraction(&self) -> f64 {
        self.cost_fraction_sum / self.examples.max(1) as f64
    }

    pub fn reward_mean(&self) -> f64 {
        self.reward_sum / self.bags.max(1) as f64
    }

    /// Per controller: the fraction of the examples it ran on that took each action (as
    /// `EvalMetrics::action_rates`); zeros for a controller that ran on none.
    pub fn action_rates(&self) -> Vec<Vec<f64>> {
        self.actions
            .iter()
            .map(|counts| {
                let ran: u64 = counts.iter().sum();
                counts.iter().map(|&k| if ran > 0 { k as f64 / ran as f64 } else { 0.0 }).collect()
            })
            .collect()
    }

    pub fn advantage_variance(&self) -> Option<f64> {
        (self.advantage_count > 0).then(|| {
            let n = self.advantage_count as f64;
            let mean = self.advantage_sum / n;
            (self.advantage_sq_sum / n - mean * mean).max(0.0)
        })
    }
}
