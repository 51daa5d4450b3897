//! `d2nn sweep`: one D2NN per λ, the design's static baselines, and random routing at the rates each
//! trained D2NN chose; `sweep.json` and a PNG of the trade-off.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use d2nn_common::config::RunConfig;
use d2nn_common::exec::{DecisionKey, Policy};
use d2nn_common::train::{evaluate, is_binary, load_run, LocalRun, Summary};
use d2nn_coordinator::plot::{tradeoff_png, PlotPoint};
use serde::Serialize;

use super::commands::{ConfigArgs, SweepArgs};
use super::train::{load_config, parse_device, print_summary};

#[derive(Debug, Serialize)]
struct SweepPoint {
    kind: &'static str,
    label: String,
    lambda: Option<f64>,
    accuracy: f64,
    f1: Option<f64>,
    mean_mflops_per_example: f64,
    /// Mean executed FLOPs over the full cost of the *dynamic* network, so every point shares one axis.
    mean_cost_fraction: f64,
    run_dir: String,
}

fn point(
    kind: &'static str,
    label: String,
    lambda: Option<f64>,
    s: &Summary,
    dir: &Path,
    full_mflops: f64,
) -> SweepPoint {
    SweepPoint {
        kind,
        label,
        lambda,
        accuracy: s.test_accuracy,
        f1: s.test_f1,
        mean_mflops_per_example: s.mean_mflops_per_example,
        mean_cost_fraction: s.mean_mflops_per_example / full_mflops,
        run_dir: dir.display().to_string(),
    }
}

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
    Ok(summary)
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
    let mut points = Vec::new();
    let mut full_mflops = f64::NAN;

    for lambda in &lambdas {
        let mut c = cfg.clone();
        c.train.lambda = *lambda;
        let dir = out.join(format!("lambda_{lambda}"));
        let summary = train_one(&c, &config_file, &dir, &args)?;
        full_mflops = summary.full_mflops_per_example;
        points.push(point("d2nn", format!("λ={lambda}"), Some(*lambda), &summary, &dir, full_mflops));
        // Random routing: the same trained network, its controllers replaced by coin flips at the
        // rates it chose. If the D2NN does not beat this, its controllers learned nothing.
        let (rcfg, dataset, model) = load_run(&dir, parse_device(&args.device)?)?;
        let ordered: Vec<Vec<f64>> = model
            .graph
            .controls
            .iter()
            .map(|&c| summary.action_rates.get(&model.graph.nodes[c].name).cloned().unwrap_or_default())
            .collect();
        let key = DecisionKey { seed: rcfg.seed, step: u64::MAX };
        let random = evaluate(
            &model,
            &dataset.test,
            rcfg.train.eval_batch_size,
            &Policy::Random(ordered),
            key,
            is_binary(dataset.task),
        )?;
        points.push(SweepPoint {
            kind: "random_routing",
            label: format!("rand λ={lambda}"),
            lambda: Some(*lambda),
            accuracy: random.accuracy,
            f1: random.f1,
            mean_mflops_per_example: random.mean_mflops_per_example,
            mean_cost_fraction: random.mean_cost_fraction,
            run_dir: dir.display().to_string(),
        });
    }
    let base_dir = args.config.config.parent().unwrap_or(Path::new("."));
    for baseline in &cfg.sweep.baselines {
        let path = base_dir.join(baseline);
        let mut b = load_config(&ConfigArgs { config: path.clone(), overrides: args.config.overrides.clone() })
            .with_context(|| format!("static baseline {}", path.display()))?;
        b.train = cfg.train.clone();
        b.data = cfg.data.clone();
        let name = baseline.trim_end_matches(".toml").to_string();
        let dir = out.join(&name);
        let summary = train_one(&b, &path.display().to_string(), &dir, &args)?;
        points.push(point("static", name, None, &summary, &dir, full_mflops));
    }

    let binary = points.iter().any(|p| p.f1.is_some());
    let json = serde_json::json!({ "config": config_file, "metric": if binary { "f1" } else { "accuracy" }, "points": points });
    let sweep_json = out.join("sweep.json");
    std::fs::write(&sweep_json, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", sweep_json.display()))?;
    let plot_points: Vec<PlotPoint> = points
        .iter()
        .map(|p| PlotPoint {
            series: p.kind.replace('_', " "),
            label: p.label.clone(),
            cost: p.mean_cost_fraction,
            metric: if binary { p.f1.unwrap_or(0.0) } else { p.accuracy },
        })
        .collect();
    let png = out.join("tradeoff.png");
    let title = format!(
        "{} — test {} vs cost",
        args.config.config.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        if binary { "F1" } else { "accuracy" }
    );
    tradeoff_png(&png, &title, if binary { "test F1" } else { "test accuracy" }, &plot_points)?;
    println!("{:<16} {:>8} {:>8} {:>8}", "point", "acc", "F1", "cost");
    for p in &points {
        println!(
            "{:<16} {:>8.4} {:>8} {:>8.4}",
            p.label,
            p.accuracy,
            p.f1.map_or("-".into(), |f| format!("{f:.4}")),
            p.mean_cost_fraction
        );
    }
    println!("wrote {} and {}", sweep_json.display(), png.display());
    Ok(())
}
