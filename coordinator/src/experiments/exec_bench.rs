//! `d2nn bench exec`: does selective execution turn saved FLOPs into saved time? For a design with
//! one controller, a batch is routed by force: a fraction to the controller's most expensive action,
//! the rest to its cheapest, at random positions as a trained controller would scatter them. Each
//! case times the dynamic network against a static network (the design's most expensive static
//! baseline), and against a bound: every node run alone on exactly its own rows, nothing else.
use super::median;
use std::time::Instant;

use d2nn_common::exec::{seeded_draws, D2nn, DecisionKey, Policy};
use d2nn_common::graph::{Graph, NodeKind};
use d2nn_common::host;
use tch::{Device, Kind, Tensor};

/// One routing fraction's measurement (times are medians, in seconds).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExecCase {
    pub expensive_fraction: f64,
    pub batch: i64,
    pub flop_speedup: f64,
    pub realized_speedup: f64,
    pub bound_speedup: f64,
    pub realized_over_bound: f64,
    pub static_ms: f64,
    pub dynamic_ms: f64,
    pub bound_ms: f64,
}

/// The design as the benchmark needs it: its one controller and the cheapest and most expensive
/// actions (by the FLOPs of the nodes they enable).
#[derive(Debug, Clone, PartialEq)]
pub struct Design {
    pub controller: usize,
    pub cheap: i64,
    pub expensive: i64,
}

impl Design {
    /// Refuses a graph the benchmark cannot route by one decision or time node by node.
    pub fn of(graph: &Graph, file: &str) -> Result<Design, String> {
        let [controller] = graph.controls[..] else {
            return Err(format!(
                "{file}: `bench exec` routes by one controller; this graph has {}",
                graph.controls.len()
            ));
        };
        if let Some(n) = graph.nodes.iter().find(|n| n.kind != NodeKind::Output && n.inputs.len() > 1) {
            return Err(format!(
                "{file}: node `{}` merges {} inputs; the bound times one-input nodes",
                n.name,
                n.inputs.len()
            ));
        }
        let cost = |a: &Vec<usize>| a.iter().map(|&n| graph.nodes[n].flops).sum::<f64>();
        let actions = &graph.nodes[controller].actions;
        let by_cost = |pick: fn(f64, f64) -> bool| {
            (0..actions.len()).reduce(|best, a| if pick(cost(&actions[a]), cost(&actions[best])) { a } else { best })
        };
        match (by_cost(|a, b| a < b), by_cost(|a, b| a > b)) {
            (Some(cheap), Some(expensive)) if cheap != expensive => {
                Ok(Design { controller, cheap: cheap as i64, expensive: expensive as i64 })
            }
            _ => Err(format!("{file}: the controller's actions all cost the same; nothing to measure")),
        }
    }
}

fn seconds(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

/// What each node (the output's merge aside) runs on under one routing: its own rows of its
/// input. A node runs where its input ran and, if the controller gates it, where the route enables it.
fn node_inputs(model: &D2nn, design: &Design, x: &Tensor, route: &Tensor) -> Vec<(usize, Tensor)> {
    let g = &model.graph;
    // Per node: its output on the full batch (what its consumers select rows from) and a mask of
    // the rows it runs on.
    let mut outputs: Vec<Option<Tensor>> = (0..g.nodes.len()).map(|_| None).collect();
    let mut masks: Vec<Option<Tensor>> = (0..g.nodes.len()).map(|_| None).collect();
    outputs[0] = Some(x.shallow_clone());
    masks[0] = Some(Tensor::ones([x.size()[0]], (Kind::Bool, x.device())));
    let mut inputs = Vec::new();
    for &n in &g.order {
        let node = &g.nodes[n];
        if n == 0 || node.kind == NodeKind::Output {
            continue;
        }
        let (Some(input), Some(input_mask)) = (&outputs[node.inputs[0]], &masks[node.inputs[0]]) else { continue };
        let mut mine = input_mask.shallow_clone();
        if !node.enabled_by.is_empty() {
            let enabled = node
                .enabled_by
                .iter()
                .filter(|&&(c, _)| c == design.controller)
                .map(|&(_, a)| route.eq(a as i64))
                .reduce(|a, b| a.logical_or(&b));
            let Some(enabled) = enabled else { continue };
            mine = mine.logical_and(&enabled);
        }
        inputs.push((n, input.index_select(0, &mine.nonzero().squeeze_dim(1))));
        outputs[n] = Some(model.run_node(n, input));
        masks[n] = Some(mine);
    }
    inputs
}

/// The bound of one routing: each node run alone on exactly its own rows, nothing else.
fn bound_seconds(model: &D2nn, design: &Design, x: &Tensor, route: &Tensor, reps: usize) -> f64 {
    node_inputs(model, design, x, route)
        .iter()
        .map(|(n, sub)| median((0..reps.max(1)).map(|_| seconds(|| drop(model.run_node(*n, sub)))).collect()))
        .sum()
}

/// Times `dynamic` against `static_net` at forced fractions of the batch on the expensive action.
pub fn bench_exec(
    dynamic: &D2nn,
    static_net: &D2nn,
    design: &Design,
    batch: i64,
    reps: usize,
    device: Device,
) -> d2nn_common::Result<Vec<ExecCase>> {
    let _guard = tch::no_grad_guard();
    let mut shape = vec![batch];
    shape.extend(dynamic.graph.nodes[0].out_shape.iter().copied());
    let x = seeded_draws(0, || Tensor::rand(shape.as_slice(), (Kind::Float, device)));
    let ids: Vec<i64> = (0..batch).collect();
    let static_flops = static_net.graph.full_flops;
    let mut cases = Vec::new();
    for fraction in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let n_expensive = (fraction * batch as f64).round() as i64;
        let perm = seeded_draws((fraction * 4.0) as i64, || Tensor::randperm(batch, (Kind::Int64, device)));
        let route = Tensor::full([batch], design.cheap, (Kind::Int64, device)).index_fill(
            0,
            &perm.narrow(0, 0, n_expensive),
            design.expensive,
        );
        // `Design::of` checked that the graph has exactly this one controller.
        let policy = Policy::Forced(vec![route.shallow_clone()]);
        let routed = dynamic.forward(&x, &ids, &policy, DecisionKey::default(), false)?;
        let dynamic_flops = host::scalar_f64(&routed.cost.f_mean(Kind::Double)?)?;
        // Static and dynamic timed alternately, so drift on a shared machine hits both alike.
        let (mut static_times, mut dynamic_times) = (Vec::new(), Vec::new());
        for _ in 0..reps.max(1) {
            static_times
                .push(seconds(|| drop(static_net.forward(&x, &ids, &Policy::Argmax, DecisionKey::default(), false))));
            dynamic_times.push(seconds(|| drop(dynamic.forward(&x, &ids, &policy, DecisionKey::default(), false))));
        }
        let (static_time, dynamic_time) = (median(static_times), median(dynamic_times));
        let bound = bound_seconds(dynamic, design, &x, &route, reps);
        cases.push(ExecCase {
            expensive_fraction: fraction,
            batch,
            flop_speedup: static_flops / dynamic_flops,
            realized_speedup: static_time / dynamic_time,
            bound_speedup: static_time / bound,
            realized_over_bound: bound / dynamic_time,
            static_ms: static_time * 1e3,
            dynamic_ms: dynamic_time * 1e3,
            bound_ms: bound * 1e3,
        });
    }
    Ok(cases)
}

#[cfg(test)]
mod tests {
    use d2nn_common::config::RunConfig;

    use super::*;

    fn graph(file: &str) -> Graph {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs").join(file);
        let cfg = RunConfig::load(&path, &[], &[]).unwrap();
        Graph::build(&cfg.model, &[1, 28, 28], 10, file).unwrap()
    }

    #[test]
    fn the_design_comes_from_the_config_not_from_node_names() {
        let g = graph("high_low.toml");
        let d = Design::of(&g, "high_low.toml").unwrap();
        assert_eq!(g.nodes[d.controller].name, "router");
        let enabled = |a: i64| {
            g.nodes[d.controller].actions[a as usize].iter().map(|&n| g.nodes[n].name.clone()).collect::<Vec<_>>()
        };
        assert_eq!((enabled(d.cheap), enabled(d.expensive)), (vec!["low".to_string()], vec!["high".to_string()]));
        let err = Design::of(&graph("chain.toml"), "chain.toml").unwrap_err();
        assert!(err.contains("one controller") && err.contains("has 3"), "{err}");
        let err = Design::of(&graph("static_high.toml"), "static_high.toml").unwrap_err();
        assert!(err.contains("has 0"), "{err}");
    }

    #[test]
    fn the_bound_runs_each_node_on_exactly_its_rows() {
        let g = graph("high_low.toml");
        let design = Design::of(&g, "high_low.toml").unwrap();
        let model = D2nn::new(g, Device::Cpu, 0).unwrap();
        let x = seeded_draws(0, || Tensor::rand([8, 1, 28, 28], (Kind::Float, Device::Cpu)));
        // Rows 0, 3 and 5 on the expensive action, the rest on the cheap one.
        let route = Tensor::full([8], design.cheap, (Kind::Int64, Device::Cpu)).index_fill(
            0,
            &Tensor::from_slice(&[0i64, 3, 5]),
            design.expensive,
        );
        let rows: Vec<(String, i64)> = node_inputs(&model, &design, &x, &route)
            .iter()
            .map(|(n, sub)| (model.graph.nodes[*n].name.clone(), sub.size()[0]))
            .collect();
        let want = [("stem", 8), ("router", 8), ("low", 5), ("high", 3)];
        assert_eq!(rows, want.map(|(n, r)| (n.to_string(), r)).to_vec());
    }
}
