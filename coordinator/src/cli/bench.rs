//! `d2nn bench`: the executor's realised speed-up (`exec`), the runtime's scaling (`runtime`), and
//! the all-reduce (`allreduce`, in bench_allreduce.rs). Results are JSON lines.
use std::time::Instant;

use anyhow::Context;
use d2nn_common::exec::{D2nn, DecisionKey, Policy};
use tch::{Kind, Tensor};

use super::commands::{BenchCommand, ConfigArgs};
use super::config::{build_graph, load_config, parse_device};

fn median_seconds(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

pub fn bench(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Exec { config, batch, reps, device } => bench_exec(config, batch, reps, device),
        BenchCommand::Runtime { config, steps, batch, rounds } => bench_runtime(config, steps, batch, rounds),
        BenchCommand::Allreduce(args) => super::bench_allreduce::run(args),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench_runtime(config: std::path::PathBuf, steps: u64, batch: usize, rounds: usize) -> anyhow::Result<()> {
    use d2nn_coordinator::coordinator::{bench_local, bench_local_pair, bench_runtime, BenchResult};
    let cfg = load_config(&ConfigArgs { config: config.clone(), overrides: vec![] })?;
    let file = config.display().to_string();
    let rt = tokio::runtime::Runtime::new()?;
    // Per-step milliseconds of each part of the runtime's step time, averaged over the workers.
    let split_ms = |r: &BenchResult| {
        r.split.map(|s| {
            let per_step = 1000.0 / r.steps.max(1) as f64;
            serde_json::json!({
                "compute": s.compute * per_step, "allreduce": s.allreduce * per_step,
                "wait": s.wait * per_step, "coordination": s.coordination * per_step,
            })
        })
    };
    let (mut ratios, mut overheads, mut ceilings, mut efficiencies) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut lockstep_ceilings, mut lockstep_efficiencies) = (Vec::new(), Vec::new());
    for round in 0..rounds.max(1) {
        let local = bench_local(&cfg, &file, batch, 1, steps)?;
        let pair = bench_local_pair(&cfg, &file, batch, steps, false)?;
        let lockstep = bench_local_pair(&cfg, &file, batch, steps, true)?;
        let one = rt.block_on(bench_runtime(&cfg, &file, 1, batch, 1, steps))?;
        let two = rt.block_on(bench_runtime(&cfg, &file, 2, batch, 1, steps))?;
        let ratio = two.examples_per_sec / one.examples_per_sec;
        let overhead = local.examples_per_sec / one.examples_per_sec - 1.0;
        let ceiling = pair.examples_per_sec / local.examples_per_sec;
        ratios.push(ratio);
        overheads.push(overhead);
        ceilings.push(ceiling);
        efficiencies.push(ratio / ceiling);
        let lockstep_ceiling = lockstep.examples_per_sec / local.examples_per_sec;
        lockstep_ceilings.push(lockstep_ceiling);
        lockstep_efficiencies.push(ratio / lockstep_ceiling);
        println!(
            "{}",
            serde_json::json!({
                "round": round, "steps": steps, "per_worker_batch": batch, "threads_per_worker": 1,
                "local_examples_per_sec": local.examples_per_sec,
                "two_local_loops_side_by_side_examples_per_sec": pair.examples_per_sec,
                "two_local_loops_in_lockstep_examples_per_sec": lockstep.examples_per_sec,
                "runtime_1_worker_examples_per_sec": one.examples_per_sec,
                "runtime_2_workers_examples_per_sec": two.examples_per_sec,
                "two_vs_one_worker": ratio, "runtime_overhead_vs_local": overhead,
                "machine_two_vs_one_ceiling": ceiling, "two_vs_one_over_ceiling": ratio / ceiling,
                "lockstep_two_vs_one_ceiling": lockstep_ceiling,
                "two_vs_one_over_lockstep_ceiling": ratio / lockstep_ceiling,
                "runtime_1_worker_step_ms": split_ms(&one), "runtime_2_workers_step_ms": split_ms(&two),
            })
        );
    }
    println!(
        "{}",
        serde_json::json!({
            "median_two_vs_one_worker": median(ratios), "median_runtime_overhead_vs_local": median(overheads),
            "median_machine_two_vs_one_ceiling": median(ceilings),
            "median_two_vs_one_over_ceiling": median(efficiencies),
            "median_lockstep_two_vs_one_ceiling": median(lockstep_ceilings),
            "median_two_vs_one_over_lockstep_ceiling": median(lockstep_efficiencies),
        })
    );
    Ok(())
}

fn bench_exec(config: std::path::PathBuf, batch: i64, reps: usize, device: String) -> anyhow::Result<()> {
    let device = parse_device(&device)?;
    let _guard = tch::no_grad_guard();
    let args = ConfigArgs { config: config.clone(), overrides: vec![] };
    let (cfg, graph) = build_graph(&args)?;
    let dynamic = D2nn::new(graph, device, cfg.seed)?;
    let static_path = config.with_file_name("static_high.toml");
    let (_, static_graph) = build_graph(&ConfigArgs { config: static_path.clone(), overrides: vec![] })
        .with_context(|| format!("the static baseline {}", static_path.display()))?;
    let static_high = D2nn::new(static_graph, device, cfg.seed)?;
    let g = &dynamic.graph;
    let node = |name: &str| g.index_of(name).with_context(|| format!("{} has no node `{name}`", config.display()));
    let (stem, router, low, high) = (node("stem")?, node("router")?, node("low")?, node("high")?);

    tch::manual_seed(0);
    let x = Tensor::rand([batch, 1, 28, 28], (Kind::Float, device));
    let ids: Vec<i64> = (0..batch).collect();
    let static_flops = static_high.graph.full_flops;
    for fraction in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let n_high = (fraction * batch as f64).round() as i64;
        // High-routed examples at random positions, as a controller would scatter them.
        let perm = Tensor::randperm(batch, (Kind::Int64, device));
        let route = Tensor::zeros([batch], (Kind::Int64, device)).index_fill(0, &perm.narrow(0, 0, n_high), 1);
        let policy = Policy::Forced(vec![route.shallow_clone()]);
        let fwd = dynamic.forward(&x, &ids, &policy, DecisionKey::default(), false)?;
        let dynamic_flops = fwd.cost.mean(Kind::Double).double_value(&[]);
        // Static and dynamic timed alternately, so drift on a shared machine hits both alike.
        let (mut static_times, mut dynamic_times) = (Vec::new(), Vec::new());
        for _ in 0..reps.max(1) {
            static_times.push(median_seconds(1, || {
                let _ = static_high.forward(&x, &ids, &Policy::Argmax, DecisionKey::default(), false);
            }));
            dynamic_times.push(median_seconds(1, || {
                let _ = dynamic.forward(&x, &ids, &policy, DecisionKey::default(), false);
            }));
        }
        let (static_time, dynamic_time) = (median(static_times), median(dynamic_times));
        // The bound: each node run alone on exactly its own sub-batch, nothing else.
        let stem_out = dynamic.run_node(stem, &x);
        let high_rows = route.eq(1).nonzero().squeeze_dim(1);
        let low_rows = route.eq(0).nonzero().squeeze_dim(1);
        let high_in = stem_out.index_select(0, &high_rows);
        let low_in = stem_out.index_select(0, &low_rows);
        let mut bound = median_seconds(reps, || {
            let _ = dynamic.run_node(stem, &x);
        });
        bound += median_seconds(reps, || {
            let _ = dynamic.run_node(router, &stem_out);
        });
        if n_high > 0 {
            bound += median_seconds(reps, || {
                let _ = dynamic.run_node(high, &high_in);
            });
        }
        if n_high < batch {
            bound += median_seconds(reps, || {
                let _ = dynamic.run_node(low, &low_in);
            });
        }
        let line = serde_json::json!({
            "high_fraction": fraction,
            "batch": batch,
            "flop_speedup": static_flops / dynamic_flops,
            "realized_speedup": static_time / dynamic_time,
            "bound_speedup": static_time / bound,
            "realized_over_bound": bound / dynamic_time,
            "static_ms": static_time * 1e3,
            "dynamic_ms": dynamic_time * 1e3,
            "bound_ms": bound * 1e3,
            "threads": tch::get_num_threads(),
            "device": format!("{device:?}"),
        });
        println!("{line}");
    }
    Ok(())
}
