//! Measurements built on training and execution: benchmarks whose results the CLI prints.
pub mod exec_bench;
pub mod sweep;
pub mod train_bench;

/// The median of measurements (the upper one of an even count), as every benchmark reports it.
///
/// # Panics
/// On no measurements: every caller takes at least one (its repetitions are at least 1).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
