//! The run ledger: the bookkeeping every run driver shares, whoever computes the steps (the local
//! loop in this thread, or the coordinator through its replicas). It opens or resumes the run
//! directory, knows the step horizon and each step's epoch and learning rate, holds the reward
//! baselines, pools the logged window into `metrics.jsonl`, says when a checkpoint is due and
//! completes it, and writes `summary.json`.
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::outputs::{MetricsLine, MetricsWriter, RunDir, Summary};
use super::stats::{StepSplit, StepStats};
use crate::checkpoint::{self, CheckpointMeta, CheckpointStore, Position, SavedTensors, WriteSteps};
use crate::config::{Algorithm, RunConfig};
use crate::data::{shard, Sampler};
use crate::rl::{BaselineStore, EmaBaseline};
use crate::{Error, Result};

/// A run directory created (its `config.toml` written) and, when resuming, its checkpoint opened
/// and checked against the config; the replicas are built next, then [`Opened::begin`].
pub struct Opened {
    cfg: RunConfig,
    config_file: String,
    run_dir: RunDir,
    resume: Option<(PathBuf, CheckpointMeta)>,
    started: Instant,
}

/// Where a resumed run continues: the checkpoint's step and reward baselines, checked against the
/// data and the graph the replicas were built with.
#[derive(Debug, Clone)]
pub struct ResumePoint {
    pub step: u64,
    pub baseline: EmaBaseline,
}

/// The run's sample order at a checkpoint: its recorded state, or, for a checkpoint of the format
/// before the sampler existed, the state its step implies.
fn sampler_of(dir: &Path, meta: &CheckpointMeta, cfg: &RunConfig, train_examples: usize) -> Result<Sampler> {
    let (seed, batch, epochs) = (cfg.seed, cfg.train.batch_size, cfg.train.epochs);
    let sampler = match &meta.sampler {
        Some(state) => Sampler::restore(seed, train_examples, batch, epochs, state),
        None => Sampler::from_step(seed, train_examples, batch, epochs, meta.position.step),
    };
    sampler.map_err(|e| Error::data(dir.join(checkpoint::META_FILE), format!("key `sampler`: {e}")))
}

impl ResumePoint {
    /// Refuses a checkpoint of other data (examples, steps per epoch) or another controller shape.
    pub fn check(
        dir: &Path,
        meta: &CheckpointMeta,
        cfg: &RunConfig,
        config_file: &str,
        train_examples: usize,
        num_actions: &[usize],
    ) -> Result<ResumePoint> {
        meta.check_data(dir, train_examples, steps_per_epoch(cfg, config_file, train_examples)?)?;
        let saved: Vec<usize> = meta.baseline.values.iter().map(Vec::len).collect();
        if saved != num_actions {
            return Err(Error::data(
                dir.join(checkpoint::META_FILE),
                format!("baselines for actions per controller {saved:?}, the graph has {num_actions:?}"),
            ));
        }
        Ok(ResumePoint { step: meta.position.step, baseline: meta.baseline.clone() })
    }
}

/// Global steps per epoch of a config on a training split, refusing a batch larger than the split.
pub fn steps_per_epoch(cfg: &RunConfig, config_file: &str, train_examples: usize) -> Result<u64> {
    let batch_size = cfg.train.batch_size;
    match shard::steps_per_epoch(train_examples, batch_size) as u64 {
        0 => Err(Error::Config {
            file: config_file.into(),
            message: format!(
                "key `train.batch_size`: {batch_size} is larger than the {train_examples} training examples"
            ),
        }),
        n => Ok(n),
    }
}

impl Opened {
    /// Opens `resume` (a checkpoint, checkpoints or run directory; see `checkpoint::resolve`) and
    /// checks its config against `cfg` before anything is built, then creates the run directory.
    pub fn open(
        cfg: &RunConfig,
        config_file: &str,
        run_dir: &Path,
        resume: Option<&Path>,
        allow_config_change: bool,
    ) -> Result<Opened> {
        let started = Instant::now();
        let resume = match resume {
            Some(path) => {
                let (dir, meta) = checkpoint::open(path)?;
                for change in checkpoint::check_resume_config(&dir, &meta.config, cfg, allow_config_change)? {
                    tracing::warn!(checkpoint = %dir.display(), %change, "config changed on resume (--allow-config-change)");
                }
                Some((dir, meta))
            }
            None => None,
        };
        let run_dir = RunDir::create(run_dir)?;
        run_dir.write_config(cfg)?;
        Ok(Opened { cfg: cfg.clone(), config_file: config_file.into(), run_dir, resume, started })
    }

    /// The checkpoint the replicas load their state from, when resuming.
    pub fn resume_dir(&self) -> Option<&Path> {
        self.resumed().map(|(dir, _)| dir)
    }

    /// The opened checkpoint and its metadata, when resuming (read once, here).
    pub fn resumed(&self) -> Option<(&Path, &CheckpointMeta)> {
        self.resume.as_ref().map(|(dir, meta)| (dir.as_path(), meta))
    }

    pub fn run_dir(&self) -> &RunDir {
        &self.run_dir
    }

    /// The ledger of a run whose replicas hold `train_examples` examples and controllers with
    /// `num_actions` actions; it stops after `max_steps` global steps (schedules still follow the
    /// configured epochs).
    pub fn begin(self, train_examples: usize, num_actions: &[usize], max_steps: Option<u64>) -> Result<RunLedger> {
        let t = &self.cfg.train;
        let steps_per_epoch = steps_per_epoch(&self.cfg, &self.config_file, train_examples)?;
        let mut baseline = EmaBaseline::new(num_actions, t.baseline_decay);
        let mut step = 0;
        let mut last_checkpoint = None;
        let mut resumed_sampler = None;
        if let Some((dir, meta)) = &self.resume {
            let point = ResumePoint::check(dir, meta, &self.cfg, &self.config_file, train_examples, num_actions)?;
            (step, baseline) = (point.step, point.baseline);
            resumed_sampler = Some(sampler_of(dir, meta, &self.cfg, train_examples)?);
            // The state at a resumed step is already saved: no second checkpoint of it.
            last_checkpoint = Some((step, dir.clone()));
            tracing::info!(checkpoint = %dir.display(), step, "resumed");
        }
        let sampler = match resumed_sampler {
            Some(sampler) => sampler,
            None => Sampler::new(self.cfg.seed, train_examples, t.batch_size, t.epochs)?,
        };
        let metrics = if self.resume.is_some() {
            self.run_dir.resume_metrics(step)?
        } else {
            self.run_dir.metrics_writer(false)?
        };
        let total_steps = steps_per_epoch.checked_mul(t.epochs).ok_or_else(|| Error::Config {
            file: self.config_file.clone(),
            message: format!(
                "key `train.epochs`: {} epochs of {steps_per_epoch} steps overflow a step count",
                t.epochs
            ),
        })?;
        Ok(RunLedger {
            store: CheckpointStore::of_run(&self.run_dir.path),
            has_controllers: !num_actions.is_empty(),
            last_step: max_steps.map_or(total_steps, |m| m.min(total_steps)),
            max_steps,
            sampler,
            cfg: self.cfg,
            run_dir: self.run_dir,
            metrics,
            baseline,
            train_examples,
            steps_per_epoch,
            total_steps,
            step,
            first_step: step,
            started: self.started,
            train_seconds: 0.0,
            window: StepStats::default(),
            window_split: None,
            window_start: Instant::now(),
            last_checkpoint,
        })
    }
}

/// The next step: its number, examples, place in the epoch and learning rate.
#[derive(Debug, Clone, PartialEq)]
pub struct StepPlace {
    pub step: u64,
    pub epoch: u64,
    pub step_in_epoch: u64,
    pub lr: f64,
    /// The training examples of the global batch, in the order the ranks take their shares.
    pub examples: Vec<u32>,
}

/// How a step ended, for the ledger's books.
#[derive(Debug, Clone, Copy)]
pub enum StepEnd<'a> {
    /// The update was applied; its pooled statistics.
    Committed(&'a StepStats),
    /// The update was applied but its statistics are lost (the cluster broke after the commit).
    CommittedUnseen,
    /// Nothing was applied; the batch is handed out again.
    Aborted,
}

/// The bookkeeping of a run once its replicas are built (see the module docs).
pub struct RunLedger {
    pub cfg: RunConfig,
    pub run_dir: RunDir,
    metrics: MetricsWriter,
    store: CheckpointStore,
    /// The reward baselines: the central EMA of every committed step's pooled statistics.
    pub baseline: EmaBaseline,
    has_controllers: bool,
    train_examples: usize,
    pub steps_per_epoch: u64,
    total_steps: u64,
    /// The step the run is planned to stop after (`max_steps` or the configured epochs); aborted
    /// steps that are retried add to it.
    pub last_step: u64,
    max_steps: Option<u64>,
    /// Which examples each step trains on, and each epoch's coverage.
    sampler: Sampler,
    /// The next step to run (= steps done).
    pub step: u64,
    /// The step this process started at (the resumed one): throughput counts only steps run here.
    first_step: u64,
    started: Instant,
    train_seconds: f64,
    window: StepStats,
    window_split: Option<StepSplit>,
    window_start: Instant,
    /// The step and directory of the newest checkpoint of this run's state (the resumed one first).
    last_checkpoint: Option<(u64, PathBuf)>,
}

impl RunLedger {
    /// Every epoch's examples committed, or `max_steps` reached.
    pub fn done(&self) -> bool {
        self.sampler.finished() || self.max_steps.is_some_and(|m| self.step >= m)
    }

    /// The next step: its examples come from the sampler (the same batch again while a step that
    /// was neither committed nor aborted is re-run), its learning rate from the step number.
    pub fn place(&mut self) -> Result<StepPlace> {
        let t = &self.cfg.train;
        let (epoch, step_in_epoch) = self.sampler.place();
        let lr = t.schedule.lr_at(t.lr, self.step, self.total_steps);
        let examples = self.sampler.next_batch().ok_or_else(|| Error::Invalid("no step left to place".into()))?;
        Ok(StepPlace { step: self.step, epoch, step_in_epoch, lr, examples: examples.to_vec() })
    }

    /// Books the placed step's end, which took `seconds` (and where that time went when the step
    /// ran on replicas). The baselines are not touched: the driver folds the step's rewards in when
    /// it commits (the coordinator must send the new values with the commit).
    pub fn record(&mut self, end: StepEnd<'_>, seconds: f64, split: Option<StepSplit>) -> Result<()> {
        match end {
            StepEnd::Committed(stats) => {
                self.window.merge(stats)?;
                self.sampler.commit()?;
            }
            StepEnd::CommittedUnseen => self.sampler.commit()?,
            StepEnd::Aborted => {
                self.sampler.abort()?;
                self.last_step += 1;
            }
        }
        if let Some(split) = split {
            self.window_split = Some(self.window_split.unwrap_or_default() + split);
        }
        self.train_seconds += seconds;
        self.step += 1;
        Ok(())
    }

    /// Writes the window's `metrics.jsonl` line when one is due (every `log_every` steps and at the
    /// last) and starts a new window.
    pub fn log_if_due(&mut self) -> Result<Option<MetricsLine>> {
        let step = self.step;
        if !(step.is_multiple_of(self.cfg.train.log_every.max(1)) || self.done()) {
            return Ok(None);
        }
        let line = self.metrics_line();
        RunDir::append_metrics(&mut self.metrics, &line)?;
        self.window = StepStats::default();
        self.window_split = None;
        self.window_start = Instant::now();
        Ok(Some(line))
    }

    fn metrics_line(&self) -> MetricsLine {
        let t = &self.cfg.train;
        let step = self.step;
        let window = &self.window;
        let steps = (window.examples as f64 / t.batch_size as f64).max(1.0);
        let epsilon = (self.has_controllers && t.algorithm == Algorithm::QLearning).then(|| {
            if step <= t.warmup_steps {
                1.0
            } else {
                t.epsilon.at(step - 1 - t.warmup_steps)
            }
        });
        // The line describes the window's last step (step − 1 in 0-based numbering).
        let done = step.saturating_sub(1);
        MetricsLine {
            step,
            epoch: self.sampler.epochs_begun().saturating_sub(1),
            loss: window.loss / steps,
            task_loss: window.task_loss / steps,
            control_loss: window.control_loss / steps,
            train_accuracy: window.accuracy(),
            mean_cost_fraction: window.mean_cost_fraction(),
            reward_mean: window.reward_mean(),
            baseline: self.baseline.node_values(),
            advantage_variance: window.advantage_variance(),
            lr: t.schedule.lr_at(t.lr, done, self.total_steps),
            epsilon,
            examples_per_sec: window.examples as f64 / self.window_start.elapsed().as_secs_f64().max(1e-9),
            action_rates: window.action_rates(),
            split: self.window_split,
        }
    }

    pub fn checkpoint_due(&self) -> bool {
        self.cfg.checkpoint.due(self.step)
    }

    /// The newest checkpoint when it holds the current step.
    pub fn saved_now(&self) -> Option<&Path> {
        self.last_checkpoint.as_ref().filter(|(step, _)| *step == self.step).map(|(_, dir)| dir.as_path())
    }

    /// Starts a checkpoint of the current step: the staging directory the tensor files go into.
    pub fn begin_checkpoint(&self, writes: &mut WriteSteps) -> Result<PathBuf> {
        self.store.begin(self.step, writes)
    }

    /// Completes a checkpoint of the current step from its tensor files (written by a replica of
    /// `world`): position and baselines come from here.
    pub fn commit_checkpoint(
        &mut self,
        staging: &Path,
        saved: SavedTensors,
        world: usize,
        writes: &mut WriteSteps,
    ) -> Result<PathBuf> {
        let (epoch, step_in_epoch) = self.sampler.place();
        let position = Position {
            step: self.step,
            epoch,
            step_in_epoch,
            steps_per_epoch: self.steps_per_epoch,
            train_examples: self.train_examples,
        };
        let meta = CheckpointMeta::new(&self.cfg, position, &self.baseline, world, saved, self.sampler.state());
        let dir = self.store.commit(staging, &meta, &self.cfg.checkpoint, writes)?;
        self.last_checkpoint = Some((self.step, dir.clone()));
        Ok(dir)
    }

    pub fn wall_seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Training examples per second of the steps run in this process (step time only).
    pub fn examples_per_sec(&self) -> f64 {
        (self.step - self.first_step) as f64 * self.cfg.train.batch_size as f64 / self.train_seconds.max(1e-9)
    }

    /// Completes a replica's evaluation into the run's `summary.json`.
    pub fn finish(&self, mut summary: Summary) -> Result<Summary> {
        summary.epochs = self.sampler.epochs_begun();
        summary.coverage = self.sampler.coverage().to_vec();
        self.run_dir.write_summary(&summary)?;
        Ok(summary)
    }
}
