//! On a small slice of real Fashion-MNIST with the shipped high_low network (REINFORCE, so the
//! baselines enter the loss).
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use d2nn_common::config::{Algorithm, Balance, RunConfig};
use d2nn_common::rl::RewardStats;
use d2nn_common::train::{LocalRun, RunDir};
use tch::{Device, Tensor};

use super::*;

/// Tests here share libtorch's global generator (model init) and its thread settings: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const STEPS: u64 = 6;

fn config() -> RunConfig {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cfg = RunConfig::load(&root.join("configs/high_low.toml"), &[], &[]).unwrap();
    cfg.data.dir = root.join("data");
    cfg.data.train_limit = Some(512);
    cfg.data.test_limit = Some(200);
    let t = &mut cfg.train;
    t.algorithm = Algorithm::Reinforce;
    t.batch_size = 32;
    t.warmup_steps = 2;
    t.epochs = 1;
    t.log_every = 2;
    t.eval_batch_size = 200;
    cfg
}

fn run(cfg: &RunConfig, dir: &Path, workers: usize) -> TrainRun {
    let mut r = TrainRun::new(cfg.clone(), "configs/high_low.toml", dir, workers);
    r.max_steps = Some(STEPS);
    r.threads_per_worker = Some(1);
    r
}

/// Runs and collects every step record.
async fn recorded(mut r: TrainRun) -> (Result<Summary, RuntimeError>, Vec<StepRecord>) {
    let records = Arc::new(Mutex::new(Vec::new()));
    let sink = records.clone();
    r.on_step = Some(Box::new(move |rec| sink.lock().unwrap().push(rec.clone())));
    let result = train_embedded(r).await;
    let records = records.lock().unwrap().clone();
    (result, records)
}

fn params(dir: &Path) -> Vec<(String, Tensor)> {
    let mut p = Tensor::read_safetensors(dir.join(RunDir::MODEL)).unwrap();
    p.sort_by(|a, b| a.0.cmp(&b.0));
    p
}

fn max_abs_diff(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|((na, ta), (nb, tb))| {
            assert_eq!(na, nb);
            (ta - tb).abs().max().double_value(&[])
        })
        .fold(0.0, f64::max)
}

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().to_path_buf();
    (d, p)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_worker_equals_the_local_loop_bitwise_and_two_workers_agree_within_tolerance() {
    let _serial = SERIAL.lock().await;
    let cfg = config();
    let (_l, local_dir) = tmp();
    tch::set_num_threads(1);
    let local = LocalRun {
        cfg: &cfg,
        config_file: "high_low",
        run_dir: &local_dir,
        max_steps: Some(STEPS),
        device: Device::Cpu,
        resume: None,
        allow_config_change: false,
    };
    local.run(&mut |_, _| {}).unwrap();
    let (_a, one_dir) = tmp();
    let one = train_embedded(run(&cfg, &one_dir, 1)).await.unwrap();
    let (_b, two_dir) = tmp();
    let two = train_embedded(run(&cfg, &two_dir, 2)).await.unwrap();
    assert_eq!((one.steps, two.steps, one.workers, two.workers), (STEPS, STEPS, 1, 2));

    let reference = params(&local_dir);
    assert_eq!(max_abs_diff(&reference, &params(&one_dir)), 0.0, "1 worker must reproduce the local loop bit for bit");
    // Two workers sum two half-batch gradients instead of one full-batch gradient: only float
    // rounding differs (~1e-7 relative per step), amplified a little by six momentum steps.
    let diff = max_abs_diff(&reference, &params(&two_dir));
    eprintln!("2 workers vs the local loop after {STEPS} steps: max |Δparam| = {diff:e}");
    assert!(diff < 1e-5, "2 workers vs the local loop: max |Δparam| = {diff:e}");

    let metrics = std::fs::read_to_string(two_dir.join(RunDir::METRICS)).unwrap();
    let lines: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3, "log_every 2 over 6 steps");
    for l in &lines {
        for key in ["compute_seconds", "allreduce_seconds", "wait_seconds", "coordination_seconds", "examples_per_sec"]
        {
            assert!(l[key].as_f64().is_some_and(|v| v >= 0.0), "{key} in {l}");
        }
    }
    let summary = RunDir::open(&two_dir).unwrap().read_summary().unwrap();
    assert_eq!(summary.workers, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_are_identical_after_every_committed_step() {
    let _serial = SERIAL.lock().await;
    let (_d, dir) = tmp();
    let mut r = run(&config(), &dir, 2);
    r.options.digest_every = Some(1);
    let (result, records) = recorded(r).await;
    result.unwrap();
    assert_eq!(records.len() as u64, STEPS);
    let mut previous = String::new();
    for rec in &records {
        assert!(rec.committed, "step {}", rec.step);
        assert_eq!(rec.digests.len(), 2, "step {}", rec.step);
        assert_eq!(rec.digests[0].sha256, rec.digests[1].sha256, "step {}: replicas differ", rec.step);
        assert_eq!((rec.digests[0].step, rec.digests[1].step), (rec.step + 1, rec.step + 1));
        assert_ne!(rec.digests[0].sha256, previous, "step {} changed no parameter", rec.step);
        previous = rec.digests[0].sha256.clone();
    }
}

/// Pooled mean reward of controller `c`, from the raw sums.
fn pooled_mean(stats: &RewardStats, c: usize) -> f64 {
    let actions = stats.actions_per_node()[c];
    let count: u64 = (0..actions).map(|a| stats.count(c, a)).sum();
    let sum: f64 = (0..actions).map(|a| stats.mean(c, a).unwrap_or(0.0) * stats.count(c, a) as f64).sum();
    sum / count as f64
}

#[tokio::test(flavor = "multi_thread")]
async fn the_central_baseline_is_the_ema_of_the_pooled_reward_statistics() {
    let _serial = SERIAL.lock().await;
    let cfg = config();
    let decay = cfg.train.baseline_decay;
    let (_d, dir) = tmp();
    let (result, records) = recorded(run(&cfg, &dir, 2)).await;
    result.unwrap();
    let mut hand: Option<f64> = None;
    for (k, rec) in records.iter().enumerate() {
        let pooled = rec.pooled.as_ref().expect("committed");
        assert_eq!(pooled.examples, 32, "both ranks' halves pooled");
        // high_low's one controller decides for every example: 32 decisions per step.
        let decisions: u64 = (0..2).map(|a| pooled.rewards.count(0, a)).sum();
        assert_eq!(decisions, 32, "step {k}");
        assert_eq!(rec.baselines_used, vec![hand.unwrap_or(0.0)], "step {k} used the EMA of the earlier steps");
        let mean = pooled_mean(&pooled.rewards, 0);
        hand = Some(match hand {
            None => mean,
            Some(v) => decay * v + (1.0 - decay) * mean,
        });
        let got = rec.baselines_after[0];
        let want = hand.unwrap();
        assert!((got - want).abs() < 1e-12, "step {k}: central {got} vs hand {want}");
    }
    let mean0 = pooled_mean(&records[0].pooled.as_ref().unwrap().rewards, 0);
    assert!(records[0].baselines_after[0] == mean0 && mean0 != 0.0, "the first step sets the baseline outright");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_step_is_aborted_on_every_replica_and_stops_the_run() {
    let _serial = SERIAL.lock().await;
    let (_d, dir) = tmp();
    let mut r = run(&config(), &dir, 2);
    r.options.digest_every = Some(1);
    r.options.faults = Some((1, Faults { fail_step: Some(3), ..Default::default() }));
    let (result, records) = recorded(r).await;
    let err = result.expect_err("the run must stop");
    let text = err.to_string();
    assert!(matches!(err, RuntimeError::StepFailed { step: 3, .. }), "{err:?}");
    assert!(
        text.contains("rank 1") && text.contains("injected failure at step 3") && text.contains("aborted"),
        "{text}"
    );
    assert_eq!(records.len(), 4);
    assert!(records[..3].iter().all(|r| r.committed));
    let aborted = &records[3];
    assert!(!aborted.committed && aborted.pooled.is_none());
    assert_eq!(aborted.digests.len(), 2);
    for d in &aborted.digests {
        assert_eq!(d.sha256, records[2].digests[0].sha256, "rank {}: parameters changed by an aborted step", d.rank);
    }
    assert_eq!(aborted.baselines_after, aborted.baselines_used, "an aborted step does not move the baseline");
    assert!(!dir.join(RunDir::SUMMARY).exists(), "a stopped run writes no summary");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_step_can_skip_its_batch_and_continue() {
    let _serial = SERIAL.lock().await;
    let (_d, dir) = tmp();
    // One whole epoch of STEPS batches, no step cap: the run ends when the epoch is covered.
    let mut cfg = config();
    cfg.data.train_limit = Some(STEPS as usize * cfg.train.batch_size);
    let mut r = run(&cfg, &dir, 2);
    r.max_steps = None;
    r.options.digest_every = Some(1);
    r.options.faults = Some((0, Faults { fail_step: Some(2), ..Default::default() }));
    r.options.on_worker_error = OnWorkerError::SkipBatch;
    let (result, records) = recorded(r).await;
    let summary = result.unwrap();
    // The aborted batch is handed out again at the next step: one step more, every example once.
    assert_eq!(summary.steps, STEPS + 1);
    let committed: Vec<bool> = records.iter().map(|r| r.committed).collect();
    assert_eq!(committed, vec![true, true, false, true, true, true, true]);
    assert_eq!(records[3].examples, records[2].examples, "the retry trains on the aborted step's examples");
    for d in &records[2].digests {
        assert_eq!(d.sha256, records[1].digests[0].sha256, "rank {}", d.rank);
    }
    assert!(records[2].failures[0].1.contains("injected failure at step 2"));
    assert_eq!(records[3].baselines_used, records[1].baselines_after);
    assert!(records[3..].iter().all(|r| r.digests[0].sha256 == r.digests[1].sha256));
    let c = &summary.coverage;
    assert_eq!(c.len(), 1, "{c:?}");
    assert!(c[0].exactly_once() && c[0].examples_retried == 32, "{c:?}");
}

/// A rank slowed to a fraction of the other's speed gets a smaller share once its rate is measured;
/// shares stay whole mini-bags, the epoch is still covered exactly once, and the model matches the
/// equal-share run up to float order.
#[tokio::test(flavor = "multi_thread")]
async fn throughput_balance_gives_a_slow_rank_less_and_trains_the_same_model() {
    let _serial = SERIAL.lock().await;
    let mut cfg = config();
    cfg.train.bag_size = 4;
    cfg.data.train_limit = Some(STEPS as usize * cfg.train.batch_size);
    let (_d, equal_dir) = tmp();
    let mut equal = run(&cfg, &equal_dir, 2);
    equal.max_steps = None;
    let (equal_result, equal_records) = recorded(equal).await;
    equal_result.unwrap();
    assert!(equal_records.iter().all(|r| r.examples.iter().all(|e| e.len() == 16)));

    cfg.train.balance = Balance::Throughput;
    let (_d, dir) = tmp();
    let mut r = run(&cfg, &dir, 2);
    r.max_steps = None;
    let slow = std::time::Duration::from_millis(10);
    r.options.faults = Some((1, Faults { slow_per_example: Some(slow), ..Default::default() }));
    let (result, records) = recorded(r).await;
    let summary = result.unwrap();
    let shares: Vec<Vec<usize>> = records.iter().map(|r| r.examples.iter().map(Vec::len).collect()).collect();
    assert_eq!(shares[0], vec![16, 16], "equal until every rate is measured");
    for s in &shares {
        assert!(s.iter().sum::<usize>() == 32 && s.iter().all(|&k| k >= 4 && k % 4 == 0), "{shares:?}");
    }
    let last = shares.last().unwrap();
    assert!(last[1] <= 8 && last[0] >= 24, "the slow rank still takes a large share: {shares:?}");
    assert!(summary.coverage[0].exactly_once(), "{:?}", summary.coverage);
    // The same global batches and sums, in another order of addition.
    let diff = max_abs_diff(&params(&equal_dir), &params(&dir));
    assert!(diff < 1e-3, "balanced and equal shares trained different models: max |Δ| = {diff}");
}

/// `data.source = "coordinator"`: the replicas build no dataset and train on the examples the
/// orders carry; same parameters, bit for bit, and the same evaluation as reading locally.
#[tokio::test(flavor = "multi_thread")]
async fn examples_sent_by_the_coordinator_train_the_same_model_as_local_reading() {
    let _serial = SERIAL.lock().await;
    let mut cfg = config();
    cfg.checkpoint.keep_best = true;
    let (_d, local_dir) = tmp();
    let local = train_embedded(run(&cfg, &local_dir, 2)).await.unwrap();
    cfg.data.source = d2nn_common::data::DataSource::Coordinator;
    let (_d, sent_dir) = tmp();
    let (result, records) = recorded(run(&cfg, &sent_dir, 2)).await;
    let sent = result.unwrap();
    assert_eq!(max_abs_diff(&params(&local_dir), &params(&sent_dir)), 0.0);
    assert_eq!(sent.test_accuracy, local.test_accuracy);
    assert_eq!((sent.val_accuracy, sent.mean_cost_fraction), (local.val_accuracy, local.mean_cost_fraction));
    assert_eq!(records.len() as u64, STEPS);
    // Ranking checkpoints by validation accuracy works without the workers' data too.
    let meta = d2nn_common::checkpoint::CheckpointMeta::read(&d2nn_common::checkpoint::resolve(&sent_dir).unwrap());
    assert_eq!(meta.unwrap().val_metric, local.val_accuracy);
    // A global batch that does not fit one order is refused up front, naming the key.
    cfg.train.batch_size = 2048;
    cfg.data.train_limit = Some(4096);
    let (_d, dir) = tmp();
    let e = train_embedded(run(&cfg, &dir, 2)).await.unwrap_err().to_string();
    assert!(e.contains("data.source") && e.contains("train.batch_size") && e.contains("2048"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_errors_name_what_is_wrong() {
    let _serial = SERIAL.lock().await;
    let (_d, dir) = tmp();
    let e = train_embedded(run(&config(), &dir, 3)).await.unwrap_err().to_string();
    assert!(e.contains("batch_size") && e.contains("32") && e.contains("(3)"), "{e}");
    let mut cfg = config();
    cfg.data.dir = dir.join("no-such-data");
    let e = train_embedded(run(&cfg, &dir, 2)).await.unwrap_err();
    assert!(matches!(e, RuntimeError::Spawn { rank: 0, .. }), "{e:?}");
    assert!(e.to_string().contains("no-such-data") && !e.to_string().contains("panicked"), "{e}");
    // 32 examples over 4 workers is 8 each: not whole mini-bags of 16. Refused before any replica.
    let mut cfg = config();
    cfg.train.bag_size = 16;
    let e = train_embedded(run(&cfg, &dir, 4)).await.unwrap_err();
    assert!(matches!(e, RuntimeError::BagsNotDivisible { workers: 4, bag_size: 16, .. }), "{e:?}");
    assert!(e.to_string().contains("train.bag_size") && e.to_string().contains("configs/high_low.toml"), "{e}");
}

/// A replica that stays alive but does not finish writing a checkpoint ends the run at the save
/// deadline, with the rank and the wait in the error (it used to wait forever).
#[tokio::test(flavor = "multi_thread")]
async fn a_save_that_does_not_finish_ends_the_run_at_its_deadline() {
    let _serial = SERIAL.lock().await;
    let (_d, dir) = tmp();
    let mut cfg = config();
    cfg.checkpoint.every_steps = 2;
    let mut r = run(&cfg, &dir, 2);
    let stall = std::time::Duration::from_secs(30);
    r.options.faults = Some((0, Faults { stall_save: Some(stall), ..Default::default() }));
    r.options.save_timeout = std::time::Duration::from_secs(1);
    let started = std::time::Instant::now();
    let (result, records) = recorded(r).await;
    let e = result.unwrap_err();
    assert!(started.elapsed() < stall / 2, "waited {:?}", started.elapsed());
    assert!(
        matches!(&e, RuntimeError::Worker { rank: 0, message } if message.contains("no reply within 1 s")),
        "{e:?}"
    );
    assert_eq!(records.len(), 2, "the run stopped at the first checkpoint, after step 2");
}

mod resume;
