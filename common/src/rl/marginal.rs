//! Per-example credit inside a mini-bag (`train.bag_credit = "marginal"`, not the paper's): each
//! example's reward for each path is m × the change of its bag's reward when that one example's
//! prediction and cost come from the path instead of the sampled pass, every other example of the
//! bag keeping its sampled outcome. The bag's F-score stays the objective, but a controller learns
//! from what its own decision on an example changed rather than from the whole bag's reward, which
//! the other m − 1 examples' decisions mostly decide. With m = 1 and per-example accuracy it is the
//! per-example reward of the path minus that of the sampled pass.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::minibag::{f1_of_counts, Accuracy};
use super::{check_lambda, num_bags};
use crate::error::{Error, Result};

/// Which reward `train.q_every_action` regresses each example's Q onto.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BagCredit {
    /// The paper's: the bag's reward, against the sum of the bag's Q-values.
    #[default]
    Bag,
    /// Each example's own marginal change of its bag's reward ([`marginal_rewards`]).
    Marginal,
}

/// One pass over a batch, on the device: per example, its accuracy term (f64: 1/0 for right/wrong,
/// or the true class's probability with [`Accuracy::TrueClassProb`]), whether it was predicted
/// positive (bool), and its cost fraction (f64).
pub struct PassOutcome {
    pub accuracy: Tensor,
    pub predicted_positive: Tensor,
    pub cost: Tensor,
}

/// Per bag or per example, the counts its reward is computed from (the F-score as
/// [`super::f1_score`] does), each a tensor over the bags or the examples.
struct Counts {
    accuracy: Tensor,
    tp: Tensor,
    fp: Tensor,
    fneg: Tensor,
    cost: Tensor,
}

/// One example's contributions to its bag's counts (0/1 in f64 for the confusion counts).
fn contributions(o: &PassOutcome, actual: &Tensor) -> Result<Counts> {
    let predicted = &o.predicted_positive;
    let both = |a: &Tensor, b: &Tensor| a.f_logical_and(b)?.f_to_kind(Kind::Double);
    Ok(Counts {
        accuracy: o.accuracy.shallow_clone(),
        tp: both(predicted, actual)?,
        fp: both(predicted, &actual.f_logical_not()?)?,
        fneg: both(&predicted.f_logical_not()?, actual)?,
        cost: o.cost.shallow_clone(),
    })
}

impl Counts {
    /// Every field through `f`.
    fn map(&self, f: impl Fn(&Tensor) -> std::result::Result<Tensor, tch::TchError>) -> Result<Counts> {
        Ok(Counts {
            accuracy: f(&self.accuracy)?,
            tp: f(&self.tp)?,
            fp: f(&self.fp)?,
            fneg: f(&self.fneg)?,
            cost: f(&self.cost)?,
        })
    }

    /// Each field's `self − out + into`, in that order (the host's order, so the same bits).
    fn swapped(&self, out: &Counts, into: &Counts) -> Result<Counts> {
        let swap = |a: &Tensor, o: &Tensor, i: &Tensor| a.f_sub(o)?.f_add(i);
        Ok(Counts {
            accuracy: swap(&self.accuracy, &out.accuracy, &into.accuracy)?,
            tp: swap(&self.tp, &out.tp, &into.tp)?,
            fp: swap(&self.fp, &out.fp, &into.fp)?,
            fneg: swap(&self.fneg, &out.fneg, &into.fneg)?,
            cost: swap(&self.cost, &out.cost, &into.cost)?,
        })
    }

    fn reward(&self, metric: Accuracy, m: usize, lambda: f64) -> Result<Tensor> {
        let accuracy = match metric {
            Accuracy::PerExample | Accuracy::TrueClassProb => self.accuracy.f_div_scalar(m as f64)?,
            Accuracy::F1 => f1_of_counts(&self.tp, &self.fp.f_add(&self.fneg)?)?,
        };
        let cost = self.cost.f_mul_scalar(1.0 - lambda)?.f_div_scalar(m as f64)?;
        Ok(accuracy.f_mul_scalar(lambda)?.f_sub(&cost)?)
    }
}

/// `rewards[p][i]` (f64, on the device): m × (the reward of example i's bag with i's outcome taken
/// from `paths[p]`, minus the reward of the bag as `sampled` ran it). Bags are m consecutive
/// examples, as in [`super::bag_rewards`]; the reward is λ·A − (1−λ)·(mean cost fraction). Nothing
/// is read to the host. A bag's sums add its examples in order (a cumulative sum's last column), so
/// on the CPU they are the bits of a sequential f64 sum.
pub fn marginal_rewards(
    metric: Accuracy,
    sampled: &PassOutcome,
    paths: &[PassOutcome],
    actual_positive: &Tensor,
    bag_size: usize,
    lambda: f64,
) -> Result<Vec<Tensor>> {
    check_lambda(lambda)?;
    let b = actual_positive.size1()?;
    let bags = num_bags(b, bag_size)?;
    let lengths_ok = |o: &PassOutcome| [&o.accuracy, &o.predicted_positive, &o.cost].iter().all(|t| t.size() == [b]);
    if !lengths_ok(sampled) || !paths.iter().all(lengths_ok) {
        return Err(Error::Invalid(format!("marginal_rewards: every pass and the labels need {b} examples")));
    }
    let m = bag_size;
    let mine = contributions(sampled, actual_positive)?;
    let base = mine.map(|t| t.f_reshape([bags, m as i64])?.f_cumsum(1, Kind::Double)?.f_select(1, m as i64 - 1))?;
    let base_reward = base.reward(metric, m, lambda)?.f_repeat_interleave_self_int(m as i64, 0, None)?;
    let per_example = base.map(|t| t.f_repeat_interleave_self_int(m as i64, 0, None))?;
    paths
        .iter()
        .map(|path| {
            let counts = per_example.swapped(&mine, &contributions(path, actual_positive)?)?;
            Ok(counts.reward(metric, m, lambda)?.f_sub(&base_reward)?.f_mul_scalar(m as f64)?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(correct: &[bool], predicted: &[bool], cost: &[f64]) -> PassOutcome {
        let accuracy: Vec<f64> = correct.iter().map(|&c| f64::from(u8::from(c))).collect();
        PassOutcome {
            accuracy: Tensor::from_slice(&accuracy),
            predicted_positive: Tensor::from_slice(predicted),
            cost: Tensor::from_slice(cost),
        }
    }

    fn close(got: &Tensor, want: &[f64]) {
        let got = Vec::<f64>::try_from(got).unwrap();
        assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-9, "got {got:?}, want {want:?}");
        }
    }

    /// Two bags of 4. Labels: bag 0 = [+, +, −, −], bag 1 = [+, −, −, −].
    /// Sampled (cheap): bag 0 predicts [+, −, +, −] (TP 1, FN 1, FP 1: F1 = 2/4 = 0.5), cost 0.1 each;
    /// bag 1 predicts [−, −, −, −] (FN 1, no TP: F1 = 0), cost 0.1 each.
    /// Path "full" is right everywhere at cost 1.
    fn setup() -> (PassOutcome, PassOutcome, Tensor) {
        let actual = [true, true, false, false, true, false, false, false];
        let pred = [true, false, true, false, false, false, false, false];
        let correct: Vec<bool> = pred.iter().zip(&actual).map(|(p, a)| p == a).collect();
        let sampled = pass(&correct, &pred, &[0.1; 8]);
        let full = pass(&[true; 8], &actual, &[1.0; 8]);
        (sampled, full, Tensor::from_slice(&actual))
    }

    #[test]
    fn f1_marginal_by_hand() {
        let ((sampled, full, actual), (again, _, _)) = (setup(), setup());
        let lambda = 0.5;
        let r = marginal_rewards(Accuracy::F1, &sampled, &[again, full], &actual, 4, lambda).unwrap();
        // The sampled pass itself changes nothing.
        close(&r[0], &[0.0; 8]);
        // Cost change of one example moved to `full`: (1 − 0.1)/4 of the bag's mean, × m = 0.9.
        let c = -(1.0 - lambda) * 0.9;
        // Bag 0 (F1 0.5): ex 0 already TP → F1 unchanged; ex 1 FN → TP: TP 2, FP 1 → 4/5;
        // ex 2 FP → TN: TP 1, FN 1 → 2/3; ex 3 TN stays → 0.5.
        // Bag 1 (F1 0): ex 4 FN → TP: TP 1 → 1; exs 5–7 stay TN → 0.
        let f = |new_f1: f64, old_f1: f64| 4.0 * lambda * (new_f1 - old_f1) + c;
        let want = [
            f(0.5, 0.5),
            f(0.8, 0.5),
            f(2.0 / 3.0, 0.5),
            f(0.5, 0.5),
            f(1.0, 0.0),
            f(0.0, 0.0),
            f(0.0, 0.0),
            f(0.0, 0.0),
        ];
        close(&r[1], &want);
        // Numbers: 0.5·4·0.3 − 0.45 = 0.15; 2·(1/6) − 0.45; 2·1 − 0.45 = 1.55.
        let r1 = Vec::<f64>::try_from(&r[1]).unwrap();
        assert!((r1[1] - 0.15).abs() < 1e-9 && (r1[4] - 1.55).abs() < 1e-9, "{r1:?}");
    }

    #[test]
    fn per_example_bag_of_one_is_the_reward_difference() {
        let (sampled, full, actual) = setup();
        let r = marginal_rewards(Accuracy::PerExample, &sampled, &[full], &actual, 1, 0.8).unwrap();
        // Examples 1, 2 and 4 were wrong: 0.8·1 − 0.2·0.9 = 0.62; the rest were right: −0.18.
        close(&r[0], &[-0.18, 0.62, 0.62, -0.18, 0.62, -0.18, -0.18, -0.18]);
    }

    #[test]
    fn true_class_prob_credits_the_change_of_the_bags_mean_probability() {
        let (_, _, actual) = setup();
        let probs = |p: &[f64], cost: f64| PassOutcome {
            accuracy: Tensor::from_slice(p),
            predicted_positive: Tensor::from_slice(&vec![false; p.len()]),
            cost: Tensor::from_slice(&vec![cost; p.len()]),
        };
        let sampled = probs(&[0.6, 0.2, 0.9, 0.5, 0.4, 0.8, 1.0, 0.0], 0.1);
        let full = probs(&[0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9], 1.0);
        let r = marginal_rewards(Accuracy::TrueClassProb, &sampled, &[full], &actual, 4, 0.5).unwrap();
        // m·(λ·(p_full − p_sampled)/m − (1−λ)·(1 − 0.1)/m) = 0.5·Δp − 0.45.
        close(&r[0], &[-0.3, -0.1, -0.45, -0.25, -0.2, -0.4, -0.5, 0.0]);
    }

    #[test]
    fn rejects_mismatched_lengths_and_partial_bags() {
        let (sampled, full, actual) = setup();
        let seven = actual.narrow(0, 0, 7);
        assert!(marginal_rewards(Accuracy::F1, &sampled, std::slice::from_ref(&full), &seven, 4, 0.5).is_err());
        assert!(marginal_rewards(Accuracy::F1, &sampled, std::slice::from_ref(&full), &actual, 3, 0.5).is_err());
        assert!(marginal_rewards(Accuracy::F1, &sampled, &[full], &actual, 4, 1.5).is_err());
    }

    /// The host arithmetic this replaced, example by example: each bag's sums added in order, one
    /// example's outcome taken out and another's put in. The device version gives its bits.
    fn on_the_host(metric: Accuracy, passes: &[Vec<(f64, bool, f64)>], actual: &[bool], m: usize) -> Vec<Vec<f64>> {
        let lambda = 0.7;
        let counts = |bag: &mut [f64; 5], (a, p, c): (f64, bool, f64), pos: bool, sign: f64| {
            bag[0] += sign * a;
            bag[1] += sign * f64::from(u8::from(p && pos));
            bag[2] += sign * f64::from(u8::from(p && !pos));
            bag[3] += sign * f64::from(u8::from(!p && pos));
            bag[4] += sign * c;
        };
        let reward = |b: &[f64; 5]| {
            let accuracy = match metric {
                Accuracy::F1 if b[1] == 0.0 => f64::from(u8::from(b[2] == 0.0 && b[3] == 0.0)),
                Accuracy::F1 => 2.0 * b[1] / (2.0 * b[1] + b[2] + b[3]),
                _ => b[0] / m as f64,
            };
            lambda * accuracy - (1.0 - lambda) * b[4] / m as f64
        };
        let mut base = vec![[0.0; 5]; actual.len() / m];
        for (i, &pos) in actual.iter().enumerate() {
            counts(&mut base[i / m], passes[0][i], pos, 1.0);
        }
        passes[1..]
            .iter()
            .map(|path| {
                (0..actual.len())
                    .map(|i| {
                        let mut bag = base[i / m];
                        counts(&mut bag, passes[0][i], actual[i], -1.0);
                        counts(&mut bag, path[i], actual[i], 1.0);
                        m as f64 * (reward(&bag) - reward(&base[i / m]))
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_device_gives_the_bits_of_the_host_arithmetic() {
        let mut rng = crate::rng::SplitMix::new(7);
        let mut unit = || rng.next_u64() as f64 / u64::MAX as f64;
        let (b, m) = (96, 8);
        let actual: Vec<bool> = (0..b).map(|_| unit() < 0.4).collect();
        let passes: Vec<Vec<(f64, bool, f64)>> =
            (0..4).map(|_| (0..b).map(|_| (unit(), unit() < 0.5, unit() * 0.9 + 0.05)).collect()).collect();
        let on_device = |p: &[(f64, bool, f64)]| PassOutcome {
            accuracy: Tensor::from_slice(&p.iter().map(|x| x.0).collect::<Vec<_>>()),
            predicted_positive: Tensor::from_slice(&p.iter().map(|x| x.1).collect::<Vec<_>>()),
            cost: Tensor::from_slice(&p.iter().map(|x| x.2).collect::<Vec<_>>()),
        };
        let paths: Vec<PassOutcome> = passes[1..].iter().map(|p| on_device(p)).collect();
        for metric in [Accuracy::F1, Accuracy::TrueClassProb, Accuracy::PerExample] {
            let got =
                marginal_rewards(metric, &on_device(&passes[0]), &paths, &Tensor::from_slice(&actual), m, 0.7).unwrap();
            let want = on_the_host(metric, &passes, &actual, m);
            for (g, w) in got.iter().zip(&want) {
                let g = Vec::<f64>::try_from(g).unwrap();
                assert_eq!(
                    g.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    w.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{metric:?}"
                );
            }
        }
    }
}
