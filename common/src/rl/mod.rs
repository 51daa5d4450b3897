//! The RL math of D2NN control nodes (paper §3): rewards, mini-bags, the one-step Q-learning
//! regression, a REINFORCE alternative, reward baselines and the ε schedule.
//!
//! Everything here is a pure function of tensors: no graph knowledge. A training step hands each
//! control node's decisions over as `scores [n, k]`, `actions i64 [n]` and `rows i64 [n]` (the
//! example's position in the local batch); mini-bag `i / m` groups `m` consecutive examples.
//! Losses are SUMS over bags or decisions so that the caller can divide by the global bag count
//! and data-parallel workers' losses add up exactly.

pub mod baseline;
pub mod epsilon;
pub mod marginal;
pub mod minibag;
pub mod qlearn;
pub mod rate_floor;
pub mod reinforce;
pub mod reward;

pub use baseline::{BaselineStore, EmaBaseline, RewardStats};
pub use epsilon::EpsilonSchedule;
pub use marginal::{marginal_rewards, BagCredit, PassOutcome};
pub use minibag::{bag_index, bag_rewards, f1_score, Accuracy};
pub use qlearn::{centered_q_loss, q_loss, QContinuation, QTargets};
pub use rate_floor::RateFloor;
pub use reinforce::{advantages, reinforce_loss};
pub use reward::example_rewards;

use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// Length of a 1-D tensor, or an error naming the argument.
fn vector_len(name: &str, t: &Tensor) -> Result<i64> {
    match t.size().as_slice() {
        [n] => Ok(*n),
        other => Err(Error::Invalid(format!("{name} must be 1-D, got shape {other:?}"))),
    }
}

fn same_len(name: &str, t: &Tensor, expected: i64) -> Result<()> {
    let n = vector_len(name, t)?;
    if n != expected {
        return Err(Error::Invalid(format!("{name} has {n} entries, expected {expected}")));
    }
    Ok(())
}

fn index_vector(name: &str, t: &Tensor, expected: i64) -> Result<()> {
    same_len(name, t, expected)?;
    if t.kind() != Kind::Int64 {
        return Err(Error::Invalid(format!("{name} must be int64, got {:?}", t.kind())));
    }
    Ok(())
}

fn check_lambda(lambda: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&lambda) {
        return Err(Error::Invalid(format!("reward weight λ must be in [0, 1], got {lambda}")));
    }
    Ok(())
}

fn check_bag_size(bag_size: usize) -> Result<i64> {
    if bag_size == 0 {
        return Err(Error::Invalid("mini-bag size m must be at least 1".into()));
    }
    Ok(bag_size as i64)
}

/// Number of bags in a batch of `batch` examples; a partial bag would get a reward from fewer
/// examples than the others, so it is refused rather than silently dropped.
fn num_bags(batch: i64, bag_size: usize) -> Result<i64> {
    let m = check_bag_size(bag_size)?;
    if batch % m != 0 {
        return Err(Error::Invalid(format!("batch size B = {batch} is not a multiple of the mini-bag size m = {m}")));
    }
    Ok(batch / m)
}

/// Validates a controller's Q-values `scores [n, k]` and the per-row targets of its k actions,
/// `targets` of the same shape, for `what` (the function that reads them); returns `(n, k)`.
fn check_action_targets(what: &str, scores: &Tensor, targets: &Tensor) -> Result<(i64, i64)> {
    let size = scores.size();
    let (n, k) = match size[..] {
        [n, k] => (n, k),
        _ => return Err(Error::Invalid(format!("{what}: scores must be [n, k], got {size:?}"))),
    };
    if targets.size() != size {
        return Err(Error::Invalid(format!(
            "{what}: targets must be [{n}, {k}] like the scores, got {:?}",
            targets.size()
        )));
    }
    Ok((n, k))
}

/// Validates one control node's decisions; returns `(n, k)`.
fn check_decisions(scores: &Tensor, actions: &Tensor, rows: Option<&Tensor>) -> Result<(i64, i64)> {
    let (n, k) = match scores.size().as_slice() {
        [n, k] => (*n, *k),
        other => return Err(Error::Invalid(format!("scores must be [n, k], got shape {other:?}"))),
    };
    index_vector("actions", actions, n)?;
    if let Some(rows) = rows {
        index_vector("rows", rows, n)?;
    }
    Ok((n, k))
}

/// The reward of each decision's bag, `bag_rewards[rows / m]`, detached: rewards are targets.
/// f64 rewards stay f64 (tests of estimator statistics want them), anything else becomes f32.
fn rewards_of_rows(rows: &Tensor, bag_rewards: &Tensor, bag_size: usize) -> Result<Tensor> {
    let bags = vector_len("bag_rewards", bag_rewards)?;
    let m = check_bag_size(bag_size)?;
    crate::host::debug_check_range("rows", rows, bags * m)?;
    let kind = if bag_rewards.kind() == Kind::Double { Kind::Double } else { Kind::Float };
    let r = bag_rewards.detach().f_to_kind(kind)?.f_to_device(rows.device())?;
    Ok(r.f_index_select(0, &rows.f_floor_divide_scalar(m)?)?)
}

#[cfg(test)]
pub(crate) mod test_util {
    use tch::{Kind, Tensor};

    use super::RewardStats;

    /// Adds one step's decisions of `node` to `s`, as a training step does: the sums, read, added.
    pub fn record(
        s: &mut RewardStats,
        node: usize,
        actions: &Tensor,
        rows: &Tensor,
        bag_rewards: &Tensor,
        m: usize,
    ) -> crate::Result<()> {
        let sums = s.sums_of(node, actions, rows, bag_rewards, m)?;
        s.add(node, &crate::host::values::<f64>(&sums)?)
    }

    pub fn f32s(v: &[f32]) -> Tensor {
        Tensor::from_slice(v)
    }
    pub fn i64s(v: &[i64]) -> Tensor {
        Tensor::from_slice(v)
    }
    pub fn bools(v: &[bool]) -> Tensor {
        Tensor::from_slice(v)
    }
    pub fn vals(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(&t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
    }
    pub fn assert_close(got: &[f64], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= tol, "got {got:?}, want {want:?} (tol {tol})");
        }
    }
}
