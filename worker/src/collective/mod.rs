//! All-reduce of the gradient buffer between the ranks of one run. One trait, so the multi-node
//! runtime can add TCP and NCCL implementations beside the in-process one here.
//!
//! Only a *sum* is needed: every training-step loss is already divided by the global batch size,
//! so the sum of the ranks' gradients is the gradient of the mean loss over the global batch —
//! what the one-process loop computes.
mod shared;

pub use shared::{SharedCollective, SharedGroup};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollectiveError {
    /// A rank dropped out of the group (its thread ended or panicked): no further collective can
    /// complete, so every rank gets this instead of waiting forever.
    #[error("collective: rank {rank} left the group")]
    PeerLost { rank: usize },
    /// Ranks passed buffers of different lengths to the same call (a protocol bug).
    #[error("collective: ranks passed buffers of different lengths {lengths:?}")]
    LengthMismatch { lengths: Vec<usize> },
}

/// One rank's handle on a group of `world` ranks. Every rank must issue the same calls in the same
/// order with buffers of the same length; a rank that cannot contribute still calls, with zeros.
pub trait Collective: Send {
    fn world(&self) -> usize;
    fn rank(&self) -> usize;
    /// Replaces `buf` on every rank by the element-wise sum over the ranks. Implementations must
    /// give every rank bitwise-identical results (fixed summation order), so replicas never drift.
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError>;
    /// Returns once every rank has called it.
    fn barrier(&mut self) -> Result<(), CollectiveError>;
}
