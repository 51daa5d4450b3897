//! `d2nn sweep`'s parts that are not the command line: its jobs (a D2NN per λ, a static baseline),
//! the random-routing baseline of a trained D2NN, the pool that runs jobs side by side, and the
//! points of `sweep.json` (which `plot::load_sweeps` reads back).
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use d2nn_common::config::RunConfig;
use d2nn_common::exec::{DecisionKey, Policy};
use d2nn_common::train::{
    evaluate, is_binary, load_run, routing_report, EvalMetrics, RunDir, Summary, MAX_REPORT_JOINT_ACTIONS,
};
use serde::Serialize;
use tch::Device;

/// One point of `sweep.json`.
#[derive(Debug, Serialize)]
pub struct SweepPoint {
    pub kind: &'static str,
    pub label: String,
    pub lambda: Option<f64>,
    pub accuracy: f64,
    pub f1: Option<f64>,
    pub mean_mflops_per_example: f64,
    /// Mean executed FLOPs over the full cost of the *dynamic* network, so every point shares one axis.
    pub mean_cost_fraction: f64,
    /// Random routing of a one-controller D2NN: its expected accuracy over the coin flips, exact
    /// (`d2nn eval --routing`), beside the one draw that `accuracy` holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_accuracy: Option<f64>,
    pub run_dir: String,
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

/// One training of the sweep: a D2NN at one λ, or a static baseline.
pub struct Job {
    pub lambda: Option<f64>,
    pub label: String,
    pub cfg: RunConfig,
    pub config_file: String,
    pub dir: PathBuf,
}

/// What a finished job adds: its summary, and for a D2NN the random-routing evaluation and, with at most
/// [`MAX_REPORT_JOINT_ACTIONS`] joint actions, the exact expected accuracy of that random routing (from the
/// routing report, which is written to the run's routing.json with the F-score's for binary tasks).
pub struct Done {
    pub summary: Summary,
    pub random: Option<EvalMetrics>,
    pub expected_random_accuracy: Option<f64>,
}

/// Random routing: the same trained network, its controllers replaced by coin flips at the rates it
/// chose. If the D2NN does not beat this, its controllers learned nothing. With at most
/// [`MAX_REPORT_JOINT_ACTIONS`] joint actions, also the exact expectation of these coin flips, from the routing
/// report.
pub fn random_routing(
    dir: &Path,
    summary: &Summary,
    device: Device,
) -> d2nn_common::Result<(EvalMetrics, Option<f64>)> {
    let (rcfg, dataset, model) = load_run(dir, device)?;
    let ordered: Vec<Vec<f64>> = model
        .graph
        .controls
        .iter()
        .map(|&c| summary.action_rates.get(&model.graph.nodes[c].name).cloned().unwrap_or_default())
        .collect();
    let key = DecisionKey { seed: rcfg.seed, step: u64::MAX };
    let batch = rcfg.train.eval_batch_size;
    let binary = is_binary(dataset.task);
    let random = evaluate(&model, &dataset.test, batch, &Policy::Random(ordered), key, binary)?;
    let joint: usize = model.graph.num_actions().iter().product();
    let expected = if joint <= MAX_REPORT_JOINT_ACTIONS {
        let report = routing_report(&model, &dataset.test, batch, key, binary)?;
        RunDir::open(dir)?.write_routing(&report)?;
        Some(report.random_accuracy)
    } else {
        None
    };
    Ok((random, expected))
}

/// Runs `run(i)` for every `i < count` on `jobs` threads, each with its share of the cores
/// (libtorch's thread count is a property of the calling thread). Results come back in order.
pub fn run_pool<T: Send, E: Send>(
    count: usize,
    jobs: usize,
    run: impl Fn(usize) -> Result<T, E> + Sync,
    lost: impl Fn() -> E,
) -> Vec<Result<T, E>> {
    let jobs = jobs.clamp(1, count.max(1));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<T, E>>>> = Mutex::new((0..count).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                if jobs > 1 {
                    tch::set_num_threads((cores / jobs).max(1) as i32);
                }
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let result = run(i);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.into_iter().map(|r| r.unwrap_or_else(|| Err(lost()))).collect()
}

/// The points of `sweep.json`: each job's, and each D2NN's random routing beside it.
pub fn points(list: &[Job], done: &[Done]) -> Vec<SweepPoint> {
    let full_mflops = done.first().map_or(f64::NAN, |d| d.summary.full_mflops_per_example);
    let mut points = Vec::new();
    for (job, d) in list.iter().zip(done) {
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
    points
}
