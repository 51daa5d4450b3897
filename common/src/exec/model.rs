use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use crate::graph::{Graph, LayerSpec, NodeKind};
use crate::optim::FlatParams;
use crate::{rng, Result};

/// One built layer.
#[derive(Debug)]
enum Layer {
    /// The stride and padding are kept here too: tch keeps its conv config private.
    Conv {
        conv: nn::Conv2D,
        stride: i64,
        padding: i64,
    },
    Linear(nn::Linear),
    /// `in_place`: overwrite the input, which only the layer before it in the same node produced and
    /// whose backward does not read its output (see [`NodeModule::new`]).
    Relu {
        in_place: bool,
    },
    MaxPool {
        kernel: i64,
        stride: i64,
    },
    AvgPool {
        kernel: i64,
        stride: i64,
    },
    GlobalAvgPool,
    Flatten,
    Dropout(f64),
    GroupNorm(nn::GroupNorm),
    Softmax,
    Place {
        index: Tensor,
        size: i64,
        fill: f64,
    },
}

impl Layer {
    /// `dropout_seed`: training mode, with the seed of this layer's dropout masks.
    fn forward(&self, x: &Tensor, dropout_seed: Option<u64>) -> Tensor {
        match self {
            Layer::Conv { conv, stride, padding } if x.device() == Device::Cpu => {
                conv_channels_last(conv, *stride, *padding, x)
            }
            Layer::Conv { conv, .. } => conv.forward(x),
            Layer::Linear(m) => m.forward(x),
            Layer::Relu { in_place: false } => x.relu(),
            Layer::Relu { in_place: true } => x.shallow_clone().relu_(),
            Layer::MaxPool { kernel, stride } => {
                x.max_pool2d([*kernel, *kernel], [*stride, *stride], [0, 0], [1, 1], false)
            }
            Layer::AvgPool { kernel, stride } => {
                x.avg_pool2d([*kernel, *kernel], [*stride, *stride], [0, 0], false, true, None::<i64>)
            }
            Layer::GlobalAvgPool => x.mean_dim([2i64, 3].as_slice(), false, Kind::Float),
            Layer::Flatten => x.flatten(1, -1),
            Layer::Dropout(p) => match dropout_seed {
                // libtorch draws dropout masks from its process-global generator. Reseeding it from
                // (run seed, step, node, layer) makes every mask a function of the step, so a resumed
                // run draws the same masks without saving generator state; the lock keeps another
                // thread from drawing in between.
                Some(seed) => {
                    let _exclusive = GLOBAL_GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
                    tch::manual_seed((seed >> 1) as i64);
                    x.dropout(*p, true)
                }
                None => x.shallow_clone(),
            },
            Layer::GroupNorm(m) => m.forward(x),
            Layer::Softmax => x.softmax(1, Kind::Float),
            Layer::Place { index, size, fill } => {
                let out = Tensor::full([x.size()[0], *size], *fill, (x.kind(), x.device()));
                out.index_copy(1, index, x)
            }
        }
    }
}

/// A convolution on the CPU in channels-last (NHWC) memory order. libtorch's oneDNN convolutions take
/// NHWC without reordering their input and output on every call, and the ReLUs and max-pools after
/// them run vectorised over channels (docs/RESULTS.md, issue 19). Values equal the NCHW path's up to
/// float rounding; `flatten` still reads in NCHW order (it copies). The weights stay NCHW parameters
/// and are passed as they are: an NHWC input alone makes libtorch run the convolution channels-last
/// (it reorders the weight inside the op), so no weight copy and no backward of one is in the graph.
fn conv_channels_last(conv: &nn::Conv2D, stride: i64, padding: i64, x: &Tensor) -> Tensor {
    if x.dim() != 4 {
        return conv.forward(x);
    }
    let x = if is_channels_last(x) { x.shallow_clone() } else { nhwc(x) };
    x.conv2d(&conv.ws, conv.bs.as_ref(), [stride, stride], [padding, padding], [1, 1], 1)
}

/// `t` (4-d) copied into NHWC order, with the strides `Tensor.to(memory_format=torch.channels_last)` gives.
/// A permuted copy permuted back has them, and its backward is two views (no copy); but a one-channel
/// tensor's permuted copy is the tensor itself with NCHW strides, so libtorch would choose NCHW for the
/// first convolution and every layer after it (its max-pool alone took 16 % of the time). A one-channel
/// tensor's NHWC and NCHW layouts are the same memory: those strides are set on a view.
fn nhwc(t: &Tensor) -> Tensor {
    let size = t.size();
    let (c, h, w) = (size[1], size[2], size[3]);
    if c == 1 {
        return t.contiguous().as_strided(size.as_slice(), [h * w, 1, w, 1], None::<i64>);
    }
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Rows `index` (dim 0) of `t`, in `t`'s memory order: an NHWC tensor's rows stay NHWC (libtorch's
/// `index_select` returns NCHW, which costs a reorder before the next convolution and one more in
/// the backward), gathered as rows of its [N, H, W, C] view.
pub(crate) fn select_rows(t: &Tensor, index: &Tensor) -> Tensor {
    in_row_order(t, |rows| rows.index_select(0, index))
}

/// As [`select_rows`], where `index` may also be `t`'s row count: a row filled with `default` there.
/// Each of `t`'s rows is picked at most once in a merge, so its gradient is the one value it would
/// get from a gather of only the rows found, bit for bit.
pub(crate) fn select_rows_or(t: &Tensor, index: &Tensor, default: f64) -> Tensor {
    in_row_order(t, |rows| {
        Tensor::cat(&[rows.shallow_clone(), rows.narrow(0, 0, 1).full_like(default)], 0).index_select(0, index)
    })
}

/// `f` applied to `t` seen with its rows in memory order (an NHWC tensor as its [N, H, W, C] view, a
/// permutation and no copy), its result seen as `t` is.
fn in_row_order(t: &Tensor, f: impl FnOnce(&Tensor) -> Tensor) -> Tensor {
    if t.dim() == 4 && is_channels_last(t) {
        return f(&t.permute([0, 2, 3, 1])).permute([0, 3, 1, 2]);
    }
    f(t)
}

/// Whether a 4-d tensor's strides are NHWC's (PyTorch's `is_contiguous(channels_last)`).
pub(crate) fn is_channels_last(x: &Tensor) -> bool {
    let (size, stride) = (x.size(), x.stride());
    let (c, h, w) = (size[1], size[2], size[3]);
    stride[1] == 1 && stride[3] == c && stride[2] == c * w && stride[0] == c * w * h
}

/// The modules of one node.
#[derive(Debug)]
pub struct NodeModule {
    layers: Vec<Layer>,
    /// Each layer's index in the config (the layers are rearranged, see [`NodeModule::new`]).
    #[cfg(test)]
    pub(crate) origin: Vec<usize>,
}

impl NodeModule {
    /// The node's layers, rearranged to compute the same values and gradients with less memory
    /// traffic (a ReLU is a pass over its whole input, and the high_low step spent 8 % of its time
    /// in them):
    /// - a ReLU before a max-pool runs after it, on a quarter of the elements: the ReLU is monotone,
    ///   so `max(relu(a), relu(b)) = relu(max(a, b))`, and the gradient reaches the same element (a
    ///   window whose maximum is ≤ 0 passes no gradient either way);
    /// - a ReLU whose input is the previous layer's fresh output, which that layer's backward does
    ///   not read (a convolution, linear layer or pool), overwrites it instead of allocating.
    fn new(layers: Vec<Layer>) -> NodeModule {
        // Each layer with its index in the config.
        let mut layers: Vec<(usize, Layer)> = layers.into_iter().enumerate().collect();
        for i in 1..layers.len() {
            if matches!(layers[i - 1].1, Layer::Relu { .. }) && matches!(layers[i].1, Layer::MaxPool { .. }) {
                layers.swap(i - 1, i);
            }
        }
        for i in 1..layers.len() {
            let fresh = matches!(
                layers[i - 1].1,
                Layer::Conv { .. } | Layer::Linear(_) | Layer::MaxPool { .. } | Layer::AvgPool { .. }
            );
            if let Layer::Relu { in_place } = &mut layers[i].1 {
                *in_place = fresh;
            }
        }
        NodeModule {
            #[cfg(test)]
            origin: layers.iter().map(|(k, _)| *k).collect(),
            layers: layers.into_iter().map(|(_, l)| l).collect(),
        }
    }

    /// `train`: the run seed and step in training mode (they seed dropout), None in inference.
    pub fn forward(&self, x: &Tensor, train: Option<(u64, u64)>, node: usize) -> Tensor {
        self.layers.iter().enumerate().fold(x.shallow_clone(), |h, (i, l)| {
            let dropout_seed = train.map(|(seed, step)| rng::hash_words(&[seed, step, node as u64, i as u64, DROPOUT]));
            l.forward(&h, dropout_seed)
        })
    }
}

#[cfg(test)]
impl NodeModule {
    /// The layers in the config's order, every ReLU on a copy: what [`NodeModule::new`]'s
    /// rearrangement is tested against.
    pub(crate) fn forward_as_written(&self, x: &Tensor) -> Tensor {
        let mut order: Vec<usize> = (0..self.layers.len()).collect();
        order.sort_by_key(|&i| self.origin[i]);
        order.into_iter().fold(x.shallow_clone(), |h, i| match &self.layers[i] {
            Layer::Relu { .. } => h.relu(),
            other => other.forward(&h, None),
        })
    }

    /// Inference with libtorch's own NCHW convolutions: the reference the channels-last path is
    /// tested against.
    pub(crate) fn forward_nchw(&self, x: &Tensor) -> Tensor {
        self.layers.iter().fold(x.shallow_clone(), |h, l| match l {
            Layer::Conv { conv, .. } => conv.forward(&h),
            other => other.forward(&h, None),
        })
    }
}

/// Salt of the dropout seeds.
const DROPOUT: u64 = 0xD50F;

/// Held while libtorch's process-global generator is seeded and drawn from: a model's initial
/// parameters, a dropout mask.
static GLOBAL_GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Seeds libtorch's process-global generator and draws from it (`draw`) while no model is being
/// initialised and no dropout mask drawn on another thread. Every draw from that generator outside
/// a model must go through here: a draw on another thread between a model's seeding and its
/// initialisation would change that model's parameters (tests run on many threads at once).
pub fn seeded_draws<T>(seed: i64, draw: impl FnOnce() -> T) -> T {
    let _exclusive = GLOBAL_GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed);
    draw()
}

/// A D2NN with its parameters: the graph plus one module per node, in a `VarStore` whose variable
/// names are `<node>.<layer index>.<weight|bias>`.
pub struct D2nn {
    pub graph: Graph,
    pub vs: nn::VarStore,
    pub(crate) modules: Vec<NodeModule>,
    /// Stop the controllers' gradients at their inputs, so their loss trains only themselves.
    pub detach_control_inputs: bool,
}

impl std::fmt::Debug for D2nn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("D2nn").field("nodes", &self.graph.nodes.len()).finish()
    }
}

impl D2nn {
    /// Builds the modules with parameters initialised from `seed` (libtorch's default initialisers).
    pub fn new(graph: Graph, device: Device, seed: u64) -> Result<D2nn> {
        // Parameter init draws from libtorch's global generator: seed it so that every replica, and
        // every run with this seed, starts from the same parameters. Models built on several threads
        // at once (runtime replicas, parallel sweep runs, tests) would interleave their draws: one at a time.
        let _one_at_a_time = GLOBAL_GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(seed as i64);
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let mut modules = Vec::with_capacity(graph.nodes.len());
        for node in &graph.nodes {
            let path = &root / node.name.as_str();
            let mut shape = node.in_shape.clone();
            let mut layers = Vec::new();
            if node.kind != NodeKind::Dummy {
                for (i, spec) in node.layers.iter().enumerate() {
                    let p = &path / i;
                    let layer = match spec {
                        LayerSpec::Conv2d { out, kernel, stride, padding } => {
                            let cfg = nn::ConvConfig { stride: *stride, padding: *padding, ..Default::default() };
                            let conv = nn::conv2d(p, shape[0], *out, *kernel, cfg);
                            Layer::Conv { conv, stride: *stride, padding: *padding }
                        }
                        LayerSpec::Linear { out } => Layer::Linear(nn::linear(p, shape[0], *out, Default::default())),
                        LayerSpec::Relu => Layer::Relu { in_place: false },
                        LayerSpec::MaxPool { kernel, stride } => {
                            Layer::MaxPool { kernel: *kernel, stride: stride.unwrap_or(*kernel) }
                        }
                        LayerSpec::AvgPool { kernel, stride } => {
                            Layer::AvgPool { kernel: *kernel, stride: stride.unwrap_or(*kernel) }
                        }
                        LayerSpec::GlobalAvgPool => Layer::GlobalAvgPool,
                        LayerSpec::Flatten => Layer::Flatten,
                        LayerSpec::Dropout { p: prob } => Layer::Dropout(*prob),
                        LayerSpec::GroupNorm { groups } => {
                            Layer::GroupNorm(nn::group_norm(p, *groups, shape[0], Default::default()))
                        }
                        LayerSpec::Softmax => Layer::Softmax,
                        LayerSpec::Place { size, indices, fill } => Layer::Place {
                            index: Tensor::from_slice(indices).to_device(device),
                            size: *size,
                            fill: *fill,
                        },
                    };
                    shape = spec.infer(&shape).map_err(crate::Error::Invalid)?.0;
                    layers.push(layer);
                }
            }
            modules.push(NodeModule::new(layers));
        }
        Ok(D2nn { graph, vs, modules, detach_control_inputs: false })
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Trainable parameters in a canonical order (sorted by name), the order of every flat buffer.
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// Moves the parameters (in [`D2nn::parameters`] order) and their gradients into flat buffers
    /// with `extra` trailing gradient slots (see [`FlatParams::new`]); call once per model, before
    /// building its optimizer. Group 0 holds the regular modules, group 1 the controllers, each one
    /// contiguous range (see [`FlatParams::grouped`]), since the two are clipped apart.
    pub fn flat_parameters(&self, extra: usize) -> Result<FlatParams> {
        let controllers: Vec<&str> = self.graph.controls.iter().map(|&c| self.graph.nodes[c].name.as_str()).collect();
        let (groups, params): (Vec<usize>, Vec<Tensor>) = self
            .parameters()
            .into_iter()
            .map(|(name, p)| (usize::from(controllers.iter().any(|c| belongs_to(&name, c))), p))
            .unzip();
        FlatParams::grouped(&params, &groups, extra)
    }

    /// Number of parameters of one node.
    pub fn node_parameters(&self, node: &str) -> i64 {
        self.vs.variables().iter().filter(|(k, _)| belongs_to(k, node)).map(|(_, t)| t.numel() as i64).sum()
    }

    /// Runs one node's layers alone on `x` (inference mode): benchmarks time nodes in isolation.
    pub fn run_node(&self, node: usize, x: &Tensor) -> Tensor {
        self.modules[node].forward(x, None, node)
    }

    pub(crate) fn module(&self, node: usize) -> &NodeModule {
        &self.modules[node]
    }
}

/// Whether the parameter named `parameter` is one of node `node`'s: a node's parameters are named
/// `<node>.<layer>.<weight|bias>` in the store.
fn belongs_to(parameter: &str, node: &str) -> bool {
    parameter.strip_prefix(node).is_some_and(|rest| rest.starts_with('.'))
}
