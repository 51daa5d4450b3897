//! A split kept on an accelerator: uploaded once, in its compact source form, and batches gathered
//! there, so a GPU step copies only its example ids to the device. On the CPU the split already is
//! where the step runs, and [`crate::train::build_model`] keeps nothing.
use tch::{Device, Tensor};

use super::datasets::{unit_pixels, Batch, Dataset, Split};
use crate::error::Result;

/// A split's images and labels on one device.
pub(super) struct Resident {
    pub(super) device: Device,
    images: Tensor,
    labels: Tensor,
    coarse: Tensor,
}

impl Resident {
    fn of(split: &Split, device: Device) -> Result<Resident> {
        let on = |t: Tensor| t.f_to_device(device);
        Ok(Resident {
            device,
            images: on(split.images().shallow_clone())?,
            labels: on(Tensor::f_from_slice(split.labels())?)?,
            coarse: on(Tensor::f_from_slice(split.coarse_labels())?)?,
        })
    }

    /// The examples `ids` (checked by the caller), gathered on the device. The ids travel without
    /// blocking: from pageable memory the copy is staged before the call returns, so the host does
    /// not wait for the device's queue (a blocking copy would wait for the previous step's update).
    pub(super) fn batch(&self, ids: Vec<i64>) -> Result<Batch> {
        let at = Tensor::f_from_slice(&ids)?.f_to_device_(self.device, tch::Kind::Int64, true, false)?;
        Ok(Batch {
            x: unit_pixels(self.images.f_index_select(0, &at)?, self.device)?,
            y: self.labels.f_index_select(0, &at)?,
            coarse: self.coarse.f_index_select(0, &at)?,
            ids,
        })
    }
}

impl Split {
    /// Keeps a copy of this split on `device`: batches asked for on that device are gathered there
    /// from then on, the same examples in the same bits.
    pub fn keep_on(&mut self, device: Device) -> Result<()> {
        self.resident = Some(Resident::of(self, device)?);
        Ok(())
    }
}

impl Dataset {
    /// Keeps every split on `device` ([`Split::keep_on`]): Fashion-MNIST takes 55 MB as bytes.
    pub fn keep_on(&mut self, device: Device) -> Result<()> {
        for split in [&mut self.train, &mut self.val, &mut self.test] {
            split.keep_on(device)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{load, DataConfig, Task};

    fn bits(t: &Tensor) -> Vec<u8> {
        let flat = t.flatten(0, -1).to_kind(tch::Kind::Float);
        Vec::<f32>::try_from(&flat).unwrap().iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// The resident path (taken here on the CPU, the device a test has) gathers the same examples
    /// to the bit as the path that moves each batch, for u8 and f32 images and every label.
    #[test]
    fn a_kept_split_gives_the_batches_of_the_stored_one_to_the_bit() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for task in [Task::FashionHier, Task::Lfw] {
            let cfg = DataConfig { task, dir: root.join("data"), train_limit: Some(300), ..Default::default() };
            let mut kept = load(&cfg).unwrap();
            kept.keep_on(Device::Cpu).unwrap();
            let stored = load(&cfg).unwrap();
            let ids = [5usize, 0, 77, 5, 123, 99];
            let (a, b) = (kept.train.batch(&ids, Device::Cpu).unwrap(), stored.train.batch(&ids, Device::Cpu).unwrap());
            assert!(kept.train.resident.is_some() && stored.train.resident.is_none());
            assert_eq!(a.x.size(), b.x.size());
            for (x, y) in [(&a.x, &b.x), (&a.y, &b.y), (&a.coarse, &b.coarse)] {
                assert_eq!((x.kind(), bits(x)), (y.kind(), bits(y)), "{task:?}");
            }
            assert_eq!(a.ids, b.ids);
            let e = kept.test.batch(&[kept.test.len()], Device::Cpu).unwrap_err().to_string();
            assert!(e.contains("out of range"), "{e}");
        }
    }
}
