//! What a training step reports, gathered on the device as the step goes and read back to the host
//! in one transfer at its end: one wait for a GPU instead of one per statistic.
use std::ops::Range;

use tch::{Kind, Tensor};

use crate::{host, Result};

/// Tensors to read, each flattened to f64 (exact for the f32 losses, f64 sums and integer counts
/// below 2⁵³ that a step reports).
#[derive(Default)]
pub(crate) struct Readout {
    parts: Vec<Tensor>,
    len: usize,
}

/// Where a pushed tensor's values lie in what [`Readout::read`] returns.
#[derive(Debug, Clone)]
pub(crate) struct Slot(Range<usize>);

impl Readout {
    /// Queues `t`'s values (without its graph) for the read.
    pub fn push(&mut self, t: &Tensor) -> Result<Slot> {
        // Each op is a dispatch, so those with nothing to do are left out.
        let t = if t.requires_grad() { t.f_detach()? } else { t.shallow_clone() };
        let t = if t.kind() == Kind::Double { t } else { t.f_to_kind(Kind::Double)? };
        let flat = if t.dim() == 1 { t } else { t.f_reshape([-1])? };
        let start = self.len;
        self.len += flat.numel();
        self.parts.push(flat);
        Ok(Slot(start..self.len))
    }

    /// Every queued value, in one transfer.
    pub fn read(self) -> Result<Values> {
        if self.parts.is_empty() {
            return Ok(Values(Vec::new()));
        }
        Ok(Values(host::values::<f64>(&Tensor::f_cat(&self.parts, 0)?)?))
    }
}

/// The values of a [`Readout`].
pub(crate) struct Values(Vec<f64>);

impl Values {
    pub fn get(&self, slot: &Slot) -> &[f64] {
        &self.0[slot.0.clone()]
    }

    /// The first value of `slot` (a pushed scalar's only one).
    pub fn scalar(&self, slot: &Slot) -> f64 {
        self.get(slot)[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_read_returns_every_pushed_value_exactly() {
        let mut r = Readout::default();
        let third = Tensor::from_slice(&[1.0f32 / 3.0]).squeeze();
        let a = r.push(&third).unwrap();
        let b = r.push(&Tensor::from_slice(&[7i64, 9007199254740991])).unwrap();
        let c = r.push(&Tensor::from_slice2(&[[0.1f64, -2.5], [3.0, 4.0]])).unwrap();
        let before = host::reads();
        let v = r.read().unwrap();
        assert_eq!(host::reads(), before + 1);
        assert_eq!(v.scalar(&a), f64::from(1.0f32 / 3.0));
        assert_eq!(v.get(&b), [7.0, 9007199254740991.0]);
        assert_eq!(v.get(&c), [0.1, -2.5, 3.0, 4.0]);
    }
}
