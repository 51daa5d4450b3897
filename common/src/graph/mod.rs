//! A D2NN graph: declared in TOML (`spec`), checked and shape-inferred before any tensor exists
//! (`validate`), with analytic per-node cost (`layer`).
pub mod layer;
mod size;
pub mod spec;
mod validate;

pub use layer::{LayerSpec, Shape};
pub use size::MAX_TENSOR_BYTES;
pub use spec::{GraphSpec, HeadSpec, Merge, NodeKind, NodeSpec, Target, INPUT};

/// One node of a validated graph. Indices refer to `Graph::nodes`; node 0 is the input.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub kind: NodeKind,
    pub inputs: Vec<usize>,
    /// Per input: the edge's default value, if declared.
    pub defaults: Vec<Option<f64>>,
    pub merge: Merge,
    pub layers: Vec<LayerSpec>,
    /// Shape after merging the inputs (what the first layer sees).
    pub in_shape: Shape,
    pub out_shape: Shape,
    /// FLOPs per example of each layer, and their sum.
    pub layer_flops: Vec<f64>,
    pub flops: f64,
    /// Control edges into this node: (control node, action) pairs, any of which enables it.
    pub enabled_by: Vec<(usize, usize)>,
    /// Control nodes only: the nodes each action enables.
    pub actions: Vec<Vec<usize>>,
    pub value: Vec<f64>,
    pub head: Option<HeadSpec>,
}

impl Node {
    pub fn is_control(&self) -> bool {
        self.kind == NodeKind::Control
    }
}

/// A checked D2NN graph with inferred shapes and costs.
#[derive(Debug, Clone)]
pub struct Graph {
    pub nodes: Vec<Node>,
    /// Every node but the input, in an order where each node comes after its data and control parents.
    pub order: Vec<usize>,
    pub output: usize,
    /// The control nodes, in `order`; a controller's position here is its decision index.
    pub controls: Vec<usize>,
    /// FLOPs per example with every node executed (dummies cost nothing): the cost normaliser.
    pub full_flops: f64,
    pub spec: GraphSpec,
}

impl Graph {
    /// Checks `spec` for a network whose input has shape `input_shape` and whose output has
    /// `num_classes` logits. Errors name the node and `file`.
    pub fn build(spec: &GraphSpec, input_shape: &[i64], num_classes: i64, file: &str) -> crate::Result<Graph> {
        validate::build(spec, input_shape, num_classes, file)
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Decision index of a control node.
    pub fn control_index(&self, node: usize) -> Option<usize> {
        self.controls.iter().position(|&c| c == node)
    }

    pub fn num_actions(&self) -> Vec<usize> {
        self.controls.iter().map(|&c| self.nodes[c].actions.len()).collect()
    }

    /// A human-readable table: node, kind, inputs, output shape, MFLOPs per example.
    pub fn describe(&self, params: &dyn Fn(&str) -> i64) -> String {
        let mut out = format!(
            "{:<14} {:<8} {:<22} {:<14} {:>10} {:>9}  {}\n",
            "node", "kind", "inputs", "shape", "params", "MFLOPs", "layers / actions"
        );
        for &i in &self.order {
            let n = &self.nodes[i];
            let inputs: Vec<&str> = n.inputs.iter().map(|&p| self.nodes[p].name.as_str()).collect();
            let detail = if n.is_control() {
                let acts: Vec<String> = n
                    .actions
                    .iter()
                    .enumerate()
                    .map(|(a, t)| {
                        let names: Vec<&str> = t.iter().map(|&x| self.nodes[x].name.as_str()).collect();
                        format!("{a}→{}", names.join("+"))
                    })
                    .collect();
                acts.join(" ")
            } else {
                let layers: Vec<&str> = n.layers.iter().map(|l| l.name()).collect();
                layers.join(",")
            };
            out.push_str(&format!(
                "{:<14} {:<8} {:<22} {:<14} {:>10} {:>9.3}  {}\n",
                n.name,
                format!("{:?}", n.kind).to_lowercase(),
                inputs.join(","),
                format!("{:?}", n.out_shape),
                params(&n.name),
                n.flops / 1e6,
                detail
            ));
        }
        out.push_str(&format!("full-execution cost: {:.3} MFLOPs per example\n", self.full_flops / 1e6));
        out
    }
}

#[cfg(test)]
pub(crate) mod tests;
