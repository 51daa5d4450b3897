//! The tasks d2nn trains on, their fixed splits, and batching.
//!
//! Images stay in their compact source form (u8 for Fashion-MNIST, f32 for LFW) and are converted to
//! f32 in [0, 1] only per batch, on the device, so a GPU copy carries bytes rather than floats. On a
//! GPU the splits are kept there once (`resident.rs`) and a batch moves only its ids.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

pub use super::config::{DataConfig, Task};
use super::groups::CoarseGroups;
use super::resident::Resident;
use super::{idx, npy, shard};
use crate::error::{Error, Result};
use crate::rng::SplitMix;

/// Fashion-MNIST class names, by label.
pub const FASHION_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];
/// The four Fashion-MNIST files, relative to the data directory: train images, train labels, test
/// images, test labels.
pub const FASHION_FILES: [&str; 4] = [
    "fashion-mnist/train-images-idx3-ubyte.gz",
    "fashion-mnist/train-labels-idx1-ubyte.gz",
    "fashion-mnist/t10k-images-idx3-ubyte.gz",
    "fashion-mnist/t10k-labels-idx1-ubyte.gz",
];
/// The LFW face/non-face array, relative to the data directory.
pub const LFW_FILE: &str = "lfw/lfw_subset.npy";
pub const FASHION_TRAIN_FILE: usize = 60_000;
pub const FASHION_TEST_FILE: usize = 10_000;
/// The first 55,000 of the training file train; its last 5,000 validate.
pub const FASHION_TRAIN: usize = 55_000;
pub const LFW_SHAPE: [usize; 3] = [200, 25, 25];
const LFW_TRAIN_PER_CLASS: usize = 70;
/// Seed of the one fixed LFW split; changing it changes every LFW result, so it is a constant.
pub const LFW_SPLIT_SEED: u64 = 0x4C46_5753_504C_4954; // "LFWSPLIT"
const MISSING_HINT: &str = "run scripts/setup.sh or `d2nn data fetch`";

/// One split: images (CPU, compact), task labels and coarse labels, and maybe a copy on a device.
pub struct Split {
    images: Tensor,
    labels: Vec<i64>,
    coarse: Vec<i64>,
    pub(super) resident: Option<Resident>,
}

/// A batch ready for a forward pass.
#[derive(Debug)]
pub struct Batch {
    /// f32 [n, C, H, W] in [0, 1], on the requested device.
    pub x: Tensor,
    /// i64 [n] task labels.
    pub y: Tensor,
    /// i64 [n] coarse-group labels (`fashion-hier`: per [`coarse_group`]; other tasks: equal to `y`).
    pub coarse: Tensor,
    /// The split-level indices of the examples, used to key per-example randomness.
    pub ids: Vec<i64>,
}

impl std::fmt::Debug for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Split")
            .field("len", &self.labels.len())
            .field("images", &(self.images.size(), self.images.kind()))
            .finish()
    }
}

impl Split {
    fn new(images: Tensor, labels: Vec<i64>, coarse: Vec<i64>) -> Self {
        Self { images, labels, coarse, resident: None }
    }
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn labels(&self) -> &[i64] {
        &self.labels
    }
    pub fn coarse_labels(&self) -> &[i64] {
        &self.coarse
    }
    /// The stored images: u8 [n,1,28,28] (Fashion-MNIST) or f32 [n,1,25,25] (LFW), on the CPU.
    pub fn images(&self) -> &Tensor {
        &self.images
    }
    /// Examples per label, for labels `0..num_classes` (every label of a split built by [`load`] is
    /// below the dataset's `num_classes`).
    pub fn class_counts(&self, num_classes: usize) -> Vec<usize> {
        count(&self.labels, num_classes)
    }
    /// Coarse-group counts, like [`Split::class_counts`].
    pub fn coarse_counts(&self, num_coarse: usize) -> Vec<usize> {
        count(&self.coarse, num_coarse)
    }

    /// Gathers the examples a sample order names (`sampler::Sampler`) into a batch on `device`.
    pub fn batch_of(&self, ids: &[u32], device: Device) -> Result<Batch> {
        let indices: Vec<usize> = ids.iter().map(|&i| i as usize).collect();
        self.batch(&indices, device)
    }

    /// Gathers `indices` (split-level) into a batch on `device`.
    pub fn batch(&self, indices: &[usize], device: Device) -> Result<Batch> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(Error::Invalid(format!(
                "batch index {bad} out of range for a split of {} examples",
                self.len()
            )));
        }
        let ids: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        if let Some(kept) = self.resident.as_ref().filter(|r| r.device == device) {
            return kept.batch(ids);
        }
        let rows = self.images.f_index_select(0, &Tensor::f_from_slice(&ids)?)?;
        let pick = |v: &[i64]| -> Vec<i64> { indices.iter().map(|&i| v[i]).collect() };
        Batch::from_rows(rows, &pick(&self.labels), &pick(&self.coarse), ids, device)
    }
}

impl Batch {
    /// A batch of the stored rows of some examples (u8 pixels are scaled to [0, 1]): one conversion
    /// for examples read here and examples streamed by the coordinator, so both train on the same
    /// bits.
    pub(crate) fn from_rows(
        rows: Tensor,
        labels: &[i64],
        coarse: &[i64],
        ids: Vec<i64>,
        device: Device,
    ) -> Result<Batch> {
        let x = unit_pixels(rows, device)?;
        let y = Tensor::f_from_slice(labels)?.f_to_device(device)?;
        let coarse = Tensor::f_from_slice(coarse)?.f_to_device(device)?;
        Ok(Batch { x, y, coarse, ids })
    }
}

/// Stored rows as f32 pixels in [0, 1] on `device` (u8 rows are scaled after the move).
pub(super) fn unit_pixels(rows: Tensor, device: Device) -> Result<Tensor> {
    let x = rows.f_to_device(device)?.f_to_kind(Kind::Float)?;
    Ok(match rows.kind() {
        Kind::Uint8 => x.f_div_scalar(255.0)?,
        _ => x,
    })
}

fn count(labels: &[i64], n: usize) -> Vec<usize> {
    let mut c = vec![0; n];
    for &l in labels {
        if let Some(slot) = usize::try_from(l).ok().and_then(|l| c.get_mut(l)) {
            *slot += 1;
        }
    }
    c
}

/// A task's data: metadata and the three splits.
#[derive(Debug)]
pub struct Dataset {
    pub task: Task,
    pub num_classes: usize,
    pub num_coarse: usize,
    /// `fashion-hier`: the coarse groups' names, by coarse label; empty for the other tasks.
    pub coarse_names: Vec<String>,
    pub class_names: Vec<String>,
    /// [C, H, W] of one example.
    pub input_shape: [i64; 3],
    pub train: Split,
    pub val: Split,
    pub test: Split,
}

/// Loads `cfg.task` from `cfg.dir`, checking every file.
pub fn load(cfg: &DataConfig) -> Result<Dataset> {
    let dir = resolve_dir(&cfg.dir)?;
    for (name, limit) in [("train_limit", cfg.train_limit), ("test_limit", cfg.test_limit)] {
        if limit == Some(0) {
            return Err(Error::Invalid(format!("data.{name} must be at least 1 (got 0)")));
        }
    }
    match cfg.task {
        Task::Lfw => lfw_dataset(&read_lfw(&dir)?, cfg),
        _ => fashion_dataset(&read_fashion(&dir)?, cfg),
    }
}

/// `dir` made absolute against the current directory; an error if it is not a directory.
pub fn resolve_dir(dir: &Path) -> Result<PathBuf> {
    let abs = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
        cwd.join(dir)
    };
    if !abs.is_dir() {
        return Err(Error::data(abs, format!("data directory not found; {MISSING_HINT}")));
    }
    Ok(abs)
}

fn require(path: &Path) -> Result<()> {
    if path.exists() {
        Ok(())
    } else {
        Err(Error::data(path, format!("missing data file; {MISSING_HINT}")))
    }
}

/// The four Fashion-MNIST files, decoded and checked; pixels without headers.
pub(crate) struct FashionRaw {
    pub train_images: Vec<u8>,
    pub train_labels: Vec<u8>,
    pub test_images: Vec<u8>,
    pub test_labels: Vec<u8>,
}

pub(crate) fn read_fashion(dir: &Path) -> Result<FashionRaw> {
    let paths = FASHION_FILES.map(|f| dir.join(f));
    for p in &paths {
        require(p)?;
    }
    let images = |p: &Path, n| idx::load_images(p, Some(n), Some((28, 28))).map(|im| im.pixels);
    // Decompression dominates load time; the test file decodes on a second thread meanwhile.
    let (train, test) = std::thread::scope(|s| {
        let test = s.spawn(|| -> Result<_> {
            Ok((images(&paths[2], FASHION_TEST_FILE)?, idx::load_labels(&paths[3], Some(FASHION_TEST_FILE), 10)?))
        });
        let train = (|| -> Result<_> {
            Ok((images(&paths[0], FASHION_TRAIN_FILE)?, idx::load_labels(&paths[1], Some(FASHION_TRAIN_FILE), 10)?))
        })();
        let test =
            test.join().unwrap_or_else(|_| Err(Error::Invalid("Fashion-MNIST test loader thread panicked".into())));
        (train, test)
    });
    let ((train_images, train_labels), (test_images, test_labels)) = (train?, test?);
    Ok(FashionRaw { train_images, train_labels, test_images, test_labels })
}

pub(crate) fn read_lfw(dir: &Path) -> Result<Vec<f64>> {
    let path = dir.join(LFW_FILE);
    require(&path)?;
    Ok(npy::read_f8(&path, Some(&LFW_SHAPE), Some(npy::LFW_MD5))?.data)
}

fn limited(n: usize, limit: Option<usize>) -> usize {
    limit.map_or(n, |l| l.min(n))
}

fn fashion_split(pixels: &[u8], fine: &[u8], task: Task, positive: u8, groups: &CoarseGroups) -> Result<Split> {
    let images = Tensor::f_from_slice(pixels)?.f_view([fine.len() as i64, 1, 28, 28])?;
    let labels: Vec<i64> = match task {
        Task::FashionBinary => fine.iter().map(|&c| (c == positive) as i64).collect(),
        _ => fine.iter().map(|&c| c as i64).collect(),
    };
    let coarse = match task {
        // Labels are range-checked when their file is read, so every class has a group.
        Task::FashionHier => fine.iter().map(|&c| groups.of(c).map_or(-1, i64::from)).collect(),
        _ => labels.clone(),
    };
    Ok(Split::new(images, labels, coarse))
}

pub(crate) fn fashion_dataset(raw: &FashionRaw, cfg: &DataConfig) -> Result<Dataset> {
    let pos = cfg.positive_class;
    if cfg.task == Task::FashionBinary && pos as usize >= FASHION_CLASSES.len() {
        return Err(Error::Invalid(format!("data.positive_class {pos} is not a Fashion-MNIST class (0..10)")));
    }
    let groups = cfg.checked_coarse_groups()?;
    const PX: usize = 28 * 28;
    let n_train = limited(FASHION_TRAIN, cfg.train_limit);
    let n_val = limited(FASHION_TRAIN_FILE - FASHION_TRAIN, cfg.test_limit);
    let n_test = limited(FASHION_TEST_FILE, cfg.test_limit);
    let (v0, v1) = (FASHION_TRAIN, FASHION_TRAIN + n_val);
    let (imgs, labs) = (&raw.train_images, &raw.train_labels);
    let split = |px: &[u8], l: &[u8]| fashion_split(px, l, cfg.task, pos, &groups);
    let train = split(&imgs[..n_train * PX], &labs[..n_train])?;
    let val = split(&imgs[v0 * PX..v1 * PX], &labs[v0..v1])?;
    let test = split(&raw.test_images[..n_test * PX], &raw.test_labels[..n_test])?;
    let (class_names, num_coarse): (Vec<String>, usize) = match cfg.task {
        Task::FashionBinary => (vec!["rest".into(), FASHION_CLASSES[pos as usize].into()], 2),
        Task::FashionHier => (FASHION_CLASSES.map(String::from).to_vec(), groups.len()),
        _ => (FASHION_CLASSES.map(String::from).to_vec(), FASHION_CLASSES.len()),
    };
    Ok(Dataset {
        task: cfg.task,
        num_classes: class_names.len(),
        num_coarse,
        coarse_names: if cfg.task == Task::FashionHier { groups.names().to_vec() } else { Vec::new() },
        class_names,
        input_shape: [1, 28, 28],
        train,
        val,
        test,
    })
}

/// The fixed stratified LFW split: (train, test) indices into the 200 images, 70 + 70 and 30 + 30.
/// Each class is shuffled once with [`LFW_SPLIT_SEED`]; the lists alternate face, non-face so that any
/// prefix (what `train_limit`/`test_limit` keep) stays balanced.
pub fn lfw_split_indices() -> (Vec<usize>, Vec<usize>) {
    let half = LFW_SHAPE[0] / 2;
    let mut rng = SplitMix::new(LFW_SPLIT_SEED);
    let mut faces: Vec<usize> = (0..half).collect();
    let mut others: Vec<usize> = (half..2 * half).collect();
    shard::shuffle(&mut faces, &mut rng);
    shard::shuffle(&mut others, &mut rng);
    let interleave = |r: std::ops::Range<usize>| -> Vec<usize> { r.flat_map(|i| [faces[i], others[i]]).collect() };
    (interleave(0..LFW_TRAIN_PER_CLASS), interleave(LFW_TRAIN_PER_CLASS..half))
}

fn lfw_split(values: &[f64], indices: &[usize]) -> Result<Split> {
    let px = LFW_SHAPE[1] * LFW_SHAPE[2];
    let pixels: Vec<f32> =
        indices.iter().flat_map(|&i| values[i * px..(i + 1) * px].iter().map(|&v| v as f32)).collect();
    let side = LFW_SHAPE[1] as i64;
    let images = Tensor::f_from_slice(&pixels)?.f_view([indices.len() as i64, 1, side, side])?;
    // Faces come first in the file: index < 100 is a face (label 1).
    let labels: Vec<i64> = indices.iter().map(|&i| (i < LFW_SHAPE[0] / 2) as i64).collect();
    Ok(Split::new(images, labels.clone(), labels))
}

/// LFW has no validation split: with 200 images, holding out more than the 60 test images would leave
/// too few to train on and too few to measure anything; model selection uses the training set.
fn lfw_dataset(values: &[f64], cfg: &DataConfig) -> Result<Dataset> {
    let (train_idx, test_idx) = lfw_split_indices();
    let train = lfw_split(values, &train_idx[..limited(train_idx.len(), cfg.train_limit)])?;
    let test = lfw_split(values, &test_idx[..limited(test_idx.len(), cfg.test_limit)])?;
    Ok(Dataset {
        task: Task::Lfw,
        num_classes: 2,
        num_coarse: 2,
        coarse_names: Vec::new(),
        class_names: vec!["non-face".into(), "face".into()],
        input_shape: [1, LFW_SHAPE[1] as i64, LFW_SHAPE[2] as i64],
        train,
        val: lfw_split(values, &[])?,
        test,
    })
}

#[cfg(test)]
#[path = "datasets_tests.rs"]
mod tests;
