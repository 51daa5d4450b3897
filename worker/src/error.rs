use crate::collective::CollectiveError;

/// Errors of a worker. A step's own failure is not one of these: it travels in the step report
/// (`StepOutcome::Failed`), because the rank still takes part in the all-reduce.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Common(#[from] d2nn_common::Error),
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Collective(#[from] CollectiveError),
    /// A message out of sequence, or state that contradicts the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The engine thread ended (it panicked, or was shut down) with requests outstanding.
    #[error("rank {rank}: the engine thread is gone")]
    EngineGone { rank: usize },
    /// The failure injected by `replica::Faults::fail_step`, for tests of the abort path.
    #[error("rank {rank}: injected failure at step {step}")]
    Injected { rank: usize, step: u64 },
}
