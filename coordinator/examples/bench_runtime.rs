//! Runtime benchmarks of docs/RESULTS.md until `d2nn bench runtime` exists:
//! `cargo run --release -p d2nn-coordinator --example bench_runtime -- [STEPS] [PER_WORKER_BATCH]`
//! (run from the repository root, with `data/` holding Fashion-MNIST).
use std::path::Path;

use d2nn_common::config::RunConfig;
use d2nn_coordinator::runtime::{bench_local, bench_runtime};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let steps: u64 = args.next().map_or(Ok(40), |s| s.parse())?;
    let batch: usize = args.next().map_or(Ok(64), |s| s.parse())?;
    let file = "configs/high_low.toml";
    let cfg = RunConfig::load(Path::new(file), &[], &[])?;
    let local = bench_local(&cfg, file, batch, 1, steps)?;
    let one = bench_runtime(&cfg, file, 1, batch, 1, steps).await?;
    let two = bench_runtime(&cfg, file, 2, batch, 1, steps).await?;
    println!("high_low, {steps} steps, {batch} examples per worker per step, 1 libtorch thread per worker");
    println!("local loop      : {:8.1} examples/s", local.examples_per_sec);
    println!("runtime 1 worker: {:8.1} examples/s", one.examples_per_sec);
    println!("runtime 2 workers: {:7.1} examples/s", two.examples_per_sec);
    println!("2 vs 1 worker throughput ratio: {:.3}", two.examples_per_sec / one.examples_per_sec);
    println!(
        "runtime (1 worker) overhead vs local: {:+.2} %",
        100.0 * (local.examples_per_sec / one.examples_per_sec - 1.0)
    );
    Ok(())
}
