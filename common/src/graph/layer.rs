//! Layers: their declaration, shape inference and analytic cost.
//!
//! Cost is counted in FLOPs with a multiply-add counting 2 (conv, linear: 2·MACs, bias folded in);
//! ReLU 1 per element; max/avg pooling k² per output element; global average pooling 1 per input
//! element; group norm 4 per element; flatten, dropout (inference) and place 0.
use serde::{Deserialize, Serialize};

/// Shape of one example's value (batch axis excluded): `[C, H, W]` or `[F]`.
pub type Shape = Vec<i64>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    Conv2d {
        out: i64,
        kernel: i64,
        #[serde(default = "one")]
        stride: i64,
        #[serde(default)]
        padding: i64,
    },
    Linear {
        out: i64,
    },
    Relu,
    MaxPool {
        kernel: i64,
        stride: Option<i64>,
    },
    AvgPool {
        kernel: i64,
        stride: Option<i64>,
    },
    GlobalAvgPool,
    Flatten,
    Dropout {
        p: f64,
    },
    /// Normalizes each example on its own, so a sub-batch gives the same result as the full batch
    /// (batch norm would not, and would need its statistics all-reduced).
    GroupNorm {
        groups: i64,
    },
    /// Softmax over a flat [k] vector: a controller that reads a classifier's logits gets its
    /// confidence as probabilities in [0, 1], whatever scale the logits grow to while it trains.
    Softmax,
    /// Writes a k-vector into positions `indices` of a `size`-vector filled with `fill`
    /// (a hierarchical branch's logits into the full class vector).
    Place {
        size: i64,
        indices: Vec<i64>,
        #[serde(default = "minus_thirty")]
        fill: f64,
    },
}

fn one() -> i64 {
    1
}
fn minus_thirty() -> f64 {
    -30.0
}

fn numel(shape: &[i64]) -> i64 {
    shape.iter().product()
}

/// Saturating: a config's padding or kernel may be any i64; an absurd result is refused by the
/// graph's size check, never an overflow.
fn pooled(size: i64, kernel: i64, stride: i64, padding: i64) -> i64 {
    size.saturating_add(padding.saturating_mul(2)).saturating_sub(kernel) / stride + 1
}

impl LayerSpec {
    pub fn name(&self) -> &'static str {
        match self {
            LayerSpec::Conv2d { .. } => "conv2d",
            LayerSpec::Linear { .. } => "linear",
            LayerSpec::Relu => "relu",
            LayerSpec::MaxPool { .. } => "max_pool",
            LayerSpec::AvgPool { .. } => "avg_pool",
            LayerSpec::GlobalAvgPool => "global_avg_pool",
            LayerSpec::Flatten => "flatten",
            LayerSpec::Dropout { .. } => "dropout",
            LayerSpec::GroupNorm { .. } => "group_norm",
            LayerSpec::Softmax => "softmax",
            LayerSpec::Place { .. } => "place",
        }
    }

    /// Learnable values of this layer on an input of shape `input` (weights and biases), as f64 so
    /// that any size a config can name is counted without overflow.
    pub fn parameters(&self, input: &[i64]) -> f64 {
        let channels = input.first().copied().unwrap_or(0) as f64;
        match self {
            LayerSpec::Conv2d { out, kernel, .. } => *out as f64 * (channels * (*kernel * *kernel) as f64 + 1.0),
            LayerSpec::Linear { out } => *out as f64 * (channels + 1.0),
            LayerSpec::GroupNorm { .. } => 2.0 * channels,
            _ => 0.0,
        }
    }

    /// Output shape and FLOPs per example for an input of shape `input`, or a message saying why the
    /// layer cannot take it.
    pub fn infer(&self, input: &[i64]) -> Result<(Shape, f64), String> {
        let image = |what: &str| -> Result<(i64, i64, i64), String> {
            match input {
                [c, h, w] => Ok((*c, *h, *w)),
                _ => Err(format!("{what} needs a [C, H, W] input, got {input:?}")),
            }
        };
        let positive = |v: i64, what: &str| {
            if v > 0 {
                Ok(())
            } else {
                Err(format!("{what} must be positive, got {v}"))
            }
        };
        match self {
            LayerSpec::Conv2d { out, kernel, stride, padding } => {
                let (c, h, w) = image("conv2d")?;
                positive(*out, "conv2d `out`")?;
                positive(*kernel, "conv2d `kernel`")?;
                positive(*stride, "conv2d `stride`")?;
                let (ho, wo) = (pooled(h, *kernel, *stride, *padding), pooled(w, *kernel, *stride, *padding));
                if ho <= 0 || wo <= 0 {
                    return Err(format!("conv2d kernel {kernel} does not fit the {h}x{w} input"));
                }
                // In f64: a config's sizes are unbounded until the graph's size check.
                let macs = [c, *kernel, *kernel, *out, ho, wo].iter().map(|&v| v as f64).product::<f64>();
                Ok((vec![*out, ho, wo], 2.0 * macs))
            }
            LayerSpec::Linear { out } => {
                positive(*out, "linear `out`")?;
                match input {
                    [f] => Ok((vec![*out], 2.0 * *f as f64 * *out as f64)),
                    _ => Err(format!("linear needs a flat [F] input, got {input:?} (add a flatten layer)")),
                }
            }
            LayerSpec::Relu => Ok((input.to_vec(), numel(input) as f64)),
            LayerSpec::MaxPool { kernel, stride } | LayerSpec::AvgPool { kernel, stride } => {
                let (c, h, w) = image(self.name())?;
                positive(*kernel, "pool `kernel`")?;
                let s = stride.unwrap_or(*kernel);
                positive(s, "pool `stride`")?;
                let (ho, wo) = (pooled(h, *kernel, s, 0), pooled(w, *kernel, s, 0));
                if ho <= 0 || wo <= 0 {
                    return Err(format!("pool kernel {kernel} does not fit the {h}x{w} input"));
                }
                Ok((vec![c, ho, wo], (kernel * kernel * c * ho * wo) as f64))
            }
            LayerSpec::GlobalAvgPool => {
                let (c, _, _) = image("global_avg_pool")?;
                Ok((vec![c], numel(input) as f64))
            }
            LayerSpec::Flatten => Ok((vec![numel(input)], 0.0)),
            LayerSpec::Dropout { p } => {
                if !(0.0..1.0).contains(p) {
                    return Err(format!("dropout `p` must be in [0, 1), got {p}"));
                }
                Ok((input.to_vec(), 0.0))
            }
            LayerSpec::GroupNorm { groups } => {
                let c = *input.first().ok_or("group_norm needs a non-scalar input")?;
                if *groups <= 0 || c % groups != 0 {
                    return Err(format!("group_norm: {c} channels are not divisible into {groups} groups"));
                }
                Ok((input.to_vec(), 4.0 * numel(input) as f64))
            }
            LayerSpec::Softmax => match input {
                // exp, sum and divide per element
                [k] => Ok((vec![*k], 3.0 * *k as f64)),
                _ => Err(format!("softmax needs a flat [k] input, got {input:?}")),
            },
            LayerSpec::Place { size, indices, .. } => {
                let k = match input {
                    [k] => *k,
                    _ => return Err(format!("place needs a flat [k] input, got {input:?}")),
                };
                if indices.len() as i64 != k {
                    return Err(format!("place has {} indices for a {k}-vector", indices.len()));
                }
                if let Some(bad) = indices.iter().find(|&&i| i < 0 || i >= *size) {
                    return Err(format!("place index {bad} is outside 0..{size}"));
                }
                let mut sorted = indices.clone();
                sorted.sort_unstable();
                sorted.dedup();
                if sorted.len() != indices.len() {
                    return Err("place indices repeat".into());
                }
                Ok((vec![*size], 0.0))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_flops_match_hand_count() {
        // 1→16 channels, 3x3, pad 1 on 28x28: 16·28·28 outputs, each 1·3·3 multiply-adds.
        let conv = LayerSpec::Conv2d { out: 16, kernel: 3, stride: 1, padding: 1 };
        let (shape, flops) = conv.infer(&[1, 28, 28]).unwrap();
        assert_eq!(shape, vec![16, 28, 28]);
        assert_eq!(flops, 2.0 * 16.0 * 784.0 * 9.0);
        // Stride 2, pad 1, 16→8 on 14x14: 7x7 outputs.
        let conv = LayerSpec::Conv2d { out: 8, kernel: 3, stride: 2, padding: 1 };
        let (shape, flops) = conv.infer(&[16, 14, 14]).unwrap();
        assert_eq!(shape, vec![8, 7, 7]);
        assert_eq!(flops, 2.0 * (16 * 9 * 8 * 49) as f64);
    }

    #[test]
    fn linear_pool_and_misc_flops() {
        let (s, f) = LayerSpec::Linear { out: 10 }.infer(&[784]).unwrap();
        assert_eq!((s, f), (vec![10], 15_680.0));
        let (s, f) = LayerSpec::MaxPool { kernel: 2, stride: None }.infer(&[16, 28, 28]).unwrap();
        assert_eq!((s, f), (vec![16, 14, 14], (4 * 16 * 196) as f64));
        let (s, f) = LayerSpec::Relu.infer(&[16, 14, 14]).unwrap();
        assert_eq!((s, f), (vec![16, 14, 14], 3136.0));
        let (s, f) = LayerSpec::Flatten.infer(&[16, 14, 14]).unwrap();
        assert_eq!((s, f), (vec![3136], 0.0));
        let (s, f) = LayerSpec::GlobalAvgPool.infer(&[8, 7, 7]).unwrap();
        assert_eq!((s, f), (vec![8], 392.0));
        let (s, f) = LayerSpec::Softmax.infer(&[2]).unwrap();
        assert_eq!((s, f), (vec![2], 6.0));
    }

    #[test]
    fn shape_errors_say_what_is_wrong() {
        let err = LayerSpec::Linear { out: 10 }.infer(&[16, 14, 14]).unwrap_err();
        assert!(err.contains("flatten"), "{err}");
        let err = LayerSpec::Conv2d { out: 4, kernel: 5, stride: 1, padding: 0 }.infer(&[1, 3, 3]).unwrap_err();
        assert!(err.contains("does not fit"), "{err}");
        let err = LayerSpec::GroupNorm { groups: 3 }.infer(&[16, 4, 4]).unwrap_err();
        assert!(err.contains("divisible"), "{err}");
        let err = LayerSpec::Place { size: 10, indices: vec![0, 10], fill: -1.0 }.infer(&[2]).unwrap_err();
        assert!(err.contains("outside"), "{err}");
        let err = LayerSpec::Softmax.infer(&[8, 7, 7]).unwrap_err();
        assert!(err.contains("flat"), "{err}");
    }
}
