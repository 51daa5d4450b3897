//! Multi-process training as an operator runs it: `d2nn coordinator` and `d2nn worker` processes
//! on 127.0.0.1. Replicas must agree with the in-process runtime, survive a `kill -9` of a worker,
//! take a replacement in, and refuse peers with the wrong cookie or garbage bytes.
//!
//! Size (~410 lines): one multi-process scenario per test over the process helpers of tests/support;
//! split by scenario family if it grows further.
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

mod support;
use support::{free_port, read, spawn_logged, wait};

const COOKIE: &str = "cluster-test-cookie-0123456789";

fn d2nn() -> Command {
    support::d2nn_with_cookie(COOKIE)
}
/// A Fashion-MNIST slice: 2 epochs of 20 steps, batch 48 (divisible by 3 and by 2).
const SLICE: &[&str] = &[
    "--set",
    "data.train_limit=960",
    "--set",
    "data.test_limit=300",
    "--set",
    "train.batch_size=48",
    "--set",
    "train.epochs=2",
    "--set",
    "train.log_every=2",
];

fn coordinator(dir: &Path, port: u16, workers: usize, extra: &[&str]) -> Child {
    let mut cmd = d2nn();
    let run = dir.join("run");
    cmd.args(["coordinator", "--config", "configs/high_low.toml", "--quiet", "--run-dir", run.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--workers", &workers.to_string()])
        .args(SLICE)
        .args(extra);
    spawn_logged(cmd, dir, "coordinator")
}

fn worker(dir: &Path, port: u16, name: &str) -> Child {
    let mut cmd = d2nn();
    cmd.args(["worker", "--join", &format!("127.0.0.1:{port}"), "--threads", "1"]);
    spawn_logged(cmd, dir, name)
}

fn wait_until(what: &str, limit: Duration, done: impl FnMut() -> bool) {
    if wait_for(limit, done).is_err() {
        panic!("timed out waiting for {what}");
    }
}

/// Polls `done` until it holds (Ok) or `limit` passes (Err with the time waited).
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> Result<(), Duration> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() >= limit {
            return Err(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn summary(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

/// A checkpoint after 4 steps, kept: where replicas are compared before rounding differences
/// compound (40 steps of Adam and routing decisions amplify them to ~1e-4).
const EARLY_CHECKPOINT: &[&str] = &["--checkpoint-every", "4", "--set", "checkpoint.keep_last=20"];

fn in_process(dir: &Path, workers: usize) -> Output {
    let run = dir.join("inproc");
    d2nn()
        .args(["train", "--config", "configs/high_low.toml", "--quiet", "--run-dir", run.to_str().unwrap()])
        .args(["--workers", &workers.to_string()])
        .args(SLICE)
        .args(EARLY_CHECKPOINT)
        .output()
        .unwrap()
}

/// Largest absolute difference between two saved models' parameters.
fn max_param_diff(a: &Path, b: &Path) -> f64 {
    let load = |p: &Path| {
        let mut t = tch::Tensor::read_safetensors(p).unwrap();
        t.sort_by(|x, y| x.0.cmp(&y.0));
        t
    };
    let (a, b) = (load(a), load(b));
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|((na, ta), (nb, tb))| {
            assert_eq!(na, nb);
            (ta - tb).abs().max().double_value(&[])
        })
        .fold(0.0, f64::max)
}

/// Bytes no d2nn node sends: noise, a frame claiming 2^40 bytes, a frame cut short, and a
/// well-sized frame of nonsense.
fn send_garbage(port: u16) {
    let frames: [Vec<u8>; 4] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        (1u64 << 40).to_be_bytes().to_vec(),
        [100u64.to_be_bytes().to_vec(), vec![7; 10]].concat(),
        [16u64.to_be_bytes().to_vec(), vec![0xFF; 16]].concat(),
    ];
    for bytes in frames {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(&bytes);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn three_worker_processes_train_like_three_in_process_workers_and_refuse_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let port = free_port();
    let mut coord = coordinator(dir, port, 3, EARLY_CHECKPOINT);
    // Strangers first: garbage on the cluster port and a worker with the wrong cookie.
    wait_until("the coordinator to listen", Duration::from_secs(60), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    send_garbage(port);
    let mut intruder = d2nn();
    intruder.env("D2NN_CLUSTER_COOKIE", "not-the-cluster-cookie-at-all");
    intruder.args(["worker", "--join", &format!("127.0.0.1:{port}")]);
    let intruder = intruder.output().unwrap();
    assert!(!intruder.status.success(), "a worker with the wrong cookie must fail");
    let why = String::from_utf8_lossy(&intruder.stderr);
    assert!(why.contains("cookie") && why.contains(&port.to_string()), "{why}");

    let mut workers: Vec<Child> = (0..3).map(|i| worker(dir, port, &format!("w{i}"))).collect();
    let status = wait(&mut coord, Duration::from_secs(300));
    assert!(status.success(), "coordinator failed:\n{}", read(dir, "coordinator.err"));
    for (i, w) in workers.iter_mut().enumerate() {
        let status = wait(w, Duration::from_secs(30));
        assert!(status.success(), "worker {i} failed:\n{}", read(dir, &format!("w{i}.err")));
    }
    let log = read(dir, "coordinator.err");
    assert!(log.contains("did not authenticate"), "the refused peer is logged:\n{log}");
    let cluster = summary(&dir.join("run"));
    assert_eq!(cluster["workers"], 3);
    let accuracy = cluster["test_accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.5, "10 classes: chance is 0.1, got {accuracy}");

    let local = in_process(dir, 3);
    assert!(local.status.success(), "{}", String::from_utf8_lossy(&local.stderr));
    // The TCP ring adds the three gradients in another order than shared memory does, so the
    // replicas agree to float rounding, not bit for bit.
    let early = "checkpoints/step-00000004/model.safetensors";
    let diff = max_param_diff(&dir.join("run").join(early), &dir.join("inproc").join(early));
    eprintln!("max |Δ parameter| after 4 steps: {diff:e}");
    assert!(diff < 1e-5, "max |Δ parameter| {diff} after 4 steps: 3 worker processes vs 3 in-process workers");
    // After 40 steps the rounding differences have moved some routing decisions. Measured: the same
    // run under another kernel path and thread count moved test accuracy by 1 example of 300 (0.0033),
    // while other seeds land 0.02–0.06 away (docs/RESULTS.md, "Tests on other CPUs"); 0.03 allows 9×
    // the rounding move and still fails a cluster that trains differently from the in-process runtime.
    let reference = summary(&dir.join("inproc"))["test_accuracy"].as_f64().unwrap();
    eprintln!("test accuracy: 3 worker processes {accuracy}, 3 in-process workers {reference}");
    assert!((accuracy - reference).abs() < 0.03, "accuracy {accuracy} vs in-process {reference}");
}

#[test]
fn a_killed_worker_is_dropped_and_a_replacement_joins_in_lockstep() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let port = free_port();
    // Digests of every replica compared after every step: a step applied on some replicas but
    // not others fails the run.
    let mut coord = coordinator(dir, port, 3, &["--verify-replicas-every", "1", "--heartbeat-timeout", "3"]);
    let mut workers: Vec<Child> = (0..3).map(|i| worker(dir, port, &format!("w{i}"))).collect();
    let metrics = dir.join("run/metrics.jsonl");
    wait_until("4 logged steps", Duration::from_secs(120), || {
        std::fs::read_to_string(&metrics).is_ok_and(|m| m.lines().count() >= 2)
    });
    workers[1].kill().unwrap(); // SIGKILL: no goodbye, the socket just closes
    let _ = workers[1].wait();
    let reformed = || read(dir, "coordinator.err").contains("cluster re-formed");
    if let Err(waited) = wait_for(Duration::from_secs(60), reformed) {
        // Keep what the processes said for diagnosis. Seen when the stopped rank had done its part
        // of the all-reduce but not reported: the survivors' save then refused their pending step
        // (fixed: a pending step's save holds the committed state, replica::engine::tests).
        let logs: Vec<String> =
            ["coordinator.err", "w0.err", "w2.err"].iter().map(|f| format!("== {f}\n{}", read(dir, f))).collect();
        panic!("timed out after {waited:?} waiting for the cluster to re-form without it:\n{}", logs.join("\n"));
    }
    workers.push(worker(dir, port, "w3"));
    let status = wait(&mut coord, Duration::from_secs(300));
    let log = read(dir, "coordinator.err");
    assert!(status.success(), "coordinator failed:\n{log}");
    for i in [0, 2, 3] {
        let status = wait(&mut workers[i], Duration::from_secs(30));
        assert!(status.success(), "worker {i} failed:\n{}", read(dir, &format!("w{i}.err")));
    }
    assert!(log.contains("worker lost"), "{log}");
    let worlds: Vec<&str> = log.lines().filter(|l| l.contains("cluster re-formed")).collect();
    assert_eq!(worlds.len(), 2, "one re-forming after the loss, one for the replacement:\n{log}");
    assert!(worlds[0].contains("world=2") && worlds[1].contains("world=3"), "{worlds:?}");
    let s = summary(&dir.join("run"));
    assert_eq!(s["workers"], 3, "the replacement trained to the end");
    assert_eq!(s["steps"], 40);
    // The coordinator's record: each epoch committed every training example exactly once across the loss
    // and the join (the batch in flight at the kill was handed out again, to the survivors).
    let coverage = s["coverage"].as_array().expect("summary.json has coverage");
    assert_eq!(coverage.len(), 2, "{s}");
    for c in coverage {
        assert_eq!((c["examples_in_epoch"].as_u64(), c["examples_committed"].as_u64()), (Some(960), Some(960)), "{c}");
        assert_eq!((c["duplicates"].as_u64(), c["examples_skipped"].as_u64()), (Some(0), Some(0)), "{c}");
    }
    // Lock-step is proven by the digests above; the accuracy shows the re-formed run still learned. A run
    // disturbed by a loss is another trajectory, as far from the undisturbed one as another seed (0.67–0.73
    // over seeds 0–2 on this slice), so it is held to the same bound as every cluster run, not to the
    // undisturbed run's value.
    assert!(s["test_accuracy"].as_f64().unwrap() > 0.5, "{s}");
}

/// `data.source = "coordinator"`: the workers run where there is no data directory, train on the
/// examples each step's order carries, and the coordinator evaluates the final parameters itself.
#[test]
fn workers_without_a_dataset_train_on_the_examples_the_coordinator_sends() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let bare = dir.join("worker-cwd");
    std::fs::create_dir(&bare).unwrap();
    let port = free_port();
    let mut coord = coordinator(dir, port, 2, &["--set", "data.source=coordinator"]);
    let mut workers: Vec<Child> = (0..2)
        .map(|i| {
            let mut cmd = d2nn();
            // `data.dir` is the relative `data`: it does not exist here.
            cmd.current_dir(&bare).args(["worker", "--join", &format!("127.0.0.1:{port}"), "--threads", "1"]);
            spawn_logged(cmd, dir, &format!("w{i}"))
        })
        .collect();
    let status = wait(&mut coord, Duration::from_secs(300));
    assert!(status.success(), "coordinator failed:\n{}", read(dir, "coordinator.err"));
    for (i, w) in workers.iter_mut().enumerate() {
        let status = wait(w, Duration::from_secs(30));
        assert!(status.success(), "worker {i} failed:\n{}", read(dir, &format!("w{i}.err")));
    }
    assert_eq!(std::fs::read_dir(&bare).unwrap().count(), 0, "a worker fetched or wrote data");
    let s = summary(&dir.join("run"));
    assert_eq!((s["workers"].as_u64(), s["steps"].as_u64()), (Some(2), Some(40)), "{s}");
    assert!(s["test_accuracy"].as_f64().unwrap() > 0.5, "{s}");
    for c in s["coverage"].as_array().unwrap() {
        assert_eq!((c["examples_committed"].as_u64(), c["duplicates"].as_u64()), (Some(960), Some(0)), "{c}");
    }
    assert!(dir.join("run/model.safetensors").is_file());
}

#[test]
fn bad_cluster_settings_are_clear_errors() {
    let o = d2nn()
        .env_remove("D2NN_CLUSTER_COOKIE")
        .args(["coordinator", "--config", "configs/high_low.toml", "--workers", "2", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("refuses to listen") && e.contains("D2NN_CLUSTER_COOKIE"), "{e}");

    let o = d2nn().env("D2NN_CLUSTER_COOKIE", "short").args(["worker", "--join", "127.0.0.1:9"]).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("5 characters"));

    let port = free_port();
    let o = d2nn().args(["worker", "--join", &format!("127.0.0.1:{port}"), "--connect-timeout", "1"]).output().unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("cannot reach the coordinator") && e.contains(&port.to_string()), "{e}");

    let o = d2nn().args(["worker"]).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("MASTER_ADDR"));

    let o = d2nn()
        .env("WORLD_SIZE", "2")
        .env("MASTER_PORT", "not-a-port")
        .args(["coordinator", "--config", "configs/high_low.toml"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("MASTER_PORT `not-a-port`"));
}

#[test]
fn a_hung_worker_is_found_by_heartbeats_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let port = free_port();
    let mut coord = coordinator(
        dir,
        port,
        3,
        &["--verify-replicas-every", "1", "--heartbeat-timeout", "2", "--heartbeat-interval", "0.5"],
    );
    let mut workers: Vec<Child> = (0..3).map(|i| worker(dir, port, &format!("w{i}"))).collect();
    let metrics = dir.join("run/metrics.jsonl");
    wait_until("logged steps", Duration::from_secs(120), || {
        std::fs::read_to_string(&metrics).is_ok_and(|m| m.lines().count() >= 2)
    });
    // SIGSTOP: the process and its sockets stay, it just never answers again (a hung host).
    let pid = workers[2].id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let stopped_at = Instant::now();
    let reformed = || read(dir, "coordinator.err").contains("cluster re-formed");
    if let Err(waited) = wait_for(Duration::from_secs(60), reformed) {
        // Keep what the processes said for diagnosis. Seen when the stopped rank had done its part
        // of the all-reduce but not reported: the survivors' save then refused their pending step
        // (fixed: a pending step's save holds the committed state, replica::engine::tests).
        let logs: Vec<String> =
            ["coordinator.err", "w0.err", "w2.err"].iter().map(|f| format!("== {f}\n{}", read(dir, f))).collect();
        panic!("timed out after {waited:?} waiting for the cluster to re-form without it:\n{}", logs.join("\n"));
    }
    // Heartbeat timeout 2 s, then the survivors' ring is broken instead of waiting out its own
    // timeouts (60 s in the barrier).
    let recovered = stopped_at.elapsed();
    eprintln!("re-formed {recovered:?} after SIGSTOP");
    let status = wait(&mut coord, Duration::from_secs(300));
    let _ = workers[2].kill();
    let _ = Command::new("kill").args(["-CONT", &pid]).status();
    let _ = workers[2].wait();
    let log = read(dir, "coordinator.err");
    assert!(status.success(), "coordinator failed:\n{log}");
    assert!(log.contains("no heartbeat answer"), "{log}");
    assert!(recovered < Duration::from_secs(20), "re-formed {recovered:?} after the hang");
    for i in [0, 1] {
        assert!(wait(&mut workers[i], Duration::from_secs(30)).success(), "{}", read(dir, &format!("w{i}.err")));
    }
    let s = summary(&dir.join("run"));
    assert_eq!((s["workers"].as_u64(), s["steps"].as_u64()), (Some(2), Some(40)));
    assert!(s["test_accuracy"].as_f64().unwrap() > 0.5);
}

#[test]
fn a_killed_coordinator_resumes_from_its_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let port = free_port();
    let every = ["--checkpoint-every", "5", "--auto-resume"];
    let mut coord = coordinator(dir, port, 2, &every);
    let mut workers: Vec<Child> = (0..2).map(|i| worker(dir, port, &format!("w{i}"))).collect();
    let latest = dir.join("run/checkpoints/LATEST");
    wait_until("a checkpoint", Duration::from_secs(120), || {
        std::fs::read_to_string(&latest).is_ok_and(|l| !l.contains("00000000"))
    });
    coord.kill().unwrap();
    let _ = coord.wait();
    for (i, w) in workers.iter_mut().enumerate() {
        let status = wait(w, Duration::from_secs(30));
        let why = read(dir, &format!("w{i}.err"));
        // Exit status 1 with the reason: not a signal (workers used to die of SIGSEGV or SIGABRT
        // after their last line, libtorch's destructors racing with a replica thread).
        assert_eq!((status.code(), status.signal()), (Some(1), None), "worker {i}: {why}");
        assert!(why.contains("lost the coordinator"), "worker {i}: {why}");
    }
    // The same command again (a restarted Job): it finds LATEST and continues.
    let mut coord = coordinator(dir, port, 2, &every);
    let mut workers: Vec<Child> = (0..2).map(|i| worker(dir, port, &format!("again{i}"))).collect();
    let status = wait(&mut coord, Duration::from_secs(300));
    let log = read(dir, "coordinator.err");
    assert!(status.success(), "{log}");
    for w in &mut workers {
        assert!(wait(w, Duration::from_secs(30)).success());
    }
    assert!(log.contains("resumed"), "{log}");
    let s = summary(&dir.join("run"));
    assert_eq!(s["steps"], 40);
    assert!(s["test_accuracy"].as_f64().unwrap() > 0.5, "{s}");
}

/// `kubectl delete pod` sends SIGTERM: the worker abandons its step, leaves (closing its session
/// tells the coordinator at once) and exits 143 (documented: not finished, so a Job replaces the
/// pod); the coordinator re-forms without waiting for the
/// heartbeat timeout (60 s here) and finishes with the others.
#[test]
fn a_worker_stopped_with_sigterm_leaves_and_the_run_goes_on_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let port = free_port();
    let mut coord = coordinator(dir, port, 3, &["--heartbeat-timeout", "60", "--verify-replicas-every", "1"]);
    let mut workers: Vec<Child> = (0..3).map(|i| worker(dir, port, &format!("w{i}"))).collect();
    let metrics = dir.join("run/metrics.jsonl");
    wait_until("logged steps", Duration::from_secs(120), || {
        std::fs::read_to_string(&metrics).is_ok_and(|m| m.lines().count() >= 2)
    });
    let pid = workers[2].id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let signalled = Instant::now();
    let status = wait(&mut workers[2], Duration::from_secs(30));
    assert_eq!((status.code(), status.signal()), (Some(143), None), "{}", read(dir, "w2.err"));
    assert!(read(dir, "w2.out").contains("left the run (SIGTERM)"), "{}", read(dir, "w2.out"));
    wait_until("the cluster to re-form without it", Duration::from_secs(40), || {
        read(dir, "coordinator.err").contains("cluster re-formed")
    });
    let recovered = signalled.elapsed();
    let status = wait(&mut coord, Duration::from_secs(300));
    let log = read(dir, "coordinator.err");
    assert!(status.success(), "coordinator failed:\n{log}");
    assert!(recovered < Duration::from_secs(30), "re-formed {recovered:?} after SIGTERM: {log}");
    for i in [0, 1] {
        assert!(wait(&mut workers[i], Duration::from_secs(30)).success(), "{}", read(dir, &format!("w{i}.err")));
    }
    let s = summary(&dir.join("run"));
    assert_eq!((s["workers"].as_u64(), s["steps"].as_u64()), (Some(2), Some(40)));
}
