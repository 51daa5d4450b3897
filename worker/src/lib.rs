//! d2nn-worker: the worker actor and the collectives it all-reduces gradients with.
//!
//! A worker is two halves: an actor ([`actor::WorkerActor`]) that speaks the control protocol of
//! `d2nn_common::protocol`, and an engine thread ([`engine`]) that owns the model replica, the
//! optimizer, the dataset and the collective. libtorch compute and the blocking collective stay off
//! the async runtime's threads, and a `!Send` communicator (NCCL) can live on the engine thread.
//! In a worker process of a multi-node run, a [`joiner::Joiner`] speaks for the process and starts
//! one replica per generation of the cluster ([`node`]).
pub mod actor;
pub mod collective;
pub mod engine;
mod error;
pub mod flat;
pub mod joiner;
pub mod node;

pub use actor::{Port, WorkerActor, WorkerArgs, WorkerMsg, WorkerReply};
pub use engine::{EngineHandle, EvalRequest, SaveRequest, WorkerInfo, WorkerOptions, WorkerSpec};
pub use error::Error;
