//! d2nn-common: everything a D2NN is made of, independent of how it is run.
pub mod data;
pub mod error;
pub mod optim;
pub mod rng;
pub mod rl;

pub use error::{Error, Result};
