//! How well a D2NN's controllers choose. Every path through its controllers (each distinct joint action,
//! as training's forced passes run them) runs on every held-out example, so the controllers' own
//! (argmax) choices can be set against random routing at the same rates, computed exactly rather than
//! sampled, and against two oracles that know which paths are right. Controllers that learned nothing
//! land on the random figure; the oracles bound what any routing could get from these trained paths.
use serde::{Deserialize, Serialize};
use tch::Kind;

use super::forced::{check_joint_actions, forced_paths, ran, BranchPaths, ForcedPath, MAX_JOINT_ACTIONS};
use crate::data::Split;
use crate::exec::{D2nn, DecisionKey, Policy};
use crate::rl::f1_score;
use crate::{host, Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingReport {
    /// The controllers, in decision order, joined by `, `.
    pub controller: String,
    /// Per path: the nodes each deciding controller enables along it, joined by `+` within a decision
    /// and ` → ` between decisions (one controller: its actions).
    pub actions: Vec<String>,
    pub examples: usize,
    /// Per path: the fraction of examples the controllers send there.
    pub rates: Vec<f64>,
    /// Per controller (decision order): the fraction of the examples it decided for that took each of
    /// its actions. Random routing flips each controller's coin at these rates.
    #[serde(default)]
    pub controller_rates: Vec<Vec<f64>>,
    /// Per path: its probability under random routing at `controller_rates` (one controller, or
    /// controllers that decide one after another on a tree of paths as the cascade's: equal to `rates`).
    #[serde(default)]
    pub random_path_probability: Vec<f64>,
    /// Per path: accuracy and mean cost fraction with every example forced onto it.
    pub forced_accuracy: Vec<f64>,
    pub forced_cost_fraction: Vec<f64>,
    pub routed_accuracy: f64,
    pub routed_cost_fraction: f64,
    /// Expected accuracy of random routing: Σ probability·forced accuracy. Its cost equals the
    /// controllers' in expectation only where each path costs the same on every example, as here.
    pub random_accuracy: f64,
    /// Binary tasks: the F-score of the positive class per forced path, routed, and of random routing:
    /// the F-score of its expected true-positive, false-positive and false-negative counts (exact
    /// counts; the F-score of expected counts differs from the expected F-score by O(1/examples)).
    #[serde(default)]
    pub forced_f1: Option<Vec<f64>>,
    #[serde(default)]
    pub routed_f1: Option<f64>,
    #[serde(default)]
    pub random_f1: Option<f64>,
    /// The best accuracy of any assignment that sends as many examples to each path as the
    /// controllers do. Two paths only (more make it a flow problem).
    pub oracle_same_rates_accuracy: Option<f64>,
    /// Each example on the cheapest path that gets it right (the cheapest path if none does).
    pub cheapest_right_accuracy: f64,
    pub cheapest_right_cost_fraction: f64,
    /// The controllers' path rates on the examples grouped by which paths get them right.
    pub by_right_paths: Vec<RightPaths>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RightPaths {
    /// The paths that classify these examples correctly (empty: none does).
    pub right: Vec<usize>,
    pub examples: usize,
    pub rates: Vec<f64>,
}

/// Per path p and example i: whether p gets i right, whether it predicts the positive class, and what
/// it costs (fraction of the full network); per example its label's positiveness and the path the
/// controllers chose; per path its random-routing probability.
#[derive(Debug, Default)]
pub(crate) struct Outcomes {
    pub right: Vec<Vec<bool>>,
    pub predicted_positive: Vec<Vec<bool>>,
    pub cost: Vec<Vec<f64>>,
    pub actual_positive: Vec<bool>,
    pub chosen: Vec<usize>,
    pub controller_rates: Vec<Vec<f64>>,
    pub path_probability: Vec<f64>,
}

/// A path's decisions: per controller, its action where it decides on the path, `None` where it does
/// not run there.
type PathKey = Vec<Option<i64>>;

/// The most joint actions a routing report runs every path of: a chain of three 3-way controllers
/// (27 gradient-free passes over the test set, about a minute on one core).
pub const MAX_REPORT_JOINT_ACTIONS: usize = 27;

/// Runs the report over all of `split` in batches of `batch_size`, without gradients; `binary` adds the
/// F-scores. For a graph with one to [`MAX_REPORT_JOINT_ACTIONS`] joint actions; with more than
/// [`MAX_JOINT_ACTIONS`] paths the grouping by right paths is left out (thousands of groups).
pub fn routing_report(
    model: &D2nn,
    split: &Split,
    batch_size: usize,
    key: DecisionKey,
    binary: bool,
) -> Result<RoutingReport> {
    let graph = &model.graph;
    if graph.controls.is_empty() {
        return Err(Error::Invalid(
            "the routing report needs a graph with one or more controllers; this one has 0 controllers".into(),
        ));
    }
    check_joint_actions(model, MAX_REPORT_JOINT_ACTIONS, "the routing report")?;
    let _guard = tch::no_grad_guard();
    let device = model.device();
    let controllers = graph.controls.len();
    let mut outcomes = Outcomes::default();
    let mut paths: Vec<PathKey> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut decided = vec![Vec::<usize>::new(); controllers];
    let indices: Vec<usize> = (0..split.len()).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = split.batch(chunk, device)?;
        let y = batch.y.to_device(device);
        let forced = forced_paths(model, &batch.x, &batch.ids, key, false, BranchPaths::Every)?;
        if paths.is_empty() {
            paths = forced.iter().map(|p| path_key(model, p)).collect();
            names = forced.iter().map(|p| path_name(model, p)).collect();
            let n = paths.len();
            outcomes.right = vec![Vec::new(); n];
            outcomes.predicted_positive = vec![Vec::new(); n];
            outcomes.cost = vec![Vec::new(); n];
        } else if forced.iter().map(|p| path_key(model, p)).ne(paths.iter().cloned()) {
            return Err(Error::Invalid("the routing report: the network's paths differ between batches".into()));
        }
        for (p, path) in forced.iter().enumerate() {
            let predicted = path.fwd.output.argmax(1, false);
            outcomes.right[p].extend(host::values::<bool>(&predicted.eq_tensor(&y))?);
            outcomes.predicted_positive[p].extend(host::values::<bool>(&predicted.eq(1))?);
            outcomes.cost[p].extend(host::values::<f64>(&(path.fwd.cost.to_kind(Kind::Double) / graph.full_flops))?);
        }
        outcomes.actual_positive.extend(host::values::<bool>(&y.eq(1))?);

        let routed = model.forward(&batch.x, &batch.ids, &Policy::Argmax, key, false)?;
        let mut chosen_by: Vec<Vec<i64>> = vec![vec![-1; chunk.len()]; controllers];
        for d in &routed.decisions {
            let j = graph
                .control_index(d.node)
                .ok_or_else(|| Error::Invalid(format!("the routing report: node {} is not a controller", d.node)))?;
            chosen_by[j] = host::values::<i64>(&d.chosen)?;
        }
        for i in 0..chunk.len() {
            let took: PathKey = chosen_by.iter().map(|c| (c[i] >= 0).then_some(c[i])).collect();
            for (j, a) in took.iter().enumerate() {
                if let Some(a) = a {
                    let slot = decided[j].len().max(*a as usize + 1);
                    decided[j].resize(slot, 0);
                    decided[j][*a as usize] += 1;
                }
            }
            let p = paths.iter().position(|key| *key == took).ok_or_else(|| {
                Error::Invalid(format!("the routing report: the controllers' decisions {took:?} match no path"))
            })?;
            outcomes.chosen.push(p);
        }
    }
    let num_actions = graph.num_actions();
    outcomes.controller_rates = decided
        .iter()
        .zip(&num_actions)
        .map(|(counts, &k)| {
            let total: usize = counts.iter().sum();
            (0..k).map(|a| counts.get(a).map_or(0.0, |&c| c as f64 / total.max(1) as f64)).collect()
        })
        .collect();
    outcomes.path_probability = paths
        .iter()
        .map(|key| {
            key.iter().zip(&outcomes.controller_rates).filter_map(|(a, rates)| a.map(|a| rates[a as usize])).product()
        })
        .collect();
    let controller = graph.controls.iter().map(|&c| graph.nodes[c].name.as_str()).collect::<Vec<_>>().join(", ");
    Ok(outcomes.report(controller, names, binary))
}

fn path_key(model: &D2nn, path: &ForcedPath) -> PathKey {
    (0..path.actions.len()).map(|j| ran(model, &path.fwd, j).then_some(path.actions[j])).collect()
}

fn path_name(model: &D2nn, path: &ForcedPath) -> String {
    let graph = &model.graph;
    path_key(model, path)
        .iter()
        .zip(&graph.controls)
        .filter_map(|(a, &c)| {
            a.map(|a| {
                let nodes = &graph.nodes[c].actions[a as usize];
                nodes.iter().map(|&n| graph.nodes[n].name.as_str()).collect::<Vec<_>>().join("+")
            })
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

impl Outcomes {
    pub(crate) fn report(&self, controller: String, actions: Vec<String>, binary: bool) -> RoutingReport {
        let k = self.right.len();
        let n = self.chosen.len();
        let total = n.max(1) as f64;
        let mean = |xs: &[f64]| xs.iter().sum::<f64>() / total;
        let count = |xs: &[bool]| xs.iter().filter(|&&r| r).count();

        let mut routed_to = vec![0usize; k];
        for &a in &self.chosen {
            routed_to[a] += 1;
        }
        let rates: Vec<f64> = routed_to.iter().map(|&c| c as f64 / total).collect();
        let forced_accuracy: Vec<f64> = self.right.iter().map(|r| count(r) as f64 / total).collect();
        let forced_cost_fraction = self.cost.iter().map(|c| mean(c)).collect();
        let routed_right = self.chosen.iter().enumerate().filter(|&(i, &a)| self.right[a][i]).count();
        let routed_cost: Vec<f64> = self.chosen.iter().enumerate().map(|(i, &a)| self.cost[a][i]).collect();
        let random_accuracy = self.path_probability.iter().zip(&forced_accuracy).map(|(p, acc)| p * acc).sum();

        let (forced_f1, routed_f1, random_f1) = if binary {
            let forced = self.predicted_positive.iter().map(|p| f1_score(p, &self.actual_positive)).collect();
            let routed: Vec<bool> =
                self.chosen.iter().enumerate().map(|(i, &a)| self.predicted_positive[a][i]).collect();
            (Some(forced), Some(f1_score(&routed, &self.actual_positive)), Some(self.expected_counts_f1()))
        } else {
            (None, None, None)
        };

        let right_sets: Vec<Vec<usize>> = (0..n).map(|i| (0..k).filter(|&a| self.right[a][i]).collect()).collect();
        let oracle_same_rates_accuracy = (k == 2).then(|| {
            // Examples that only one path gets right go there while its share lasts; the rest fill
            // the remaining places, and those every path gets right are right wherever they go.
            let only = |a: usize| right_sets.iter().filter(|r| r.as_slice() == [a]).count();
            let both = right_sets.iter().filter(|r| r.len() == 2).count();
            (both + only(0).min(routed_to[0]) + only(1).min(routed_to[1])) as f64 / total
        });

        let mut cheapest_right = 0usize;
        let mut cheapest_cost = Vec::with_capacity(n);
        for i in 0..n {
            let by_cost = |a: &usize, b: &usize| self.cost[*a][i].total_cmp(&self.cost[*b][i]);
            let a = match right_sets[i].iter().copied().min_by(by_cost) {
                Some(a) => {
                    cheapest_right += 1;
                    a
                }
                None => (0..k).min_by(by_cost).unwrap_or(0),
            };
            cheapest_cost.push(self.cost.get(a).map_or(0.0, |c| c[i]));
        }

        let mut groups: Vec<RightPaths> = Vec::new();
        let grouped = if k <= MAX_JOINT_ACTIONS { self.chosen.as_slice() } else { &[] };
        for (right, &chosen) in right_sets.iter().zip(grouped) {
            let slot = match groups.iter().position(|g| &g.right == right) {
                Some(slot) => slot,
                None => {
                    groups.push(RightPaths { right: right.clone(), examples: 0, rates: vec![0.0; k] });
                    groups.len() - 1
                }
            };
            groups[slot].examples += 1;
            groups[slot].rates[chosen] += 1.0;
        }
        for g in &mut groups {
            g.rates.iter_mut().for_each(|r| *r /= g.examples as f64);
        }
        // Most paths right first; ties in path order.
        groups.sort_by(|a, b| b.right.len().cmp(&a.right.len()).then_with(|| a.right.cmp(&b.right)));

        RoutingReport {
            controller,
            actions,
            examples: n,
            rates,
            controller_rates: self.controller_rates.clone(),
            random_path_probability: self.path_probability.clone(),
            forced_accuracy,
            forced_cost_fraction,
            routed_accuracy: routed_right as f64 / total,
            routed_cost_fraction: mean(&routed_cost),
            random_accuracy,
            forced_f1,
            routed_f1,
            random_f1,
            oracle_same_rates_accuracy,
            cheapest_right_accuracy: cheapest_right as f64 / total,
            cheapest_right_cost_fraction: mean(&cheapest_cost),
            by_right_paths: groups,
        }
    }

    /// The F-score of random routing's expected counts: Σ over examples and paths of the path's
    /// probability times its true positive, false positive or false negative on the example.
    fn expected_counts_f1(&self) -> f64 {
        let (mut tp, mut fp, mut fneg) = (0.0, 0.0, 0.0);
        for (predicted, &p) in self.predicted_positive.iter().zip(&self.path_probability) {
            for (&guess, &actual) in predicted.iter().zip(&self.actual_positive) {
                match (guess, actual) {
                    (true, true) => tp += p,
                    (true, false) => fp += p,
                    (false, true) => fneg += p,
                    (false, false) => {}
                }
            }
        }
        if 2.0 * tp + fp + fneg == 0.0 {
            return 1.0; // no positives anywhere, none predicted: f1_score's convention
        }
        2.0 * tp / (2.0 * tp + fp + fneg)
    }
}

#[cfg(test)]
#[path = "routing_tests.rs"]
mod tests;
