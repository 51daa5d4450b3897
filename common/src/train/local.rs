//! The bare single-process training loop: the reference the distributed runtime is measured against.
use std::path::Path;
use std::time::Instant;

use tch::Device;

use super::outputs::{MetricsLine, RunDir, Summary};
use super::step::{apply_update, needs_binary, train_step, StepContext};
use super::{evaluate, is_binary, StepStats};
use crate::config::{Algorithm, RunConfig};
use crate::data::{self, shard, Dataset};
use crate::exec::{D2nn, DecisionKey, Policy};
use crate::graph::Graph;
use crate::optim;
use crate::rl::{BaselineStore, EmaBaseline};
use crate::{Error, Result};

/// A run of the local loop.
pub struct LocalRun<'a> {
    pub cfg: &'a RunConfig,
    /// The config file's name, for error messages.
    pub config_file: &'a str,
    pub run_dir: &'a Path,
    /// Stop after this many global steps; schedules still follow the configured epochs.
    pub max_steps: Option<u64>,
    pub device: Device,
}

/// Loads the dataset and builds the (untrained) model of a config.
pub fn build_model(cfg: &RunConfig, config_file: &str, device: Device) -> Result<(Dataset, D2nn)> {
    let dataset = data::load(&cfg.data)?;
    if needs_binary(&cfg.train) && !is_binary(dataset.task) {
        return Err(Error::Config {
            file: config_file.into(),
            message: format!(
                "key `train.accuracy`: the F-score needs a binary task, `{}` has {} classes",
                dataset.task.name(),
                dataset.num_classes
            ),
        });
    }
    let graph = Graph::build(&cfg.model, &dataset.input_shape, dataset.num_classes as i64, config_file)?;
    let mut model = D2nn::new(graph, device, cfg.seed)?;
    model.detach_control_inputs = !cfg.train.control_grad_to_trunk;
    Ok((dataset, model))
}

pub fn controller_names(model: &D2nn) -> Vec<String> {
    model.graph.controls.iter().map(|&c| model.graph.nodes[c].name.clone()).collect()
}

impl LocalRun<'_> {
    /// Trains, evaluates on the test split with argmax decisions, and writes the run directory.
    /// `on_log` sees every logged line with the total number of steps.
    pub fn run(&self, on_log: &mut dyn FnMut(&MetricsLine, u64)) -> Result<Summary> {
        let cfg = self.cfg;
        let t = &cfg.train;
        let started = Instant::now();
        let run_dir = RunDir::create(self.run_dir)?;
        run_dir.write_config(cfg)?;
        let (dataset, model) = build_model(cfg, self.config_file, self.device)?;
        let params: Vec<tch::Tensor> = model.parameters().into_iter().map(|(_, p)| p).collect();
        let mut optimizer = optim::try_build(&t.optimizer, &params)?;
        let num_actions = model.graph.num_actions();
        let mut baseline = EmaBaseline::new(&num_actions, t.baseline_decay);
        let train_n = dataset.train.len();
        let steps_per_epoch = shard::steps_per_epoch(train_n, t.batch_size) as u64;
        if steps_per_epoch == 0 {
            return Err(Error::Config {
                file: self.config_file.into(),
                message: format!(
                    "key `train.batch_size`: {} is larger than the {train_n} training examples",
                    t.batch_size
                ),
            });
        }
        let total_steps = steps_per_epoch * t.epochs;
        let last_step = self.max_steps.map_or(total_steps, |m| m.min(total_steps));
        let mut metrics = run_dir.metrics_writer(false)?;
        let mut window = StepStats::default();
        let mut window_start = Instant::now();
        let mut step = 0u64;
        let mut train_seconds = 0.0;
        'epochs: for epoch in 0..t.epochs {
            let order = shard::epoch_order(cfg.seed, epoch, train_n);
            for s in 0..steps_per_epoch as usize {
                if step >= last_step {
                    break 'epochs;
                }
                let step_started = Instant::now();
                let indices = shard::rank_slice(&order, s, t.batch_size, 0, 1)?;
                let batch = dataset.train.batch(indices, self.device)?;
                let baselines = baseline.node_values();
                let ctx =
                    StepContext { cfg: t, seed: cfg.seed, step, global_batch: t.batch_size, baselines: &baselines };
                let stats = train_step(&model, &batch, &ctx)?;
                let lr = t.schedule.lr_at(t.lr, step, total_steps);
                apply_update(&model, optimizer.as_mut(), t, lr)?;
                baseline.update(&stats.rewards);
                window.merge(&stats)?;
                step += 1;
                train_seconds += step_started.elapsed().as_secs_f64();
                if step.is_multiple_of(t.log_every.max(1)) || step == last_step {
                    let line = metrics_line(
                        cfg,
                        &window,
                        &baseline.node_values(),
                        step,
                        epoch,
                        lr,
                        window_start.elapsed().as_secs_f64(),
                        !num_actions.is_empty(),
                    );
                    RunDir::append_metrics(&mut metrics, &line)?;
                    on_log(&line, last_step);
                    window = StepStats::default();
                    window_start = Instant::now();
                }
            }
        }
        model.vs.save(run_dir.file(RunDir::MODEL))?;
        let mut summary = summarize(
            cfg,
            &dataset,
            &model,
            step,
            started.elapsed().as_secs_f64(),
            step as f64 * t.batch_size as f64 / train_seconds.max(1e-9),
            1,
        )?;
        summary.epochs = step.div_ceil(steps_per_epoch);
        run_dir.write_summary(&summary)?;
        Ok(summary)
    }
}

/// One `metrics.jsonl` line from the statistics pooled since the last one.
#[allow(clippy::too_many_arguments)]
pub fn metrics_line(
    cfg: &RunConfig,
    window: &StepStats,
    baseline: &[f64],
    step: u64,
    epoch: u64,
    lr: f64,
    seconds: f64,
    has_controllers: bool,
) -> MetricsLine {
    let t = &cfg.train;
    let steps = (window.examples as f64 / t.batch_size as f64).max(1.0);
    let epsilon = (has_controllers && t.algorithm == Algorithm::QLearning).then(|| {
        if step <= t.warmup_steps {
            1.0
        } else {
            t.epsilon.at(step - 1 - t.warmup_steps)
        }
    });
    MetricsLine {
        step,
        epoch,
        loss: window.loss / steps,
        task_loss: window.task_loss / steps,
        control_loss: window.control_loss / steps,
        train_accuracy: window.accuracy(),
        mean_cost_fraction: window.mean_cost_fraction(),
        reward_mean: window.reward_mean(),
        baseline: baseline.to_vec(),
        advantage_variance: window.advantage_variance(),
        lr,
        epsilon,
        examples_per_sec: window.examples as f64 / seconds.max(1e-9),
        compute_seconds: None,
        allreduce_seconds: None,
        wait_seconds: None,
    }
}

/// Test (and validation) metrics of a trained model with argmax decisions, as `summary.json`.
pub fn summarize(
    cfg: &RunConfig,
    dataset: &Dataset,
    model: &D2nn,
    steps: u64,
    wall_seconds: f64,
    examples_per_sec: f64,
    workers: usize,
) -> Result<Summary> {
    let t = &cfg.train;
    let binary = is_binary(dataset.task);
    let key = DecisionKey { seed: cfg.seed, step: u64::MAX };
    let test = evaluate(model, &dataset.test, t.eval_batch_size, &Policy::Argmax, key, binary)?;
    let val = if dataset.val.is_empty() {
        None
    } else {
        Some(evaluate(model, &dataset.val, t.eval_batch_size, &Policy::Argmax, key, binary)?.accuracy)
    };
    let mut summary = Summary {
        task: dataset.task.name().into(),
        algorithm: if model.graph.controls.is_empty() {
            "static".into()
        } else {
            format!("{:?}", t.algorithm).to_lowercase()
        },
        lambda: t.lambda,
        test_accuracy: 0.0,
        test_f1: None,
        test_loss: 0.0,
        val_accuracy: val,
        mean_cost_fraction: 0.0,
        mean_mflops_per_example: 0.0,
        full_mflops_per_example: model.graph.full_flops / 1e6,
        action_rates: Default::default(),
        controller_run_rates: Default::default(),
        examples_per_sec,
        steps,
        epochs: 0,
        wall_seconds,
        workers,
    };
    summary.fill_test(&test, &controller_names(model));
    Ok(summary)
}

/// Loads a run directory's config and trained model.
pub fn load_run(run_dir: &Path, device: Device) -> Result<(RunConfig, Dataset, D2nn)> {
    let dir = RunDir::open(run_dir)?;
    let cfg = dir.read_config()?;
    let (dataset, mut model) = build_model(&cfg, &dir.file(RunDir::CONFIG).display().to_string(), device)?;
    let weights = dir.file(RunDir::MODEL);
    model.vs.load(&weights).map_err(|e| Error::data(&weights, e.to_string()))?;
    Ok((cfg, dataset, model))
}
