//! The coordinator's side of a multi-process run: its node server, which worker processes are
//! alive (session events plus heartbeats, since ractor's own ping never times out), and forming a
//! generation: ranks, the ring, and one replica per worker, every replica loading the same
//! checkpoint. A membership change (a worker lost, a replacement joined) ends the generation; the
//! coordinator checkpoints the survivors' committed state and forms the next one from it.
//! Liveness (session events and heartbeats) is in `liveness.rs`.
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use d2nn_worker::cluster::node::{ClusterNode, NodeId};
use d2nn_worker::protocol::cookie::ClusterCookie;
use d2nn_worker::protocol::{
    workers_group, Assignment, Finish, JoinerMsg, Prepared, Remote, ReplicaSpec, RingPlan, StartPlan, WorkerHello,
    WorkerMsg, WorkerReply, JOINERS_GROUP,
};
use d2nn_worker::tls::TlsConfig;
use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
use ractor_cluster::NodeServerMessage;
use tokio::sync::watch;

pub(super) use super::liveness::Liveness;
use super::liveness::{monitor, View};
use super::RuntimeError;

/// How a coordinator runs its cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub listen: SocketAddr,
    pub cookie: ClusterCookie,
    /// Mutual TLS for the worker sessions (`--tls-*`); the workers' ring follows their own flags.
    pub tls: Option<TlsConfig>,
    /// Between two heartbeats of every worker.
    pub heartbeat_interval: Duration,
    /// A worker that has not answered a heartbeat for this long is declared lost.
    pub heartbeat_timeout: Duration,
    /// How long the first generation waits for all its workers (pods may take minutes to schedule).
    pub join_timeout: Duration,
    /// Training continues after a loss while at least this many workers remain.
    pub min_workers: usize,
}

/// The joiners of remote worker processes, by node.
pub(super) fn remote_joiners() -> Vec<(NodeId, ActorRef<JoinerMsg>)> {
    ractor::pg::get_members(&JOINERS_GROUP.to_string())
        .into_iter()
        .filter(|cell| !cell.get_id().is_local())
        .map(|cell| (cell.get_id().node(), ActorRef::<JoinerMsg>::from(cell)))
        .collect()
}

/// One worker process of the current generation.
#[derive(Clone)]
pub(super) struct Member {
    pub node: NodeId,
    pub joiner: ActorRef<JoinerMsg>,
    pub hello: WorkerHello,
}

/// The coordinator's cluster: node server, liveness, and the current generation.
pub(super) struct Cluster {
    pub options: ClusterOptions,
    /// The number of workers asked for.
    pub target: usize,
    /// The node server; its session events go to the monitor.
    server: ActorRef<NodeServerMessage>,
    pub liveness: Liveness,
    pub generation: u64,
    pub members: Vec<Member>,
    monitor: tokio::task::JoinHandle<()>,
    /// Random per coordinator process: with the generation it names each ring, so a ring handshake
    /// recorded in one run or generation is worthless in another.
    session: String,
    /// The run's stop flag (SIGTERM/SIGINT): it also ends a wait for workers, which has no step
    /// in flight to finish (a pod deleted while its workers are Pending must not sit out its grace
    /// period and be killed).
    stop: Option<Arc<AtomicBool>>,
}

/// Awaits an RPC's encoded reply: a worker's error, a lost worker, or a reply that did not decode
/// all become errors naming the worker.
async fn ask<T: Send + 'static>(
    joiner: &ActorRef<JoinerMsg>,
    label: &str,
    what: &str,
    timeout: Duration,
    make: impl FnOnce(RpcReplyPort<Remote<WorkerReply<T>>>) -> JoinerMsg,
) -> Result<T, RuntimeError> {
    let fail = |message: String| RuntimeError::Cluster(format!("worker {label}: {what}: {message}"));
    match joiner.call(make, Some(timeout)).await {
        Ok(CallResult::Success(reply)) => reply.flatten().map_err(fail),
        Ok(CallResult::Timeout) => Err(fail(format!("no answer within {:.0} s", timeout.as_secs_f64()))),
        Ok(CallResult::SenderError) | Err(_) => Err(fail("the worker went away".into())),
    }
}

impl Cluster {
    /// Starts the node server and the monitor. Workers connect whenever they are ready.
    pub async fn start(
        options: ClusterOptions,
        target: usize,
        stop: Option<Arc<AtomicBool>>,
    ) -> Result<Cluster, RuntimeError> {
        let (ip, port, tls) = (options.listen.ip(), options.listen.port(), options.tls.as_ref());
        let ClusterNode { server, events } =
            ClusterNode::start("d2nn-coordinator".into(), ip, port, &options.cookie, tls)
                .await
                .map_err(|e| RuntimeError::Cluster(e.to_string()))?;
        let view = Arc::new(Mutex::new(View::default()));
        let (bump, changed) = watch::channel(0);
        let monitor = tokio::spawn(monitor(events, view.clone(), bump, options.clone()));
        let tls = options.tls.is_some();
        tracing::info!(listen = %options.listen, workers = target, tls, "coordinator listening; waiting for workers");
        Ok(Cluster {
            options,
            target,
            server,
            liveness: Liveness { view, changed },
            generation: 0,
            members: Vec::new(),
            monitor,
            session: d2nn_worker::collective::new_session(),
            stop,
        })
    }

    /// Joiners of live, connected nodes.
    pub fn live_joiners(&self) -> Vec<(NodeId, ActorRef<JoinerMsg>)> {
        let alive: HashSet<NodeId> = self.liveness.with(|v| v.peers.keys().copied().collect());
        remote_joiners().into_iter().filter(|(node, _)| alive.contains(node)).collect()
    }

    /// Whether a worker that is not in the current generation could take part (a replacement).
    pub fn has_newcomer(&self) -> bool {
        self.members.len() < self.target
            && self.live_joiners().iter().any(|(node, _)| self.members.iter().all(|m| m.node != *node))
    }

    pub fn member_nodes(&self) -> Vec<NodeId> {
        self.members.iter().map(|m| m.node).collect()
    }

    pub fn label(&self, rank: usize) -> String {
        self.members.get(rank).map_or_else(|| format!("rank {rank}"), |m| format!("rank {rank} ({})", m.hello.label))
    }

    /// Waits for workers: the first generation for all `target`, later ones for at least
    /// `min_workers` (taking everyone who is there after a short grace period).
    async fn wait_for_workers(&self, first: bool) -> Result<Vec<(NodeId, ActorRef<JoinerMsg>)>, RuntimeError> {
        let started = Instant::now();
        let (need, patience) = if first {
            (self.target, self.options.join_timeout)
        } else {
            (self.options.min_workers.max(1), self.options.heartbeat_timeout * 2)
        };
        let mut changed = self.liveness.changed.clone();
        loop {
            let live = self.live_joiners();
            if self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
                return Err(RuntimeError::Cluster(format!(
                    "stopped on request while waiting for workers ({} of the {need} needed had joined)",
                    live.len()
                )));
            }
            if live.len() >= self.target
                || (!first && live.len() >= need && started.elapsed() >= self.options.heartbeat_interval * 2)
            {
                return Ok(live);
            }
            if started.elapsed() >= patience {
                return Err(RuntimeError::Cluster(format!(
                    "{} of the {need} workers needed joined within {:.0} s",
                    live.len(),
                    patience.as_secs_f64()
                )));
            }
            // pg membership arrives after the ready event: poll as well as watch.
            let _ = tokio::time::timeout(Duration::from_millis(200), changed.changed()).await;
        }
    }

    /// Forms the next generation from `template` (every field but the rank and world) and returns
    /// its replicas in rank order.
    pub async fn form(&mut self, template: &ReplicaSpec) -> Result<Vec<ActorRef<WorkerMsg>>, RuntimeError> {
        let first = self.generation == 0;
        let live = self.wait_for_workers(first).await?;
        self.generation += 1;
        let generation = self.generation;
        let hello_timeout = self.options.heartbeat_timeout;
        let mut candidates = Vec::new();
        for (node, joiner) in live {
            let hello = match joiner.call(JoinerMsg::Hello, Some(hello_timeout)).await {
                Ok(CallResult::Success(Remote(Ok(h)))) => h,
                other => {
                    tracing::warn!(node, answer = ?other.map(|r| r.is_success()), "a worker did not introduce itself; leaving it out");
                    continue;
                }
            };
            candidates.push(Member { node, joiner, hello });
        }
        candidates.sort_by_key(|m| (m.hello.preferred_rank.unwrap_or(usize::MAX), m.node));
        let most = candidates.len().min(self.target);
        let (cfg, file) = (&template.cfg, &template.config_file);
        let world = (1..=most).rev().find(|&w| super::check_world(cfg, file, w).is_ok()).unwrap_or(0);
        if world < self.options.min_workers.max(1) {
            return Err(RuntimeError::Cluster(format!(
                "{} workers available, {} needed (train.batch_size {} must divide among them in whole mini-bags of {})",
                candidates.len(),
                self.options.min_workers.max(1),
                cfg.train.batch_size,
                cfg.train.bag_size
            )));
        }
        for idle in candidates.drain(world..) {
            tracing::warn!(worker = %idle.hello.label, "left out of this generation (the batch must divide among the workers in whole mini-bags)");
        }
        self.members = candidates;
        tracing::info!(generation, world, resume = ?template.resume, "forming a generation");
        let timeout = template.collective_timeout + Duration::from_secs(30);
        let mut prepared: Vec<Prepared> = Vec::with_capacity(world);
        for (rank, m) in self.members.iter().enumerate() {
            let assignment =
                Assignment { generation, replica: Box::new(ReplicaSpec { rank, world, ..template.clone() }) };
            let p = ask(&m.joiner, &m.hello.label, "prepare", timeout, |port| {
                JoinerMsg::Prepare(Remote::new(assignment), port)
            })
            .await?;
            prepared.push(p);
        }
        let addrs = prepared
            .iter()
            .zip(&self.members)
            .map(|(p, m)| self.reachable(p.ring_addr, m.node))
            .collect::<Result<Vec<_>, _>>()?;
        let nccl_id = if prepared.iter().all(|p| p.nccl_id.is_some()) { prepared[0].nccl_id.clone() } else { None };
        // Every rank joins the collective at once: send all starts before awaiting any.
        let mut starts = Vec::with_capacity(world);
        for (rank, m) in self.members.iter().enumerate() {
            let start = StartPlan {
                generation,
                ring: RingPlan {
                    rank,
                    world,
                    addrs: addrs.clone(),
                    session: format!("{}/g{generation}", self.session),
                },
                nccl_id: nccl_id.clone(),
            };
            let joiner = m.joiner.clone();
            let label = m.hello.label.clone();
            starts.push(tokio::spawn(async move {
                ask(&joiner, &label, "start", timeout, |port| JoinerMsg::Start(Remote::new(start), port)).await
            }));
        }
        for s in starts {
            s.await.map_err(|e| RuntimeError::Cluster(format!("start: {e}")))??;
        }
        self.replicas(generation).await
    }

    /// The ring address as the other workers reach it: the node's own address when the worker
    /// listens on every interface.
    fn reachable(&self, addr: SocketAddr, node: NodeId) -> Result<SocketAddr, RuntimeError> {
        if !addr.ip().is_unspecified() {
            return Ok(addr);
        }
        let peer = self.liveness.with(|v| v.peers.get(&node).cloned());
        let ip = peer
            .as_deref()
            .and_then(|p| p.parse::<SocketAddr>().ok())
            .map(|s| s.ip())
            .ok_or_else(|| RuntimeError::Cluster(format!("no address known for worker node {node}")))?;
        Ok(SocketAddr::new(ip, addr.port()))
    }

    /// The replica actors of `generation`, found through their process group, in rank order.
    async fn replicas(&self, generation: u64) -> Result<Vec<ActorRef<WorkerMsg>>, RuntimeError> {
        let group = workers_group(generation);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let by_node: HashMap<NodeId, ActorRef<WorkerMsg>> = ractor::pg::get_members(&group)
                .into_iter()
                .filter(|c| !c.get_id().is_local())
                .map(|c| (c.get_id().node(), ActorRef::from(c)))
                .collect();
            let found: Option<Vec<_>> = self.members.iter().map(|m| by_node.get(&m.node).cloned()).collect();
            if let Some(found) = found {
                return Ok(found);
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::Cluster(format!(
                    "the replicas of generation {generation} did not appear within 30 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Breaks the ring of the current generation on every member still there, so none waits for
    /// the lost one until its timeouts.
    pub fn abandon(&self) {
        for m in &self.members {
            let _ = m.joiner.cast(JoinerMsg::Abandon(Remote::new(self.generation)));
        }
    }

    /// Stops the current generation's replicas (their processes stay, for the next one).
    pub fn retire(&self) {
        for m in &self.members {
            let _ = m.joiner.cast(JoinerMsg::Retire(Remote::new(self.generation)));
        }
    }

    /// Tells every connected worker process that the run is over, then stops the node server.
    pub async fn finish(&self, ok: bool, message: &str) {
        // From here on a disconnect is the end of the run, not a loss.
        self.monitor.abort();
        for (_, joiner) in self.live_joiners() {
            let _ = joiner.cast(JoinerMsg::Finish(Remote::new(Finish { ok, message: message.to_string() })));
        }
        // Let the casts leave before the sessions close.
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.server.stop(None);
    }
}
