//! The paper's Q-learning regression for one control node, eq. (3)-(4). A control node runs at
//! most once per input, so learning is a one-step contextual bandit: no bootstrapped target, no
//! discount, and every controller regresses onto the same final reward.

use super::{check_action_targets, check_bag_size, check_decisions, vector_len};
use crate::error::Result;
use crate::host;
use crate::rl::bag_index;
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// With `train.q_every_action` and several controllers: what an earlier controller's action is
/// regressed onto, among the paths that continue from it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QContinuation {
    /// The best observed reward of those paths, per example: the later controllers as an oracle
    /// that knows which path will be right. It overrates continuing wherever the later paths
    /// disagree, since the later controllers cannot know which one is right.
    #[default]
    BestPath,
    /// The observed reward of the path the later controllers take greedily by their own current
    /// Q-values: the paper's Monte-Carlo target (every controller onto the final reward) under the
    /// greedy policy, with every action's reward observed on the forced passes.
    GreedyPath,
}

/// With `train.q_every_action` and per-example rewards: what an example's Q-values regress onto.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QTargets {
    /// Each action's Q onto the reward of its path (the paper's regression, for every action).
    #[default]
    Raw,
    /// Each action's Q minus the mean of the example's Q-values over the controller's actions, onto
    /// the action's reward minus the mean of the example's rewards over them ([`centered_q_loss`]).
    /// Only the differences between actions decide, and a part of the reward that every action of
    /// an example shares (with marginal credit: large, and set by the rest of its mini-bag) no longer
    /// has to be fitted: the controller learns the small input-dependent differences, such as the
    /// cost that exiting saves, instead of the common level.
    Centered,
}

/// `Σ_i Σ_a ((q[i,a] − mean_b q[i,b]) − (t[i,a] − mean_b t[i,b]))²` as a scalar SUM, differentiable
/// w.r.t. `scores [n, k]`; `targets [n, k]` (every action's reward per example) are constants. The
/// argmax of the fitted Q is that of the fitted differences, so the decisions keep their meaning.
pub fn centered_q_loss(scores: &Tensor, targets: &Tensor) -> Result<Tensor> {
    check_action_targets("centered_q_loss", scores, targets)?;
    let center = |t: &Tensor| -> Result<Tensor> { Ok(t.f_sub(&t.f_mean_dim(1, true, t.kind())?)?) };
    let t = targets.detach().f_to_kind(scores.kind())?.f_to_device(scores.device())?;
    Ok(center(scores)?.f_sub(&center(&t)?)?.f_square()?.f_sum(scores.kind())?)
}

/// `Σ_bags (Σ_{i in bag, node ran} q_i[a_i] − r_bag)²` as a scalar SUM, differentiable w.r.t.
/// `scores` (the rewards are constants). Bags where the node ran on no example contribute
/// nothing: the node made no decision there to credit. When it ran on only part of a bag, the
/// bag's Q is the sum over the examples it ran on (exact for m = 1; the digest's documented choice
/// otherwise).
///
/// `scores [n, k]`, `actions i64 [n]`, `rows i64 [n]` (position in the batch), `bag_rewards [B/m]`.
pub fn q_loss(
    scores: &Tensor,
    actions: &Tensor,
    rows: &Tensor,
    bag_rewards: &Tensor,
    bag_size: usize,
) -> Result<Tensor> {
    let (_, k) = check_decisions(scores, actions, Some(rows))?;
    let bags = vector_len("bag_rewards", bag_rewards)?;
    let m = check_bag_size(bag_size)?;
    host::debug_check_range("actions", actions, k)?;
    host::debug_check_range("rows", rows, bags * m)?;

    let q = scores.f_gather(1, &actions.f_unsqueeze(1)?, false)?.f_squeeze_dim(1)?;
    let bag = bag_index(rows, bag_size);
    let zeros = Tensor::f_zeros([bags], (q.kind(), q.device()))?;
    let q_bag = zeros.f_index_add(0, &bag, &q)?;
    let ran = zeros.f_index_fill(0, &bag, 1.0)?;
    let r = bag_rewards.detach().f_to_kind(q.kind())?.f_to_device(q.device())?;
    Ok(q_bag.f_sub(&r)?.f_square()?.f_mul(&ran)?.f_sum(q.kind())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rl::test_util::*;
    use tch::Kind;

    fn scores() -> Tensor {
        Tensor::from_slice(&[1.0f32, 2.0, 0.5, -1.0, 3.0, 0.0]).view([3, 2]).set_requires_grad(true)
    }

    #[test]
    fn per_example_value_and_gradient() {
        let s = scores();
        // q = [2, 0.5, 0]; bag 1 (reward 9) has no decision and must not count.
        let loss = q_loss(&s, &i64s(&[1, 0, 1]), &i64s(&[0, 2, 3]), &f32s(&[1.0, 9.0, 0.0, 0.5]), 1).unwrap();
        // (2−1)² + (0.5−0)² + (0−0.5)²
        assert_close(&vals(&loss), &[1.5], 1e-6);
        loss.backward();
        // 2·(Σq − r) on the taken action, zero elsewhere
        assert_close(&vals(&s.grad()), &[0.0, 2.0, 1.0, 0.0, 0.0, -1.0], 1e-6);
    }

    #[test]
    fn bags_of_two_value_and_gradient() {
        let s = scores();
        // Rows 0, 1 fill bag 0; row 3 is the only example of bag 1 the node ran on; bag 2 unused.
        let loss = q_loss(&s, &i64s(&[1, 0, 0]), &i64s(&[0, 1, 3]), &f32s(&[1.0, 2.0, 5.0]), 2).unwrap();
        // bag 0: Q = 2 + 0.5, err 1.5; bag 1: Q = 3, err 1
        assert_close(&vals(&loss), &[1.5 * 1.5 + 1.0], 1e-6);
        loss.backward();
        assert_close(&vals(&s.grad()), &[0.0, 3.0, 3.0, 0.0, 2.0, 0.0], 1e-6);
    }

    #[test]
    fn rewards_are_targets_not_parameters() {
        let s = scores();
        let r = f32s(&[1.0, 2.0, 5.0]).set_requires_grad(true);
        let loss = q_loss(&s, &i64s(&[1, 0, 0]), &i64s(&[0, 1, 3]), &r, 2).unwrap();
        loss.backward();
        assert!(!r.grad().defined() || vals(&r.grad()).iter().all(|g| *g == 0.0));
    }

    #[test]
    fn centered_value_and_gradient() {
        let s = scores();
        // Rewards of both actions per example: centered [[−1, 1], [2, −2], [0, 0]].
        let t = Tensor::from_slice(&[0.0f32, 2.0, 5.0, 1.0, 7.0, 7.0]).view([3, 2]);
        let loss = centered_q_loss(&s, &t).unwrap();
        // Centered q: [[−0.5, 0.5], [0.75, −0.75], [1.5, −1.5]]; differences from the centered
        // targets: [[0.5, −0.5], [−1.25, 1.25], [1.5, −1.5]]; squares sum to 2·(0.25 + 1.5625 + 2.25).
        assert_close(&vals(&loss), &[8.125], 1e-6);
        loss.backward();
        // d/dq[i,a] = 2·(e[i,a] − mean_b e[i,b]) with e the difference above (whose row mean is 0).
        assert_close(&vals(&s.grad()), &[1.0, -1.0, -2.5, 2.5, 3.0, -3.0], 1e-6);
        // A reward shared by every action of an example changes nothing.
        let shifted = &t + Tensor::from_slice(&[10.0f32, -3.0, 100.0]).view([3, 1]);
        assert_close(&vals(&centered_q_loss(&s, &shifted).unwrap()), &[8.125], 1e-4);
        assert!(centered_q_loss(&s, &t.narrow(0, 0, 2)).is_err(), "targets of another shape");
    }

    #[test]
    fn no_decisions_is_zero() {
        let s = Tensor::zeros([0, 3], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let loss = q_loss(&s, &i64s(&[]), &i64s(&[]), &f32s(&[1.0, 2.0]), 2).unwrap();
        assert_eq!(vals(&loss), [0.0]);
    }

    #[test]
    fn rejects_bad_shapes_and_indices() {
        let s = scores();
        let r = f32s(&[1.0, 2.0]);
        let e = q_loss(&s, &i64s(&[1, 0]), &i64s(&[0, 1, 2]), &r, 2).unwrap_err().to_string();
        assert!(e.contains("actions"), "{e}");
        assert!(q_loss(&s, &i64s(&[1, 0, 0]), &f32s(&[0., 1., 2.]), &r, 2).is_err(), "float rows");
        assert!(q_loss(&s, &i64s(&[1, 0, 0]), &i64s(&[0, 1, 2]), &r, 0).is_err(), "m = 0");
        assert!(q_loss(&s, &i64s(&[1, 0, 2]), &i64s(&[0, 1, 2]), &r, 2).is_err(), "action ≥ k");
        assert!(q_loss(&s, &i64s(&[1, 0, 0]), &i64s(&[0, 1, 4]), &r, 2).is_err(), "row ≥ B");
    }
}
