//! The data layer (in progress): dataset file formats.
pub mod idx;
pub mod npy;
