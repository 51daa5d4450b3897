//! Ring all-reduce over TCP, for ranks in different processes or hosts.
//!
//! Rank r sends to rank r + 1 and receives from rank r − 1 (mod world), one connection each way.
//! The buffer is split into `world` segments; segment k is `[k·len/world, (k+1)·len/world)`.
//!
//! * **Reduce-scatter**, steps 0 … world − 2: rank r sends segment r − s and adds the partial sum
//!   of segment r − s − 1 that arrives from the left into its own. Segment k's sum is thus built
//!   once, in ring order starting at rank k, `((b_k + b_{k+1}) + …) + b_{k−1}`, and ends on rank
//!   k − 1.
//! * **All-gather**, steps world − 1 … 2·world − 3: rank r sends segment r + 1 − s and stores the
//!   segment r − s that arrives; finished sums are only copied, so every rank ends with the same
//!   bits.
//!
//! Within a step the send runs on a scoped thread while this thread receives, so neither side can
//! block on a full socket buffer waiting for the other; the receive reads `chunk_bytes` at a time
//! and reduces each piece while the rest is in flight.
//!
//! The order differs from [`super::SharedCollective`]'s rank order, so results of the two agree
//! within float rounding, not bit for bit: per element, |ring − rank order| ≤ 2·(world − 1)·2⁻²⁴·
//! Σ_r |b_r| (each order's error is at most (world − 1)·u·Σ|b_r|, u = 2⁻²⁴ for f32).
//!
//! Every connection is authenticated before any gradient byte is read (tcp_auth.rs): a peer must
//! prove it holds the cluster cookie for this ring's session; one that does not is refused, logged,
//! and the rank goes on waiting for its real neighbour. With [`TcpRingOptions::tls`] every link is
//! TLS 1.3 first (tcp_tls.rs), both ends proving a certificate from the run's CA; a peer that
//! cannot is refused the same way.
//!
//! The wire format lives in tcp_wire.rs, the handshake in tcp_auth.rs, connecting and accepting in
//! tcp_connect.rs, the TLS transport in tcp_tls.rs.
use std::net::TcpListener;
use std::ops::Range;
use std::time::Duration;

use crate::protocol::RingPlan;
use crate::tls::TlsConfig;

use super::tcp_connect::{check_plan, join_links};
use super::tcp_wire::{f32_bytes, f32_bytes_mut, Frame, Link, Op};
use super::{Collective, CollectiveError};

/// Default bytes per socket read or write within a step.
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpRingOptions {
    /// Bytes per socket read or write within a step: the unit of reduction while the rest of the
    /// segment is in flight. Rounded down to whole f32 values, at least one.
    pub chunk_bytes: usize,
    /// How long [`TcpRing::connect`] retries its right neighbour and waits for its left one: ranks
    /// may start at different times.
    pub connect_timeout: Duration,
    /// Longest wait for one read or write during the handshake and `all_reduce_sum`. A dead peer is
    /// usually noticed at once (its connections close); this bounds a hung one. `all_reduce_sum`
    /// expects the ranks to arrive within this of each other, which holds after a barrier.
    pub io_timeout: Duration,
    /// Longest wait for one read or write during `barrier`, which absorbs the ranks' differences in
    /// compute time before the all-reduce.
    pub arrival_timeout: Duration,
    /// Mutual TLS under every link (`--tls-*`); None: plain TCP, authenticated by the cookie alone.
    pub tls: Option<TlsConfig>,
}

impl Default for TcpRingOptions {
    fn default() -> Self {
        TcpRingOptions {
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            connect_timeout: Duration::from_secs(30),
            io_timeout: Duration::from_secs(5),
            arrival_timeout: Duration::from_secs(60),
            tls: None,
        }
    }
}

/// The two connections of a rank in a ring of two or more.
#[derive(Debug)]
struct Links {
    /// From rank − 1.
    left: Link,
    /// To rank + 1.
    right: Link,
}

/// One rank of a TCP ring. After a failed call the ring is broken: every later call returns the
/// same error, and the caller rebuilds the group.
#[derive(Debug)]
pub struct TcpRing {
    rank: usize,
    world: usize,
    /// None for a world of one.
    links: Option<Links>,
    options: TcpRingOptions,
    /// The number of the next call; frames carry it, so a rank that skipped a call is caught.
    seq: u64,
    /// Receives one chunk of partial sums before they are added.
    scratch: Vec<f32>,
    failed: Option<CollectiveError>,
    /// Connections refused during the handshake (peers without the cookie), and why.
    refused: Vec<String>,
}

impl TcpRing {
    /// Joins the ring of `plan`: connects to rank + 1 (retrying until `connect_timeout`), accepts
    /// rank − 1 on `listener` (bound by the caller, whose address is `plan.addrs[rank]` as the
    /// others see it), and authenticates both with `secret` (the cluster cookie) and the plan's
    /// session. A connection to the listener that fails the handshake is refused and logged, and
    /// the rank waits on for its neighbour. Every rank calls this at about the same time; the
    /// listener may be reused for a later ring.
    pub fn connect(
        listener: &TcpListener,
        plan: &RingPlan,
        options: TcpRingOptions,
        secret: &[u8],
    ) -> Result<TcpRing, CollectiveError> {
        check_plan(plan)?;
        let (rank, world) = (plan.rank, plan.world);
        let chunk_elems = (options.chunk_bytes / 4).max(1);
        let mut ring =
            TcpRing { rank, world, links: None, options, seq: 0, scratch: Vec::new(), failed: None, refused: vec![] };
        if world == 1 {
            return Ok(ring);
        }
        let (left, right) = join_links(listener, plan, &ring.options, secret, &mut ring.refused)?;
        ring.links = Some(Links { left, right });
        ring.scratch = vec![0.0; chunk_elems];
        Ok(ring)
    }

    /// Connections refused while the ring formed (address and reason): peers that did not prove
    /// they hold the cluster cookie.
    pub fn refused(&self) -> &[String] {
        &self.refused
    }

    /// One call: the frames of every step, or the error that broke the ring.
    fn run(&mut self, op: Op, buf: &mut [f32]) -> Result<(), CollectiveError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let Some(links) = self.links.as_mut() else {
            // The sum over one rank is the buffer itself, bit for bit.
            return Ok(());
        };
        let seq = self.seq;
        self.seq += 1;
        let timeout = match op {
            Op::AllReduce => self.options.io_timeout,
            Op::Barrier => self.options.arrival_timeout,
        };
        let call = Call { op, seq, rank: self.rank, world: self.world };
        let result = links
            .left
            .set_timeout(timeout)
            .and_then(|()| links.right.set_timeout(timeout))
            .and_then(|()| call.run(links, &mut self.scratch, buf));
        if let Err(e) = &result {
            // Tell the right neighbour whom to blame (it forwards the news), then hang up on both:
            // the left one only ever sends to this rank, so closing is all it needs.
            let (reporter, culprit) = match *e {
                CollectiveError::Aborted { reporter, culprit } => (reporter, culprit),
                ref other => (self.rank, other.culprit().unwrap_or(self.rank)),
            };
            links.right.abort(Frame::Abort { reporter: reporter as u32, culprit: culprit as u32 });
            links.left.close();
            self.failed = Some(e.clone());
        }
        result
    }
}

/// One collective call of one rank: which segments move at which step, and the checks on what
/// arrives.
struct Call {
    op: Op,
    seq: u64,
    rank: usize,
    world: usize,
}

/// What to do with a segment that arrives.
#[derive(Clone, Copy)]
enum Combine {
    /// Reduce-scatter: `own = partial + own`.
    Add,
    /// All-gather: a finished sum, copied.
    Store,
}

impl Call {
    fn run(&self, links: &mut Links, scratch: &mut [f32], buf: &mut [f32]) -> Result<(), CollectiveError> {
        let (r, n, len) = (self.rank, self.world, buf.len());
        let segment = |k: usize| k * len / n..(k + 1) * len / n;
        for s in 0..n - 1 {
            let (send, recv) = (segment((r + n - s) % n), segment((r + 2 * n - s - 1) % n));
            self.step(links, scratch, buf, Transfer { step: s, send, recv, combine: Combine::Add })?;
        }
        for s in 0..n - 1 {
            let (send, recv) = (segment((r + 1 + n - s) % n), segment((r + n - s) % n));
            self.step(links, scratch, buf, Transfer { step: n - 1 + s, send, recv, combine: Combine::Store })?;
        }
        Ok(())
    }

    fn step(
        &self,
        links: &mut Links,
        scratch: &mut [f32],
        buf: &mut [f32],
        t: Transfer,
    ) -> Result<(), CollectiveError> {
        let frame = Frame::Step { op: self.op, seq: self.seq, step: t.step as u32, len: buf.len() as u64 };
        let (outgoing, incoming) = disjoint(buf, t.send, t.recv);
        let Links { left, right } = links;
        let (chunk_elems, right_peer) = (scratch.len(), right.peer.clone());
        std::thread::scope(|scope| {
            let sender = std::thread::Builder::new()
                .name("tcp-ring-send".into())
                .spawn_scoped(scope, || send_segment(right, frame, outgoing, chunk_elems))
                .map_err(|e| CollectiveError::Io {
                    peer: right_peer,
                    during: "starting the thread that sends to",
                    kind: e.kind(),
                    message: e.to_string(),
                })?;
            let received = receive_segment(left, frame, incoming, scratch, t.combine);
            let sent = sender.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            // The receive's error first: an abort from the left names the rank really at fault.
            received.and(sent)
        })
    }
}

/// One step of a call: the segment sent to the right and the one received from the left.
struct Transfer {
    step: usize,
    send: Range<usize>,
    recv: Range<usize>,
    combine: Combine,
}

/// `(&buf[read], &mut buf[write])` for two segments that do not overlap (either may be empty).
fn disjoint(buf: &mut [f32], read: Range<usize>, write: Range<usize>) -> (&[f32], &mut [f32]) {
    if read.is_empty() {
        return (&[], &mut buf[write]);
    }
    if read.end <= write.start {
        let (low, high) = buf.split_at_mut(write.start);
        (&low[read], &mut high[..write.len()])
    } else {
        debug_assert!(write.end <= read.start, "segments {read:?} and {write:?} overlap");
        let (low, high) = buf.split_at_mut(read.start);
        (&high[..read.len()], &mut low[write])
    }
}

fn send_segment(link: &mut Link, frame: Frame, values: &[f32], chunk_elems: usize) -> Result<(), CollectiveError> {
    link.mid_frame = true;
    link.send_frame(frame)?;
    for piece in values.chunks(chunk_elems) {
        link.send(f32_bytes(piece))?;
    }
    link.mid_frame = false;
    Ok(())
}

fn receive_segment(
    link: &mut Link,
    expected: Frame,
    values: &mut [f32],
    scratch: &mut [f32],
    combine: Combine,
) -> Result<(), CollectiveError> {
    let got = link.recv_frame()?;
    if let Frame::Abort { reporter, culprit } = got {
        return Err(CollectiveError::Aborted { reporter: reporter as usize, culprit: culprit as usize });
    }
    if got != expected {
        // The payload's length follows from our own buffer only once the frames agree.
        return Err(link.protocol(format!("it sent {}, this rank expected {}", describe(got), describe(expected))));
    }
    for piece in values.chunks_mut(scratch.len()) {
        match combine {
            Combine::Store => link.recv(f32_bytes_mut(piece))?,
            Combine::Add => {
                let partial = &mut scratch[..piece.len()];
                link.recv(f32_bytes_mut(partial))?;
                // IEEE addition is commutative, so this is `partial + own` bit for bit.
                for (own, sum) in piece.iter_mut().zip(partial.iter()) {
                    *own += *sum;
                }
            }
        }
    }
    Ok(())
}

fn describe(frame: Frame) -> String {
    match frame {
        Frame::Step { op, seq, step, len } => {
            let op = match op {
                Op::AllReduce => "all-reduce",
                Op::Barrier => "barrier",
            };
            format!("step {step} of call {seq} ({op} of {len} values)")
        }
        Frame::Abort { reporter, culprit } => format!("an abort (rank {reporter} gave up on rank {culprit})"),
    }
}

/// Breaks a ring from outside the thread that uses it: the coordinator has declared a peer lost,
/// so a rank blocked in a call (waiting up to its timeouts for that peer) returns at once with an
/// error, and its replica can serve the checkpoint the next generation starts from.
#[derive(Debug)]
pub struct RingBreaker {
    streams: Vec<std::net::TcpStream>,
}

impl RingBreaker {
    pub fn break_ring(&self) {
        for s in &self.streams {
            // Already closed by the peer is fine: the point is that no call waits any longer.
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl TcpRing {
    /// A handle that breaks this ring (a world of one has nothing to break).
    pub fn breaker(&self) -> Result<RingBreaker, CollectiveError> {
        let mut streams = Vec::new();
        if let Some(links) = &self.links {
            for link in [&links.left, &links.right] {
                streams.push(link.stream_handle().map_err(|e| CollectiveError::Io {
                    peer: link.peer.clone(),
                    during: "cloning the connection to",
                    kind: e.kind(),
                    message: e.to_string(),
                })?);
            }
        }
        Ok(RingBreaker { streams })
    }
}

impl Collective for TcpRing {
    fn world(&self) -> usize {
        self.world
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        self.run(Op::AllReduce, buf)
    }

    /// An all-reduce of nothing: a rank's last frame depends, through the ring, on every rank
    /// having entered the call.
    fn barrier(&mut self) -> Result<(), CollectiveError> {
        self.run(Op::Barrier, &mut [])
    }
}
