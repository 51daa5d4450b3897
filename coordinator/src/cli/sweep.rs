//! `d2nn sweep`: one D2NN per λ, the design's static baselines, and random routing at the rates each
//! trained D2NN chose; `sweep.json` and a PNG of the trade-off.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context};
use d2nn_common::config::RunConfig;
use d2nn_common::exec::{DecisionKey, Policy};
use d2nn_common::train::{evaluate, is_binary, load_run, routing_report, EvalMetrics, LocalRun, RunDir, Summary};
use d2nn_coordinator::plot::{load_sweeps, tradeoff_png};
use serde::Serialize;

use super::commands::{ConfigArgs, SweepArgs};
use super::config::{load_config, parse_device};
use super::train::{print_summary, write_curves};

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
    /// Random routing of a one-controller D2NN: its expected accuracy over the coin flips, exact
    /// (`d2nn eval --routing`), beside the one draw that `accuracy` holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_accuracy: Option<f64>,
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
        expected_accuracy: None,
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
    write_curves(run_dir);
    Ok(summary)
}

/// One training of the sweep: a D2NN at one λ, or a static baseline.
struct Job {
    lambda: Option<f64>,
    label: String,
    cfg: RunConfig,
    config_file: String,
    dir: PathBuf,
}

/// What a finished job adds: its summary, and for a D2NN the random-routing evaluation and, with one
/// controller, the exact expected accuracy of that random routing (from the routing report, which is
/// written to the run's routing.json).
struct Done {
    summary: Summary,
    random: Option<EvalMetrics>,
    expected_random_accuracy: Option<f64>,
}

/// Random routing: the same trained network, its controllers replaced by coin flips at the rates it
/// chose. If the D2NN does not beat this, its controllers learned nothing. With one controller, also
/// the exact expectation of these coin flips, from the routing report.
fn random_routing(dir: &Path, summary: &Summary, args: &SweepArgs) -> anyhow::Result<(EvalMetrics, Option<f64>)> {
    let (rcfg, dataset, model) = load_run(dir, parse_device(&args.device)?)?;
    let ordered: Vec<Vec<f64>> = model
        .graph
        .controls
        .iter()
        .map(|&c| summary.action_rates.get(&model.graph.nodes[c].name).cloned().unwrap_or_default())
        .collect();
    let key = DecisionKey { seed: rcfg.seed, step: u64::MAX };
    let batch = rcfg.train.eval_batch_size;
    let random = evaluate(&model, &dataset.test, batch, &Policy::Random(ordered), key, is_binary(dataset.task))?;
    let expected = match model.graph.controls.len() {
        1 => {
            let report = routing_report(&model, &dataset.test, batch, key)?;
            RunDir::open(dir)?.write_routing(&report)?;
            Some(report.random_accuracy)
        }
        _ => None,
    };
    Ok((random, expected))
}

fn run_job(job: &Job, args: &SweepArgs) -> anyhow::Result<Done> {
    let summary = train_one(&job.cfg, &job.config_file, &job.dir, args)?;
    let (random, expected_random_accuracy) = match job.lambda {
        Some(_) => {
            let (random, expected) = random_routing(&job.dir, &summary, args)?;
            (Some(random), expected)
        }
        None => (None, None),
    };
    Ok(Done { summary, random, expected_random_accuracy })
}

/// Runs the jobs on `jobs` threads, each with its share of the cores (libtorch's thread count is a
/// property of the calling thread). Results come back in job order.
fn run_all(list: &[Job], args: &SweepArgs) -> Vec<anyhow::Result<Done>> {
    let jobs = args.jobs.clamp(1, list.len().max(1));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<anyhow::Result<Done>>>> = Mutex::new(list.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                if jobs > 1 {
                    tch::set_num_threads((cores / jobs).max(1) as i32);
                }
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = list.get(i) else { break };
                    let result = run_job(job, args).with_context(|| format!("sweep run {}", job.label));
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("a sweep thread ended without a result"))))
        .collect()
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

    let mut done = Vec::with_capacity(list.len());
    for result in run_all(&list, &args) {
        done.push(result?);
    }
    let full_mflops = done.first().map_or(f64::NAN, |d| d.summary.full_mflops_per_example);
    let mut points = Vec::new();
    for (job, d) in list.iter().zip(&done) {
        let kind = if job.lambda.is_some() { "d2nn" } else { "static" };
        points.push(point(kind, job.label.clone(), job.lambda, &d.summary, &job.dir, full_mflops));
        if let Some(random) = &d.random {
            points.push(SweepPoint {
                kind: "random_routing",
                label: format!("rand {}", job.label),
                lambda: job.lambda,
                accuracy: random.accuracy,
                f1: random.f1,
                mean_mflops_per_example: random.mean_mflops_per_example,
                mean_cost_fraction: random.mean_cost_fraction,
                expected_accuracy: d.expected_random_accuracy,
                run_dir: job.dir.display().to_string(),
            });
        }
    }

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
