//! Training examples as bytes, for `data.source = "coordinator"`: the coordinator reads each
//! rank's examples out of its own copy of the split and sends them with the step's order, so a
//! worker needs no data directory. The worker turns them into the same batch, bit for bit, that it
//! would have gathered from a local copy.
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::datasets::{Batch, Split};
use crate::error::{Error, Result};

/// The stored pixels of some examples: Fashion-MNIST keeps bytes, LFW floats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Pixels {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

impl Pixels {
    fn len(&self) -> usize {
        match self {
            Pixels::U8(v) => v.len(),
            Pixels::F32(v) => v.len(),
        }
    }
}

/// Some training examples, as a step's order carries them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Examples {
    /// Training-split indices (they key per-example randomness, as for local reading).
    pub ids: Vec<u32>,
    /// [C, H, W] of one example.
    pub shape: [i64; 3],
    pub pixels: Pixels,
    pub labels: Vec<i64>,
    pub coarse: Vec<i64>,
}

fn invalid(message: String) -> Error {
    Error::Invalid(format!("streamed examples: {message}"))
}

impl Split {
    /// The examples `ids` of this split, as bytes.
    pub fn examples(&self, ids: &[u32]) -> Result<Examples> {
        let indices: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.len()) {
            return Err(invalid(format!("example {bad} out of range for a split of {} examples", self.len())));
        }
        let rows = self.images().f_index_select(0, &Tensor::f_from_slice(&indices)?)?.f_contiguous()?;
        let size = rows.size();
        let shape = match size[..] {
            [_, c, h, w] => [c, h, w],
            _ => return Err(invalid(format!("images of shape {size:?}, expected [n, C, H, W]"))),
        };
        let flat = rows.f_flatten(0, -1)?;
        let pixels = match rows.kind() {
            Kind::Uint8 => Pixels::U8(Vec::<u8>::try_from(&flat)?),
            Kind::Float => Pixels::F32(Vec::<f32>::try_from(&flat)?),
            other => return Err(invalid(format!("images of kind {other:?}"))),
        };
        let pick = |v: &[i64]| ids.iter().map(|&i| v[i as usize]).collect();
        Ok(Examples {
            ids: ids.to_vec(),
            shape,
            pixels,
            labels: pick(self.labels()),
            coarse: pick(self.coarse_labels()),
        })
    }
}

impl Examples {
    /// The batch these examples make on `device`, after checking that they are what a split of
    /// `num_classes` classes and `shape` examples would hold.
    pub fn batch(&self, shape: [i64; 3], num_classes: usize, device: Device) -> Result<Batch> {
        let n = self.ids.len();
        if self.shape != shape {
            return Err(invalid(format!("examples of shape {:?}, the task's are {shape:?}", self.shape)));
        }
        let per_example = shape.iter().product::<i64>() as usize;
        if self.labels.len() != n || self.coarse.len() != n || self.pixels.len() != n * per_example {
            return Err(invalid(format!(
                "{n} ids with {} labels, {} coarse labels and {} pixels ({per_example} per example)",
                self.labels.len(),
                self.coarse.len(),
                self.pixels.len()
            )));
        }
        // Coarse groups are non-empty sets of classes, so there are never more groups than classes.
        let in_range = |v: &[i64], k: usize| v.iter().all(|&l| (0..k as i64).contains(&l));
        if !in_range(&self.labels, num_classes) || !in_range(&self.coarse, num_classes) {
            return Err(invalid(format!("a label outside the task's {num_classes} classes")));
        }
        let dims = [n as i64, shape[0], shape[1], shape[2]];
        let rows = match &self.pixels {
            Pixels::U8(v) => Tensor::f_from_slice(v)?,
            Pixels::F32(v) => Tensor::f_from_slice(v)?,
        }
        .f_reshape(dims)?;
        let ids = self.ids.iter().map(|&i| i64::from(i)).collect();
        Batch::from_rows(rows, &self.labels, &self.coarse, ids, device)
    }

    /// Bytes of pixels and labels: what a step's order grows by.
    pub fn payload_bytes(&self) -> usize {
        let pixel_bytes = match &self.pixels {
            Pixels::U8(v) => v.len(),
            Pixels::F32(v) => v.len() * 4,
        };
        pixel_bytes + self.ids.len() * (4 + 8 + 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{load, DataConfig, Task};

    fn data(task: Task) -> Option<crate::data::Dataset> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data");
        let cfg = DataConfig { task, dir, train_limit: Some(300), test_limit: Some(10), ..DataConfig::default() };
        load(&cfg).ok()
    }

    #[test]
    fn streamed_examples_make_the_batch_local_reading_makes_bit_for_bit() {
        let ds = data(Task::FashionHier).expect("the Fashion-MNIST files (scripts/setup.sh fetches them)");
        let ids = [299u32, 0, 17, 17, 150];
        let local = ds.train.batch_of(&ids, Device::Cpu).unwrap();
        let sent = ds.train.examples(&ids).unwrap();
        assert!(matches!(sent.pixels, Pixels::U8(ref v) if v.len() == 5 * 784));
        let streamed = sent.batch(ds.input_shape, ds.num_classes, Device::Cpu).unwrap();
        assert!(local.x.equal(&streamed.x) && local.y.equal(&streamed.y) && local.coarse.equal(&streamed.coarse));
        assert_eq!(local.ids, streamed.ids);
        assert_ne!(streamed.coarse, streamed.y, "fashion-hier's coarse labels travel too");
    }

    #[test]
    fn streamed_examples_that_do_not_fit_the_task_are_errors() {
        let ds = data(Task::FashionMnist).expect("the Fashion-MNIST files (scripts/setup.sh fetches them)");
        let good = ds.train.examples(&[1, 2]).unwrap();
        let e = |x: Examples| x.batch(ds.input_shape, 10, Device::Cpu).unwrap_err().to_string();
        assert!(e(Examples { labels: vec![3, 10], ..good.clone() }).contains("outside the task's 10 classes"));
        assert!(e(Examples { labels: vec![3], ..good.clone() }).contains("2 ids with 1 labels"));
        assert!(e(Examples { pixels: Pixels::U8(vec![0; 10]), ..good.clone() }).contains("10 pixels"));
        assert!(e(Examples { shape: [1, 25, 25], ..good }).contains("shape [1, 25, 25]"));
        assert!(ds.train.examples(&[300]).unwrap_err().to_string().contains("example 300 out of range"));
    }
}
