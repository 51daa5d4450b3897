//! The bare single-process training loop: the reference the distributed runtime is measured
//! against. The bookkeeping is the run ledger's, shared with the coordinator.
use std::path::Path;
use std::time::Instant;

use tch::Device;

use super::ledger::{Opened, ResumePoint, StepEnd};
use super::model::{build_model, summarize, validation_accuracy};
use super::outputs::{MetricsLine, Summary};
use super::step::{apply_update, train_step, Routing, StepContext};
use crate::checkpoint::{self, WriteSteps};
use crate::config::RunConfig;
use crate::optim;
use crate::rl::BaselineStore;
use crate::Result;

/// A run of the local loop.
pub struct LocalRun<'a> {
    pub cfg: &'a RunConfig,
    /// The config file's name, for error messages.
    pub config_file: &'a str,
    pub run_dir: &'a Path,
    /// Stop after this many global steps; schedules still follow the configured epochs.
    pub max_steps: Option<u64>,
    pub device: Device,
    /// Continue from this checkpoint (a checkpoint, checkpoints or run directory; see
    /// `checkpoint::resolve`) instead of starting afresh.
    pub resume: Option<&'a Path>,
    /// Accept differences in the keys `checkpoint::check_resume_config` calls safe.
    pub allow_config_change: bool,
}

impl LocalRun<'_> {
    /// Trains, evaluates on the test split with argmax decisions, and writes the run directory.
    /// `on_log` sees every logged line with the total number of steps.
    pub fn run(&self, on_log: &mut dyn FnMut(&MetricsLine, u64)) -> Result<Summary> {
        let (cfg, t) = (self.cfg, &self.cfg.train);
        let opened = Opened::open(cfg, self.config_file, self.run_dir, self.resume, self.allow_config_change)?;
        let (dataset, model) = build_model(cfg, self.config_file, self.device)?;
        let flat = model.flat_parameters(0)?;
        let mut optimizer = optim::try_build(&t.optimizer, &flat)?;
        let train_n = dataset.train.len();
        if let Some((dir, meta)) = opened.resumed() {
            restore_replica(dir, meta, cfg, self.config_file, train_n, &model, optimizer.as_mut())?;
        }
        let mut ledger = opened.begin(train_n, &model.graph.num_actions(), self.max_steps)?;
        let save = |ledger: &mut super::RunLedger, optimizer: &dyn optim::Optimizer| -> Result<()> {
            let mut writes = WriteSteps::unlimited();
            let staging = ledger.begin_checkpoint(&mut writes)?;
            let val = if cfg.checkpoint.keep_best { validation_accuracy(cfg, &dataset, &model)? } else { None };
            let saved = checkpoint::write_tensors(&staging, &model, optimizer, val, &mut writes)?;
            ledger.commit_checkpoint(&staging, saved, 1, &mut writes).map(drop)
        };
        while !ledger.done() {
            let place = ledger.place()?;
            let step_started = Instant::now();
            let batch = dataset.train.batch_of(&place.examples, self.device)?;
            let baselines = ledger.baseline.node_values();
            let ctx = StepContext {
                cfg: t,
                seed: cfg.seed,
                step: place.step,
                global_batch: t.batch_size,
                baselines: &baselines,
                routing: Routing::Policy,
            };
            let stats = train_step(&model, &flat, &batch, &ctx)?;
            apply_update(&flat, optimizer.as_mut(), t, place.lr)?;
            ledger.baseline.update(&stats.rewards);
            ledger.record(StepEnd::Committed(&stats), step_started.elapsed().as_secs_f64(), None)?;
            if let Some(line) = ledger.log_if_due()? {
                on_log(&line, ledger.last_step);
            }
            if ledger.checkpoint_due() {
                save(&mut ledger, optimizer.as_ref())?;
            }
        }
        if ledger.saved_now().is_none() {
            save(&mut ledger, optimizer.as_ref())?;
        }
        model.vs.save(ledger.run_dir.file(super::RunDir::MODEL))?;
        let summary =
            summarize(cfg, &dataset, &model, ledger.step, ledger.wall_seconds(), ledger.examples_per_sec(), 1)?;
        ledger.finish(summary)
    }
}

/// The replica's state of a checkpoint, for a replica built from `cfg`: parameters and optimizer
/// loaded, the resume point checked against its data and graph.
pub fn restore_replica(
    dir: &Path,
    meta: &checkpoint::CheckpointMeta,
    cfg: &RunConfig,
    config_file: &str,
    train_examples: usize,
    model: &crate::exec::D2nn,
    optimizer: &mut dyn optim::Optimizer,
) -> Result<ResumePoint> {
    let point = ResumePoint::check(dir, meta, cfg, config_file, train_examples, &model.graph.num_actions())?;
    checkpoint::load_state(dir, meta, model, optimizer)?;
    Ok(point)
}
