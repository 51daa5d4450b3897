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
    for cmd in ["data", "config", "inspect", "train", "eval", "sweep", "bench", "doctor"] {
        assert!(text.contains(cmd), "--help does not mention {cmd}:\n{text}");
    }
    let o = d2nn(&["train", "--help"]);
    assert!(stdout(&o).contains("--max-steps") && stdout(&o).contains("--set"));
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

#[test]
fn train_then_eval_agree() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let o = d2nn(&[
        "train",
        "--config",
        "configs/high_low.toml",
        "--quiet",
        "--max-steps",
        "6",
        "--run-dir",
        run.to_str().unwrap(),
        "--set",
        "data.train_limit=512",
        "--set",
        "data.test_limit=300",
        "--set",
        "train.batch_size=32",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("test accuracy"));
    for f in ["config.toml", "metrics.jsonl", "summary.json", "model.safetensors"] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let o = d2nn(&["eval", "--run-dir", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("summary.json       matches"), "{}", stdout(&o));
}

/// A sweep writes its points, random routing beside every λ, and the plot; training runs in
/// parallel (`--jobs 2`) gives the same numbers as one after another.
#[test]
fn sweep_in_parallel_matches_sequential() {
    let dir = tempfile::tempdir().unwrap();
    let points = |jobs: &str| -> Vec<serde_json::Value> {
        let out = dir.path().join(format!("jobs{jobs}"));
        let o = d2nn(&[
            "sweep",
            "--config",
            "configs/high_low.toml",
            "--lambdas",
            "0.5,1.0",
            "--max-steps",
            "8",
            "--jobs",
            jobs,
            "--run-dir",
            out.to_str().unwrap(),
            "--set",
            "data.train_limit=512",
            "--set",
            "data.test_limit=300",
            "--set",
            "train.batch_size=32",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(out.join("tradeoff.png").is_file());
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
        json["points"].as_array().unwrap().clone()
    };
    let sequential = points("1");
    let kinds: Vec<&str> = sequential.iter().map(|p| p["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["d2nn", "random_routing", "d2nn", "random_routing", "static", "static"]);
    let parallel = points("2");
    for (a, b) in sequential.iter().zip(&parallel) {
        for key in ["label", "accuracy", "mean_cost_fraction"] {
            assert_eq!(a[key], b[key], "{key} of {}", a["label"]);
        }
    }
}
