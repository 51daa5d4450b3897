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
    /// A heartbeat: the reply echoes the number. (Every payload is a `Remote`: ractor's own
    /// decoder of a bare u64 panics on a short payload from a peer.)
    #[rpc]
    Ping(Remote<u64>, RpcReplyPort<Remote<u64>>),
    /// Retires any replica, binds the ring listener, answers where it listens.
    #[rpc]
    Prepare(Remote<Assignment>, RpcReplyPort<Remote<WorkerReply<Prepared>>>),
    /// Joins the collective of the plan and starts the replica; answers once it is built.
    #[rpc]
    Start(Remote<StartPlan>, RpcReplyPort<Remote<WorkerReply<()>>>),
    /// Stops the replica of that generation (it is being replaced).
    Retire(Remote<u64>),
    /// A peer of that generation was lost: break its ring so a replica blocked in a reduction
    /// returns now, not after the ring's timeouts.
    Abandon(Remote<u64>),
    /// The run is over for this process.
    Finish(Remote<Finish>),
}

#[cfg(test)]
mod tests {
    use ractor::message::SerializedMessage;
    use ractor::Message;

    use super::*;

    /// One argument as the derived encoding frames it: its length (u64, big-endian), then its bytes.
    fn framed(data: &[u8]) -> Vec<u8> {
        let mut out = (data.len() as u64).to_be_bytes().to_vec();
        out.extend_from_slice(data);
        out
    }

    /// What a peer could send: every variant with a payload cut short or padded, framed as the
    /// derive frames it, or not framed at all. Decoding must give an error or a message, never a
    /// panic (a bare `u64` argument panicked on a 2-byte payload).
    #[tokio::test]
    async fn short_or_long_payloads_of_every_variant_decode_without_panicking() {
        let payloads = [vec![], vec![1], framed(&[1, 2]), framed(&[0xFF; 40]), framed(&[]), vec![0xFF; 40]];
        for variant in ["Ping", "Retire", "Abandon", "Prepare", "Start", "Finish", "Hello"] {
            for args in &payloads {
                let cast = SerializedMessage::Cast { variant: variant.into(), args: args.clone(), metadata: None };
                let _ = JoinerMsg::deserialize(cast);
                let (tx, _rx) = ractor::concurrency::oneshot();
                let call = SerializedMessage::Call {
                    variant: variant.into(),
                    args: args.clone(),
                    reply: tx.into(),
                    metadata: None,
                };
                let _ = JoinerMsg::deserialize(call);
            }
        }
        // A well-formed message still arrives as itself.
        let bytes = framed(&ractor::BytesConvertable::into_bytes(Remote::new(7u64)));
        let cast = SerializedMessage::Cast { variant: "Retire".into(), args: bytes, metadata: None };
        match JoinerMsg::deserialize(cast) {
            Ok(JoinerMsg::Retire(g)) => assert_eq!(g.into_inner(), Ok(7)),
            _ => panic!("a well-formed Retire did not decode"),
        }
    }
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
    /// Names this ring (the run and its generation): every connection's handshake is bound to it.
    pub session: String,
}
