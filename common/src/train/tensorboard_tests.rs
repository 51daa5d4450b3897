use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::config::RunConfig;
use crate::graph::Graph;
use crate::tfevents::read_events;

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

fn spec_of(file: &str) -> (GraphSpec, i64) {
    let text = std::fs::read_to_string(configs_dir().join(file)).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    let classes = if value["data"]["task"].as_str() == Some("fashion-binary") { 2 } else { 10 };
    (value["model"].clone().try_into().unwrap(), classes)
}

fn engine_order(spec: &GraphSpec, classes: i64) -> Vec<String> {
    let g = Graph::build(spec, &[1, 28, 28], classes, "t.toml").unwrap();
    g.controls.iter().map(|&c| g.nodes[c].name.clone()).collect()
}

#[test]
fn controllers_come_in_the_engines_order_for_every_config_and_any_declaration_order() {
    let mut checked = 0;
    for entry in std::fs::read_dir(configs_dir()).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !file.ends_with(".toml") {
            continue;
        }
        let (spec, classes) = spec_of(&file);
        let names: Vec<String> = controllers(&spec).into_iter().map(|c| c.name).collect();
        assert_eq!(names, engine_order(&spec, classes), "{file}");
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} configs");

    // Declared backwards, the cascade's second gate comes first in the file but not in the engine.
    let (mut spec, classes) = spec_of("cascade.toml");
    spec.nodes.reverse();
    let infos = controllers(&spec);
    let names: Vec<String> = infos.iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, engine_order(&spec, classes));
    assert_eq!(names, ["gate1", "gate2"]);
    assert_eq!(infos[0].actions, ["exit1", "stage2"]);
}

fn line(step: u64, rates: Vec<Vec<f64>>) -> MetricsLine {
    MetricsLine {
        step,
        epoch: 0,
        loss: 1.0 / step as f64,
        task_loss: 0.7 / step as f64,
        control_loss: 0.3 / step as f64,
        train_accuracy: 0.5 + step as f64 / 100.0,
        mean_cost_fraction: 0.9 - step as f64 / 100.0,
        reward_mean: 0.1,
        baseline: vec![0.2, 0.3],
        advantage_variance: None,
        lr: 0.01,
        epsilon: Some(0.5),
        examples_per_sec: 1000.0 + step as f64,
        action_rates: rates,
        split: None,
    }
}

fn summary(steps: u64) -> Summary {
    Summary {
        task: "fashion-binary".into(),
        algorithm: "q_learning".into(),
        lambda: 0.9,
        test_accuracy: 0.97,
        test_f1: Some(0.81),
        test_loss: 0.2,
        val_accuracy: Some(0.95),
        mean_cost_fraction: 0.4,
        mean_mflops_per_example: 2.0,
        full_mflops_per_example: 5.0,
        action_rates: BTreeMap::from([("gate1".to_string(), vec![0.6, 0.4]), ("gate2".to_string(), vec![0.1, 0.9])]),
        controller_run_rates: BTreeMap::new(),
        examples_per_sec: 1.0,
        steps,
        epochs: 1,
        wall_seconds: 1.0,
        workers: 1,
        coverage: Vec::new(),
    }
}

/// Every event of a run's tb/ directory, every record's CRCs verified: (step, tag) → value.
fn tb_scalars(run: &RunDir) -> BTreeMap<(i64, String), f32> {
    let files = event_files(&run.file(RunDir::TENSORBOARD)).unwrap();
    assert!(!files.is_empty(), "no event file");
    let mut out = BTreeMap::new();
    for f in files {
        for e in read_events(&f).unwrap() {
            for (tag, v) in e.scalars {
                assert!(out.insert((e.step, tag.clone()), v).is_none(), "{tag} at step {} twice", e.step);
            }
        }
    }
    out
}

fn cascade_run(dir: &Path) -> RunDir {
    let run = RunDir::create(dir).unwrap();
    let cfg = RunConfig::load(&configs_dir().join("cascade.toml"), &[], &[]).unwrap();
    run.write_config(&cfg).unwrap();
    run
}

#[test]
fn the_event_files_hold_every_metrics_line_and_the_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let run = cascade_run(dir.path());
    let mut w = run.metrics_writer(false).unwrap();
    for step in [10, 20, 30] {
        RunDir::append_metrics(&mut w, &line(step, vec![vec![0.25, 0.75], vec![1.0, 0.0]])).unwrap();
    }
    run.write_summary(&summary(30)).unwrap();

    let tb = tb_scalars(&run);
    let lines = run.read_metrics().unwrap();
    assert_eq!(lines.len(), 3);
    let controllers = run_controllers(&run);
    let mut expected = 0;
    for l in &lines {
        for (tag, v) in line_scalars(l, &controllers) {
            assert_eq!(tb.get(&(l.step as i64, tag.clone())), Some(&(v as f32)), "{tag} at {}", l.step);
            expected += 1;
        }
    }
    // Named as the config names them, in the engine's order.
    assert_eq!(tb[&(20, "actions/gate1/stage2".to_string())], 0.75);
    assert_eq!(tb[&(20, "actions/gate2/exit2".to_string())], 1.0);
    assert_eq!(tb[&(10, "train/task_loss".to_string())], 0.07);
    for (tag, v) in [("test/accuracy", 0.97f32), ("test/f1", 0.81), ("val/accuracy", 0.95)] {
        assert_eq!(tb[&(30, tag.to_string())], v, "{tag}");
    }
    assert_eq!(tb[&(30, "test/actions/gate2/stage3".to_string())], 0.9);
    expected += summary_scalars(&summary(30), &controllers).len();
    assert_eq!(tb.len(), expected, "{tb:?}");

    // Writing the summary again adds nothing twice (tb_scalars refuses duplicates).
    run.write_summary(&summary(30)).unwrap();
    assert_eq!(tb_scalars(&run).len(), expected);
}

#[test]
fn a_resumed_run_keeps_the_events_up_to_its_checkpoint_and_a_fresh_one_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let run = cascade_run(dir.path());
    let mut w = run.metrics_writer(false).unwrap();
    for step in [10, 20, 30] {
        RunDir::append_metrics(&mut w, &line(step, vec![])).unwrap();
    }
    run.write_summary(&summary(30)).unwrap();
    drop(w);

    let mut w = run.resume_metrics(20).unwrap();
    RunDir::append_metrics(&mut w, &line(30, vec![])).unwrap();
    RunDir::append_metrics(&mut w, &line(40, vec![])).unwrap();
    let tb = tb_scalars(&run);
    let steps: BTreeSet<i64> = tb.keys().map(|k| k.0).collect();
    assert_eq!(steps, BTreeSet::from([10, 20, 30, 40]));
    assert!(!tb.contains_key(&(30, "test/accuracy".to_string())), "the first run's evaluation stays");
    assert_eq!(event_files(&run.file(RunDir::TENSORBOARD)).unwrap().len(), 1);
    let lines: Vec<u64> = run.read_metrics().unwrap().iter().map(|l| l.step).collect();
    assert_eq!(lines, [10, 20, 30, 40]);
    drop(w);

    let mut w = run.metrics_writer(false).unwrap();
    RunDir::append_metrics(&mut w, &line(5, vec![])).unwrap();
    let steps: BTreeSet<i64> = tb_scalars(&run).keys().map(|k| k.0).collect();
    assert_eq!(steps, BTreeSet::from([5]));
}
