//! What crosses a process boundary inside an actor message. ractor_cluster asks every payload for
//! `BytesConvertable`, whose `from_bytes` cannot fail; [`Remote`] carries the outcome of decoding
//! instead, so a malformed or oversized message from a peer reaches the receiving actor as an
//! error it logs and drops, never as a panic. Inside one process nothing is encoded.
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::wire::{self, WireError};

/// A payload as it arrived: the value, or why its bytes did not decode.
#[derive(Debug, Clone, PartialEq)]
pub struct Remote<T>(pub Result<T, WireError>);

impl<T> Remote<T> {
    pub fn new(value: T) -> Self {
        Remote(Ok(value))
    }

    pub fn into_inner(self) -> Result<T, WireError> {
        self.0
    }
}

impl<T> Remote<Result<T, String>> {
    /// A reply that carries a peer's own error as text: its value, or that text, or why its bytes
    /// did not decode.
    pub fn flatten(self) -> Result<T, String> {
        match self.0 {
            Ok(reply) => reply,
            Err(e) => Err(format!("reply did not decode: {e}")),
        }
    }
}

impl<T> From<T> for Remote<T> {
    fn from(value: T) -> Self {
        Remote::new(value)
    }
}

/// A payload that failed to encode is sent as no bytes, which the peer decodes as `Malformed`:
/// both ends then see the failure instead of a hang.
impl<T> ractor::BytesConvertable for Remote<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn into_bytes(self) -> Vec<u8> {
        match self.0.as_ref().map(wire::encode) {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot encode a control message; sending an empty one");
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        Remote(wire::decode(&bytes))
    }
}

/// Coordinator → a worker process, before every generation of the cluster: the rank it will
/// hold, the run it belongs to, and where its replica starts from. The worker binds its ring
/// listener and answers with the address ([`Prepared`]); the ring itself comes with [`super::RingPlan`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// Counts the cluster's membership changes; messages of an older generation are refused.
    pub generation: u64,
    pub rank: usize,
    pub world: usize,
    /// The resolved run config as TOML (the coordinator's `config.toml`).
    pub config_toml: String,
    /// The config's name, for the worker's error messages.
    pub config_file: String,
    /// A checkpoint directory every rank loads its state from (shared storage), or none.
    pub resume: Option<PathBuf>,
    pub bucket_bytes: usize,
    /// Bounds the ring's reads and writes once the ranks have met, in seconds.
    pub collective_timeout_secs: f64,
}

/// A worker's answer to an [`Assignment`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prepared {
    pub generation: u64,
    /// Where its ring listener accepts rank − 1. An unspecified IP (`0.0.0.0`) is replaced by the
    /// address the coordinator sees the worker's node at.
    pub ring_addr: SocketAddr,
    /// A fresh NCCL unique id when the replica lives on a GPU and libnccl loads: the coordinator
    /// hands rank 0's to every rank when all of them offered one.
    pub nccl_id: Option<Vec<u8>>,
}

/// Coordinator → every worker of a generation: how the ranks reduce gradients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartPlan {
    pub generation: u64,
    /// The TCP ring (CPU replicas), always sent: it names the members.
    pub ring: super::RingPlan,
    /// NCCL instead of the ring when every rank is on a GPU.
    pub nccl_id: Option<Vec<u8>>,
}

/// A worker process introducing itself to the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerHello {
    /// Host, process id and device, for logs and errors.
    pub label: String,
    /// The rank it asked for (`--rank`, `$RANK`); ranks are assigned in this order, then by arrival.
    pub preferred_rank: Option<usize>,
}

/// Coordinator → a worker process: the run is over for it; it exits with this status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finish {
    pub ok: bool,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use ractor::BytesConvertable;

    use super::*;
    use crate::protocol::StepOrder;

    #[test]
    fn remote_payloads_round_trip_and_bad_bytes_become_errors() {
        let order = StepOrder { step: 2, epoch: 0, step_in_epoch: 2, lr: 0.1, baselines: vec![0.5] };
        let bytes = Remote::new(order.clone()).into_bytes();
        assert_eq!(Remote::<StepOrder>::from_bytes(bytes.clone()).into_inner(), Ok(order));
        let mut truncated = bytes;
        truncated.pop();
        assert!(matches!(Remote::<StepOrder>::from_bytes(truncated).into_inner(), Err(WireError::Malformed(_))));
        let oversized = vec![7u8; wire::MAX_MESSAGE_BYTES + 10];
        assert!(matches!(Remote::<StepOrder>::from_bytes(oversized).into_inner(), Err(WireError::TooLarge { .. })));
        // The NCCL unique id rides in the start plan: 128 bytes in, the same 128 bytes out.
        let id: Vec<u8> = (0..128u8).collect();
        let plan = StartPlan {
            generation: 3,
            ring: crate::protocol::RingPlan { rank: 1, world: 2, addrs: vec!["10.0.0.1:1".parse().unwrap(); 2] },
            nccl_id: Some(id.clone()),
        };
        let back = Remote::<StartPlan>::from_bytes(Remote::new(plan.clone()).into_bytes()).into_inner().unwrap();
        assert_eq!((back.nccl_id.as_deref(), &back), (Some(id.as_slice()), &plan));
        // An error travels as no bytes and arrives as an error.
        let failed: Remote<StepOrder> = Remote(Err(WireError::Malformed("x".into())));
        assert!(Remote::<StepOrder>::from_bytes(failed.into_bytes()).into_inner().is_err());
    }
}
