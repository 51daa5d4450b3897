//! Optimizer updates as one loop over CPU buffers. The tensor path of an update is a handful of
//! whole-buffer kernels (SGD with momentum and weight decay: six passes over the buffer and three
//! temporary buffers, about 2.5 ms of a 50 ms high_low step at one thread); the same arithmetic
//! in one pass reads and writes each element once.
//!
//! Each loop does PyTorch's float operations in PyTorch's order, every product and sum rounded
//! to f32 as the kernels round them (Rust never contracts `a * b + c` into a fused multiply-add),
//! so it gives the tensor path's bits; `sgd::tests` checks that over several steps.

use tch::{Device, Kind, Tensor};

/// A contiguous f32 CPU tensor's elements, or `None` for any other tensor (the caller then takes
/// the tensor path).
fn host_f32(t: &Tensor) -> Option<(*mut f32, usize)> {
    let host = t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous();
    host.then(|| (t.data_ptr().cast::<f32>(), t.numel()))
}

/// Whether the element ranges overlap.
fn overlap(a: (*mut f32, usize), b: (*mut f32, usize)) -> bool {
    let (a0, b0) = (a.0 as usize, b.0 as usize);
    let (a1, b1) = (a0 + a.1 * 4, b0 + b.1 * 4);
    a0 < b1 && b0 < a1
}

/// SGD's hyper-parameters for one step. The loop casts them to f32, as the kernels cast a scalar
/// that multiplies an f32 tensor.
pub(super) struct SgdStep {
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
}

/// One SGD step over `params` with gradients `grads` and momentum buffer `buf` (None without
/// momentum) in one pass; false, with nothing changed, when a buffer is not a contiguous f32 CPU
/// tensor, when the lengths differ or the buffers overlap.
pub(super) fn sgd(params: &Tensor, grads: &Tensor, buf: Option<&Tensor>, step: &SgdStep) -> bool {
    let (Some(p), Some(g)) = (host_f32(params), host_f32(grads)) else { return false };
    let b = match buf {
        Some(t) => match host_f32(t) {
            Some(b) if b.1 == p.1 && !overlap(b, p) && !overlap(b, g) => Some(b),
            _ => return false,
        },
        None => None,
    };
    if p.1 != g.1 || overlap(p, g) {
        return false;
    }
    if p.1 == 0 {
        // An empty tensor's data pointer may be null, which no slice may be built from.
        return true;
    }
    // SAFETY: each pointer is the start of a live, contiguous f32 CPU tensor of `p.1` elements
    // (checked above), the three ranges do not overlap, and the tensors outlive this call, which
    // runs on the caller's thread while no other tensor op can touch them (the step owns them).
    let (p, g) = unsafe { (std::slice::from_raw_parts_mut(p.0, p.1), std::slice::from_raw_parts(g.0, g.1)) };
    let b = b.map(|b| unsafe { std::slice::from_raw_parts_mut(b.0, b.1) });
    let (lr, momentum, wd) = (step.lr as f32, step.momentum as f32, step.weight_decay as f32);
    let decayed = |p: f32, g: f32| if step.weight_decay != 0.0 { g + p * wd } else { g };
    match b {
        None => p.iter_mut().zip(g).for_each(|(p, &g)| *p -= decayed(*p, g) * lr),
        Some(b) => {
            for ((p, &g), b) in p.iter_mut().zip(g).zip(b.iter_mut()) {
                let d = decayed(*p, g);
                *b = *b * momentum + d;
                let d = if step.nesterov { d + *b * momentum } else { *b };
                *p -= d * lr;
            }
        }
    }
    true
}
