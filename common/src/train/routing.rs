//! How well a one-controller D2NN's router chooses. Every action's path runs on every held-out
//! example, so the router's own (argmax) choices can be set against random routing at the same
//! rates, computed exactly rather than sampled, and against two oracles that know which paths are
//! right. A router that learned nothing lands on the random figure; the oracles bound what any
//! router could get from these trained paths.
use serde::{Deserialize, Serialize};
use tch::Kind;

use super::step::forced_forwards;
use crate::data::Split;
use crate::exec::{D2nn, DecisionKey, Policy};
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingReport {
    pub controller: String,
    /// Per action: the nodes it enables, joined by `+`.
    pub actions: Vec<String>,
    pub examples: usize,
    /// Per action: the fraction of examples the router sends there.
    pub rates: Vec<f64>,
    /// Per action: accuracy and mean cost fraction with every example forced onto its path.
    pub forced_accuracy: Vec<f64>,
    pub forced_cost_fraction: Vec<f64>,
    pub routed_accuracy: f64,
    pub routed_cost_fraction: f64,
    /// Expected accuracy of coin flips at `rates`: Σ rate·forced accuracy. Its cost equals the
    /// router's in expectation only where each path costs the same on every example, as here.
    pub random_accuracy: f64,
    /// The best accuracy of any assignment that sends as many examples to each action as the
    /// router does. Two-action controllers only (more actions make it a flow problem).
    pub oracle_same_rates_accuracy: Option<f64>,
    /// Each example on the cheapest path that gets it right (the cheapest path if none does).
    pub cheapest_right_accuracy: f64,
    pub cheapest_right_cost_fraction: f64,
    /// The router's rates on the examples grouped by which paths get them right.
    pub by_right_paths: Vec<RightPaths>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RightPaths {
    /// The actions whose path classifies these examples correctly (empty: none does).
    pub right: Vec<usize>,
    pub examples: usize,
    pub rates: Vec<f64>,
}

/// Per action a and example i: whether a's path gets i right and what it costs (fraction of the full
/// network); and the router's choice per example.
#[derive(Debug, Default)]
pub(crate) struct Outcomes {
    pub right: Vec<Vec<bool>>,
    pub cost: Vec<Vec<f64>>,
    pub chosen: Vec<usize>,
}

/// Runs the report over all of `split` in batches of `batch_size`, without gradients.
pub fn routing_report(model: &D2nn, split: &Split, batch_size: usize, key: DecisionKey) -> Result<RoutingReport> {
    let graph = &model.graph;
    let [control] = graph.controls.as_slice() else {
        return Err(Error::Invalid(format!(
            "the routing report needs a graph with exactly one controller; this one has {}",
            graph.controls.len()
        )));
    };
    let _guard = tch::no_grad_guard();
    let device = model.device();
    let k = graph.nodes[*control].actions.len();
    let mut outcomes = Outcomes { right: vec![Vec::new(); k], cost: vec![Vec::new(); k], chosen: Vec::new() };
    let indices: Vec<usize> = (0..split.len()).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let batch = split.batch(chunk, device)?;
        let y = batch.y.to_device(device);
        let routed = model.forward(&batch.x, &batch.ids, &Policy::Argmax, key, false)?;
        let chosen = routed
            .decisions
            .first()
            .map(|d| d.chosen.shallow_clone())
            .ok_or_else(|| Error::Invalid("the routing report: the controller made no decision".to_string()))?;
        for a in Vec::<i64>::try_from(chosen.to_device(tch::Device::Cpu))? {
            // One controller has no controller upstream to skip it, so it decides for every example.
            let a = usize::try_from(a)
                .map_err(|_| Error::Invalid("the routing report: the controller skipped an example".to_string()))?;
            outcomes.chosen.push(a);
        }
        for (a, fwd) in forced_forwards(model, &batch.x, &batch.ids, key, false)?.iter().enumerate() {
            let right = fwd.output.argmax(1, false).eq_tensor(&y).to_device(tch::Device::Cpu);
            outcomes.right[a].extend(Vec::<bool>::try_from(right)?);
            let cost = (fwd.cost.to_kind(Kind::Double) / graph.full_flops).to_device(tch::Device::Cpu);
            outcomes.cost[a].extend(Vec::<f64>::try_from(cost)?);
        }
    }
    let names = graph.nodes[*control]
        .actions
        .iter()
        .map(|nodes| nodes.iter().map(|&n| graph.nodes[n].name.as_str()).collect::<Vec<_>>().join("+"))
        .collect();
    Ok(outcomes.report(graph.nodes[*control].name.clone(), names))
}

impl Outcomes {
    pub(crate) fn report(&self, controller: String, actions: Vec<String>) -> RoutingReport {
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
        let random_accuracy = rates.iter().zip(&forced_accuracy).map(|(r, acc)| r * acc).sum();

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
        for (right, &chosen) in right_sets.iter().zip(&self.chosen) {
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
        // Most paths right first; ties in action order.
        groups.sort_by(|a, b| b.right.len().cmp(&a.right.len()).then_with(|| a.right.cmp(&b.right)));

        RoutingReport {
            controller,
            actions,
            examples: n,
            rates,
            forced_accuracy,
            forced_cost_fraction,
            routed_accuracy: routed_right as f64 / total,
            routed_cost_fraction: mean(&routed_cost),
            random_accuracy,
            oracle_same_rates_accuracy,
            cheapest_right_accuracy: cheapest_right as f64 / total,
            cheapest_right_cost_fraction: mean(&cheapest_cost),
            by_right_paths: groups,
        }
    }
}

impl RoutingReport {
    /// The report as a table for a terminal.
    pub fn render(&self) -> String {
        let pct = |x: f64| format!("{:.2}", 100.0 * x);
        let mut out = format!("routing report: controller `{}`, {} test examples\n", self.controller, self.examples);
        out += &format!("{:<34}{:>10}{:>8}\n", "", "accuracy", "cost");
        for (a, name) in self.actions.iter().enumerate() {
            out += &format!(
                "{:<34}{:>10}{:>8.3}\n",
                format!("every example on `{name}`"),
                pct(self.forced_accuracy[a]),
                self.forced_cost_fraction[a]
            );
        }
        let rates = self
            .actions
            .iter()
            .zip(&self.rates)
            .map(|(name, r)| format!("{name} {:.1} %", 100.0 * r))
            .collect::<Vec<_>>()
            .join(", ");
        out += &format!(
            "{:<34}{:>10}{:>8.3}   ({rates})\n",
            "the router",
            pct(self.routed_accuracy),
            self.routed_cost_fraction
        );
        out += &format!(
            "{:<34}{:>10}{:>8}   (router − random: {:+.2} points)\n",
            "random routing at the same rates",
            pct(self.random_accuracy),
            "",
            100.0 * (self.routed_accuracy - self.random_accuracy)
        );
        if let Some(oracle) = self.oracle_same_rates_accuracy {
            out += &format!("{:<34}{:>10}\n", "oracle at the same rates", pct(oracle));
        }
        out += &format!(
            "{:<34}{:>10}{:>8.3}\n",
            "oracle: cheapest right path",
            pct(self.cheapest_right_accuracy),
            self.cheapest_right_cost_fraction
        );
        out += "router's rates by which paths are right:\n";
        for g in &self.by_right_paths {
            let right = match g.right.as_slice() {
                [] => "none".to_string(),
                r => r.iter().map(|&a| self.actions[a].as_str()).collect::<Vec<_>>().join(", "),
            };
            let rates = self
                .actions
                .iter()
                .zip(&g.rates)
                .map(|(name, r)| format!("{name} {:.1} %", 100.0 * r))
                .collect::<Vec<_>>();
            out += &format!("  right on {right:<24}{:>6} examples   {}\n", g.examples, rates.join(", "));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Six examples, hand-tallied: `low` (cost 0.2) gets 0, 1 and 4 right, `high` (cost 0.9) gets
    /// 0, 2, 4 and 5 right, and the router sends 0, 3 and 5 to `high`.
    #[test]
    fn report_matches_a_hand_tally() {
        let outcomes = Outcomes {
            right: vec![vec![true, true, false, false, true, false], vec![true, false, true, false, true, true]],
            cost: vec![vec![0.2; 6], vec![0.9; 6]],
            chosen: vec![1, 0, 0, 1, 0, 1],
        };
        let r = outcomes.report("router".into(), vec!["low".into(), "high".into()]);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert_eq!(r.examples, 6);
        assert_eq!(r.rates, [0.5, 0.5]);
        assert!(close(r.forced_accuracy[0], 3.0 / 6.0) && close(r.forced_accuracy[1], 4.0 / 6.0));
        assert!(close(r.forced_cost_fraction[0], 0.2) && close(r.forced_cost_fraction[1], 0.9));
        // Right on 0 (high), 1 (low), 4 (low), 5 (high); wrong on 2 (low) and 3 (high).
        assert!(close(r.routed_accuracy, 4.0 / 6.0));
        assert!(close(r.routed_cost_fraction, 3.3 / 6.0));
        assert!(close(r.random_accuracy, 0.5 * 0.5 + 0.5 * 4.0 / 6.0));
        // Both right on 0 and 4; only `low` on 1; only `high` on 2 and 5 (three places each).
        assert!(close(r.oracle_same_rates_accuracy.unwrap(), 5.0 / 6.0));
        // Cheapest right path: low, low, high, none (low), low, high.
        assert!(close(r.cheapest_right_accuracy, 5.0 / 6.0));
        assert!(close(r.cheapest_right_cost_fraction, 2.6 / 6.0));
        let groups: Vec<(Vec<usize>, usize, Vec<f64>)> =
            r.by_right_paths.iter().map(|g| (g.right.clone(), g.examples, g.rates.clone())).collect();
        assert_eq!(
            groups,
            [
                (vec![0, 1], 2, vec![0.5, 0.5]),
                (vec![0], 1, vec![1.0, 0.0]),
                (vec![1], 2, vec![0.5, 0.5]),
                (vec![], 1, vec![0.0, 1.0]),
            ]
        );
        let table = r.render();
        assert!(table.contains("router − random: +8.33 points"), "{table}");
    }

    /// An oracle at the router's rates cannot place more examples on a path than the router does.
    #[test]
    fn same_rates_oracle_respects_the_routers_shares() {
        let outcomes = Outcomes {
            right: vec![vec![false; 4], vec![true; 4]],
            cost: vec![vec![0.1; 4], vec![1.0; 4]],
            chosen: vec![0, 0, 0, 1],
        };
        let r = outcomes.report("router".into(), vec!["low".into(), "high".into()]);
        assert_eq!(r.oracle_same_rates_accuracy, Some(0.25));
        assert_eq!(r.cheapest_right_accuracy, 1.0);
        assert_eq!(r.routed_accuracy, 0.25);
        assert_eq!(r.random_accuracy, 0.25);
    }
}
