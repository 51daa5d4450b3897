//! Size bounds of a graph: no tensor a config asks for (one layer's parameters, one layer's output
//! for one example or for a batch) may exceed [`MAX_TENSOR_BYTES`]. Checked before anything is
//! allocated, so a config value, however large, is an error naming the node and layer, never a
//! failed allocation inside libtorch.
use super::{Graph, Node};
use crate::{Error, Result};

/// The cap on one tensor a config can ask for (one layer's parameters, one layer's output for a
/// batch): 4 GiB of f32. Checked before anything is allocated, so a config value, however large,
/// is an error naming the node and layer, never a failed allocation inside libtorch.
pub const MAX_TENSOR_BYTES: f64 = 4.0 * (1u64 << 30) as f64;

/// Layer `li` of node `n`, taking `input` and giving `output` per example: its parameters and its
/// output for one example within the cap.
pub(super) fn check_layer(n: &Node, li: usize, input: &[i64], output: &[i64]) -> std::result::Result<(), String> {
    check_size(n.layers[li].parameters(input), "its parameters take").map_err(|m| layer_err(n, li, m))?;
    check_size(output.iter().map(|&d| d as f64).product(), "its output for one example takes")
        .map_err(|m| layer_err(n, li, m))
}

fn check_size(values: f64, what: &str) -> std::result::Result<(), String> {
    let bytes = values * 4.0;
    if bytes > MAX_TENSOR_BYTES {
        return Err(format!(
            "{what} {bytes:.3e} bytes ({values:.3e} f32 values), over the {} GiB cap on one tensor",
            MAX_TENSOR_BYTES / (1u64 << 30) as f64
        ));
    }
    Ok(())
}

fn layer_err(n: &Node, li: usize, message: String) -> String {
    format!("layer {li} ({}): {message}", n.layers[li].name())
}

impl Graph {
    /// Refuses a graph whose layers' outputs for a batch of `batch` examples would exceed the cap
    /// on one tensor ([`MAX_TENSOR_BYTES`]); `key` names the config key that set the batch.
    pub fn check_batch(&self, batch: usize, key: &str, file: &str) -> Result<()> {
        for n in &self.nodes {
            let mut shape = n.in_shape.clone();
            for (li, layer) in n.layers.iter().enumerate() {
                // Inference succeeded when the graph was built; a failure here cannot happen.
                let Ok((out, _)) = layer.infer(&shape) else { break };
                let values = out.iter().map(|&d| d as f64).product::<f64>() * batch as f64;
                check_size(values, &format!("its output for a batch of {batch} (`{key}`) takes")).map_err(|m| {
                    Error::Graph { file: file.to_string(), node: n.name.clone(), message: layer_err(n, li, m) }
                })?;
                shape = out;
            }
        }
        Ok(())
    }
}
