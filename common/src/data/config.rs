//! What a run config says about its data: the task and where its files are (`[data]`).
use std::path::PathBuf;

use super::datasets::LFW_SHAPE;
use super::groups::CoarseGroups;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Fashion-MNIST, 10 classes.
    FashionMnist,
    /// Fashion-MNIST, one class (`positive_class`) against the rest: label 1 = positive.
    FashionBinary,
    /// Fashion-MNIST, 10 fine classes under 4 coarse groups.
    FashionHier,
    /// LFW face (1) / non-face (0), 25x25.
    Lfw,
}

impl Task {
    pub const ALL: [Task; 4] = [Task::FashionMnist, Task::FashionBinary, Task::FashionHier, Task::Lfw];

    /// The kebab-case name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Task::FashionMnist => "fashion-mnist",
            Task::FashionBinary => "fashion-binary",
            Task::FashionHier => "fashion-hier",
            Task::Lfw => "lfw",
        }
    }

    /// One example's input shape and the number of classes, known without loading the data (the
    /// graph is checked against them before any file is read).
    pub fn shape(self) -> ([i64; 3], i64) {
        match self {
            Task::FashionMnist | Task::FashionHier => ([1, 28, 28], 10),
            Task::FashionBinary => ([1, 28, 28], 2),
            Task::Lfw => ([1, LFW_SHAPE[1] as i64, LFW_SHAPE[2] as i64], 2),
        }
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Task {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Task::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Task::ALL.iter().map(|t| t.name()).collect();
            Error::Invalid(format!("unknown task `{s}` (expected one of {})", names.join(", ")))
        })
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub task: Task,
    /// Data directory; a relative path is resolved against the current directory.
    pub dir: PathBuf,
    /// The positive class of `fashion-binary` (default 8 = Bag).
    pub positive_class: u8,
    /// Keep only the first N training examples (CI-sized runs).
    pub train_limit: Option<usize>,
    /// Keep only the first N test examples; it caps validation too, since both are evaluation sets
    /// whose cost a short run wants to bound.
    pub test_limit: Option<usize>,
    /// Where workers get their training examples: `local` (each worker reads its host's copy of the
    /// data directory, as on shared storage) or `coordinator` (the coordinator sends each worker
    /// its examples' bytes with every step's order, and evaluates the saved model itself, so a
    /// worker needs no data directory).
    pub source: DataSource,
    /// `fashion-hier` only: the coarse groups, each a list of Fashion-MNIST classes, every class in
    /// exactly one group; group g's coarse label is g. Unset: tops {0,2,4,6}, trousers and dresses
    /// {1,3}, footwear {5,7,9}, bags {8}.
    pub coarse_groups: Option<Vec<Vec<u8>>>,
}

/// See [`DataConfig::source`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSource {
    #[default]
    Local,
    Coordinator,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            task: Task::FashionMnist,
            dir: PathBuf::from("data"),
            positive_class: 8,
            train_limit: None,
            test_limit: None,
            source: DataSource::Local,
            coarse_groups: None,
        }
    }
}

impl DataConfig {
    /// The coarse groups of `fashion-hier` (the default ones when `coarse_groups` is unset); an error
    /// naming the key if they are not a partition of the ten classes, or are set for another task.
    pub fn checked_coarse_groups(&self) -> Result<CoarseGroups> {
        if self.coarse_groups.is_some() && self.task != Task::FashionHier {
            return Err(Error::Invalid(format!(
                "key `data.coarse_groups`: applies to the fashion-hier task only, not `{}`",
                self.task
            )));
        }
        CoarseGroups::from_config(self.coarse_groups.as_deref())
    }
}
