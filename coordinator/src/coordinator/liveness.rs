//! Which worker processes are alive, as the coordinator sees it: session events of its node
//! server plus heartbeats (ractor's own ping never times out). A node declared lost never comes
//! back in the run; waiters learn of it through a watch channel.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use d2nn_worker::cluster::node::{NodeEvent, NodeId};
use d2nn_worker::protocol::{JoinerMsg, Remote};
use ractor::rpc::CallResult;
use tokio::sync::watch;

use super::cluster::{remote_joiners, ClusterOptions};

/// The cluster as the coordinator sees it: sessions by node, and the nodes it gave up on.
#[derive(Debug, Default)]
pub(super) struct View {
    /// Address of each ready peer node (the IP its ring listener is reached at).
    pub(super) peers: HashMap<NodeId, String>,
    /// Lost nodes and why: a lost node never comes back in this run.
    pub(super) lost: HashMap<NodeId, String>,
    /// When each node last answered a heartbeat.
    pub(super) last_seen: HashMap<NodeId, Instant>,
}

/// A shared, watched [`View`].
#[derive(Clone)]
pub(super) struct Liveness {
    pub(super) view: Arc<Mutex<View>>,
    pub(super) changed: watch::Receiver<u64>,
}

impl Liveness {
    pub(super) fn with<T>(&self, f: impl FnOnce(&View) -> T) -> T {
        match self.view.lock() {
            Ok(v) => f(&v),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    pub(super) fn lost_reason(&self, node: NodeId) -> Option<String> {
        self.with(|v| v.lost.get(&node).cloned())
    }

    /// Resolves when any of `nodes` (index = rank) is lost, with its rank and the reason.
    pub(super) async fn first_lost(&self, nodes: &[NodeId]) -> (usize, String) {
        let mut changed = self.changed.clone();
        loop {
            if let Some(found) = nodes.iter().enumerate().find_map(|(r, n)| self.lost_reason(*n).map(|why| (r, why))) {
                return found;
            }
            if changed.changed().await.is_err() {
                // The monitor is gone: nothing will ever be declared lost again.
                return std::future::pending().await;
            }
        }
    }
}

fn mark_lost(view: &Arc<Mutex<View>>, bump: &watch::Sender<u64>, node: NodeId, why: String) {
    let fresh = match view.lock() {
        Ok(mut v) => {
            v.peers.remove(&node);
            v.lost.insert(node, why.clone()).is_none()
        }
        Err(_) => false,
    };
    if fresh {
        tracing::warn!(node, reason = %why, "worker lost");
        bump.send_modify(|n| *n += 1);
    }
}

/// Session events and heartbeats, until the node server stops.
pub(super) async fn monitor(
    mut node_events: tokio::sync::mpsc::UnboundedReceiver<NodeEvent>,
    view: Arc<Mutex<View>>,
    bump: watch::Sender<u64>,
    options: ClusterOptions,
) {
    let mut tick = tokio::time::interval(options.heartbeat_interval);
    let mut beat = 0u64;
    loop {
        tokio::select! {
            event = node_events.recv() => match event {
                Some(NodeEvent::Opened { peer, .. }) => tracing::debug!(%peer, "connection opened"),
                Some(NodeEvent::Ready { node, peer }) => {
                    tracing::info!(node, %peer, "worker node connected");
                    if let Ok(mut v) = view.lock() {
                        v.peers.insert(node, peer);
                        v.last_seen.insert(node, Instant::now());
                    }
                    bump.send_modify(|n| *n += 1);
                }
                Some(NodeEvent::Disconnected { node, peer, authenticated: true }) => {
                    mark_lost(&view, &bump, node, format!("its process at {peer} disconnected"));
                }
                Some(NodeEvent::Disconnected { peer, authenticated: false, .. }) => {
                    tracing::warn!(%peer, "rejected a peer that did not authenticate (wrong cluster cookie, or not a d2nn node)");
                }
                None => return,
            },
            _ = tick.tick() => {
                beat += 1;
                heartbeat(&view, &bump, beat, &options).await;
            }
        }
    }
}

/// Pings every joiner at once; one that has not answered for `heartbeat_timeout` is lost.
async fn heartbeat(view: &Arc<Mutex<View>>, bump: &watch::Sender<u64>, beat: u64, options: &ClusterOptions) {
    let wait = options.heartbeat_interval;
    let pings: Vec<_> = remote_joiners()
        .into_iter()
        .map(|(node, joiner)| {
            tokio::spawn(async move {
                let answer = joiner.call(|p| JoinerMsg::Ping(Remote::new(beat), p), Some(wait)).await;
                (node, matches!(answer, Ok(CallResult::Success(Remote(Ok(n)))) if n == beat))
            })
        })
        .collect();
    let now = Instant::now();
    for ping in pings {
        let Ok((node, answered)) = ping.await else { continue };
        let overdue = match view.lock() {
            Ok(mut v) if !v.lost.contains_key(&node) => {
                let seen = *v.last_seen.entry(node).or_insert(now);
                if answered {
                    v.last_seen.insert(node, Instant::now());
                    None
                } else {
                    Some(now.saturating_duration_since(seen)).filter(|d| *d >= options.heartbeat_timeout)
                }
            }
            _ => None,
        };
        if let Some(silent) = overdue {
            mark_lost(view, bump, node, format!("no heartbeat answer for {:.1} s", silent.as_secs_f64()));
        }
    }
}
