//! Reads of tensor values into host memory, counted. On a GPU each read waits for the work queued
//! before it (a host synchronisation): the device idles while the host decides what to launch next.
//! `d2nn bench train` reports how many a training step makes, so every read that the forward, the
//! step, the update, evaluation and a replica's step status make of a tensor's values, or of a size
//! that depends on them (`nonzero`), goes through this module. Not counted: a collective's own
//! transfers (the CPU collectives move the gradients through host memory by design), checkpoints
//! copied out to be saved, and data loading. On the CPU a read costs no wait, but it is counted all
//! the same: the count is what the same step pays on a GPU.
use std::cell::Cell;

use tch::kind::Element;
use tch::{Device, Tensor};

use crate::Result;

thread_local! {
    // Per thread: a step runs on one thread, and tests running side by side do not see each other.
    static READS: Cell<u64> = const { Cell::new(0) };
}

/// Reads made so far by the calling thread.
pub fn reads() -> u64 {
    READS.with(Cell::get)
}

fn count() {
    READS.with(|n| n.set(n.get() + 1));
}

/// All the values of `t`, flattened, in one transfer.
pub fn values<T: Element + Copy>(t: &Tensor) -> Result<Vec<T>> {
    count();
    let flat = t.f_reshape([-1])?.f_to_device(Device::Cpu)?;
    Ok(Vec::<T>::try_from(&flat)?)
}

/// The values of a CPU tensor, flattened: they are in host memory already, so reading them waits
/// for nothing and is not counted. `None` for a tensor on another device, whose values stay there.
pub fn if_on_cpu<T: Element + Copy>(t: &Tensor) -> Result<Option<Vec<T>>> {
    if t.device() != Device::Cpu {
        return Ok(None);
    }
    Ok(Some(Vec::<T>::try_from(&t.f_reshape([-1])?)?))
}

/// The value of a one-element tensor as f64 (exact for every float kind and for integers below 2⁵³).
pub fn scalar_f64(t: &Tensor) -> Result<f64> {
    count();
    Ok(t.f_double_value(&[])?)
}

/// The value of a one-element integer tensor.
pub fn scalar_i64(t: &Tensor) -> Result<i64> {
    count();
    Ok(t.f_int64_value(&[])?)
}

/// The positions where `mask` (bool `[n]`) is true, ascending, i64 `[m]`: the host has to learn `m`
/// before it can size anything that follows.
pub fn rows_where(mask: &Tensor) -> Result<Tensor> {
    count();
    Ok(mask.f_nonzero()?.f_squeeze_dim(1)?)
}

/// Checks that every value of the integer tensor `t` lies in `[0, bound)`, in debug builds only: the
/// check is two reads. In release an out-of-range index still fails inside torch, as an error on the
/// CPU or a device assert on CUDA. The reads are not counted, so that a step's count is the same in
/// both builds.
#[cfg(debug_assertions)]
pub fn debug_check_range(name: &str, t: &Tensor, bound: i64) -> Result<()> {
    if t.numel() == 0 {
        return Ok(());
    }
    let (lo, hi) = (t.f_min()?.f_int64_value(&[])?, t.f_max()?.f_int64_value(&[])?);
    if lo < 0 || hi >= bound {
        return Err(crate::Error::Invalid(format!("{name} must lie in [0, {bound}), got values in [{lo}, {hi}]")));
    }
    Ok(())
}

#[cfg(not(debug_assertions))]
pub fn debug_check_range(_name: &str, _t: &Tensor, _bound: i64) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_read_is_counted_once_and_returns_the_values() {
        let before = reads();
        let t = Tensor::from_slice(&[1.5f64, -2.0, 0.0, 4.0]);
        assert_eq!(values::<f64>(&t.view([2, 2])).unwrap(), [1.5, -2.0, 0.0, 4.0]);
        assert_eq!(scalar_f64(&t.sum(tch::Kind::Double)).unwrap(), 3.5);
        assert_eq!(scalar_i64(&Tensor::from_slice(&[7i64])).unwrap(), 7);
        assert_eq!(values::<i64>(&rows_where(&t.ne(0.0)).unwrap()).unwrap(), [0, 1, 3]);
        assert_eq!(reads(), before + 5);
        assert_eq!(if_on_cpu::<f64>(&t).unwrap().unwrap(), [1.5, -2.0, 0.0, 4.0]);
        assert_eq!(reads(), before + 5, "CPU memory is read without waiting");
    }
}
