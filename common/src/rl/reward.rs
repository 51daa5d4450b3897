//! Per-example reward `r = λ·A + (1−λ)·E` (paper §3.1) with A the 0/1 correctness and
//! E = −(executed cost / full-execution cost), so E ∈ [−1, 0].

use super::{check_lambda, same_len, vector_len};
use crate::error::Result;
use tch::{Kind, Tensor};

/// `[B]` rewards `λ·correct − (1−λ)·cost_fraction`, f32, on the device of `correct`.
pub fn example_rewards(correct: &Tensor, cost_fraction: &Tensor, lambda: f64) -> Result<Tensor> {
    check_lambda(lambda)?;
    let b = vector_len("correct", correct)?;
    same_len("cost_fraction", cost_fraction, b)?;
    let a = correct.f_to_kind(Kind::Float)?;
    let cost = cost_fraction.f_to_kind(Kind::Float)?.f_to_device(a.device())?;
    Ok(a.f_mul_scalar(lambda)?.f_sub(&cost.f_mul_scalar(1.0 - lambda)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rl::test_util::*;

    #[test]
    fn equals_hand_computation() {
        let r = example_rewards(&f32s(&[1., 0., 1., 0.]), &f32s(&[0.5, 0.25, 1.0, 0.0]), 0.8).unwrap();
        // 0.8·A − 0.2·cost
        assert_close(&vals(&r), &[0.7, -0.05, 0.6, 0.0], 1e-6);
        assert_eq!(r.kind(), Kind::Float);
    }

    #[test]
    fn lambda_extremes_pick_one_term() {
        let (a, c) = (f32s(&[1., 0.]), f32s(&[0.3, 0.9]));
        assert_close(&vals(&example_rewards(&a, &c, 1.0).unwrap()), &[1.0, 0.0], 1e-7);
        assert_close(&vals(&example_rewards(&a, &c, 0.0).unwrap()), &[-0.3, -0.9], 1e-7);
    }

    #[test]
    fn rejects_bad_lambda_and_shapes() {
        let (a, c) = (f32s(&[1., 0.]), f32s(&[0.3, 0.9]));
        assert!(example_rewards(&a, &c, 1.5).unwrap_err().to_string().contains("λ"));
        assert!(example_rewards(&a, &c, f64::NAN).is_err());
        let e = example_rewards(&a, &f32s(&[0.3]), 0.5).unwrap_err().to_string();
        assert!(e.contains("cost_fraction") && e.contains('1') && e.contains('2'), "{e}");
    }
}
