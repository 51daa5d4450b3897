//! The selective forward pass: each node runs once, on the sub-batch of examples routed to it.
use tch::{Kind, Tensor};

use super::model::{select_rows, select_rows_or, D2nn};
use super::policy::{DecisionKey, Policy};
use super::rows::{self, ActionRows, Known, Plan};
use crate::graph::{Merge, NodeKind, Target};
use crate::{host, Error, Result};

/// One controller's decisions over the examples it ran on.
#[derive(Debug)]
pub struct Decision {
    pub node: usize,
    /// Positions in the batch of the examples it ran on (ascending), i64 [n].
    pub rows: Tensor,
    /// Scores per action with autograd, [n, k].
    pub scores: Tensor,
    /// Chosen action per row, i64 [n].
    pub actions: Tensor,
    /// Chosen action per batch example, −1 where the controller did not run, i64 [B].
    pub chosen: Tensor,
}

/// Logits of a node that carries an auxiliary loss, over the examples it ran on.
#[derive(Debug)]
pub struct HeadOutput {
    pub node: usize,
    pub target: Target,
    pub weight: f64,
    pub rows: Tensor,
    pub logits: Tensor,
}

#[derive(Debug)]
pub struct Forward {
    /// The output node's logits, [B, classes].
    pub output: Tensor,
    /// Per node: bool [B], whether it ran for each example (the input node: all true).
    pub executed: Vec<Tensor>,
    /// Per controller, in decision-index order.
    pub decisions: Vec<Decision>,
    pub heads: Vec<HeadOutput>,
    /// Executed FLOPs per example, f64 [B].
    pub cost: Tensor,
}

impl Forward {
    /// Executed cost over full-execution cost, per example, f32 [B].
    pub fn cost_fraction(&self, full_flops: f64) -> Tensor {
        (&self.cost / full_flops).to_kind(Kind::Float)
    }
}

/// A node's value over the examples it ran on.
struct Value {
    rows: Tensor,
    data: Tensor,
    present: Tensor,
    /// For each batch example, its row in `data`, or −1.
    position: Tensor,
    /// What the host knows of `rows` without reading them.
    known: Known,
}

impl D2nn {
    /// Runs the network on `x` ([B, C, H, W]) for the examples `ids` (their dataset indices, which key
    /// random decisions), each node only on the sub-batch that reaches it.
    pub fn forward(&self, x: &Tensor, ids: &[i64], policy: &Policy, key: DecisionKey, train: bool) -> Result<Forward> {
        let graph = &self.graph;
        let batch = x.size()[0];
        if ids.len() as i64 != batch {
            return Err(Error::Invalid(format!("{} example ids for a batch of {batch}", ids.len())));
        }
        let device = x.device();
        let all = Tensor::ones([batch], (Kind::Bool, device));
        let arange = Tensor::arange(batch, (Kind::Int64, device));
        let mut values: Vec<Option<Value>> = (0..graph.nodes.len()).map(|_| None).collect();
        let mut executed: Vec<Tensor> = (0..graph.nodes.len()).map(|_| all.shallow_clone()).collect();
        values[0] = Some(Value {
            rows: arange.shallow_clone(),
            data: x.shallow_clone(),
            present: all.shallow_clone(),
            position: arange.shallow_clone(),
            known: Known::All,
        });
        let mut splits: Vec<Option<ActionRows>> = (0..graph.nodes.len()).map(|_| None).collect();
        let mut chosen: Vec<Option<Tensor>> = (0..graph.nodes.len()).map(|_| None).collect();
        let mut decisions = Vec::new();
        let mut heads = Vec::new();
        let mut cost = Tensor::zeros([batch], (Kind::Double, device));
        let none = Tensor::zeros([batch], (Kind::Bool, device));

        for &i in &graph.order {
            let node = &graph.nodes[i];
            let mut run = if node.enabled_by.is_empty() {
                all.shallow_clone()
            } else {
                let mut active = none.shallow_clone();
                for &(c, a) in &node.enabled_by {
                    if let Some(ch) = &chosen[c] {
                        active = active.logical_or(&ch.eq(a as i64));
                    }
                }
                active
            };
            let presents: Vec<Tensor> = node
                .inputs
                .iter()
                .map(|&p| values[p].as_ref().map_or_else(|| none.shallow_clone(), |v| v.present.shallow_clone()))
                .collect();
            match node.merge {
                Merge::Select => {
                    let any = presents.iter().fold(none.shallow_clone(), |acc, p| acc.logical_or(p));
                    run = run.logical_and(&any);
                }
                _ => {
                    for (k, p) in presents.iter().enumerate() {
                        if node.defaults[k].is_none() {
                            run = run.logical_and(p);
                        }
                    }
                }
            }
            let (rows, known) = match rows::plan(graph, node, |p| values[p].as_ref().map(|v| v.known)) {
                Plan::All => (arange.shallow_clone(), Known::All),
                Plan::SameAs(p) => {
                    let v = values[p].as_ref().ok_or_else(|| Error::Invalid(format!("{}: no rows", node.name)))?;
                    (v.rows.shallow_clone(), v.known)
                }
                Plan::Took { control, action } => {
                    let rows = match (&mut splits[control], &chosen[control]) {
                        (Some(split), _) => split.rows(action)?,
                        (slot @ None, Some(ch)) => {
                            slot.insert(ActionRows::of(ch, graph.nodes[control].actions.len())?).rows(action)?
                        }
                        (None, None) => Tensor::zeros([0], (Kind::Int64, device)),
                    };
                    (rows, Known::Took { control, action })
                }
                Plan::Empty => (Tensor::zeros([0], (Kind::Int64, device)), Known::Read(i)),
                Plan::Read => (host::rows_where(&run)?, Known::Read(i)),
            };
            let n = rows.size()[0];
            executed[i] = run.shallow_clone();
            if n == 0 {
                continue;
            }
            let data = match node.kind {
                NodeKind::Dummy => Tensor::from_slice(&node.value)
                    .to_kind(Kind::Float)
                    .to_device(device)
                    .unsqueeze(0)
                    .expand([n, node.value.len() as i64], false)
                    .contiguous(),
                _ => {
                    let inputs: Vec<Tensor> = node
                        .inputs
                        .iter()
                        .enumerate()
                        .map(|(k, &p)| {
                            // Without a default, and unless the merge selects, the node runs only
                            // where the input ran.
                            let contained = node.defaults[k].is_none() && node.merge != Merge::Select;
                            gather(
                                values[p].as_ref(),
                                &graph.nodes[p].out_shape,
                                node.defaults[k].unwrap_or(0.0),
                                &rows,
                                contained,
                                device,
                            )
                        })
                        .collect();
                    let merged = match node.merge {
                        Merge::Concat if inputs.len() > 1 => Tensor::cat(&inputs, 1),
                        _ => inputs.iter().skip(1).fold(inputs[0].shallow_clone(), |acc, t| acc + t),
                    };
                    let merged = if node.is_control() && self.detach_control_inputs { merged.detach() } else { merged };
                    self.module(i).forward(&merged, train.then_some((key.seed, key.step)), i)
                }
            };
            cost += run.to_kind(Kind::Double) * node.flops;
            if node.is_control() {
                let control = graph
                    .control_index(i)
                    .ok_or_else(|| Error::Invalid(format!("{} is not a controller", node.name)))?;
                let actions = policy.choose(control, &data, &rows, ids, key)?;
                if let Some(action) = policy.fixed_action(control) {
                    splits[i] = Some(ActionRows::all_took(&rows, action as usize, node.actions.len())?);
                }
                let full = Tensor::full([batch], -1, (Kind::Int64, device)).index_copy(0, &rows, &actions);
                chosen[i] = Some(full.shallow_clone());
                decisions.push(Decision {
                    node: i,
                    rows: rows.shallow_clone(),
                    scores: data.shallow_clone(),
                    actions,
                    chosen: full,
                });
            }
            if let Some(head) = &node.head {
                heads.push(HeadOutput {
                    node: i,
                    target: head.target,
                    weight: head.weight,
                    rows: rows.shallow_clone(),
                    logits: data.shallow_clone(),
                });
            }
            let position = Tensor::full([batch], -1, (Kind::Int64, device)).index_copy(
                0,
                &rows,
                &Tensor::arange(n, (Kind::Int64, device)),
            );
            values[i] = Some(Value { rows, data, present: run, position, known });
        }
        let out = values[graph.output].take().ok_or_else(|| Error::Invalid("the output node did not run".into()))?;
        if out.rows.size()[0] != batch {
            return Err(Error::Invalid("the output node did not run for every example".into()));
        }
        Ok(Forward { output: out.data, executed, decisions, heads, cost })
    }
}

/// The value of an edge for the examples `rows`: the source's rows where it ran, `default` elsewhere.
/// `contained`: every one of `rows` is known to be among the source's. Nothing here reads the
/// device: which rows match is worked out on it.
fn gather(
    source: Option<&Value>,
    shape: &[i64],
    default: f64,
    rows: &Tensor,
    contained: bool,
    device: tch::Device,
) -> Tensor {
    let n = rows.size()[0];
    let Some(v) = source else {
        let mut full = vec![n];
        full.extend_from_slice(shape);
        return Tensor::full(full.as_slice(), default, (Kind::Float, device));
    };
    let sources = v.rows.size()[0];
    if contained || v.known == Known::All {
        // Ascending rows without repeats, all among the source's: as many means the same ones.
        if sources == n {
            return v.data.shallow_clone();
        }
        return select_rows(&v.data, &v.position.index_select(0, rows));
    }
    // Rows the source did not run on take the row of `default` after its own.
    let position = v.position.index_select(0, rows);
    select_rows_or(&v.data, &position.where_scalarother(&position.ge(0), sources), default)
}
