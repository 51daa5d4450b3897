use std::io::Write;

use super::*;

fn file_with(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

const MINIMAL: &str = r#"
seed = 4
[train]
lr = 0.1
lambda = 0.5
[model]
output = "out"
[[model.nodes]]
name = "fc"
inputs = ["input"]
layers = [{ type = "flatten" }, { type = "linear", out = 10 }]
[[model.nodes]]
name = "out"
kind = "output"
inputs = ["fc"]
"#;

#[test]
fn shipped_configs_load() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let cfg = RunConfig::load(&path, &[], &[]).unwrap_or_else(|e| panic!("{e}"));
        assert!(!cfg.model.nodes.is_empty());
    }
}

#[test]
fn layers_file_then_env_then_overrides() {
    let f = file_with(MINIMAL);
    let cfg = RunConfig::load(f.path(), &[], &[]).unwrap();
    assert_eq!((cfg.seed, cfg.train.lr, cfg.train.lambda), (4, 0.1, 0.5));
    assert_eq!(cfg.train.epochs, TrainConfig::default().epochs);

    let env = vec![
        ("D2NN_TRAIN__LR".to_string(), "0.2".to_string()),
        ("D2NN_TRAIN__EPOCHS".to_string(), "9".to_string()),
        ("D2NN_SEED".to_string(), "5".to_string()),
        // Not config keys: ignored, not rejected.
        ("D2NN_DATA_DIR".to_string(), "/x".to_string()),
        ("D2NN_CLUSTER_COOKIE".to_string(), "s".to_string()),
        ("PATH".to_string(), "/bin".to_string()),
    ];
    let cfg = RunConfig::load(f.path(), &env, &[]).unwrap();
    assert_eq!((cfg.seed, cfg.train.lr, cfg.train.epochs), (5, 0.2, 9));

    let sets = vec!["train.lr=0.3".to_string(), "train.algorithm=reinforce".to_string()];
    let cfg = RunConfig::load(f.path(), &env, &sets).unwrap();
    assert_eq!(cfg.train.lr, 0.3);
    assert_eq!(cfg.train.algorithm, Algorithm::Reinforce);
    assert_eq!(cfg.train.epochs, 9);
}

#[test]
fn unknown_keys_are_errors_naming_key_and_file() {
    let f = file_with(&MINIMAL.replace("lr = 0.1", "lr = 0.1\nlearning_rate = 3"));
    let e = RunConfig::load(f.path(), &[], &[]).unwrap_err().to_string();
    assert!(e.contains("train") && e.contains("learning_rate"), "{e}");
    assert!(e.contains(&f.path().display().to_string()), "{e}");

    let f = file_with(MINIMAL);
    let e = RunConfig::load(f.path(), &[], &["train.epoch=3".into()]).unwrap_err().to_string();
    assert!(e.contains("epoch"), "{e}");

    let f = file_with(&MINIMAL.replace("{ type = \"flatten\" }", "{ type = \"flaten\" }"));
    let e = RunConfig::load(f.path(), &[], &[]).unwrap_err().to_string();
    assert!(e.contains("model.nodes[0].layers[0]") && e.contains("flaten"), "{e}");
}

#[test]
fn wrong_types_and_ranges_are_errors_naming_the_key() {
    let f = file_with(&MINIMAL.replace("lr = 0.1", "lr = \"fast\""));
    let e = RunConfig::load(f.path(), &[], &[]).unwrap_err().to_string();
    assert!(e.contains("train.lr"), "{e}");
    let f = file_with(MINIMAL);
    let e = RunConfig::load(f.path(), &[], &["train.lambda=1.5".into()]).unwrap_err().to_string();
    assert!(e.contains("train.lambda"), "{e}");
    let e = RunConfig::load(f.path(), &[], &["train.bag_size=3".into()]).unwrap_err().to_string();
    assert!(e.contains("train.bag_size"), "{e}");
    let e = RunConfig::load(f.path(), &[], &["train.branch_loss_weight=-1".into()]).unwrap_err().to_string();
    assert!(e.contains("train.branch_loss_weight"), "{e}");
    // A static graph takes the branch loss as a no-op (sweeps pass their overrides to the baselines);
    // a graph with more than 8 joint actions (chain: 27) is refused.
    RunConfig::load(f.path(), &[], &["train.branch_loss_weight=1".into()]).unwrap();
    let chain = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/chain.toml");
    let e = RunConfig::load(&chain, &[], &["train.branch_loss_weight=1".into()]).unwrap_err().to_string();
    assert!(e.contains("train.branch_loss_weight") && e.contains("at most 8 joint actions"), "{e}");
    RunConfig::load(f.path(), &[], &["train.q_every_action=true".into()]).unwrap();
    let e = RunConfig::load(&chain, &[], &["train.q_every_action=true".into()]).unwrap_err().to_string();
    assert!(e.contains("train.q_every_action") && e.contains("at most 8 joint actions"), "{e}");
    let high_low = chain.with_file_name("high_low.toml");
    let sets = ["train.q_every_action=true".into(), "train.algorithm=reinforce".into()];
    let e = RunConfig::load(&high_low, &[], &sets).unwrap_err().to_string();
    assert!(e.contains("train.q_every_action") && e.contains("q_learning"), "{e}");
    let cascade = chain.with_file_name("cascade.toml");
    RunConfig::load(&cascade, &[], &["train.q_targets=centered".into()]).unwrap();
    let e = RunConfig::load(&cascade, &[], &["train.q_targets=centered".into(), "train.bag_credit=bag".into()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("train.q_targets") && e.contains("per-example"), "{e}");
    let e = RunConfig::load(f.path(), &[], &["train.q_targets=centered".into()]).unwrap_err().to_string();
    assert!(e.contains("train.q_targets") && e.contains("q_every_action"), "{e}");
    let floor = |rate: &str| [format!("train.rate_floor.rate={rate}"), "train.rate_floor.bonus=0.1".into()];
    let centered = |rate: &str| [&floor(rate)[..], &["train.q_targets=centered".into()]].concat();
    let loaded = RunConfig::load(&cascade, &[], &centered("0.15")).unwrap();
    assert_eq!(loaded.train.rate_floor, Some(crate::rl::RateFloor { rate: 0.15, bonus: 0.1 }));
    let e = RunConfig::load(&cascade, &[], &floor("0.15")).unwrap_err().to_string();
    assert!(e.contains("train.rate_floor") && e.contains("centered"), "{e}");
    let e = RunConfig::load(&cascade, &[], &centered("0.7")).unwrap_err().to_string();
    assert!(e.contains("train.rate_floor") && e.contains("(0, 0.5]"), "{e}");
    let e = RunConfig::load(f.path(), &[], &["nonsense".into()]).unwrap_err().to_string();
    assert!(e.contains("key=value"), "{e}");
    let e = RunConfig::load(std::path::Path::new("/no/such.toml"), &[], &[]).unwrap_err().to_string();
    assert!(e.contains("/no/such.toml"), "{e}");
}

#[test]
fn resolved_config_round_trips_through_toml() {
    let f = file_with(MINIMAL);
    let cfg = RunConfig::load(f.path(), &[], &["train.grad_clip=2.5".into()]).unwrap();
    let text = cfg.to_toml().unwrap();
    let back = RunConfig::from_toml(&text, "resolved.toml").unwrap();
    assert_eq!(cfg, back);
}

#[test]
fn every_section_is_checked_when_the_config_loads() {
    let cases: [(&[&str], &str); 3] = [
        (
            &["train.optimizer.kind=sgd", "train.optimizer.momentum=1.5"],
            "key `train.optimizer`: optimizer: momentum = 1.5",
        ),
        (
            &["train.schedule.kind=step", "train.schedule.every_steps=0", "train.schedule.gamma=0.5"],
            "key `train.schedule`: lr schedule: every_steps",
        ),
        (&["train.epsilon.start=2"], "key `train.epsilon`: epsilon.start"),
    ];
    for (sets, key) in cases {
        let f = file_with(MINIMAL);
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let err = RunConfig::load(f.path(), &[], &sets).unwrap_err().to_string();
        assert!(err.contains(key) && err.contains(&f.path().display().to_string()), "{sets:?}: {err}");
    }
}
