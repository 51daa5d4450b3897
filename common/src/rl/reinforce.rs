//! REINFORCE, an alternative to the paper's Q-regression: the control scores are read as the
//! logits of a softmax policy and trained by the score-function gradient, with a baseline to cut
//! variance (see the caution on `advantages`) and an entropy bonus to keep exploring. The
//! estimator assumes the actions were sampled from that softmax; ε-greedy actions make it
//! off-policy.

use super::{check_decisions, index_vector, rewards_of_rows, same_len, vector_len};
use crate::error::{Error, Result};
use crate::host;
use tch::Tensor;

/// `−Σ_i A_i·log π(a_i|s_i) − β·Σ_i H(π(·|s_i))` as a scalar SUM, with π = softmax(scores).
/// The advantages are constants: the estimator's unbiasedness rests on not differentiating them.
pub fn reinforce_loss(scores: &Tensor, actions: &Tensor, advantages: &Tensor, entropy_coef: f64) -> Result<Tensor> {
    let (n, k) = check_decisions(scores, actions, None)?;
    same_len("advantages", advantages, n)?;
    if !entropy_coef.is_finite() {
        return Err(Error::Invalid(format!("entropy coefficient must be finite, got {entropy_coef}")));
    }
    host::debug_check_range("actions", actions, k)?;
    let log_p = scores.f_log_softmax(-1, None)?;
    let kind = log_p.kind();
    let log_p_taken = log_p.f_gather(1, &actions.f_unsqueeze(1)?, false)?.f_squeeze_dim(1)?;
    let adv = advantages.detach().f_to_kind(kind)?.f_to_device(log_p.device())?;
    let policy_term = log_p_taken.f_mul(&adv)?.f_sum(kind)?;
    let entropy = log_p.f_exp()?.f_mul(&log_p)?.f_sum(kind)?.f_neg()?;
    Ok(policy_term.f_neg()?.f_sub(&entropy.f_mul_scalar(entropy_coef)?)?)
}

/// `[n]` advantages `r_bag(rows_i / m) − baseline[a_i]`, detached; `baseline` holds this node's
/// value per action.
///
/// Caution: only a baseline that does not depend on the sampled action keeps the estimator
/// unbiased (`Σ_a b·∇π(a) = b·∇1 = 0`, but `Σ_a b(a)·∇π(a) ≠ 0`). With `baseline[a] = E[r | a]`
/// the between-action signal cancels entirely and only the per-input deviation from each action's
/// mean remains. Pass the same value for every action (e.g. `RewardStats::node_mean`) for the
/// textbook unbiased estimator.
pub fn advantages(
    actions: &Tensor,
    rows: &Tensor,
    bag_rewards: &Tensor,
    bag_size: usize,
    baseline: &[f64],
) -> Result<Tensor> {
    let n = vector_len("actions", actions)?;
    index_vector("actions", actions, n)?;
    index_vector("rows", rows, n)?;
    if baseline.is_empty() {
        return Err(Error::Invalid("baseline must hold one value per action, got none".into()));
    }
    host::debug_check_range("actions", actions, baseline.len() as i64)?;
    let r = rewards_of_rows(rows, bag_rewards, bag_size)?;
    let b = Tensor::f_from_slice(baseline)?.f_to_kind(r.kind())?.f_to_device(r.device())?;
    Ok(r.f_sub(&b.f_index_select(0, actions)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rl::test_util::*;
    use crate::rng::uniform;
    use tch::Kind;

    fn softmax(theta: &[f64]) -> Vec<f64> {
        let z: f64 = theta.iter().map(|t| t.exp()).sum();
        theta.iter().map(|t| t.exp() / z).collect()
    }

    fn entropy(p: &[f64]) -> f64 {
        -p.iter().map(|p| p * p.ln()).sum::<f64>()
    }

    #[test]
    fn loss_value_matches_hand_computation() {
        let rows = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]];
        let s = Tensor::from_slice(rows.as_flattened()).view([2, 3]);
        let loss = reinforce_loss(&s, &i64s(&[2, 0]), &f32s(&[0.5, -1.0]), 0.1).unwrap();
        let (p0, p1) = (softmax(&rows[0]), softmax(&rows[1]));
        let want = -(0.5 * p0[2].ln() - p1[0].ln()) - 0.1 * (entropy(&p0) + entropy(&p1));
        assert_close(&vals(&loss), &[want], 1e-12);
    }

    /// The 3-armed bandit: fixed logits θ, deterministic per-arm rewards, N sampled pulls.
    /// Returns (per-component mean of the per-sample gradients, their sample variance).
    fn bandit_estimates(theta: &[f64], reward: &[f64], baseline: f64, n: usize) -> (Vec<f64>, Vec<f64>) {
        let pi = softmax(theta);
        let actions: Vec<i64> = (0..n as u64)
            .map(|i| {
                let u = uniform(&[0xBA5E, i]);
                let mut acc = 0.0;
                pi.iter()
                    .position(|p| {
                        acc += p;
                        u < acc
                    })
                    .unwrap_or(pi.len() - 1) as i64
            })
            .collect();
        let adv: Vec<f64> = actions.iter().map(|&a| reward[a as usize] - baseline).collect();
        // One leaf row per sample, so each row's gradient is that sample's estimate of ∇θ.
        let scores = Tensor::from_slice(theta).view([1, 3]).repeat([n as i64, 1]).set_requires_grad(true);
        reinforce_loss(&scores, &i64s(&actions), &Tensor::from_slice(&adv), 0.0).unwrap().backward();
        let g = scores.grad();
        let mean = vals(&g.mean_dim(0, false, Kind::Double));
        let var = vals(&g.var_dim(0, true, false));
        (mean, var)
    }

    /// Exact ∇θ of −E[r] and the exact per-sample variance of the REINFORCE estimate.
    fn bandit_exact(theta: &[f64], reward: &[f64], baseline: f64) -> (Vec<f64>, Vec<f64>) {
        let pi = softmax(theta);
        let mean_r: f64 = pi.iter().zip(reward).map(|(p, r)| p * r).sum();
        let grad: Vec<f64> = (0..3).map(|j| -pi[j] * (reward[j] - mean_r)).collect();
        let var = (0..3)
            .map(|j| {
                let second: f64 = (0..3)
                    .map(|a| {
                        let d = if a == j { 1.0 } else { 0.0 } - pi[j];
                        pi[a] * (reward[a] - baseline).powi(2) * d * d
                    })
                    .sum();
                second - grad[j] * grad[j]
            })
            .collect();
        (grad, var)
    }

    const THETA: [f64; 3] = [0.5, -0.3, 0.1];
    const REWARD: [f64; 3] = [3.0, 2.2, 2.6];
    const N: usize = 20_000;

    #[test]
    fn estimator_is_unbiased_with_and_without_a_constant_baseline() {
        for baseline in [0.0, 2.5] {
            let (est, _) = bandit_estimates(&THETA, &REWARD, baseline, N);
            let (exact, var) = bandit_exact(&THETA, &REWARD, baseline);
            for j in 0..3 {
                // 5 standard errors of a mean of N i.i.d. samples
                let tol = 5.0 * (var[j] / N as f64).sqrt();
                assert!(
                    (est[j] - exact[j]).abs() <= tol,
                    "b = {baseline}, component {j}: estimate {} vs exact {} (tol {tol})",
                    est[j],
                    exact[j]
                );
            }
            // The check has power: the largest component is well outside the tolerance of zero.
            assert!(exact[0].abs() > 5.0 * (var[0] / N as f64).sqrt());
        }
    }

    #[test]
    fn constant_baseline_reduces_variance() {
        let (_, var_none) = bandit_estimates(&THETA, &REWARD, 0.0, N);
        let (_, var_base) = bandit_estimates(&THETA, &REWARD, 2.5, N);
        let (total_none, total_base) = (var_none.iter().sum::<f64>(), var_base.iter().sum::<f64>());
        assert!(total_base < 0.1 * total_none, "variance {total_base} with baseline vs {total_none} without");
        // and the sample variances agree with the exact ones
        for (b, sample) in [(0.0, &var_none), (2.5, &var_base)] {
            let exact = bandit_exact(&THETA, &REWARD, b).1;
            assert_close(sample, &exact, 0.05 * exact.iter().cloned().fold(0.0, f64::max));
        }
    }

    #[test]
    fn baseline_equal_to_arm_means_cancels_the_between_action_signal() {
        // Documents the caution on `advantages`: b(a) = E[r|a] leaves no gradient in a bandit
        // whose exact gradient is far from zero.
        let actions = i64s(&[0, 1, 2, 0]);
        let bag_r: Vec<f32> = [0usize, 1, 2, 0].iter().map(|&a| REWARD[a] as f32).collect();
        let adv = advantages(&actions, &i64s(&[0, 1, 2, 3]), &f32s(&bag_r), 1, &REWARD).unwrap();
        assert_close(&vals(&adv), &[0.0; 4], 1e-6);
    }

    #[test]
    fn entropy_bonus_increases_entropy_when_minimised() {
        let theta = [2.0, 0.0, -1.0];
        let s = Tensor::from_slice(&theta).view([1, 3]).set_requires_grad(true);
        let beta = 0.5;
        reinforce_loss(&s, &i64s(&[0]), &Tensor::from_slice(&[0.0f64]), beta).unwrap().backward();
        let grad = vals(&s.grad());
        let p = softmax(&theta);
        let h = entropy(&p);
        // ∂(−β·H)/∂θ_j = β·p_j·(log p_j + H)
        let want: Vec<f64> = p.iter().map(|pj| beta * pj * (pj.ln() + h)).collect();
        assert_close(&grad, &want, 1e-12);
        let stepped: Vec<f64> = theta.iter().zip(&grad).map(|(t, g)| t - 0.1 * g).collect();
        assert!(entropy(&softmax(&stepped)) > h);
    }

    #[test]
    fn advantages_use_the_per_action_baseline() {
        let r = f32s(&[1.0, 0.5]).set_requires_grad(true);
        let adv = advantages(&i64s(&[0, 1, 1, 0]), &i64s(&[3, 0, 2, 1]), &r, 2, &[0.1, 0.3]).unwrap();
        // bags [1, 0, 1, 0] → r [0.5, 1, 0.5, 1]; minus b[a] = [0.1, 0.3, 0.3, 0.1]
        assert_close(&vals(&adv), &[0.4, 0.7, 0.2, 0.9], 1e-6);
        assert!(!adv.requires_grad());
    }

    #[test]
    fn rejects_bad_inputs() {
        let s = Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu));
        assert!(reinforce_loss(&s, &i64s(&[0, 1]), &f32s(&[1.0]), 0.0).is_err());
        assert!(reinforce_loss(&s, &i64s(&[0, 1]), &f32s(&[1.0, 0.0]), f64::NAN).is_err());
        assert!(reinforce_loss(&s, &i64s(&[0, 3]), &f32s(&[1.0, 0.0]), 0.0).is_err());
        let r = f32s(&[1.0]);
        assert!(advantages(&i64s(&[0]), &i64s(&[0]), &r, 1, &[]).is_err());
        assert!(advantages(&i64s(&[2]), &i64s(&[0]), &r, 1, &[0.0, 0.0]).is_err());
        assert!(advantages(&i64s(&[0]), &i64s(&[1]), &r, 1, &[0.0]).is_err());
        assert!(advantages(&i64s(&[0]), &i64s(&[0, 1]), &r, 1, &[0.0]).is_err());
    }
}
