//! `train.q_alternatives = "one_at_a_time"`: every action's Q of every controller regressed onto the
//! reward of a pass that changes that controller's action alone, every other controller keeping the
//! action it sampled on the example. The joint forced passes of `q_every_action` grow as the product
//! of the controllers' action counts (a chain of three 3-way controllers: 27); these as their sum less
//! one per controller (6: the sampled pass holds each example's own action), and they run without
//! gradients: they only measure rewards.
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::forced::{centered_loss, control_of};
use super::step::Outcome;
use crate::config::TrainConfig;
use crate::exec::{D2nn, DecisionKey, Forward, Policy};
use crate::rl::{self, QTargets};
use crate::Result;

/// With `train.q_every_action`: which passes observe the rewards of the actions not taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QAlternatives {
    /// Every distinct joint action of the controllers, forced for the whole batch (at most 8).
    #[default]
    JointPaths,
    /// For each controller and action, one pass in which that controller takes the action on every
    /// example and the others keep their sampled ones (not the paper's). An action is credited with
    /// what it changes given what the other controllers did, not with the best continuation after it.
    /// Needs per-example rewards.
    OneAtATime,
}

/// The controllers' loss of [`QAlternatives::OneAtATime`], divided by the global number of examples:
/// for each decision of `sampled` (controller j on its rows), the Q-values `[rows, k]` regress, raw
/// or centered (`train.q_targets`), onto the per-example rewards of its k actions, each observed on
/// a pass that changes j's action alone. `sampled_reward` is the per-example reward the step already
/// computed for `sampled`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn one_at_a_time_q_loss(
    model: &D2nn,
    x: &Tensor,
    ids: &[i64],
    key: DecisionKey,
    sampled: &Forward,
    sampled_reward: &Tensor,
    cfg: &TrainConfig,
    y: &Tensor,
    global_examples: f64,
) -> Result<Tensor> {
    let graph = &model.graph;
    let num_actions = graph.num_actions();
    let n = ids.len() as i64;
    // Each controller's sampled action per batch example (0 where it did not run: ignored there).
    let mut chosen: Vec<Tensor> =
        (0..num_actions.len()).map(|_| Tensor::zeros([n], (Kind::Int64, x.device()))).collect();
    for d in &sampled.decisions {
        let j = control_of(model, d.node)?;
        chosen[j] = d.chosen.clamp_min(0);
    }
    // rewards[j]: [n, k_j], column a the per-example reward of the pass in which controller j takes
    // action a. The sampled pass holds each example's own action; pass s = 1..k shifts j's action to
    // (sampled + s) mod k on every example, so k − 1 passes cover the other actions.
    let mut rewards: Vec<Tensor> = Vec::with_capacity(num_actions.len());
    {
        let _guard = tch::no_grad_guard();
        for (j, &k) in num_actions.iter().enumerate() {
            let k = k as i64;
            let mut by_shift = vec![sampled_reward.shallow_clone()];
            for shift in 1..k {
                let mut actions: Vec<Tensor> = chosen.iter().map(Tensor::shallow_clone).collect();
                actions[j] = (&chosen[j] + shift).remainder(k);
                let fwd = model.forward(x, ids, &Policy::Forced(actions), key, true)?;
                by_shift.push(Outcome::of(&fwd, y, graph.full_flops).bag_rewards(cfg, y)?);
            }
            // Action a of example i is shift (a − sampled_i) mod k.
            let shift_of =
                (Tensor::arange(k, (Kind::Int64, x.device())).unsqueeze(0) - chosen[j].unsqueeze(1)).remainder(k);
            rewards.push(Tensor::stack(&by_shift, 1).gather(1, &shift_of, false));
        }
    }
    let mut loss = Tensor::zeros([], (Kind::Float, x.device()));
    for d in &sampled.decisions {
        let targets = rewards[control_of(model, d.node)?].index_select(0, &d.rows);
        loss += match cfg.q_targets {
            QTargets::Raw => {
                let (rows, k) = (targets.size()[0], targets.size()[1]);
                let all_rows = Tensor::arange(rows, (Kind::Int64, x.device()));
                let mut raw = Tensor::zeros([], (Kind::Float, x.device()));
                for a in 0..k {
                    let action = Tensor::full([rows], a, (Kind::Int64, x.device()));
                    raw += rl::q_loss(&d.scores, &action, &all_rows, &targets.select(1, a), 1)?;
                }
                raw
            }
            QTargets::Centered => centered_loss(cfg, &d.scores, &targets)?,
        };
    }
    Ok(loss / global_examples)
}
