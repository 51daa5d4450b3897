//! `d2nn bench`: its subcommands, the executor's realised speed-up (`exec`) and the runtime's scaling
//! (`runtime`) here; the all-reduce (`allreduce`), worker processes against in-process workers
//! (`cluster`) and one replica's training step (`train`) in bench_allreduce.rs, bench_cluster.rs and
//! bench_train.rs. Results are JSON lines.
use d2nn_coordinator::experiments::median;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use d2nn_common::exec::D2nn;
use d2nn_coordinator::experiments::exec_bench::{self, Design};

use super::commands::ConfigArgs;
use super::config::{build_graph, load_config, parse_device};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Selective execution of a one-controller design against its most expensive static baseline
    /// (or --static), with a fraction of the batch forced onto the controller's most expensive
    /// action and the rest onto its cheapest; and against a bound (each node alone on its rows).
    Exec {
        #[arg(long, default_value = "configs/high_low.toml")]
        config: PathBuf,
        /// The static network to compare with (default: the config's `sweep.baselines` entry with
        /// the most FLOPs).
        #[arg(long = "static")]
        static_config: Option<PathBuf>,
        #[arg(long, default_value_t = 256)]
        batch: i64,
        /// Timed repetitions per case (the median is reported).
        #[arg(long, default_value_t = 20)]
        reps: usize,
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Training throughput: the runtime with 1 and 2 in-process workers (1 thread each, same
    /// per-worker batch), the bare single-process loop, and two bare loops side by side, free-running
    /// and in lock-step (meeting after every step, as synchronous ranks must: what this machine
    /// allows two synchronous workers at best), in interleaved rounds; the runtime's step time is
    /// split into compute, all-reduce, barrier wait and coordination.
    Runtime {
        #[arg(long, default_value = "configs/high_low.toml")]
        config: PathBuf,
        /// Override a key, e.g. --set train.algorithm=reinforce (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Steps per measurement (40-step measurements varied by ±17 % between rounds).
        #[arg(long, default_value_t = 150)]
        steps: u64,
        /// Examples per worker per step.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Rounds of (local, two locals free-running, two locals in lock-step, 1 worker, 2 workers); medians are reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// TCP ring all-reduce between worker processes on loopback: seconds, algbw and busbw per size.
    Allreduce(super::bench_allreduce::AllreduceArgs),
    /// Training throughput of worker processes (coordinator + workers, TCP ring on loopback) against
    /// as many in-process workers, same config, steps and threads per worker, in interleaved rounds.
    Cluster(super::bench_cluster::ClusterBenchArgs),
    /// Training-step throughput of one replica, the step split into data, forward (with losses and
    /// rewards), backward and optimizer, and its host synchronisations (reads of device values, each
    /// a wait on a GPU) per step; warm-up excluded. Compare with PyTorch eager:
    ///   d2nn bench train --set train.algorithm=reinforce --threads 1,2
    ///   .venv-reference/bin/python scripts/reference/torch_high_low.py --threads 1
    Train(super::bench_train::TrainBenchArgs),
}

pub fn bench(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Exec { config, static_config, batch, reps, device } => {
            bench_exec(config, static_config, batch, reps, device)
        }
        BenchCommand::Runtime { config, overrides, steps, batch, rounds } => {
            bench_runtime(ConfigArgs { config, overrides }, steps, batch, rounds)
        }
        BenchCommand::Allreduce(args) => super::bench_allreduce::run(args),
        BenchCommand::Cluster(args) => super::bench_cluster::run(args),
        BenchCommand::Train(args) => super::bench_train::run(args),
    }
}

fn bench_runtime(args: ConfigArgs, steps: u64, batch: usize, rounds: usize) -> anyhow::Result<()> {
    use d2nn_coordinator::coordinator::{bench_local, bench_local_pair, bench_runtime, BenchResult};
    let cfg = load_config(&args)?;
    let file = args.config.display().to_string();
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

fn bench_exec(
    config: PathBuf,
    static_config: Option<PathBuf>,
    batch: i64,
    reps: usize,
    device: String,
) -> anyhow::Result<()> {
    let device = parse_device(&device)?;
    let file = config.display().to_string();
    let (cfg, graph) = build_graph(&ConfigArgs { config: config.clone(), overrides: vec![] })?;
    let design = Design::of(&graph, &file).map_err(anyhow::Error::msg)?;
    // The static network to beat: the one given, else the design's most expensive baseline.
    let candidates: Vec<PathBuf> = match static_config {
        Some(path) => vec![path],
        None => cfg.sweep.baselines.iter().map(|b| config.with_file_name(b)).collect(),
    };
    let mut statics = Vec::new();
    for path in &candidates {
        let (_, g) = build_graph(&ConfigArgs { config: path.clone(), overrides: vec![] })
            .with_context(|| format!("the static baseline {}", path.display()))?;
        statics.push((path, g));
    }
    let Some((static_path, static_graph)) =
        statics.into_iter().max_by(|a, b| a.1.full_flops.total_cmp(&b.1.full_flops))
    else {
        bail!("{file}: key `sweep.baselines` names no static network; give one with --static");
    };
    tracing::info!(static_network = %static_path.display(), "bench exec");
    let dynamic = D2nn::new(graph, device, cfg.seed)?;
    let static_net = D2nn::new(static_graph, device, cfg.seed)?;
    for case in exec_bench::bench_exec(&dynamic, &static_net, &design, batch, reps, device)? {
        let mut line = serde_json::to_value(&case)?;
        line["static"] = static_path.display().to_string().into();
        line["threads"] = tch::get_num_threads().into();
        line["device"] = format!("{device:?}").into();
        println!("{line}");
    }
    Ok(())
}
