//! Adam and AdamW with bias correction, PyTorch's single-tensor formulas:
//! `m = lerp(m, g, 1-β1); v = β2·v + (1-β2)·g²;
//!  p -= (lr / (1-β1^t)) · m / (sqrt(v) / sqrt(1-β2^t) + eps)`,
//! with weight decay either added to `g` (Adam) or applied as `p *= 1 - lr·wd` first (AdamW).

use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use super::{check_step_args, load_exact, zeros_like_all, Optimizer};
use crate::error::{Error, Result};

pub struct Adam {
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    decoupled: bool,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Per-parameter step counts drive the bias correction, as PyTorch's `state[p]["step"]`
    /// does: a parameter skipped for an undefined grad later starts with a fresh correction
    /// instead of one already decayed by steps it never took.
    param_steps: Vec<u64>,
    steps: u64,
}

impl Adam {
    pub fn new(
        params: &[Tensor],
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
        decoupled: bool,
    ) -> Result<Self> {
        Ok(Adam {
            beta1,
            beta2,
            eps,
            weight_decay,
            decoupled,
            m: zeros_like_all(params)?,
            v: zeros_like_all(params)?,
            param_steps: vec![0; params.len()],
            steps: 0,
        })
    }

    fn update(&mut self, i: usize, p: &Tensor, lr: f64) -> Result<()> {
        let g = p.f_grad()?;
        if !g.defined() {
            return Ok(());
        }
        let mut p = p.shallow_clone();
        let g = if self.weight_decay == 0.0 {
            g
        } else if self.decoupled {
            let _ = p.f_mul_scalar_(1.0 - lr * self.weight_decay)?;
            g
        } else {
            g.f_add(&p.f_mul_scalar(self.weight_decay)?)?
        };
        self.param_steps[i] += 1;
        let t = self.param_steps[i] as f64;
        let (m, v) = (&mut self.m[i], &mut self.v[i]);
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
    }
}

impl Optimizer for Adam {
    fn step(&mut self, params: &[Tensor], lr: f64) -> Result<()> {
        check_step_args(params, self.m.len(), lr)?;
        tch::no_grad(|| params.iter().enumerate().try_for_each(|(i, p)| self.update(i, p, lr)))?;
        self.steps += 1;
        Ok(())
    }

    /// The per-parameter step counts travel as 0-dim int64 CPU tensors (`adam.step.{i}`), so a
    /// checkpoint needs no side channel for them.
    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(3 * self.m.len());
        for (i, ((m, v), &t)) in self.m.iter().zip(&self.v).zip(&self.param_steps).enumerate() {
            out.push((format!("adam.m.{i}"), m.shallow_clone()));
            out.push((format!("adam.v.{i}"), v.shallow_clone()));
            out.push((format!("adam.step.{i}"), Tensor::from(t as i64)));
        }
        out
    }

    fn load_state(&mut self, tensors: &[(String, Tensor)], steps: u64) -> Result<()> {
        let n = self.m.len();
        // Counts are range-checked before anything is copied, so a bad checkpoint loads nothing;
        // their presence, shape and dtype are left to `load_exact` like every other tensor.
        let given: HashMap<&str, &Tensor> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
        for i in 0..n {
            let name = format!("adam.step.{i}");
            let Some(t) = given.get(name.as_str()) else {
                continue;
            };
            if t.defined() && t.size().is_empty() && t.kind() == Kind::Int64 {
                let c = t.f_int64_value(&[])?;
                if c < 0 || c as u64 > steps {
                    return Err(Error::Invalid(format!(
                        "optimizer state: tensor `{name}` = {c}, expected 0..={steps} (the global step)"
                    )));
                }
            }
        }
        // Step counts land in scratch tensors so they go through the same strict checks.
        let counts: Vec<Tensor> =
            (0..n).map(|_| Tensor::f_scalar_tensor(0i64, (Kind::Int64, Device::Cpu))).collect::<Result<_, _>>()?;
        let mut own = Vec::with_capacity(3 * n);
        for (i, ((m, v), c)) in self.m.iter().zip(&self.v).zip(&counts).enumerate() {
            own.push((format!("adam.m.{i}"), m.shallow_clone()));
            own.push((format!("adam.v.{i}"), v.shallow_clone()));
            own.push((format!("adam.step.{i}"), c.shallow_clone()));
        }
        load_exact("optimizer state", own, tensors)?;
        self.param_steps = counts.iter().map(|c| c.f_int64_value(&[]).map(|c| c as u64)).collect::<Result<_, _>>()?;
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

    const G1: [f64; 2] = [0.5, 1.0];
    const G2: [f64; 2] = [1.0, -1.0];

    /// Runs Adam(lr 0.1, β 0.9/0.999, eps 1e-8) from p = [1, -2], returning p after each step.
    fn run(wd: f64, decoupled: bool, grads: &[[f64; 2]]) -> Vec<Vec<f64>> {
        let p = param(&[1.0, -2.0]);
        let mut opt = Adam::new(std::slice::from_ref(&p), 0.9, 0.999, 1e-8, wd, decoupled).unwrap();
        let mut out = Vec::new();
        for g in grads {
            set_grad(&p, g);
            opt.step(std::slice::from_ref(&p), 0.1).unwrap();
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
    fn undefined_grad_is_untouched_and_keeps_its_own_bias_correction() {
        let moving = param(&[1.0, -2.0]);
        let late = param(&[3.0, 4.0]);
        let params = [moving.shallow_clone(), late.shallow_clone()];
        let mut opt = Adam::new(&params, 0.9, 0.999, 1e-8, 0.1, true).unwrap();
        for _ in 0..3 {
            set_grad(&moving, &G1);
            opt.step(&params, 0.1).unwrap();
        }
        assert_eq!(Vec::<f64>::try_from(&late).unwrap(), vec![3.0, 4.0]);
        assert_eq!(opt.param_steps, vec![3, 0]);
        // Its first real step is a first step for the bias correction (as in PyTorch), so it
        // moves by the full lr·g/(|g| + eps) after the decoupled decay.
        set_grad(&late, &G1);
        opt.step(&params, 0.1).unwrap();
        let got = Vec::<f64>::try_from(&late).unwrap();
        assert_close(&got, &[3.0 * 0.99 - 0.1 * 0.5 / (0.5 + 1e-8), 4.0 * 0.99 - 0.1 / (1.0 + 1e-8)]);
        assert_eq!(opt.param_steps, vec![4, 1]);
        assert_eq!(opt.steps(), 4);
    }
}
