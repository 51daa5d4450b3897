//! The masked reference: every node runs on the whole batch and its value is multiplied by its
//! execution mask. Slow by design; tests use it to prove that the selective pass gives the same
//! outputs and gradients for the same decisions.
use tch::{Kind, Tensor};

use super::model::D2nn;
use crate::graph::{Merge, NodeKind};
use crate::{Error, Result};

impl D2nn {
    /// Output logits [B, classes] and per-node execution masks, with the decisions given per
    /// controller (`actions[c]`: i64 [B]; entries where the controller does not run are ignored).
    pub fn forward_masked(&self, x: &Tensor, actions: &[Tensor], train: bool) -> Result<(Tensor, Vec<Tensor>)> {
        let graph = &self.graph;
        let batch = x.size()[0];
        let device = x.device();
        let mut values: Vec<Tensor> = (0..graph.nodes.len()).map(|_| x.shallow_clone()).collect();
        let mut masks: Vec<Tensor> =
            (0..graph.nodes.len()).map(|_| Tensor::ones([batch], (Kind::Bool, device))).collect();
        for &i in &graph.order {
            let node = &graph.nodes[i];
            let mut run = Tensor::ones([batch], (Kind::Bool, device));
            if !node.enabled_by.is_empty() {
                let mut active = Tensor::zeros([batch], (Kind::Bool, device));
                for &(c, a) in &node.enabled_by {
                    let ci = graph.control_index(c).ok_or_else(|| Error::Invalid("controller index".into()))?;
                    let taken =
                        actions.get(ci).ok_or_else(|| Error::Invalid(format!("no actions for controller {ci}")))?;
                    active = active.logical_or(&taken.to_device(device).eq(a as i64).logical_and(&masks[c]));
                }
                run = run.logical_and(&active);
            }
            match node.merge {
                Merge::Select => {
                    let any = node
                        .inputs
                        .iter()
                        .fold(Tensor::zeros([batch], (Kind::Bool, device)), |acc, &p| acc.logical_or(&masks[p]));
                    run = run.logical_and(&any);
                }
                _ => {
                    for (k, &p) in node.inputs.iter().enumerate() {
                        if node.defaults[k].is_none() {
                            run = run.logical_and(&masks[p]);
                        }
                    }
                }
            }
            let value = if node.kind == NodeKind::Dummy {
                Tensor::from_slice(&node.value)
                    .to_kind(Kind::Float)
                    .to_device(device)
                    .unsqueeze(0)
                    .expand([batch, node.value.len() as i64], false)
            } else {
                let inputs: Vec<Tensor> = node
                    .inputs
                    .iter()
                    .enumerate()
                    .map(|(k, &p)| {
                        let m = broadcastable(&masks[p], values[p].dim());
                        let default = node.defaults[k].unwrap_or(0.0);
                        &values[p] * &m + (1.0 - m.to_kind(Kind::Float)) * default
                    })
                    .collect();
                let merged = match node.merge {
                    Merge::Concat if inputs.len() > 1 => Tensor::cat(&inputs, 1),
                    _ => inputs.iter().skip(1).fold(inputs[0].shallow_clone(), |acc, t| acc + t),
                };
                self.module(i).forward(&merged, train.then_some((0, 0)), i)
            };
            values[i] = &value * broadcastable(&run, value.dim());
            masks[i] = run;
        }
        Ok((values[graph.output].shallow_clone(), masks))
    }
}

fn broadcastable(mask: &Tensor, dims: usize) -> Tensor {
    let mut shape = vec![mask.size()[0]];
    shape.resize(dims, 1);
    mask.to_kind(Kind::Float).reshape(shape.as_slice())
}
