//! The engine: one OS thread per rank that owns the replica (model, optimizer, dataset, gradient
//! buffer, collective) and executes the protocol's requests one at a time. The actor talks to it
//! through a channel and awaits a oneshot reply, so neither libtorch nor the blocking collective
//! ever runs on the async runtime's threads.
use std::sync::mpsc;
use std::time::Instant;

use d2nn_common::checkpoint::{self, SavedTensors, WriteSteps};
use d2nn_common::config::RunConfig;
use d2nn_common::data::Dataset;
use d2nn_common::exec::{param_digest, D2nn};
use d2nn_common::optim::{self, Optimizer};

use d2nn_common::rl::BaselineStore;
use d2nn_common::train::{
    apply_update, build_model, restore_replica, summarize, train_step, validation_accuracy, zero_grads, StepContext,
    StepStats, Summary,
};
use tch::{Device, Tensor};
use tokio::sync::oneshot;

use super::grad_buffer::FlatGrads;
use super::ReplicaHost;
use crate::collective::Collective;
use crate::protocol::{
    Abort, Acknowledged, Commit, EvalRequest, ParamDigest, ReplicaSpec, SaveRequest, StepOrder, StepOutcome,
    StepReport, WorkerInfo,
};
use crate::Error;

type Reply<T> = oneshot::Sender<Result<T, Error>>;

enum Cmd {
    Step(StepOrder, Reply<StepReport>),
    Commit(Commit, Reply<Acknowledged>),
    Abort(Abort, Reply<Acknowledged>),
    Evaluate(EvalRequest, Reply<Summary>),
    Save(SaveRequest, Reply<SavedTensors>),
}

/// The actor's side of an engine thread. Dropping it (or [`EngineHandle::close`]) ends the thread
/// after its current request.
pub struct EngineHandle {
    rank: usize,
    /// None once closed.
    tx: Option<mpsc::Sender<Cmd>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EngineHandle {
    /// Starts the engine thread and waits until its replica is built.
    pub async fn start(
        spec: ReplicaSpec,
        host: ReplicaHost,
        collective: Box<dyn Collective>,
    ) -> Result<(EngineHandle, WorkerInfo), Error> {
        let rank = spec.rank;
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("d2nn-rank{rank}"))
            .spawn(move || engine_main(spec, host, collective, rx, ready_tx))
            .map_err(|e| Error::Protocol(format!("rank {rank}: cannot start the engine thread: {e}")))?;
        let info = ready_rx.await.map_err(|_| Error::EngineGone { rank })??;
        Ok((EngineHandle { rank, tx: Some(tx), thread: Some(thread) }, info))
    }

    /// Ends the engine thread: no request after the current one, then waits up to `wait` for it to
    /// return. A process must not exit while a replica thread is inside libtorch: libtorch's static
    /// destructors then race with it (workers died of SIGSEGV or SIGABRT on their way out). Returns
    /// whether the thread ended in time.
    pub async fn close(&mut self, wait: std::time::Duration) -> bool {
        self.tx = None;
        let Some(thread) = self.thread.take() else { return true };
        let deadline = std::time::Instant::now() + wait;
        while !thread.is_finished() {
            if std::time::Instant::now() >= deadline {
                tracing::warn!(rank = self.rank, "the engine thread is still busy; leaving it");
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let _ = thread.join();
        true
    }

    async fn request<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        let sender = self.tx.as_ref().ok_or(Error::EngineGone { rank: self.rank })?;
        sender.send(make(tx)).map_err(|_| Error::EngineGone { rank: self.rank })?;
        rx.await.map_err(|_| Error::EngineGone { rank: self.rank })?
    }

    pub async fn step(&self, order: StepOrder) -> Result<StepReport, Error> {
        self.request(|r| Cmd::Step(order, r)).await
    }

    pub async fn commit(&self, commit: Commit) -> Result<Acknowledged, Error> {
        self.request(|r| Cmd::Commit(commit, r)).await
    }

    pub async fn abort(&self, abort: Abort) -> Result<Acknowledged, Error> {
        self.request(|r| Cmd::Abort(abort, r)).await
    }

    pub async fn evaluate(&self, req: EvalRequest) -> Result<Summary, Error> {
        self.request(|r| Cmd::Evaluate(req, r)).await
    }

    pub async fn save(&self, req: SaveRequest) -> Result<SavedTensors, Error> {
        self.request(|r| Cmd::Save(req, r)).await
    }
}

fn engine_main(
    spec: ReplicaSpec,
    host: ReplicaHost,
    collective: Box<dyn Collective>,
    rx: mpsc::Receiver<Cmd>,
    ready: oneshot::Sender<Result<WorkerInfo, Error>>,
) {
    if let Some(n) = host.threads {
        // Per thread: libtorch's OpenMP thread count is a property of the calling thread.
        tch::set_num_threads(n.max(1) as i32);
    }
    let mut engine = match Engine::new(spec, host, collective).and_then(|e| e.info().map(|i| (e, i))) {
        Ok((engine, info)) => {
            let _ = ready.send(Ok(info));
            engine
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    // A dropped reply means the asker gave up (its actor stopped): nothing to tell it.
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Cmd::Step(order, reply) => drop(reply.send(engine.step(order))),
            Cmd::Commit(commit, reply) => drop(reply.send(engine.commit(commit))),
            Cmd::Abort(abort, reply) => drop(reply.send(engine.abort(abort))),
            Cmd::Evaluate(req, reply) => drop(reply.send(engine.evaluate(req))),
            Cmd::Save(req, reply) => drop(reply.send(engine.save(req))),
        }
    }
}

/// The gradients of step `step` are in `.grad()`, waiting for a commit or an abort.
struct Pending {
    step: u64,
    lr: f64,
    /// The reduced gradients were unpacked: a commit may apply them.
    ready: bool,
}

struct Engine {
    rank: usize,
    world: usize,
    cfg: RunConfig,
    device: Device,
    dataset: Dataset,
    model: D2nn,
    params: Vec<Tensor>,
    optimizer: Box<dyn Optimizer>,
    collective: Box<dyn Collective>,
    flat: FlatGrads,
    faults: super::Faults,
    next_step: u64,
    pending: Option<Pending>,
    /// The baselines of the last commit: the next order must carry the same (and checkpoints keep them).
    baselines: Vec<f64>,
}

impl Engine {
    fn new(spec: ReplicaSpec, host: ReplicaHost, collective: Box<dyn Collective>) -> Result<Engine, Error> {
        if collective.world() != spec.world || collective.rank() != spec.rank {
            return Err(Error::Protocol(format!(
                "rank {} of {} was given the collective of rank {} of {}",
                spec.rank,
                spec.world,
                collective.rank(),
                collective.world()
            )));
        }
        // `D2nn::new` builds one model at a time, so replicas built at once start identical.
        let (dataset, model) = build_model(&spec.cfg, &spec.config_file, host.device)?;
        let params: Vec<Tensor> = model.parameters().into_iter().map(|(_, p)| p).collect();
        let mut optimizer = optim::try_build(&spec.cfg.train.optimizer, &params)?;
        let reduce_device = collective.reduce_device();
        if reduce_device.is_some_and(|d| d != host.device) {
            return Err(Error::Protocol(format!(
                "rank {}: the collective reduces on {:?}, the replica lives on {:?}",
                spec.rank, reduce_device, host.device
            )));
        }
        let flat = FlatGrads::new(&params, spec.bucket_bytes, reduce_device)?;
        let mut baselines = vec![0.0; model.graph.num_actions().len()];
        let mut next_step = 0;
        if let Some(dir) = &spec.resume {
            let train_n = dataset.train.len();
            // Read here: a worker process gets only the directory's path.
            let meta = checkpoint::CheckpointMeta::read(dir)?;
            let point = restore_replica(dir, &meta, &spec.cfg, &spec.config_file, train_n, &model, optimizer.as_mut())?;
            (baselines, next_step) = (point.baseline.node_values(), point.step);
        }
        Ok(Engine {
            rank: spec.rank,
            world: spec.world,
            cfg: spec.cfg,
            device: host.device,
            dataset,
            model,
            params,
            optimizer,
            collective,
            flat,
            faults: host.faults,
            next_step,
            pending: None,
            baselines,
        })
    }

    fn digest(&self) -> Result<ParamDigest, Error> {
        Ok(ParamDigest { rank: self.rank, step: self.next_step, sha256: param_digest(&self.model)? })
    }

    fn info(&self) -> Result<WorkerInfo, Error> {
        Ok(WorkerInfo {
            rank: self.rank,
            train_examples: self.dataset.train.len(),
            num_actions: self.model.graph.num_actions(),
            digest: self.digest()?,
        })
    }

    /// The local half of a step: everything before the all-reduce.
    fn compute(&mut self, order: &StepOrder) -> Result<StepStats, Error> {
        if let Some(p) = &self.pending {
            return Err(Error::Protocol(format!(
                "step {} ordered while step {} is neither committed nor aborted",
                order.step, p.step
            )));
        }
        if order.step != self.next_step {
            return Err(Error::Protocol(format!(
                "step {} ordered, but this replica is at step {}",
                order.step, self.next_step
            )));
        }
        if order.baselines != self.baselines {
            return Err(Error::Protocol(format!(
                "step {} ordered with baselines {:?}, but the last commit carried {:?}",
                order.step, order.baselines, self.baselines
            )));
        }
        if self.faults.fail_step == Some(order.step) {
            return Err(Error::Injected { rank: self.rank, step: order.step });
        }
        let t = &self.cfg.train;
        let seed = self.cfg.seed;
        let share = order.examples.len();
        if share == 0 || !share.is_multiple_of(t.bag_size.max(1)) || share > t.batch_size {
            return Err(Error::Protocol(format!(
                "step {}: a share of {share} examples is not whole mini-bags of {} within the global batch of {}",
                order.step, t.bag_size, t.batch_size
            )));
        }
        if let Some(per_example) = self.faults.slow_per_example {
            std::thread::sleep(per_example * share as u32);
        }
        let batch = self.dataset.train.batch_of(&order.examples, self.device)?;
        let ctx =
            StepContext { cfg: t, seed, step: order.step, global_batch: t.batch_size, baselines: &order.baselines };
        let stats = train_step(&self.model, &batch, &ctx)?;
        self.flat.pack(&self.params)?;
        Ok(stats)
    }

    /// A rank whose local step fails still takes part in the all-reduce (zeros, status 0), so the
    /// others never wait for it; only a failing collective is an `Err` here.
    fn step(&mut self, order: StepOrder) -> Result<StepReport, Error> {
        let started = Instant::now();
        let local = self.compute(&order);
        if local.is_err() {
            self.flat.pack_failed()?;
            zero_grads(&self.model);
        }
        let mut compute_seconds = started.elapsed().as_secs_f64();
        let waited = Instant::now();
        self.collective.barrier()?;
        let wait_seconds = waited.elapsed().as_secs_f64();
        let reducing = Instant::now();
        self.flat.all_reduce(self.collective.as_mut())?;
        let allreduce_seconds = reducing.elapsed().as_secs_f64();
        // Every rank reads the same reduced status, so all reach the same verdict.
        let all_ranks_ok = self.flat.status()? == self.world as f32;
        let unpacking = Instant::now();
        let mut ready = false;
        let outcome = match local {
            Ok(stats) if all_ranks_ok => match self.flat.unpack(&self.params) {
                Ok(()) => {
                    ready = true;
                    StepOutcome::Ok(stats)
                }
                Err(e) => StepOutcome::Failed(format!("rank {}: unpacking the reduced gradients: {e}", self.rank)),
            },
            Ok(stats) => StepOutcome::Ok(stats),
            Err(e) => StepOutcome::Failed(e.to_string()),
        };
        compute_seconds += unpacking.elapsed().as_secs_f64();
        self.pending = Some(Pending { step: order.step, lr: order.lr, ready });
        Ok(StepReport {
            rank: self.rank,
            step: order.step,
            outcome,
            all_ranks_ok,
            compute_seconds,
            wait_seconds,
            allreduce_seconds,
        })
    }

    fn commit(&mut self, commit: Commit) -> Result<Acknowledged, Error> {
        let pending = self.pending.take();
        let lr = match pending {
            Some(Pending { step, lr, ready: true }) if step == commit.step => lr,
            _ => {
                return Err(Error::Protocol(format!(
                    "rank {}: commit of step {} but the pending step is {:?}",
                    self.rank,
                    commit.step,
                    pending.map(|p| (p.step, p.ready))
                )))
            }
        };
        let started = Instant::now();
        apply_update(&self.model, self.optimizer.as_mut(), &self.cfg.train, lr)?;
        let update_seconds = started.elapsed().as_secs_f64();
        self.next_step = commit.step + 1;
        self.baselines = commit.baselines;
        let digest = if commit.want_digest { Some(self.digest()?) } else { None };
        Ok(Acknowledged { rank: self.rank, step: commit.step, update_seconds, digest })
    }

    fn abort(&mut self, abort: Abort) -> Result<Acknowledged, Error> {
        if let Some(p) = self.pending.take() {
            if p.step != abort.step {
                return Err(Error::Protocol(format!(
                    "rank {}: abort of step {} but the pending step is {}",
                    self.rank, abort.step, p.step
                )));
            }
        }
        zero_grads(&self.model);
        tracing::warn!(rank = self.rank, step = abort.step, reason = %abort.reason, "step aborted");
        self.next_step = abort.step + 1;
        Ok(Acknowledged { rank: self.rank, step: abort.step, update_seconds: 0.0, digest: Some(self.digest()?) })
    }

    fn evaluate(&mut self, req: EvalRequest) -> Result<Summary, Error> {
        if let Some(path) = &req.save_model {
            self.model.vs.save(path)?;
        }
        Ok(summarize(
            &self.cfg,
            &self.dataset,
            &self.model,
            req.steps,
            req.wall_seconds,
            req.examples_per_sec,
            req.workers,
        )?)
    }

    /// Writes the tensor files of a checkpoint; only between steps, so they hold committed state.
    fn save(&mut self, req: SaveRequest) -> Result<SavedTensors, Error> {
        if let Some(stall) = self.faults.stall_save {
            std::thread::sleep(stall);
        }
        if self.pending.is_some() || req.step != self.next_step {
            return Err(Error::Protocol(format!(
                "rank {}: checkpoint of step {} asked at step {} with a step pending: {}",
                self.rank,
                req.step,
                self.next_step,
                self.pending.is_some()
            )));
        }
        let val = if req.val_metric { validation_accuracy(&self.cfg, &self.dataset, &self.model)? } else { None };
        Ok(checkpoint::write_tensors(
            &req.dir,
            &self.model,
            self.optimizer.as_ref(),
            val,
            &mut WriteSteps::unlimited(),
        )?)
    }
}
