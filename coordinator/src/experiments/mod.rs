//! Measurements built on training and execution: benchmarks whose results the CLI prints.
pub mod exec_bench;
pub mod sweep;
