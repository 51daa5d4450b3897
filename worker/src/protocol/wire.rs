//! The encoding of control messages between processes: bincode 2 (standard configuration) with a
//! size limit on both sides. A peer's bytes are untrusted: decoding never panics, never allocates
//! more than the limit, and rejects trailing garbage, so a malformed message is an error the
//! receiver logs and drops.
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest encoded control message. ractor_cluster drops the whole session on a frame over 16 MiB;
/// control messages are small (tensors travel on the collective), so anything near this is a bug
/// or an attack.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message of {bytes} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge { bytes: usize },
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("malformed message: {trailing} bytes after its end")]
    Trailing { trailing: usize },
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE_BYTES>()
}

pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, WireError> {
    let bytes = bincode::serde::encode_to_vec(message, config()).map_err(|e| WireError::Malformed(e.to_string()))?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge { bytes: bytes.len() });
    }
    Ok(bytes)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLarge { bytes: bytes.len() });
    }
    let (message, read) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(|e| WireError::Malformed(e.to_string()))?;
    if read != bytes.len() {
        return Err(WireError::Trailing { trailing: bytes.len() - read });
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Commit, StepOrder};

    fn order() -> StepOrder {
        StepOrder {
            step: 3,
            epoch: 0,
            step_in_epoch: 3,
            examples: vec![3, 4],
            data: None,
            lr: 0.1,
            baselines: vec![0.5, 0.25],
        }
    }

    #[test]
    fn round_trips() {
        let bytes = encode(&order()).unwrap();
        assert_eq!(decode::<StepOrder>(&bytes).unwrap(), order());
    }

    #[test]
    fn truncated_garbage_trailing_and_oversized_input_are_errors_not_panics() {
        let bytes = encode(&order()).unwrap();
        for cut in 0..bytes.len() {
            assert!(matches!(decode::<StepOrder>(&bytes[..cut]), Err(WireError::Malformed(_))), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0, 1, 2]);
        assert_eq!(decode::<StepOrder>(&longer), Err(WireError::Trailing { trailing: 3 }));
        // A forged length prefix announcing 2^60 baselines must not allocate them.
        let mut forged = encode(&Commit { step: 1, baselines: vec![], want_digest: false }).unwrap();
        forged.truncate(1);
        forged.extend_from_slice(&[0xFF, 0, 0, 0, 0, 0, 0, 0, 0x10]);
        assert!(matches!(decode::<Commit>(&forged), Err(WireError::Malformed(_))));
        let big = vec![0u8; MAX_MESSAGE_BYTES + 1];
        assert_eq!(decode::<StepOrder>(&big), Err(WireError::TooLarge { bytes: MAX_MESSAGE_BYTES + 1 }));
        let huge = StepOrder { baselines: vec![0.0; MAX_MESSAGE_BYTES / 8 + 1], ..order() };
        assert!(matches!(encode(&huge), Err(WireError::TooLarge { .. }) | Err(WireError::Malformed(_))));
        // Every byte string of a fixed small length: no panic.
        for seed in 0..2000u64 {
            let noise: Vec<u8> = (0..24).map(|i| (d2nn_common::rng::hash_words(&[seed, i]) & 0xFF) as u8).collect();
            let _ = decode::<StepOrder>(&noise);
        }
    }
}
