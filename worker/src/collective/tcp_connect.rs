//! Forming a TCP ring's connections: the plan's checks, connecting with retries, accepting with a
//! deadline, and refusing connections that fail the handshake (tcp_auth.rs).
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::protocol::RingPlan;

use super::tcp_wire::{io_error, Link};
use super::{CollectiveError, Peer};

/// The neighbour never came: if others tried in its place, say who and why they were refused.
pub(super) fn with_refusals(e: CollectiveError, expected: &Peer, refused: &[String]) -> CollectiveError {
    if refused.is_empty() {
        return e;
    }
    let reason = format!("{e}; refused meanwhile: {}", refused.join("; "));
    CollectiveError::Protocol { peer: expected.clone(), reason }
}

/// Hangs up on a connection that failed the handshake, and says so.
pub(super) fn refuse(refused: &mut Vec<String>, link: &mut Link, e: CollectiveError) {
    tracing::warn!(from = %link.peer.addr, error = %e, "ring connection refused");
    refused.push(format!("{}: {e}", link.peer.addr));
    link.close();
}

pub(super) fn check_plan(plan: &RingPlan) -> Result<(), CollectiveError> {
    let reason = if plan.world == 0 {
        "world 0".to_string()
    } else if plan.addrs.len() != plan.world {
        format!("{} addresses for a world of {}", plan.addrs.len(), plan.world)
    } else if plan.rank >= plan.world {
        format!("rank {} in a world of {}", plan.rank, plan.world)
    } else if u32::try_from(plan.world).is_err() {
        format!("world {} does not fit the wire format", plan.world)
    } else {
        return Ok(());
    };
    Err(CollectiveError::InvalidPlan { reason })
}

/// Connects to `peer`, retrying with a growing pause until `deadline`: its listener may not be
/// bound yet when this rank starts.
pub(super) fn connect_until(peer: &Peer, deadline: Instant) -> Result<TcpStream, CollectiveError> {
    let mut pause = Duration::from_millis(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = left.min(Duration::from_secs(1)).max(Duration::from_millis(1));
        match TcpStream::connect_timeout(&peer.addr, attempt) {
            Ok(stream) => return Ok(stream),
            Err(e) if Instant::now() + pause >= deadline => {
                return Err(io_error(peer, "connecting (retried until the connect timeout) to", e, attempt))
            }
            Err(_) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        }
    }
}

/// Accepts one connection on `listener` before `deadline`; the handshake then checks that it is
/// `expected`. The listener is polled without blocking, because std offers no accept timeout.
pub(super) fn accept_until(
    listener: &TcpListener,
    expected: &Peer,
    deadline: Instant,
    waited: Duration,
) -> Result<(TcpStream, SocketAddr), CollectiveError> {
    let listen_error = |e| io_error(expected, "listening for", e, waited);
    listener.set_nonblocking(true).map_err(listen_error)?;
    let accepted = loop {
        match listener.accept() {
            Ok(pair) => break Ok(pair),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) => {
                if Instant::now() >= deadline {
                    break Err(CollectiveError::Timeout {
                        peer: expected.clone(),
                        during: "waiting for a connection from",
                        waited,
                    });
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => break Err(listen_error(e)),
        }
    };
    listener.set_nonblocking(false).map_err(listen_error)?;
    let (stream, from) = accepted?;
    // Whether an accepted socket inherits the listener's non-blocking mode depends on the OS.
    stream.set_nonblocking(false).map_err(listen_error)?;
    Ok((stream, from))
}
