//! `d2nn sweep`: one D2NN per λ, the design's static baselines, and random routing at the rates each
//! trained D2NN chose; `sweep.json` and a PNG of the trade-off.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use d2nn_common::config::RunConfig;
use d2nn_common::train::{LocalRun, Summary};
use d2nn_coordinator::experiments::sweep::{points, random_routing, run_pool, Done, Job};
use d2nn_coordinator::plot::{load_sweeps, tradeoff_png};

use super::commands::{ConfigArgs, SweepArgs};
use super::config::{load_config, parse_device};
use super::train::{print_summary, write_curves};

fn train_one(cfg: &RunConfig, config_file: &str, run_dir: &Path, args: &SweepArgs) -> anyhow::Result<Summary> {
    let device = parse_device(&args.device)?;
    tracing::info!(config = config_file, run_dir = %run_dir.display(), lambda = cfg.train.lambda, "sweep run");
    let run = LocalRun {
        cfg,
        config_file,
        run_dir,
        max_steps: args.max_steps,
        device,
        resume: None,
        allow_config_change: false,
    };
    let summary = run.run(&mut |line, total| tracing::debug!(step = line.step, total, loss = line.loss, "step"))?;
    print_summary(&summary, run_dir);
    write_curves(run_dir);
    Ok(summary)
}

fn run_job(job: &Job, args: &SweepArgs) -> anyhow::Result<Done> {
    let summary = train_one(&job.cfg, &job.config_file, &job.dir, args)?;
    let (random, expected_random_accuracy) = match job.lambda {
        Some(_) => {
            let (random, expected) = random_routing(&job.dir, &summary, parse_device(&args.device)?)?;
            (Some(random), expected)
        }
        None => (None, None),
    };
    Ok(Done { summary, random, expected_random_accuracy })
}

pub fn sweep(args: SweepArgs) -> anyhow::Result<()> {
    let cfg = load_config(&args.config)?;
    let config_file = args.config.config.display().to_string();
    let lambdas = if args.lambdas.is_empty() { cfg.sweep.lambdas.clone() } else { args.lambdas.clone() };
    if lambdas.is_empty() {
        bail!("{config_file}: no λ to sweep: pass --lambdas or set `sweep.lambdas`");
    }
    let out = args.run_dir.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(format!(
            "sweep_{}",
            args.config.config.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
        ))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    let mut list = Vec::new();
    for lambda in &lambdas {
        let mut c = cfg.clone();
        c.train.lambda = *lambda;
        let dir = out.join(format!("lambda_{lambda}"));
        list.push(Job {
            lambda: Some(*lambda),
            label: format!("λ={lambda}"),
            cfg: c,
            config_file: config_file.clone(),
            dir,
        });
    }
    let base_dir = args.config.config.parent().unwrap_or(Path::new("."));
    let baselines = if args.no_baselines { &[][..] } else { &cfg.sweep.baselines[..] };
    for baseline in baselines {
        let path = base_dir.join(baseline);
        let mut b = load_config(&ConfigArgs { config: path.clone(), overrides: args.config.overrides.clone() })
            .with_context(|| format!("static baseline {}", path.display()))?;
        b.train = cfg.train.clone();
        b.data = cfg.data.clone();
        let name = baseline.trim_end_matches(".toml").to_string();
        let dir = out.join(&name);
        list.push(Job { lambda: None, label: name, cfg: b, config_file: path.display().to_string(), dir });
    }

    let run = |i: usize| run_job(&list[i], &args).with_context(|| format!("sweep run {}", list[i].label));
    let lost = || anyhow::anyhow!("a sweep thread ended without a result");
    let mut done = Vec::with_capacity(list.len());
    for result in run_pool(list.len(), args.jobs, run, lost) {
        done.push(result?);
    }
    let points = points(&list, &done);

    let binary = points.iter().any(|p| p.f1.is_some());
    let json = serde_json::json!({ "config": config_file, "metric": if binary { "f1" } else { "accuracy" }, "points": points });
    let sweep_json = out.join("sweep.json");
    std::fs::write(&sweep_json, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", sweep_json.display()))?;
    let png = out.join("tradeoff.png");
    // The numbers are in sweep.json already: a machine without fonts must not lose an hour of runs.
    // Drawn from sweep.json itself, as `d2nn plot sweep` redraws it.
    let plotted = load_sweeps(std::slice::from_ref(&sweep_json)).and_then(|plot| tradeoff_png(&png, &plot));
    if let Err(e) = &plotted {
        tracing::warn!(path = %png.display(), "no plot: {e:#}");
    }
    println!("{:<16} {:>8} {:>8} {:>8} {:>10}", "point", "acc", "F1", "cost", "expected");
    for p in &points {
        println!(
            "{:<16} {:>8.4} {:>8} {:>8.4} {:>10}",
            p.label,
            p.accuracy,
            p.f1.map_or("-".into(), |f| format!("{f:.4}")),
            p.mean_cost_fraction,
            p.expected_accuracy.map_or("-".into(), |e| format!("{e:.4}"))
        );
    }
    match plotted {
        Ok(_) => println!("wrote {} and {}", sweep_json.display(), png.display()),
        Err(_) => println!("wrote {} (no plot, see the warning above)", sweep_json.display()),
    }
    Ok(())
}
