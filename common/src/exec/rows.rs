//! Which examples each node runs on, worked out on the host where the graph allows it. A node that
//! every example reaches, one that runs exactly where a controller took one action, or exactly where
//! another node ran, needs no read of the device's masks: on a GPU each read is a wait. Only the
//! rest read their rows back, and a controller's actions are read once, as counts per action, for
//! all of its branches.
use tch::{Kind, Tensor};

use crate::graph::{Graph, Merge, Node};
use crate::{host, Result};

/// What the host knows of the examples a node ran on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Known {
    /// Every example of the batch.
    All,
    /// Exactly those for which the controller (a node index) took the action.
    Took { control: usize, action: usize },
    /// Only what was read back for the node (or for the node whose rows it shares).
    Read(usize),
}

/// How to find a node's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plan {
    All,
    Took {
        control: usize,
        action: usize,
    },
    /// The rows of another node (an input, or the controller whose every action feeds a select).
    SameAs(usize),
    /// None: an input it needs, or every input of a select, did not run.
    Empty,
    Read,
}

/// The plan for `node`, given what is known of each node that ran (`None`: it did not run). It
/// mirrors how the forward computes the node's mask: the controllers that enable it, then the
/// inputs it needs (all of them; any one for a select).
pub(super) fn plan(graph: &Graph, node: &Node, known: impl Fn(usize) -> Option<Known>) -> Plan {
    if node.merge == Merge::Select {
        return select_plan(graph, node, known);
    }
    let needed: Option<Vec<(usize, Known)>> = node
        .inputs
        .iter()
        .zip(&node.defaults)
        .filter(|(_, default)| default.is_none())
        .map(|(&p, _)| known(p).map(|k| (p, k)))
        .collect();
    let Some(needed) = needed else {
        return Plan::Empty;
    };
    let partial: Vec<(usize, Known)> = needed.into_iter().filter(|(_, k)| *k != Known::All).collect();
    match node.enabled_by.as_slice() {
        [] => match partial.as_slice() {
            [] => Plan::All,
            [(p, _)] => Plan::SameAs(*p),
            [(p, first @ Known::Took { .. }), rest @ ..] if rest.iter().all(|(_, k)| k == first) => Plan::SameAs(*p),
            _ => Plan::Read,
        },
        // An input that ran wherever the controller ran holds every example of each of its actions.
        &[(control, action)]
            if partial.iter().all(|(_, k)| *k == Known::Took { control, action } || Some(*k) == known(control)) =>
        {
            Plan::Took { control, action }
        }
        _ => Plan::Read,
    }
}

/// A select runs wherever one of its inputs ran: everywhere when one of them did. Branches that
/// together take every action of a controller run where the controller ran, which may in turn be
/// one action of another (a cascade's exits), so such sets are folded into their controller until
/// one remains.
fn select_plan(graph: &Graph, node: &Node, known: impl Fn(usize) -> Option<Known>) -> Plan {
    if !node.enabled_by.is_empty() {
        return Plan::Read;
    }
    // The rows of each input that ran, as (what is known, a node that ran on exactly those rows).
    let mut sets: Vec<(Known, usize)> = node.inputs.iter().filter_map(|&p| known(p).map(|k| (k, p))).collect();
    if sets.is_empty() {
        return Plan::Empty;
    }
    if sets.iter().any(|(k, _)| *k == Known::All) {
        return Plan::All;
    }
    loop {
        let folded = sets.iter().find_map(|(k, _)| match *k {
            Known::Took { control, .. } => {
                let actions = graph.nodes[control].actions.len();
                let took = |a: usize| sets.iter().any(|(k, _)| *k == Known::Took { control, action: a });
                (0..actions).all(took).then_some(control)
            }
            _ => None,
        });
        let Some(control) = folded else {
            break;
        };
        let Some(rows) = known(control) else {
            return Plan::Read;
        };
        sets.retain(|(k, _)| !matches!(k, Known::Took { control: c, .. } if *c == control));
        sets.push((rows, control));
    }
    match sets.as_slice() {
        [(Known::All, _)] => Plan::All,
        [(_, p)] => Plan::SameAs(*p),
        _ => Plan::Read,
    }
}

/// A controller's examples grouped by the action they took, each group in batch order.
pub(super) struct ActionRows {
    /// Per action: the batch positions of its examples, ascending.
    by_action: Vec<Tensor>,
}

impl ActionRows {
    /// `chosen`: the action per batch example, −1 where the controller did not run, i64 `[B]`.
    /// One read: the number of examples per action; the rows are sorted on the device (stable, so
    /// ascending within an action).
    pub fn of(chosen: &Tensor, num_actions: usize) -> Result<ActionRows> {
        let k = num_actions as i64;
        let labels = Tensor::f_arange_start(-1, k, (Kind::Int64, chosen.device()))?;
        let per_label = chosen.f_unsqueeze(1)?.f_eq_tensor(&labels)?.f_sum_dim_intlist(0, false, Kind::Int64)?;
        let per_label = host::values::<i64>(&per_label)?;
        let order = chosen.f_argsort_stable(true, 0, false)?;
        // Examples the controller did not run on (action −1) come first.
        let mut start = per_label[0];
        let mut by_action = Vec::with_capacity(num_actions);
        for &n in &per_label[1..] {
            by_action.push(order.f_narrow(0, start, n)?);
            start += n;
        }
        Ok(ActionRows { by_action })
    }

    /// Every one of the controller's `rows` took `action`: nothing to read.
    pub fn all_took(rows: &Tensor, action: usize, num_actions: usize) -> Result<ActionRows> {
        let none = Tensor::f_zeros([0], (Kind::Int64, rows.device()))?;
        let by_action =
            (0..num_actions).map(|a| if a == action { rows.shallow_clone() } else { none.shallow_clone() }).collect();
        Ok(ActionRows { by_action })
    }

    /// The batch positions, ascending, of the examples that took `action`.
    pub fn rows(&self, action: usize) -> Result<Tensor> {
        self.by_action
            .get(action)
            .map(Tensor::shallow_clone)
            .ok_or_else(|| crate::Error::Invalid(format!("no action {action}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_actions_rows_are_its_examples_in_batch_order_from_one_read() {
        let chosen = Tensor::from_slice(&[2i64, -1, 0, 2, 2, -1, 0, 1]);
        let before = host::reads();
        let split = ActionRows::of(&chosen, 4).unwrap();
        let rows: Vec<Vec<i64>> = (0..4).map(|a| host::values::<i64>(&split.rows(a).unwrap()).unwrap()).collect();
        assert_eq!(rows, [vec![2, 6], vec![7], vec![0, 3, 4], vec![]]);
        assert_eq!(host::reads(), before + 1 + 4, "one read for the split, one per check");
    }
}
