//! Resuming the embedded runtime from checkpoints: bitwise-exact with the same worker count, within
//! float tolerance across worker counts, stopped by request, refused when the config differs.
use std::sync::atomic::{AtomicBool, Ordering};

use d2nn_common::checkpoint::{self, CheckpointMeta};

use super::*;

/// 40 global steps of 32 examples (16 per epoch): the checkpoint at 20 is mid-epoch 1.
const FULL: u64 = 40;
const HALF: u64 = 20;

fn resume_config() -> RunConfig {
    let mut cfg = config();
    cfg.train.epochs = 3;
    cfg.train.log_every = 5;
    cfg
}

/// Trains `workers` workers to global step `max_steps` in `dir`, resuming from `dir`'s LATEST
/// when `resume_from` is given; returns the params_sha256 of the run's final checkpoint.
async fn train_to(cfg: &RunConfig, dir: &Path, workers: usize, max_steps: u64, resume_from: Option<&Path>) -> String {
    let mut r = run(cfg, dir, workers);
    r.max_steps = Some(max_steps);
    r.resume = resume_from.map(Path::to_path_buf);
    let summary = train_embedded(r).await.unwrap();
    assert_eq!((summary.steps, summary.workers), (max_steps, workers));
    latest(dir).params_sha256
}

fn latest(run_dir: &Path) -> CheckpointMeta {
    CheckpointMeta::read(&checkpoint::resolve(run_dir).unwrap()).unwrap()
}

/// Exact: resuming on the same number of workers (the replica's whole state is restored, and
/// every random draw is keyed by the global step). Within float tolerance: a 2-worker checkpoint
/// continued on 1 worker against a 1-worker run throughout, because the first 20 steps summed two
/// half-batch gradients instead of one full-batch gradient (float addition is not associative); the
/// continuation itself follows the same global batches in the same order. That comparison routes
/// at random throughout (warm-up): once controllers decide from the parameters, a rounding
/// difference can flip a decision and the runs drift apart like two runs of different seeds. It is
/// also short (2 steps, then 2 more): over 20 + 20 steps the two differed by 3.2e-3 across every
/// module's weights with libtorch's AVX-512 kernels (under 1e-5 with AVX2 ones; issue #17), most
/// likely max-pool and ReLU choices that rounding flipped and training compounded. After 2 steps the momentum buffers, baselines and
/// data position are all non-trivial, and losing any of them moves weights by far more than 1e-5.
#[tokio::test(flavor = "multi_thread")]
async fn resume_is_bitwise_exact_per_worker_count_and_close_across_counts() {
    let _serial = SERIAL.lock().await;
    let cfg = resume_config();
    let mut straight = std::collections::BTreeMap::new();
    for workers in [1, 2] {
        let (_s, dir) = tmp();
        straight.insert(workers, train_to(&cfg, &dir, workers, FULL, None).await);
        // A saturated policy has no gradient, and then a baseline lost on resume could not show.
        let metrics = std::fs::read_to_string(dir.join(RunDir::METRICS)).unwrap();
        let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
        assert!(last["control_loss"].as_f64().is_some_and(|l| l != 0.0), "the controller stopped learning: {last}");
        let (_h, split) = tmp();
        let half = train_to(&cfg, &split, workers, HALF, None).await;
        assert_ne!(half, straight[&workers]);
        let resumed = train_to(&cfg, &split, workers, FULL, Some(&split)).await;
        assert_eq!(resumed, straight[&workers], "{workers} workers: the resumed run differs from the straight one");
        assert_eq!(latest(&split).world_size, workers);
    }
    let mut cfg = cfg;
    cfg.train.warmup_steps = FULL;
    let (short_half, short_full) = (2, 4);
    let (_h, two_then_one) = tmp();
    train_to(&cfg, &two_then_one, 2, short_half, None).await;
    let (_c, continued) = tmp();
    let got = train_to(&cfg, &continued, 1, short_full, Some(&two_then_one)).await;
    let meta = latest(&continued);
    assert_eq!((meta.position.step, meta.world_size), (short_full, 1));
    let (_s, one_dir) = tmp();
    train_to(&cfg, &one_dir, 1, short_full, None).await;
    let diff = max_abs_diff(&params(&one_dir), &params(&continued));
    eprintln!("2-worker checkpoint at {short_half} continued on 1 worker vs 1 worker throughout, {short_full} steps: max |Δparam| = {diff:e}");
    assert!(diff < 1e-5, "max |Δparam| = {diff:e}");
    assert_ne!(got, latest(&one_dir).params_sha256, "the worker counts left no trace: the test shows nothing");
}

/// A stop request (what SIGTERM sets) lets the step in flight finish, checkpoints, and ends the
/// run; resuming from there gives the straight run's parameters.
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_request_checkpoints_and_the_resume_is_exact() {
    let _serial = SERIAL.lock().await;
    let cfg = resume_config();
    let (_d, dir) = tmp();
    let mut r = run(&cfg, &dir, 2);
    r.max_steps = Some(FULL);
    let stop = Arc::new(AtomicBool::new(false));
    r.stop = Some(stop.clone());
    r.on_step = Some(Box::new(move |rec| {
        if rec.step == 12 {
            stop.store(true, Ordering::SeqCst);
        }
    }));
    let err = train_embedded(r).await.expect_err("the run stops early");
    let RuntimeError::Stopped { step, checkpoint } = err else { panic!("{err:?}") };
    assert_eq!(step, 13, "step 12 was in flight when the stop came");
    assert_eq!(checkpoint::resolve(&dir).unwrap(), checkpoint);
    assert!(!dir.join(RunDir::SUMMARY).exists(), "a stopped run is not evaluated");
    let resumed = train_to(&cfg, &dir, 2, FULL, Some(&dir)).await;
    let (_s, straight) = tmp();
    assert_eq!(resumed, train_to(&cfg, &straight, 2, FULL, None).await);
    // The sample order and every epoch's coverage continue exactly across the stop.
    let (resumed, straight) = (latest(&dir).sampler.unwrap(), latest(&straight).sampler.unwrap());
    assert_eq!(resumed, straight);
    assert_eq!(resumed.coverage.len(), 3, "40 steps of 16 per epoch: {:?}", resumed.coverage);
    assert!(resumed.coverage[..2].iter().all(|c| c.exactly_once()), "{:?}", resumed.coverage);
    assert_eq!(resumed.coverage[2].examples_committed, 8 * 32);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resume_with_another_graph_or_lambda_is_refused() {
    let _serial = SERIAL.lock().await;
    let cfg = resume_config();
    let (_d, dir) = tmp();
    train_to(&cfg, &dir, 1, 2, None).await;
    let mut lambda = cfg.clone();
    lambda.train.lambda = 0.5;
    let mut r = run(&lambda, &dir, 2);
    r.resume = Some(dir.clone());
    let e = train_embedded(r).await.unwrap_err().to_string();
    assert!(e.contains("cannot resume") && e.contains("train.lambda") && e.contains("step-00000002"), "{e}");
    let mut graph = cfg.clone();
    graph.model.nodes.retain(|n| n.name != "router");
    let mut r = run(&graph, &dir, 1);
    r.resume = Some(dir.clone());
    let e = train_embedded(r).await.unwrap_err().to_string();
    assert!(e.contains("graph differs") && e.contains("model.nodes"), "{e}");
}
