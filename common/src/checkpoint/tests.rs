//! The checkpoint format and protocol on the shipped high_low network: crash injection at every
//! write, damaged files, config refusal, and bitwise-exact resume of the local loop.
use std::fs;
use std::path::{Path, PathBuf};

use tch::{Device, Tensor};

use super::*;
use crate::config::{Algorithm, RunConfig};
use crate::exec::{param_digest, D2nn};
use crate::graph::tests::graph_of;
use crate::optim::{self, Optimizer, OptimizerConfig};
use crate::rl::{BaselineStore, EmaBaseline, RewardStats};
use crate::train::{LocalRun, MetricsLine, RunDir};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn high_low() -> RunConfig {
    RunConfig::load(&root().join("configs/high_low.toml"), &[], &[]).unwrap()
}

/// A replica without data: the high_low model, Adam state after one update, and a baseline that
/// has seen one step.
fn replica(seed: u64) -> (D2nn, Box<dyn Optimizer>, EmaBaseline) {
    let model = D2nn::new(graph_of("high_low.toml"), Device::Cpu, seed).unwrap();
    let flat = model.flat_parameters(0).unwrap();
    let adam = OptimizerConfig::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false };
    let mut optimizer = optim::try_build(&adam, &flat).unwrap();
    for p in flat.params() {
        (p * p).sum(tch::Kind::Float).backward();
    }
    optimizer.step(&flat, 0.01).unwrap();
    let mut baseline = EmaBaseline::new(&[2], 0.9);
    let mut stats = RewardStats::new(&[2]);
    let rewards = Tensor::from_slice(&[0.1f32, 0.7, -0.3]);
    crate::rl::test_util::record(
        &mut stats,
        0,
        &Tensor::from_slice(&[0i64, 1, 1]),
        &Tensor::from_slice(&[0i64, 1, 2]),
        &rewards,
        1,
    )
    .unwrap();
    baseline.update(&stats);
    (model, optimizer, baseline)
}

fn save(
    store: &CheckpointStore,
    cfg: &RunConfig,
    step: u64,
    replica: &(D2nn, Box<dyn Optimizer>, EmaBaseline),
    val_metric: Option<f64>,
    keep: &CheckpointConfig,
    writes: &mut WriteSteps,
) -> crate::Result<PathBuf> {
    let staging = store.begin(step, writes)?;
    let saved = write_tensors(&staging, &replica.0, replica.1.as_ref(), val_metric, writes)?;
    let sampler = crate::data::Sampler::from_step(cfg.seed, 100, 10, cfg.train.epochs, step)?.state();
    let position =
        Position { step, epoch: step / 10, step_in_epoch: step % 10, steps_per_epoch: 10, train_examples: 100 };
    let meta = CheckpointMeta::new(cfg, position, &replica.2, 2, saved, sampler);
    store.commit(&staging, &meta, keep, writes)
}

/// Opens what LATEST names and loads it into a fresh replica; returns the loaded params digest.
fn load_latest(run: &Path) -> crate::Result<String> {
    let (dir, meta) = open(run)?;
    let (model, mut optimizer, _) = replica(99);
    load_state(&dir, &meta, &model, optimizer.as_mut())?;
    assert_eq!(optimizer.steps(), meta.optimizer_steps);
    param_digest(&model)
}

#[test]
fn checkpoint_metadata_round_trips_bit_for_bit() {
    let run = tempfile::tempdir().unwrap();
    let store = CheckpointStore::of_run(run.path());
    let r = replica(1);
    let dir =
        save(&store, &high_low(), 7, &r, None, &CheckpointConfig::default(), &mut WriteSteps::unlimited()).unwrap();
    assert_eq!(dir, run.path().join("checkpoints/step-00000007"));
    assert_eq!(resolve(run.path()).unwrap(), dir);
    let meta = CheckpointMeta::read(&dir).unwrap();
    assert_eq!(
        meta.position,
        Position { step: 7, epoch: 0, step_in_epoch: 7, steps_per_epoch: 10, train_examples: 100 }
    );
    assert_eq!(meta.baseline, r.2, "baselines come back with the same bits");
    assert_eq!(meta.config, high_low());
    assert_eq!(meta.params_sha256, param_digest(&r.0).unwrap());
    assert_eq!(meta.optimizer_steps, 1);
    assert_eq!(meta.schedules.next_epsilon, Some(1.0), "step 7 is inside high_low's warm-up");
    assert_eq!(load_latest(run.path()).unwrap(), meta.params_sha256);
    // The saved model is also a plain VarStore file.
    let mut plain = D2nn::new(graph_of("high_low.toml"), Device::Cpu, 5).unwrap();
    plain.vs.load(dir.join(MODEL_FILE)).unwrap();
    assert_eq!(param_digest(&plain).unwrap(), meta.params_sha256);
}

#[test]
fn checkpoint_crash_before_any_write_leaves_latest_loadable() {
    let cfg = high_low();
    let keep = CheckpointConfig { every_steps: 1, keep_last: 1, keep_best: false };
    let (first, second) = (replica(1), replica(2));
    let (old, new) = (param_digest(&first.0).unwrap(), param_digest(&second.0).unwrap());
    assert_ne!(old, new);
    let mut k = 0;
    let total = loop {
        let run = tempfile::tempdir().unwrap();
        let store = CheckpointStore::of_run(run.path());
        save(&store, &cfg, 1, &first, None, &keep, &mut WriteSteps::unlimited()).unwrap();
        let result = save(&store, &cfg, 2, &second, None, &keep, &mut WriteSteps::crash_after(k));
        let loaded = load_latest(run.path()).unwrap_or_else(|e| panic!("crash after {k} writes: LATEST: {e}"));
        let names: Vec<String> = store.list().unwrap().into_iter().map(|l| l.name).collect();
        assert!(names.iter().all(|n| n.starts_with("step-")), "{names:?}");
        // A later commit removes whatever the crash left half-done.
        save(&store, &cfg, 3, &first, None, &keep, &mut WriteSteps::unlimited()).unwrap();
        let left: Vec<String> =
            fs::read_dir(store.root()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(left.iter().all(|n| !n.starts_with('.')), "leftovers after the next commit: {left:?}");
        match result {
            Ok(_) => {
                assert_eq!(loaded, new);
                break k;
            }
            Err(e) => {
                assert!(e.to_string().contains("injected crash"), "{e}");
                // Until LATEST is replaced (write 6: staging, model, optimizer, meta, rename, LATEST)
                // the old checkpoint stays LATEST; after, the new one.
                assert_eq!(&loaded, if k < 6 { &old } else { &new }, "crash after {k} writes");
            }
        }
        k += 1;
    };
    // Six writes of the new checkpoint, then the removal of the old one (keep_last = 1).
    assert_eq!(total, 7);
}

#[test]
fn checkpoint_retention_keeps_the_last_k_latest_and_best() {
    let cfg = high_low();
    let run = tempfile::tempdir().unwrap();
    let store = CheckpointStore::of_run(run.path());
    let keep = CheckpointConfig { every_steps: 1, keep_last: 2, keep_best: true };
    let r = replica(1);
    for (step, val) in [(1u64, 0.6), (2, 0.9), (3, 0.7), (4, 0.8), (5, 0.5)] {
        save(&store, &cfg, step, &r, Some(val), &keep, &mut WriteSteps::unlimited()).unwrap();
    }
    let listed = store.list().unwrap();
    let names: Vec<(&str, bool, bool)> = listed.iter().map(|l| (l.name.as_str(), l.latest, l.best)).collect();
    assert_eq!(
        names,
        [("step-00000002", false, true), ("step-00000004", false, false), ("step-00000005", true, false)],
        "the best (0.9) and the last two"
    );
    // A run resumed from an older checkpoint that saves the same step again never overwrites.
    let again = save(&store, &cfg, 5, &r, None, &keep, &mut WriteSteps::unlimited()).unwrap();
    assert!(again.ends_with("step-00000005-1"), "{}", again.display());
    assert!(store.list().unwrap().last().unwrap().latest);
}

/// Copies a saved checkpoint into a fresh run directory so each damage starts from a good one.
fn damaged(src: &Path, damage: impl FnOnce(&Path)) -> (tempfile::TempDir, String) {
    let run = tempfile::tempdir().unwrap();
    let dst = run.path().join("checkpoints/step-00000003");
    fs::create_dir_all(&dst).unwrap();
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    fs::write(run.path().join("checkpoints/LATEST"), "step-00000003\n").unwrap();
    damage(&dst);
    let before = snapshot(run.path());
    let err = match load_latest(run.path()) {
        Ok(_) => panic!("a damaged checkpoint loaded"),
        Err(e) => e.to_string(),
    };
    assert_eq!(snapshot(run.path()), before, "loading touched the files");
    (run, err)
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(snapshot(&path));
        } else {
            out.push((path.clone(), fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn checkpoint_damage_is_an_error_naming_the_file() {
    let good = tempfile::tempdir().unwrap();
    let store = CheckpointStore::of_run(good.path());
    let dir =
        save(&store, &high_low(), 3, &replica(1), None, &CheckpointConfig::default(), &mut WriteSteps::unlimited())
            .unwrap();
    let edit_meta = |f: fn(&str) -> String| {
        move |d: &Path| fs::write(d.join(META_FILE), f(&fs::read_to_string(d.join(META_FILE)).unwrap())).unwrap()
    };

    let (_r, e) = damaged(&dir, |d| {
        let path = d.join(MODEL_FILE);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(path, bytes).unwrap();
    });
    assert!(e.contains(MODEL_FILE) && e.contains("checksum mismatch"), "{e}");
    let (_r, e) = damaged(&dir, |d| {
        let path = d.join(OPTIMIZER_FILE);
        let bytes = fs::read(&path).unwrap();
        fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
    });
    assert!(e.contains(OPTIMIZER_FILE) && e.contains("truncated"), "{e}");
    let (_r, e) = damaged(&dir, edit_meta(|t| t.replace("\"format_version\": 2", "\"format_version\": 99")));
    assert!(e.contains(META_FILE) && e.contains("format version 99") && e.contains("reads versions 1 to 2"), "{e}");
    let (_r, e) = damaged(&dir, edit_meta(|t| t[..t.len() / 2].to_string()));
    assert!(e.contains(META_FILE) && e.contains("not valid JSON"), "{e}");
    let (_r, e) = damaged(&dir, |d| fs::remove_file(d.join(MODEL_FILE)).unwrap());
    assert!(e.contains(MODEL_FILE), "{e}");
    let (_r, e) = damaged(&dir, |d| {
        fs::write(d.parent().unwrap().join("LATEST"), "step-00000009\n").unwrap();
    });
    assert!(e.contains("LATEST") && e.contains("step-00000009"), "{e}");
    // A model file whose checksum is right but whose tensors belong to another graph.
    let (_r, e) = damaged(&dir, |d| {
        let other = D2nn::new(graph_of("static_high.toml"), Device::Cpu, 0).unwrap();
        other.vs.save(d.join(MODEL_FILE)).unwrap();
        let (bytes, sha256) = files::sha256_file(&d.join(MODEL_FILE)).unwrap();
        let mut meta: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(d.join(META_FILE)).unwrap()).unwrap();
        meta["files"][MODEL_FILE] = serde_json::json!({ "bytes": bytes, "sha256": sha256 });
        fs::write(d.join(META_FILE), meta.to_string()).unwrap();
    });
    assert!(e.contains(MODEL_FILE) && e.contains("model variables: tensor"), "{e}");
    let missing = tempfile::tempdir().unwrap();
    let e = open(missing.path()).unwrap_err().to_string();
    assert!(e.contains(&missing.path().display().to_string()) && e.contains("no checkpoints/LATEST"), "{e}");
}

#[test]
fn checkpoint_resume_refuses_a_different_graph_and_unsafe_keys() {
    let saved = high_low();
    let at = Path::new("run/checkpoints/step-00000010");
    let mut graph = saved.clone();
    let text = fs::read_to_string(root().join("configs/high_low.toml")).unwrap().replace("out = 64", "out = 32");
    graph.model = RunConfig::from_toml(&text, "edited").unwrap().model;
    let e = check_resume_config(at, &saved, &graph, true).unwrap_err().to_string();
    assert!(
        e.contains("graph differs") && e.contains("model.nodes.3.layers.0.out: 64 in the checkpoint, 32 now"),
        "{e}"
    );
    assert!(e.contains("step-00000010"), "{e}");

    let mut lambda = saved.clone();
    lambda.train.lambda = 0.5;
    let e = check_resume_config(at, &saved, &lambda, true).unwrap_err().to_string();
    assert!(e.contains("train.lambda: 0.98 in the checkpoint, 0.5 now") && !e.contains("graph"), "{e}");

    let mut schedule = saved.clone();
    schedule.train.epochs = 9;
    schedule.train.log_every = 1;
    schedule.checkpoint.every_steps = 3;
    let e = check_resume_config(at, &saved, &schedule, false).unwrap_err().to_string();
    assert!(e.contains("train.epochs") && e.contains("--allow-config-change") && !e.contains("log_every"), "{e}");
    let accepted = check_resume_config(at, &saved, &schedule, true).unwrap();
    assert_eq!(accepted, ["train.epochs: 5 in the checkpoint, 9 now"]);
}

fn small_run(algorithm: Algorithm) -> RunConfig {
    let mut cfg = high_low();
    cfg.data.dir = std::env::var_os("D2NN_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("data"));
    cfg.data.train_limit = Some(256);
    cfg.data.test_limit = Some(100);
    let t = &mut cfg.train;
    t.algorithm = algorithm;
    t.optimizer = OptimizerConfig::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-4, decoupled: true };
    // Small enough for Adam that the controller stays stochastic through step 40: a saturated
    // policy has no gradient, and then a lost baseline could not show.
    t.lr = 0.002;
    t.batch_size = 16;
    t.epochs = 3;
    t.warmup_steps = 5;
    t.epsilon.decay_steps = 20;
    t.log_every = 4;
    t.eval_batch_size = 100;
    cfg
}

fn local(cfg: &RunConfig, dir: &Path, max_steps: u64, resume: bool) -> String {
    let run = LocalRun {
        cfg,
        config_file: "high_low.toml",
        run_dir: dir,
        max_steps: Some(max_steps),
        device: Device::Cpu,
        resume: resume.then_some(dir),
        allow_config_change: false,
    };
    run.run(&mut |_, _| {}).unwrap();
    CheckpointMeta::read(&resolve(dir).unwrap()).unwrap().params_sha256
}

/// 40 steps of 16 examples straight, against 20 steps (stopped mid-epoch 1, as a killed process
/// stops after its last checkpoint) then a resume to 40, for both RL algorithms. The 2k vs
/// 1k steps scale down to 40 vs 20: the state crosses the epoch boundary and the warm-up and ε
/// schedules, which is what an error would show up in.
#[test]
fn checkpoint_local_resume_is_bitwise_exact() {
    for algorithm in [Algorithm::QLearning, Algorithm::Reinforce] {
        let cfg = small_run(algorithm);
        let straight = tempfile::tempdir().unwrap();
        let want = local(&cfg, straight.path(), 40, false);
        let split = tempfile::tempdir().unwrap();
        let half = local(&cfg, split.path(), 20, false);
        let meta = CheckpointMeta::read(&resolve(split.path()).unwrap()).unwrap();
        assert_eq!((meta.position.epoch, meta.position.step_in_epoch), (1, 4));
        let got = local(&cfg, split.path(), 40, true);
        assert_ne!(half, want);
        assert_eq!(got, want, "{algorithm:?}: resumed run differs from the straight one");
        // A checkpoint of format version 1 (before the sampler was recorded) resumes the same way.
        let old = tempfile::tempdir().unwrap();
        local(&cfg, old.path(), 20, false);
        let meta_path = resolve(old.path()).unwrap().join(META_FILE);
        let mut meta: serde_json::Value = serde_json::from_str(&fs::read_to_string(&meta_path).unwrap()).unwrap();
        let fields = meta.as_object_mut().unwrap();
        assert!(fields.remove("sampler").is_some());
        fields.insert("format_version".into(), 1.into());
        fs::write(&meta_path, serde_json::to_string_pretty(&meta).unwrap()).unwrap();
        assert_eq!(local(&cfg, old.path(), 40, true), want, "{algorithm:?}: a version 1 checkpoint resumed elsewhere");
        let lines: Vec<MetricsLine> = fs::read_to_string(split.path().join(RunDir::METRICS))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let steps: Vec<u64> = lines.iter().map(|l| l.step).collect();
        assert_eq!(steps, (1..=10).map(|k| 4 * k).collect::<Vec<_>>(), "metrics continue without duplicates");
        // A controller whose policy saturated has no gradient, and a baseline lost on resume would not
        // show: the controllers must still be learning at the end.
        assert!(lines.last().unwrap().control_loss != 0.0, "{algorithm:?}: the controller stopped learning");
    }
}
