//! What crosses a process boundary inside an actor message. ractor_cluster asks every payload for
//! `BytesConvertable`, whose `from_bytes` cannot fail; [`Remote`] carries the outcome of decoding
//! instead, so a malformed or oversized message from a peer reaches the receiving actor as an
//! error it logs and drops, never as a panic. Inside one process nothing is encoded.
use serde::de::DeserializeOwned;
use serde::Serialize;

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

#[cfg(test)]
mod tests {
    use ractor::BytesConvertable;

    use super::*;
    use crate::protocol::{StartPlan, StepOrder};

    #[test]
    fn remote_payloads_round_trip_and_bad_bytes_become_errors() {
        let order = StepOrder {
            step: 2,
            epoch: 0,
            step_in_epoch: 2,
            examples: vec![1, 2],
            data: None,
            lr: 0.1,
            baselines: vec![0.5],
        };
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
            ring: crate::protocol::RingPlan {
                rank: 1,
                world: 2,
                addrs: vec!["10.0.0.1:1".parse().unwrap(); 2],
                session: "s/g1".into(),
            },
            nccl_id: Some(id.clone()),
        };
        let back = Remote::<StartPlan>::from_bytes(Remote::new(plan.clone()).into_bytes()).into_inner().unwrap();
        assert_eq!((back.nccl_id.as_deref(), &back), (Some(id.as_slice()), &plan));
        // An error travels as no bytes and arrives as an error.
        let failed: Remote<StepOrder> = Remote(Err(WireError::Malformed("x".into())));
        assert!(Remote::<StepOrder>::from_bytes(failed.into_bytes()).into_inner().is_err());
    }
}
