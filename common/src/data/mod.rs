//! The data layer: dataset files, tasks and splits, batching, deterministic order and sharding, and
//! fetching the files from packages.
//!
//! - [`idx`]: gzip IDX files (Fashion-MNIST), every header fact checked.
//! - [`npy`]: NPY `<f8` arrays (the LFW face/non-face subset) with an md5 check.
//! - [`datasets`]: the tasks (`fashion-mnist`, `fashion-binary`, `fashion-hier`, `lfw`), their fixed
//!   splits, [`Split::batch`].
//! - [`groups`]: `fashion-hier`'s coarse groups (`data.coarse_groups`).
//! - [`shard`]: the seeded epoch order every world size shares.
//! - [`sampler`]: the run's sample order: each step's batch, retries of aborted steps, each epoch's
//!   coverage, each rank's share.
//! - [`stream`]: training examples as bytes, for `data.source = "coordinator"`.
//! - `resident`: a split kept on an accelerator, batches gathered there ([`Split::keep_on`]).
//! - [`fetch`](mod@fetch): `d2nn data fetch`, from Debian and PyPI packages only.
//!
//! Files live under the data directory (`data/` at the workspace root, git-ignored):
//! `fashion-mnist/*-idx?-ubyte.gz` and `lfw/lfw_subset.npy`. A missing or damaged file is an error that
//! names it; nothing is repaired silently at load time.

mod config;
pub mod datasets;
pub mod fetch;
pub mod groups;
pub mod idx;
pub mod npy;
mod resident;
pub mod sampler;
pub mod shard;
pub mod stream;

pub use config::DataSource;
pub use datasets::{load, Batch, DataConfig, Dataset, Split, Task, FASHION_CLASSES};
pub use fetch::{fetch, FetchReport};
pub use groups::{CoarseGroups, COARSE_NAMES};
pub use sampler::{shares, split, EpochCoverage, Sampler, SamplerState, MAX_ATTEMPTS};
pub use shard::{epoch_order, steps_per_epoch};
pub use stream::{Examples, Pixels};

/// Examples per class and split, with totals (`d2nn data info`). `fashion-hier` also gets its coarse
/// groups.
pub fn info_table(ds: &Dataset) -> String {
    let splits = [("train", &ds.train), ("val", &ds.val), ("test", &ds.test)];
    let [c, h, w] = ds.input_shape;
    let mut out =
        format!("task {}: {} classes, {} coarse groups, input {c}x{h}x{w}\n", ds.task, ds.num_classes, ds.num_coarse);
    let counts: Vec<Vec<usize>> = splits.iter().map(|(_, s)| s.class_counts(ds.num_classes)).collect();
    table(&mut out, "class", &ds.class_names, &splits.map(|(n, _)| n), &counts);
    if ds.task == Task::FashionHier {
        out.push('\n');
        let names = &ds.coarse_names;
        let counts: Vec<Vec<usize>> = splits.iter().map(|(_, s)| s.coarse_counts(ds.num_coarse)).collect();
        table(&mut out, "coarse group", names, &splits.map(|(n, _)| n), &counts);
    }
    out
}

/// `counts[split][row]`, one column per split, a total row at the bottom.
fn table(out: &mut String, head: &str, rows: &[String], cols: &[&str], counts: &[Vec<usize>]) {
    let name_w = rows.iter().map(|r| r.len()).chain([head.len(), 5]).max().unwrap_or(5);
    let num_w = 7;
    out.push_str(&format!("{head:<name_w$}"));
    for c in cols {
        out.push_str(&format!(" | {c:>num_w$}"));
    }
    out.push('\n');
    out.push_str(&"-".repeat(name_w + cols.len() * (num_w + 3)));
    out.push('\n');
    for (i, name) in rows.iter().enumerate() {
        out.push_str(&format!("{name:<name_w$}"));
        for col in counts {
            out.push_str(&format!(" | {:>num_w$}", col.get(i).copied().unwrap_or(0)));
        }
        out.push('\n');
    }
    out.push_str(&format!("{:<name_w$}", "total"));
    for col in counts {
        out.push_str(&format!(" | {:>num_w$}", col.iter().sum::<usize>()));
    }
    out.push('\n');
}

/// The data directory tests read: `$D2NN_DATA_DIR`, else `<workspace>/data`.
#[cfg(test)]
pub(crate) fn test_data_dir() -> std::path::PathBuf {
    std::env::var_os("D2NN_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data"))
}
