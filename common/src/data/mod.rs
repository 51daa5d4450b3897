//! The data layer (in progress): dataset file formats, epoch order and sharding.
pub mod idx;
pub mod npy;
pub mod shard;
