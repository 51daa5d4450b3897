//! Optimizers with saveable state. tch's own optimizer hides its buffers in libtorch, so a
//! resumed run could not continue bit-for-bit; these keep every buffer as a named tensor that a
//! checkpoint can store and load back.
//!
//! The update formulas are PyTorch's (`torch.optim.SGD`, `torch.optim.Adam`/`AdamW`, with
//! `dampening = 0`, `maximize = false`, `amsgrad = false`), so hyper-parameters from papers and
//! PyTorch baselines carry over unchanged.
//!
//! They update [`FlatParams`]: every parameter and gradient is a view of one flat buffer, so a
//! step is a handful of whole-buffer ops. Every parameter therefore takes every step: a module no
//! example ran has a zero gradient (not PyTorch's `None`), and still takes its weight decay and
//! momentum, identically on every replica, which keeps replicas in step.

mod adam;
mod clip;
mod flat;
mod host_loop;
mod schedule;
mod sgd;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::error::{Error, Result};

pub use adam::Adam;
pub use clip::clip_grad_norms;
pub use flat::{FlatParams, Layout};
pub use schedule::LrSchedule;
pub use sgd::Sgd;

/// Which optimizer and its hyper-parameters; the learning rate is not here because the schedule
/// owns it and passes it to every [`Optimizer::step`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    Sgd {
        #[serde(default = "default_momentum")]
        momentum: f64,
        #[serde(default)]
        nesterov: bool,
        /// L2 penalty added to the gradient (PyTorch's coupled `weight_decay`).
        #[serde(default)]
        weight_decay: f64,
    },
    Adam {
        #[serde(default = "default_beta1")]
        beta1: f64,
        #[serde(default = "default_beta2")]
        beta2: f64,
        #[serde(default = "default_eps")]
        eps: f64,
        #[serde(default)]
        weight_decay: f64,
        /// `true`: AdamW (decay the weights directly by `lr·weight_decay`); `false`: classic Adam
        /// (add `weight_decay·p` to the gradient, so it is rescaled by the second moment).
        #[serde(default)]
        decoupled: bool,
    },
}

fn default_momentum() -> f64 {
    0.9
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig::Sgd { momentum: 0.9, nesterov: false, weight_decay: 5e-4 }
    }
}

impl OptimizerConfig {
    /// Rejects values PyTorch would reject, plus non-finite ones, naming the offending field.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |field: &str, v: f64, want: &str| Err(Error::Invalid(format!("optimizer: {field} = {v} must be {want}")));
        match *self {
            OptimizerConfig::Sgd { momentum, nesterov, weight_decay } => {
                if !(0.0..1.0).contains(&momentum) {
                    return bad("momentum", momentum, "in [0, 1)");
                }
                if nesterov && momentum == 0.0 {
                    return bad("momentum", momentum, "> 0 when nesterov = true");
                }
                if !(weight_decay >= 0.0 && weight_decay.is_finite()) {
                    return bad("weight_decay", weight_decay, "finite and >= 0");
                }
            }
            OptimizerConfig::Adam { beta1, beta2, eps, weight_decay, .. } => {
                if !(0.0..1.0).contains(&beta1) {
                    return bad("beta1", beta1, "in [0, 1)");
                }
                if !(0.0..1.0).contains(&beta2) {
                    return bad("beta2", beta2, "in [0, 1)");
                }
                if !(eps > 0.0 && eps.is_finite()) {
                    return bad("eps", eps, "finite and > 0");
                }
                if !(weight_decay >= 0.0 && weight_decay.is_finite()) {
                    return bad("weight_decay", weight_decay, "finite and >= 0");
                }
            }
        }
        Ok(())
    }
}

/// An optimizer over the flat parameters it was built for; state index `i` belongs to parameter
/// `i` of their layout, and every `step` must be given the same [`FlatParams`].
pub trait Optimizer: Send {
    /// One update of every parameter from its gradient, in place and without autograd tracking.
    fn step(&mut self, flat: &FlatParams, lr: f64) -> Result<()>;
    /// Every piece of state as named tensors with stable names (`sgd.momentum.3`, `adam.m.3`,
    /// `adam.v.3`, `adam.step.3`), the global step count being [`Optimizer::steps`].
    /// The tensors share storage with the live state: serialize or copy them before the next step.
    fn state_tensors(&self) -> Vec<(String, Tensor)>;
    /// Strict inverse of `state_tensors`: a missing, extra, duplicated, misshaped or wrong-dtype
    /// tensor is an error naming it, and nothing is loaded unless everything matches. The values
    /// are copied onto this optimizer's devices, so checkpoint tensors may live on the CPU.
    fn load_state(&mut self, tensors: &[(String, Tensor)], steps: u64) -> Result<()>;
    /// How many times `step` has run (including steps restored by `load_state`).
    fn steps(&self) -> u64;
}

/// Builds the optimizer for `flat`, allocating its state (zeros, like PyTorch's first step sees)
/// as flat buffers on the parameters' device.
///
/// # Panics
/// If the config is invalid or state cannot be allocated; use [`try_build`] to get the error.
pub fn build(cfg: &OptimizerConfig, flat: &FlatParams) -> Box<dyn Optimizer> {
    try_build(cfg, flat).unwrap_or_else(|e| panic!("building optimizer: {e}"))
}

/// Fallible [`build`]: validates the config and allocates state.
pub fn try_build(cfg: &OptimizerConfig, flat: &FlatParams) -> Result<Box<dyn Optimizer>> {
    cfg.validate()?;
    Ok(match *cfg {
        OptimizerConfig::Sgd { momentum, nesterov, weight_decay } => {
            Box::new(Sgd::new(flat, momentum, nesterov, weight_decay)?)
        }
        OptimizerConfig::Adam { beta1, beta2, eps, weight_decay, decoupled } => {
            Box::new(Adam::new(flat, beta1, beta2, eps, weight_decay, decoupled)?)
        }
    })
}

/// Gives every parameter whose `.grad()` is undefined a zero gradient, in one backward pass (tch
/// offers no way to set a leaf's `.grad()` but backward; one pass over all of them, not one each).
/// A module that no example ran thereby takes its (zero-gradient) momentum and weight-decay update,
/// identically on every replica.
pub fn define_missing_grads(params: &[Tensor]) -> Result<()> {
    let mut zero: Option<Tensor> = None;
    for p in params.iter().filter(|p| !p.grad().defined()) {
        let term = p.f_mul_scalar(0.0)?.f_sum(p.kind())?;
        zero = Some(match zero {
            None => term,
            Some(acc) => acc.f_add(&term)?,
        });
    }
    if let Some(zero) = zero {
        zero.f_backward()?;
    }
    Ok(())
}

/// The step's parameters must be the ones the optimizer was built for, still in their buffers.
fn check_step_args(flat: &FlatParams, built_for: &Layout, lr: f64) -> Result<()> {
    if flat.layout() != built_for {
        return Err(Error::Invalid(format!(
            "optimizer built for {} parameters ({} elements) was stepped with {} ({})",
            built_for.slots.len(),
            built_for.numel,
            flat.layout().slots.len(),
            flat.layout().numel
        )));
    }
    if !(lr >= 0.0 && lr.is_finite()) {
        return Err(Error::Invalid(format!("optimizer: learning rate {lr} must be finite and >= 0")));
    }
    flat.check_aliased()
}

/// Copies `given` into `own` (shallow handles onto live state: an optimizer's buffers, a model's
/// parameters) after checking that both name exactly the same tensors with the same shapes and
/// dtypes. Checking everything first means a bad checkpoint leaves the state as it was rather than
/// half-loaded. `what` names the state in errors.
pub(crate) fn load_exact(what: &str, own: Vec<(String, Tensor)>, given: &[(String, Tensor)]) -> Result<()> {
    let bad = |msg: String| Err(Error::Invalid(format!("{what}: {msg}")));
    let mut by_name: HashMap<&str, &Tensor> = HashMap::with_capacity(given.len());
    for (name, t) in given {
        if by_name.insert(name.as_str(), t).is_some() {
            return bad(format!("tensor `{name}` given twice"));
        }
    }
    let mut pairs = Vec::with_capacity(own.len());
    for (name, dst) in own {
        let Some(src) = by_name.remove(name.as_str()) else {
            return bad(format!("tensor `{name}` is missing"));
        };
        if !src.defined() {
            return bad(format!("tensor `{name}` is undefined"));
        }
        if src.size() != dst.size() {
            return bad(format!("tensor `{name}` has shape {:?}, expected {:?}", src.size(), dst.size()));
        }
        if src.kind() != dst.kind() {
            return bad(format!("tensor `{name}` has dtype {:?}, expected {:?}", src.kind(), dst.kind()));
        }
        pairs.push((dst, src));
    }
    if let Some(extra) = by_name.keys().min() {
        return bad(format!("unexpected tensor `{extra}`"));
    }
    tch::no_grad(|| {
        for (mut dst, src) in pairs {
            dst.f_copy_(src)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests;
