//! The bare single-process training loop: the reference the distributed runtime is measured against.
use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::Device;

use super::outputs::{MetricsLine, RunDir, Summary};
use super::step::{apply_update, needs_binary, train_step, StepContext};
use super::{evaluate, is_binary, StepStats};
use crate::checkpoint::{self, CheckpointMeta, CheckpointStore, Position, WriteSteps};
use crate::config::{Algorithm, RunConfig};
use crate::data::{self, shard, Dataset, EpochOrders};
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
    /// Continue from this checkpoint (a checkpoint, checkpoints or run directory; see
    /// `checkpoint::resolve`) instead of starting afresh.
    pub resume: Option<&'a Path>,
    /// Accept differences in the keys `checkpoint::check_resume_config` calls safe.
    pub allow_config_change: bool,
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

/// Global steps per epoch of a config on a training split, refusing a batch larger than the split.
pub fn steps_per_epoch(cfg: &RunConfig, config_file: &str, train_examples: usize) -> Result<u64> {
    let batch_size = cfg.train.batch_size;
    match shard::steps_per_epoch(train_examples, batch_size) as u64 {
        0 => Err(Error::Config {
            file: config_file.into(),
            message: format!(
                "key `train.batch_size`: {batch_size} is larger than the {train_examples} training examples"
            ),
        }),
        n => Ok(n),
    }
}

/// A checkpoint to continue from, opened and checked against the run's config before anything is
/// built: every file's checksum verified, the config's differences allowed.
pub fn open_resume(path: &Path, cfg: &RunConfig, allow_config_change: bool) -> Result<(PathBuf, CheckpointMeta)> {
    let (dir, meta) = checkpoint::open(path)?;
    for change in checkpoint::check_resume_config(&dir, &meta.config, cfg, allow_config_change)? {
        tracing::warn!(checkpoint = %dir.display(), %change, "config changed on resume (--allow-config-change)");
    }
    Ok((dir, meta))
}

/// The reward baselines a resumed run continues with, refusing a checkpoint of another controller shape.
pub fn resumed_baseline(dir: &Path, meta: &CheckpointMeta, num_actions: &[usize]) -> Result<EmaBaseline> {
    let saved: Vec<usize> = meta.baseline.values.iter().map(Vec::len).collect();
    if saved != num_actions {
        return Err(Error::data(
            dir.join(checkpoint::META_FILE),
            format!("baselines for actions per controller {saved:?}, the graph has {num_actions:?}"),
        ));
    }
    Ok(meta.baseline.clone())
}

impl LocalRun<'_> {
    /// Trains, evaluates on the test split with argmax decisions, and writes the run directory.
    /// `on_log` sees every logged line with the total number of steps.
    pub fn run(&self, on_log: &mut dyn FnMut(&MetricsLine, u64)) -> Result<Summary> {
        let cfg = self.cfg;
        let t = &cfg.train;
        let started = Instant::now();
        let resume = self.resume.map(|p| open_resume(p, cfg, self.allow_config_change)).transpose()?;
        let run_dir = RunDir::create(self.run_dir)?;
        run_dir.write_config(cfg)?;
        let (dataset, model) = build_model(cfg, self.config_file, self.device)?;
        let params: Vec<tch::Tensor> = model.parameters().into_iter().map(|(_, p)| p).collect();
        let mut optimizer = optim::try_build(&t.optimizer, &params)?;
        let num_actions = model.graph.num_actions();
        let train_n = dataset.train.len();
        let steps_per_epoch = steps_per_epoch(cfg, self.config_file, train_n)?;
        let mut baseline = EmaBaseline::new(&num_actions, t.baseline_decay);
        let mut step = 0u64;
        if let Some((dir, meta)) = &resume {
            meta.check_data(dir, train_n, steps_per_epoch)?;
            baseline = resumed_baseline(dir, meta, &num_actions)?;
            checkpoint::load_state(dir, meta, &model, optimizer.as_mut())?;
            step = meta.position.step;
            tracing::info!(checkpoint = %dir.display(), step, "resumed");
        }
        // The state at a resumed step is already saved: no second checkpoint of it.
        let mut saved_step = resume.as_ref().map(|(_, meta)| meta.position.step);
        let first_step = step;
        let total_steps = steps_per_epoch * t.epochs;
        let last_step = self.max_steps.map_or(total_steps, |m| m.min(total_steps));
        let mut metrics =
            if resume.is_some() { run_dir.resume_metrics(step)? } else { run_dir.metrics_writer(false)? };
        let store = CheckpointStore::of_run(&run_dir.path);
        let save = |step: u64, optimizer: &dyn optim::Optimizer, baseline: &EmaBaseline| -> Result<PathBuf> {
            let mut writes = WriteSteps::unlimited();
            let staging = store.begin(step, &mut writes)?;
            let val = if cfg.checkpoint.keep_best { validation_accuracy(cfg, &dataset, &model)? } else { None };
            let saved = checkpoint::write_tensors(&staging, &model, optimizer, val, &mut writes)?;
            let position = Position::at(step, steps_per_epoch, train_n);
            store.commit(
                &staging,
                &CheckpointMeta::new(cfg, position, baseline, 1, saved),
                &cfg.checkpoint,
                &mut writes,
            )
        };
        let mut orders = EpochOrders::new(cfg.seed, train_n);
        let mut window = StepStats::default();
        let mut window_start = Instant::now();
        let mut train_seconds = 0.0;
        while step < last_step {
            let (epoch, step_in_epoch) = (step / steps_per_epoch, (step % steps_per_epoch) as usize);
            let step_started = Instant::now();
            let indices = shard::rank_slice(orders.get(epoch), step_in_epoch, t.batch_size, 0, 1)?;
            let batch = dataset.train.batch(indices, self.device)?;
            let baselines = baseline.node_values();
            let ctx = StepContext { cfg: t, seed: cfg.seed, step, global_batch: t.batch_size, baselines: &baselines };
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
            if cfg.checkpoint.due(step) {
                save(step, optimizer.as_ref(), &baseline)?;
                saved_step = Some(step);
            }
        }
        if saved_step != Some(step) {
            save(step, optimizer.as_ref(), &baseline)?;
        }
        model.vs.save(run_dir.file(RunDir::MODEL))?;
        let mut summary = summarize(
            cfg,
            &dataset,
            &model,
            step,
            started.elapsed().as_secs_f64(),
            (step - first_step) as f64 * t.batch_size as f64 / train_seconds.max(1e-9),
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
        action_rates: window.action_rates(),
        compute_seconds: None,
        allreduce_seconds: None,
        wait_seconds: None,
        coordination_seconds: None,
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
    let val = validation_accuracy(cfg, dataset, model)?;
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

/// Accuracy on the validation split with argmax decisions (None when the task has none): the
/// metric `summary.json` reports and checkpoints are ranked by.
pub fn validation_accuracy(cfg: &RunConfig, dataset: &Dataset, model: &D2nn) -> Result<Option<f64>> {
    if dataset.val.is_empty() {
        return Ok(None);
    }
    let key = DecisionKey { seed: cfg.seed, step: u64::MAX };
    let binary = is_binary(dataset.task);
    Ok(Some(evaluate(model, &dataset.val, cfg.train.eval_batch_size, &Policy::Argmax, key, binary)?.accuracy))
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

/// A checkpoint's config and model (parameters only), for evaluation: `path` as `checkpoint::resolve` takes it.
pub fn load_checkpoint(path: &Path, device: Device) -> Result<(RunConfig, Dataset, D2nn, PathBuf)> {
    let (dir, meta) = checkpoint::open(path)?;
    let config_name = dir.join(checkpoint::META_FILE).display().to_string();
    let (dataset, model) = build_model(&meta.config, &config_name, device)?;
    checkpoint::load_params(&dir, &meta, &model)?;
    Ok((meta.config, dataset, model, dir))
}
