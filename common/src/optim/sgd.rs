//! SGD with optional (Nesterov) momentum and coupled weight decay, PyTorch's formulas:
//! `d = g + wd·p; buf = μ·buf + d; d = nesterov ? d + μ·buf : buf; p -= lr·d`.

use tch::Tensor;

use super::host_loop::{self, SgdStep};
use super::{check_step_args, load_exact, FlatParams, Layout, Optimizer};
use crate::error::Result;

pub struct Sgd {
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
    /// The momentum buffer, laid out like the flat parameters, or none at all when momentum is 0
    /// (PyTorch keeps none either). Zero-initialised: with dampening 0, `μ·0 + d` is exactly
    /// PyTorch's first-step `buf = d`.
    buf: Option<Tensor>,
    layout: Layout,
    steps: u64,
}

impl Sgd {
    pub fn new(flat: &FlatParams, momentum: f64, nesterov: bool, weight_decay: f64) -> Result<Self> {
        let buf = if momentum != 0.0 { Some(tch::no_grad(|| flat.data().f_zeros_like())?) } else { None };
        Ok(Sgd { momentum, nesterov, weight_decay, buf, layout: flat.layout().clone(), steps: 0 })
    }
}

/// The update as whole-buffer kernels: the path for buffers the host loop does not take (a GPU's).
fn tensor_step(p: &Tensor, g: Tensor, buf: Option<&mut Tensor>, step: &SgdStep) -> Result<()> {
    tch::no_grad(|| -> Result<()> {
        let mut d = if step.weight_decay != 0.0 { g.f_add(&p.f_mul_scalar(step.weight_decay)?)? } else { g };
        if let Some(buf) = buf {
            let _ = buf.f_mul_scalar_(step.momentum)?;
            let _ = buf.f_add_(&d)?;
            d = if step.nesterov { d.f_add(&buf.f_mul_scalar(step.momentum)?)? } else { buf.shallow_clone() };
        }
        let _ = p.shallow_clone().f_sub_(&d.f_mul_scalar(step.lr)?)?;
        Ok(())
    })
}

impl Optimizer for Sgd {
    fn step(&mut self, flat: &FlatParams, lr: f64) -> Result<()> {
        check_step_args(flat, &self.layout, lr)?;
        let (p, g) = (flat.data(), flat.grads()?);
        let step = SgdStep { lr, momentum: self.momentum, nesterov: self.nesterov, weight_decay: self.weight_decay };
        if !host_loop::sgd(p, &g, self.buf.as_ref(), &step) {
            tensor_step(p, g, self.buf.as_mut(), &step)?;
        }
        self.steps += 1;
        Ok(())
    }

    /// One `sgd.momentum.{i}` view per parameter, so checkpoints name the state per parameter.
    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let Some(buf) = &self.buf else {
            return Vec::new();
        };
        self.layout.views(buf).into_iter().enumerate().map(|(i, b)| (format!("sgd.momentum.{i}"), b)).collect()
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
    use crate::optim::FlatParams;

    fn run(momentum: f64, nesterov: bool, wd: f64, grads: &[[f64; 2]]) -> Vec<f64> {
        let p = param(&[1.0, -2.0]);
        let flat = FlatParams::new(std::slice::from_ref(&p), 0).unwrap();
        let mut opt = Sgd::new(&flat, momentum, nesterov, wd).unwrap();
        for g in grads {
            set_grad(&p, g);
            opt.step(&flat, 0.1).unwrap();
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
    fn a_parameter_no_example_reached_still_decays() {
        // Its gradient is zero, not skipped: d = 0.1·p = [0.3, 0.4], buf = d, Nesterov
        // d + 0.9·buf = [0.57, 0.76], p -= 0.1·d.
        let moving = param(&[1.0, -2.0]);
        let idle = param(&[3.0, 4.0]);
        let flat = FlatParams::new(&[moving.shallow_clone(), idle.shallow_clone()], 0).unwrap();
        let mut opt = Sgd::new(&flat, 0.9, true, 0.1).unwrap();
        set_grad(&moving, &G1);
        opt.step(&flat, 0.1).unwrap();
        assert_close(&Vec::<f64>::try_from(&idle).unwrap(), &[2.943, 3.924]);
        assert_close(&Vec::<f64>::try_from(&opt.state_tensors()[1].1).unwrap(), &[0.3, 0.4]);
    }

    /// The one-pass host loop gives the whole-buffer kernels' bits, step after step, for every
    /// kind of update.
    #[test]
    fn the_host_loop_equals_the_tensor_path_bit_for_bit() {
        let seeded =
            |seed: i64| crate::exec::seeded_draws(seed, || Tensor::randn([1000], (tch::Kind::Float, tch::Device::Cpu)));
        for (momentum, nesterov, weight_decay) in
            [(0.0, false, 0.0), (0.0, false, 5e-4), (0.9, false, 5e-4), (0.9, true, 1e-2)]
        {
            let step = SgdStep { lr: 0.05, momentum, nesterov, weight_decay };
            let (fused, kernels) = (seeded(1), seeded(1));
            let mut bufs = (momentum != 0.0).then(|| (fused.zeros_like(), kernels.zeros_like()));
            for k in 0..5 {
                let g = seeded(10 + k);
                assert!(host_loop::sgd(&fused, &g, bufs.as_ref().map(|b| &b.0), &step));
                tensor_step(&kernels, g, bufs.as_mut().map(|b| &mut b.1), &step).unwrap();
                assert!(fused.equal(&kernels), "{momentum} {nesterov} {weight_decay}: parameters differ at step {k}");
                if let Some((a, b)) = &bufs {
                    assert!(a.equal(b), "{momentum} {nesterov} {weight_decay}: momentum differs at step {k}");
                }
            }
            assert!(!fused.equal(&seeded(1)), "nothing moved");
        }
        // A tensor the loop cannot take is left to the kernels, untouched.
        let (p, g) = (seeded(1).to_kind(tch::Kind::Double), seeded(2).to_kind(tch::Kind::Double));
        let step = SgdStep { lr: 0.05, momentum: 0.0, nesterov: false, weight_decay: 0.0 };
        assert!(!host_loop::sgd(&p, &g, None, &step));
        assert!(p.equal(&seeded(1).to_kind(tch::Kind::Double)));
        // An empty model's buffers: nothing to do, and no slice of a null pointer.
        let empty = || Tensor::zeros([0], (tch::Kind::Float, tch::Device::Cpu));
        assert!(host_loop::sgd(&empty(), &empty(), Some(&empty()), &step));
    }

    #[test]
    fn no_momentum_means_no_state() {
        let p = param(&[1.0]);
        let opt = Sgd::new(&FlatParams::new(std::slice::from_ref(&p), 0).unwrap(), 0.0, false, 0.0).unwrap();
        assert!(opt.state_tensors().is_empty());
    }
}
