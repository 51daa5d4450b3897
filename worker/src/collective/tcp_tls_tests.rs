//! The TCP ring over mutual TLS on 127.0.0.1: certificates from a CA each test makes (rcgen).
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use super::tcp_tests::{assert_same_bits, data, listeners, options, plan, ring_order_sum, SECRET};
use super::tcp_tls::TlsStream;
use super::{Collective, TcpRing, TcpRingOptions};
use crate::tls::test_pki::{TestCa, TestIdentity};
use crate::tls::TlsConfig;

/// Every rank with its own certificate from `ca`.
fn identities(ca: &TestCa, world: usize) -> Vec<TlsConfig> {
    (0..world).map(|rank| ca.identity(&format!("rank-{rank}")).config()).collect()
}

/// Runs `body(ring)` on every rank, rank r over TLS with `configs[r]`; results in rank order.
fn on_tls_ring<T: Send>(
    listeners: &[TcpListener],
    addrs: &[SocketAddr],
    configs: &[TlsConfig],
    base: TcpRingOptions,
    body: impl Fn(TcpRing) -> T + Sync,
) -> Vec<T> {
    let world = listeners.len();
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..world)
            .map(|rank| {
                let options = TcpRingOptions { tls: Some(configs[rank].clone()), ..base.clone() };
                let (listener, plan, body) = (&listeners[rank], plan(rank, world, addrs), &body);
                scope.spawn(move || body(TcpRing::connect(listener, &plan, options, SECRET).unwrap()))
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    })
}

#[test]
fn a_ring_over_tls_sums_in_the_ring_order_bit_for_bit_on_every_rank() {
    let ca = TestCa::new("ring CA");
    let world = 3;
    // Small, uneven and larger than rustls's 64 KiB send buffer and the socket buffers (4 MiB).
    let lengths = [0, 1, 4, 1001, 1 << 20];
    let (listeners, addrs) = listeners(world);
    let base = TcpRingOptions { chunk_bytes: 256 << 10, ..options() };
    let results = on_tls_ring(&listeners, &addrs, &identities(&ca, world), base, |mut ring| {
        let sums: Vec<Vec<f32>> = lengths
            .iter()
            .map(|&len| {
                let mut buf = data(ring.rank(), len);
                ring.all_reduce_sum(&mut buf).unwrap();
                buf
            })
            .collect();
        ring.barrier().unwrap();
        (sums, ring.refused().to_vec())
    });
    for (call, &len) in lengths.iter().enumerate() {
        let want = ring_order_sum(world, len);
        for (rank, (sums, refused)) in results.iter().enumerate() {
            assert!(refused.is_empty(), "rank {rank} refused {refused:?}");
            assert_same_bits(&sums[call], &want, &format!("TLS world {world} len {len} rank {rank}"));
        }
    }
}

/// A rogue that trusts the ring's CA but presents a certificate another CA signed reaches rank 1's
/// listener before rank 0: rank 1 refuses it in the TLS handshake, and the ring forms with rank 0.
#[test]
fn a_peer_whose_certificate_another_ca_signed_is_refused_and_the_ring_still_forms() {
    let (ca, other_ca) = (TestCa::new("ring CA"), TestCa::new("another CA"));
    let (listeners, addrs) = listeners(2);
    let forged = other_ca.identity("rank-0");
    let rogue_identity = TestIdentity { ca: ca.identity("unused").ca, ..forged };
    let rogue_config = rogue_identity.config();
    // Connected before the ring starts, so rank 1's listener has the rogue first in its backlog
    // (connecting from the thread raced rank 0 and, when it lost, timed out unanswered).
    let sock = TcpStream::connect(addrs[1]).unwrap();
    let rogue = std::thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // TLS 1.3: the client's side completes before the server has checked its certificate;
        // the refusal arrives as an alert on the first read.
        let mut stream = TlsStream::connect(sock, rogue_config.client())?;
        std::io::Read::read(&mut stream, &mut [0; 16]).map(|_| ())
    });
    let results = on_tls_ring(&listeners, &addrs, &identities(&ca, 2), options(), |mut ring| {
        let mut buf = vec![ring.rank() as f32 + 1.0; 5];
        ring.all_reduce_sum(&mut buf).unwrap();
        (buf, ring.refused().to_vec())
    });
    let rogue_end = rogue.join().unwrap().expect_err("the rogue was let in");
    assert!(rogue_end.to_string().contains("refused this process's certificate"), "{rogue_end}");
    assert_eq!(results[0].0, vec![3.0; 5]);
    assert_eq!(results[1].0, vec![3.0; 5]);
    assert!(results[0].1.is_empty(), "{:?}", results[0].1);
    let refused = &results[1].1;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0].contains("TLS handshake") && refused[0].contains("UnknownIssuer"), "{refused:?}");
    assert!(refused[0].contains("--tls-ca"), "the refusal says what to fix: {refused:?}");
}

/// The right neighbour's address answers with a certificate from another CA: the dialling rank
/// refuses it and fails naming that neighbour and the flag, instead of sending it gradients.
#[test]
fn a_rank_refuses_a_neighbour_whose_certificate_another_ca_signed() {
    let (ca, other_ca) = (TestCa::new("ring CA"), TestCa::new("another CA"));
    let (listeners, mut addrs) = listeners(2);
    let impostor = TcpListener::bind("127.0.0.1:0").unwrap();
    addrs[1] = impostor.local_addr().unwrap();
    let impostor_config = TestIdentity { ca: ca.identity("unused").ca, ..other_ca.identity("rank-1") }.config();
    let serving = std::thread::spawn(move || {
        let (sock, _) = impostor.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        TlsStream::accept(sock, impostor_config.server()).map(|_| ())
    });
    let options = TcpRingOptions {
        tls: Some(ca.identity("rank-0").config()),
        connect_timeout: Duration::from_secs(2),
        ..options()
    };
    let e = TcpRing::connect(&listeners[0], &plan(0, 2, &addrs), options, SECRET).unwrap_err();
    let impostor_end = serving.join().unwrap().expect_err("the impostor's handshake completed");
    assert_eq!(e.culprit(), Some(1), "{e}");
    let message = e.to_string();
    assert!(message.contains("TLS handshake with rank 1"), "{message}");
    assert!(message.contains("UnknownIssuer") && message.contains("--tls-ca"), "{message}");
    assert!(impostor_end.to_string().contains("refused this process's certificate"), "{impostor_end}");
}

/// A rank without TLS cannot join a ring that has it: the TLS rank refuses its plain hello.
#[test]
fn a_plain_peer_is_refused_by_a_tls_rank() {
    let ca = TestCa::new("ring CA");
    let (listeners, addrs) = listeners(2);
    // Queued in rank 1's backlog before the ring starts, so rank 1 accepts it before rank 0's
    // connection (started from a thread, it could arrive after the ring had formed).
    let mut plain = TcpStream::connect(addrs[1]).unwrap();
    std::io::Write::write_all(&mut plain, b"D2NNRING plain hello, no TLS").unwrap();
    let refused = on_tls_ring(&listeners, &addrs, &identities(&ca, 2), options(), |ring| ring.refused().to_vec());
    drop(plain);
    assert!(refused[0].is_empty(), "{:?}", refused[0]);
    assert_eq!(refused[1].len(), 1, "{:?}", refused[1]);
    assert!(refused[1][0].contains("TLS"), "{:?}", refused[1]);
}
