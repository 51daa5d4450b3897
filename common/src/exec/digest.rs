//! A fingerprint of a model's parameters: replicas that must be identical compare digests instead
//! of shipping tensors, and checkpoints record it to detect a mismatched load.
use sha2::{Digest, Sha256};
use tch::{Kind, Tensor};

use super::D2nn;
use crate::{host, Result};

/// SHA-256 over every parameter in canonical (sorted-name) order: its name, its shape and its
/// values as little-endian f32 bytes. Bitwise equality of the values, not closeness: −0.0 and 0.0
/// differ, as do two NaNs with different payloads.
pub fn param_digest(model: &D2nn) -> Result<String> {
    named_digest(&model.parameters())
}

/// [`param_digest`] of named tensors from anywhere (a checkpoint file): sorted by name first, so the
/// digest of a saved model equals the digest of the live one.
pub fn named_digest(named: &[(String, Tensor)]) -> Result<String> {
    let mut sorted: Vec<&(String, Tensor)> = named.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hasher = Sha256::new();
    for (name, p) in sorted {
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        let shape = p.size();
        hasher.update((shape.len() as u64).to_le_bytes());
        for d in &shape {
            hasher.update(d.to_le_bytes());
        }
        for v in host::values::<f32>(&p.f_detach()?.f_to_kind(Kind::Float)?)? {
            hasher.update(v.to_le_bytes());
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::tests::graph_of;
    use tch::Device;

    #[test]
    fn digest_is_stable_and_sees_one_ulp() {
        let a = D2nn::new(graph_of("high_low.toml"), Device::Cpu, 3).unwrap();
        let b = D2nn::new(graph_of("high_low.toml"), Device::Cpu, 3).unwrap();
        let d = param_digest(&a).unwrap();
        assert_eq!(d.len(), 64);
        assert_eq!(d, param_digest(&b).unwrap(), "same seed, same parameters");
        let (_, p) = &b.parameters()[0];
        tch::no_grad(|| {
            let mut first = p.flatten(0, -1).narrow(0, 0, 1);
            let v = first.double_value(&[0]) as f32;
            let _ = first.fill_(f64::from(f32::from_bits(v.to_bits() + 1)));
        });
        assert_ne!(d, param_digest(&b).unwrap(), "one ulp in one value changes the digest");
    }
}
