//! Forming a TCP ring's connections: the plan's checks, connecting with retries, accepting with a
//! deadline, TLS when it is on (tcp_tls.rs), and refusing connections that fail the handshake
//! (tcp_auth.rs).
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::protocol::RingPlan;

use super::tcp::TcpRingOptions;
use super::tcp_auth::{Initiator, Responder, RingKey};
use super::tcp_wire::{io_error, Hello, Link};
use super::{CollectiveError, Peer};

/// A rank's two authenticated links, `(left, right)`: it dials rank + 1 (retrying until
/// `connect_timeout`) and accepts rank − 1 on `listener`, and both prove the cookie (and, with
/// TLS, a certificate from the CA). A connection to the listener that fails either is refused,
/// recorded in `refused`, and the rank waits on for its neighbour.
pub(super) fn join_links(
    listener: &TcpListener,
    plan: &RingPlan,
    options: &TcpRingOptions,
    secret: &[u8],
    refused: &mut Vec<String>,
) -> Result<(Link, Link), CollectiveError> {
    let (rank, world) = (plan.rank, plan.world);
    let deadline = Instant::now() + options.connect_timeout;
    let (timeout, tls) = (options.io_timeout, options.tls.as_ref());
    let hello = Hello { rank: rank as u32, world: world as u32 };
    let key = RingKey::new(secret, &plan.session);
    let right_peer = Peer { rank: (rank + 1) % world, addr: plan.addrs[(rank + 1) % world] };
    let left_peer = Peer { rank: (rank + world - 1) % world, addr: plan.addrs[(rank + world - 1) % world] };
    let dial = || -> Result<(Link, Initiator), CollectiveError> {
        let stream = connect_until(&right_peer, deadline)?;
        let mut link = match tls {
            Some(tls) => Link::with_tls(stream, right_peer.clone(), timeout, tls, true)?,
            None => Link::new(stream, right_peer.clone(), timeout)?,
        };
        let initiator = Initiator::start(&mut link, hello)?;
        Ok((link, initiator))
    };
    let accept = |refused: &mut Vec<String>| -> Result<(Link, Responder), CollectiveError> {
        loop {
            let (stream, from) = accept_until(listener, &left_peer, deadline, options.connect_timeout)
                .map_err(|e| with_refusals(e, &left_peer, refused))?;
            let peer = Peer { rank: left_peer.rank, addr: from };
            let mut link = match tls {
                Some(tls) => match Link::with_tls(stream, peer, timeout, tls, false) {
                    Ok(link) => link,
                    Err(e) => {
                        record_refusal(refused, from, e);
                        continue;
                    }
                },
                None => Link::new(stream, peer, timeout)?,
            };
            match Responder::answer(&mut link, hello, world, &key) {
                Ok(responder) => return Ok((link, responder)),
                Err(e) => refuse(refused, &mut link, e),
            }
        }
    };
    let ((mut right, initiator), mut pending) = match tls {
        // Connect and greet before accepting, and read the right neighbour's answer after
        // answering the left one: a connection completes in the peer's backlog before it accepts,
        // and each message fits in the socket buffer, so no rank waits on one that is itself
        // waiting.
        None => {
            let right = dial()?;
            (right, accept(refused)?)
        }
        // A TLS handshake is a conversation: a rank that dialled to the end before accepting
        // would wait for a neighbour that is itself dialling. Dial (and greet) on another thread
        // while this one accepts; the dial's error comes first, as it names the cause.
        Some(_) => std::thread::scope(|scope| {
            let dialling = scope.spawn(dial);
            let accepted = accept(refused);
            let right = dialling.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            Ok::<_, CollectiveError>((right, accepted?))
        })?,
    };
    initiator.finish(&mut right, world, &key)?;
    let left = loop {
        let (mut link, responder) = pending;
        match responder.finish(&mut link, &key) {
            Ok(()) => break link,
            Err(e) => {
                refuse(refused, &mut link, e);
                pending = accept(refused)?;
            }
        }
    };
    Ok((left, right))
}

/// The neighbour never came: if others tried in its place, say who and why they were refused.
fn with_refusals(e: CollectiveError, expected: &Peer, refused: &[String]) -> CollectiveError {
    if refused.is_empty() {
        return e;
    }
    let reason = format!("{e}; refused meanwhile: {}", refused.join("; "));
    CollectiveError::Protocol { peer: expected.clone(), reason }
}

/// Hangs up on a connection that failed the handshake, and says so.
fn refuse(refused: &mut Vec<String>, link: &mut Link, e: CollectiveError) {
    record_refusal(refused, link.peer.addr, e);
    link.close();
}

/// Says why a connection from `from` was refused (it is closed by then).
fn record_refusal(refused: &mut Vec<String>, from: SocketAddr, e: CollectiveError) {
    tracing::warn!(%from, error = %e, "ring connection refused");
    refused.push(format!("{from}: {e}"));
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
fn connect_until(peer: &Peer, deadline: Instant) -> Result<TcpStream, CollectiveError> {
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
fn accept_until(
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
