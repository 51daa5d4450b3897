//! SGD with optional (Nesterov) momentum and coupled weight decay, PyTorch's formulas:
//! `d = g + wd·p; buf = μ·buf + d; d = nesterov ? d + μ·buf : buf; p -= lr·d`.

use tch::Tensor;

use super::{check_step_args, load_exact, zeros_like_all, Optimizer};
use crate::error::Result;

pub struct Sgd {
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
    /// One buffer per parameter, or none at all when momentum is 0 (PyTorch keeps none either).
    /// Zero-initialised: with dampening 0, `μ·0 + d` is exactly PyTorch's first-step `buf = d`.
    bufs: Vec<Tensor>,
    n_params: usize,
    steps: u64,
}

impl Sgd {
    pub fn new(params: &[Tensor], momentum: f64, nesterov: bool, weight_decay: f64) -> Result<Self> {
        let bufs = if momentum != 0.0 { zeros_like_all(params)? } else { Vec::new() };
        Ok(Sgd { momentum, nesterov, weight_decay, bufs, n_params: params.len(), steps: 0 })
    }

    fn update(&mut self, i: usize, p: &Tensor, lr: f64) -> Result<()> {
        let g = p.f_grad()?;
        if !g.defined() {
            return Ok(());
        }
        let mut d = if self.weight_decay != 0.0 { g.f_add(&p.f_mul_scalar(self.weight_decay)?)? } else { g };
        if let Some(buf) = self.bufs.get_mut(i) {
            let _ = buf.f_mul_scalar_(self.momentum)?;
            let _ = buf.f_add_(&d)?;
            d = if self.nesterov { d.f_add(&buf.f_mul_scalar(self.momentum)?)? } else { buf.shallow_clone() };
        }
        let _ = p.shallow_clone().f_sub_(&d.f_mul_scalar(lr)?)?;
        Ok(())
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &[Tensor], lr: f64) -> Result<()> {
        check_step_args(params, self.n_params, lr)?;
        tch::no_grad(|| params.iter().enumerate().try_for_each(|(i, p)| self.update(i, p, lr)))?;
        self.steps += 1;
        Ok(())
    }

    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let named = self.bufs.iter().enumerate();
        named.map(|(i, b)| (format!("sgd.momentum.{i}"), b.shallow_clone())).collect()
    }

    fn load_state(&mut self, tensors: &[(String, Tensor)], steps: u64) -> Result<()> {
        load_exact("optimizer state", self.state_tensors(), tensors)?;
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

    fn run(momentum: f64, nesterov: bool, wd: f64, grads: &[[f64; 2]]) -> Vec<f64> {
        let p = param(&[1.0, -2.0]);
        let mut opt = Sgd::new(std::slice::from_ref(&p), momentum, nesterov, wd).unwrap();
        for g in grads {
            set_grad(&p, g);
            opt.step(std::slice::from_ref(&p), 0.1).unwrap();
        }
        assert_eq!(opt.steps(), grads.len() as u64);
        Vec::<f64>::try_from(&p).unwrap()
    }

    const G1: [f64; 2] = [0.5, 1.0];
    const G2: [f64; 2] = [1.0, -1.0];

    #[test]
    fn plain_step_matches_hand_computation() {
        // p - 0.1·g
        assert_close(&run(0.0, false, 0.0, &[G1]), &[0.95, -2.1]);
        // d = g + 0.1·p = [0.6, 0.8]
        assert_close(&run(0.0, false, 0.1, &[G1]), &[0.94, -2.08]);
    }

    #[test]
    fn momentum_two_steps_match_hand_computation() {
        // buf1 = g1, p1 = [0.95, -2.1]; buf2 = 0.9·g1 + g2 = [1.45, -0.1]; p2 = p1 - 0.1·buf2
        assert_close(&run(0.9, false, 0.0, &[G1, G2]), &[0.805, -2.09]);
        // d1 = [0.6, 0.8], p1 = [0.94, -2.08]; d2 = g2 + 0.1·p1 = [1.094, -1.208];
        // buf2 = 0.9·[0.6, 0.8] + d2 = [1.634, -0.488]
        assert_close(&run(0.9, false, 0.1, &[G1, G2]), &[0.7766, -2.0312]);
    }

    #[test]
    fn nesterov_two_steps_match_hand_computation() {
        // step 1: d = g1 + 0.9·g1 = [0.95, 1.9] -> p1 = [0.905, -2.19]
        // step 2: buf = [1.45, -0.1], d = g2 + 0.9·buf = [2.305, -1.09] -> p2 = [0.6745, -2.081]
        assert_close(&run(0.9, true, 0.0, &[G1]), &[0.905, -2.19]);
        assert_close(&run(0.9, true, 0.0, &[G1, G2]), &[0.6745, -2.081]);
    }

    #[test]
    fn undefined_grad_is_untouched_even_with_decay_and_momentum() {
        let moving = param(&[1.0, -2.0]);
        let frozen = param(&[3.0, 4.0]);
        let params = [moving.shallow_clone(), frozen.shallow_clone()];
        let mut opt = Sgd::new(&params, 0.9, true, 0.1).unwrap();
        for _ in 0..2 {
            set_grad(&moving, &G1);
            opt.step(&params, 0.1).unwrap();
        }
        assert_eq!(Vec::<f64>::try_from(&frozen).unwrap(), vec![3.0, 4.0]);
        assert_ne!(Vec::<f64>::try_from(&moving).unwrap(), vec![1.0, -2.0]);
        assert_eq!(Vec::<f64>::try_from(&opt.state_tensors()[1].1).unwrap(), vec![0.0, 0.0]);
    }

    #[test]
    fn no_momentum_means_no_state() {
        let p = param(&[1.0]);
        let opt = Sgd::new(std::slice::from_ref(&p), 0.0, false, 0.0).unwrap();
        assert!(opt.state_tensors().is_empty());
    }
}
