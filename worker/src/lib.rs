//! d2nn-worker: everything that runs a replica and everything that crosses a process boundary.
//!
//! - [`protocol`]: every message between the coordinator, the replicas and the worker processes,
//!   and how it is encoded; the coordinator depends on this crate for it.
//! - [`replica`]: one rank: an actor that speaks the step protocol and an engine thread that owns
//!   the model replica, optimizer, dataset and collective (libtorch compute and the blocking
//!   collective stay off the async runtime's threads; a `!Send` NCCL communicator can live there).
//! - [`collective`]: all-reduce over shared memory, a TCP ring, or NCCL.
//! - [`cluster`]: a worker process's node and its joiner, which serves generations of replicas.
//! - [`tls`]: the optional mutual TLS of both planes (`--tls-cert`, `--tls-key`, `--tls-ca`).
pub mod cluster;
pub mod collective;
mod error;
pub mod protocol;
pub mod replica;
pub mod tls;

pub use error::Error;
