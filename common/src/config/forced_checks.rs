//! The checks of the `[train]` keys that run forced passes (`branch_loss_weight`, `branch_paths`,
//! `q_every_action`, `q_alternatives`, `bag_credit`, `q_continuation`, `q_targets`, `rate_floor`)
//! against each other and the graph's controllers.
use super::{Algorithm, TrainConfig};
use crate::graph::NodeSpec;
use crate::rl::{BagCredit, QContinuation, QTargets};
use crate::train::{BranchPaths, QAlternatives};

impl TrainConfig {
    /// `Err((key, why))` for the first key that conflicts with another or with `controls`.
    pub(super) fn check_forced_passes(&self, controls: &[&NodeSpec]) -> Result<(), (&'static str, String)> {
        let bad = |key: &'static str, why: &str| Err((key, why.to_string()));
        if self.branch_loss_weight < 0.0 || self.branch_loss_weight.is_nan() {
            return bad("branch_loss_weight", "must be zero (off) or positive");
        }
        let controllers = controls.len();
        // Both run the network once per distinct joint action of its controllers.
        let joint = controls.iter().fold(1usize, |acc, n| acc.saturating_mul(n.actions.len().max(1)));
        let limit = crate::train::MAX_JOINT_ACTIONS;
        let every_paths = self.branch_loss_weight > 0.0 && self.branch_paths == BranchPaths::Every;
        let joint_q = self.q_every_action && self.q_alternatives == QAlternatives::JointPaths;
        for (key, on) in [("branch_loss_weight", every_paths), ("q_every_action", joint_q)] {
            if on && joint > limit {
                return bad(
                    key,
                    &format!(
                        "needs a graph with at most {limit} joint actions (the product of its controllers' \
                         action counts); this one has {joint}{}",
                        if key == "branch_loss_weight" {
                            " (`train.branch_paths = \"uniform\"` trains fewer paths)"
                        } else {
                            ""
                        }
                    ),
                );
            }
        }
        if self.q_alternatives == QAlternatives::OneAtATime {
            if !self.q_every_action {
                return bad("q_alternatives", "\"one_at_a_time\" needs `train.q_every_action = true`");
            }
            if self.q_continuation == QContinuation::GreedyPath {
                return bad("q_alternatives", "\"one_at_a_time\" has no continuations: drop `train.q_continuation`");
            }
            if self.bag_size > 1 {
                return bad(
                    "q_alternatives",
                    "\"one_at_a_time\" compares each example's own rewards: it needs `train.bag_size = 1`",
                );
            }
        }
        if self.branch_paths != BranchPaths::Every && joint_q {
            return bad(
                "branch_paths",
                "only \"every\" can serve `train.q_every_action` with joint paths, which needs every path",
            );
        }
        if self.bag_credit == BagCredit::Marginal && !self.q_every_action {
            return bad("bag_credit", "\"marginal\" needs `train.q_every_action = true` (its forced passes)");
        }
        if self.q_continuation == QContinuation::GreedyPath {
            if !self.q_every_action {
                return bad(
                    "q_continuation",
                    "\"greedy_path\" needs `train.q_every_action = true` (its forced passes)",
                );
            }
            if self.bag_credit == BagCredit::Bag && self.bag_size > 1 {
                return bad(
                    "q_continuation",
                    "\"greedy_path\" follows each example's own path: it needs per-example rewards \
                     (`train.bag_credit = \"marginal\"` or `train.bag_size = 1`)",
                );
            }
        }
        if self.q_targets == QTargets::Centered {
            if !self.q_every_action {
                return bad("q_targets", "\"centered\" needs `train.q_every_action = true` (every action's reward)");
            }
            if self.bag_credit == BagCredit::Bag && self.bag_size > 1 {
                return bad(
                    "q_targets",
                    "\"centered\" compares each example's own rewards: it needs per-example rewards \
                     (`train.bag_credit = \"marginal\"` or `train.bag_size = 1`)",
                );
            }
        }
        if self.rate_floor.is_some() && self.q_targets != QTargets::Centered {
            return bad("rate_floor", "applies to `train.q_targets = \"centered\"` only (its targets carry the bonus)");
        }
        if self.q_every_action && controllers > 0 && self.algorithm != Algorithm::QLearning {
            return bad("q_every_action", "applies to `algorithm = \"q_learning\"` only");
        }
        Ok(())
    }
}
