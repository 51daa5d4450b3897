//! `d2nn coordinator` and `d2nn worker` with `--tls-cert/--tls-key/--tls-ca` on 127.0.0.1, with a
//! CA and certificates each test makes (rcgen): a run trains with TLS on both planes; a worker with
//! another CA's certificate, one that distrusts the coordinator's, and one without TLS are refused
//! with errors that say so (and the coordinator logs each refusal naming the peer), a connection
//! that never handshakes holds up no one; bad TLS files are clear errors.
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

mod support;
use support::{free_port, read, spawn_logged, wait};

const COOKIE: &str = "tls-test-cookie-0123456789";

fn d2nn() -> Command {
    support::d2nn_with_cookie(COOKIE)
}

/// A CA made for one test, and the identities it signs written as PEM files.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    /// `--tls-cert`, `--tls-key`, `--tls-ca` for a new identity signed by this CA that trusts
    /// `trusted` (usually this CA).
    fn identity(&self, dir: &Path, name: &str, trusted: &Ca) -> Vec<String> {
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let write = |what: &str, text: String| -> String {
            let path = dir.join(format!("{name}.{what}.pem"));
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        vec![
            "--tls-cert".into(),
            write("cert", cert.pem()),
            "--tls-key".into(),
            write("key", key.serialize_pem()),
            "--tls-ca".into(),
            write("ca", trusted.issuer.pem()),
        ]
    }
}

/// A child process killed if the test ends (or panics) before it exits.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A coordinator of a short Fashion-MNIST run for `workers` worker processes.
fn coordinator(dir: &Path, port: u16, workers: usize, tls: &[String]) -> Child {
    let mut cmd = d2nn();
    let run = dir.join("run");
    cmd.args(["coordinator", "--config", "configs/high_low.toml", "--quiet", "--run-dir", run.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--workers", &workers.to_string(), "--max-steps", "4"])
        .args(["--set", "data.train_limit=480", "--set", "data.test_limit=100", "--set", "train.batch_size=48"])
        .args(tls);
    spawn_logged(cmd, dir, "coordinator")
}

fn wait_listening(port: u16) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "the coordinator never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A worker that is expected to be refused: its output, within a bound.
fn refused_worker(port: u16, tls: &[String]) -> (Output, Duration) {
    let started = Instant::now();
    let out = d2nn()
        .args(["worker", "--join", &format!("127.0.0.1:{port}"), "--connect-timeout", "20", "--threads", "1"])
        .args(tls)
        .output()
        .unwrap();
    (out, started.elapsed())
}

#[test]
fn a_run_trains_with_tls_on_the_sessions_and_the_ring() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let ca = Ca::new("run CA");
    let port = free_port();
    let mut coord = Reaped(coordinator(dir, port, 2, &ca.identity(dir, "coordinator", &ca)));
    let mut workers: Vec<Reaped> = (0..2)
        .map(|i| {
            let mut cmd = d2nn();
            cmd.args(["worker", "--join", &format!("127.0.0.1:{port}"), "--threads", "1"]).args(ca.identity(
                dir,
                &format!("worker-{i}"),
                &ca,
            ));
            Reaped(spawn_logged(cmd, dir, &format!("w{i}")))
        })
        .collect();
    let status = wait(&mut coord.0, Duration::from_secs(300));
    let log = read(dir, "coordinator.err");
    assert!(status.success(), "coordinator failed:\n{log}");
    let line = |log: &str, what: &str| log.lines().any(|l| l.contains(what) && l.contains("tls=true"));
    assert!(line(&log, "coordinator listening"), "{log}");
    assert!(!log.contains("refused"), "{log}");
    for (i, w) in workers.iter_mut().enumerate() {
        let status = wait(&mut w.0, Duration::from_secs(30));
        let log = read(dir, &format!("w{i}.err"));
        assert!(status.success(), "worker {i} failed:\n{log}");
        assert!(line(&log, "joined the coordinator") && line(&log, "joined the gradient ring"), "worker {i}:\n{log}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["workers"], 2);
    assert_eq!(summary["steps"], 4, "{summary}");
}

#[test]
fn workers_that_fail_tls_are_refused_with_errors_that_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (ca, other) = (Ca::new("run CA"), Ca::new("another CA"));
    let port = free_port();
    let mut coord = Reaped(coordinator(dir, port, 1, &ca.identity(dir, "coordinator", &ca)));
    wait_listening(port);

    // Its certificate from another CA: the coordinator refuses it during the handshake.
    let (out, took) = refused_worker(port, &other.identity(dir, "stranger", &ca));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{e}");
    assert!(e.contains("--tls-cert must be signed by the CA the coordinator trusts"), "{e}");
    assert!(took < Duration::from_secs(19), "refused only after {took:?}");
    // The coordinator says so once, naming the peer and the cause.
    let log = read(dir, "coordinator.err");
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("cluster connection from 127.0.0.1:")).collect();
    assert_eq!(refusals.len(), 1, "{log}");
    assert!(refusals[0].contains("refused") && refusals[0].contains("UnknownIssuer"), "{log}");
    assert!(refusals[0].contains("--tls-ca"), "{log}");

    // It trusts another CA: it refuses the coordinator's certificate, at once.
    let (out, took) = refused_worker(port, &ca.identity(dir, "distrustful", &other));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{e}");
    assert!(e.contains("TLS session with the coordinator") && e.contains("UnknownIssuer"), "{e}");
    assert!(e.contains("--tls-ca"), "{e}");
    assert!(took < Duration::from_secs(10), "refused only after {took:?}");

    // No TLS at all.
    let (out, _) = refused_worker(port, &[]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("TLS on at both ends"), "{e}");
    let log = read(dir, "coordinator.err");
    assert!(
        log.lines().any(|l| l.contains("cluster connection from 127.0.0.1:") && l.contains("does not speak TLS")),
        "{log}"
    );

    // A connection that never starts its handshake does not hold up the others: a good worker
    // still joins and the run completes.
    let _silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut good = d2nn();
    good.args(["worker", "--join", &format!("127.0.0.1:{port}"), "--threads", "1"])
        .args(ca.identity(dir, "worker-0", &ca));
    let mut good = Reaped(spawn_logged(good, dir, "good"));
    let status = wait(&mut coord.0, Duration::from_secs(300));
    assert!(status.success(), "coordinator failed:\n{}", read(dir, "coordinator.err"));
    let status = wait(&mut good.0, Duration::from_secs(30));
    assert!(status.success(), "the good worker failed:\n{}", read(dir, "good.err"));
}

#[test]
fn bad_tls_settings_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let ca = Ca::new("run CA");
    let tls = ca.identity(dir, "w", &ca);

    let o = d2nn().args(["worker", "--join", "127.0.0.1:9"]).args(&tls[..2]).output().unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("--tls-key") && e.contains("--tls-ca"), "the missing flags are named: {e}");

    let mut missing = tls.clone();
    missing[3] = dir.join("no-such-key.pem").display().to_string();
    let o = d2nn()
        .args(["coordinator", "--config", "configs/high_low.toml", "--workers", "1", "--listen", "127.0.0.1:0"])
        .args(&missing)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("refuses to listen") && e.contains("--tls-key") && e.contains("no-such-key.pem"), "{e}");
    assert!(!e.contains("panicked"), "{e}");

    let mut swapped = tls.clone();
    swapped[5] = tls[3].clone(); // a key where the CA belongs
    let o = d2nn().args(["worker", "--join", "127.0.0.1:9"]).args(&swapped).output().unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("--tls-ca") && e.contains("no PEM certificate"), "{e}");
}
