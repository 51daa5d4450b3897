//! The coordinator: one actor that drives data-parallel training on N replicas, spawned in this
//! process (`train_embedded`, gradients reduced through shared memory or NCCL) or living in worker
//! processes that joined over the network (`train_cluster`, a TCP ring or NCCL). The protocol and
//! its state machine are in `docs/runtime.md`; `docs/architecture.md` maps the files.
mod actor;
mod balance;
mod bench;
mod cluster;
mod elastic;
mod liveness;
mod outputs;
mod own_data;
mod replicas;
mod step;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use d2nn_common::config::RunConfig;
use d2nn_common::train::{MetricsLine, StepStats, Summary};
use d2nn_worker::collective::{Backend, CollectiveError};
use d2nn_worker::protocol::ParamDigest;
use d2nn_worker::replica::Faults;
use ractor::Actor;
use tch::Device;

pub use bench::{bench_local, bench_local_pair, bench_runtime, BenchResult};
pub use cluster::ClusterOptions;

/// What the run does when a worker's step fails (the step is aborted on every replica either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnWorkerError {
    /// End the run with the error.
    #[default]
    Stop,
    /// Go on: the aborted batch is handed out again at the next step (skipped for the epoch after
    /// `data::MAX_ATTEMPTS` aborts, and counted in the summary's coverage).
    SkipBatch,
}

/// Runtime knobs that are not part of the run's config.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    pub on_worker_error: OnWorkerError,
    /// Ask every replica for a parameter digest after every k-th step and fail the run if they
    /// differ (costs one pass over the parameters per replica). None: never.
    pub digest_every: Option<u64>,
    /// Failures injected into rank `.0`'s replica (tests; in-process runs).
    pub faults: Option<(usize, Faults)>,
    /// A worker that does not answer within this time fails the run (None: wait; a worker that
    /// dies is noticed without a timeout).
    pub step_timeout: Option<Duration>,
    /// Rank 0 must have written a checkpoint's tensors, or evaluated the model at the end, within
    /// this time: a replica that is alive but stuck must not hang the run.
    pub save_timeout: Duration,
    pub bucket_bytes: usize,
    /// How the ranks reduce gradients (NCCL on GPUs by default).
    pub collective: Backend,
    /// Bounds NCCL's waits: joining the communicator and each reduction.
    pub collective_timeout: Duration,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            on_worker_error: OnWorkerError::Stop,
            digest_every: None,
            faults: None,
            step_timeout: None,
            save_timeout: Duration::from_secs(600),
            bucket_bytes: d2nn_worker::replica::grad_buffer::DEFAULT_BUCKET_BYTES,
            collective: Backend::Auto,
            collective_timeout: Duration::from_secs(120),
        }
    }
}

/// What happened at one step, for observers (tests, dashboards).
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    pub step: u64,
    /// Per rank, the training examples it was ordered to train on.
    pub examples: Vec<Vec<u32>>,
    pub committed: bool,
    /// All ranks' statistics merged in rank order (None when aborted).
    pub pooled: Option<StepStats>,
    /// The baselines the step's loss used, and the coordinator's after folding it in.
    pub baselines_used: Vec<f64>,
    pub baselines_after: Vec<f64>,
    /// Per rank, when digests were asked for (always on abort).
    pub digests: Vec<ParamDigest>,
    /// (rank, error) of the ranks whose step failed.
    pub failures: Vec<(usize, String)>,
    /// From sending the orders to the last commit/abort acknowledgement.
    pub wall_seconds: f64,
}

pub type LogFn = Box<dyn FnMut(&MetricsLine, u64) + Send>;
pub type StepFn = Box<dyn FnMut(&StepRecord) + Send>;

/// One coordinated run: `d2nn train --workers N` (replicas in this process) or `d2nn coordinator`
/// (replicas in worker processes).
pub struct TrainRun {
    pub cfg: RunConfig,
    /// The config file's name, for error messages.
    pub config_file: String,
    pub run_dir: PathBuf,
    pub workers: usize,
    /// Stop after this many global steps; schedules still follow the configured epochs.
    pub max_steps: Option<u64>,
    /// Rank 0's device; on CUDA rank r uses the r-th device after it.
    pub device: Device,
    /// libtorch threads per worker; None: the cores split evenly, at least one each.
    pub threads_per_worker: Option<usize>,
    pub options: RuntimeOptions,
    /// Sees every logged line with the total number of steps.
    pub on_log: Option<LogFn>,
    pub on_step: Option<StepFn>,
    /// Draw a progress bar on the terminal.
    pub progress: bool,
    /// Continue from this checkpoint (a checkpoint, checkpoints or run directory) with any number
    /// of workers; `max_steps` still counts global steps from 0.
    pub resume: Option<PathBuf>,
    /// Accept differences in the keys `checkpoint::check_resume_config` calls safe.
    pub allow_config_change: bool,
    /// Set (by a signal handler) to stop: the step in flight finishes, a checkpoint is written, and
    /// the run ends with [`RuntimeError::Stopped`].
    pub stop: Option<Arc<AtomicBool>>,
}

impl TrainRun {
    pub fn new(cfg: RunConfig, config_file: impl Into<String>, run_dir: impl Into<PathBuf>, workers: usize) -> Self {
        TrainRun {
            cfg,
            config_file: config_file.into(),
            run_dir: run_dir.into(),
            workers,
            max_steps: None,
            device: Device::Cpu,
            threads_per_worker: None,
            options: RuntimeOptions::default(),
            on_log: None,
            on_step: None,
            progress: false,
            resume: None,
            allow_config_change: false,
            stop: None,
        }
    }
}

pub(super) fn describe(failures: &[(usize, String)]) -> String {
    failures.iter().map(|(rank, e)| format!("rank {rank}: {e}")).collect::<Vec<_>>().join("; ")
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("--workers must be at least 1")]
    NoWorkers,
    #[error("{file}: key `train.batch_size`: {batch_size} is not divisible by the number of workers ({workers})")]
    BatchNotDivisible { file: String, batch_size: usize, workers: usize },
    #[error(
        "{file}: key `train.bag_size`: each of the {workers} workers gets {} of the {batch_size} examples of a \
         step, which is not a whole number of mini-bags of {bag_size}; use a number of workers that leaves \
         each a multiple of {bag_size}",
        batch_size / workers
    )]
    BagsNotDivisible { file: String, batch_size: usize, bag_size: usize, workers: usize },
    #[error(transparent)]
    Common(#[from] d2nn_common::Error),
    #[error("worker rank {rank} failed to start: {message}")]
    Spawn { rank: usize, message: String },
    #[error("worker rank {rank}: {message}")]
    Worker { rank: usize, message: String },
    #[error("worker rank {rank} stopped: {reason}")]
    WorkerDied { rank: usize, reason: String },
    /// A worker process of a cluster was declared lost (disconnected, or missed its heartbeats).
    #[error("worker rank {rank} lost: {reason}")]
    WorkerLost { rank: usize, reason: String },
    /// Forming or running the cluster of worker processes failed.
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("step {step} failed ({}); it was aborted on every replica and the run stopped", describe(.failures))]
    StepFailed { step: u64, failures: Vec<(usize, String)> },
    #[error("step {step}: the replicas' parameters differ: {digests:?}")]
    Diverged { step: u64, digests: Vec<ParamDigest> },
    #[error(transparent)]
    Collective(#[from] CollectiveError),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("coordinator: {0}")]
    Coordinator(String),
    /// Not a failure: the run was asked to stop, and its state is in `checkpoint`.
    #[error("stopped on request after step {step}; checkpoint {}", .checkpoint.display())]
    Stopped { step: u64, checkpoint: PathBuf },
}

/// The number of workers `--workers` defaults to: one per core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Trains with `run.workers` in-process workers and writes the run directory like the local loop
/// (plus `workers` in summary.json and the step-time split in metrics.jsonl).
pub async fn train_embedded(run: TrainRun) -> Result<Summary, RuntimeError> {
    check_world(&run.cfg, &run.config_file, run.workers)?;
    run_coordinator(run, None).await
}

/// Whether `workers` replicas can share a step of `cfg`: the global batch splits evenly, and
/// each share is a whole number of mini-bags (a bag never spans two workers).
pub(crate) fn check_world(cfg: &RunConfig, file: &str, workers: usize) -> Result<(), RuntimeError> {
    let (batch_size, bag_size) = (cfg.train.batch_size, cfg.train.bag_size.max(1));
    if workers == 0 {
        return Err(RuntimeError::NoWorkers);
    }
    if !batch_size.is_multiple_of(workers) {
        return Err(RuntimeError::BatchNotDivisible { file: file.into(), batch_size, workers });
    }
    if !(batch_size / workers).is_multiple_of(bag_size) {
        return Err(RuntimeError::BagsNotDivisible { file: file.into(), batch_size, bag_size, workers });
    }
    Ok(())
}

/// Trains with `run.workers` worker processes that join this coordinator over the network
/// (`d2nn worker --join`), reducing gradients over a TCP ring (NCCL between GPU workers). A worker
/// lost mid-run is dropped and training continues with the rest; one that joins later is taken in
/// at the next step. The run directory must be visible to rank 0 (checkpoints) and every worker
/// (replicas load them).
pub async fn train_cluster(run: TrainRun, options: ClusterOptions) -> Result<Summary, RuntimeError> {
    check_world(&run.cfg, &run.config_file, run.workers)?;
    let cluster = cluster::Cluster::start(options, run.workers, run.stop.clone()).await?;
    run_coordinator(run, Some(cluster)).await
}

async fn run_coordinator(run: TrainRun, cluster: Option<cluster::Cluster>) -> Result<Summary, RuntimeError> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let args = actor::CoordArgs { run, cluster, done: done_tx };
    let spawned = Actor::spawn(None, actor::Coordinator, args).await;
    let handle = match spawned {
        Ok((_, handle)) => Some(handle),
        // A failed start has sent its typed error through `done`, unless it panicked.
        Err(e) => {
            return match done_rx.await {
                Ok(result) => result,
                Err(_) => Err(RuntimeError::Coordinator(format!("failed to start: {e}"))),
            }
        }
    };
    let result = done_rx.await.map_err(|_| RuntimeError::Coordinator("stopped without a result".into()));
    if let Some(h) = handle {
        let _ = h.await;
    }
    result?
}

#[cfg(test)]
mod tests;
