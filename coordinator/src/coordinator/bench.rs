//! Throughput benchmarks (not tests): the runtime with N workers, and the bare local loop, on the
//! same config and steps. `d2nn bench runtime` wires these to the command line.
use std::path::PathBuf;

use d2nn_common::config::RunConfig;
use d2nn_common::train::{LocalRun, MetricsLine, RunDir, StepSplit, Summary};
use tch::Device;

use super::{train_embedded, RuntimeError, TrainRun};

#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    pub workers: usize,
    pub steps: u64,
    /// Training examples per second over all steps (step time only: no setup, no evaluation).
    pub examples_per_sec: f64,
    /// Where the runtime's step time went, in seconds over all steps: compute, all-reduce, barrier
    /// wait and coordination (the runtime's metrics split; absent for the bare loop).
    pub split: Option<StepSplit>,
}

/// Sums the split of every line of a run's `metrics.jsonl`.
fn split_of_run(dir: &std::path::Path) -> Option<StepSplit> {
    let text = std::fs::read_to_string(dir.join(RunDir::METRICS)).ok()?;
    let mut split = StepSplit::default();
    for line in text.lines() {
        let m: MetricsLine = serde_json::from_str(line).ok()?;
        split = split + m.split?;
    }
    Some(split)
}

fn scratch_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("d2nn-bench-{tag}-{}-{nanos}", std::process::id()))
}

/// A small held-out set: the benchmark measures training, and evaluation runs once at the end.
fn bench_config(cfg: &RunConfig) -> RunConfig {
    let mut cfg = cfg.clone();
    cfg.data.test_limit = Some(cfg.data.test_limit.unwrap_or(1000).min(1000));
    cfg
}

/// `steps` steps of the runtime with `workers` workers of `threads_per_worker` threads each; the
/// global batch is `per_worker_batch · workers`, so each worker does the same work as in a
/// one-worker run with the same `per_worker_batch`.
pub async fn bench_runtime(
    cfg: &RunConfig,
    config_file: &str,
    workers: usize,
    per_worker_batch: usize,
    threads_per_worker: usize,
    steps: u64,
) -> Result<BenchResult, RuntimeError> {
    let mut cfg = bench_config(cfg);
    cfg.train.batch_size = per_worker_batch * workers;
    let dir = scratch_dir("runtime");
    let mut run = TrainRun::new(cfg, config_file, &dir, workers);
    run.max_steps = Some(steps);
    run.threads_per_worker = Some(threads_per_worker);
    let summary = train_embedded(run).await;
    let split = split_of_run(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let summary = summary?;
    Ok(BenchResult { workers, steps: summary.steps, examples_per_sec: summary.examples_per_sec, split })
}

/// The bare single-process loop on this thread with `threads` libtorch threads.
pub fn bench_local(
    cfg: &RunConfig,
    config_file: &str,
    batch: usize,
    threads: usize,
    steps: u64,
) -> Result<BenchResult, RuntimeError> {
    let mut cfg = bench_config(cfg);
    cfg.train.batch_size = batch;
    tch::set_num_threads(threads.max(1) as i32);
    let summary = run_local(&cfg, config_file, steps, "local", &mut |_, _| {})?;
    Ok(BenchResult { workers: 1, steps: summary.steps, examples_per_sec: summary.examples_per_sec, split: None })
}

/// `steps` steps of the bare loop on this thread, in a scratch run directory removed afterwards.
fn run_local(
    cfg: &RunConfig,
    config_file: &str,
    steps: u64,
    tag: &str,
    on_log: &mut dyn FnMut(&MetricsLine, u64),
) -> Result<Summary, RuntimeError> {
    let dir = scratch_dir(tag);
    let run = LocalRun {
        cfg,
        config_file,
        run_dir: &dir,
        max_steps: Some(steps),
        device: Device::Cpu,
        resume: None,
        allow_config_change: false,
    };
    let summary = run.run(on_log);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(summary?)
}

/// Two bare loops at once on two threads of this process (1 libtorch thread each), with no
/// communication between them: what the machine gives two replicas side by side. Both loops meet
/// at a barrier after their first step, so the timed steps overlap (their set-up, data loading
/// included, takes unequal time); the rate is both loops' examples after that step over the time
/// until the later one finishes. With `lockstep` they also meet after every step, as synchronous
/// data-parallel ranks must: the ceiling of a runtime whose all-reduce and coordination cost
/// nothing, but whose ranks still wait for each other's uneven routing and run their phases at once.
pub fn bench_local_pair(
    cfg: &RunConfig,
    config_file: &str,
    batch: usize,
    steps: u64,
    lockstep: bool,
) -> Result<BenchResult, RuntimeError> {
    use std::sync::Barrier;
    use std::time::Instant;
    let mut cfg = bench_config(cfg);
    cfg.train.batch_size = batch;
    cfg.train.log_every = 1;
    let steps = steps.max(2);
    let barrier = Barrier::new(2);
    // Each loop meets the other after step 1, and in lock-step after every later step but the last.
    let meetings = if lockstep { steps - 1 } else { 1 };
    let loop_once = || -> Result<(Instant, Instant), RuntimeError> {
        tch::set_num_threads(1);
        let (mut started, mut finished, mut met) = (None, None, 0);
        let run = run_local(&cfg, config_file, steps, "pair", &mut |line, _| {
            if line.step == 1 || (lockstep && line.step < steps) {
                barrier.wait();
                met += 1;
            }
            if line.step == 1 {
                started = Some(Instant::now());
            }
            if line.step == steps {
                finished = Some(Instant::now());
            }
        });
        // A loop that stopped early still keeps its remaining meetings, so the other is never left
        // waiting at the barrier.
        for _ in met..meetings {
            barrier.wait();
        }
        run?;
        started.zip(finished).ok_or_else(|| RuntimeError::Protocol("a benchmark loop stopped early".into()))
    };
    let results: Vec<Result<(Instant, Instant), RuntimeError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2).map(|_| scope.spawn(loop_once)).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(RuntimeError::Protocol("a benchmark loop panicked".into()))))
            .collect()
    });
    let spans = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    let start = spans.iter().map(|s| s.0).min().ok_or_else(|| RuntimeError::Protocol("no loops ran".into()))?;
    let end = spans.iter().map(|s| s.1).max().ok_or_else(|| RuntimeError::Protocol("no loops ran".into()))?;
    let examples = (2 * (steps - 1) * batch as u64) as f64;
    Ok(BenchResult {
        workers: 2,
        steps,
        examples_per_sec: examples / (end - start).as_secs_f64().max(1e-9),
        split: None,
    })
}
