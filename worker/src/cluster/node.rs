//! A process on the cluster: its ractor_cluster node server, the events of its sessions with
//! peers, and the worker process's whole life (`d2nn worker`): connect to the coordinator,
//! authenticate, serve generations of replicas, and exit when the coordinator says so or is gone.
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{ClientConnectErr, IncomingEncryptionMode, NodeEventSubscription, NodeServer, NodeServerMessage};
use tokio::sync::mpsc;

use super::joiner::{Joiner, JoinerArgs, JoinerOptions};
use super::tls_listener;
use crate::protocol::cookie::ClusterCookie;
use crate::protocol::Finish;
use crate::tls::{explain_io, TlsConfig};

/// Largest cluster frame a node accepts: control messages are at most
/// `protocol::wire::MAX_MESSAGE_BYTES` (1 MiB) plus framing; a peer announcing more is dropped
/// before anything is allocated.
pub const MAX_FRAME_BYTES: u64 = 4 << 20;

/// ractor_cluster's node identifier (one per session with a peer).
pub type NodeId = u64;

/// What happened to a session with a peer node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    Opened {
        node: NodeId,
        peer: String,
    },
    /// The peer presented the right cookie and exchanged state: its actors are reachable.
    Ready {
        node: NodeId,
        peer: String,
    },
    Disconnected {
        node: NodeId,
        peer: String,
        authenticated: bool,
    },
}

/// Forwards a node server's events to a channel (the callbacks are synchronous).
struct EventForwarder {
    tx: mpsc::UnboundedSender<NodeEvent>,
    /// Sessions that authenticated: a disconnect of any other one is a failed handshake.
    authenticated: std::sync::Mutex<HashSet<NodeId>>,
}

impl NodeEventSubscription for EventForwarder {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        let _ = self.tx.send(NodeEvent::Opened { node: ses.node_id, peer: ses.peer_addr });
    }

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let authenticated = self.authenticated.lock().map(|mut s| s.remove(&ses.node_id)).unwrap_or(false);
        // Stubs of the peer's actors outlive its process; stop them so process groups and
        // supervisors see the peer leave (ractor_cluster does not).
        forget_node(ses.node_id);
        let _ = self.tx.send(NodeEvent::Disconnected { node: ses.node_id, peer: ses.peer_addr, authenticated });
    }

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        if let Ok(mut s) = self.authenticated.lock() {
            s.insert(ses.node_id);
        }
    }

    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        let _ = self.tx.send(NodeEvent::Ready { node: ses.node_id, peer: ses.peer_addr });
    }
}

/// Stops every remote actor stub of `node` in every process group.
pub fn forget_node(node: NodeId) {
    for scope in ractor::pg::which_scopes() {
        for group in ractor::pg::which_scoped_groups(&scope) {
            for cell in ractor::pg::get_scoped_members(&scope, &group) {
                let id = cell.get_id();
                if !id.is_local() && id.node() == node {
                    cell.stop(Some("node_down".into()));
                }
            }
        }
    }
}

/// This host's name as peers and logs should see it.
pub fn host_name() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into())
}

/// A started node server and the stream of its session events.
pub struct ClusterNode {
    pub server: ActorRef<NodeServerMessage>,
    pub events: mpsc::UnboundedReceiver<NodeEvent>,
}

impl ClusterNode {
    /// Starts a node server on `listen` (port 0: any free port) with `cookie`, accepting only TLS
    /// sessions with a certificate from the CA when `tls` is given. Peers connect only to the nodes
    /// they are told of (isolated mode): workers never meet each other here.
    pub async fn start(
        name: String,
        listen: IpAddr,
        port: u16,
        cookie: &ClusterCookie,
        tls: Option<&TlsConfig>,
    ) -> Result<ClusterNode, NodeError> {
        // Under TLS the public port is tls_listener's; the node server's own listener stays on
        // loopback (and in TLS mode) and receives the sessions that passed.
        let (encryption, server_listen, server_port) = match tls {
            Some(tls) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.server());
                (Some(IncomingEncryptionMode::Tls(acceptor)), IpAddr::from([127, 0, 0, 1]), 0)
            }
            None => (None, listen, port),
        };
        let server = NodeServer::new(
            server_port,
            cookie.secret().to_string(),
            name,
            host_name(),
            encryption,
            Some(ractor_cluster::node::NodeConnectionMode::Isolated),
        )
        .with_listen_addr(server_listen)
        .with_max_inbound_frame_size(MAX_FRAME_BYTES);
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| NodeError::Start { message: format!("{listen}:{port}: {e}") })?;
        if let Some(tls) = tls {
            if let Err(e) = tls_listener::bind(SocketAddr::new(listen, port), tls, server.clone()).await {
                server.stop(None);
                return Err(NodeError::Start { message: format!("{listen}:{port}: {e}") });
            }
        }
        let (tx, events) = mpsc::unbounded_channel();
        let forward = EventForwarder { tx, authenticated: Default::default() };
        server
            .cast(NodeServerMessage::SubscribeToEvents { id: "d2nn".into(), subscription: Box::new(forward) })
            .map_err(|e| NodeError::Start { message: e.to_string() })?;
        Ok(ClusterNode { server, events })
    }

    pub fn stop(&self) {
        self.server.stop(None);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot start the cluster node: {message}")]
    Start { message: String },
    #[error("cannot reach the coordinator at {addr} within {waited:?}: {message}")]
    Unreachable { addr: String, waited: Duration, message: String },
    #[error("the coordinator at {addr} did not accept this worker within {waited:?}: {hint}")]
    NotAuthenticated { addr: String, waited: Duration, hint: &'static str },
    /// The TLS handshake with the coordinator failed: its certificate or this worker's was
    /// refused, or only one end has TLS on. Not retried: waiting does not change a certificate.
    #[error("the TLS session with the coordinator at {addr} failed: {message}")]
    Tls { addr: String, message: String },
    #[error("lost the coordinator at {addr} ({peer} disconnected) before the run ended")]
    CoordinatorLost { addr: String, peer: String },
    #[error("the run failed: {message}")]
    RunFailed { message: String },
    /// Not a failure: the process was asked to stop (a signal) and left the run.
    #[error("left the run ({why})")]
    Left { why: String },
}

/// How a worker process finds its coordinator.
#[derive(Debug, Clone)]
pub struct WorkerNodeOptions {
    /// `host:port` of the coordinator's node server.
    pub join: String,
    pub cookie: ClusterCookie,
    /// Mutual TLS for the session with the coordinator and for the ring (`--tls-*`).
    pub tls: Option<TlsConfig>,
    pub joiner: JoinerOptions,
    /// How long to retry connecting: the coordinator may start after its workers.
    pub connect_timeout: Duration,
    /// How long the handshake may take once connected (a wrong cookie shows as no ready event).
    pub auth_timeout: Duration,
}

/// Runs a worker process until the coordinator ends the run, or `leave` resolves (a signal: the
/// worker abandons its step and leaves; closing its session tells the coordinator at once): Ok with
/// the closing message, or why this worker could not take part.
pub async fn run_worker_node(
    options: WorkerNodeOptions,
    leave: impl std::future::Future<Output = String>,
) -> Result<String, NodeError> {
    let name = format!("d2nn-worker-{}", std::process::id());
    let tls = options.tls.as_ref();
    let mut node = ClusterNode::start(name, IpAddr::from([127, 0, 0, 1]), 0, &options.cookie, tls).await?;
    let (finished_tx, mut finished) = mpsc::unbounded_channel();
    let (joiner, _) = Actor::spawn(
        None,
        Joiner,
        JoinerArgs {
            options: options.joiner.clone(),
            cookie: options.cookie.clone(),
            tls: options.tls.clone(),
            finished: finished_tx,
        },
    )
    .await
    .map_err(|e| NodeError::Start { message: format!("joiner: {e}") })?;
    let result = tokio::select! {
        result = serve(&mut node, &options, &mut finished) => result,
        why = leave => Err(NodeError::Left { why }),
    };
    // The joiner stops its replica and waits for its engine thread: the process must not exit
    // while a replica thread is inside libtorch.
    let _ = joiner.stop_and_wait(None, Some(Duration::from_secs(20))).await;
    node.stop();
    result
}

async fn serve(
    node: &mut ClusterNode,
    options: &WorkerNodeOptions,
    finished: &mut mpsc::UnboundedReceiver<Finish>,
) -> Result<String, NodeError> {
    let addr = options.join.clone();
    let started = Instant::now();
    let mut failed_handshakes = 0;
    loop {
        let connected = match &options.tls {
            Some(tls) => {
                let connector = tokio_rustls::TlsConnector::from(tls.client());
                let connect = ractor_cluster::client_connect_enc(
                    &node.server,
                    addr.as_str(),
                    connector,
                    TlsConfig::server_name(),
                );
                // A peer that accepts and never answers must not hold the worker forever.
                match tokio::time::timeout(tls_listener::HANDSHAKE_TIMEOUT, connect).await {
                    Ok(connected) => connected,
                    Err(_) => Err(ClientConnectErr::Encryption(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no TLS handshake within {:?}", tls_listener::HANDSHAKE_TIMEOUT),
                    ))),
                }
            }
            None => ractor_cluster::client_connect(&node.server, addr.as_str()).await,
        };
        match connected {
            Ok(()) => break,
            Err(ClientConnectErr::Encryption(e)) => {
                // A refused certificate is final; a handshake cut short is retried a little (the
                // coordinator may be restarting), then blamed on TLS being off at its end.
                failed_handshakes += 1;
                if let Some(message) = explain_io(&e) {
                    return Err(NodeError::Tls { addr, message });
                }
                if failed_handshakes >= MAX_FAILED_HANDSHAKES {
                    let message = format!(
                        "{e} ({failed_handshakes} times): is TLS on at the coordinator too (--tls-cert, --tls-key, --tls-ca)?"
                    );
                    return Err(NodeError::Tls { addr, message });
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) if started.elapsed() < options.connect_timeout => {
                tracing::debug!(%addr, error = %e, "coordinator not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(NodeError::Unreachable { addr, waited: options.connect_timeout, message: e.to_string() })
            }
        }
    }
    let coordinator = wait_ready(node, &addr, options.auth_timeout, options.tls.is_some()).await?;
    tracing::info!(%addr, tls = options.tls.is_some(), "joined the coordinator; waiting for an assignment");
    loop {
        tokio::select! {
            finish = finished.recv() => {
                return match finish {
                    Some(Finish { ok: true, message }) => Ok(message),
                    Some(Finish { ok: false, message }) => Err(NodeError::RunFailed { message }),
                    None => Err(NodeError::RunFailed { message: "the joiner stopped".into() }),
                };
            }
            event = node.events.recv() => match event {
                Some(NodeEvent::Disconnected { node: id, peer, .. }) if id == coordinator => {
                    // A Finish sent just before the coordinator exits may still be queued.
                    if let Ok(Finish { ok, message }) = finished.try_recv() {
                        return if ok { Ok(message) } else { Err(NodeError::RunFailed { message }) };
                    }
                    return Err(NodeError::CoordinatorLost { addr, peer });
                }
                Some(_) => {}
                None => return Err(NodeError::CoordinatorLost { addr, peer: "node server".into() }),
            }
        }
    }
}

/// TLS handshakes cut short (not a refused certificate) before a worker gives up.
const MAX_FAILED_HANDSHAKES: u32 = 3;

/// The node id of the session that became ready; a session that closes first was refused.
async fn wait_ready(node: &mut ClusterNode, addr: &str, timeout: Duration, tls: bool) -> Result<NodeId, NodeError> {
    // The coordinator closes a session it refuses without saying why; say what can cause it.
    let hint = if tls {
        "the cluster cookie (D2NN_CLUSTER_COOKIE or --cookie-file) must be the same on every peer, and \
         this worker's --tls-cert must be signed by the CA the coordinator trusts (its --tls-ca)"
    } else {
        "the cluster cookie (D2NN_CLUSTER_COOKIE or --cookie-file) must be the same on every peer \
         (and TLS on at both ends or neither: --tls-cert, --tls-key, --tls-ca)"
    };
    let refused = || NodeError::NotAuthenticated { addr: addr.to_string(), waited: timeout, hint };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, node.events.recv()).await {
            Ok(Some(NodeEvent::Ready { node, .. })) => return Ok(node),
            Ok(Some(NodeEvent::Disconnected { .. })) | Ok(None) | Err(_) => return Err(refused()),
            Ok(Some(NodeEvent::Opened { .. })) => {}
        }
    }
}
