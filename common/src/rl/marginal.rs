//! Per-example credit inside a mini-bag (`train.bag_credit = "marginal"`, not the paper's): each
//! example's reward for each path is m × the change of its bag's reward when that one example's
//! prediction and cost come from the path instead of the sampled pass, every other example of the
//! bag keeping its sampled outcome. The bag's F-score stays the objective, but a controller learns
//! from what its own decision on an example changed rather than from the whole bag's reward, which
//! the other m − 1 examples' decisions mostly decide. With m = 1 and per-example accuracy it is the
//! per-example reward of the path minus that of the sampled pass.

use super::minibag::Accuracy;
use super::{check_lambda, num_bags};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

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

/// One pass over a batch, on the host: per example, its accuracy term (1/0 for right/wrong, or the
/// true class's probability with [`Accuracy::TrueClassProb`]), whether it was predicted positive,
/// and its cost fraction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PassOutcome {
    pub accuracy: Vec<f64>,
    pub predicted_positive: Vec<bool>,
    pub cost: Vec<f64>,
}

impl PassOutcome {
    fn len(&self) -> usize {
        self.cost.len()
    }
}

/// Counts of one bag, from which its reward is computed (the F-score as [`super::f1_score`] does).
#[derive(Debug, Clone, Copy, Default)]
struct BagCounts {
    accuracy: f64,
    tp: i64,
    fp: i64,
    fneg: i64,
    cost: f64,
}

impl BagCounts {
    fn add(&mut self, o: &PassOutcome, actual: bool, i: usize, sign: i64) {
        self.accuracy += sign as f64 * o.accuracy[i];
        match (o.predicted_positive[i], actual) {
            (true, true) => self.tp += sign,
            (true, false) => self.fp += sign,
            (false, true) => self.fneg += sign,
            (false, false) => {}
        }
        self.cost += sign as f64 * o.cost[i];
    }

    fn reward(&self, metric: Accuracy, m: usize, lambda: f64) -> f64 {
        let accuracy = match metric {
            Accuracy::PerExample | Accuracy::TrueClassProb => self.accuracy / m as f64,
            // The conventions of `f1_score`: no TP is 1 if nothing was missed or false, else 0.
            Accuracy::F1 if self.tp == 0 => f64::from(u8::from(self.fp == 0 && self.fneg == 0)),
            Accuracy::F1 => (2 * self.tp) as f64 / (2 * self.tp + self.fp + self.fneg) as f64,
        };
        lambda * accuracy - (1.0 - lambda) * self.cost / m as f64
    }
}

/// `rewards[p][i]`: m × (the reward of example i's bag with i's outcome taken from `paths[p]`, minus
/// the reward of the bag as `sampled` ran it). Bags are m consecutive examples, as in
/// [`super::bag_rewards`]; the reward is λ·A − (1−λ)·(mean cost fraction).
pub fn marginal_rewards(
    metric: Accuracy,
    sampled: &PassOutcome,
    paths: &[PassOutcome],
    actual_positive: &[bool],
    bag_size: usize,
    lambda: f64,
) -> Result<Vec<Vec<f64>>> {
    check_lambda(lambda)?;
    let b = sampled.len();
    let bags = num_bags(b as i64, bag_size)? as usize;
    let lengths_ok = |o: &PassOutcome| o.accuracy.len() == b && o.predicted_positive.len() == b && o.cost.len() == b;
    if !lengths_ok(sampled) || !paths.iter().all(lengths_ok) || actual_positive.len() != b {
        return Err(Error::Invalid(format!("marginal_rewards: every pass and the labels need {b} examples")));
    }
    let m = bag_size;
    let mut base = vec![BagCounts::default(); bags];
    for (i, &actual) in actual_positive.iter().enumerate() {
        base[i / m].add(sampled, actual, i, 1);
    }
    let base_reward: Vec<f64> = base.iter().map(|c| c.reward(metric, m, lambda)).collect();
    Ok(paths
        .iter()
        .map(|path| {
            (0..b)
                .map(|i| {
                    let mut counts = base[i / m];
                    counts.add(sampled, actual_positive[i], i, -1);
                    counts.add(path, actual_positive[i], i, 1);
                    m as f64 * (counts.reward(metric, m, lambda) - base_reward[i / m])
                })
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(correct: &[bool], predicted: &[bool], cost: &[f64]) -> PassOutcome {
        let accuracy = correct.iter().map(|&c| f64::from(u8::from(c))).collect();
        PassOutcome { accuracy, predicted_positive: predicted.to_vec(), cost: cost.to_vec() }
    }

    fn close(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-9, "got {got:?}, want {want:?}");
        }
    }

    /// Two bags of 4. Labels: bag 0 = [+, +, −, −], bag 1 = [+, −, −, −].
    /// Sampled (cheap): bag 0 predicts [+, −, +, −] (TP 1, FN 1, FP 1: F1 = 2/4 = 0.5), cost 0.1 each;
    /// bag 1 predicts [−, −, −, −] (FN 1, no TP: F1 = 0), cost 0.1 each.
    /// Path "full" is right everywhere at cost 1.
    fn setup() -> (PassOutcome, PassOutcome, Vec<bool>) {
        let actual = vec![true, true, false, false, true, false, false, false];
        let pred = [true, false, true, false, false, false, false, false];
        let correct: Vec<bool> = pred.iter().zip(&actual).map(|(p, a)| p == a).collect();
        let sampled = pass(&correct, &pred, &[0.1; 8]);
        let full = pass(&[true; 8], &actual, &[1.0; 8]);
        (sampled, full, actual)
    }

    #[test]
    fn f1_marginal_by_hand() {
        let (sampled, full, actual) = setup();
        let lambda = 0.5;
        let r = marginal_rewards(Accuracy::F1, &sampled, &[sampled.clone(), full], &actual, 4, lambda).unwrap();
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
        assert!((r[1][1] - 0.15).abs() < 1e-9 && (r[1][4] - 1.55).abs() < 1e-9, "{:?}", r[1]);
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
            accuracy: p.to_vec(),
            predicted_positive: vec![false; p.len()],
            cost: vec![cost; p.len()],
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
        assert!(marginal_rewards(Accuracy::F1, &sampled, std::slice::from_ref(&full), &actual[..7], 4, 0.5).is_err());
        assert!(marginal_rewards(Accuracy::F1, &sampled, std::slice::from_ref(&full), &actual, 3, 0.5).is_err());
        assert!(marginal_rewards(Accuracy::F1, &sampled, &[full], &actual, 4, 1.5).is_err());
    }
}
