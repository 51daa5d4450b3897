//! All-reduce of the gradient buffer between the ranks of one run. One trait, implemented in
//! process through shared memory ([`SharedGroup`]) and between processes or hosts over TCP
//! ([`TcpRing`]), and between GPUs with NCCL ([`NcclCollective`]).
//!
//! Only a *sum* is needed: every training-step loss is already divided by the global batch size,
//! so the sum of the ranks' gradients is the gradient of the mean loss over the global batch —
//! what the one-process loop computes.
use std::net::SocketAddr;
use std::time::Duration;

use tch::{Device, Kind, Tensor};

mod nccl;
mod shared;
mod tcp;
mod tcp_auth;
mod tcp_connect;
#[cfg(test)]
mod tcp_tests;
mod tcp_tls;
#[cfg(test)]
mod tcp_tls_tests;
mod tcp_wire;

pub use nccl::{nccl_available, nccl_version, NcclCollective, NcclUniqueId, NCCL_ID_BYTES};
pub use shared::{SharedCollective, SharedGroup};
pub use tcp::{RingBreaker, TcpRing, TcpRingOptions, DEFAULT_CHUNK_BYTES};
pub use tcp_auth::{new_session, RingKey};

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
    /// NCCL or CUDA is missing or failed; the message says which call and why.
    #[error("collective (NCCL): {0}")]
    Nccl(String),
    /// Staging a tensor through host memory failed.
    #[error("collective: libtorch: {0}")]
    Tensor(String),
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
            CollectiveError::LengthMismatch { .. }
            | CollectiveError::InvalidPlan { .. }
            | CollectiveError::Nccl(_)
            | CollectiveError::Tensor(_) => None,
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
    /// The device this collective reduces on without staging; None: host memory.
    fn reduce_device(&self) -> Option<Device> {
        None
    }
    /// [`Collective::all_reduce_sum`] on a contiguous f32 tensor, in place. The default stages it
    /// through host memory; a device collective (NCCL) reduces it where it lives.
    fn all_reduce_sum_tensor(&mut self, t: &mut Tensor) -> Result<(), CollectiveError> {
        let tensor_error = |e: tch::TchError| CollectiveError::Tensor(e.to_string());
        if t.kind() != Kind::Float {
            return Err(CollectiveError::Tensor(format!("all-reduce needs f32, got {:?}", t.kind())));
        }
        let mut host = vec![0f32; t.numel()];
        let n = host.len();
        t.f_copy_data(&mut host, n).map_err(tensor_error)?;
        self.all_reduce_sum(&mut host)?;
        let sums = Tensor::from_slice(&host).f_view(t.size().as_slice()).map_err(tensor_error)?;
        t.f_copy_(&sums).map_err(tensor_error)
    }
    /// Returns once every rank has called it.
    fn barrier(&mut self) -> Result<(), CollectiveError>;
}

/// Which collective the ranks of one process reduce through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// NCCL when the replicas live on GPUs and libnccl loads, else shared memory.
    #[default]
    Auto,
    /// Shared host memory (GPU gradients are staged through the host).
    Shared,
    /// NCCL, one GPU per rank.
    Nccl,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Backend::Auto),
            "shared" => Ok(Backend::Shared),
            "nccl" => Ok(Backend::Nccl),
            other => Err(format!("unknown collective `{other}`: expected auto, shared or nccl")),
        }
    }
}

impl Backend {
    /// What `Auto` means for replicas whose rank 0 lives on `device`.
    pub fn resolve(self, device: Device) -> Backend {
        match (self, device) {
            (Backend::Auto, Device::Cuda(_)) if nccl_available() => Backend::Nccl,
            (Backend::Auto, _) => Backend::Shared,
            (b, _) => b,
        }
    }
}

/// The collectives of `world` ranks in this process; with NCCL rank r uses GPU `first + r` of a
/// `Device::Cuda(first)`. `timeout` bounds every NCCL wait (joining and each reduction).
pub fn in_process_group(
    backend: Backend,
    world: usize,
    device: Device,
    timeout: Duration,
) -> Result<Vec<Box<dyn Collective>>, CollectiveError> {
    match (backend.resolve(device), device) {
        (Backend::Nccl, Device::Cuda(first)) => {
            let id = NcclUniqueId::new()?;
            (0..world)
                .map(|rank| {
                    NcclCollective::start(&id, rank, world, first + rank, timeout)
                        .map(|c| Box::new(c) as Box<dyn Collective>)
                })
                .collect()
        }
        (Backend::Nccl, other) => {
            Err(CollectiveError::Nccl(format!("NCCL reduces GPU tensors; the replicas live on {other:?}")))
        }
        _ => Ok(SharedGroup::handles(world).into_iter().map(|c| Box::new(c) as Box<dyn Collective>).collect()),
    }
}
