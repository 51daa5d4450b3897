//! The declarative form of a D2NN graph, as written in a run config's `[model]` table.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::layer::LayerSpec;

/// Name of the graph's input node; no declared node may use it.
pub const INPUT: &str = "input";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSpec {
    /// The node whose value is the network's prediction (a node of kind `output`).
    pub output: String,
    pub nodes: Vec<NodeSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// A differentiable module (possibly the identity, with no layers).
    #[default]
    Regular,
    /// A sub-network with one score per action; each action enables the nodes it names.
    Control,
    /// No data input, no cost: emits a constant vector when enabled.
    Dummy,
    /// Merges whatever of its inputs is present; the network's prediction.
    Output,
}

/// How a node combines several data inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Merge {
    /// Concatenate along the first (channel or feature) axis; every input must be available.
    #[default]
    Concat,
    /// Element-wise sum; every input must be available (present, or through its edge default).
    Sum,
    /// Exactly one input is present for each example; that one passes through.
    Select,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The task's class label.
    #[default]
    Label,
    /// The coarse group of the label (the hierarchical task).
    Coarse,
}

/// An auxiliary cross-entropy loss on a node's output logits, for the examples it ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadSpec {
    #[serde(default)]
    pub target: Target,
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    #[serde(default)]
    pub kind: NodeKind,
    /// Data inputs: other nodes' names, or `input`.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Default value of the edge from a named input: what it delivers (a constant fill of that input's
    /// shape) when its source did not run. Without one, a missing input makes this node not run.
    #[serde(default)]
    pub defaults: BTreeMap<String, f64>,
    #[serde(default)]
    pub merge: Merge,
    #[serde(default)]
    pub layers: Vec<LayerSpec>,
    /// Control nodes only: action i enables the nodes named in `actions[i]`.
    #[serde(default)]
    pub actions: Vec<Vec<String>>,
    /// Dummy nodes only: the constant output vector.
    #[serde(default)]
    pub value: Vec<f64>,
    #[serde(default)]
    pub head: Option<HeadSpec>,
}
