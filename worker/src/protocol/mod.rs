//! The control plane: every message the coordinator, the replicas and the worker processes'
//! joiners exchange, and how they cross a process boundary. Plain serde structs, so the same
//! messages travel inside one process (ractor, nothing encoded) and between processes
//! (ractor_cluster, bincode with a size limit). Gradients never travel here: they go through a
//! collective. `docs/runtime.md` has the state machine.
//!
//! - [`step`]: one training step (order, report, commit or abort, acknowledgement);
//! - [`replica`]: what a replica is built from, and the replica actor's messages;
//! - [`membership`]: joining a multi-process run, generations, the ring, the end;
//! - [`remote`], [`wire`]: decoding a peer's bytes without panicking; [`cookie`]: the shared secret.
pub mod cookie;
pub mod membership;
pub mod remote;
pub mod replica;
pub mod step;
pub mod wire;

pub use membership::{
    workers_group, Assignment, Finish, JoinerMsg, Prepared, RingPlan, StartPlan, WorkerHello, JOINERS_GROUP,
};
pub use remote::Remote;
pub use replica::{EvalRequest, Port, ReplicaSpec, SaveRequest, WorkerInfo, WorkerMsg, WorkerReply};
pub use step::{Abort, Acknowledged, Commit, ParamDigest, StepOrder, StepOutcome, StepReport};
