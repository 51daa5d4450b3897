//! Gradient-norm clipping, PyTorch's `clip_grad_norm_` (L2, `coef = max / (norm + 1e-6)`), applied
//! to each group of a flat gradient buffer on its own.

use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// Clips each of `groups` (gradients, e.g. [`super::FlatParams::group_grads`]) to an L2 norm of at
/// most `max_norm` on its own and returns every group's norm before clipping, f64 `[groups]`, on
/// the gradients' device. A group is scaled only when `max_norm` is given, its norm exceeds it and
/// is finite (scaling by 0 or NaN would only hide the problem: the caller sees the norms and decides
/// whether to skip the step). Nothing is read back to the host: the scale is chosen on the device,
/// and there a group left alone is multiplied by exactly 1.
pub fn clip_grad_norms(groups: &[Tensor], max_norm: Option<f64>) -> Result<Tensor> {
    clip(groups, max_norm, true)
}

/// [`clip_grad_norms`]; `skip_on_cpu: false` multiplies every group as a GPU does.
fn clip(groups: &[Tensor], max_norm: Option<f64>, skip_on_cpu: bool) -> Result<Tensor> {
    if let Some(m) = max_norm {
        if m.is_nan() || m <= 0.0 {
            return Err(Error::Invalid(format!("clip_grad_norm: max_norm = {m} must be > 0")));
        }
    }
    let Some(first) = groups.first() else {
        return Ok(Tensor::zeros([0], (Kind::Double, tch::Device::Cpu)));
    };
    tch::no_grad(|| {
        let device = first.device();
        let norms = groups
            .iter()
            .map(|g| g.f_norm()?.f_to_kind(Kind::Double)?.f_to_device(device))
            .collect::<Result<Vec<_>, _>>()?;
        let norms = Tensor::f_stack(&norms, 0)?;
        if let Some(max) = max_norm {
            // max / (norm + 1e-6) in f64, as PyTorch computes it on the host; libtorch rounds a
            // 0-dim f64 factor to the gradients' f32 as it would a host scalar.
            let scale = norms.f_full_like(max)?.f_div(&norms.f_add_scalar(1e-6)?)?;
            let clip = norms.f_isfinite()?.f_logical_and(&norms.f_gt(max)?)?;
            let scale = scale.f_where_scalarother(&clip, 1.0)?;
            // On the CPU the factors are in host memory already: a group left alone is skipped
            // rather than multiplied by 1, a pass over its gradients saved.
            let on_cpu = if skip_on_cpu { crate::host::if_on_cpu::<f64>(&scale)? } else { None };
            for (i, g) in groups.iter().enumerate() {
                if on_cpu.as_ref().is_some_and(|f| f[i] == 1.0) {
                    continue;
                }
                let _ = g.shallow_clone().f_mul_(&scale.f_select(0, i as i64)?)?;
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

    fn norms(groups: &[Tensor], max_norm: Option<f64>) -> Vec<f64> {
        values(&clip_grad_norms(groups, max_norm).unwrap())
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
        close(&norms(&groups, Some(2.5)), &[5.0, 12.0, 0.5]);
        let (a, b) = (2.5 / (5.0 + 1e-6), 2.5 / (12.0 + 1e-6));
        // The views scale the buffer in place, each element by the factor rounded to f32 as a host
        // scalar would be (bit for bit); the small group is left alone.
        let want = [3.0 * a as f32, 4.0 * a as f32, 12.0 * b as f32, 0.3, 0.4];
        assert_eq!(Vec::<f32>::try_from(&buffer).unwrap(), want);
        close(&norms(&groups, None), &[2.5, 2.5, 0.5]);
    }

    #[test]
    fn skipping_the_groups_left_alone_gives_the_bits_of_multiplying_them_by_one() {
        let values = [3.0f32, 4.0, 12.0, 0.3, 0.4, f32::NAN, 1e-30];
        let run = |skip: bool| {
            let buffer = Tensor::from_slice(&values);
            let groups =
                [buffer.narrow(0, 0, 2), buffer.narrow(0, 2, 1), buffer.narrow(0, 3, 2), buffer.narrow(0, 5, 2)];
            let _norms = clip(&groups, Some(2.5), skip).unwrap();
            Vec::<f32>::try_from(&buffer).unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        assert_eq!(run(true), run(false));
        assert_ne!(run(true), values.map(f32::to_bits), "something was clipped");
    }

    #[test]
    fn below_max_or_none_leaves_grads_alone() {
        let g = Tensor::from_slice(&[3.0f32, 4.0]);
        close(&norms(&[g.shallow_clone()], Some(5.0)), &[5.0]);
        close(&norms(&[g.shallow_clone()], None), &[5.0]);
        assert_eq!(values(&g), [3.0, 4.0]);
        assert!(clip_grad_norms(&[g.shallow_clone()], Some(0.0)).is_err());
        assert!(norms(&[], Some(1.0)).is_empty());
        let empty = Tensor::zeros([0], (Kind::Float, tch::Device::Cpu));
        close(&norms(&[empty], Some(1.0)), &[0.0]);
    }

    #[test]
    fn a_non_finite_norm_is_returned_and_nothing_scaled() {
        let g = Tensor::from_slice(&[f32::INFINITY, 1.0]);
        assert!(norms(&[g.shallow_clone()], Some(1.0))[0].is_infinite());
        assert_eq!(values(&g)[1], 1.0);
    }
}
