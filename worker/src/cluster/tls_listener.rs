//! The cluster port under TLS (`--tls-*`): accepts connections, runs each TLS handshake on its own
//! task within a deadline, logs every refusal naming the peer, and hands the sessions that proved
//! a certificate from the CA to the node server.
//!
//! ractor_cluster's own TLS listener is not used on the public port: it runs each handshake inline
//! in its accept loop without a deadline (a peer that connects and sends nothing would stall every
//! later worker), and its refusal log does not say who was refused. The node server itself then
//! listens on 127.0.0.1 only, still in TLS mode, so nothing reaches it without a certificate.
use std::net::SocketAddr;
use std::time::Duration;

use ractor::{ActorRef, ActorStatus};
use ractor_cluster::{NetworkStream, NodeServerMessage};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::tls::{explain_io, TlsConfig};

/// Longest a connection may take to complete its TLS handshake before it is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the accept loop checks that the node server still runs.
const POLL: Duration = Duration::from_millis(500);

/// Binds `addr` (an error here is the caller's to report) and serves it until `server` stops.
pub async fn bind(
    addr: SocketAddr,
    tls: &TlsConfig,
    server: ActorRef<NodeServerMessage>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(tls.server());
    tokio::spawn(serve(listener, acceptor, server, HANDSHAKE_TIMEOUT));
    Ok(bound)
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor, server: ActorRef<NodeServerMessage>, limit: Duration) {
    loop {
        if matches!(server.get_status(), ActorStatus::Stopping | ActorStatus::Stopped) {
            return;
        }
        let accepted = match tokio::time::timeout(POLL, listener.accept()).await {
            Err(_) => continue,
            Ok(accepted) => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::spawn(handshake(stream, peer, acceptor.clone(), server.clone(), limit));
            }
            Err(e) => {
                // Out of file descriptors and the like: say so, and do not spin.
                tracing::warn!(error = %e, "cluster listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Why a connection to the cluster port was dropped before its session began.
fn refusal(peer: SocketAddr, e: &std::io::Error) -> String {
    let why = explain_io(e).unwrap_or_else(|| format!("TLS handshake failed: {e}"));
    format!("cluster connection from {peer} refused: {why}")
}

async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    server: ActorRef<NodeServerMessage>,
    limit: Duration,
) {
    let _ = stream.set_nodelay(true);
    let local = match stream.local_addr() {
        Ok(local) => local,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cluster connection dropped");
            return;
        }
    };
    let started = tokio::time::Instant::now();
    let no_handshake = || format!("cluster connection from {peer} refused: no TLS handshake within {limit:?}");
    // A connection that closes before sending a byte is a port probe (a kubelet's or a test's
    // tcpSocket check), not a refused peer: no warning for it.
    let mut first = [0u8; 1];
    match tokio::time::timeout(limit, stream.peek(&mut first)).await {
        Ok(Ok(0)) => {
            tracing::debug!(%peer, "cluster connection closed before sending anything (a port probe)");
            return;
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(%peer, "{}", refusal(peer, &e));
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "{}", no_handshake());
            return;
        }
    }
    match tokio::time::timeout(limit.saturating_sub(started.elapsed()), acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            tracing::debug!(%peer, "cluster connection: TLS handshake complete");
            let stream = Box::new(NetworkStream::TlsServer { peer_addr: peer, local_addr: local, stream });
            let _ = server.cast(NodeServerMessage::ConnectionOpened { stream, is_server: true });
        }
        Ok(Err(e)) => tracing::warn!(%peer, "{}", refusal(peer, &e)),
        Err(_) => tracing::warn!(%peer, "{}", no_handshake()),
    }
}
