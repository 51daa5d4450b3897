//! All-reduce of the gradient buffer between the ranks of one run. One trait, implemented in
//! process through shared memory ([`SharedGroup`]) and between processes or hosts over TCP
//! ([`TcpRing`]); NCCL can join beside them.
//!
//! Only a *sum* is needed: every training-step loss is already divided by the global batch size,
//! so the sum of the ranks' gradients is the gradient of the mean loss over the global batch —
//! what the one-process loop computes.
use std::net::SocketAddr;
use std::time::Duration;

mod shared;
mod tcp;
#[cfg(test)]
mod tcp_tests;
mod tcp_wire;

pub use shared::{SharedCollective, SharedGroup};
pub use tcp::{TcpRing, TcpRingOptions, DEFAULT_CHUNK_BYTES};

/// Another rank as a network collective sees it: errors name both, so an operator can tell which
/// process or host to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub rank: usize,
    pub addr: SocketAddr,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rank {} at {}", self.rank, self.addr)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollectiveError {
    /// A rank dropped out of the group (its thread ended or panicked): no further collective can
    /// complete, so every rank gets this instead of waiting forever.
    #[error("collective: rank {rank} left the group")]
    PeerLost { rank: usize },
    /// Ranks passed buffers of different lengths to the same call (a protocol bug).
    #[error("collective: ranks passed buffers of different lengths {lengths:?}")]
    LengthMismatch { lengths: Vec<usize> },
    /// A network peer made no progress within the timeout (hung, or its host is gone without a
    /// connection reset). `during` says what this rank was doing, e.g. "receiving from".
    #[error("collective: {during} {peer}: no progress within {waited:?}")]
    Timeout { peer: Peer, during: &'static str, waited: Duration },
    /// A socket operation with a peer failed: refused, reset, or closed (the peer exited).
    #[error("collective: {during} {peer}: {message}")]
    Io { peer: Peer, during: &'static str, kind: std::io::ErrorKind, message: String },
    /// A peer sent something this rank did not expect: not a ring peer at all, another version,
    /// another world, or another call (sequence number, operation or buffer length).
    #[error("collective: {peer} broke the protocol: {reason}")]
    Protocol { peer: Peer, reason: String },
    /// Rank `reporter` gave up on rank `culprit` and told the ring; no further call can complete.
    #[error("collective: rank {reporter} gave up on rank {culprit}; the ring is broken")]
    Aborted { reporter: usize, culprit: usize },
    /// The membership handed to this rank is inconsistent.
    #[error("collective: invalid ring plan: {reason}")]
    InvalidPlan { reason: String },
}

impl CollectiveError {
    /// The rank this error blames, if it blames one.
    pub fn culprit(&self) -> Option<usize> {
        match self {
            CollectiveError::PeerLost { rank } => Some(*rank),
            CollectiveError::Timeout { peer, .. }
            | CollectiveError::Io { peer, .. }
            | CollectiveError::Protocol { peer, .. } => Some(peer.rank),
            CollectiveError::Aborted { culprit, .. } => Some(*culprit),
            CollectiveError::LengthMismatch { .. } | CollectiveError::InvalidPlan { .. } => None,
        }
    }
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
