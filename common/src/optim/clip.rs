//! Gradient-norm clipping, PyTorch's `clip_grad_norm_` (L2, `coef = max / (norm + 1e-6)`), applied
//! to each group of a flat gradient buffer on its own.

use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// Clips each of `groups` (gradients, e.g. [`super::FlatParams::group_grads`]) to an L2 norm of at
/// most `max_norm` on its own and returns every group's norm before clipping. A group is scaled
/// only when `max_norm` is given, its norm exceeds it and is finite (scaling by 0 or NaN would only
/// hide the problem: the caller sees the norms and decides whether to skip the step). The norms
/// are read back to the host in one transfer.
pub fn clip_grad_norms(groups: &[Tensor], max_norm: Option<f64>) -> Result<Vec<f64>> {
    if let Some(m) = max_norm {
        if m.is_nan() || m <= 0.0 {
            return Err(Error::Invalid(format!("clip_grad_norm: max_norm = {m} must be > 0")));
        }
    }
    let Some(first) = groups.first() else {
        return Ok(Vec::new());
    };
    tch::no_grad(|| {
        let device = first.device();
        let norms = groups
            .iter()
            .map(|g| g.f_norm()?.f_to_kind(Kind::Double)?.f_to_device(device))
            .collect::<Result<Vec<_>, _>>()?;
        let norms = crate::host::values::<f64>(&Tensor::f_stack(&norms, 0)?)?;
        if let Some(max) = max_norm {
            for (g, &norm) in groups.iter().zip(&norms) {
                if norm.is_finite() && norm > max {
                    let _ = g.shallow_clone().f_mul_scalar_(max / (norm + 1e-6))?;
                }
            }
        }
        Ok(norms)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(&t.to_kind(Kind::Double)).unwrap()
    }

    fn close(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
        assert!(got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-6), "got {got:?}, want {want:?}");
    }

    #[test]
    fn each_group_is_clipped_to_max_on_its_own() {
        let buffer = Tensor::from_slice(&[3.0f32, 4.0, 12.0, 0.3, 0.4]);
        // Groups: [3, 4] (norm 5), [12] (norm 12), [0.3, 0.4] (norm 0.5).
        let groups = [buffer.narrow(0, 0, 2), buffer.narrow(0, 2, 1), buffer.narrow(0, 3, 2)];
        let norms = clip_grad_norms(&groups, Some(2.5)).unwrap();
        close(&norms, &[5.0, 12.0, 0.5]);
        let (a, b) = (2.5 / (5.0 + 1e-6), 2.5 / (12.0 + 1e-6));
        // The views scale the buffer in place; the small group is left alone.
        close(&values(&buffer), &[3.0 * a, 4.0 * a, 12.0 * b, 0.3, 0.4]);
        close(&clip_grad_norms(&groups, None).unwrap(), &[2.5, 2.5, 0.5]);
    }

    #[test]
    fn below_max_or_none_leaves_grads_alone() {
        let g = Tensor::from_slice(&[3.0f32, 4.0]);
        close(&clip_grad_norms(&[g.shallow_clone()], Some(5.0)).unwrap(), &[5.0]);
        close(&clip_grad_norms(&[g.shallow_clone()], None).unwrap(), &[5.0]);
        assert_eq!(values(&g), [3.0, 4.0]);
        assert!(clip_grad_norms(&[g.shallow_clone()], Some(0.0)).is_err());
        assert!(clip_grad_norms(&[], Some(1.0)).unwrap().is_empty());
        let empty = Tensor::zeros([0], (Kind::Float, tch::Device::Cpu));
        close(&clip_grad_norms(&[empty], Some(1.0)).unwrap(), &[0.0]);
    }

    #[test]
    fn a_non_finite_norm_is_returned_and_nothing_scaled() {
        let g = Tensor::from_slice(&[f32::INFINITY, 1.0]);
        let norms = clip_grad_norms(&[g.shallow_clone()], Some(1.0)).unwrap();
        assert!(norms[0].is_infinite());
        assert_eq!(values(&g)[1], 1.0);
    }
}
