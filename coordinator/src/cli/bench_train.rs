//! `d2nn bench train`: training-step throughput of one replica at a batch, thread count, device and
//! routing, with the step split into its phases. One JSON line per (threads, round), then one line
//! of medians per thread count. scripts/reference/torch_high_low.py prints the same figures for
//! PyTorch eager, so the two run side by side (docs/RESULTS.md).
use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use d2nn_common::train::Routing;
use d2nn_coordinator::experiments::median;
use d2nn_coordinator::experiments::train_bench::{bench_train, TrainBenchSpec};

use super::commands::ConfigArgs;
use super::config::{load_config, parse_device};

#[derive(Debug, Args)]
pub struct TrainBenchArgs {
    /// Run config (TOML); its network, optimizer and training keys are used.
    #[arg(long, default_value = "configs/high_low.toml")]
    pub config: std::path::PathBuf,
    /// Override a key, e.g. --set train.algorithm=reinforce (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Examples per step.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// libtorch threads, one measurement per value (e.g. 1,2).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub threads: Vec<usize>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// `random`: every decision uniformly random (the same work whatever the controllers learn);
    /// `policy`: the config's own policy for each step.
    #[arg(long, value_enum, default_value_t = RoutingArg::Random)]
    pub routing: RoutingArg,
    /// Timed steps per measurement.
    #[arg(long, default_value_t = 300)]
    pub steps: u64,
    /// Untimed steps before them.
    #[arg(long, default_value_t = 20)]
    pub warmup: u64,
    /// Measurements per thread count, interleaved; the medians are reported.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoutingArg {
    Random,
    Policy,
}

pub fn run(args: TrainBenchArgs) -> anyhow::Result<()> {
    if args.threads.contains(&0) || args.batch == 0 || args.steps == 0 {
        bail!("--threads, --batch and --steps must be at least 1");
    }
    let cfg = load_config(&ConfigArgs { config: args.config.clone(), overrides: args.overrides.clone() })?;
    let file = args.config.display().to_string();
    let device = parse_device(&args.device)?;
    let routing = match args.routing {
        RoutingArg::Random => Routing::UniformRandom,
        RoutingArg::Policy => Routing::Policy,
    };
    let spec = TrainBenchSpec { batch: args.batch, device, routing, steps: args.steps, warmup: args.warmup };
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); args.threads.len()];
    for round in 0..args.rounds.max(1) {
        for (k, &threads) in args.threads.iter().enumerate() {
            tch::set_num_threads(threads as i32);
            let result = bench_train(&cfg, &file, &spec).with_context(|| format!("bench train on {file}"))?;
            rates[k].push(result.examples_per_sec);
            let mut line = serde_json::to_value(&result)?;
            line["impl"] = "d2nn".into();
            line["config"] = file.clone().into();
            line["algorithm"] = serde_json::to_value(cfg.train.algorithm)?;
            line["round"] = round.into();
            line["threads"] = threads.into();
            line["batch"] = args.batch.into();
            line["device"] = args.device.clone().into();
            line["routing"] = format!("{:?}", args.routing).to_lowercase().into();
            println!("{line}");
        }
    }
    for (&threads, r) in args.threads.iter().zip(rates) {
        println!("{}", serde_json::json!({ "threads": threads, "median_examples_per_sec": median(r) }));
    }
    Ok(())
}
