use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::readout::{Readout, Slot};
use crate::data::{Split, Task};
use crate::exec::{D2nn, DecisionKey, Policy};
use crate::rl::f1_score;
use crate::Result;

/// Held-out metrics with a given decision policy (argmax for a trained D2NN).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub examples: usize,
    pub accuracy: f64,
    /// F-score of the positive class, for binary tasks.
    pub f1: Option<f64>,
    pub loss: f64,
    pub mean_cost_fraction: f64,
    pub mean_mflops_per_example: f64,
    /// Per controller: the fraction of the examples it ran on that took each action.
    pub action_rates: Vec<Vec<f64>>,
    /// Per controller: the fraction of all examples it ran on.
    pub controller_run_rates: Vec<f64>,
}

/// Where one batch's figures lie in the evaluation's one read.
struct BatchSlots {
    correct: Slot,
    loss: Slot,
    cost: Slot,
    /// Binary tasks: predicted and actual positives, per example.
    positives: Option<(Slot, Slot)>,
    /// Per controller: the examples that took each action.
    counts: Vec<Slot>,
}

pub fn is_binary(task: Task) -> bool {
    matches!(task, Task::FashionBinary | Task::Lfw)
}

/// Runs `model` over all of `split` in batches of `batch_size`, without gradients.
pub fn evaluate(
    model: &D2nn,
    split: &Split,
    batch_size: usize,
    policy: &Policy,
    key: DecisionKey,
    binary: bool,
) -> Result<EvalMetrics> {
    let _guard = tch::no_grad_guard();
    let graph = &model.graph;
    let device = model.device();
    let n = split.len();
    let num_actions = graph.num_actions();
    // Each batch's figures stay on the device until one read at the end, folded in batch order.
    let mut readout = Readout::default();
    let mut batches = Vec::new();
    let indices: Vec<usize> = (0..n).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = split.batch(chunk, device)?;
        let fwd = model.forward(&batch.x, &batch.ids, policy, key, false)?;
        let y = batch.y.to_device(device);
        let predicted = fwd.output.argmax(1, false);
        let loss = fwd.output.f_cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::Sum, -100, 0.0)?;
        let positives = match binary {
            true => Some((readout.push(&predicted.f_eq(1)?)?, readout.push(&y.f_eq(1)?)?)),
            false => None,
        };
        batches.push(BatchSlots {
            correct: readout.push(&predicted.f_eq_tensor(&y)?.f_sum(Kind::Int64)?)?,
            loss: readout.push(&loss)?,
            cost: readout.push(&fwd.cost.f_sum(Kind::Double)?)?,
            positives,
            counts: (fwd.decisions.iter().zip(&num_actions))
                .map(|(d, &k)| readout.push(&d.actions.f_bincount(None::<Tensor>, k as i64)?))
                .collect::<Result<_>>()?,
        });
    }
    let values = readout.read()?;
    let mut action_counts: Vec<Vec<f64>> = num_actions.iter().map(|&k| vec![0.0; k]).collect();
    let (mut correct, mut loss, mut cost) = (0i64, 0.0, 0.0);
    let (mut predicted_pos, mut actual_pos) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for b in &batches {
        correct += values.scalar(&b.correct) as i64;
        loss += values.scalar(&b.loss);
        cost += values.scalar(&b.cost);
        if let Some((predicted, actual)) = &b.positives {
            predicted_pos.extend(values.get(predicted).iter().map(|&v| v != 0.0));
            actual_pos.extend(values.get(actual).iter().map(|&v| v != 0.0));
        }
        for (slots, counts) in action_counts.iter_mut().zip(&b.counts) {
            for (slot, k) in slots.iter_mut().zip(values.get(counts)) {
                *slot += k;
            }
        }
    }
    let total = n.max(1) as f64;
    let controller_run_rates = action_counts.iter().map(|c| c.iter().sum::<f64>() / total).collect();
    let action_rates = action_counts
        .iter()
        .map(|c| {
            let ran: f64 = c.iter().sum();
            c.iter().map(|&k| if ran > 0.0 { k / ran } else { 0.0 }).collect()
        })
        .collect();
    Ok(EvalMetrics {
        examples: n,
        accuracy: correct as f64 / total,
        f1: binary.then(|| f1_score(&predicted_pos, &actual_pos)),
        loss: loss / total,
        mean_cost_fraction: cost / total / graph.full_flops,
        mean_mflops_per_example: cost / total / 1e6,
        action_rates,
        controller_run_rates,
    })
}
