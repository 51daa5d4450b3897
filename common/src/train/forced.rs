//! Forced passes: the network once per distinct joint action of its controllers, each forced for the
//! whole batch, so that every path learns from every example (`train.branch_loss_weight`) and every
//! action's Q is regressed onto the reward its path earns (`train.q_every_action`).
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::step::{representable_targets, uniform_random, Outcome, IGNORE};
use crate::config::TrainConfig;
use crate::exec::{D2nn, DecisionKey, Forward, Policy};
use crate::rl::{self, BagCredit, PassOutcome, QContinuation, QTargets};
use crate::{Error, Result};

/// The most forced passes a step may run (the product of the controllers' action counts).
pub const MAX_JOINT_ACTIONS: usize = 8;

/// Which forced passes `train.branch_loss_weight` trains on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BranchPaths {
    /// Every distinct joint action of the controllers ([`forced_paths`]; at most
    /// [`MAX_JOINT_ACTIONS`]).
    #[default]
    Every,
    /// Only the joint actions in which every controller takes the same action index (a chain's
    /// all-full, all-slim and all-skip; a controller with fewer actions takes its last one), one pass
    /// per index ([`uniform_paths`]): the widest and the narrowest network and those between, as the
    /// "sandwich rule" of slimmable networks trains them, so that blocks and a shared classifier
    /// shaped by many paths stay as good on each as a static network, at a cost linear in the number
    /// of actions rather than their product. Not the paper's.
    Uniform,
    /// [`BranchPaths::Uniform`]'s passes and one more on which every example takes a uniformly random
    /// joint action (drawn per example and controller, keyed like every other draw): the sandwich
    /// rule's random members, so the mixed paths cheap routing uses (a chain's slim-skip-skip) learn
    /// from every kind of image, not only from those routed there. Not the paper's.
    UniformAndRandom,
}

/// One forced pass: the action of each controller (decision index) and what the network did.
pub(crate) struct ForcedPath {
    /// Empty for [`BranchPaths::UniformAndRandom`]'s random pass, whose actions differ per example.
    pub actions: Vec<i64>,
    pub fwd: Forward,
}

/// An error naming `what` unless the graph has at most `limit` joint actions (the product of its
/// controllers' action counts): [`BranchPaths::Every`] runs that many passes.
pub(crate) fn check_joint_actions(model: &D2nn, limit: usize, what: &str) -> Result<()> {
    let joint: usize = model.graph.num_actions().iter().product();
    if joint > limit {
        return Err(Error::Invalid(format!(
            "{what}: needs a graph with at most {limit} joint actions (the product of its controllers' action \
             counts); this one has {joint}"
        )));
    }
    Ok(())
}

/// The forced passes of `which` on the batch `x` (example ids `ids`), each forced for the whole
/// batch. Empty for a graph without controllers.
pub(crate) fn forced_paths(
    model: &D2nn,
    x: &Tensor,
    ids: &[i64],
    key: DecisionKey,
    train: bool,
    which: BranchPaths,
) -> Result<Vec<ForcedPath>> {
    let run = |actions: Vec<i64>| -> Result<ForcedPath> {
        let fwd = model.forward(x, ids, &Policy::Fixed(actions.clone()), key, train)?;
        Ok(ForcedPath { actions, fwd })
    };
    match which {
        BranchPaths::Every => every_path(model, run),
        BranchPaths::Uniform => uniform_paths(model, run),
        BranchPaths::UniformAndRandom => {
            let mut paths = uniform_paths(model, run)?;
            let num_actions = model.graph.num_actions();
            if !num_actions.is_empty() {
                // Its own stream: during warm-up the sampled pass is uniformly random with `key` too.
                let fwd = model.forward(x, ids, &uniform_random(&num_actions), key.independent(), train)?;
                // Per-example actions: no single joint action names this pass.
                paths.push(ForcedPath { actions: Vec::new(), fwd });
            }
            Ok(paths)
        }
    }
}

/// Every distinct path: joint actions in lexicographic order, the first controller's the most
/// significant. A joint action that differs from an earlier one only in a controller that did not
/// run there (a cascade's second gate after the first one exited) is the same path and is not run
/// again.
fn every_path(model: &D2nn, run: impl Fn(Vec<i64>) -> Result<ForcedPath>) -> Result<Vec<ForcedPath>> {
    let num_actions = model.graph.num_actions();
    if num_actions.is_empty() {
        return Ok(Vec::new());
    }
    let joint: usize = num_actions.iter().product();
    let mut paths: Vec<ForcedPath> = Vec::new();
    // For each joint action (by its lexicographic index): the path it runs, an index into `paths`.
    let mut path_of: Vec<usize> = Vec::with_capacity(joint);
    for index in 0..joint {
        let actions = unrank(index, &num_actions);
        let mut same_as = None;
        for (j, &a) in actions.iter().enumerate() {
            if a == 0 {
                continue;
            }
            let mut base = actions.clone();
            base[j] = 0;
            let p = path_of[rank(&base, &num_actions)];
            if !ran(model, &paths[p].fwd, j) {
                same_as = Some(p);
                break;
            }
        }
        if let Some(p) = same_as {
            path_of.push(p);
            continue;
        }
        path_of.push(paths.len());
        paths.push(run(actions)?);
    }
    Ok(paths)
}

/// The passes [`BranchPaths::Uniform`] trains on: for each action index a, every controller forced
/// to a (or to its last action where it has fewer), each distinct joint action once.
fn uniform_paths(model: &D2nn, run: impl Fn(Vec<i64>) -> Result<ForcedPath>) -> Result<Vec<ForcedPath>> {
    let num_actions = model.graph.num_actions();
    let widest = num_actions.iter().copied().max().unwrap_or(0);
    let mut paths: Vec<ForcedPath> = Vec::new();
    for a in 0..widest {
        let actions: Vec<i64> = num_actions.iter().map(|&k| a.min(k - 1) as i64).collect();
        if paths.iter().all(|p| p.actions != actions) {
            paths.push(run(actions)?);
        }
    }
    Ok(paths)
}

fn unrank(mut index: usize, num_actions: &[usize]) -> Vec<i64> {
    let mut actions = vec![0; num_actions.len()];
    for (slot, &k) in actions.iter_mut().zip(num_actions).rev() {
        *slot = (index % k) as i64;
        index /= k;
    }
    actions
}

fn rank(actions: &[i64], num_actions: &[usize]) -> usize {
    actions.iter().zip(num_actions).fold(0, |acc, (&a, &k)| acc * k + a as usize)
}

/// Whether controller `control` (decision index) decided for any example of `fwd`.
pub(crate) fn ran(model: &D2nn, fwd: &Forward, control: usize) -> bool {
    fwd.decisions.iter().any(|d| model.graph.control_index(d.node) == Some(control) && d.rows.numel() > 0)
}

/// The output's cross-entropy (summed over the batch) on each forced path: every path learns from
/// every example.
pub(crate) fn branch_loss(model: &D2nn, paths: &[ForcedPath], y: &Tensor) -> Tensor {
    let mut loss = Tensor::zeros([], (Kind::Float, y.device()));
    for path in paths {
        let out = &path.fwd;
        let target = representable_targets(model, &out.executed, y);
        loss += out.output.cross_entropy_loss::<Tensor>(&target, None, tch::Reduction::Sum, IGNORE, 0.0);
    }
    loss
}

/// `train.q_every_action`'s controller loss, divided by the global number of bags (examples with
/// `bag_credit = "marginal"`). On each forced path each controller's forced action regresses onto
/// a reward among the paths that agree with this one up to and including that controller (the
/// continuations, `train.q_continuation`): for the last controller to decide, and with one
/// controller, only its own path's reward.
pub(crate) fn every_action_q_loss(
    model: &D2nn,
    paths: &[ForcedPath],
    sampled: &Outcome,
    cfg: &TrainConfig,
    y: &Tensor,
    global_examples: f64,
) -> Result<Tensor> {
    let full_flops = model.graph.full_flops;
    let outcomes: Vec<Outcome> = paths.iter().map(|p| Outcome::of(&p.fwd, y, full_flops)).collect();
    let (rewards, m) = match cfg.bag_credit {
        BagCredit::Bag => {
            let r = outcomes.iter().map(|o| o.bag_rewards(cfg, y)).collect::<Result<Vec<_>>>()?;
            (r, cfg.bag_size)
        }
        BagCredit::Marginal => {
            let pass = |o: &Outcome| -> Result<PassOutcome> {
                Ok(PassOutcome {
                    accuracy: o.example_accuracy(cfg.accuracy, y).f_to_kind(Kind::Double)?,
                    predicted_positive: o.predicted.f_eq(1)?,
                    cost: o.cost_fraction.f_to_kind(Kind::Double)?,
                })
            };
            let paths = outcomes.iter().map(pass).collect::<Result<Vec<_>>>()?;
            let r = rl::marginal_rewards(cfg.accuracy, &pass(sampled)?, &paths, &y.f_eq(1)?, cfg.bag_size, cfg.lambda)?;
            (r.iter().map(|t| t.f_to_kind(Kind::Float)).collect::<std::result::Result<_, _>>()?, 1)
        }
    };
    let continuation = |p: usize, j: usize| match cfg.q_continuation {
        QContinuation::BestPath => Ok(best_continuation(paths, &rewards, p, j)),
        QContinuation::GreedyPath => greedy_continuation(model, paths, &rewards, p, j),
    };
    let mut loss = Tensor::zeros([], (Kind::Float, y.device()));
    match cfg.q_targets {
        QTargets::Raw => {
            for (p, path) in paths.iter().enumerate() {
                for d in &path.fwd.decisions {
                    loss +=
                        rl::q_loss(&d.scores, &d.actions, &d.rows, &continuation(p, control_of(model, d.node)?)?, m)?;
                }
            }
        }
        // Once per controller and prefix of earlier actions (the passes that feed it the same input):
        // every action's reward for each example it decided on, centered against their mean.
        QTargets::Centered => {
            let mut done: Vec<(usize, &[i64])> = Vec::new();
            for path in paths {
                for d in &path.fwd.decisions {
                    let j = control_of(model, d.node)?;
                    let prefix = &path.actions[..j];
                    if done.contains(&(j, prefix)) {
                        continue;
                    }
                    done.push((j, prefix));
                    let mut columns = Vec::new();
                    for a in 0..d.scores.size()[1] {
                        let q = paths.iter().position(|r| &r.actions[..j] == prefix && r.actions[j] == a).ok_or_else(
                            || Error::Invalid(format!("no forced pass takes action {a} after {prefix:?}")),
                        )?;
                        columns.push(continuation(q, j)?.index_select(0, &d.rows));
                    }
                    loss += centered_loss(cfg, &d.scores, &Tensor::stack(&columns, 1))?;
                }
            }
        }
    }
    Ok(loss / (global_examples / m as f64))
}

/// A decision's `q_targets = "centered"` loss, its targets with `train.rate_floor`'s bonus if set:
/// the one place both kinds of forced passes (joint, one at a time) turn targets into the loss.
pub(crate) fn centered_loss(cfg: &TrainConfig, scores: &Tensor, targets: &Tensor) -> Result<Tensor> {
    match &cfg.rate_floor {
        Some(floor) => rl::centered_q_loss(scores, &floor.apply(scores, targets)?),
        None => rl::centered_q_loss(scores, targets),
    }
}

/// The decision index of controller node `node`.
pub(crate) fn control_of(model: &D2nn, node: usize) -> Result<usize> {
    model.graph.control_index(node).ok_or_else(|| Error::Invalid(format!("node {node} is not a controller")))
}

/// The best reward, per bag, among the continuations of path `p` after controller `j`.
fn best_continuation(paths: &[ForcedPath], rewards: &[Tensor], p: usize, j: usize) -> Tensor {
    let mut target = rewards[p].shallow_clone();
    for (q, other) in paths.iter().enumerate() {
        if q != p && other.actions[..=j] == paths[p].actions[..=j] {
            target = target.maximum(&rewards[q]);
        }
    }
    target
}

/// The reward, per example, of the continuation of path `p` after controller `j` that the later
/// controllers choose greedily: path `q` is example i's when every later controller k that ran on i
/// picks q's action by its largest Q (ties to the lower action, as `argmax` breaks them). Controller
/// k's Q is read on the first path that agrees with q before k (all such passes feed it the same
/// input), so every example has exactly one greedy continuation; where k did not run the action is
/// 0, the action of the path [`forced_paths`] keeps among equal ones.
fn greedy_continuation(model: &D2nn, paths: &[ForcedPath], rewards: &[Tensor], p: usize, j: usize) -> Result<Tensor> {
    let reward = &rewards[p];
    let n = reward.size()[0];
    let greedy_of = |k: usize, prefix: &[i64]| -> Result<Tensor> {
        let source = paths
            .iter()
            .find(|r| r.actions[..k] == *prefix)
            .ok_or_else(|| Error::Invalid(format!("no forced pass takes the actions {prefix:?}")))?;
        let mut greedy = Tensor::zeros([n], (Kind::Int64, reward.device()));
        for d in source.fwd.decisions.iter().filter(|d| model.graph.control_index(d.node) == Some(k)) {
            greedy = greedy.index_put(&[Some(&d.rows)], &d.scores.detach().argmax(1, false), false);
        }
        Ok(greedy)
    };
    let mut target = reward.zeros_like();
    for (q, other) in paths.iter().enumerate() {
        if other.actions[..=j] != paths[p].actions[..=j] {
            continue;
        }
        let mut mine = Tensor::ones([n], (Kind::Bool, reward.device()));
        for k in j + 1..other.actions.len() {
            mine = mine.logical_and(&greedy_of(k, &other.actions[..k])?.eq(other.actions[k]));
        }
        target += rewards[q].where_self(&mine, &reward.zeros_like());
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::{rank, unrank};

    #[test]
    fn joint_actions_rank_lexicographically() {
        let k = [2, 3];
        let all: Vec<Vec<i64>> = (0..6).map(|i| unrank(i, &k)).collect();
        assert_eq!(all, [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]);
        assert!((0..6).all(|i| rank(&unrank(i, &k), &k) == i));
    }
}
