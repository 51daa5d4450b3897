//! The gradients of all parameters as one flat f32 buffer, in `D2nn::parameters()` order, plus one
//! status slot at the end. Every rank packs the same layout every step — zeros for a parameter whose
//! module it did not execute — so every rank issues the same collectives in the same order.
use tch::{Device, Kind, Tensor};

use crate::collective::Collective;
use crate::Error;

/// Default bucket: 4 MiB of f32. Buckets are reduced one after another so a transport can overlap
/// or pipeline them later; in memory they bound the working set of one call.
pub const DEFAULT_BUCKET_BYTES: usize = 4 << 20;

#[derive(Debug)]
struct Entry {
    offset: usize,
    numel: usize,
    shape: Vec<i64>,
}

#[derive(Debug)]
pub struct FlatGrads {
    entries: Vec<Entry>,
    buf: Vec<f32>,
    bucket_elems: usize,
}

impl FlatGrads {
    /// The layout of `params` (in the canonical order the caller passes them).
    pub fn new(params: &[Tensor], bucket_bytes: usize) -> FlatGrads {
        let mut offset = 0;
        let entries = params
            .iter()
            .map(|p| {
                let e = Entry { offset, numel: p.numel(), shape: p.size() };
                offset += e.numel;
                e
            })
            .collect();
        FlatGrads { entries, buf: vec![0.0; offset + 1], bucket_elems: (bucket_bytes / 4).max(1) }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.buf
    }

    /// Copies every parameter's gradient in (zeros where undefined) and sets the status slot to 1.
    pub fn pack(&mut self, params: &[Tensor]) -> Result<(), Error> {
        self.check(params)?;
        for (e, p) in self.entries.iter().zip(params) {
            let dst = &mut self.buf[e.offset..e.offset + e.numel];
            let g = p.grad();
            if g.defined() {
                g.f_to_kind(Kind::Float)?.f_copy_data(dst, e.numel)?;
            } else {
                dst.fill(0.0);
            }
        }
        self.set_status(1.0);
        Ok(())
    }

    /// What a rank whose step failed contributes: zeros, status 0.
    pub fn pack_failed(&mut self) {
        self.buf.fill(0.0);
    }

    fn set_status(&mut self, v: f32) {
        if let Some(s) = self.buf.last_mut() {
            *s = v;
        }
    }

    /// After the all-reduce: the number of ranks whose step succeeded.
    pub fn status(&self) -> f32 {
        self.buf.last().copied().unwrap_or(0.0)
    }

    /// All-reduces the buffer bucket by bucket.
    pub fn all_reduce(&mut self, collective: &mut dyn Collective) -> Result<(), Error> {
        for bucket in self.buf.chunks_mut(self.bucket_elems) {
            collective.all_reduce_sum(bucket)?;
        }
        Ok(())
    }

    /// Copies the buffer back into every parameter's gradient, defining zero gradients first where
    /// a module did not run here (another rank may have run it).
    pub fn unpack(&self, params: &[Tensor]) -> Result<(), Error> {
        self.check(params)?;
        for p in params {
            if !p.grad().defined() {
                // The only way tch offers to create a leaf's `.grad()`: backward of a zero function.
                (p * 0.0).f_sum(Kind::Float)?.f_backward()?;
            }
        }
        let _guard = tch::no_grad_guard();
        for (e, p) in self.entries.iter().zip(params) {
            let src = &self.buf[e.offset..e.offset + e.numel];
            // SAFETY: `src` outlives the borrowed view, which `copy_` reads once and is then dropped;
            // the shape's element count is `src.len()`, and the data is contiguous f32 on the CPU.
            let view = unsafe { Tensor::f_from_blob(src.as_ptr().cast(), &e.shape, &[], Kind::Float, Device::Cpu)? };
            p.grad().f_copy_(&view)?;
        }
        Ok(())
    }

    fn check(&self, params: &[Tensor]) -> Result<(), Error> {
        let ok = params.len() == self.entries.len()
            && self.entries.iter().zip(params).all(|(e, p)| e.shape == p.size() && e.numel == p.numel());
        if ok {
            Ok(())
        } else {
            Err(Error::Protocol("flat gradient buffer: the parameters do not match the layout".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collective::SharedGroup;

    fn params() -> Vec<Tensor> {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).view([2, 3]).set_requires_grad(true);
        let b = Tensor::from_slice(&[0.5f32]).set_requires_grad(true);
        let c = Tensor::from_slice(&[7.0f32, 8.0]).set_requires_grad(true);
        vec![a, b, c]
    }

    #[test]
    fn pack_reduce_unpack_round_trip_with_undefined_grads() {
        let p = params();
        // Gradients only for `a` and `c`; `b` never ran.
        ((&p[0] * &p[0]).sum(Kind::Float) + (&p[2] * 3.0).sum(Kind::Float)).backward();
        // Two buckets of 4 elements over 6 + 1 + 2 + 1 = 10 slots: buckets split a parameter.
        let mut flat = FlatGrads::new(&p, 16);
        flat.pack(&p).unwrap();
        assert_eq!(flat.as_slice(), &[2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 0.0, 3.0, 3.0, 1.0]);
        let mut group = SharedGroup::handles(1);
        flat.all_reduce(&mut group[0]).unwrap();
        let q = params();
        flat.unpack(&q).unwrap();
        assert_eq!(Vec::<f32>::try_from(q[0].grad().flatten(0, -1)).unwrap(), vec![2.0, 4.0, 6.0, 8.0, 10.0, 12.0]);
        assert_eq!(Vec::<f32>::try_from(q[1].grad()).unwrap(), vec![0.0]);
        assert_eq!(Vec::<f32>::try_from(q[2].grad()).unwrap(), vec![3.0, 3.0]);
        assert_eq!(flat.status(), 1.0);
        flat.pack_failed();
        assert!(flat.as_slice().iter().all(|&v| v == 0.0));
    }

    #[test]
    fn a_mismatched_layout_is_an_error() {
        let p = params();
        let mut flat = FlatGrads::new(&p[..2], DEFAULT_BUCKET_BYTES);
        assert!(flat.pack(&p).is_err());
        assert!(flat.unpack(&p[1..]).is_err());
    }
}
