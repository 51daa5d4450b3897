//! The TCP ring's wire format and its socket wrapper. Every integer is little-endian; see the
//! "TCP ring" section of `docs/runtime.md` for the layout. Peer bytes are untrusted: a frame is
//! fixed-size, and a payload's length is never read from the wire — each rank derives it from its
//! own buffer length after checking that the sender's length is the same.
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use super::tcp_tls::{TlsStream, Transport};
use super::{CollectiveError, Peer};
use crate::tls::TlsConfig;

// Payloads are the f32 buffers' own bytes, sent without a conversion pass; the format says
// little-endian, so a big-endian host would need one. None is supported today.
#[cfg(target_endian = "big")]
compile_error!("the TCP ring sends f32 values in their in-memory byte order, which must be little-endian");

/// Opens every connection: "not a d2nn ring peer" is caught in the first bytes.
const MAGIC: [u8; 8] = *b"D2NNRING";
/// Bumped whenever the frames below or the handshake change meaning (2: authenticated, tcp_auth.rs).
pub(super) const VERSION: u32 = 2;
pub(super) const HELLO_BYTES: usize = 20;
pub(super) const FRAME_BYTES: usize = 24;

const OP_ALL_REDUCE: u32 = 1;
const OP_BARRIER: u32 = 2;
const OP_ABORT: u32 = 3;

/// The first bytes each side of a connection sends: magic, version, the sender's rank and world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Hello {
    pub rank: u32,
    pub world: u32,
}

impl Hello {
    pub fn encode(self) -> [u8; HELLO_BYTES] {
        let mut out = [0; HELLO_BYTES];
        out[..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&self.rank.to_le_bytes());
        out[16..20].copy_from_slice(&self.world.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8; HELLO_BYTES]) -> Result<Hello, String> {
        if bytes[..8] != MAGIC {
            return Err(format!(
                "handshake: bad magic {:?} (expected {:?}): not a d2nn TCP ring peer",
                String::from_utf8_lossy(&bytes[..8]),
                String::from_utf8_lossy(&MAGIC)
            ));
        }
        let version = le_u32(&bytes[8..12]);
        if version != VERSION {
            return Err(format!("handshake: protocol version {version}, this rank speaks {VERSION}"));
        }
        Ok(Hello { rank: le_u32(&bytes[12..16]), world: le_u32(&bytes[16..20]) })
    }
}

/// Which collective a frame belongs to, so a rank in `barrier` and one in `all_reduce_sum` notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    AllReduce,
    Barrier,
}

/// What travels between two ranks after the handshake, one fixed-size frame at a time:
/// `op u32 | a u32 | seq u64 | b u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Frame {
    /// Step `step` of call number `seq` on a buffer of `len` elements (a = step, b = len); the
    /// sender's segment for this step follows as raw f32.
    Step { op: Op, seq: u64, step: u32, len: u64 },
    /// The sender's call failed because of `culprit` (a = reporter, b = culprit; seq unused).
    Abort { reporter: u32, culprit: u32 },
}

impl Frame {
    pub fn encode(self) -> [u8; FRAME_BYTES] {
        let (op, a, seq, b) = match self {
            Frame::Step { op: Op::AllReduce, seq, step, len } => (OP_ALL_REDUCE, step, seq, len),
            Frame::Step { op: Op::Barrier, seq, step, len } => (OP_BARRIER, step, seq, len),
            Frame::Abort { reporter, culprit } => (OP_ABORT, reporter, 0, u64::from(culprit)),
        };
        let mut out = [0; FRAME_BYTES];
        out[0..4].copy_from_slice(&op.to_le_bytes());
        out[4..8].copy_from_slice(&a.to_le_bytes());
        out[8..16].copy_from_slice(&seq.to_le_bytes());
        out[16..24].copy_from_slice(&b.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8; FRAME_BYTES]) -> Result<Frame, String> {
        let (op, a, seq, b) =
            (le_u32(&bytes[0..4]), le_u32(&bytes[4..8]), le_u64(&bytes[8..16]), le_u64(&bytes[16..24]));
        match op {
            OP_ALL_REDUCE => Ok(Frame::Step { op: Op::AllReduce, seq, step: a, len: b }),
            OP_BARRIER => Ok(Frame::Step { op: Op::Barrier, seq, step: a, len: b }),
            OP_ABORT => {
                let culprit = u32::try_from(b).map_err(|_| format!("abort frame names rank {b}"))?;
                Ok(Frame::Abort { reporter: a, culprit })
            }
            other => Err(format!("unknown frame type {other}")),
        }
    }
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(b);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(b);
    u64::from_le_bytes(a)
}

/// The bytes of an f32 slice, to send without copying.
pub(super) fn f32_bytes(values: &[f32]) -> &[u8] {
    // SAFETY: u8 has alignment 1 and no invalid values; the view covers exactly the slice's bytes
    // and borrows it, so it cannot outlive or alias a mutable borrow.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), std::mem::size_of_val(values)) }
}

/// The bytes of an f32 slice, to receive into without copying.
pub(super) fn f32_bytes_mut(values: &mut [f32]) -> &mut [u8] {
    // SAFETY: as above, and every bit pattern is a valid f32, so whatever a peer writes here leaves
    // the slice valid (at worst NaN, which the sum then carries like any other value).
    unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast(), std::mem::size_of_val(values)) }
}

/// One connection of the ring and the rank at its other end; I/O errors come back naming it.
#[derive(Debug)]
pub(super) struct Link {
    stream: Transport,
    pub peer: Peer,
    /// The read and write timeout in force, reported by [`CollectiveError::Timeout`].
    timeout: Duration,
    /// A write stopped partway through a frame: the peer would misread anything sent after it.
    pub mid_frame: bool,
}

impl Link {
    pub fn new(stream: TcpStream, peer: Peer, timeout: Duration) -> Result<Link, CollectiveError> {
        Link::over(Transport::Plain(stream), peer, timeout)
    }

    fn over(stream: Transport, peer: Peer, timeout: Duration) -> Result<Link, CollectiveError> {
        let mut link = Link { stream, peer, timeout, mid_frame: false };
        // Frames are small writes answered by the peer's next step: Nagle's algorithm would hold
        // them back for a delayed ACK (tens of milliseconds per step).
        link.stream.socket().set_nodelay(true).map_err(|e| link.error("configuring the connection to", e))?;
        link.set_timeout(timeout)?;
        Ok(link)
    }

    /// A link whose bytes travel over TLS, after the handshake within the link's timeout: as the
    /// dialling end (`client`) or the accepting one. A peer whose certificate the CA did not sign
    /// fails here, before it can send a byte of the ring's own handshake.
    pub fn with_tls(
        stream: TcpStream,
        peer: Peer,
        timeout: Duration,
        tls: &TlsConfig,
        client: bool,
    ) -> Result<Link, CollectiveError> {
        let limit = timeout.max(Duration::from_millis(1));
        stream
            .set_nodelay(true)
            .and_then(|()| stream.set_read_timeout(Some(limit)))
            .and_then(|()| stream.set_write_timeout(Some(limit)))
            .map_err(|e| io_error(&peer, "configuring the connection to", e, limit))?;
        let handshake =
            if client { TlsStream::connect(stream, tls.client()) } else { TlsStream::accept(stream, tls.server()) };
        let tls_stream = handshake.map_err(|e| io_error(&peer, "the TLS handshake with", e, limit))?;
        Link::over(Transport::Tls(Box::new(tls_stream)), peer, timeout)
    }

    /// Another handle on the connection, for [`super::tcp::RingBreaker`].
    pub fn stream_handle(&self) -> std::io::Result<TcpStream> {
        self.stream.socket().try_clone()
    }

    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), CollectiveError> {
        // A zero timeout means "block forever" to the OS; keep the guarantee of an answer.
        let timeout = timeout.max(Duration::from_millis(1));
        let socket = self.stream.socket();
        socket
            .set_read_timeout(Some(timeout))
            .and_then(|()| socket.set_write_timeout(Some(timeout)))
            .map_err(|e| self.error("configuring the connection to", e))?;
        self.timeout = timeout;
        Ok(())
    }

    pub fn send(&mut self, bytes: &[u8]) -> Result<(), CollectiveError> {
        self.stream.write_all(bytes).map_err(|e| self.error("sending to", e))
    }

    pub fn recv(&mut self, bytes: &mut [u8]) -> Result<(), CollectiveError> {
        self.stream.read_exact(bytes).map_err(|e| self.error("receiving from", e))
    }

    pub fn send_frame(&mut self, frame: Frame) -> Result<(), CollectiveError> {
        self.send(&frame.encode())
    }

    pub fn recv_frame(&mut self) -> Result<Frame, CollectiveError> {
        let mut bytes = [0; FRAME_BYTES];
        self.recv(&mut bytes)?;
        Frame::decode(&bytes).map_err(|reason| self.protocol(reason))
    }

    /// Best effort, after a failed call: tell the peer why, then close, so a rank blocked on this
    /// connection fails now instead of at its timeout. A frame cut short cannot be followed by
    /// another, so then the connection is only closed.
    pub fn abort(&mut self, frame: Frame) {
        if !self.mid_frame {
            let _ = self.stream.socket().set_write_timeout(Some(self.timeout.min(Duration::from_secs(1))));
            let _ = self.stream.write_all(&frame.encode());
        }
        self.close();
    }

    /// Closes both directions; the peer's next read sees the end of the stream, its next write
    /// fails.
    pub fn close(&mut self) {
        let _ = self.stream.socket().shutdown(Shutdown::Both);
    }

    pub fn protocol(&self, reason: String) -> CollectiveError {
        CollectiveError::Protocol { peer: self.peer.clone(), reason }
    }

    fn error(&self, during: &'static str, e: io::Error) -> CollectiveError {
        io_error(&self.peer, during, e, self.timeout)
    }
}

/// Maps an I/O error with `peer` to the collective's error: a socket timeout reads as
/// `WouldBlock` or `TimedOut` depending on the OS, an orderly close as `UnexpectedEof`.
pub(super) fn io_error(peer: &Peer, during: &'static str, e: io::Error, timeout: Duration) -> CollectiveError {
    let peer = peer.clone();
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            CollectiveError::Timeout { peer, during, waited: timeout }
        }
        io::ErrorKind::UnexpectedEof => CollectiveError::Io {
            peer,
            during,
            kind: e.kind(),
            message: "the connection was closed (the peer exited or gave up)".into(),
        },
        kind => CollectiveError::Io { peer, during, kind, message: e.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_hellos_round_trip_and_junk_is_refused() {
        for frame in [
            Frame::Step { op: Op::AllReduce, seq: 7, step: 3, len: 1 << 40 },
            Frame::Step { op: Op::Barrier, seq: u64::MAX, step: 0, len: 0 },
            Frame::Abort { reporter: 2, culprit: 5 },
        ] {
            assert_eq!(Frame::decode(&frame.encode()), Ok(frame));
        }
        let mut junk = Frame::Abort { reporter: 0, culprit: 1 }.encode();
        junk[0] = 9;
        assert_eq!(Frame::decode(&junk), Err("unknown frame type 9".into()));
        let hello = Hello { rank: 1, world: 4 };
        assert_eq!(Hello::decode(&hello.encode()), Ok(hello));
        let mut old = hello.encode();
        old[8] = 0;
        assert!(Hello::decode(&old).unwrap_err().contains("version 0"));
        assert!(Hello::decode(b"GET / HTTP/1.1\r\nHost").unwrap_err().contains("bad magic"));
    }
}
