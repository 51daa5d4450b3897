//! Membership of a multi-process run: a worker process's joiner introduces itself, is assigned a
//! rank for each generation of the cluster, is handed the ring, and is told when the run is over.
//! The coordinator finds joiners in [`JOINERS_GROUP`] and a generation's replicas in
//! [`workers_group`].
use std::net::SocketAddr;

use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use super::replica::{ReplicaSpec, WorkerReply};
use super::Remote;

/// The process group every joiner of a worker process joins.
pub const JOINERS_GROUP: &str = "d2nn.joiners";

/// The process group of the replicas of one generation.
pub fn workers_group(generation: u64) -> String {
    format!("d2nn.workers.g{generation}")
}

/// The joiner actor's messages (`cluster::joiner`).
#[derive(RactorClusterMessage)]
pub enum JoinerMsg {
    #[rpc]
    Hello(RpcReplyPort<Remote<WorkerHello>>),
    /// A heartbeat: the reply echoes the number.
    #[rpc]
    Ping(u64, RpcReplyPort<u64>),
    /// Retires any replica, binds the ring listener, answers where it listens.
    #[rpc]
    Prepare(Remote<Assignment>, RpcReplyPort<Remote<WorkerReply<Prepared>>>),
    /// Joins the collective of the plan and starts the replica; answers once it is built.
    #[rpc]
    Start(Remote<StartPlan>, RpcReplyPort<Remote<WorkerReply<()>>>),
    /// Stops the replica of that generation (it is being replaced).
    Retire(u64),
    /// A peer of that generation was lost: break its ring so a replica blocked in a reduction
    /// returns now, not after the ring's timeouts.
    Abandon(u64),
    /// The run is over for this process.
    Finish(Remote<Finish>),
}

/// Coordinator → a worker process, before every generation of the cluster: the rank it will
/// hold, the run it belongs to, and where its replica starts from. The worker binds its ring
/// listener and answers with the address ([`Prepared`]); the ring itself comes with [`RingPlan`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// Counts the cluster's membership changes; messages of an older generation are refused.
    pub generation: u64,
    pub replica: Box<ReplicaSpec>,
}

/// A worker's answer to an [`Assignment`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prepared {
    pub generation: u64,
    /// Where its ring listener accepts rank − 1. An unspecified IP (`0.0.0.0`) is replaced by the
    /// address the coordinator sees the worker's node at.
    pub ring_addr: SocketAddr,
    /// A fresh NCCL unique id when the replica lives on a GPU and libnccl loads: the coordinator
    /// hands rank 0's to every rank when all of them offered one.
    pub nccl_id: Option<Vec<u8>>,
}

/// Coordinator → every worker of a generation: how the ranks reduce gradients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartPlan {
    pub generation: u64,
    /// The TCP ring (CPU replicas), always sent: it names the members.
    pub ring: RingPlan,
    /// NCCL instead of the ring when every rank is on a GPU.
    pub nccl_id: Option<Vec<u8>>,
}

/// A worker process introducing itself to the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerHello {
    /// Host, process id and device, for logs and errors.
    pub label: String,
    /// The rank it asked for (`--rank`, `$RANK`); ranks are assigned in this order, then by arrival.
    pub preferred_rank: Option<usize>,
}

/// Coordinator → a worker process: the run is over for it; it exits with this status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finish {
    pub ok: bool,
    pub message: String,
}

/// Coordinator → every CPU worker of a multi-process run: who is in the TCP ring that all-reduces
/// the gradients, and where each rank listens. Each worker binds its listen socket first and reports
/// the address; the coordinator sends every worker the same `addrs` (index = rank) and its own
/// `rank`. Rank r connects to rank r + 1 and accepts rank r − 1 (mod `world`). A plan comes from
/// the network: the worker validates it (`TcpRing::connect`) before using it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingPlan {
    pub rank: usize,
    pub world: usize,
    pub addrs: Vec<SocketAddr>,
}
