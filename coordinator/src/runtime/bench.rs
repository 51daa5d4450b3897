//! Throughput benchmarks (not tests): the runtime with N workers, and the bare local loop, on the
//! same config and steps. `d2nn bench runtime` wires these to the command line.
use std::path::PathBuf;

use d2nn_common::config::RunConfig;
use d2nn_common::train::LocalRun;
use tch::Device;

use super::{train_embedded, EmbeddedRun, RuntimeError};

#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    pub workers: usize,
    pub steps: u64,
    /// Training examples per second over all steps (step time only: no setup, no evaluation).
    pub examples_per_sec: f64,
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
    let mut run = EmbeddedRun::new(cfg, config_file, &dir, workers);
    run.max_steps = Some(steps);
    run.threads_per_worker = Some(threads_per_worker);
    let summary = train_embedded(run).await;
    let _ = std::fs::remove_dir_all(&dir);
    let summary = summary?;
    Ok(BenchResult { workers, steps: summary.steps, examples_per_sec: summary.examples_per_sec })
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
    let dir = scratch_dir("local");
    let run = LocalRun {
        cfg: &cfg,
        config_file,
        run_dir: &dir,
        max_steps: Some(steps),
        device: Device::Cpu,
        resume: None,
        allow_config_change: false,
    };
    let summary = run.run(&mut |_, _| {});
    let _ = std::fs::remove_dir_all(&dir);
    let summary = summary?;
    Ok(BenchResult { workers: 1, steps: summary.steps, examples_per_sec: summary.examples_per_sec })
}
