//! The TCP ring on 127.0.0.1: one thread per rank, ephemeral ports.
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::protocol::RingPlan;

use super::tcp_wire::Hello;
use super::{Collective, CollectiveError, TcpRing, TcpRingOptions};

/// The cluster cookie every rank of these rings holds, and their session.
pub(super) const SECRET: &[u8] = b"tcp-ring-test-cookie-0123456789";
const SESSION: &str = "test-run/g1";

pub(super) fn plan(rank: usize, world: usize, addrs: &[SocketAddr]) -> RingPlan {
    RingPlan { rank, world, addrs: addrs.to_vec(), session: SESSION.into() }
}

/// Slack for thread start-up and scheduling on a loaded CI machine.
const MARGIN: Duration = Duration::from_secs(1);

/// Short timeouts, and 60-byte chunks (15 values) so that no test length is a multiple of them.
pub(super) fn options() -> TcpRingOptions {
    TcpRingOptions {
        chunk_bytes: 60,
        connect_timeout: Duration::from_secs(10),
        io_timeout: Duration::from_secs(2),
        arrival_timeout: Duration::from_secs(2),
        tls: None,
    }
}

pub(super) fn listeners(world: usize) -> (Vec<TcpListener>, Vec<SocketAddr>) {
    let listeners: Vec<TcpListener> = (0..world).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let addrs = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    (listeners, addrs)
}

/// Runs `body(ring)` on every rank of a fresh ring, one thread each; results in rank order.
fn on_ring<T: Send>(world: usize, options: TcpRingOptions, body: impl Fn(TcpRing) -> T + Sync) -> Vec<T> {
    let (listeners, addrs) = listeners(world);
    on_ring_with(&listeners, &addrs, options, body)
}

/// Values over seven orders of magnitude and both signs, so that float sums depend on their order.
pub(super) fn data(rank: usize, len: usize) -> Vec<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ ((rank as u64 + 1) << 32) ^ len as u64;
    (0..len)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            unit * 10f32.powi((i % 7) as i32 - 3)
        })
        .collect()
}

/// The documented order: element i of segment k is ((b_k + b_{k+1}) + …) + b_{k−1}.
pub(super) fn ring_order_sum(world: usize, len: usize) -> Vec<f32> {
    let inputs: Vec<Vec<f32>> = (0..world).map(|r| data(r, len)).collect();
    (0..len)
        .map(|i| {
            let k = (0..world).find(|&k| i < (k + 1) * len / world).unwrap();
            (1..world).fold(inputs[k][i], |sum, j| sum + inputs[(k + j) % world][i])
        })
        .collect()
}

pub(super) fn assert_same_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "{what}: element {i}: {g} vs {w}");
    }
}

#[test]
fn sums_follow_the_ring_order_bit_for_bit_on_every_rank() {
    for world in 2..=4 {
        // Below, at and above the world size and the chunk (15 values); none a multiple of both.
        let lengths = [0, 1, world - 1, world + 1, 16, 1001, 4099];
        let results = on_ring(world, options(), |mut ring| {
            lengths
                .iter()
                .map(|&len| {
                    let mut buf = data(ring.rank(), len);
                    ring.all_reduce_sum(&mut buf).unwrap();
                    buf
                })
                .collect::<Vec<_>>()
        });
        for (call, &len) in lengths.iter().enumerate() {
            let want = ring_order_sum(world, len);
            for (rank, per_rank) in results.iter().enumerate() {
                assert_same_bits(&per_rank[call], &want, &format!("world {world} len {len} rank {rank}"));
            }
        }
    }
}

#[test]
fn large_buffers_stream_past_the_socket_buffers_and_match_rank_order_within_tolerance() {
    // 8 MiB: each step's segment is far larger than what the kernel buffers, so a rank that sent
    // before receiving would deadlock.
    let (world, len) = (2, 1 << 21);
    let options = TcpRingOptions { chunk_bytes: 64 << 10, ..options() };
    let results = on_ring(world, options, |mut ring| {
        let mut buf = data(ring.rank(), len);
        ring.all_reduce_sum(&mut buf).unwrap();
        buf
    });
    assert_same_bits(&results[0], &results[1], "rank 1 against rank 0");
    // The documented tolerance against the shared-memory collective's rank order.
    let inputs: Vec<Vec<f32>> = (0..world).map(|r| data(r, len)).collect();
    let unit = f32::EPSILON / 2.0;
    for (i, got) in results[0].iter().enumerate() {
        let rank_order = inputs.iter().fold(0.0f32, |sum, b| sum + b[i]);
        let magnitude: f32 = inputs.iter().map(|b| b[i].abs()).sum();
        assert!((got - rank_order).abs() <= 2.0 * (world - 1) as f32 * unit * magnitude, "element {i}");
    }
}

#[test]
fn a_world_of_one_leaves_the_buffer_as_it_is() {
    let results = on_ring(1, options(), |mut ring| {
        let mut buf = data(0, 5);
        ring.barrier().unwrap();
        ring.all_reduce_sum(&mut buf).unwrap();
        buf
    });
    assert_same_bits(&results[0], &data(0, 5), "world 1");
}

#[test]
fn barrier_returns_only_after_every_rank_arrived() {
    let arrived = AtomicUsize::new(0);
    let seen = on_ring(3, options(), |mut ring| {
        let mut seen = Vec::new();
        for round in 1..=3 {
            if ring.rank() == 2 {
                std::thread::sleep(Duration::from_millis(100));
            }
            arrived.fetch_add(1, Ordering::SeqCst);
            ring.barrier().unwrap();
            seen.push(arrived.load(Ordering::SeqCst) >= 3 * round);
            // A sum between barriers keeps the call numbers in step.
            ring.all_reduce_sum(&mut [1.0]).unwrap();
            // Nobody may count the next round before everyone has read this one.
            ring.barrier().unwrap();
        }
        seen
    });
    assert!(seen.iter().flatten().all(|&ok| ok), "{seen:?}");
}

/// The survivors' errors must blame `rank`, however each of them learnt of it.
fn assert_blames(result: &Result<(), CollectiveError>, rank: usize) {
    let e = result.as_ref().expect_err("the call should fail");
    assert_eq!(e.culprit(), Some(rank), "{e}");
    assert!(e.to_string().contains(&format!("rank {rank}")), "{e}");
}

#[test]
fn a_peer_that_leaves_mid_reduce_is_named_on_the_others_within_the_timeout() {
    let options = options();
    let timeout = options.io_timeout;
    let results = on_ring(3, options, |mut ring| {
        if ring.rank() == 2 {
            // The others are inside the all-reduce, waiting for this rank's data, when it exits.
            std::thread::sleep(Duration::from_millis(100));
            return None;
        }
        let start = Instant::now();
        let first = ring.all_reduce_sum(&mut data(ring.rank(), 30_000));
        let elapsed = start.elapsed();
        let again = ring.all_reduce_sum(&mut [1.0]);
        Some((first, elapsed, again))
    });
    for (rank, result) in results.iter().take(2).enumerate() {
        let (first, elapsed, again) = result.as_ref().unwrap();
        assert_blames(first, 2);
        assert!(*elapsed < timeout + MARGIN, "rank {rank} took {elapsed:?}");
        // The ring stays broken: later calls fail at once with the same error.
        assert_eq!(again, first, "rank {rank}");
    }
}

#[test]
fn a_hung_peer_times_out_naming_it() {
    let options = TcpRingOptions { io_timeout: Duration::from_millis(300), ..options() };
    let timeout = options.io_timeout;
    let results = on_ring(2, options, |mut ring| {
        if ring.rank() == 1 {
            // Alive, connections open, but never calls.
            std::thread::sleep(timeout + MARGIN);
            return None;
        }
        let start = Instant::now();
        Some((ring.all_reduce_sum(&mut [1.0, 2.0, 3.0]), start.elapsed()))
    });
    let (result, elapsed) = results[0].as_ref().unwrap();
    assert!(matches!(result, Err(CollectiveError::Timeout { peer, .. }) if peer.rank == 1), "{result:?}");
    assert!(*elapsed >= timeout && *elapsed < timeout + MARGIN, "{elapsed:?}");
}

#[test]
fn a_peer_with_a_wrong_handshake_is_rejected_with_a_clear_error() {
    let hello = Hello { rank: 1, world: 2 }.encode();
    let mut other_version = hello;
    other_version[8] ^= 0xff;
    let other_world = Hello { rank: 1, world: 3 }.encode();
    let cases: [(&[u8], &str); 4] = [
        (b"GET / HTTP/1.1\r\nHost: example\r\n\r\n", "bad magic"),
        (&other_version, "protocol version"),
        (&other_world, "the peer is rank 1 of 3, expected rank 1 of 2"),
        (&hello[..5], "no progress within"),
    ];
    for (bytes, says) in cases {
        // This test plays rank 1: its listener takes rank 0's connection in the backlog, and a
        // raw client speaks to rank 0 in its place.
        let (listeners, addrs) = listeners(2);
        let plan = plan(0, 2, &addrs);
        // Rank 0 refuses the impostor and waits on for the real rank 1 until its connect timeout.
        let connect_timeout = Duration::from_secs(1);
        let options = TcpRingOptions { io_timeout: Duration::from_millis(300), connect_timeout, ..options() };
        let rank0 = std::thread::spawn(move || TcpRing::connect(&listeners[0], &plan, options, SECRET).map(|_| ()));
        let mut impostor = TcpStream::connect(addrs[0]).unwrap();
        impostor.write_all(bytes).unwrap();
        let e = rank0.join().unwrap().unwrap_err();
        assert_eq!(e.culprit(), Some(1), "{e}");
        assert!(e.to_string().contains(says), "expected {says:?} in: {e}");
        assert!(e.to_string().contains(&impostor.local_addr().unwrap().to_string()), "names the address: {e}");
        assert!(e.to_string().contains("refused meanwhile"), "{e}");
    }
}

#[test]
fn ranks_in_different_calls_fail_with_a_protocol_error() {
    let results = on_ring(2, options(), |mut ring| {
        let mut buf = vec![1.0; 10 + 2 * ring.rank()];
        ring.all_reduce_sum(&mut buf)
    });
    for (rank, result) in results.iter().enumerate() {
        let e = result.as_ref().unwrap_err();
        assert!(matches!(e, CollectiveError::Protocol { .. }), "rank {rank}: {e}");
        assert!(e.to_string().contains("of 10 values") && e.to_string().contains("of 12 values"), "{e}");
    }
    let results =
        on_ring(2, options(), |mut ring| if ring.rank() == 0 { ring.barrier() } else { ring.all_reduce_sum(&mut []) });
    for result in &results {
        let e = result.as_ref().unwrap_err();
        assert!(e.to_string().contains("barrier") && e.to_string().contains("all-reduce"), "{e}");
    }
}

#[test]
fn a_bad_plan_or_an_absent_peer_is_an_error() {
    let (listeners, addrs) = listeners(2);
    for plan in [plan(2, 2, &addrs), plan(0, 3, &addrs), plan(0, 0, &[])] {
        let e = TcpRing::connect(&listeners[0], &plan, options(), SECRET).unwrap_err();
        assert!(matches!(e, CollectiveError::InvalidPlan { .. }), "{e}");
    }
    // Rank 1's address with nobody listening: rank 0 retries until the connect timeout.
    drop(listeners);
    let (listener, _) = self::listeners(1);
    let plan = plan(0, 2, &[listener[0].local_addr().unwrap(), addrs[1]]);
    let connect_timeout = Duration::from_millis(300);
    let start = Instant::now();
    let e = TcpRing::connect(&listener[0], &plan, TcpRingOptions { connect_timeout, ..options() }, SECRET).unwrap_err();
    assert!(start.elapsed() < connect_timeout + MARGIN, "{:?}", start.elapsed());
    assert_eq!(e.culprit(), Some(1), "{e}");
    assert!(e.to_string().contains("to rank 1"), "{e}");
}

/// A process that speaks the ring protocol but lacks the cookie gets to rank 1's listener before
/// rank 0: it is refused (its forged MAC fails), and the ring forms with the real rank 0.
#[test]
fn a_peer_without_the_cookie_is_refused_and_the_ring_still_forms() {
    let (listeners, addrs) = listeners(2);
    let mut rogue = TcpStream::connect(addrs[1]).unwrap();
    rogue.write_all(&[&Hello { rank: 0, world: 2 }.encode()[..], &[7; 32]].concat()).unwrap();
    let forger = std::thread::spawn(move || {
        let mut answer = [0; 20 + 32 + 32];
        let read = std::io::Read::read_exact(&mut rogue, &mut answer);
        let _ = rogue.write_all(&[0x5a; 32]); // a MAC made up without the key
        (read, rogue)
    });
    let sums = on_ring_with(&listeners, &addrs, options(), |mut ring| {
        let mut buf = vec![ring.rank() as f32 + 1.0; 5];
        ring.all_reduce_sum(&mut buf).unwrap();
        (buf, ring.refused().to_vec())
    });
    let (read, _rogue) = forger.join().unwrap();
    read.expect("rank 1 answered the rogue's hello before refusing it");
    assert_eq!(sums[0].0, vec![3.0; 5]);
    assert_eq!(sums[1].0, vec![3.0; 5]);
    assert!(sums[0].1.is_empty(), "{:?}", sums[0].1);
    assert_eq!(sums[1].1.len(), 1, "{:?}", sums[1].1);
    assert!(sums[1].1[0].contains("did not prove it holds the cluster cookie"), "{:?}", sums[1].1);
}

/// A handshake recorded between two genuine ranks and replayed, byte for byte, to the same rank
/// of a later ring with the same session is refused: that rank's nonce is new.
#[test]
fn a_replayed_handshake_is_refused() {
    // Ring A: rank 0 reaches rank 1 through a recording relay.
    let (listeners, addrs) = listeners(2);
    let relay = TcpListener::bind("127.0.0.1:0").unwrap();
    let via_relay = vec![addrs[0], relay.local_addr().unwrap()];
    let target = addrs[1];
    let recorder = std::thread::spawn(move || {
        let (mut from_rank0, _) = relay.accept().unwrap();
        let mut to_rank1 = TcpStream::connect(target).unwrap();
        let mut back = (from_rank0.try_clone().unwrap(), to_rank1.try_clone().unwrap());
        let answers = std::thread::spawn(move || std::io::copy(&mut back.1, &mut back.0));
        let mut recorded = vec![0; 20 + 32 + 32];
        let (first, last) = recorded.split_at_mut(52);
        std::io::Read::read_exact(&mut from_rank0, first).unwrap();
        to_rank1.write_all(first).unwrap();
        std::io::Read::read_exact(&mut from_rank0, last).unwrap();
        to_rank1.write_all(last).unwrap();
        let _ = std::io::copy(&mut from_rank0, &mut to_rank1);
        let _ = to_rank1.shutdown(std::net::Shutdown::Write);
        let _ = answers.join();
        recorded
    });
    std::thread::scope(|scope| {
        let a = scope.spawn(|| TcpRing::connect(&listeners[0], &plan(0, 2, &via_relay), options(), SECRET));
        let b = scope.spawn(|| TcpRing::connect(&listeners[1], &plan(1, 2, &addrs), options(), SECRET));
        let (mut a, mut b) = (a.join().unwrap().unwrap(), b.join().unwrap().unwrap());
        let (mut x, mut y) = ([1.0f32], [2.0f32]);
        let (ra, rb) = std::thread::scope(|s| {
            let ra = s.spawn(|| a.all_reduce_sum(&mut x));
            let rb = b.all_reduce_sum(&mut y);
            (ra.join().unwrap(), rb)
        });
        ra.unwrap();
        rb.unwrap();
        assert_eq!((x, y), ([3.0], [3.0]));
    });
    let recorded = recorder.join().unwrap();
    // Ring B, same session: the replay reaches rank 1 first.
    let (listeners, addrs) = self::listeners(2);
    let mut replay = TcpStream::connect(addrs[1]).unwrap();
    replay.write_all(&recorded[..52]).unwrap();
    let replayer = std::thread::spawn(move || {
        let mut answer = [0; 84];
        std::io::Read::read_exact(&mut replay, &mut answer).unwrap();
        let _ = replay.write_all(&recorded[52..]);
        replay
    });
    let refused = on_ring_with(&listeners, &addrs, options(), |ring| ring.refused().to_vec());
    drop(replayer.join().unwrap());
    assert!(refused[0].is_empty());
    assert_eq!(refused[1].len(), 1, "the replay was accepted: {:?}", refused[1]);
}

/// [`on_ring`] on listeners the test bound itself.
pub(super) fn on_ring_with<T: Send>(
    listeners: &[TcpListener],
    addrs: &[SocketAddr],
    options: TcpRingOptions,
    body: impl Fn(TcpRing) -> T + Sync,
) -> Vec<T> {
    let world = listeners.len();
    std::thread::scope(|scope| {
        let threads: Vec<_> = listeners
            .iter()
            .enumerate()
            .map(|(rank, listener)| {
                let (plan, options, body) = (plan(rank, world, addrs), options.clone(), &body);
                scope.spawn(move || body(TcpRing::connect(listener, &plan, options, SECRET).unwrap()))
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    })
}
