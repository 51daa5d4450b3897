//! Global gradient-norm clipping, PyTorch's `clip_grad_norm_` (L2, `coef = max / (norm + 1e-6)`).

use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// Clips the L2 norm of all grads taken together to `max_norm` and returns the norm before
/// clipping. Nothing is scaled when `max_norm` is `None`, the norm is at most `max_norm`, or
/// the norm is not finite (scaling by 0 or NaN would only hide the problem: the caller sees the
/// returned norm and decides whether to skip the step). Undefined grads count as zero.
pub fn clip_grad_norm(params: &[Tensor], max_norm: Option<f64>) -> Result<f64> {
    if let Some(m) = max_norm {
        if m.is_nan() || m <= 0.0 {
            return Err(Error::Invalid(format!("clip_grad_norm: max_norm = {m} must be > 0")));
        }
    }
    tch::no_grad(|| {
        let mut grads = Vec::with_capacity(params.len());
        for p in params {
            let g = p.f_grad()?;
            if g.defined() {
                grads.push(g);
            }
        }
        let Some(first) = grads.first() else {
            return Ok(0.0);
        };
        // Per-tensor norms gathered on one device in f64, then one host sync for the total.
        let device = first.device();
        let norms = grads
            .iter()
            .map(|g| g.f_norm()?.f_to_kind(Kind::Double)?.f_to_device(device))
            .collect::<Result<Vec<_>, _>>()?;
        let total = Tensor::f_stack(&norms, 0)?.f_norm()?.f_double_value(&[])?;
        if let Some(max) = max_norm {
            if total.is_finite() && total > max {
                let coef = max / (total + 1e-6);
                for g in &mut grads {
                    let _ = g.f_mul_scalar_(coef)?;
                }
            }
        }
        Ok(total)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::tests::{assert_close, param, set_grad};

    fn grads_of(params: &[Tensor]) -> Vec<Vec<f64>> {
        params.iter().map(|p| Vec::<f64>::try_from(&p.grad()).unwrap()).collect()
    }

    #[test]
    fn returns_global_norm_and_scales_to_max() {
        let a = param(&[0.0, 0.0]);
        let b = param(&[0.0]);
        let unused = param(&[0.0]);
        set_grad(&a, &[3.0, 4.0]);
        set_grad(&b, &[12.0]);
        let params = [a.shallow_clone(), b.shallow_clone(), unused];
        // sqrt(9 + 16 + 144) = 13
        let norm = clip_grad_norm(&params, Some(6.5)).unwrap();
        assert!((norm - 13.0).abs() < 1e-12, "{norm}");
        let coef = 6.5 / (13.0 + 1e-6);
        let g = grads_of(&params[..2]);
        assert_close(&g[0], &[3.0 * coef, 4.0 * coef]);
        assert_close(&g[1], &[12.0 * coef]);
        let after = clip_grad_norm(&params, None).unwrap();
        assert!((after - 6.5).abs() < 1e-6, "{after}");
    }

    #[test]
    fn below_max_or_none_leaves_grads_alone() {
        let a = param(&[0.0, 0.0]);
        set_grad(&a, &[3.0, 4.0]);
        let params = [a.shallow_clone()];
        assert_eq!(clip_grad_norm(&params, Some(5.0)).unwrap(), 5.0);
        assert_eq!(clip_grad_norm(&params, None).unwrap(), 5.0);
        assert_eq!(grads_of(&params)[0], vec![3.0, 4.0]);
        assert!(clip_grad_norm(&params, Some(0.0)).is_err());
        assert_eq!(clip_grad_norm(&[param(&[1.0])], Some(1.0)).unwrap(), 0.0);
    }
}
