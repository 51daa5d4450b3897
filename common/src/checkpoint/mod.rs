//! Resumable checkpoints: everything a run needs to continue as if it had never stopped, written so
//! that a crash at any instant leaves the previous checkpoint loadable. The format, the atomicity
//! protocol and the exactness guarantees are in `docs/checkpoints.md`.
//!
//! A checkpoint is a directory `checkpoints/step-SSSSSSSS/` of a run directory:
//! `model.safetensors` (parameters and buffers), `optimizer.safetensors` (moments, per-parameter
//! step counts) and `meta.json` (positions, baselines, config, checksums of the other files).
//! `checkpoints/LATEST` names the newest complete one.
//!
//! Who writes what: the tensor files are written by whoever owns the replica (the local loop, or
//! rank 0's engine thread in the runtime, given the staging path), and the rest by whoever owns the
//! run's position (the local loop, or the coordinator): [`CheckpointStore::begin`] →
//! [`write_tensors`] → [`CheckpointMeta::new`] → [`CheckpointStore::commit`].
mod compat;
mod files;
mod meta;
mod state;
mod store;

use serde::{Deserialize, Serialize};

pub use compat::check_resume_config;
pub use files::{fsync_dir, write_atomic, WriteSteps};
pub use meta::{CheckpointMeta, FileEntry, Position, SavedTensors, FORMAT, FORMAT_VERSION};
pub use state::{load_params, load_state, read_params, write_tensors};
pub use store::{open, resolve, run_dir_of, CheckpointStore, Listed};

/// File names inside a checkpoint directory.
pub const META_FILE: &str = "meta.json";
pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// `[checkpoint]` of the run config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Checkpoint after every N global steps (0: only at the end of the run and on SIGTERM/SIGINT).
    pub every_steps: u64,
    /// How many of the newest checkpoints to keep (at least 1).
    pub keep_last: usize,
    /// Also keep the checkpoint with the best validation accuracy (computed at every checkpoint
    /// when the task has a validation split).
    pub keep_best: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig { every_steps: 0, keep_last: 3, keep_best: true }
    }
}

impl CheckpointConfig {
    /// Whether a periodic checkpoint is due after `step` global steps.
    pub fn due(&self, step: u64) -> bool {
        self.every_steps > 0 && step.is_multiple_of(self.every_steps)
    }
}

#[cfg(test)]
mod tests;
