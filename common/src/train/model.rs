//! A config's model and a trained run's: building the (untrained) replica, loading a run's or a
//! checkpoint's parameters, and the test metrics of `summary.json`.
use std::path::{Path, PathBuf};

use tch::Device;

use super::outputs::{RunDir, Summary};
use super::step::needs_binary;
use super::{evaluate, is_binary};
use crate::checkpoint;
use crate::config::RunConfig;
use crate::data::{self, Dataset, Task};
use crate::exec::{D2nn, DecisionKey, Policy};
use crate::graph::{Graph, Target};
use crate::{Error, Result};

/// Loads the dataset and builds the (untrained) model of a config.
pub fn build_model(cfg: &RunConfig, config_file: &str, device: Device) -> Result<(Dataset, D2nn)> {
    // The graph and its sizes are checked before any data is read or any tensor allocated.
    let graph = checked_graph(cfg, config_file)?;
    let mut dataset = data::load(&cfg.data)?;
    if (dataset.input_shape, dataset.num_classes as i64) != cfg.data.task.shape() {
        return Err(Error::Invalid(format!(
            "task `{}` loaded examples of shape {:?} in {} classes, not the {:?} its graph was built for",
            dataset.task.name(),
            dataset.input_shape,
            dataset.num_classes,
            cfg.data.task.shape()
        )));
    }
    if device.is_cuda() {
        // Once per run, so a step gathers its batch on the device and copies only the ids.
        dataset.keep_on(device)?;
    }
    Ok((dataset, new_model(cfg, graph, device)?))
}

/// Builds the (untrained) model of a config without reading any data: a worker whose examples the
/// coordinator sends (`data.source = "coordinator"`). The same parameters as [`build_model`]'s.
pub fn build_model_without_data(cfg: &RunConfig, config_file: &str, device: Device) -> Result<D2nn> {
    new_model(cfg, checked_graph(cfg, config_file)?, device)
}

/// The config's graph on its task's input shape and classes, its batch sizes bounded, and an
/// F-score reward only on a binary task.
fn checked_graph(cfg: &RunConfig, config_file: &str) -> Result<Graph> {
    let ([c, h, w], classes) = cfg.data.task.shape();
    let graph = Graph::build(&cfg.model, &[c, h, w], classes, config_file)?;
    graph.check_batch(cfg.train.batch_size, "train.batch_size", config_file)?;
    graph.check_batch(cfg.train.eval_batch_size, "train.eval_batch_size", config_file)?;
    let coarse = cfg
        .data
        .checked_coarse_groups()
        .map_err(|e| Error::Config { file: config_file.into(), message: e.to_string() })?;
    if cfg.data.task == Task::FashionHier {
        // A coarse head must give one logit per group, or its loss indexes past its logits.
        for n in graph.nodes.iter().filter(|n| n.head.as_ref().is_some_and(|h| h.target == Target::Coarse)) {
            if n.out_shape.as_slice() != [coarse.len() as i64] {
                return Err(Error::Config {
                    file: config_file.into(),
                    message: format!(
                        "node `{}`: its coarse head gives {:?} logits, data.coarse_groups has {} groups",
                        n.name,
                        n.out_shape,
                        coarse.len()
                    ),
                });
            }
        }
    }
    if needs_binary(&cfg.train) && !is_binary(cfg.data.task) {
        return Err(Error::Config {
            file: config_file.into(),
            message: format!(
                "key `train.accuracy`: the F-score needs a binary task, `{}` has {classes} classes",
                cfg.data.task.name(),
            ),
        });
    }
    Ok(graph)
}

fn new_model(cfg: &RunConfig, graph: Graph, device: Device) -> Result<D2nn> {
    let mut model = D2nn::new(graph, device, cfg.seed)?;
    model.detach_control_inputs = !cfg.train.control_grad_to_trunk;
    Ok(model)
}

pub fn controller_names(model: &D2nn) -> Vec<String> {
    model.graph.controls.iter().map(|&c| model.graph.nodes[c].name.clone()).collect()
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
        coverage: Vec::new(),
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
