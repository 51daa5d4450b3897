//! The coordinator actor: drives the steps, holds the reward baselines, decides commit or abort,
//! logs, and ends the run with an evaluation on rank 0's replica.
//!
//! Size (~600 lines): still mixes fan-out, set-up, the step protocol, checkpoints, logging and
//! evaluation; issue #22 cuts it by concern (with the one run driver shared with the local loop), so it
//! is not split piecemeal before that re-cut.
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use d2nn_common::checkpoint::{CheckpointMeta, CheckpointStore, Position, WriteSteps};
use d2nn_common::protocol::Remote;
use d2nn_common::protocol::{Abort, Commit, Committed, StepOrder, StepOutcome, StepReport};
use d2nn_common::rl::{BaselineStore, EmaBaseline};
use d2nn_common::train::{
    metrics_line, open_resume, resumed_baseline, steps_per_epoch, MetricsWriter, RunDir, StepStats, Summary,
};
use d2nn_worker::collective::in_process_group;
use d2nn_worker::{
    EvalRequest, Port, SaveRequest, WorkerActor, WorkerArgs, WorkerInfo, WorkerMsg, WorkerOptions, WorkerSpec,
};
use indicatif::{ProgressBar, ProgressStyle};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tch::Device;
use tokio::sync::oneshot;

use d2nn_common::config::RunConfig;

use super::cluster::{Cluster, Liveness};
use super::{EmbeddedRun, OnWorkerError, RuntimeError, RuntimeOptions, StepRecord};

mod elastic;

use elastic::generation_plan;

pub(super) struct Coordinator;

pub(super) struct CoordArgs {
    pub run: EmbeddedRun,
    /// The worker processes of a multi-process run; None: spawn the workers in this process.
    pub cluster: Option<Cluster>,
    pub done: oneshot::Sender<Result<Summary, RuntimeError>>,
}

/// Its own tick: one step per message, so supervision events are handled between steps.
pub(super) enum CoordMsg {
    NextStep,
}

impl ractor::Message for CoordMsg {}

pub(super) struct CoordState {
    run: EmbeddedRun,
    done: Option<oneshot::Sender<Result<Summary, RuntimeError>>>,
    workers: Vec<ActorRef<WorkerMsg>>,
    run_dir: RunDir,
    metrics: MetricsWriter,
    baseline: EmaBaseline,
    has_controllers: bool,
    train_examples: usize,
    steps_per_epoch: u64,
    total_steps: u64,
    last_step: u64,
    step: u64,
    /// The step this process started at (the resumed one): throughput counts only steps run here.
    first_step: u64,
    started: Instant,
    train_seconds: f64,
    window: StepStats,
    window_start: Instant,
    /// compute, all-reduce, barrier wait and coordination seconds of the window's steps.
    window_split: [f64; 4],
    bar: ProgressBar,
    store: CheckpointStore,
    /// The step and directory of the newest checkpoint of this run's state (the resumed one first).
    last_checkpoint: Option<(u64, PathBuf)>,
    cluster: Option<Cluster>,
    /// The step whose commit is being sent: if a worker is lost now, the survivors have applied it.
    committing: Option<u64>,
}

/// Sends one request to every worker, then awaits the replies in rank order. All requests go out
/// before any reply is awaited: the ranks' steps meet in the all-reduce. In a cluster, a worker
/// declared lost ends the wait at once (`guard`: the liveness and each rank's node).
async fn gather<T>(
    workers: &[ActorRef<WorkerMsg>],
    timeout: Option<Duration>,
    guard: Option<(&Liveness, Vec<u64>)>,
    make: impl Fn(Port<T>) -> WorkerMsg,
) -> Result<Vec<T>, RuntimeError>
where
    T: Send + 'static,
{
    let mut pending = Vec::with_capacity(workers.len());
    for (rank, w) in workers.iter().enumerate() {
        let (tx, rx) = oneshot::channel();
        w.cast(make(tx.into())).map_err(|e| RuntimeError::WorkerDied { rank, reason: e.to_string() })?;
        pending.push(rx);
    }
    let lost = async {
        match &guard {
            Some((liveness, nodes)) => liveness.first_lost(nodes).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(lost);
    let mut out = Vec::with_capacity(workers.len());
    for (rank, rx) in pending.into_iter().enumerate() {
        let answer = async {
            match timeout {
                Some(t) => tokio::time::timeout(t, rx).await.map_err(|_| RuntimeError::Worker {
                    rank,
                    message: format!("no reply within {:.0} s", t.as_secs_f64()),
                }),
                None => Ok(rx.await),
            }
        };
        let reply = tokio::select! {
            reply = answer => reply?,
            (rank, reason) = &mut lost => return Err(RuntimeError::WorkerLost { rank, reason }),
        };
        match reply.map(Remote::flatten) {
            Ok(Ok(v)) => out.push(v),
            Ok(Err(message)) => return Err(RuntimeError::Worker { rank, message }),
            Err(_) => return Err(RuntimeError::WorkerDied { rank, reason: "stopped before replying".into() }),
        }
    }
    Ok(out)
}

/// What every rank is built from (the run minus its callbacks, which need not be `Sync`).
struct Plan<'a> {
    cfg: &'a RunConfig,
    config_file: &'a str,
    workers: usize,
    device: Device,
    threads_per_worker: Option<usize>,
    options: &'a RuntimeOptions,
    resume: Option<&'a Path>,
}

async fn setup(myself: &ActorRef<CoordMsg>, run: Plan<'_>) -> Result<Vec<ActorRef<WorkerMsg>>, RuntimeError> {
    let n = run.workers;
    let threads = run.threads_per_worker.unwrap_or_else(|| (super::default_workers() / n).max(1));
    let mut workers = Vec::with_capacity(n);
    let collectives = in_process_group(run.options.collective, n, run.device, run.options.collective_timeout)?;
    for (rank, collective) in collectives.into_iter().enumerate() {
        let device = match run.device {
            Device::Cuda(first) => Device::Cuda(first + rank),
            d => d,
        };
        let fail_at_step = run.options.fail_at.filter(|&(r, _)| r == rank).map(|(_, s)| s);
        let spec = WorkerSpec {
            rank,
            world: n,
            cfg: run.cfg.clone(),
            config_file: run.config_file.to_string(),
            device,
            threads: Some(threads),
            options: WorkerOptions { fail_at_step, bucket_bytes: run.options.bucket_bytes },
            resume: run.resume.map(Path::to_path_buf),
        };
        let args = WorkerArgs { spec, collective };
        match Actor::spawn_linked(Some(format!("d2nn-worker-{rank}")), WorkerActor, args, myself.get_cell()).await {
            Ok((w, _)) => workers.push(w),
            Err(e) => {
                stop_all(&workers);
                return Err(RuntimeError::Spawn { rank, message: e.to_string() });
            }
        }
    }
    Ok(workers)
}

fn stop_all(workers: &[ActorRef<WorkerMsg>]) {
    for w in workers {
        w.stop(Some("run over".into()));
    }
}

/// Every replica must hold the same data and start from the same parameters.
fn check_infos(infos: &[WorkerInfo]) -> Result<(), RuntimeError> {
    let first = &infos[0];
    for i in &infos[1..] {
        if i.train_examples != first.train_examples
            || i.num_actions != first.num_actions
            || i.digest.sha256 != first.digest.sha256
        {
            return Err(RuntimeError::Protocol(format!(
                "replicas differ before step 0: rank 0 {first:?}, rank {} {i:?}",
                i.rank
            )));
        }
    }
    Ok(())
}

impl CoordState {
    /// Builds the state; a failure stops whatever workers were started and tells the worker
    /// processes of a cluster why.
    async fn start(
        myself: &ActorRef<CoordMsg>,
        run: EmbeddedRun,
        mut cluster: Option<Cluster>,
        done: oneshot::Sender<Result<Summary, RuntimeError>>,
    ) -> Result<CoordState, (RuntimeError, oneshot::Sender<Result<Summary, RuntimeError>>)> {
        let mut workers = Vec::new();
        match Self::try_start(myself, run, &mut cluster, &mut workers).await {
            Ok(mut state) => {
                state.done = Some(done);
                state.cluster = cluster;
                Ok(state)
            }
            Err(e) => {
                stop_all(&workers);
                if let Some(c) = &cluster {
                    c.finish(false, &e.to_string()).await;
                }
                Err((e, done))
            }
        }
    }

    async fn try_start(
        myself: &ActorRef<CoordMsg>,
        run: EmbeddedRun,
        cluster: &mut Option<Cluster>,
        workers: &mut Vec<ActorRef<WorkerMsg>>,
    ) -> Result<CoordState, RuntimeError> {
        let started = Instant::now();
        let resume = match run.resume.as_deref() {
            Some(p) => Some(open_resume(p, &run.cfg, run.allow_config_change)?),
            None => None,
        };
        let run_dir = RunDir::create(&run.run_dir)?;
        run_dir.write_config(&run.cfg)?;
        let resume_dir = resume.as_ref().map(|(dir, _)| dir.clone());
        *workers = match cluster.as_mut() {
            Some(c) => c.form(&generation_plan(&run, resume_dir)?).await?,
            None => {
                let plan = Plan {
                    cfg: &run.cfg,
                    config_file: &run.config_file,
                    workers: run.workers,
                    device: run.device,
                    threads_per_worker: run.threads_per_worker,
                    options: &run.options,
                    resume: resume_dir.as_deref(),
                };
                setup(myself, plan).await?
            }
        };
        let guard = cluster.as_ref().map(|c| (&c.liveness, c.member_nodes()));
        let infos = gather(workers, run.options.step_timeout, guard, WorkerMsg::Info).await?;
        check_infos(&infos)?;
        let t = &run.cfg.train;
        let train_n = infos[0].train_examples;
        let num_actions = &infos[0].num_actions;
        let steps_per_epoch = steps_per_epoch(&run.cfg, &run.config_file, train_n)?;
        let mut baseline = EmaBaseline::new(num_actions, t.baseline_decay);
        let mut step = 0;
        if let Some((dir, meta)) = &resume {
            meta.check_data(dir, train_n, steps_per_epoch)?;
            baseline = resumed_baseline(dir, meta, num_actions)?;
            step = meta.position.step;
            tracing::info!(checkpoint = %dir.display(), step, workers = workers.len(), "resumed");
        }
        let metrics = if resume.is_some() { run_dir.resume_metrics(step)? } else { run_dir.metrics_writer(false)? };
        let total_steps = steps_per_epoch * t.epochs;
        let last_step = run.max_steps.map_or(total_steps, |m| m.min(total_steps));
        let bar = if run.progress { ProgressBar::new(last_step) } else { ProgressBar::hidden() };
        if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed_precise} {msg}") {
            bar.set_style(style);
        }
        Ok(CoordState {
            baseline,
            has_controllers: !num_actions.is_empty(),
            train_examples: train_n,
            store: CheckpointStore::of_run(&run_dir.path),
            last_checkpoint: resume.map(|(dir, meta)| (meta.position.step, dir)),
            run,
            done: None,
            workers: workers.clone(),
            run_dir,
            metrics,
            steps_per_epoch,
            total_steps,
            last_step,
            step,
            first_step: step,
            started,
            train_seconds: 0.0,
            window: StepStats::default(),
            window_start: Instant::now(),
            window_split: [0.0; 4],
            bar,
            cluster: None,
            committing: None,
        })
    }

    /// The liveness of the current generation's members, when the workers are remote.
    fn guard(&self) -> Option<(&Liveness, Vec<u64>)> {
        self.cluster.as_ref().map(|c| (&c.liveness, c.member_nodes()))
    }

    /// One turn of the run: a stop request ends it with a checkpoint; the last step with a checkpoint
    /// and the evaluation; otherwise the next step runs (and a periodic checkpoint when one is due).
    async fn advance(&mut self) -> Result<Option<Summary>, RuntimeError> {
        if self.run.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
            self.bar.finish_and_clear();
            let checkpoint = self.checkpoint_unless_saved().await?;
            return Err(RuntimeError::Stopped { step: self.step, checkpoint });
        }
        if self.step >= self.last_step {
            self.checkpoint_unless_saved().await?;
            return self.finish().await.map(Some);
        }
        if self.cluster.as_ref().is_some_and(Cluster::has_newcomer) {
            self.bar.suspend(|| tracing::info!(step = self.step, "a worker joined; re-forming the cluster"));
            self.reform().await?;
        }
        self.run_step().await?;
        if self.run.cfg.checkpoint.due(self.step) {
            self.checkpoint().await?;
        }
        Ok(None)
    }

    async fn checkpoint_unless_saved(&mut self) -> Result<PathBuf, RuntimeError> {
        match &self.last_checkpoint {
            Some((step, dir)) if *step == self.step => Ok(dir.clone()),
            _ => self.checkpoint().await,
        }
    }

    /// Rank 0 writes the tensor files into a staging directory (every replica is identical), then
    /// the coordinator, which owns the position and the baselines, completes the checkpoint.
    async fn checkpoint(&mut self) -> Result<PathBuf, RuntimeError> {
        let started = Instant::now();
        let mut writes = WriteSteps::unlimited();
        let staging = self.store.begin(self.step, &mut writes)?;
        let cfg = &self.run.cfg;
        let req = SaveRequest { dir: staging.clone(), step: self.step, val_metric: cfg.checkpoint.keep_best };
        let saved =
            gather(&self.workers[..1], None, self.guard(), |p| WorkerMsg::Save(req.clone().into(), p)).await?.remove(0);
        let position = Position::at(self.step, self.steps_per_epoch, self.train_examples);
        let meta = CheckpointMeta::new(cfg, position, &self.baseline, self.workers.len(), saved);
        let dir = self.store.commit(&staging, &meta, &cfg.checkpoint, &mut writes)?;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(step = self.step, dir = %dir.display(), seconds, "checkpoint");
        self.last_checkpoint = Some((self.step, dir.clone()));
        Ok(dir)
    }

    /// One step of the protocol: orders → reports → commit or abort → acknowledgements.
    async fn run_step(&mut self) -> Result<(), RuntimeError> {
        let step = self.step;
        let t = &self.run.cfg.train;
        let timeout = self.run.options.step_timeout;
        let epoch = step / self.steps_per_epoch;
        let lr = t.schedule.lr_at(t.lr, step, self.total_steps);
        let baselines_used = self.baseline.node_values();
        let order = StepOrder {
            step,
            epoch,
            step_in_epoch: step % self.steps_per_epoch,
            lr,
            baselines: baselines_used.clone(),
        };
        let started = Instant::now();
        let reports: Vec<StepReport> =
            gather(&self.workers, timeout, self.guard(), |p| WorkerMsg::Step(order.clone().into(), p)).await?;
        let mut failures = Vec::new();
        for (rank, r) in reports.iter().enumerate() {
            if r.rank != rank || r.step != step {
                return Err(RuntimeError::Protocol(format!(
                    "rank {rank} answered step {step} as rank {} step {}",
                    r.rank, r.step
                )));
            }
            if let StepOutcome::Failed(e) = &r.outcome {
                failures.push((rank, e.clone()));
            }
        }
        let verdicts: Vec<bool> = reports.iter().map(|r| r.all_ranks_ok).collect();
        if failures.is_empty() && verdicts.iter().any(|&ok| !ok) {
            failures.push((0, format!("the all-reduced status contradicts the reports: {verdicts:?}")));
        }
        let mut record = StepRecord {
            step,
            committed: failures.is_empty(),
            pooled: None,
            baselines_used,
            baselines_after: Vec::new(),
            digests: Vec::new(),
            failures: failures.clone(),
            wall_seconds: 0.0,
        };
        let acks: Vec<Committed> = if failures.is_empty() {
            let mut pooled = StepStats::default();
            for r in &reports {
                if let StepOutcome::Ok(stats) = &r.outcome {
                    pooled.merge(stats)?;
                }
            }
            if pooled.rewards.actions_per_node() != self.baseline.values.iter().map(Vec::len).collect::<Vec<_>>() {
                return Err(RuntimeError::Protocol(format!(
                    "step {step}: reward statistics of shape {:?} for a graph with {:?} actions",
                    pooled.rewards.actions_per_node(),
                    self.baseline.values.iter().map(Vec::len).collect::<Vec<_>>()
                )));
            }
            self.baseline.update(&pooled.rewards);
            let want_digest = self.run.options.digest_every.is_some_and(|k| (step + 1).is_multiple_of(k.max(1)));
            let commit = Commit { step, baselines: self.baseline.node_values(), want_digest };
            self.committing = Some(step);
            let acks =
                gather(&self.workers, timeout, self.guard(), |p| WorkerMsg::Commit(commit.clone().into(), p)).await?;
            self.committing = None;
            self.window.merge(&pooled)?;
            record.pooled = Some(pooled);
            acks
        } else {
            let abort = Abort { step, reason: super::describe(&failures) };
            gather(&self.workers, timeout, self.guard(), |p| WorkerMsg::Abort(abort.clone().into(), p)).await?
        };
        let wall = started.elapsed().as_secs_f64();
        record.wall_seconds = wall;
        record.baselines_after = self.baseline.node_values();
        record.digests = acks.iter().filter_map(|a| a.digest.clone()).collect();
        self.train_seconds += wall;
        let n = reports.len() as f64;
        let compute = reports.iter().map(|r| r.compute_seconds).sum::<f64>() / n
            + acks.iter().map(|a| a.update_seconds).sum::<f64>() / n;
        let allreduce = reports.iter().map(|r| r.allreduce_seconds).sum::<f64>() / n;
        let wait = reports.iter().map(|r| r.wait_seconds).sum::<f64>() / n;
        let coordination = (wall - compute - allreduce - wait).max(0.0);
        for (slot, v) in self.window_split.iter_mut().zip([compute, allreduce, wait, coordination]) {
            *slot += v;
        }
        if let Some(on_step) = self.run.on_step.as_mut() {
            on_step(&record);
        }
        if record.digests.iter().any(|d| d.sha256 != record.digests[0].sha256) {
            return Err(RuntimeError::Diverged { step, digests: record.digests });
        }
        self.step += 1;
        if !failures.is_empty() {
            match self.run.options.on_worker_error {
                OnWorkerError::Stop => return Err(RuntimeError::StepFailed { step, failures }),
                OnWorkerError::SkipBatch => {
                    tracing::warn!(step, failures = %super::describe(&failures), "step aborted; batch skipped")
                }
            }
        }
        self.log(epoch, lr)
    }

    fn log(&mut self, epoch: u64, lr: f64) -> Result<(), RuntimeError> {
        let step = self.step;
        self.bar.set_position(step);
        if !(step.is_multiple_of(self.run.cfg.train.log_every.max(1)) || step == self.last_step) {
            return Ok(());
        }
        let mut line = metrics_line(
            &self.run.cfg,
            &self.window,
            &self.baseline.node_values(),
            step,
            epoch,
            lr,
            self.window_start.elapsed().as_secs_f64(),
            self.has_controllers,
        );
        let [compute, allreduce, wait, coordination] = self.window_split;
        line.compute_seconds = Some(compute);
        line.allreduce_seconds = Some(allreduce);
        line.wait_seconds = Some(wait);
        line.coordination_seconds = Some(coordination);
        RunDir::append_metrics(&mut self.metrics, &line)?;
        self.bar.set_message(format!(
            "epoch {} loss {:.4} acc {:.3} cost {:.3} {:.0} ex/s",
            line.epoch + 1,
            line.loss,
            line.train_accuracy,
            line.mean_cost_fraction,
            line.examples_per_sec
        ));
        if let Some(on_log) = self.run.on_log.as_mut() {
            on_log(&line, self.last_step);
        }
        self.window = StepStats::default();
        self.window_start = Instant::now();
        self.window_split = [0.0; 4];
        Ok(())
    }

    /// The end of a successful run: rank 0 saves its replica and evaluates it.
    async fn finish(&mut self) -> Result<Summary, RuntimeError> {
        self.bar.finish_and_clear();
        let t = &self.run.cfg.train;
        let req = EvalRequest {
            save_model: Some(self.run_dir.file(RunDir::MODEL)),
            steps: self.step,
            wall_seconds: self.started.elapsed().as_secs_f64(),
            examples_per_sec: (self.step - self.first_step) as f64 * t.batch_size as f64 / self.train_seconds.max(1e-9),
            workers: self.workers.len(),
        };
        let mut summary =
            gather(&self.workers[..1], None, self.guard(), |p| WorkerMsg::Evaluate(req.clone().into(), p))
                .await?
                .remove(0);
        summary.epochs = self.step.div_ceil(self.steps_per_epoch);
        self.run_dir.write_summary(&summary)?;
        Ok(summary)
    }

    fn end(&mut self, myself: &ActorRef<CoordMsg>, result: Result<Summary, RuntimeError>) {
        self.bar.finish_and_clear();
        if let Some(done) = self.done.take() {
            let _ = done.send(result);
        }
        stop_all(&self.workers);
        myself.stop(None);
    }
}

impl Actor for Coordinator {
    type Msg = CoordMsg;
    type State = CoordState;
    type Arguments = CoordArgs;

    async fn pre_start(&self, myself: ActorRef<CoordMsg>, args: CoordArgs) -> Result<CoordState, ActorProcessingErr> {
        match CoordState::start(&myself, args.run, args.cluster, args.done).await {
            Ok(state) => Ok(state),
            Err((e, done)) => {
                let text = e.to_string();
                let _ = done.send(Err(e));
                Err(text.into())
            }
        }
    }

    async fn post_start(&self, myself: ActorRef<CoordMsg>, _state: &mut CoordState) -> Result<(), ActorProcessingErr> {
        Ok(myself.cast(CoordMsg::NextStep)?)
    }

    async fn handle(
        &self,
        myself: ActorRef<CoordMsg>,
        msg: CoordMsg,
        state: &mut CoordState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CoordMsg::NextStep => {
                if state.done.is_none() {
                    return Ok(());
                }
                let outcome = match state.advance().await {
                    Err(e) if state.cluster.is_some() => state.recover(e).await.map(|()| None),
                    other => other,
                };
                match outcome {
                    Ok(None) => myself.cast(CoordMsg::NextStep)?,
                    Ok(Some(summary)) => {
                        state.close_cluster(true, "training finished").await;
                        state.end(&myself, Ok(summary))
                    }
                    Err(e) => {
                        // Also a stop on request: the run is not finished, so a restarted job must
                        // find its workers failed, not complete.
                        state.close_cluster(false, &e.to_string()).await;
                        state.end(&myself, Err(e))
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<CoordMsg>,
        event: SupervisionEvent,
        state: &mut CoordState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, e) => (cell, e.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "no reason given".into()))
            }
            _ => return Ok(()),
        };
        if state.done.is_some() {
            let rank = state.workers.iter().position(|w| w.get_id() == cell.get_id());
            let err = match rank {
                Some(rank) => RuntimeError::WorkerDied { rank, reason },
                None => RuntimeError::Coordinator(format!("an unknown child stopped: {reason}")),
            };
            state.end(&myself, Err(err));
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<CoordMsg>, state: &mut CoordState) -> Result<(), ActorProcessingErr> {
        stop_all(&state.workers);
        Ok(())
    }
}
