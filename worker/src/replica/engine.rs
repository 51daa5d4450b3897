//! The engine: the replica (model, optimizer, data, gradient buffer, collective) that one OS thread
//! per rank owns (`handle.rs`), executing the protocol's requests one at a time.
use std::time::Instant;

use d2nn_common::checkpoint::{self, SavedTensors, WriteSteps};
use d2nn_common::config::RunConfig;
use d2nn_common::data::Dataset;
use d2nn_common::exec::{param_digest, D2nn};
use d2nn_common::optim::{self, FlatParams, Optimizer};

use d2nn_common::data::DataSource;
use d2nn_common::rl::BaselineStore;
use d2nn_common::train::{
    apply_update, build_model, build_model_without_data, restore_replica, summarize, train_step, validation_accuracy,
    Routing, StepContext, StepStats, Summary,
};
use tch::Device;

use super::grad_buffer::FlatGrads;
use super::ReplicaHost;
use crate::collective::Collective;
use crate::protocol::{
    Abort, Acknowledged, Commit, EvalRequest, ParamDigest, ReplicaSpec, SaveRequest, StepOrder, StepOutcome,
    StepReport, WorkerInfo,
};
use crate::Error;

/// The gradients of step `step` are in `.grad()`, waiting for a commit or an abort.
struct Pending {
    step: u64,
    lr: f64,
    /// Every rank's step succeeded and the gradients are reduced: a commit may apply them.
    ready: bool,
}

pub(super) struct Engine {
    rank: usize,
    world: usize,
    cfg: RunConfig,
    device: Device,
    /// None when the coordinator sends the examples (`data.source = "coordinator"`).
    dataset: Option<Dataset>,
    train_examples: usize,
    model: D2nn,
    /// The model's parameters and gradients in flat buffers; the gradients' is `flat`'s buffer.
    params: FlatParams,
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
    pub(super) fn new(spec: ReplicaSpec, host: ReplicaHost, collective: Box<dyn Collective>) -> Result<Engine, Error> {
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
        let (dataset, model, train_examples) = match (spec.cfg.data.source, spec.streamed_train_examples) {
            (DataSource::Local, _) => {
                let (dataset, model) = build_model(&spec.cfg, &spec.config_file, host.device)?;
                let n = dataset.train.len();
                (Some(dataset), model, n)
            }
            (DataSource::Coordinator, Some(n)) => {
                (None, build_model_without_data(&spec.cfg, &spec.config_file, host.device)?, n)
            }
            (DataSource::Coordinator, None) => {
                return Err(Error::Protocol(format!(
                    "rank {}: data.source = \"coordinator\" but the coordinator sent no training split size",
                    spec.rank
                )))
            }
        };
        // One extra gradient slot: the step status the all-reduce carries.
        let params = model.flat_parameters(1)?;
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
            let train_n = train_examples;
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
            train_examples,
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

    /// This worker's own copy of the data, for what only it can do with it.
    fn local_data(&self, what: &str) -> Result<&Dataset, Error> {
        self.dataset.as_ref().ok_or_else(|| {
            Error::Protocol(format!(
                "rank {}: asked to {what}, but it has no data (data.source = \"coordinator\": the coordinator does that)",
                self.rank
            ))
        })
    }

    fn digest(&self) -> Result<ParamDigest, Error> {
        Ok(ParamDigest { rank: self.rank, step: self.next_step, sha256: param_digest(&self.model)? })
    }

    pub(super) fn info(&self) -> Result<WorkerInfo, Error> {
        Ok(WorkerInfo {
            rank: self.rank,
            train_examples: self.train_examples,
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
        let batch = match (&order.data, &self.dataset) {
            (Some(sent), _) if sent.ids == order.examples => {
                let (shape, classes) = self.cfg.data.task.shape();
                sent.batch(shape, classes as usize, self.device)?
            }
            (Some(_), _) => {
                return Err(Error::Protocol(format!("step {}: the examples sent are not the ones ordered", order.step)))
            }
            (None, Some(dataset)) => dataset.train.batch_of(&order.examples, self.device)?,
            (None, None) => {
                return Err(Error::Protocol(format!(
                    "step {}: no examples sent, and this worker has no dataset (data.source = \"coordinator\")",
                    order.step
                )))
            }
        };
        let ctx = StepContext {
            cfg: t,
            seed,
            step: order.step,
            global_batch: t.batch_size,
            baselines: &order.baselines,
            routing: Routing::Policy,
        };
        let stats = train_step(&self.model, &self.params, &batch, &ctx)?;
        self.flat.mark_ok()?;
        Ok(stats)
    }

    /// A rank whose local step fails still takes part in the all-reduce (zeros, status 0), so the
    /// others never wait for it; only a failing collective is an `Err` here.
    pub(super) fn step(&mut self, order: StepOrder) -> Result<StepReport, Error> {
        let started = Instant::now();
        let local = self.compute(&order);
        if local.is_err() {
            // Zeroes the whole buffer: the parameters' gradients are views of it.
            self.flat.mark_failed()?;
        }
        let compute_seconds = started.elapsed().as_secs_f64();
        let waited = Instant::now();
        self.collective.barrier()?;
        let wait_seconds = waited.elapsed().as_secs_f64();
        let reducing = Instant::now();
        self.flat.all_reduce(self.collective.as_mut())?;
        let allreduce_seconds = reducing.elapsed().as_secs_f64();
        // Every rank reads the same reduced status, so all reach the same verdict.
        let all_ranks_ok = self.flat.status()? == self.world as f32;
        // The reduced gradients are already the parameters' (the buffer is theirs).
        let ready = local.is_ok() && all_ranks_ok;
        let outcome = match local {
            Ok(stats) => StepOutcome::Ok(stats),
            Err(e) => StepOutcome::Failed(e.to_string()),
        };
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

    pub(super) fn commit(&mut self, commit: Commit) -> Result<Acknowledged, Error> {
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
        apply_update(&self.params, self.optimizer.as_mut(), &self.cfg.train, lr)?;
        let update_seconds = started.elapsed().as_secs_f64();
        self.next_step = commit.step + 1;
        self.baselines = commit.baselines;
        let digest = if commit.want_digest { Some(self.digest()?) } else { None };
        Ok(Acknowledged { rank: self.rank, step: commit.step, update_seconds, digest })
    }

    pub(super) fn abort(&mut self, abort: Abort) -> Result<Acknowledged, Error> {
        if let Some(p) = self.pending.take() {
            if p.step != abort.step {
                return Err(Error::Protocol(format!(
                    "rank {}: abort of step {} but the pending step is {}",
                    self.rank, abort.step, p.step
                )));
            }
        }
        self.params.zero_grad()?;
        tracing::warn!(rank = self.rank, step = abort.step, reason = %abort.reason, "step aborted");
        self.next_step = abort.step + 1;
        Ok(Acknowledged { rank: self.rank, step: abort.step, update_seconds: 0.0, digest: Some(self.digest()?) })
    }

    pub(super) fn evaluate(&mut self, req: EvalRequest) -> Result<Summary, Error> {
        if let Some(path) = &req.save_model {
            self.model.vs.save(path)?;
        }
        let dataset = self.local_data("evaluate")?;
        Ok(summarize(&self.cfg, dataset, &self.model, req.steps, req.wall_seconds, req.examples_per_sec, req.workers)?)
    }

    /// Writes the tensor files of a checkpoint of step `req.step`: the committed state before it.
    /// That step may be pending: its gradients touch neither the parameters nor the optimizer until
    /// a commit. A generation that ends after a loss saves so when this rank's report of the step
    /// arrived and a lost rank's never did (the lost rank had done its part of the all-reduce).
    pub(super) fn save(&mut self, req: SaveRequest) -> Result<SavedTensors, Error> {
        if let Some(stall) = self.faults.stall_save {
            std::thread::sleep(stall);
        }
        if req.step != self.next_step {
            return Err(Error::Protocol(format!(
                "rank {}: checkpoint of step {} asked, but this replica is at step {}",
                self.rank, req.step, self.next_step
            )));
        }
        let val = match req.val_metric {
            true => validation_accuracy(&self.cfg, self.local_data("rank checkpoints")?, &self.model)?,
            false => None,
        };
        Ok(checkpoint::write_tensors(
            &req.dir,
            &self.model,
            self.optimizer.as_ref(),
            val,
            &mut WriteSteps::unlimited(),
        )?)
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
