//! The `d2nn` binary as a user runs it: bad input gets a clear error and a non-zero exit, and a
//! train → eval round trip agrees with itself.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn d2nn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_d2nn")).args(args).current_dir(root()).env_remove("RUST_LOG").output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn help_teaches_every_command() {
    let o = d2nn(&["--help"]);
    assert!(o.status.success());
    let text = stdout(&o);
    for cmd in [
        "data",
        "config",
        "inspect",
        "train",
        "coordinator",
        "worker",
        "eval",
        "checkpoints",
        "sweep",
        "bench",
        "doctor",
    ] {
        assert!(text.contains(cmd), "--help does not mention {cmd}:\n{text}");
    }
    let o = d2nn(&["train", "--help"]);
    let text = stdout(&o);
    for flag in ["--max-steps", "--set", "--resume", "--allow-config-change", "--checkpoint-every"] {
        assert!(text.contains(flag), "train --help does not mention {flag}:\n{text}");
    }
}

#[test]
fn missing_config_file_is_named() {
    let o = d2nn(&["train", "--config", "configs/nope.toml"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("configs/nope.toml"), "{}", stderr(&o));
}

#[test]
fn misspelled_override_names_the_key() {
    let o = d2nn(&["config", "show", "--config", "configs/high_low.toml", "--set", "train.lamda=0.5"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("lamda") && e.contains("high_low.toml"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn bad_graph_names_node_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("configs/static_low.toml")).unwrap().replace("out = 10", "out = 7");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let o = d2nn(&["inspect", "--config", path.to_str().unwrap()]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("bad.toml") && e.contains("node `out`") && e.contains("10 logits"), "{e}");
}

#[test]
fn bad_device_and_missing_run_dir_are_clear_errors() {
    let o = d2nn(&["train", "--config", "configs/high_low.toml", "--device", "tpu"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--device `tpu`"), "{}", stderr(&o));
    let o = d2nn(&["eval", "--run-dir", "/no/such/run"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/no/such/run"), "{}", stderr(&o));
}

#[test]
fn config_show_round_trips() {
    let o = d2nn(&["config", "show", "--config", "configs/cascade.toml", "--set", "train.lambda=0.7"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("lambda = 0.7"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resolved.toml");
    std::fs::write(&path, &text).unwrap();
    let again = d2nn(&["config", "show", "--config", path.to_str().unwrap()]);
    assert_eq!(stdout(&again), text);
}

#[test]
fn inspect_prints_shapes_and_flops() {
    let o = d2nn(&["inspect", "--config", "configs/high_low.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("[16, 14, 14]") && text.contains("19.712") && text.contains("0→low 1→high"), "{text}");
}

/// A data slice that trains in seconds.
const TINY_DATA: &[&str] =
    &["--set", "data.train_limit=512", "--set", "data.test_limit=300", "--set", "train.batch_size=32"];

/// `d2nn train` of `config` on [`TINY_DATA`] for `steps` global steps, into `run`.
fn train_tiny(config: &str, run: &Path, steps: &str) -> Output {
    let mut args =
        vec!["train", "--config", config, "--quiet", "--max-steps", steps, "--run-dir", run.to_str().unwrap()];
    args.extend_from_slice(TINY_DATA);
    d2nn(&args)
}

#[test]
fn train_then_eval_agree() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let o = train_tiny("configs/high_low.toml", &run, "6");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("test accuracy"));
    for f in ["config.toml", "metrics.jsonl", "summary.json", "model.safetensors"] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let o = d2nn(&["eval", "--run-dir", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("summary.json       matches"), "{}", stdout(&o));

    // The routing report's router is the trained network's argmax routing: same accuracy and cost.
    let o = d2nn(&["eval", "--run-dir", run.to_str().unwrap(), "--routing"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("random routing at the same rates"), "{}", stdout(&o));
    let json = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(run.join(f)).unwrap()).unwrap()
    };
    let (summary, report) = (json("summary.json"), json("routing.json"));
    assert_eq!(report["routed_accuracy"], summary["test_accuracy"]);
    assert_eq!(report["examples"], 300);
    let (routed, full) =
        (report["routed_cost_fraction"].as_f64().unwrap(), summary["mean_cost_fraction"].as_f64().unwrap());
    assert!((routed - full).abs() < 1e-9, "{routed} against {full}");
}

/// The routing report needs one controller and says so, naming the graph's count.
#[test]
fn eval_routing_refuses_a_static_network() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    assert!(train_tiny("configs/static_high.toml", &run, "1").status.success());
    let o = d2nn(&["eval", "--run-dir", run.to_str().unwrap(), "--routing"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("one or more controllers") && stderr(&o).contains("has 0 controllers"),
        "{}",
        stderr(&o)
    );
    assert!(!run.join("routing.json").exists());
}

/// A sweep writes its points, random routing beside every λ, and the plot; training runs in
/// parallel (`--jobs 2`) gives the same numbers as one after another.
#[test]
fn sweep_in_parallel_matches_sequential() {
    let dir = tempfile::tempdir().unwrap();
    let points = |jobs: &str| -> Vec<serde_json::Value> {
        let out = dir.path().join(format!("jobs{jobs}"));
        let mut args = vec!["sweep", "--config", "configs/high_low.toml", "--lambdas", "0.5,1.0", "--max-steps", "8"];
        args.extend_from_slice(&["--jobs", jobs, "--run-dir", out.to_str().unwrap()]);
        args.extend_from_slice(TINY_DATA);
        let o = d2nn(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(out.join("tradeoff.png").is_file());
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
        json["points"].as_array().unwrap().clone()
    };
    let sequential = points("1");
    let kinds: Vec<&str> = sequential.iter().map(|p| p["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["d2nn", "random_routing", "d2nn", "random_routing", "static", "static"]);
    // high_low has one controller: each random point carries the exact expectation of its coin flips,
    // which is the routing report's (written beside the run) and lies between the two paths' accuracies.
    for p in sequential.iter().filter(|p| p["kind"] == "random_routing") {
        let expected = p["expected_accuracy"].as_f64().unwrap();
        let report_file = Path::new(p["run_dir"].as_str().unwrap()).join("routing.json");
        let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(report_file).unwrap()).unwrap();
        assert_eq!(report["random_accuracy"].as_f64(), Some(expected));
        let forced: Vec<f64> =
            report["forced_accuracy"].as_array().unwrap().iter().map(|a| a.as_f64().unwrap()).collect();
        assert!(expected >= forced[0].min(forced[1]) - 1e-12 && expected <= forced[0].max(forced[1]) + 1e-12);
    }
    for p in sequential.iter().filter(|p| p["kind"] != "random_routing") {
        assert!(p.get("expected_accuracy").is_none(), "{p}");
    }
    let parallel = points("2");
    for (a, b) in sequential.iter().zip(&parallel) {
        for key in ["label", "accuracy", "mean_cost_fraction"] {
            assert_eq!(a[key], b[key], "{key} of {}", a["label"]);
        }
    }
}

/// A small, fast training run of high_low: 16 global steps of 32 examples per epoch.
const SMALL: &[&str] = &[
    "--quiet",
    "--workers",
    "2",
    "--set",
    "data.train_limit=512",
    "--set",
    "data.test_limit=100",
    "--set",
    "train.batch_size=32",
    "--set",
    "train.warmup_steps=4",
];

fn train_small(run: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--config", "configs/high_low.toml", "--run-dir", run.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(extra);
    d2nn(&args)
}

fn spawn_small(run: &Path, extra: &[&str]) -> std::process::Child {
    let mut args = vec!["train", "--config", "configs/high_low.toml", "--run-dir", run.to_str().unwrap()];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_d2nn"))
        .args(&args)
        .current_dir(root())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// `checkpoints inspect --json` of a run's LATEST.
fn inspect_json(path: &Path) -> serde_json::Value {
    let o = d2nn(&["checkpoints", "inspect", path.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

fn wait_for(path: &Path, child: &mut std::process::Child) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !path.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before {} appeared", path.display());
        assert!(std::time::Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn killed_run_resumes_to_the_straight_runs_parameters() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let (straight, killed) = (dir.path().join("straight"), dir.path().join("killed"));
    let o = train_small(&straight, &["--max-steps", "40"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = inspect_json(&straight);
    assert_eq!(want["position"]["step"], 40);

    let mut child = spawn_small(&killed, &["--max-steps", "40", "--checkpoint-every", "4"]);
    wait_for(&killed.join("checkpoints/LATEST"), &mut child);
    child.kill().unwrap(); // SIGKILL: no handler runs, whatever was being written stays half-written
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");
    let at_kill = inspect_json(&killed)["position"]["step"].as_u64().unwrap();
    assert!(at_kill < 40, "killed after the run finished");

    // No --config: the checkpoint's own; --max-steps counts global steps.
    let o = d2nn(&["train", "--resume", killed.to_str().unwrap(), "--max-steps", "40", "--quiet", "--workers", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = inspect_json(&killed);
    assert_eq!(got["position"]["step"], 40);
    assert_eq!(got["params_sha256"], want["params_sha256"], "resumed after kill -9 at step {at_kill}");

    let o = d2nn(&["checkpoints", "list", killed.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let latest_line = stdout(&o).lines().find(|l| l.contains("LATEST")).unwrap_or_default().to_string();
    assert!(latest_line.starts_with("step-00000040"), "{}", stdout(&o));
    let o = d2nn(&["eval", "--checkpoint", killed.to_str().unwrap()]);
    assert!(o.status.success() && stdout(&o).contains("test accuracy"), "{}", stderr(&o));
}

#[test]
fn sigterm_checkpoints_and_exits_zero_and_bad_resumes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut child = spawn_small(&run, &["--max-steps", "5000", "--checkpoint-every", "3"]);
    wait_for(&run.join("checkpoints/LATEST"), &mut child);
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "exit {:?}: {}", o.status, stderr(&o));
    let stopped = stdout(&o);
    let step = inspect_json(&run)["position"]["step"].as_u64().unwrap();
    assert!(stopped.contains(&format!("stopped after step {step};")), "{stopped}");
    assert!(step < 5000);

    let o = d2nn(&["train", "--resume", run.to_str().unwrap(), "--set", "train.lambda=0.5", "--max-steps", "1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("train.lambda: 0.98 in the checkpoint, 0.5 now"), "{}", stderr(&o));
    let o = d2nn(&["train", "--resume", run.to_str().unwrap(), "--config", "configs/static_high.toml"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("graph differs"), "{}", stderr(&o));
    let o = d2nn(&["train", "--resume", run.to_str().unwrap(), "--set", "train.epochs=9", "--max-steps", "1"]);
    assert!(stderr(&o).contains("--allow-config-change"), "{}", stderr(&o));

    // A flipped byte: every command names the file, none panics, nothing is written.
    let latest = run.join("checkpoints").join(std::fs::read_to_string(run.join("checkpoints/LATEST")).unwrap().trim());
    let model = latest.join("model.safetensors");
    let mut bytes = std::fs::read(&model).unwrap();
    bytes[100] ^= 0x20;
    std::fs::write(&model, &bytes).unwrap();
    for args in [
        vec!["checkpoints", "inspect", run.to_str().unwrap()],
        vec!["eval", "--checkpoint", run.to_str().unwrap()],
        vec!["train", "--resume", run.to_str().unwrap(), "--max-steps", "1"],
    ] {
        let o = d2nn(&args);
        let e = stderr(&o);
        assert!(
            !o.status.success() && e.contains("model.safetensors") && e.contains("checksum mismatch"),
            "{args:?}: {e}"
        );
        assert!(!e.contains("panicked"), "{e}");
    }
    assert_eq!(std::fs::read(&model).unwrap(), bytes);
    // The listing verifies every checkpoint: the damaged one is named with why; the exit says so.
    let o = d2nn(&["checkpoints", "list", run.to_str().unwrap()]);
    let listing = stdout(&o);
    let name = latest.file_name().unwrap().to_string_lossy().into_owned();
    let line = listing.lines().find(|l| l.starts_with(&name)).unwrap_or_default();
    assert!(line.contains("DAMAGED") && line.contains("model.safetensors"), "{listing}");
    assert!(listing.lines().filter(|l| l.starts_with("step-") && l != &line).all(|l| l.contains("verified")));
    assert!(!o.status.success() && stderr(&o).contains(&name), "{}", stderr(&o));
}

/// `d2nn bench train` prints one line per thread count with every phase of the step timed, then the
/// medians; a zero thread count is refused.
#[test]
fn bench_train_times_every_phase() {
    let o = d2nn(&[
        "bench",
        "train",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--batch",
        "16",
        "--threads",
        "1",
        "--set",
        "data.train_limit=256",
        "--set",
        "data.test_limit=100",
        "--set",
        "train.algorithm=reinforce",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{}", stdout(&o));
    let m = &lines[0];
    let f = |k: &str| m[k].as_f64().unwrap_or_else(|| panic!("no {k} in {m}"));
    assert_eq!(
        (m["impl"].as_str(), m["routing"].as_str(), m["steps"].as_u64()),
        (Some("d2nn"), Some("random"), Some(3))
    );
    for phase in ["forward_ms", "backward_ms", "optimizer_ms"] {
        assert!(f(phase) > 0.0 && f(phase) <= f("step_ms"), "{phase} against step_ms in {m}");
    }
    let rate = 16.0 * 1e3 / f("step_ms");
    assert!(f("examples_per_sec") > 0.3 * rate && f("examples_per_sec") < 3.0 * rate, "{m}");
    assert_eq!(lines[1]["median_examples_per_sec"], m["examples_per_sec"]);

    let o = d2nn(&["bench", "train", "--threads", "0"]);
    assert!(!o.status.success() && stderr(&o).contains("--threads"), "{}", stderr(&o));
}
