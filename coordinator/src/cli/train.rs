use std::path::PathBuf;

use anyhow::{bail, Context};
use d2nn_common::config::RunConfig;
use d2nn_common::exec::{DecisionKey, Policy};
use d2nn_common::train::{evaluate, is_binary, load_run, RunDir, Summary};
use d2nn_coordinator::runtime::{default_workers, train_embedded, EmbeddedRun};
use tch::Device;

use super::commands::{ConfigArgs, EvalArgs, TrainArgs};

pub fn load_config(args: &ConfigArgs) -> anyhow::Result<RunConfig> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    Ok(RunConfig::load(&args.config, &env, &args.overrides)?)
}

pub fn parse_device(text: &str) -> anyhow::Result<Device> {
    let device = match text {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Device::Cuda(n),
            _ => bail!("--device `{text}`: expected cpu, cuda or cuda:N"),
        },
    };
    if let Device::Cuda(n) = device {
        if !tch::Cuda::is_available() {
            bail!("--device {text}: CUDA is not available (build with `scripts/setup.sh --cuda` on a GPU machine)");
        }
        if n as i64 >= tch::Cuda::device_count() {
            bail!("--device {text}: only {} CUDA devices", tch::Cuda::device_count());
        }
    }
    Ok(device)
}

pub fn print_summary(summary: &Summary, run_dir: &std::path::Path) {
    println!("test accuracy      {:.4}", summary.test_accuracy);
    if let Some(f1) = summary.test_f1 {
        println!("test F1            {f1:.4}");
    }
    println!(
        "mean cost fraction {:.4}  ({:.3} of {:.3} MFLOPs per example)",
        summary.mean_cost_fraction, summary.mean_mflops_per_example, summary.full_mflops_per_example
    );
    for (name, rates) in &summary.action_rates {
        let rates: Vec<String> = rates.iter().map(|r| format!("{r:.3}")).collect();
        println!("controller {name:<8} action rates [{}]", rates.join(", "));
    }
    println!(
        "steps {}  workers {}  {:.0} examples/s  {:.1} s",
        summary.steps, summary.workers, summary.examples_per_sec, summary.wall_seconds
    );
    println!("run directory      {}", run_dir.display());
}

pub fn train(args: TrainArgs) -> anyhow::Result<()> {
    let cfg = load_config(&args.config)?;
    let device = parse_device(&args.device)?;
    let run_dir = args.run_dir.clone().unwrap_or_else(|| {
        let stem =
            args.config.config.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
        PathBuf::from("runs").join(stem)
    });
    let config_file = args.config.config.display().to_string();
    tracing::info!(config = %config_file, run_dir = %run_dir.display(), "training");
    let workers = args.workers.unwrap_or_else(default_workers);
    let mut run = EmbeddedRun::new(cfg, config_file.clone(), run_dir.clone(), workers);
    run.max_steps = args.max_steps;
    run.device = device;
    run.options.collective = args.collective;
    run.progress = !args.quiet;
    tracing::info!(collective = ?args.collective.resolve(device), ?device, workers, "gradient all-reduce");
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let summary =
        rt.block_on(train_embedded(run)).with_context(|| format!("training {config_file} with {workers} workers"))?;
    print_summary(&summary, &run_dir);
    Ok(())
}

pub fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let device = parse_device(&args.device)?;
    let (cfg, dataset, model) =
        load_run(&args.run_dir, device).with_context(|| format!("loading run {}", args.run_dir.display()))?;
    let binary = is_binary(dataset.task);
    let key = DecisionKey { seed: cfg.seed, step: u64::MAX };
    let test = evaluate(&model, &dataset.test, cfg.train.eval_batch_size, &Policy::Argmax, key, binary)?;
    println!("test accuracy      {:.4}", test.accuracy);
    if let Some(f1) = test.f1 {
        println!("test F1            {f1:.4}");
    }
    println!(
        "mean cost fraction {:.4}  ({:.3} MFLOPs per example)",
        test.mean_cost_fraction, test.mean_mflops_per_example
    );
    if let Ok(saved) = RunDir::open(&args.run_dir).and_then(|d| d.read_summary()) {
        let same = saved.test_accuracy == test.accuracy
            && saved.mean_cost_fraction == test.mean_cost_fraction
            && saved.test_f1 == test.f1;
        println!("summary.json       {}", if same { "matches" } else { "DIFFERS" });
        if !same {
            bail!("recomputed metrics differ from {}/summary.json", args.run_dir.display());
        }
    }
    Ok(())
}
