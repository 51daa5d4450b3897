//! `d2nn inspect`: a config's graph, node by node, with shapes, parameters and FLOPs.
use d2nn_common::exec::D2nn;

use super::commands::ConfigArgs;
use super::config::build_graph;

pub fn inspect(args: ConfigArgs) -> anyhow::Result<()> {
    let (cfg, graph) = build_graph(&args)?;
    let model = D2nn::new(graph, tch::Device::Cpu, cfg.seed)?;
    println!("{} ({:?}, input {:?})", args.config.display(), cfg.data.task, model.graph.nodes[0].out_shape);
    print!("{}", model.graph.describe(&|n| model.node_parameters(n)));
    let total: i64 = model.parameters().iter().map(|(_, t)| t.numel() as i64).sum();
    println!("parameters: {total}   controllers: {}", model.graph.controls.len());
    Ok(())
}
