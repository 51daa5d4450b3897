use tch::{Device, Kind, Tensor};

use super::*;
use crate::graph::tests::{all_configs, graph_of};

fn model(file: &str) -> D2nn {
    D2nn::new(graph_of(file), Device::Cpu, 3).unwrap()
}

fn input(batch: i64, seed: i64) -> (Tensor, Vec<i64>) {
    let x = seeded_draws(seed, || Tensor::rand([batch, 1, 28, 28], (Kind::Float, Device::Cpu)));
    (x, (0..batch).collect())
}

fn random_actions(m: &D2nn, batch: i64, seed: i64) -> Vec<Tensor> {
    let actions = m.graph.num_actions();
    seeded_draws(seed, || {
        actions.iter().map(|&k| Tensor::randint(k as i64, [batch], (Kind::Int64, Device::Cpu))).collect()
    })
}

fn grads(m: &D2nn) -> Vec<(String, Tensor)> {
    m.parameters()
        .into_iter()
        .map(|(name, p)| {
            let g = p.grad();
            let g = if g.defined() { g.copy() } else { p.zeros_like() };
            (name, g)
        })
        .collect()
}

fn zero_grads(m: &D2nn) {
    for (_, p) in m.parameters() {
        let mut g = p.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
}

#[test]
fn selective_equals_masked_outputs_and_gradients_on_every_config() {
    for file in all_configs() {
        assert_selective_equals_masked(&model(&file), &file);
    }
}

/// Rows the host cannot know are read back, and two such sets of rows are never taken for each
/// other: `b` and `c` each need branches of two controllers (the host reads both sets), `g2` runs
/// where `b` ran, and `d`, enabled by `g2`, also needs `c`, so it runs on fewer rows than `g2`
/// chose it for.
#[test]
fn rows_read_back_are_told_apart() {
    let linear = |name: &str, inputs: &str, out: i64| {
        format!("[[nodes]]\nname = \"{name}\"\ninputs = [{inputs}]\nlayers = [{{ type = \"linear\", out = {out} }}]\n")
    };
    let control = |name: &str, input: &str, actions: &str| {
        format!(
            "[[nodes]]\nname = \"{name}\"\nkind = \"control\"\ninputs = [\"{input}\"]\n\
             layers = [{{ type = \"linear\", out = 2 }}]\nactions = {actions}\n"
        )
    };
    let spec = [
        "output = \"out\"\n[[nodes]]\nname = \"stem\"\ninputs = [\"input\"]\n\
         layers = [{ type = \"flatten\" }, { type = \"linear\", out = 8 }]\n"
            .to_string(),
        control("g1", "stem", r#"[["a1"], ["a2"]]"#),
        control("g0", "stem", r#"[["x1"], ["x2"]]"#),
        linear("a1", r#""stem""#, 8),
        linear("a2", r#""stem""#, 10),
        linear("x1", r#""stem""#, 8),
        linear("x2", r#""stem""#, 8),
        linear("b", r#""a1", "x1""#, 8) + "merge = \"sum\"\n",
        linear("c", r#""a1", "x2""#, 8) + "merge = \"sum\"\n",
        control("g2", "b", r#"[["d"], ["e"]]"#),
        linear("d", r#""c""#, 10),
        linear("e", r#""b""#, 10),
        "[[nodes]]\nname = \"out\"\nkind = \"output\"\nmerge = \"sum\"\ninputs = [\"d\", \"e\", \"a2\"]\n\
         defaults = { d = 0.0, e = 0.0, a2 = 0.0 }\n"
            .to_string(),
    ]
    .concat();
    let spec: crate::graph::GraphSpec = toml::from_str(&spec).unwrap();
    let graph = crate::graph::Graph::build(&spec, &[1, 28, 28], 10, "t.toml").unwrap();
    assert_selective_equals_masked(&D2nn::new(graph, Device::Cpu, 3).unwrap(), "t.toml");
}

/// The selective forward under random forced actions against the masked one (every node on every
/// example): the same outputs, executed sets and gradients.
fn assert_selective_equals_masked(m: &D2nn, file: &str) {
    let batch = 12;
    let (x, ids) = input(batch, 1);
    let actions = random_actions(m, batch, 2);
    let shape = [batch, m.graph.nodes[m.graph.output].out_shape[0]];
    let weights = seeded_draws(3, || Tensor::randn(shape, (Kind::Float, Device::Cpu)));

    let fwd = m
        .forward(
            &x,
            &ids,
            &Policy::Forced(actions.iter().map(|a| a.shallow_clone()).collect()),
            DecisionKey::default(),
            false,
        )
        .unwrap();
    (&fwd.output * &weights).sum(Kind::Float).backward();
    let selective = grads(m);
    zero_grads(m);

    let (masked_out, masks) = m.forward_masked(&x, &actions, false).unwrap();
    (&masked_out * &weights).sum(Kind::Float).backward();
    let masked = grads(m);
    zero_grads(m);

    assert!(fwd.output.allclose(&masked_out, 1e-5, 1e-5, false), "{file}: outputs differ");
    for (i, mask) in masks.iter().enumerate() {
        assert!(fwd.executed[i].equal(mask), "{file}: execution of node {} differs", m.graph.nodes[i].name);
    }
    for ((name, a), (_, b)) in selective.iter().zip(&masked) {
        assert!(
            a.allclose(b, 1e-4, 1e-5, false),
            "{file}: gradient of {name} differs (max diff {})",
            (a - b).abs().max().double_value(&[])
        );
    }
}

#[test]
fn executed_cost_follows_forced_routes() {
    let m = model("high_low.toml");
    let g = &m.graph;
    let flops = |n: &str| g.nodes[g.index_of(n).unwrap()].flops;
    let (x, ids) = input(4, 5);
    let route = Tensor::from_slice(&[0i64, 1, 1, 0]);
    let fwd = m.forward(&x, &ids, &Policy::Forced(vec![route]), DecisionKey::default(), false).unwrap();
    let cost = Vec::<f64>::try_from(&fwd.cost).unwrap();
    let low = flops("stem") + flops("router") + flops("low");
    let high = flops("stem") + flops("router") + flops("high");
    assert_eq!(cost, vec![low, high, high, low]);
    let fraction = Vec::<f32>::try_from(fwd.cost_fraction(g.full_flops)).unwrap();
    assert!(fraction.iter().all(|&f| f > 0.0 && f < 1.0));
    assert!((fraction[0] as f64 - low / g.full_flops).abs() < 1e-6);
}

#[test]
fn skipped_module_gets_no_gradient_from_examples_that_skipped_it() {
    let m = model("high_low.toml");
    let (x, ids) = input(6, 7);
    // Only example 2 takes `high`.
    let route = Tensor::from_slice(&[0i64, 0, 1, 0, 0, 0]);
    let fwd = m.forward(&x, &ids, &Policy::Forced(vec![route]), DecisionKey::default(), true).unwrap();
    fwd.output.sum(Kind::Float).backward();
    let full = grads(&m);
    zero_grads(&m);
    // The same loss on example 2 alone gives `high` the same gradient: the others contributed nothing.
    let one = x.narrow(0, 2, 1);
    let fwd = m
        .forward(&one, &[2], &Policy::Forced(vec![Tensor::from_slice(&[1i64])]), DecisionKey::default(), true)
        .unwrap();
    fwd.output.sum(Kind::Float).backward();
    let alone = grads(&m);
    zero_grads(&m);
    let mut checked = 0;
    for ((name, a), (_, b)) in full.iter().zip(&alone) {
        if name.starts_with("high.") {
            assert!(a.abs().sum(Kind::Float).double_value(&[]) > 0.0, "{name} got no gradient at all");
            assert!(a.allclose(b, 1e-5, 1e-6, false), "{name}: gradient includes skipped examples");
            checked += 1;
        }
    }
    assert_eq!(checked, 8);
    // With everything routed low, `high` gets no gradient.
    let fwd = m
        .forward(
            &x,
            &ids,
            &Policy::Forced(vec![Tensor::zeros([6], (Kind::Int64, Device::Cpu))]),
            DecisionKey::default(),
            true,
        )
        .unwrap();
    fwd.output.sum(Kind::Float).backward();
    for (name, g) in grads(&m) {
        if name.starts_with("high.") {
            assert_eq!(g.abs().sum(Kind::Float).double_value(&[]), 0.0, "{name}");
        }
    }
}

#[test]
fn decisions_are_a_pure_function_of_seed_step_and_example() {
    let m = model("chain.toml");
    let (x, ids) = input(64, 9);
    let key = DecisionKey { seed: 11, step: 3 };
    let a = m.forward(&x, &ids, &Policy::EpsilonGreedy(1.0), key, false).unwrap();
    let b = m.forward(&x, &ids, &Policy::EpsilonGreedy(1.0), key, false).unwrap();
    assert!(a.decisions[0].actions.equal(&b.decisions[0].actions));
    // Fully random exploration uses every action of a 3-way controller on 64 examples.
    let counts = a.decisions[0].actions.bincount(None::<Tensor>, 3);
    assert!(Vec::<i64>::try_from(&counts).unwrap().iter().all(|&c| c > 5), "{counts:?}");
    let c = m.forward(&x, &ids, &Policy::EpsilonGreedy(1.0), DecisionKey { seed: 11, step: 4 }, false).unwrap();
    assert!(!a.decisions[0].actions.equal(&c.decisions[0].actions));
    // The same example decides the same way whether it is in a big batch or alone.
    let single = m.forward(&x.narrow(0, 5, 1), &[5], &Policy::EpsilonGreedy(1.0), key, false).unwrap();
    assert_eq!(single.decisions[0].actions.int64_value(&[0]), a.decisions[0].actions.int64_value(&[5]));
    // ε = 0 is argmax.
    let greedy = m.forward(&x, &ids, &Policy::EpsilonGreedy(0.0), key, false).unwrap();
    let argmax = m.forward(&x, &ids, &Policy::Argmax, key, false).unwrap();
    assert!(greedy.decisions[0].actions.equal(&argmax.decisions[0].actions));
}

#[test]
fn random_policy_routes_at_the_given_rates() {
    let m = model("high_low.toml");
    let (x, ids) = input(400, 13);
    let fwd =
        m.forward(&x, &ids, &Policy::Random(vec![vec![0.25, 0.75]]), DecisionKey { seed: 1, step: 0 }, false).unwrap();
    let high = fwd.decisions[0].actions.to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
    assert!((high - 0.75).abs() < 0.07, "high rate {high}");
}

#[test]
fn cascade_exits_skip_later_stages() {
    let m = model("cascade.toml");
    let g = &m.graph;
    let (x, ids) = input(3, 17);
    // Example 0 exits after stage 1, example 1 after stage 2, example 2 runs everything.
    let gate1 = Tensor::from_slice(&[0i64, 1, 1]);
    let gate2 = Tensor::from_slice(&[0i64, 0, 1]);
    let fwd = m.forward(&x, &ids, &Policy::Forced(vec![gate1, gate2]), DecisionKey::default(), false).unwrap();
    let ran = |n: &str| Vec::<bool>::try_from(&fwd.executed[g.index_of(n).unwrap()]).unwrap();
    assert_eq!(ran("stage2"), vec![false, true, true]);
    assert_eq!(ran("stage3"), vec![false, false, true]);
    assert_eq!(ran("gate2"), vec![false, true, true]);
    assert_eq!(ran("exit1"), vec![true, false, false]);
    assert_eq!(fwd.heads.len(), 2);
    let cost = Vec::<f64>::try_from(&fwd.cost).unwrap();
    assert!(cost[0] < cost[1] && cost[1] < cost[2]);
}

/// Dropout masks depend on (seed, step) only, so a resumed run draws the same masks without saving
/// libtorch's generator; another step draws others, and inference does no dropout.
#[test]
fn dropout_masks_are_a_function_of_seed_and_step() {
    let spec: crate::graph::GraphSpec = toml::from_str(
        r#"
output = "out"
[[nodes]]
name = "body"
inputs = ["input"]
layers = [{ type = "flatten" }, { type = "dropout", p = 0.5 }, { type = "linear", out = 10 }]
[[nodes]]
name = "out"
kind = "output"
merge = "sum"
inputs = ["body"]
"#,
    )
    .unwrap();
    let graph = crate::graph::Graph::build(&spec, &[1, 28, 28], 10, "dropout.toml").unwrap();
    let m = D2nn::new(graph, Device::Cpu, 3).unwrap();
    let (x, ids) = input(8, 1);
    let run = |step: u64, train: bool| {
        let key = DecisionKey { seed: 5, step };
        m.forward(&x, &ids, &Policy::Argmax, key, train).unwrap().output
    };
    let first = run(7, true);
    // Whatever else drew from the global generator in between.
    let _ = seeded_draws(12345, || Tensor::rand([100], (Kind::Float, Device::Cpu)));
    assert!(run(7, true).equal(&first), "same seed and step, other masks");
    assert!(!run(8, true).equal(&first), "another step drew the same masks");
    assert!(run(7, false).equal(&run(8, false)), "inference must not drop");
    assert!(!run(7, false).equal(&first));
}

/// Convolutions run in channels-last order on the CPU: the same values as libtorch's NCHW
/// convolution up to float rounding, for every node of every shipped design with a convolution.
#[test]
fn channels_last_convolutions_match_nchw() {
    for file in ["high_low.toml", "chain.toml", "hierarchical_regrouped.toml", "cascade.toml"] {
        let m = model(file);
        let (x, _) = input(8, 5);
        let mut values: Vec<Option<Tensor>> = m.graph.nodes.iter().map(|_| None).collect();
        values[0] = Some(x);
        for &i in &m.graph.order {
            let node = &m.graph.nodes[i];
            if node.kind != crate::graph::NodeKind::Regular || node.inputs.len() != 1 {
                continue;
            }
            let Some(input) = values[node.inputs[0]].as_ref().map(Tensor::shallow_clone) else { continue };
            let inference = tch::no_grad(|| m.run_node(i, &input));
            let nchw = tch::no_grad(|| m.module(i).forward_nchw(&input));
            let scale = nchw.abs().max().double_value(&[]).max(1e-3);
            let diff = (&inference - &nchw).abs().max().double_value(&[]);
            assert!(diff <= 1e-4 * scale, "{file}, node {}: channels-last and NCHW differ by {diff}", node.name);
            // A one-channel input (the first convolution's) must not fall back to NCHW: every layer
            // after it would run in the slow layout.
            if inference.dim() == 4 && node.layers.iter().any(|l| matches!(l, crate::graph::LayerSpec::Conv2d { .. })) {
                assert!(
                    super::model::is_channels_last(&inference),
                    "{file}, node {}: {:?}",
                    node.name,
                    inference.stride()
                );
            }
            values[i] = Some(nchw);
        }
    }
}

/// Training through the channels-last convolutions gives the parameters NCHW's gradients (libtorch
/// reorders the NCHW weights inside the op and returns their gradients), up to float rounding.
#[test]
fn channels_last_gradients_match_nchw() {
    let m = model("high_low.toml");
    let (x, _) = input(8, 6);
    let stem = m.graph.nodes.iter().position(|n| n.name == "stem").unwrap();
    let high = m.graph.nodes.iter().position(|n| n.name == "high").unwrap();
    let mut runs = Vec::new();
    for channels_last in [true, false] {
        zero_grads(&m);
        let forward = |node: usize, h: &Tensor| {
            if channels_last {
                m.module(node).forward(h, Some((0, 0)), node)
            } else {
                m.module(node).forward_nchw(h)
            }
        };
        let out = forward(high, &forward(stem, &x));
        (out.square().sum(Kind::Float)).backward();
        runs.push(grads(&m));
    }
    for ((name, cl), (_, nchw)) in runs[0].iter().zip(&runs[1]) {
        let scale = nchw.abs().max().double_value(&[]).max(1e-6);
        let diff = (cl - nchw).abs().max().double_value(&[]);
        assert!(diff <= 1e-4 * scale, "{name}: gradients differ by {diff} (scale {scale})");
    }
    assert!(runs[1].iter().any(|(_, g)| g.abs().sum(Kind::Float).double_value(&[]) > 0.0));
}

/// The rearranged layers (ReLU after max-pool, in-place ReLUs) give the config's order's values
/// and gradients bit for bit, on every node of every shipped design.
#[test]
fn rearranged_layers_give_the_written_orders_values_and_gradients() {
    let mut swapped = 0;
    for file in all_configs() {
        let m = model(&file);
        let (x, _) = input(6, 7);
        let mut values: Vec<Option<Tensor>> = m.graph.nodes.iter().map(|_| None).collect();
        values[0] = Some(x);
        for &i in &m.graph.order {
            let node = &m.graph.nodes[i];
            if node.kind == crate::graph::NodeKind::Dummy || node.inputs.len() != 1 {
                continue;
            }
            let Some(input) = values[node.inputs[0]].as_ref().map(Tensor::shallow_clone) else { continue };
            let module = m.module(i);
            swapped += module.origin.iter().enumerate().filter(|&(k, &o)| k != o).count();
            let mut runs = Vec::new();
            for written in [false, true] {
                zero_grads(&m);
                let x = input.detach().set_requires_grad(true);
                let out = if written { module.forward_as_written(&x) } else { module.forward(&x, Some((0, 0)), i) };
                let weights = seeded_draws(8, || Tensor::randn(out.size(), (Kind::Float, Device::Cpu)));
                (&out * weights).sum(Kind::Float).backward();
                runs.push((out.detach(), x.grad(), grads(&m)));
            }
            let ((out, dx, g), (out_w, dx_w, g_w)) = (&runs[0], &runs[1]);
            assert!(out.equal(out_w), "{file}, node {}: values differ", node.name);
            assert!(dx.equal(dx_w), "{file}, node {}: input gradients differ", node.name);
            for ((name, a), (_, b)) in g.iter().zip(g_w) {
                assert!(a.equal(b), "{file}, node {}: gradient of {name} differs", node.name);
            }
            values[i] = Some(out_w.shallow_clone());
        }
    }
    assert!(swapped > 0, "no shipped design has a ReLU before a max-pool: the test checks nothing");
}
