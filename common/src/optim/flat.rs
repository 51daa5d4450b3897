//! Parameters and gradients in one flat buffer each. Every parameter becomes a view of `data` and
//! its `.grad()` a view of `grad`, so backward accumulates straight into the buffer a collective
//! all-reduces in place, and an optimizer updates every parameter with a handful of whole-buffer
//! ops instead of a loop of small kernels per tensor.
//!
//! tch cannot assign a leaf's `.grad()`, so the gradients are first defined (one backward, see
//! [`super::define_missing_grads`]) and then re-pointed with `set_data` at their views: autograd
//! accumulates into a defined gradient in place (`grad += new`), so it never leaves the buffer as
//! long as nobody replaces it. [`FlatParams::check_aliased`] says so when something did.

use tch::{Kind, Tensor};

use super::define_missing_grads;
use crate::error::{Error, Result};

/// Where each parameter lives in the flat buffers.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// `(offset, shape)` per parameter, in the order the parameters were given.
    pub slots: Vec<(i64, Vec<i64>)>,
    /// Elements of all parameters together.
    pub numel: i64,
    /// `(offset, elements)` of each group's contiguous range, by group number.
    pub groups: Vec<(i64, i64)>,
}

impl Layout {
    /// Parameter i is placed with its group, `group_of[i]`: group 0's parameters first (in the
    /// order given), then group 1's, and so on, so each group is one contiguous range.
    fn of(params: &[Tensor], group_of: &[usize]) -> Layout {
        let count = group_of.iter().max().map_or(1, |g| g + 1);
        let mut slots = vec![(0, Vec::new()); params.len()];
        let mut groups = Vec::with_capacity(count);
        let mut offset = 0;
        for group in 0..count {
            let start = offset;
            for (i, p) in params.iter().enumerate().filter(|(i, _)| group_of[*i] == group) {
                slots[i] = (offset, p.size());
                offset += p.numel() as i64;
            }
            groups.push((start, offset - start));
        }
        Layout { slots, numel: offset, groups }
    }

    /// Parameter `i`'s view of `buffer`, a 1-D buffer of at least `numel` elements that was
    /// allocated for this layout (never one read from outside: a shorter one panics).
    pub fn view(&self, buffer: &Tensor, i: usize) -> Tensor {
        let (offset, shape) = &self.slots[i];
        buffer.narrow(0, *offset, shape.iter().product::<i64>()).view(shape.as_slice())
    }

    /// Every parameter's view of `buffer` (as [`Layout::view`]).
    pub fn views(&self, buffer: &Tensor) -> Vec<Tensor> {
        (0..self.slots.len()).map(|i| self.view(buffer, i)).collect()
    }
}

/// The parameters of one model (one replica), moved into flat buffers.
pub struct FlatParams {
    params: Vec<Tensor>,
    layout: Layout,
    data: Tensor,
    /// `layout.numel` gradient elements, then `extra` slots a collective reduces along with them.
    grad: Tensor,
}

impl FlatParams {
    /// Moves `params` (same dtype and device, each a leaf) into a flat buffer of their values and
    /// their gradients into a zeroed flat buffer with `extra` trailing elements for the caller
    /// (a replica's step status). The values are kept; the gradients start at zero.
    pub fn new(params: &[Tensor], extra: usize) -> Result<FlatParams> {
        FlatParams::grouped(params, &vec![0; params.len()], extra)
    }

    /// [`FlatParams::new`] with parameter i placed in group `group_of[i]` (numbered from 0), each
    /// group one contiguous range of the buffers ([`FlatParams::group_grads`]), so what is done
    /// per group (clipping) is one op per group, not one per parameter.
    pub fn grouped(params: &[Tensor], group_of: &[usize], extra: usize) -> Result<FlatParams> {
        if group_of.len() != params.len() {
            return Err(Error::Invalid(format!(
                "flat parameters: {} group numbers for {} parameters",
                group_of.len(),
                params.len()
            )));
        }
        let layout = Layout::of(params, group_of);
        let first = params.first();
        let (kind, device) = first.map_or((Kind::Float, tch::Device::Cpu), |p| (p.kind(), p.device()));
        if let Some((i, p)) = params.iter().enumerate().find(|(_, p)| p.kind() != kind || p.device() != device) {
            return Err(Error::Invalid(format!(
                "flat parameters: parameter {i} is {:?} on {:?}, the first one {kind:?} on {device:?}",
                p.kind(),
                p.device()
            )));
        }
        define_missing_grads(params)?;
        let (data, grad) = tch::no_grad(|| -> Result<(Tensor, Tensor)> {
            let data = Tensor::f_empty([layout.numel], (kind, device))?;
            let grad = Tensor::f_zeros([layout.numel + extra as i64], (kind, device))?;
            for (i, p) in params.iter().enumerate() {
                let view = layout.view(&data, i);
                view.shallow_clone().f_copy_(p)?;
                p.shallow_clone().f_set_data(&view)?;
                p.f_grad()?.f_set_data(&layout.view(&grad, i))?;
            }
            Ok((data, grad))
        })?;
        let flat = FlatParams { params: params.iter().map(Tensor::shallow_clone).collect(), layout, data, grad };
        flat.check_aliased()?;
        Ok(flat)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The parameters, as given to [`FlatParams::new`].
    pub fn params(&self) -> &[Tensor] {
        &self.params
    }

    /// All parameter values, one 1-D tensor; writing it writes the parameters.
    pub fn data(&self) -> &Tensor {
        &self.data
    }

    /// All gradients, one 1-D tensor (without the extra slots).
    pub fn grads(&self) -> Result<Tensor> {
        Ok(self.grad.f_narrow(0, 0, self.layout.numel)?)
    }

    /// Each group's gradients, one 1-D view of the buffer per group (an empty group's is empty).
    pub fn group_grads(&self) -> Result<Vec<Tensor>> {
        let views = self.layout.groups.iter().map(|&(offset, n)| self.grad.f_narrow(0, offset, n));
        Ok(views.collect::<Result<Vec<_>, _>>()?)
    }

    /// The gradient buffer with its extra slots: what a collective reduces.
    pub fn grad_buffer(&self) -> &Tensor {
        &self.grad
    }

    /// Zeroes every gradient (and the extra slots).
    pub fn zero_grad(&self) -> Result<()> {
        tch::no_grad(|| self.grad.shallow_clone().f_zero_().map(drop))?;
        Ok(())
    }

    /// An error naming the first parameter whose value or gradient no longer lives in the flat
    /// buffers (something replaced it, e.g. `set_data` or a gradient reset to undefined), since an
    /// update of the buffers would then silently miss it.
    pub fn check_aliased(&self) -> Result<()> {
        for (i, p) in self.params.iter().enumerate() {
            let (offset, _) = self.layout.slots[i];
            let at = |buffer: &Tensor| buffer.data_ptr() as usize + offset as usize * buffer.kind().elt_size_in_bytes();
            let g = p.f_grad()?;
            if p.data_ptr() as usize != at(&self.data) {
                return Err(Error::Invalid(format!(
                    "flat parameters: parameter {i} no longer lives in the flat buffer"
                )));
            }
            if !g.defined() || g.data_ptr() as usize != at(&self.grad) {
                return Err(Error::Invalid(format!("flat parameters: the gradient of parameter {i} was replaced")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Vec<Tensor> {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).view([2, 3]).set_requires_grad(true);
        let b = Tensor::from_slice(&[0.5f32]).set_requires_grad(true);
        vec![a, b]
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(&t.reshape([-1])).unwrap()
    }

    #[test]
    fn parameters_and_backward_live_in_the_buffers() {
        let p = params();
        let flat = FlatParams::new(&p, 1).unwrap();
        assert_eq!(values(flat.data()), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.5]);
        assert_eq!(values(flat.grad_buffer()), [0.0; 8]);
        // Backward accumulates into the flat gradient buffer, not into fresh tensors.
        let w = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        ((&p[0] * &w).sum(Kind::Float) + &p[1] * 10.0).sum(Kind::Float).backward();
        assert_eq!(values(flat.grad_buffer()), [1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 10.0, 0.0]);
        ((&p[1] * 2.0).sum(Kind::Float)).backward();
        assert_eq!(values(&flat.grads().unwrap()), [1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 12.0]);
        flat.check_aliased().unwrap();
        // Writing the buffer writes the parameters; zeroing it zeroes their gradients.
        tch::no_grad(|| {
            let _doubled = flat.data().shallow_clone().f_mul_scalar_(2.0).unwrap();
        });
        assert_eq!(values(&p[1]), [1.0]);
        flat.zero_grad().unwrap();
        assert_eq!(values(&p[0].grad()), [0.0; 6]);
        flat.check_aliased().unwrap();
    }

    #[test]
    fn groups_are_contiguous_and_views_stay_per_parameter() {
        let c = Tensor::from_slice(&[7.0f32, 8.0]).set_requires_grad(true);
        let mut p = params();
        p.push(c);
        // Parameters 0 and 2 in group 0, parameter 1 in group 1: the buffer holds a, c, then b.
        let flat = FlatParams::grouped(&p, &[0, 1, 0], 0).unwrap();
        assert_eq!(values(flat.data()), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 0.5]);
        assert_eq!(flat.layout().groups, [(0, 8), (8, 1)]);
        ((&p[1] * 3.0).sum(Kind::Float) + p[2].sum(Kind::Float)).backward();
        let groups: Vec<Vec<f32>> = flat.group_grads().unwrap().iter().map(values).collect();
        assert_eq!(groups, [vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0], vec![3.0]]);
        assert_eq!(values(&p[1].grad()), [3.0]);
        flat.check_aliased().unwrap();
        assert!(FlatParams::grouped(&params(), &[0], 0).is_err(), "one group number per parameter");
    }

    #[test]
    fn a_replaced_gradient_is_reported() {
        let p = params();
        let flat = FlatParams::new(&p, 0).unwrap();
        p[1].grad().set_data(&Tensor::from_slice(&[3.0f32]));
        let e = flat.check_aliased().unwrap_err().to_string();
        assert!(e.contains("parameter 1"), "{e}");
    }

    #[test]
    fn mixed_dtypes_are_refused() {
        let p = vec![params().remove(0), Tensor::from_slice(&[1.0f64]).set_requires_grad(true)];
        let e = FlatParams::new(&p, 0).err().unwrap().to_string();
        assert!(e.contains("parameter 1"), "{e}");
    }
}
