//! Mini-bags (paper §3.3): the reward of a group of m consecutive examples, so that set-based
//! metrics such as the F-score can be optimised. m = 1 is the per-example reward.

use super::{check_lambda, num_bags, same_len, vector_len};
use crate::error::Result;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// The accuracy term A of a bag's reward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accuracy {
    /// Mean 0/1 correctness of the bag's examples.
    #[default]
    PerExample,
    /// F1 score of the bag's binary predictions.
    F1,
    /// Mean probability the output's softmax gives the true class (not the paper's): a graded A
    /// that tells two paths apart by how sure they are when both are right (or both wrong), so that
    /// the reward differences a controller learns from are not zero on almost every example.
    /// Evaluation still counts 0/1 correctness.
    TrueClassProb,
}

/// F1 of one bag. F1 is undefined without positives; the digest's convention makes a bag with no
/// positives and none predicted perfect (1) and any other bag without a true positive worthless (0).
///
/// # Panics
/// If the two slices differ in length.
pub fn f1_score(predicted_positive: &[bool], actual_positive: &[bool]) -> f64 {
    assert_eq!(predicted_positive.len(), actual_positive.len(), "f1_score: slice lengths differ");
    let (mut tp, mut fp, mut fneg) = (0u64, 0u64, 0u64);
    for (&p, &a) in predicted_positive.iter().zip(actual_positive) {
        match (p, a) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fneg += 1,
            (false, false) => {}
        }
    }
    if tp == 0 {
        return if fp == 0 && fneg == 0 { 1.0 } else { 0.0 };
    }
    (2 * tp) as f64 / (2 * tp + fp + fneg) as f64
}

/// `[B/m]` bag rewards `λ·A_bag − (1−λ)·mean cost of the bag`, f32, on the device of
/// `cost_fraction`. `A_bag` is the bag's mean of `example_accuracy` (PerExample: 0/1 correctness;
/// TrueClassProb: the true class's probability) or the F1 of the bag (F1); the inputs the metric
/// does not use are ignored (a multi-class task has no positive class).
pub fn bag_rewards(
    metric: Accuracy,
    example_accuracy: &Tensor,
    predicted_positive: &Tensor,
    actual_positive: &Tensor,
    cost_fraction: &Tensor,
    bag_size: usize,
    lambda: f64,
) -> Result<Tensor> {
    check_lambda(lambda)?;
    let b = vector_len("cost_fraction", cost_fraction)?;
    let bags = num_bags(b, bag_size)?;
    let m = bag_size as i64;
    let device = cost_fraction.device();
    let bag_mean = |t: &Tensor| -> Result<Tensor> {
        let t = t.f_to_kind(Kind::Float)?.f_to_device(device)?.f_reshape([bags, m])?;
        Ok(t.f_mean_dim(1, false, Kind::Float)?)
    };
    let cost = bag_mean(cost_fraction)?;
    let accuracy = match metric {
        Accuracy::PerExample | Accuracy::TrueClassProb => {
            same_len("example_accuracy", example_accuracy, b)?;
            bag_mean(example_accuracy)?
        }
        Accuracy::F1 => {
            same_len("predicted_positive", predicted_positive, b)?;
            same_len("actual_positive", actual_positive, b)?;
            let per_bag = |t: &Tensor| -> Result<Tensor> {
                Ok(t.f_reshape([bags, m])?.f_sum_dim_intlist(1, false, Kind::Double)?)
            };
            let predicted = predicted_positive.f_to_kind(Kind::Bool)?.f_to_device(device)?;
            let actual = actual_positive.f_to_kind(Kind::Bool)?.f_to_device(device)?;
            let tp = per_bag(&predicted.f_logical_and(&actual)?)?;
            let wrong = per_bag(&predicted.f_logical_xor(&actual)?)?;
            f1_of_counts(&tp, &wrong)?.f_to_kind(Kind::Float)?
        }
    };
    Ok(accuracy.f_mul_scalar(lambda)?.f_sub(&cost.f_mul_scalar(1.0 - lambda)?)?)
}

/// The bag of each row, `rows / m`.
///
/// # Panics
/// If `bag_size` is 0 (torch refuses integer division by zero); the fallible functions of this
/// module check m before calling it.
pub fn bag_index(rows: &Tensor, bag_size: usize) -> Tensor {
    rows.floor_divide_scalar(bag_size as i64)
}

/// [`f1_score`] of bags from their true positives and their false positives plus false
/// negatives, f64: the same operations in the same order, so the same values bit for bit.
pub(super) fn f1_of_counts(tp: &Tensor, wrong: &Tensor) -> Result<Tensor> {
    let twice = tp.f_mul_scalar(2.0)?;
    let f1 = twice.f_div(&twice.f_add(wrong)?)?;
    let no_tp = tp.f_eq(0.0)?;
    let perfect = wrong.f_eq(0.0)?.f_to_kind(Kind::Double)?;
    Ok(perfect.f_where_self(&no_tp, &f1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rl::example_rewards;
    use crate::rl::test_util::*;

    #[test]
    fn f1_edge_cases() {
        assert_eq!(f1_score(&[false, false], &[false, false]), 1.0);
        assert_eq!(f1_score(&[], &[]), 1.0);
        assert_eq!(f1_score(&[false, false], &[true, false]), 0.0, "missed positive, no TP");
        assert_eq!(f1_score(&[true, false], &[false, false]), 0.0, "false alarm, no TP");
        assert_eq!(f1_score(&[true, false], &[false, true]), 0.0);
        // TP = 2, FP = 1, FN = 1: 2·2 / (2·2 + 1 + 1)
        let f = f1_score(&[true, true, true, false, false], &[true, true, false, true, false]);
        assert!((f - 2.0 / 3.0).abs() < 1e-12, "{f}");
        assert_eq!(f1_score(&[true, false, true], &[true, false, true]), 1.0);
    }

    fn batch8() -> (Tensor, Tensor, Tensor, Tensor) {
        let correct = f32s(&[1., 1., 0., 1., 0., 0., 1., 0.]);
        let pred = bools(&[true, true, true, false, false, false, false, false]);
        let actual = bools(&[true, true, false, true, false, false, false, false]);
        let cost = f32s(&[0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 0.0, 0.0]);
        (correct, pred, actual, cost)
    }

    #[test]
    fn per_example_bags_of_four() {
        let (correct, pred, actual, cost) = batch8();
        let r = bag_rewards(Accuracy::PerExample, &correct, &pred, &actual, &cost, 4, 0.9).unwrap();
        // bag 0: 0.9·0.75 − 0.1·0.5; bag 1: 0.9·0.25 − 0.1·0.5
        assert_close(&vals(&r), &[0.625, 0.175], 1e-6);
    }

    #[test]
    fn true_class_prob_bags_average_the_probabilities() {
        let (_, pred, actual, cost) = batch8();
        let prob = f32s(&[0.9, 0.5, 0.1, 0.7, 0.2, 0.3, 1.0, 0.0]);
        let r = bag_rewards(Accuracy::TrueClassProb, &prob, &pred, &actual, &cost, 4, 0.9).unwrap();
        // bag 0: 0.9·(2.2/4) − 0.1·0.5; bag 1: 0.9·(1.5/4) − 0.1·0.5
        assert_close(&vals(&r), &[0.445, 0.2875], 1e-6);
    }

    #[test]
    fn f1_bags_of_four() {
        let (correct, pred, actual, cost) = batch8();
        let r = bag_rewards(Accuracy::F1, &correct, &pred, &actual, &cost, 4, 0.5).unwrap();
        // bag 0: F1 = 2/3 (TP 2, FP 1, FN 1), cost 0.5; bag 1: no positives, none predicted → 1
        assert_close(&vals(&r), &[0.5 * 2.0 / 3.0 - 0.25, 0.5 - 0.25], 1e-6);
    }

    #[test]
    fn device_f1_equals_f1_score_bit_for_bit_on_every_bag_of_four() {
        // Every (predicted, actual) pattern of a bag of 4: 256 bags, each a 4-bit pair.
        let m = 4;
        let bit = |pattern: usize, i: usize| (pattern >> i) & 1 == 1;
        let predicted: Vec<bool> = (0..256).flat_map(|p| (0..m).map(move |i| bit(p >> 4, i))).collect();
        let actual: Vec<bool> = (0..256).flat_map(|p| (0..m).map(move |i| bit(p & 15, i))).collect();
        let cost = Tensor::zeros([256 * m as i64], (Kind::Float, tch::Device::Cpu));
        let r = bag_rewards(Accuracy::F1, &cost, &bools(&predicted), &bools(&actual), &cost, m, 1.0).unwrap();
        let want: Vec<f32> = predicted.chunks(m).zip(actual.chunks(m)).map(|(p, a)| f1_score(p, a) as f32).collect();
        let got = Vec::<f32>::try_from(&r).unwrap();
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert!(want.contains(&1.0) && want.contains(&0.0) && want.iter().any(|&f| f > 0.0 && f < 1.0));
    }

    #[test]
    fn bags_of_one_are_example_rewards() {
        let (correct, pred, actual, cost) = batch8();
        let bag = bag_rewards(Accuracy::PerExample, &correct, &pred, &actual, &cost, 1, 0.7).unwrap();
        let ex = example_rewards(&correct, &cost, 0.7).unwrap();
        assert_close(&vals(&bag), &vals(&ex), 1e-7);
    }

    #[test]
    fn partial_bag_is_an_error_naming_b_and_m() {
        let (correct, pred, actual, cost) = batch8();
        let e = bag_rewards(Accuracy::PerExample, &correct, &pred, &actual, &cost, 3, 0.5).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("B = 8") && msg.contains("m = 3"), "{msg}");
        assert!(bag_rewards(Accuracy::F1, &correct, &pred, &actual, &cost, 0, 0.5).is_err());
    }

    #[test]
    fn f1_checks_only_the_inputs_it_uses() {
        let (_, pred, actual, cost) = batch8();
        let short = f32s(&[1.0]);
        assert!(bag_rewards(Accuracy::F1, &short, &pred, &actual, &cost, 4, 0.5).is_ok());
        let e = bag_rewards(Accuracy::PerExample, &short, &pred, &actual, &cost, 4, 0.5).unwrap_err();
        assert!(e.to_string().contains("example_accuracy"), "{e}");
        let e = bag_rewards(Accuracy::F1, &short, &bools(&[true]), &actual, &cost, 4, 0.5).unwrap_err();
        assert!(e.to_string().contains("predicted_positive"));
    }

    #[test]
    fn bag_index_divides_rows() {
        assert_eq!(vals(&bag_index(&i64s(&[0, 1, 2, 3, 7]), 2)), [0., 0., 1., 1., 3.]);
        assert_eq!(bag_index(&i64s(&[5]), 2).kind(), Kind::Int64);
    }

    #[test]
    fn accuracy_serde_is_snake_case() {
        assert_eq!(serde_json::to_string(&Accuracy::PerExample).unwrap(), "\"per_example\"");
        assert_eq!(serde_json::from_str::<Accuracy>("\"f1\"").unwrap(), Accuracy::F1);
        assert_eq!(serde_json::from_str::<Accuracy>("\"true_class_prob\"").unwrap(), Accuracy::TrueClassProb);
    }
}
