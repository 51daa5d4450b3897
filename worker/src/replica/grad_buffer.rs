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

/// Where the buffer lives: host memory for the CPU collectives, the GPU for NCCL (so gradients
/// never leave the device).
#[derive(Debug)]
enum Storage {
    Host(Vec<f32>),
    Device(Tensor),
}

#[derive(Debug)]
pub struct FlatGrads {
    entries: Vec<Entry>,
    storage: Storage,
    len: usize,
    bucket_elems: usize,
}

impl FlatGrads {
    /// The layout of `params` (in the canonical order the caller passes them), in host memory, or
    /// on `device` when the collective reduces there.
    pub fn new(params: &[Tensor], bucket_bytes: usize, device: Option<Device>) -> Result<FlatGrads, Error> {
        let mut offset = 0;
        let entries = params
            .iter()
            .map(|p| {
                let e = Entry { offset, numel: p.numel(), shape: p.size() };
                offset += e.numel;
                e
            })
            .collect();
        let len = offset + 1;
        let storage = match device {
            None => Storage::Host(vec![0.0; len]),
            Some(d) => Storage::Device(Tensor::f_zeros([len as i64], (Kind::Float, d))?),
        };
        Ok(FlatGrads { entries, storage, len, bucket_elems: (bucket_bytes / 4).max(1) })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer's values (a copy when it lives on a device).
    pub fn to_vec(&self) -> Result<Vec<f32>, Error> {
        match &self.storage {
            Storage::Host(buf) => Ok(buf.clone()),
            Storage::Device(t) => Ok(Vec::<f32>::try_from(t.f_to_device(Device::Cpu)?)?),
        }
    }

    /// Copies every parameter's gradient in (zeros where undefined) and sets the status slot to 1.
    pub fn pack(&mut self, params: &[Tensor]) -> Result<(), Error> {
        self.check(params)?;
        for (e, p) in self.entries.iter().zip(params) {
            let g = p.grad();
            match &mut self.storage {
                Storage::Host(buf) => {
                    let dst = &mut buf[e.offset..e.offset + e.numel];
                    if g.defined() {
                        g.f_to_kind(Kind::Float)?.f_copy_data(dst, e.numel)?;
                    } else {
                        dst.fill(0.0);
                    }
                }
                Storage::Device(buf) => {
                    let mut dst = buf.f_narrow(0, e.offset as i64, e.numel as i64)?;
                    if g.defined() {
                        dst.f_copy_(&g.f_reshape([-1])?)?;
                    } else {
                        drop(dst.f_zero_()?);
                    }
                }
            }
        }
        self.set_status(1.0)
    }

    /// What a rank whose step failed contributes: zeros, status 0.
    pub fn pack_failed(&mut self) -> Result<(), Error> {
        match &mut self.storage {
            Storage::Host(buf) => buf.fill(0.0),
            Storage::Device(buf) => {
                drop(buf.f_zero_()?);
            }
        }
        Ok(())
    }

    fn set_status(&mut self, v: f32) -> Result<(), Error> {
        let last = self.len - 1;
        match &mut self.storage {
            Storage::Host(buf) => buf[last] = v,
            Storage::Device(buf) => {
                drop(buf.f_narrow(0, last as i64, 1)?.f_fill_(f64::from(v))?);
            }
        }
        Ok(())
    }

    /// After the all-reduce: the number of ranks whose step succeeded.
    pub fn status(&self) -> Result<f32, Error> {
        let last = self.len - 1;
        match &self.storage {
            Storage::Host(buf) => Ok(buf[last]),
            Storage::Device(buf) => Ok(buf.f_double_value(&[last as i64])? as f32),
        }
    }

    /// All-reduces the buffer bucket by bucket.
    pub fn all_reduce(&mut self, collective: &mut dyn Collective) -> Result<(), Error> {
        match &mut self.storage {
            Storage::Host(buf) => {
                for bucket in buf.chunks_mut(self.bucket_elems) {
                    collective.all_reduce_sum(bucket)?;
                }
            }
            Storage::Device(buf) => {
                for start in (0..self.len).step_by(self.bucket_elems) {
                    let n = self.bucket_elems.min(self.len - start);
                    let mut bucket = buf.f_narrow(0, start as i64, n as i64)?;
                    collective.all_reduce_sum_tensor(&mut bucket)?;
                }
            }
        }
        Ok(())
    }

    /// Copies the buffer back into every parameter's gradient, defining zero gradients first where
    /// a module did not run here (another rank may have run it).
    pub fn unpack(&self, params: &[Tensor]) -> Result<(), Error> {
        self.check(params)?;
        d2nn_common::optim::define_missing_grads(params)?;
        let _guard = tch::no_grad_guard();
        for (e, p) in self.entries.iter().zip(params) {
            match &self.storage {
                Storage::Host(buf) => {
                    let src = &buf[e.offset..e.offset + e.numel];
                    // SAFETY: `src` outlives the borrowed view, which `copy_` reads once and is then
                    // dropped; the shape's element count is `src.len()`, contiguous f32 on the CPU.
                    let view =
                        unsafe { Tensor::f_from_blob(src.as_ptr().cast(), &e.shape, &[], Kind::Float, Device::Cpu)? };
                    p.grad().f_copy_(&view)?;
                }
                Storage::Device(buf) => {
                    let view = buf.f_narrow(0, e.offset as i64, e.numel as i64)?.f_view(e.shape.as_slice())?;
                    p.grad().f_copy_(&view)?;
                }
            }
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
        let mut flat = FlatGrads::new(&p, 16, None).unwrap();
        flat.pack(&p).unwrap();
        assert_eq!(flat.to_vec().unwrap(), vec![2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 0.0, 3.0, 3.0, 1.0]);
        let mut group = SharedGroup::handles(1);
        flat.all_reduce(&mut group[0]).unwrap();
        let q = params();
        flat.unpack(&q).unwrap();
        assert_eq!(Vec::<f32>::try_from(q[0].grad().flatten(0, -1)).unwrap(), vec![2.0, 4.0, 6.0, 8.0, 10.0, 12.0]);
        assert_eq!(Vec::<f32>::try_from(q[1].grad()).unwrap(), vec![0.0]);
        assert_eq!(Vec::<f32>::try_from(q[2].grad()).unwrap(), vec![3.0, 3.0]);
        assert_eq!(flat.status().unwrap(), 1.0);
        flat.pack_failed().unwrap();
        assert!(flat.to_vec().unwrap().iter().all(|&v| v == 0.0));
    }

    /// The device layout (what NCCL uses) on the CPU: the collective's default tensor path stages
    /// it through host memory, so both layouts must agree to the bit.
    #[test]
    fn the_tensor_layout_matches_the_host_layout() {
        let p = params();
        ((&p[0] * &p[1]).sum(Kind::Float) + (&p[2] * &p[2]).sum(Kind::Float)).backward();
        let mut group = SharedGroup::handles(1);
        let mut host = FlatGrads::new(&p, 12, None).unwrap();
        let mut tensor = FlatGrads::new(&p, 12, Some(Device::Cpu)).unwrap();
        for flat in [&mut host, &mut tensor] {
            flat.pack(&p).unwrap();
            flat.all_reduce(&mut group[0]).unwrap();
            assert_eq!(flat.status().unwrap(), 1.0);
        }
        assert_eq!(host.to_vec().unwrap(), tensor.to_vec().unwrap());
        let q = params();
        tensor.unpack(&q).unwrap();
        assert_eq!(Vec::<f32>::try_from(q[2].grad()).unwrap(), vec![14.0, 16.0]);
        assert_eq!(Vec::<f32>::try_from(q[1].grad()).unwrap(), vec![21.0]);
        tensor.pack_failed().unwrap();
        assert_eq!(tensor.status().unwrap(), 0.0);
    }

    #[test]
    fn a_mismatched_layout_is_an_error() {
        let p = params();
        let mut flat = FlatGrads::new(&p[..2], DEFAULT_BUCKET_BYTES, None).unwrap();
        assert!(flat.pack(&p).is_err());
        assert!(flat.unpack(&p[1..]).is_err());
    }
}
