//! What a replica is built from and what the coordinator asks of it: [`ReplicaSpec`] (the same
//! whether the coordinator spawns the replica in its own process or assigns it to a worker
//! process) and the replica actor's message enum, [`WorkerMsg`].
use std::path::PathBuf;
use std::time::Duration;

use d2nn_common::checkpoint::SavedTensors;
use d2nn_common::config::RunConfig;
use d2nn_common::train::Summary;
use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use super::step::{Abort, Acknowledged, Commit, ParamDigest, StepOrder, StepReport};
use super::Remote;

/// Everything about one replica that the coordinator decides. Where it runs (device, threads) is
/// the hosting process's decision: `replica::ReplicaHost`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaSpec {
    pub rank: usize,
    pub world: usize,
    /// Crosses processes as TOML text (what the run directory's `config.toml` holds) and is checked
    /// again where it arrives.
    #[serde(with = "config_as_toml")]
    pub cfg: RunConfig,
    /// The config's name, for the replica's error messages.
    pub config_file: String,
    /// A checkpoint directory (resolved) to load the replica's state from: every rank reads the
    /// same files itself (shared storage between processes), so no tensor travels in a message.
    pub resume: Option<PathBuf>,
    /// Gradient bucket size of the all-reduce.
    pub bucket_bytes: usize,
    /// Bounds the collective's waits once the ranks have met.
    pub collective_timeout: Duration,
    /// With `data.source = "coordinator"`: the size of the coordinator's training split, whose
    /// examples arrive with each step's order (the replica reads no data). None: it reads its own.
    pub streamed_train_examples: Option<usize>,
}

mod config_as_toml {
    use d2nn_common::config::RunConfig;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(cfg: &RunConfig, s: S) -> Result<S::Ok, S::Error> {
        let text = cfg.to_toml().map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<RunConfig, D::Error> {
        let text = String::deserialize(d)?;
        RunConfig::from_toml(&text, "the coordinator's config").map_err(serde::de::Error::custom)
    }
}

/// A rank's answer to the start: what the coordinator checks before step 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub rank: usize,
    pub train_examples: usize,
    pub num_actions: Vec<usize>,
    /// Digest of the initial parameters: all ranks must agree.
    pub digest: ParamDigest,
}

/// The end of a run: save (optionally) and evaluate this replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRequest {
    pub save_model: Option<PathBuf>,
    pub steps: u64,
    pub wall_seconds: f64,
    pub examples_per_sec: f64,
    pub workers: usize,
}

/// Write this replica's tensor files into `dir` (a staging directory of the coordinator's
/// checkpoint store) after `step` global steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaveRequest {
    pub dir: PathBuf,
    pub step: u64,
    /// Also evaluate the validation accuracy the checkpoint is ranked by.
    pub val_metric: bool,
}

/// Replies carry a worker's errors as text: they cross process boundaries, and the coordinator
/// only reports them.
pub type WorkerReply<T> = Result<T, String>;

/// A reply port as the cluster needs it: the reply is encoded, and a peer's reply that does not
/// decode arrives as an error instead of a panic.
pub type Port<T> = RpcReplyPort<Remote<WorkerReply<T>>>;

/// One small enum, request/reply only. `Step` for every rank must be sent before any of them can
/// finish (they meet in the all-reduce), so the coordinator casts all orders first, then awaits.
#[derive(RactorClusterMessage)]
pub enum WorkerMsg {
    #[rpc]
    Info(RpcReplyPort<Remote<WorkerReply<WorkerInfo>>>),
    #[rpc]
    Step(Remote<StepOrder>, RpcReplyPort<Remote<WorkerReply<StepReport>>>),
    #[rpc]
    Commit(Remote<Commit>, RpcReplyPort<Remote<WorkerReply<Acknowledged>>>),
    #[rpc]
    Abort(Remote<Abort>, RpcReplyPort<Remote<WorkerReply<Acknowledged>>>),
    #[rpc]
    Evaluate(Remote<EvalRequest>, RpcReplyPort<Remote<WorkerReply<Summary>>>),
    /// Rank 0 writes its tensor files into the coordinator's staging directory (checkpoints).
    #[rpc]
    Save(Remote<SaveRequest>, RpcReplyPort<Remote<WorkerReply<SavedTensors>>>),
}
