//! `meta.json`: everything of a checkpoint that is not a tensor, with a checksum of every other file.
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::files::{sha256_file, WriteSteps};
use super::{META_FILE, MODEL_FILE, OPTIMIZER_FILE};
use crate::config::{Algorithm, RunConfig};
use crate::data::SamplerState;
use crate::rl::EmaBaseline;
use crate::{Error, Result};

/// `format` of every d2nn checkpoint's `meta.json`.
pub const FORMAT: &str = "d2nn-checkpoint";
/// Bumped on any change a reader of the previous version would misread; readers refuse newer
/// versions. Version 2 added `sampler` (the run's sample order and each epoch's coverage); a version 1
/// checkpoint is read, its sample order derived from its step (`data::Sampler::from_step`).
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format this build reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// Where a run stands. Positions are global (the same for any number of workers): a step takes the
/// next global batch of the epoch's seeded order, and each rank its slice of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    /// Global steps done: the number of the next step to run.
    pub step: u64,
    /// The next step's epoch and its index within that epoch's order.
    pub epoch: u64,
    pub step_in_epoch: u64,
    pub steps_per_epoch: u64,
    /// Size of the training split the epoch order permutes.
    pub train_examples: usize,
}

/// The schedules are pure functions of the global step (`optim::LrSchedule::lr_at`,
/// `rl::EpsilonSchedule::at`), so the step is their whole state; the values of the next step are
/// recorded for people reading the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulePosition {
    /// The LR schedule's horizon: epochs × steps per epoch.
    pub total_steps: u64,
    pub next_lr: f64,
    /// ε of the next step's exploration (Q-learning with controllers; 1 during warm-up).
    pub next_epsilon: Option<f64>,
    /// Steps of the ε schedule done (those past the warm-up).
    pub epsilon_position: u64,
}

/// d2nn's randomness is counter-based (`rng.rs`): every draw is a hash of (seed, step, example id,
/// ...), and the data order is a seeded permutation per epoch, so there is no generator state to
/// save beyond these seeds and the step in [`Position`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RngState {
    pub kind: String,
    /// Seeds `shard::epoch_order(seed, epoch, n)`.
    pub data_order_seed: u64,
    /// Keys exploration and sampling decisions: `DecisionKey { seed, step }`.
    pub decision_seed: u64,
}

/// Size and SHA-256 of one file of the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub bytes: u64,
    pub sha256: String,
}

/// What the replica's owner wrote into the staging directory (a control-plane reply in the runtime:
/// names and digests, never tensors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedTensors {
    pub files: BTreeMap<String, FileEntry>,
    /// `exec::param_digest` of the saved parameters.
    pub params_sha256: String,
    pub optimizer_steps: u64,
    /// Validation accuracy (argmax decisions) when the task has a validation split.
    pub val_metric: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointMeta {
    pub format: String,
    pub format_version: u32,
    pub d2nn_version: String,
    pub position: Position,
    pub schedules: SchedulePosition,
    pub rng: RngState,
    /// The reward baselines and their controller statistics (EMA values, which actions were seen).
    pub baseline: EmaBaseline,
    /// Optimizer updates applied (fewer than `position.step` when aborted steps were skipped).
    pub optimizer_steps: u64,
    /// Workers of the run that wrote it; a resume may use another number.
    pub world_size: usize,
    pub val_metric: Option<f64>,
    pub params_sha256: String,
    /// Every other file of the checkpoint directory.
    pub files: BTreeMap<String, FileEntry>,
    /// The resolved config of the run.
    pub config: RunConfig,
    /// The sample order: epoch, how far its order was handed out, batches to retry, and every
    /// epoch's coverage. None in a version 1 checkpoint.
    #[serde(default)]
    pub sampler: Option<SamplerState>,
}

impl CheckpointMeta {
    pub fn new(
        cfg: &RunConfig,
        position: Position,
        baseline: &EmaBaseline,
        world_size: usize,
        saved: SavedTensors,
        sampler: SamplerState,
    ) -> CheckpointMeta {
        let t = &cfg.train;
        let total_steps = position.steps_per_epoch * t.epochs;
        let has_controllers = !baseline.node.is_empty();
        let epsilon_position = position.step.saturating_sub(t.warmup_steps);
        let next_epsilon = (has_controllers && t.algorithm == Algorithm::QLearning).then(|| {
            if position.step < t.warmup_steps {
                1.0
            } else {
                t.epsilon.at(epsilon_position)
            }
        });
        CheckpointMeta {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            d2nn_version: env!("CARGO_PKG_VERSION").into(),
            position,
            schedules: SchedulePosition {
                total_steps,
                next_lr: t.schedule.lr_at(t.lr, position.step, total_steps),
                next_epsilon,
                epsilon_position,
            },
            rng: RngState { kind: "counter-based".into(), data_order_seed: cfg.seed, decision_seed: cfg.seed },
            baseline: baseline.clone(),
            optimizer_steps: saved.optimizer_steps,
            world_size,
            val_metric: saved.val_metric,
            params_sha256: saved.params_sha256,
            files: saved.files,
            config: cfg.clone(),
            sampler: Some(sampler),
        }
    }

    /// Writes `meta.json` into a staging directory and fsyncs it (the directory is renamed into
    /// place afterwards, so this write need not be atomic itself).
    pub(crate) fn write(&self, dir: &Path, steps: &mut WriteSteps) -> Result<()> {
        let path = dir.join(META_FILE);
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?;
        steps.before(&path)?;
        let mut f = File::create(&path).map_err(|e| Error::io(&path, e))?;
        f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| Error::io(&path, e))
    }

    /// Reads `dir/meta.json`, refusing another format or version before interpreting anything else.
    pub fn read(dir: &Path) -> Result<CheckpointMeta> {
        let path = dir.join(META_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let bad = |message: String| Error::data(&path, message);
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON (truncated or corrupted?): {e}")))?;
        if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(bad(format!("not a d2nn checkpoint: `format` is not \"{FORMAT}\"")));
        }
        match value.get("format_version").and_then(|v| v.as_u64()) {
            Some(v) if (u64::from(OLDEST_FORMAT_VERSION)..=u64::from(FORMAT_VERSION)).contains(&v) => {}
            Some(v) => {
                return Err(bad(format!(
                    "checkpoint format version {v}; this d2nn ({}) reads versions {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}",
                    env!("CARGO_PKG_VERSION")
                )))
            }
            None => return Err(bad("no `format_version`".into())),
        }
        let meta: CheckpointMeta =
            serde_path_to_error::deserialize(value).map_err(|e| bad(format!("key `{}`: {}", e.path(), e.inner())))?;
        for required in [MODEL_FILE, OPTIMIZER_FILE] {
            if !meta.files.contains_key(required) {
                return Err(bad(format!("lists no `{required}`")));
            }
        }
        Ok(meta)
    }

    /// Checks the size and SHA-256 of every file `meta.json` lists: a truncated or corrupted file is
    /// an error naming it, before anything is read from it.
    pub fn verify_files(&self, dir: &Path) -> Result<()> {
        for (name, want) in &self.files {
            if name.contains('/') || name.contains('\\') || name == ".." {
                return Err(Error::data(dir.join(META_FILE), format!("file name `{name}` is not a plain name")));
            }
            let path = dir.join(name);
            let (bytes, sha256) = sha256_file(&path)?;
            if bytes != want.bytes {
                return Err(Error::data(
                    &path,
                    format!("{bytes} bytes, but meta.json records {} (truncated or replaced?)", want.bytes),
                ));
            }
            if sha256 != want.sha256 {
                return Err(Error::data(
                    &path,
                    format!("checksum mismatch: sha256 {sha256}, meta.json records {} (corrupted?)", want.sha256),
                ));
            }
        }
        Ok(())
    }

    /// A resumed run must see the same training split, cut into the same global batches.
    pub fn check_data(&self, dir: &Path, train_examples: usize, steps_per_epoch: u64) -> Result<()> {
        let p = &self.position;
        if p.train_examples != train_examples || p.steps_per_epoch != steps_per_epoch {
            return Err(Error::data(
                dir.join(META_FILE),
                format!(
                    "the checkpoint's run had {} training examples in {} steps per epoch; this run has {} in {}",
                    p.train_examples, p.steps_per_epoch, train_examples, steps_per_epoch
                ),
            ));
        }
        Ok(())
    }
}
