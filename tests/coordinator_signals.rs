//! SIGTERM to a `d2nn coordinator` with no step in flight. Found running the Helm chart in podman
//! (issue #24): the coordinator is PID 1 of its container, and one stopped while it waited for its
//! workers (pods still Pending, or never scheduled) went on waiting until the grace period ended and
//! it was killed (exit 137). It must stop at once and exit non-zero: the run has not finished, so a
//! Job restarts it.
use std::fs::File;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while !done() {
        if started.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

#[test]
fn a_coordinator_waiting_for_workers_stops_at_once_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = dir.path().join("coordinator.err");
    let mut child = Command::new(env!("CARGO_BIN_EXE_d2nn"))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env("D2NN_CLUSTER_COOKIE", "signals-test-cookie-0123456789")
        .env_remove("RUST_LOG")
        .args(["coordinator", "--config", "configs/high_low.toml", "--quiet", "--workers", "2"])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--join-timeout", "600"])
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(wait_for(Duration::from_secs(60), || read().contains("waiting for workers")), "{}", read());
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let signalled = Instant::now();
    let mut status = None;
    let stopped = wait_for(Duration::from_secs(10), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !stopped {
        let _ = child.kill();
        panic!("still running 10 s after SIGTERM:\n{}", read());
    }
    let status = status.unwrap();
    assert_eq!(status.code(), Some(1), "{}", read());
    assert!(signalled.elapsed() < Duration::from_secs(5), "took {:?}", signalled.elapsed());
    let text = read();
    assert!(text.contains("stopped on request while waiting for workers (0 of the 2 needed had joined)"), "{text}");
}
