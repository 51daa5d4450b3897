//! d2nn-common: everything a D2NN is made of, independent of how it is run.
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod exec;
pub mod graph;
pub mod host;
pub mod optim;
pub mod rl;
pub mod rng;
pub mod tfevents;
pub mod train;

pub use error::{Error, Result};
