//! What a person looks at after a run: `curves.png`, TensorBoard event files that hold the same
//! series as `metrics.jsonl`, and `d2nn plot` redrawing both plots from the files.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use d2nn_common::tfevents::{event_files, read_events};
use d2nn_common::train::{line_scalars, run_controllers, RunDir};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn d2nn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_d2nn")).args(args).current_dir(root()).env_remove("RUST_LOG").output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.starts_with(b"\x89PNG\r\n\x1a\n") && b.len() > 5_000)
}

#[test]
fn a_trained_run_has_curves_and_tensorboard_events_equal_to_its_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    let out = ok(&d2nn(&[
        "train",
        "--config",
        "configs/high_low.toml",
        "--quiet",
        "--max-steps",
        "6",
        "--run-dir",
        run_s,
        "--set",
        "data.train_limit=512",
        "--set",
        "data.test_limit=300",
        "--set",
        "train.batch_size=32",
        "--set",
        "train.log_every=2",
    ]));
    assert!(out.contains("training curves"), "{out}");
    assert!(is_png(&run.join("curves.png")));

    // Every record's CRCs are checked by the reader; every scalar of every line is there.
    let dir_ = RunDir::open(&run).unwrap();
    let lines = dir_.read_metrics().unwrap();
    assert_eq!(lines.iter().map(|l| l.step).collect::<Vec<_>>(), [2, 4, 6]);
    let mut tb: BTreeMap<(i64, String), f32> = BTreeMap::new();
    let files = event_files(&run.join("tb")).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    for event in read_events(&files[0]).unwrap() {
        for (tag, v) in event.scalars {
            tb.insert((event.step, tag), v);
        }
    }
    let controllers = run_controllers(&dir_);
    for line in &lines {
        assert_eq!(line.action_rates.len(), 1, "one controller's rates per line");
        for (tag, v) in line_scalars(line, &controllers) {
            assert_eq!(tb.get(&(line.step as i64, tag.clone())), Some(&(v as f32)), "{tag} at step {}", line.step);
        }
        let rates = &line.action_rates[0];
        assert_eq!(tb[&(line.step as i64, "actions/router/high".to_string())], rates[1] as f32);
    }
    let summary = dir_.read_summary().unwrap();
    assert_eq!(tb[&(6, "test/accuracy".to_string())], summary.test_accuracy as f32);

    // eval --run-dir draws the curves again; so does `d2nn plot curves`.
    std::fs::remove_file(run.join("curves.png")).unwrap();
    ok(&d2nn(&["eval", "--run-dir", run_s]));
    assert!(is_png(&run.join("curves.png")));
    std::fs::remove_file(run.join("curves.png")).unwrap();
    ok(&d2nn(&["plot", "curves", run_s]));
    assert!(is_png(&run.join("curves.png")));
}

#[test]
fn plot_sweep_redraws_from_sweep_json_and_overlays_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = root().join("coordinator/src/plot/fixtures");
    let sweep = dir.path().join("sweep_a");
    std::fs::create_dir(&sweep).unwrap();
    std::fs::copy(fixtures.join("crowded_seed0.json"), sweep.join("sweep.json")).unwrap();
    let out = ok(&d2nn(&["plot", "sweep", sweep.to_str().unwrap()]));
    assert!(out.contains("tradeoff.png") && out.contains("0 without room"), "{out}");
    assert!(is_png(&sweep.join("tradeoff.png")));

    let seeds = dir.path().join("seeds.png");
    let second = fixtures.join("crowded_seed1.json");
    let out =
        ok(&d2nn(&["plot", "sweep", sweep.to_str().unwrap(), second.to_str().unwrap(), "-o", seeds.to_str().unwrap()]));
    assert!(out.contains("50 points from 2 sweep(s)"), "{out}");
    assert!(is_png(&seeds));

    let o = d2nn(&["plot", "sweep", dir.path().join("nope").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope"), "the missing file is named");
    let help = ok(&d2nn(&["--help"]));
    assert!(help.contains("plot"), "{help}");
}
