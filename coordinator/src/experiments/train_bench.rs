//! Training-step throughput of one replica (`d2nn bench train`): the step the local loop and every
//! worker run, timed phase by phase, warm-up excluded. scripts/reference/torch_high_low.py is the
//! PyTorch eager reference of the same step on the same network.
use std::time::Instant;

use d2nn_common::config::RunConfig;
use d2nn_common::train::{apply_update, build_model, step_losses, Routing, StepContext};
use d2nn_common::{host, optim};
use serde::Serialize;
use tch::Device;

use super::median;

/// What to measure.
#[derive(Debug, Clone)]
pub struct TrainBenchSpec {
    pub batch: usize,
    pub device: Device,
    pub routing: Routing,
    /// Timed steps.
    pub steps: u64,
    /// Untimed steps first (allocator, oneDNN primitive caches, CUDA kernels loaded).
    pub warmup: u64,
}

/// Examples per second and the median time of each phase of a step, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct TrainBench {
    pub steps: u64,
    pub examples_per_sec: f64,
    pub step_ms: f64,
    /// Gathering the batch and moving it to the device.
    pub data_ms: f64,
    /// Forward, losses and rewards (`step_losses`).
    pub forward_ms: f64,
    pub backward_ms: f64,
    /// Clipping and the optimizer update (`apply_update`).
    pub optimizer_ms: f64,
    /// Reads of tensor values (or of value-dependent sizes) into host memory per step, counted by
    /// `d2nn_common::host`: each one a point where the host waits for a GPU.
    pub host_syncs_per_step: f64,
}

/// Runs `spec.warmup + spec.steps` steps of `cfg`'s training on one replica and times the last
/// `spec.steps`. The learning rate is the config's; the baselines stay 0 (they cost nothing).
pub fn bench_train(cfg: &RunConfig, config_file: &str, spec: &TrainBenchSpec) -> d2nn_common::Result<TrainBench> {
    let mut cfg = cfg.clone();
    cfg.train.batch_size = spec.batch;
    let (dataset, model) = build_model(&cfg, config_file, spec.device)?;
    let flat = model.flat_parameters(0)?;
    let mut optimizer = optim::try_build(&cfg.train.optimizer, &flat)?;
    let baselines = vec![0.0; model.graph.num_actions().len()];
    let n = dataset.train.len() as u64;
    let sync = || {
        if let Device::Cuda(i) = spec.device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    let mut phases: [Vec<f64>; 5] = Default::default();
    let mut reads = 0;
    for step in 0..spec.warmup + spec.steps {
        let ids: Vec<u32> = (0..spec.batch as u64).map(|i| ((step * spec.batch as u64 + i) % n) as u32).collect();
        let ctx = StepContext {
            cfg: &cfg.train,
            seed: cfg.seed,
            step,
            global_batch: spec.batch,
            baselines: &baselines,
            routing: spec.routing,
        };
        let reads_before = host::reads();
        let t0 = Instant::now();
        let batch = dataset.train.batch_of(&ids, spec.device)?;
        sync();
        let t1 = Instant::now();
        let losses = step_losses(&model, &flat, &batch, &ctx)?;
        sync();
        let t2 = Instant::now();
        losses.backward()?;
        sync();
        let t3 = Instant::now();
        apply_update(&flat, optimizer.as_mut(), &cfg.train, cfg.train.lr)?;
        sync();
        let t4 = Instant::now();
        if step >= spec.warmup {
            reads += host::reads() - reads_before;
            let marks = [t0, t1, t2, t3, t4];
            for (k, phase) in phases.iter_mut().take(4).enumerate() {
                phase.push((marks[k + 1] - marks[k]).as_secs_f64());
            }
            phases[4].push((t4 - t0).as_secs_f64());
        }
    }
    let total: f64 = phases[4].iter().sum();
    // Microseconds are the resolution worth printing.
    let ms = |v: &Vec<f64>| if v.is_empty() { 0.0 } else { (median(v.clone()) * 1e6).round() / 1e3 };
    Ok(TrainBench {
        steps: spec.steps,
        examples_per_sec: if total > 0.0 {
            (spec.steps as f64 * spec.batch as f64 / total * 10.0).round() / 10.0
        } else {
            0.0
        },
        step_ms: ms(&phases[4]),
        data_ms: ms(&phases[0]),
        forward_ms: ms(&phases[1]),
        backward_ms: ms(&phases[2]),
        optimizer_ms: ms(&phases[3]),
        host_syncs_per_step: if spec.steps > 0 { reads as f64 / spec.steps as f64 } else { 0.0 },
    })
}
