//! The step protocol: orders, reports, commit or abort, acknowledgements (docs/runtime.md has the
//! state machine). The same structs travel inside one process and between processes.
use serde::{Deserialize, Serialize};

use d2nn_common::data::Examples;
use d2nn_common::train::StepStats;

/// Coordinator → each worker: run global step `step` on these training examples. The coordinator
/// owns the sample order (`data::Sampler`): it cuts each global batch into the ranks' shares, so it
/// decides, and records, who trains on what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepOrder {
    pub step: u64,
    pub epoch: u64,
    pub step_in_epoch: u64,
    /// This rank's examples (training-split indices), whole mini-bags; the global batch is
    /// `train.batch_size` over all ranks.
    pub examples: Vec<u32>,
    /// Those examples' bytes, with `data.source = "coordinator"` (None: the worker reads them from
    /// its own copy of the data).
    pub data: Option<Examples>,
    /// Learning rate of this step's update, applied only on [`Commit`].
    pub lr: f64,
    /// Reward baseline per controller for this step's loss: the coordinator's EMA of the pooled
    /// statistics of all earlier committed steps, so every rank subtracts the same value.
    pub baselines: Vec<f64>,
}

/// What one rank's step produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StepOutcome {
    /// The local step ran; its statistics (sums, so the coordinator merges them).
    Ok(StepStats),
    /// The local step failed before the all-reduce; the rank contributed zeros and status 0.
    Failed(String),
}

/// Worker → coordinator, after the all-reduce of step `step`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    pub rank: usize,
    pub step: u64,
    pub outcome: StepOutcome,
    /// Whether the all-reduced status slot says every rank's step succeeded. Every rank computes it
    /// from the same reduced value, so all reports agree; the coordinator checks that they do.
    pub all_ranks_ok: bool,
    /// Forward, backward and packing the gradients.
    pub compute_seconds: f64,
    /// Waiting at the barrier for the slowest rank.
    pub wait_seconds: f64,
    /// Reducing the gradient buffer.
    pub allreduce_seconds: f64,
}

/// Coordinator → every worker: apply the pending update of `step`. The baselines are the updated
/// EMA (after folding in this step's pooled statistics): the values of the next [`StepOrder`], kept
/// by the worker for its checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    pub step: u64,
    pub baselines: Vec<f64>,
    /// Ask for a digest of the updated parameters (costs a pass over them).
    pub want_digest: bool,
}

/// Coordinator → every worker: drop the pending gradients of `step`, leave the parameters as they
/// are. The step's number is used up either way (the run stops, or skips that batch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Abort {
    pub step: u64,
    pub reason: String,
}

/// Worker → coordinator, after a commit or an abort.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acknowledged {
    pub rank: usize,
    pub step: u64,
    /// Seconds of the optimizer update (0 on abort).
    pub update_seconds: f64,
    pub digest: Option<ParamDigest>,
}

/// `exec::param_digest` of one rank's parameters after step `step` (the number of updates applied
/// plus aborted steps, i.e. the next step to run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamDigest {
    pub rank: usize,
    pub step: u64,
    pub sha256: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{wire, RingPlan};

    /// Through the codec the cluster uses (bincode 2 with the size limit).
    fn round_trip<T: Serialize + serde::de::DeserializeOwned>(message: &T) -> T {
        wire::decode(&wire::encode(message).unwrap()).unwrap()
    }

    #[test]
    fn messages_round_trip_through_bincode() {
        let order = StepOrder {
            step: 7,
            epoch: 1,
            step_in_epoch: 3,
            examples: vec![5, 0, 59_999],
            data: None,
            lr: 0.05,
            baselines: vec![0.25, -1.0],
        };
        assert_eq!(round_trip(&order), order);
        let report = StepReport {
            rank: 1,
            step: 7,
            outcome: StepOutcome::Failed("boom".into()),
            all_ranks_ok: false,
            compute_seconds: 0.5,
            wait_seconds: 0.0,
            allreduce_seconds: 0.1,
        };
        assert_eq!(round_trip(&report), report);
        let plan = RingPlan {
            rank: 1,
            world: 2,
            addrs: vec!["127.0.0.1:4000".parse().unwrap(), "[::1]:4001".parse().unwrap()],
            session: "0123abcd/g2".into(),
        };
        assert_eq!(round_trip(&plan), plan);
    }
}
