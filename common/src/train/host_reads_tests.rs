//! How often a training step makes the host wait for the device (`crate::host`): once for each
//! controller whose branches it sizes, in each forward pass whose actions it does not fix, and once
//! for the statistics at the end.
use tch::Device;

use super::{config, small};
use crate::host;
use crate::train::{apply_update, build_model, train_step, Routing, StepContext};

#[test]
fn a_step_reads_the_device_once_per_routing_controller_and_sampled_pass_and_once_at_its_end() {
    let cases = [
        ("high_low.toml", 2, "the router's split; the statistics"),
        ("chain.toml", 4, "the three controllers' splits; the statistics"),
        (
            "hierarchical.toml",
            2,
            "the router's split in the sampled pass (its 4 forced passes fix the action); the statistics",
        ),
        (
            "cascade.toml",
            3,
            "both gates in the sampled pass (the forced passes fix theirs, the marginal credit stays on the device); \
             the statistics",
        ),
    ];
    for (file, want, why) in cases {
        let cfg = small(config(file, &[]), 256, 100);
        let (dataset, model) = build_model(&cfg, file, Device::Cpu).unwrap();
        let flat = model.flat_parameters(0).unwrap();
        let mut optimizer = crate::optim::try_build(&cfg.train.optimizer, &flat).unwrap();
        let batch = dataset.train.batch(&(0..64).collect::<Vec<_>>(), Device::Cpu).unwrap();
        let num_actions = model.graph.num_actions();
        let ctx = StepContext {
            cfg: &cfg.train,
            seed: 0,
            step: 0,
            global_batch: 64,
            baselines: &vec![0.0; num_actions.len()],
            routing: Routing::UniformRandom,
        };
        let before = host::reads();
        let stats = train_step(&model, &flat, &batch, &ctx).unwrap();
        apply_update(&flat, optimizer.as_mut(), &cfg.train, cfg.train.lr).unwrap();
        assert_eq!(host::reads() - before, want, "{file}: {why}");

        // The one read carries everything the step measured.
        assert_eq!(stats.examples, 64);
        assert!(stats.loss.is_finite() && stats.loss > 0.0, "{file}: loss {}", stats.loss);
        assert!(stats.correct <= 64 && stats.mean_cost_fraction() > 0.0 && stats.mean_cost_fraction() <= 1.0);
        let first = &stats.actions[0];
        assert_eq!(first.iter().sum::<u64>(), 64, "{file}: the first controller decides for every example");
        assert!(first.iter().all(|&n| n > 0), "{file}: random routing takes every action: {first:?}");
        for (c, counts) in stats.actions.iter().enumerate() {
            for (a, &n) in counts.iter().enumerate() {
                assert_eq!(stats.rewards.count(c, a), n, "{file}: controller {c} action {a}");
            }
        }
    }
}

/// An evaluation reads what its forward passes must (each controller's split), and its figures once
/// at the end, whatever the number of batches.
#[test]
fn an_evaluation_reads_its_figures_once_after_its_forwards() {
    use crate::exec::{DecisionKey, Policy};
    for file in ["high_low.toml", "cascade.toml"] {
        let cfg = small(config(file, &[]), 256, 100);
        let (dataset, model) = build_model(&cfg, file, Device::Cpu).unwrap();
        let binary = crate::train::is_binary(cfg.data.task);
        let batch_size = 40;
        let forwards = {
            let _guard = tch::no_grad_guard();
            let before = host::reads();
            let all: Vec<usize> = (0..dataset.test.len()).collect();
            for chunk in all.chunks(batch_size) {
                let b = dataset.test.batch(chunk, Device::Cpu).unwrap();
                model.forward(&b.x, &b.ids, &Policy::Argmax, DecisionKey::default(), false).unwrap();
            }
            host::reads() - before
        };
        assert!(forwards >= 3, "{file}: three batches, each routed: {forwards}");
        let before = host::reads();
        let metrics =
            crate::train::evaluate(&model, &dataset.test, batch_size, &Policy::Argmax, DecisionKey::default(), binary)
                .unwrap();
        assert_eq!(host::reads() - before, forwards + 1, "{file}");
        assert_eq!(metrics.examples, 100);
        assert_eq!(metrics.f1.is_some(), binary, "{file}");
        assert!((metrics.controller_run_rates[0] - 1.0).abs() < 1e-12, "{file}: {:?}", metrics.controller_run_rates);
    }
}
