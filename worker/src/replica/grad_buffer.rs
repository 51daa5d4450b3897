//! The replica's gradient buffer as the collective sees it: the flat gradients of its parameters
//! ([`FlatParams`], in `D2nn::parameters()` order), where backward writes them, plus one status slot
//! at the end. The all-reduce runs on that buffer in place: nothing is packed before it or unpacked
//! after it. Every rank reduces the same layout every step (zeros for a module it did not execute),
//! so every rank issues the same collectives in the same order.
use d2nn_common::host;
use d2nn_common::optim::FlatParams;
use tch::{Device, Kind, Tensor};

use crate::collective::Collective;
use crate::Error;

/// Default bucket: 4 MiB of f32. Buckets are reduced one after another so a transport can overlap
/// or pipeline them later; in memory they bound the working set of one call.
pub const DEFAULT_BUCKET_BYTES: usize = 4 << 20;

#[derive(Debug)]
pub struct FlatGrads {
    /// The gradient buffer of the replica's [`FlatParams`] (a handle on the same memory).
    buffer: Tensor,
    len: usize,
    bucket_elems: usize,
    /// Whether the collective reduces where the buffer lives (a CPU buffer and a host collective,
    /// or NCCL on the buffer's GPU); otherwise each bucket is staged through host memory.
    in_place: bool,
}

impl FlatGrads {
    /// The gradient buffer of `flat`, which must have been built with one extra slot (the status),
    /// reduced on `reduce_device` (None: by a host-memory collective).
    pub fn new(flat: &FlatParams, bucket_bytes: usize, reduce_device: Option<Device>) -> Result<FlatGrads, Error> {
        let buffer = flat.grad_buffer().shallow_clone();
        let len = buffer.numel();
        if len as i64 != flat.layout().numel + 1 || buffer.kind() != Kind::Float {
            return Err(Error::Protocol(format!(
                "flat gradient buffer: expected {} f32 elements (the parameters and a status slot), got {len} {:?}",
                flat.layout().numel + 1,
                buffer.kind()
            )));
        }
        let in_place = match reduce_device {
            None => buffer.device() == Device::Cpu,
            Some(d) => d == buffer.device(),
        };
        Ok(FlatGrads { buffer, len, bucket_elems: (bucket_bytes / 4).max(1), in_place })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer's values (a copy).
    pub fn to_vec(&self) -> Result<Vec<f32>, Error> {
        Ok(host::values::<f32>(&self.buffer)?)
    }

    /// This rank's step succeeded: its gradients are in the buffer; status 1.
    pub fn mark_ok(&mut self) -> Result<(), Error> {
        self.set_status(1.0)
    }

    /// What a rank whose step failed contributes: zeros, status 0.
    pub fn mark_failed(&mut self) -> Result<(), Error> {
        drop(tch::no_grad(|| self.buffer.f_zero_())?);
        Ok(())
    }

    fn set_status(&mut self, v: f32) -> Result<(), Error> {
        let last = self.len as i64 - 1;
        drop(tch::no_grad(|| self.buffer.f_narrow(0, last, 1)?.f_fill_(f64::from(v)))?);
        Ok(())
    }

    /// After the all-reduce: the number of ranks whose step succeeded.
    pub fn status(&self) -> Result<f32, Error> {
        Ok(host::scalar_f64(&self.buffer.f_narrow(0, self.len as i64 - 1, 1)?)? as f32)
    }

    /// All-reduces the buffer bucket by bucket, in place.
    pub fn all_reduce(&mut self, collective: &mut dyn Collective) -> Result<(), Error> {
        if self.in_place && self.buffer.device() == Device::Cpu {
            // SAFETY: the buffer is a contiguous f32 CPU tensor of `len` elements that this handle
            // keeps alive; the only other handles are the parameters' gradient views, and nothing
            // touches them while this call runs (backward has finished, the update comes after).
            let host = unsafe { std::slice::from_raw_parts_mut(self.buffer.data_ptr().cast::<f32>(), self.len) };
            for bucket in host.chunks_mut(self.bucket_elems) {
                collective.all_reduce_sum(bucket)?;
            }
            return Ok(());
        }
        // A device collective reduces each bucket where it lives; a host collective with a device
        // buffer stages it (the trait's default).
        for start in (0..self.len).step_by(self.bucket_elems) {
            let n = self.bucket_elems.min(self.len - start);
            let mut bucket = self.buffer.f_narrow(0, start as i64, n as i64)?;
            collective.all_reduce_sum_tensor(&mut bucket)?;
        }
        Ok(())
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

    /// Two ranks in one process; backward writes each rank's gradients straight into its buffer,
    /// the all-reduce sums them in place, and the parameters' gradients are the sums.
    fn two_ranks_reduce(bucket_bytes: usize, reduce_device: Option<Device>) -> Vec<Vec<f32>> {
        let ranks: Vec<Vec<Tensor>> = vec![params(), params()];
        let flats: Vec<FlatParams> = ranks.iter().map(|p| FlatParams::new(p, 1).unwrap()).collect();
        // Rank 0: gradients for `a` and `c`; `b` never ran there. Rank 1: only `b`.
        let p = &ranks[0];
        ((&p[0] * &p[0]).sum(Kind::Float) + (&p[2] * 3.0).sum(Kind::Float)).backward();
        (&ranks[1][1] * 5.0).sum(Kind::Float).backward();
        let group = SharedGroup::handles(2);
        let threads: Vec<_> = group
            .into_iter()
            .zip(&flats)
            .map(|(mut collective, flat)| {
                let mut grads = FlatGrads::new(flat, bucket_bytes, reduce_device).unwrap();
                grads.mark_ok().unwrap();
                assert_eq!(grads.len(), 10);
                std::thread::spawn(move || {
                    grads.all_reduce(&mut collective).unwrap();
                    assert_eq!(grads.status().unwrap(), 2.0);
                    grads.to_vec().unwrap()
                })
            })
            .collect();
        let reduced: Vec<Vec<f32>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        for rank in &ranks {
            assert_eq!(Vec::<f32>::try_from(rank[0].grad().flatten(0, -1)).unwrap(), [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]);
            assert_eq!(Vec::<f32>::try_from(rank[1].grad()).unwrap(), [5.0]);
            assert_eq!(Vec::<f32>::try_from(rank[2].grad()).unwrap(), [3.0, 3.0]);
        }
        reduced
    }

    #[test]
    fn backward_writes_the_buffer_and_the_all_reduce_sums_it_in_place() {
        // Two buckets of 4 elements over 6 + 1 + 2 + 1 = 10 slots: buckets split a parameter.
        let reduced = two_ranks_reduce(16, None);
        assert_eq!(reduced[0], [2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 5.0, 3.0, 3.0, 2.0]);
        assert_eq!(reduced[0], reduced[1]);
    }

    /// The staged path (a collective that reduces elsewhere than the buffer lives: the trait's
    /// default copies each bucket through host memory) agrees with the in-place one to the bit.
    #[test]
    fn the_staged_path_matches_the_in_place_path() {
        assert_eq!(two_ranks_reduce(12, Some(Device::Cuda(0))), two_ranks_reduce(12, None));
    }

    #[test]
    fn a_failed_rank_contributes_zeros_and_status_zero() {
        let p = params();
        let flat = FlatParams::new(&p, 1).unwrap();
        (&p[2] * 3.0).sum(Kind::Float).backward();
        let mut grads = FlatGrads::new(&flat, DEFAULT_BUCKET_BYTES, None).unwrap();
        grads.mark_ok().unwrap();
        assert_eq!(grads.status().unwrap(), 1.0);
        grads.mark_failed().unwrap();
        assert!(grads.to_vec().unwrap().iter().all(|&v| v == 0.0));
        assert_eq!(Vec::<f32>::try_from(p[2].grad()).unwrap(), [0.0, 0.0]);
    }

    #[test]
    fn a_buffer_without_its_status_slot_is_an_error() {
        let flat = FlatParams::new(&params(), 0).unwrap();
        let e = FlatGrads::new(&flat, DEFAULT_BUCKET_BYTES, None).unwrap_err().to_string();
        assert!(e.contains("status slot"), "{e}");
    }
}
