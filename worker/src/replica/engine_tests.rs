//! The engine's step protocol on one rank, on a small slice of real Fashion-MNIST.
use std::path::Path;
use std::time::Duration;

use d2nn_common::config::RunConfig;

use super::*;
use crate::collective::SharedGroup;
use crate::replica::grad_buffer::DEFAULT_BUCKET_BYTES;

fn engine() -> Engine {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cfg = RunConfig::load(&root.join("configs/high_low.toml"), &[], &[]).unwrap();
    cfg.data.dir = root.join("data");
    cfg.data.train_limit = Some(64);
    cfg.data.test_limit = Some(32);
    cfg.train.batch_size = 16;
    let spec = ReplicaSpec {
        rank: 0,
        world: 1,
        cfg,
        config_file: "configs/high_low.toml".into(),
        resume: None,
        bucket_bytes: DEFAULT_BUCKET_BYTES,
        collective_timeout: Duration::from_secs(10),
        streamed_train_examples: None,
    };
    let collective = SharedGroup::handles(1).pop().unwrap();
    Engine::new(spec, ReplicaHost::new(Device::Cpu), Box::new(collective)).unwrap()
}

fn order(engine: &Engine, step: u64) -> StepOrder {
    StepOrder {
        step,
        epoch: 0,
        step_in_epoch: step,
        examples: (16 * step as u32..16 * (step as u32 + 1)).collect(),
        data: None,
        lr: 0.1,
        baselines: engine.baselines.clone(),
    }
}

fn save(engine: &mut Engine, step: u64) -> Result<SavedTensors, Error> {
    let dir = tempfile::tempdir().unwrap();
    engine.save(SaveRequest { dir: dir.path().to_path_buf(), step, val_metric: false })
}

/// A generation that ends after a loss saves while this rank's last step is pending (its report
/// arrived, a lost rank's never did): the files hold the committed state before that step, and the
/// pending gradients change nothing in them.
#[test]
fn a_checkpoint_of_a_pending_step_holds_the_state_before_it() {
    let mut engine = engine();
    engine.step(order(&engine, 0)).unwrap();
    let baselines = engine.baselines.clone();
    engine.commit(Commit { step: 0, baselines, want_digest: false }).unwrap();
    let committed = engine.digest().unwrap().sha256;

    let report = engine.step(order(&engine, 1)).unwrap();
    assert!(report.all_ranks_ok && engine.pending.is_some());
    let saved = save(&mut engine, 1).unwrap();
    assert_eq!(saved.params_sha256, committed);
    assert_eq!(saved.optimizer_steps, 1);

    // Any other step is refused, named; the pending step can still be committed, and then differs.
    let e = save(&mut engine, 2).unwrap_err().to_string();
    assert!(e.contains("checkpoint of step 2") && e.contains("at step 1"), "{e}");
    let baselines = engine.baselines.clone();
    engine.commit(Commit { step: 1, baselines, want_digest: false }).unwrap();
    let e = save(&mut engine, 1).unwrap_err().to_string();
    assert!(e.contains("checkpoint of step 1") && e.contains("at step 2"), "{e}");
    assert_ne!(save(&mut engine, 2).unwrap().params_sha256, committed);
}
