//! Adam and AdamW with bias correction, PyTorch's single-tensor formulas:
//! `m = lerp(m, g, 1-β1); v = β2·v + (1-β2)·g²;
//!  p -= (lr / (1-β1^t)) · m / (sqrt(v) / sqrt(1-β2^t) + eps)`,
//! with weight decay either added to `g` (Adam) or applied as `p *= 1 - lr·wd` first (AdamW).

use std::collections::HashMap;

use tch::{Kind, Tensor};

use super::{check_step_args, load_exact, FlatParams, Layout, Optimizer};
use crate::error::{Error, Result};

pub struct Adam {
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    decoupled: bool,
    /// First and second moments, laid out like the flat parameters.
    m: Tensor,
    v: Tensor,
    layout: Layout,
    /// Every parameter takes every step (the flat buffers update them together), so one count
    /// drives the bias correction of all of them.
    steps: u64,
}

impl Adam {
    pub fn new(
        flat: &FlatParams,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
        decoupled: bool,
    ) -> Result<Self> {
        let (m, v) = tch::no_grad(|| -> Result<(Tensor, Tensor)> {
            Ok((flat.data().f_zeros_like()?, flat.data().f_zeros_like()?))
        })?;
        Ok(Adam { beta1, beta2, eps, weight_decay, decoupled, m, v, layout: flat.layout().clone(), steps: 0 })
    }
}

impl Optimizer for Adam {
    fn step(&mut self, flat: &FlatParams, lr: f64) -> Result<()> {
        check_step_args(flat, &self.layout, lr)?;
        let t = (self.steps + 1) as f64;
        tch::no_grad(|| -> Result<()> {
            let mut p = flat.data().shallow_clone();
            let g = flat.grads()?;
            let g = if self.weight_decay == 0.0 {
                g
            } else if self.decoupled {
                let _ = p.f_mul_scalar_(1.0 - lr * self.weight_decay)?;
                g
            } else {
                g.f_add(&p.f_mul_scalar(self.weight_decay)?)?
            };
            let (m, v) = (&mut self.m, &mut self.v);
            let _ = m.f_lerp_(&g, 1.0 - self.beta1)?;
            let _ = v.f_mul_scalar_(self.beta2)?;
            let _ = v.f_addcmul_(&g, &g.f_mul_scalar(1.0 - self.beta2)?)?;
            let step_size = lr / (1.0 - self.beta1.powf(t));
            let bias_correction2_sqrt = (1.0 - self.beta2.powf(t)).sqrt();
            let mut denom = v.f_sqrt()?;
            let _ = denom.f_div_scalar_(bias_correction2_sqrt)?;
            let _ = denom.f_add_scalar_(self.eps)?;
            let _ = p.f_addcdiv_(&m.f_mul_scalar(-step_size)?, &denom)?;
            Ok(())
        })?;
        self.steps += 1;
        Ok(())
    }

    /// Per parameter `adam.m.{i}` and `adam.v.{i}` (views of the moments) and `adam.step.{i}`, a
    /// 0-dim int64 CPU tensor: checkpoints keep PyTorch's per-parameter step, which here is the
    /// global one for every parameter.
    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let (m, v) = (self.layout.views(&self.m), self.layout.views(&self.v));
        let mut out = Vec::with_capacity(3 * m.len());
        for (i, (m, v)) in m.into_iter().zip(v).enumerate() {
            out.push((format!("adam.m.{i}"), m));
            out.push((format!("adam.v.{i}"), v));
            out.push((format!("adam.step.{i}"), Tensor::from(self.steps as i64)));
        }
        out
    }

    fn load_state(&mut self, tensors: &[(String, Tensor)], steps: u64) -> Result<()> {
        // Counts are checked before anything is copied, so a bad checkpoint loads nothing; their
        // presence, shape and dtype are left to `load_exact` like every other tensor.
        let given: HashMap<&str, &Tensor> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
        for i in 0..self.layout.slots.len() {
            let name = format!("adam.step.{i}");
            let Some(t) = given.get(name.as_str()) else {
                continue;
            };
            if t.defined() && t.size().is_empty() && t.kind() == Kind::Int64 {
                let c = crate::host::scalar_i64(t)?;
                if c != steps as i64 {
                    return Err(Error::Invalid(format!(
                        "optimizer state: tensor `{name}` = {c}, expected {steps} (the global step: every \
                         parameter takes every step)"
                    )));
                }
            }
        }
        // The counts go through the same strict checks as the moments, into the global count.
        let mut own = self.state_tensors();
        for (name, t) in &mut own {
            if name.starts_with("adam.step.") {
                *t = Tensor::from(steps as i64);
            }
        }
        load_exact("optimizer state", own, tensors)?;
        self.steps = steps;
        Ok(())
    }

    fn steps(&self) -> u64 {
        self.steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::tests::{assert_close, param, set_grad};
    use crate::optim::FlatParams;

    const G1: [f64; 2] = [0.5, 1.0];
    const G2: [f64; 2] = [1.0, -1.0];

    /// Runs Adam(lr 0.1, β 0.9/0.999, eps 1e-8) from p = [1, -2], returning p after each step.
    fn run(wd: f64, decoupled: bool, grads: &[[f64; 2]]) -> Vec<Vec<f64>> {
        let p = param(&[1.0, -2.0]);
        let flat = FlatParams::new(std::slice::from_ref(&p), 0).unwrap();
        let mut opt = Adam::new(&flat, 0.9, 0.999, 1e-8, wd, decoupled).unwrap();
        let mut out = Vec::new();
        for g in grads {
            set_grad(&p, g);
            opt.step(&flat, 0.1).unwrap();
            out.push(Vec::<f64>::try_from(&p).unwrap());
        }
        out
    }

    #[test]
    fn two_steps_match_hand_computation() {
        let ps = run(0.0, false, &[G1, G2]);
        // Step 1: m = 0.1·g1, v = 0.001·g1², bias-corrected m̂ = g1, v̂ = g1², so the move is
        // lr·g/(|g| + eps).
        assert_close(&ps[0], &[1.0 - 0.1 * 0.5 / (0.5 + 1e-8), -2.0 - 0.1 * 1.0 / (1.0 + 1e-8)]);
        assert_close(&ps[0], &[0.900000002, -2.099999999]);
        // Step 2: m = [0.145, -0.01], v = [0.00124975, 0.001999], bc1 = 0.19, bc2 = 0.001999;
        // m̂ = [0.7631578947, -0.0526315789], √v̂ = [0.7906880506, 1.0].
        assert_close(&ps[1], &[0.8034818006385094, -2.0947368411578946]);
    }

    #[test]
    fn coupled_weight_decay_goes_through_the_moments() {
        // g' = g1 + 0.1·p0 = [0.6, 0.8]; step 1 moves by lr·g'/(|g'| + eps).
        let ps = run(0.1, false, &[G1, G2]);
        assert_close(&ps[0], &[1.0 - 0.1 * 0.6 / (0.6 + 1e-8), -2.0 - 0.1 * 0.8 / (0.8 + 1e-8)]);
        assert_close(&ps[1], &[0.8025029703202308, -2.074859045356938]);
    }

    #[test]
    fn adamw_decays_weights_directly() {
        // p *= 1 - 0.1·0.1 first, then the plain Adam move.
        let ps = run(0.1, true, &[G1, G2]);
        assert_close(&ps[0], &[0.99 - 0.1 * 0.5 / (0.5 + 1e-8), -1.98 - 0.1 * 1.0 / (1.0 + 1e-8)]);
        assert_close(&ps[0], &[0.890000002, -2.079999999]);
        assert_close(&ps[1], &[0.7845818006185094, -2.0539368411678947]);
    }

    #[test]
    fn every_parameter_takes_every_step() {
        // A parameter no example reached has a zero gradient: AdamW still decays it, its moments
        // stay zero (so no Adam move), and the bias correction is the global step's.
        let moving = param(&[1.0, -2.0]);
        let idle = param(&[3.0, 4.0]);
        let flat = FlatParams::new(&[moving.shallow_clone(), idle.shallow_clone()], 0).unwrap();
        let mut opt = Adam::new(&flat, 0.9, 0.999, 1e-8, 0.1, true).unwrap();
        for _ in 0..3 {
            set_grad(&moving, &G1);
            opt.step(&flat, 0.1).unwrap();
        }
        assert_close(&Vec::<f64>::try_from(&idle).unwrap(), &[3.0 * 0.99f64.powi(3), 4.0 * 0.99f64.powi(3)]);
        assert!(opt.state_tensors().iter().all(|(n, t)| !n.starts_with("adam.step.") || t.int64_value(&[]) == 3));
        assert_eq!(opt.steps(), 3);
    }
}
