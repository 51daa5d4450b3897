use std::collections::BTreeMap;

use d2nn_common::config::RunConfig;
use d2nn_common::train::{controllers, ControllerInfo};

use super::*;

fn metrics(step: u64, reinforce: bool) -> MetricsLine {
    let s = step as f64;
    MetricsLine {
        step,
        epoch: 0,
        loss: 2.0 / s,
        task_loss: 1.5 / s,
        control_loss: 0.5 / s,
        train_accuracy: 0.5 + s / 1000.0,
        mean_cost_fraction: 1.0 - s / 1000.0,
        reward_mean: 0.0,
        baseline: vec![0.0, 0.0],
        advantage_variance: reinforce.then_some(0.1 * s),
        lr: 0.1,
        epsilon: (!reinforce).then_some(1.0 - s / 1000.0),
        examples_per_sec: 1.0,
        action_rates: vec![vec![s / 1000.0, 1.0 - s / 1000.0], vec![0.5, 0.5]],
        split: None,
    }
}

fn summary(steps: u64) -> Summary {
    Summary {
        task: "fashion-binary".into(),
        algorithm: "q_learning".into(),
        lambda: 0.9,
        test_accuracy: 0.97,
        test_f1: Some(0.8),
        test_loss: 0.1,
        val_accuracy: Some(0.96),
        mean_cost_fraction: 0.3,
        mean_mflops_per_example: 1.0,
        full_mflops_per_example: 5.0,
        action_rates: BTreeMap::from([("gate1".to_string(), vec![1.0, 0.0])]),
        controller_run_rates: BTreeMap::new(),
        examples_per_sec: 1.0,
        steps,
        epochs: 1,
        wall_seconds: 1.0,
        workers: 1,
        coverage: Vec::new(),
    }
}

fn cascade() -> Vec<ControllerInfo> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/cascade.toml");
    controllers(&RunConfig::load(&path, &[], &[]).unwrap().model)
}

#[test]
fn the_panels_hold_every_series_the_run_logged() {
    let lines: Vec<MetricsLine> = [100, 200, 300].map(|s| metrics(s, false)).to_vec();
    let c = run_curves("t", &lines, &cascade(), &[(100, 0.9), (300, 0.95)], Some(&summary(300)));
    let titles: Vec<&str> = c.panels.iter().map(|p| p.title.as_str()).collect();
    assert_eq!(
        titles,
        [
            "task loss",
            "control loss",
            "accuracy",
            "cost fraction (executed / full FLOPs)",
            "gate1: action rates",
            "gate2: action rates",
            "ε (exploration)"
        ]
    );
    assert_eq!(c.panels[0].series[0].points, [(100.0, 0.015), (200.0, 0.0075), (300.0, 0.005)]);
    let accuracy = &c.panels[2].series;
    let names: Vec<&str> = accuracy.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["train", "validation", "test (end)"]);
    // The checkpoint at the last step already holds the validation accuracy: no second point.
    assert_eq!(accuracy[1].points, [(100.0, 0.9), (300.0, 0.95)]);
    assert_eq!((accuracy[0].mark, accuracy[1].mark, accuracy[2].mark), (Mark::Line, Mark::Validation, Mark::Test));
    let gate1 = &c.panels[4].series;
    let names: Vec<&str> = gate1.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["exit1", "stage2", "exit1 (test)", "stage2 (test)"]);
    assert_eq!(gate1[1].points, [(100.0, 0.9), (200.0, 0.8), (300.0, 0.7)]);
    // The test-time rate at the end, in the colour of its action's line.
    assert_eq!(
        (gate1[3].points.clone(), gate1[3].color, gate1[3].mark),
        (vec![(300.0, 0.0)], gate1[1].color, Mark::Test)
    );
    assert_eq!(c.panels[5].series.len(), 2, "no test rates for gate2 in the summary");

    let lines: Vec<MetricsLine> = [100, 200].map(|s| metrics(s, true)).to_vec();
    let c = run_curves("t", &lines, &[], &[], None);
    let last = c.panels.last().unwrap();
    assert_eq!(last.title, "advantage variance");
    assert_eq!(c.panels[4].title, "controller 0: action rates");
    assert_eq!(c.panels[4].series[0].name, "action 0");
}

#[test]
fn a_run_directory_gets_its_curves_png() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::create(dir.path()).unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/cascade.toml");
    run.write_config(&RunConfig::load(&path, &[], &[]).unwrap()).unwrap();
    let mut w = run.metrics_writer(false).unwrap();
    for s in (1..=20).map(|k| k * 50) {
        RunDir::append_metrics(&mut w, &metrics(s, false)).unwrap();
    }
    run.write_summary(&summary(1000)).unwrap();
    let png = write_run_curves(dir.path()).unwrap();
    assert_eq!(png, dir.path().join(CURVES_FILE));
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    // Seven panels: three columns, three rows, and the title.
    assert_eq!((width, height), (PANEL.0 * 3, PANEL.1 * 3 + 40));

    let empty = tempfile::tempdir().unwrap();
    assert!(write_run_curves(empty.path()).is_err(), "not a run directory");
}
