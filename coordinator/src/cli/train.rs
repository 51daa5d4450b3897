//! `d2nn train` (in-process workers), and what it shares with `d2nn coordinator`: resolving the
//! run from its arguments (fresh or resumed), printing the summary, and reporting how a run ended.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use d2nn_common::checkpoint::{self, CheckpointMeta, CheckpointStore};
use d2nn_common::config::RunConfig;
use d2nn_common::train::Summary;
use d2nn_coordinator::coordinator::{default_workers, train_embedded, RuntimeError, TrainRun};
use d2nn_coordinator::plot::write_run_curves;

use super::commands::{ConfigArgs, RunArgs, TrainArgs};
use super::config::{load_config, parse_device};
use super::signals;

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

/// Draws the run's `curves.png` from its metrics.jsonl; a run is not failed for want of a picture.
pub fn write_curves(run_dir: &Path) {
    match write_run_curves(run_dir) {
        Ok(path) => println!("training curves    {}", path.display()),
        Err(e) => tracing::warn!("no curves.png: {e}"),
    }
}

/// The config of a `train` command: its file, or with `--resume` and no `--config` the checkpoint's
/// own, with D2NN_* variables and `--set` (and `--checkpoint-every`) on top either way.
fn train_config(args: &RunArgs, resume: Option<&Path>) -> anyhow::Result<(RunConfig, String)> {
    let mut overrides = args.overrides.clone();
    if let Some(n) = args.checkpoint_every {
        overrides.push(format!("checkpoint.every_steps={n}"));
    }
    match (&args.config, resume) {
        (Some(config), _) => {
            let cfg = load_config(&ConfigArgs { config: config.clone(), overrides })?;
            Ok((cfg, config.display().to_string()))
        }
        (None, Some(dir)) => {
            let meta = CheckpointMeta::read(dir)?;
            let name = dir.join(checkpoint::META_FILE).display().to_string();
            let env: Vec<(String, String)> = std::env::vars().collect();
            Ok((RunConfig::load_text(&meta.config.to_toml()?, &name, &env, &overrides)?, name))
        }
        (None, None) => bail!("--config is required unless --resume is given"),
    }
}

/// A run as the command line describes it: config, run directory, resume point, limits. The
/// workers are the caller's to fill in.
pub fn prepare_run(args: &RunArgs, workers: usize) -> anyhow::Result<TrainRun> {
    let resume = match (&args.resume, &args.run_dir) {
        (Some(path), _) => Some(checkpoint::resolve(path).context("--resume")?),
        // Only a run that never checkpointed starts fresh: a damaged LATEST is an error, never
        // a reason to train over the run.
        (None, Some(dir)) if args.auto_resume => {
            if CheckpointStore::of_run(dir).has_latest() {
                Some(checkpoint::resolve(dir).context("--auto-resume")?)
            } else {
                tracing::info!(run_dir = %dir.display(), "--auto-resume: no checkpoint yet; starting fresh");
                None
            }
        }
        (None, _) => None,
    };
    if args.auto_resume && resume.is_none() && args.config.is_none() {
        bail!("--auto-resume found no checkpoint in the run directory, and no --config was given to start fresh");
    }
    let (cfg, config_file) = train_config(args, resume.as_deref())?;
    let run_dir = match (&args.run_dir, resume.as_deref().and_then(checkpoint::run_dir_of)) {
        (Some(dir), _) => dir.clone(),
        (None, Some(dir)) => dir,
        (None, None) if resume.is_some() => {
            bail!("--resume: the checkpoint is not inside a run directory; give --run-dir")
        }
        (None, None) => {
            let stem = args.config.as_deref().and_then(Path::file_stem);
            PathBuf::from("runs").join(stem.map_or_else(|| "run".into(), |s| s.to_string_lossy().into_owned()))
        }
    };
    tracing::info!(config = %config_file, run_dir = %run_dir.display(), "training");
    let mut run = TrainRun::new(cfg, config_file, run_dir, workers);
    run.max_steps = args.max_steps;
    run.progress = !args.quiet;
    run.resume = resume;
    run.allow_config_change = args.allow_config_change;
    Ok(run)
}

/// Prints a finished or stopped run; any other failure is an error naming the config.
pub fn report(
    result: Result<Summary, RuntimeError>,
    run: (&str, &Path, usize),
    resume_hint: &str,
) -> anyhow::Result<()> {
    let (config_file, run_dir, workers) = run;
    match result {
        Ok(summary) => {
            print_summary(&summary, run_dir);
            write_curves(run_dir);
        }
        Err(RuntimeError::Stopped { step, checkpoint }) => {
            println!("stopped after step {step}; checkpoint {}", checkpoint.display());
            write_curves(run_dir);
            println!("continue with: {resume_hint} --resume {}", run_dir.display());
        }
        Err(e) => return Err(e).with_context(|| format!("training {config_file} with {workers} workers")),
    }
    Ok(())
}

pub fn train(args: TrainArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let stop = signals::install(&rt)?;
    let device = parse_device(&args.device)?;
    let workers = args.workers.unwrap_or_else(default_workers);
    let mut run = prepare_run(&args.run, workers)?;
    run.device = device;
    run.options.collective = args.collective;
    tracing::info!(collective = ?args.collective.resolve(device), ?device, workers, "gradient all-reduce");
    run.stop = Some(stop);
    let (config_file, run_dir) = (run.config_file.clone(), run.run_dir.clone());
    report(rt.block_on(train_embedded(run)), (&config_file, &run_dir, workers), "d2nn train")
}
