use tch::{Kind, Tensor};

use crate::config::{Algorithm, TrainConfig};
use crate::data::Batch;
use crate::exec::{D2nn, DecisionKey, Forward, Policy};
use crate::graph::{LayerSpec, Target};
use crate::optim::{clip_grad_norms, FlatParams, Optimizer};
use crate::rl::{self, Accuracy, RewardStats};
use crate::Result;

use super::counterfactual::{one_at_a_time_q_loss, QAlternatives};
use super::forced::{
    branch_loss, check_joint_actions, every_action_q_loss, forced_paths, BranchPaths, MAX_JOINT_ACTIONS,
};
use super::readout::{Readout, Slot};
use super::StepStats;

/// Everything a step needs besides the model and the batch.
#[derive(Debug, Clone, Copy)]
pub struct StepContext<'a> {
    pub cfg: &'a TrainConfig,
    pub seed: u64,
    /// Global step: keys random decisions and the ε schedule.
    pub step: u64,
    /// Examples in this step over all workers: losses are divided by it, so they add across workers.
    pub global_batch: usize,
    /// Reward baseline per controller (decision index), from the baseline store.
    pub baselines: &'a [f64],
    /// Whose decisions the step takes; training always takes the policy's.
    pub routing: Routing,
}

/// Whose decisions a training step takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Routing {
    /// The policy of [`policy_for_step`].
    #[default]
    Policy,
    /// Every action uniformly at random, the controllers still learning from the outcomes: the
    /// same work whatever the controllers have learned, so throughput benchmarks compare like
    /// with like (`d2nn bench train --routing random`).
    UniformRandom,
}

/// The decision policy of a training step: uniform random routing during warm-up, then ε-greedy
/// (Q-learning) or sampling from the softmax (REINFORCE).
pub fn policy_for_step(cfg: &TrainConfig, num_actions: &[usize], step: u64) -> Policy {
    if step < cfg.warmup_steps {
        return uniform_random(num_actions);
    }
    match cfg.algorithm {
        Algorithm::QLearning => Policy::EpsilonGreedy(cfg.epsilon.at(step - cfg.warmup_steps)),
        Algorithm::Reinforce => Policy::Sample,
    }
}

/// Every action of every controller equally likely, per example.
pub(crate) fn uniform_random(num_actions: &[usize]) -> Policy {
    Policy::Random(num_actions.iter().map(|&k| vec![1.0 / k as f64; k]).collect())
}

/// Class index that cross-entropy skips.
pub(crate) const IGNORE: i64 = -100;

/// The labels the output's cross-entropy trains on: `y`, except [`IGNORE`] for an example whose
/// executed modules cannot represent its class. A `place` layer writes a branch's logits into its
/// own classes of the output and a constant into the rest; an example routed to the wrong branch
/// can only lower that branch's loss by pushing all of its logits below the constant, which
/// destroys the branch. Such an example still costs its controllers their reward (it is counted
/// wrong), and the branches learn only from their own classes. Graphs without `place` layers are
/// unchanged.
pub fn representable_targets(model: &D2nn, executed: &[Tensor], y: &Tensor) -> Tensor {
    let placing: Vec<(usize, &[i64], i64)> = model
        .graph
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, node)| match node.layers.last() {
            Some(LayerSpec::Place { size, indices, .. }) => Some((i, indices.as_slice(), *size)),
            _ => None,
        })
        .collect();
    if placing.is_empty() {
        return y.shallow_clone();
    }
    let device = y.device();
    let mut representable = Tensor::zeros(y.size(), (Kind::Bool, device));
    for (node, indices, size) in placing {
        let classes = Tensor::zeros([size], (Kind::Bool, device)).index_fill(
            0,
            &Tensor::from_slice(indices).to_device(device),
            1,
        );
        let in_classes = classes.index_select(0, &y.clamp(0, size - 1));
        representable = representable.logical_or(&executed[node].logical_and(&in_classes));
    }
    y.where_self(&representable, &y.full_like(IGNORE))
}

/// What one forward earned per example: its predicted classes, whether each was right, and the
/// fraction of the full network it executed.
pub(crate) struct Outcome {
    pub predicted: Tensor,
    pub correct: Tensor,
    pub cost_fraction: Tensor,
    /// The output without its graph, for a reward that reads the probabilities.
    logits: Tensor,
}

impl Outcome {
    pub fn of(fwd: &Forward, y: &Tensor, full_flops: f64) -> Outcome {
        let logits = fwd.output.detach();
        let predicted = logits.argmax(1, false);
        let correct = predicted.eq_tensor(y);
        Outcome { predicted, correct, cost_fraction: fwd.cost_fraction(full_flops), logits }
    }

    /// Each example's accuracy term A, f32: the true class's softmax probability with
    /// [`Accuracy::TrueClassProb`], else 1/0 for right/wrong (F1 bags count from `predicted`).
    pub fn example_accuracy(&self, metric: Accuracy, y: &Tensor) -> Tensor {
        match metric {
            Accuracy::TrueClassProb => {
                self.logits.softmax(1, Kind::Float).gather(1, &y.unsqueeze(1), false).squeeze_dim(1)
            }
            Accuracy::PerExample | Accuracy::F1 => self.correct.to_kind(Kind::Float),
        }
    }

    /// λ·(accuracy or F-score) + (1−λ)·(−cost) per bag.
    pub fn bag_rewards(&self, cfg: &TrainConfig, y: &Tensor) -> Result<Tensor> {
        rl::bag_rewards(
            cfg.accuracy,
            &self.example_accuracy(cfg.accuracy, y),
            &self.predicted.eq(1),
            &y.eq(1),
            &self.cost_fraction,
            cfg.bag_size,
            cfg.lambda,
        )
    }
}

/// Forward with sampled decisions, task loss, reward, controller loss, backward. Leaves the
/// gradients in `flat`'s gradient buffer, the model's (zeroed first, extra slots included), and
/// returns what it measured.
pub fn train_step(model: &D2nn, flat: &FlatParams, batch: &Batch, ctx: &StepContext) -> Result<StepStats> {
    step_losses(model, flat, batch, ctx)?.backward()
}

/// The losses of a step, before their backward, and its statistics, still on the device.
pub struct StepLosses {
    total: Tensor,
    task: Tensor,
    control: Tensor,
    pending: PendingStats,
}

/// What a step measured before its end: the fields the host knows, and where the others will lie
/// in the one read of [`StepLosses::backward`].
struct PendingStats {
    known: StepStats,
    readout: Readout,
    correct: Slot,
    cost_fraction_sum: Slot,
    reward_sum: Option<Slot>,
    /// Per controller: its reward sums (`RewardStats::sums_of`).
    rewards: Vec<Slot>,
    /// Per learning REINFORCE controller: the sum and the sum of squares of its advantages.
    advantages: Vec<(Slot, Slot)>,
}

impl StepLosses {
    /// Backward of the total loss into the parameters' `.grad()`, then the step's statistics, read
    /// back to the host in one transfer.
    pub fn backward(self) -> Result<StepStats> {
        self.total.backward();
        let PendingStats { known: mut stats, mut readout, correct, cost_fraction_sum, reward_sum, rewards, advantages } =
            self.pending;
        let losses = [readout.push(&self.task)?, readout.push(&self.control)?, readout.push(&self.total)?];
        let values = readout.read()?;
        [stats.task_loss, stats.control_loss, stats.loss] = losses.map(|slot| values.scalar(&slot));
        stats.correct = values.scalar(&correct) as u64;
        stats.cost_fraction_sum = values.scalar(&cost_fraction_sum);
        if let Some(slot) = reward_sum {
            stats.reward_sum = values.scalar(&slot);
        }
        for (c, slot) in rewards.iter().enumerate() {
            stats.rewards.add(c, values.get(slot))?;
            for (a, taken) in stats.actions[c].iter_mut().enumerate() {
                *taken = stats.rewards.count(c, a);
            }
        }
        for (sum, sq) in &advantages {
            stats.advantage_sum += values.scalar(sum);
            stats.advantage_sq_sum += values.scalar(sq);
        }
        Ok(stats)
    }
}

/// The first half of [`train_step`]: gradients zeroed, forward with sampled decisions, task loss,
/// reward and controller loss (benchmarks time the halves apart).
pub fn step_losses(model: &D2nn, flat: &FlatParams, batch: &Batch, ctx: &StepContext) -> Result<StepLosses> {
    let cfg = ctx.cfg;
    let graph = &model.graph;
    flat.zero_grad()?;
    let num_actions = graph.num_actions();
    let policy = match ctx.routing {
        Routing::Policy => policy_for_step(cfg, &num_actions, ctx.step),
        Routing::UniformRandom => uniform_random(&num_actions),
    };
    let key = DecisionKey { seed: ctx.seed, step: ctx.step };
    let device = model.device();
    let x = batch.x.to_device(device);
    let y = batch.y.to_device(device);
    let fwd = model.forward(&x, &batch.ids, &policy, key, true)?;
    let global = ctx.global_batch as f64;
    let local = batch.ids.len();

    let task_target = representable_targets(model, &fwd.executed, &y);
    let mut task = fwd.output.cross_entropy_loss::<Tensor>(&task_target, None, tch::Reduction::Sum, IGNORE, 0.0);
    for head in &fwd.heads {
        let target = match head.target {
            Target::Label => &y,
            Target::Coarse => &batch.coarse.to_device(device),
        };
        let t = target.index_select(0, &head.rows);
        task += head.logits.cross_entropy_loss::<Tensor>(&t, None, tch::Reduction::Sum, -100, 0.0) * head.weight;
    }
    let every_action_q = cfg.q_every_action && cfg.algorithm == Algorithm::QLearning;
    let joint_q = every_action_q && cfg.q_alternatives == QAlternatives::JointPaths;
    let every_path = joint_q || (cfg.branch_loss_weight > 0.0 && cfg.branch_paths == BranchPaths::Every);
    if every_path {
        check_joint_actions(model, MAX_JOINT_ACTIONS, "keys `train.branch_loss_weight` and `train.q_every_action`")?;
    }
    let forced = if joint_q {
        forced_paths(model, &x, &batch.ids, key, true, BranchPaths::Every)?
    } else if cfg.branch_loss_weight > 0.0 {
        forced_paths(model, &x, &batch.ids, key, true, cfg.branch_paths)?
    } else {
        Vec::new()
    };
    if cfg.branch_loss_weight > 0.0 {
        task += branch_loss(model, &forced, &y) * cfg.branch_loss_weight;
    }
    let task = task / global;

    let sampled = Outcome::of(&fwd, &y, graph.full_flops);
    let mut readout = Readout::default();
    let mut pending = PendingStats {
        known: StepStats {
            examples: local as u64,
            rewards: RewardStats::new(&num_actions),
            actions: num_actions.iter().map(|&k| vec![0; k]).collect(),
            ..Default::default()
        },
        correct: readout.push(&sampled.correct.sum(Kind::Int64))?,
        cost_fraction_sum: readout.push(&sampled.cost_fraction.sum(Kind::Double))?,
        readout,
        reward_sum: None,
        rewards: Vec::new(),
        advantages: Vec::new(),
    };
    let stats = &mut pending.known;
    let readout = &mut pending.readout;

    let mut control = Tensor::zeros([], (Kind::Float, device));
    if !fwd.decisions.is_empty() {
        let m = cfg.bag_size;
        let bag_rewards = sampled.bag_rewards(cfg, &y)?;
        stats.bags = (local / m) as u64;
        pending.reward_sum = Some(readout.push(&bag_rewards.sum(Kind::Double))?);
        let global_bags = global / m as f64;
        let learning = cfg.algorithm == Algorithm::QLearning
            || ctx.step >= cfg.warmup_steps
            || ctx.routing == Routing::UniformRandom;
        for (c, d) in fwd.decisions.iter().enumerate() {
            pending.rewards.push(readout.push(&stats.rewards.sums_of(c, &d.actions, &d.rows, &bag_rewards, m)?)?);
            if !learning || every_action_q {
                continue;
            }
            let loss = match cfg.algorithm {
                Algorithm::QLearning => rl::q_loss(&d.scores, &d.actions, &d.rows, &bag_rewards, m)?,
                Algorithm::Reinforce => {
                    let b = ctx.baselines.get(c).copied().unwrap_or(0.0);
                    let adv = rl::advantages(&d.actions, &d.rows, &bag_rewards, m, &vec![b; num_actions[c]])?;
                    stats.advantage_count += adv.numel() as u64;
                    pending
                        .advantages
                        .push((readout.push(&adv.sum(Kind::Double))?, readout.push(&adv.square().sum(Kind::Double))?));
                    rl::reinforce_loss(&d.scores, &d.actions, &adv, cfg.entropy_coef)?
                }
            };
            control += loss / global_bags;
        }
        if joint_q {
            control += every_action_q_loss(model, &forced, &sampled, cfg, &y, global)?;
        } else if every_action_q {
            control += one_at_a_time_q_loss(model, &x, &batch.ids, key, &fwd, &bag_rewards, cfg, &y, global)?;
        }
    }
    let total = &task + &control * cfg.control_weight;
    Ok(StepLosses { total, task, control, pending })
}

/// Clip (per config) and apply one optimizer update with learning rate `lr` to `flat`, the model's
/// parameters in their flat buffers (a module no example ran has zero gradients there, so every
/// replica does the same work). Nothing is read back: the clipping decides on the device.
pub fn apply_update(flat: &FlatParams, optimizer: &mut dyn Optimizer, cfg: &TrainConfig, lr: f64) -> Result<()> {
    // The groups of `D2nn::flat_parameters`, the other modules and the controllers, are clipped
    // apart: with one global norm, a large control loss (a mini-bag's Q is the sum of 32 examples'
    // Q) scaled the classifiers' gradients to nothing, and the cascade never learned its positive
    // class.
    let _norms = clip_grad_norms(&flat.group_grads()?, cfg.grad_clip)?;
    optimizer.step(flat, lr)
}

/// Whether the reward's accuracy term needs a binary task.
pub(crate) fn needs_binary(cfg: &TrainConfig) -> bool {
    cfg.accuracy == Accuracy::F1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn true_class_prob_reward_reads_the_softmax_of_the_true_class() {
        // Example 0: logits [0, ln 3], true class 1 → p = 3/4, right. Example 1: [ln 4, 0], true
        // class 1 → p = 1/5, wrong.
        let logits = Tensor::from_slice2(&[[0.0f32, 3f32.ln()], [4f32.ln(), 0.0]]);
        let y = Tensor::from_slice(&[1i64, 1]);
        let predicted = logits.argmax(1, false);
        let outcome = Outcome {
            correct: predicted.eq_tensor(&y),
            predicted,
            cost_fraction: Tensor::from_slice(&[0.5f32, 0.25]),
            logits,
        };
        let mut cfg = TrainConfig { lambda: 0.8, ..Default::default() };
        let rewards = |cfg: &TrainConfig| Vec::<f32>::try_from(&outcome.bag_rewards(cfg, &y).unwrap()).unwrap();
        let close = |got: Vec<f32>, want: [f32; 2]| {
            assert!(got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-6), "got {got:?}, want {want:?}");
        };
        // 0.8·A − 0.2·cost, A = 1/0 correctness.
        close(rewards(&cfg), [0.7, -0.05]);
        cfg.accuracy = Accuracy::TrueClassProb;
        // A = 3/4 and 1/5.
        close(rewards(&cfg), [0.5, 0.11]);
    }
}
