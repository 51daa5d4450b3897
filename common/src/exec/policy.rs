use tch::{Kind, Tensor};

use crate::Result;
use crate::{host, rng};

/// How control nodes turn scores into actions.
#[derive(Debug)]
pub enum Policy {
    /// The highest score (lowest index on ties): evaluation.
    Argmax,
    /// A uniformly random action with probability ε, else argmax: Q-learning exploration.
    EpsilonGreedy(f64),
    /// Sample from softmax(scores): REINFORCE.
    Sample,
    /// Given actions per controller (decision index), one per batch example.
    Forced(Vec<Tensor>),
    /// One action per controller (decision index) that every example takes: the host knows where
    /// each example goes without reading anything back.
    Fixed(Vec<i64>),
    /// Per controller, fixed action probabilities whatever the input: the random-routing baseline.
    Random(Vec<Vec<f64>>),
}

/// What keys the random draws: every draw is a pure function of (seed, step, controller, example id),
/// so a resumed run, or a run split over any number of workers, makes the same decisions.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecisionKey {
    pub seed: u64,
    pub step: u64,
}

impl DecisionKey {
    /// An independent stream of draws for the same step: a second set of random actions that
    /// does not repeat the first (`branch_paths = "uniform_and_random"` during random-routing warm-up).
    pub fn independent(self) -> DecisionKey {
        // Any fixed word hashed with the seed starts a stream of its own; this one spells "random".
        DecisionKey { seed: rng::hash_words(&[self.seed, 0x7261_6e64_6f6d]), step: self.step }
    }

    /// One draw per example of `rows`. They are made on the host for the whole batch, whose ids the
    /// host knows, and picked on the device: the host never needs to read which rows they are.
    fn uniforms(&self, control: usize, ids: &[i64], rows: &Tensor, salt: u64) -> Tensor {
        let u: Vec<f32> = ids
            .iter()
            .map(|&id| rng::uniform(&[self.seed, self.step, control as u64, id as u64, salt]) as f32)
            .collect();
        Tensor::from_slice(&u).to_device(rows.device()).index_select(0, rows)
    }
}

impl Policy {
    /// The action every example takes at controller `control` (decision index), when the policy
    /// fixes one.
    pub(crate) fn fixed_action(&self, control: usize) -> Option<i64> {
        match self {
            Policy::Fixed(actions) => actions.get(control).copied(),
            _ => None,
        }
    }

    /// Actions (i64 [n]) for the examples at positions `rows` of the batch, whose scores are
    /// `scores` [n, k]; `ids` are the dataset indices of the whole batch, which key the draws.
    pub(crate) fn choose(
        &self,
        control: usize,
        scores: &Tensor,
        rows: &Tensor,
        ids: &[i64],
        key: DecisionKey,
    ) -> Result<Tensor> {
        let device = scores.device();
        let k = scores.size()[1];
        let greedy = || scores.detach().argmax(1, false);
        Ok(match self {
            Policy::Argmax => greedy(),
            Policy::EpsilonGreedy(eps) => {
                let explore = key.uniforms(control, ids, rows, 0).lt(*eps);
                let random =
                    (key.uniforms(control, ids, rows, 1) * k as f64).floor().to_kind(Kind::Int64).clamp_max(k - 1);
                random.where_self(&explore, &greedy())
            }
            Policy::Sample => {
                let probs = scores.detach().softmax(1, Kind::Float);
                sample(&probs, &key.uniforms(control, ids, rows, 2))
            }
            Policy::Random(rates) => {
                let p = rates
                    .get(control)
                    .ok_or_else(|| crate::Error::Invalid(format!("no routing rates for controller {control}")))?;
                if p.len() as i64 != k {
                    return Err(crate::Error::Invalid(format!(
                        "controller {control} has {k} actions, {} routing rates given",
                        p.len()
                    )));
                }
                let probs = Tensor::from_slice(p)
                    .to_kind(Kind::Float)
                    .to_device(device)
                    .unsqueeze(0)
                    .expand([rows.size()[0], k], false);
                sample(&probs, &key.uniforms(control, ids, rows, 3))
            }
            Policy::Fixed(actions) => {
                let a = *actions
                    .get(control)
                    .ok_or_else(|| crate::Error::Invalid(format!("no fixed action for controller {control}")))?;
                if !(0..k).contains(&a) {
                    return Err(crate::Error::Invalid(format!(
                        "fixed action {a} of controller {control} is outside 0..{k}"
                    )));
                }
                Tensor::full([rows.size()[0]], a, (Kind::Int64, device))
            }
            Policy::Forced(actions) => {
                let a = actions
                    .get(control)
                    .ok_or_else(|| crate::Error::Invalid(format!("no forced actions for controller {control}")))?;
                let chosen = a.to_device(device).index_select(0, rows);
                host::debug_check_range(&format!("forced actions of controller {control}"), &chosen, k)?;
                chosen
            }
        })
    }
}

/// Inverse-CDF sampling: the first action whose cumulative probability exceeds u.
fn sample(probs: &Tensor, u: &Tensor) -> Tensor {
    let k = probs.size()[1];
    let below = probs.cumsum(1, Kind::Float).lt_tensor(&u.unsqueeze(1));
    below.sum_dim_intlist(1i64, false, Kind::Int64).clamp_max(k - 1)
}
