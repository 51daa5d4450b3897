//! What a run leaves in its directory: the resolved config, `metrics.jsonl`, `summary.json`, the model.
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::stats::StepSplit;
use super::tensorboard::RunEvents;
use super::EvalMetrics;
use crate::checkpoint::write_atomic;
use crate::config::RunConfig;
use crate::{Error, Result};

/// One logged step of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsLine {
    pub step: u64,
    pub epoch: u64,
    pub loss: f64,
    pub task_loss: f64,
    pub control_loss: f64,
    pub train_accuracy: f64,
    pub mean_cost_fraction: f64,
    pub reward_mean: f64,
    /// Reward baseline per controller.
    pub baseline: Vec<f64>,
    pub advantage_variance: Option<f64>,
    pub lr: f64,
    pub epsilon: Option<f64>,
    pub examples_per_sec: f64,
    /// Per controller (graph order), the fraction of the examples it ran on that took each action
    /// in the logged window. Absent in runs written before it was logged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub action_rates: Vec<Vec<f64>>,
    /// Where the logged steps' wall time went (the coordinator fills it; the local loop has none).
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub split: Option<StepSplit>,
}

/// `summary.json`: the outcome of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub task: String,
    pub algorithm: String,
    pub lambda: f64,
    pub test_accuracy: f64,
    pub test_f1: Option<f64>,
    pub test_loss: f64,
    pub val_accuracy: Option<f64>,
    pub mean_cost_fraction: f64,
    pub mean_mflops_per_example: f64,
    pub full_mflops_per_example: f64,
    /// Per controller name: the test-time rate of each action, and the fraction of examples it ran on.
    pub action_rates: BTreeMap<String, Vec<f64>>,
    pub controller_run_rates: BTreeMap<String, f64>,
    pub examples_per_sec: f64,
    pub steps: u64,
    pub epochs: u64,
    pub wall_seconds: f64,
    pub workers: usize,
    /// Per epoch: examples in it, committed, committed twice, retried, skipped (`data::sampler`).
    #[serde(default)]
    pub coverage: Vec<crate::data::EpochCoverage>,
}

impl Summary {
    pub fn test_metrics(&self) -> (f64, Option<f64>, f64) {
        (self.test_accuracy, self.test_f1, self.mean_cost_fraction)
    }

    pub fn fill_test(&mut self, test: &EvalMetrics, controller_names: &[String]) {
        self.test_accuracy = test.accuracy;
        self.test_f1 = test.f1;
        self.test_loss = test.loss;
        self.mean_cost_fraction = test.mean_cost_fraction;
        self.mean_mflops_per_example = test.mean_mflops_per_example;
        self.action_rates = controller_names.iter().cloned().zip(test.action_rates.iter().cloned()).collect();
        self.controller_run_rates =
            controller_names.iter().cloned().zip(test.controller_run_rates.iter().copied()).collect();
    }
}

/// Where a run's logged lines go: `metrics.jsonl` and the TensorBoard event file.
#[derive(Debug)]
pub struct MetricsWriter {
    file: File,
    events: RunEvents,
}

/// A run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub path: PathBuf,
}

impl RunDir {
    pub const CONFIG: &'static str = "config.toml";
    pub const METRICS: &'static str = "metrics.jsonl";
    pub const SUMMARY: &'static str = "summary.json";
    pub const MODEL: &'static str = "model.safetensors";
    /// Written by `d2nn eval --routing`.
    pub const ROUTING: &'static str = "routing.json";
    /// TensorBoard event files: the metrics lines and the end-of-run evaluation (`docs/plots.md`).
    pub const TENSORBOARD: &'static str = "tb";

    pub fn create(path: &Path) -> Result<RunDir> {
        fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        Ok(RunDir { path: path.to_path_buf() })
    }

    pub fn open(path: &Path) -> Result<RunDir> {
        if !path.join(Self::CONFIG).is_file() {
            return Err(Error::data(path, format!("not a run directory: no {}", Self::CONFIG)));
        }
        Ok(RunDir { path: path.to_path_buf() })
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn write_config(&self, cfg: &RunConfig) -> Result<()> {
        write_atomic(&self.file(Self::CONFIG), cfg.to_toml()?.as_bytes())
    }

    pub fn read_config(&self) -> Result<RunConfig> {
        let path = self.file(Self::CONFIG);
        let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        RunConfig::from_toml(&text, &path.display().to_string())
    }

    /// Starts `metrics.jsonl` and the TensorBoard events afresh (`append` false) or continues them.
    pub fn metrics_writer(&self, append: bool) -> Result<MetricsWriter> {
        let path = self.file(Self::METRICS);
        let file = OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let events = if append { RunEvents::resume(self, None)? } else { RunEvents::start(self)? };
        Ok(MetricsWriter { file, events })
    }

    /// Continues `metrics.jsonl` of a run resumed after `step` global steps. Lines logged after that
    /// step (the run went on past its checkpoint before it stopped) and a torn last line are dropped
    /// first, so the resumed run's lines follow on without duplicates; the TensorBoard events too.
    pub fn resume_metrics(&self, step: u64) -> Result<MetricsWriter> {
        let path = self.file(Self::METRICS);
        if path.is_file() {
            let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            let kept: String = text
                .lines()
                .filter(|l| serde_json::from_str::<MetricsLine>(l).is_ok_and(|m| m.step <= step))
                .map(|l| format!("{l}\n"))
                .collect();
            write_atomic(&path, kept.as_bytes())?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
        Ok(MetricsWriter { file, events: RunEvents::resume(self, Some(step))? })
    }

    /// One line of `metrics.jsonl`, and the same series as TensorBoard scalars.
    pub fn append_metrics(writer: &mut MetricsWriter, line: &MetricsLine) -> Result<()> {
        let text = serde_json::to_string(line).map_err(|e| Error::Invalid(e.to_string()))?;
        writeln!(writer.file, "{text}").map_err(|e| Error::Invalid(format!("writing metrics: {e}")))?;
        writer.events.log(line)
    }

    /// Every line of `metrics.jsonl`; a torn last line (a run killed mid-write) is skipped.
    pub fn read_metrics(&self) -> Result<Vec<MetricsLine>> {
        let path = self.file(Self::METRICS);
        let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut out = Vec::with_capacity(lines.len());
        for (i, l) in lines.iter().enumerate() {
            match serde_json::from_str::<MetricsLine>(l) {
                Ok(m) => out.push(m),
                Err(_) if i + 1 == lines.len() => tracing::warn!(path = %path.display(), "torn last line skipped"),
                Err(e) => return Err(Error::data(&path, format!("line {}: {e}", i + 1))),
            }
        }
        Ok(out)
    }

    /// `summary.json`, and the evaluation it holds as TensorBoard scalars at its last step.
    pub fn write_summary(&self, summary: &Summary) -> Result<()> {
        let text = serde_json::to_string_pretty(summary).map_err(|e| Error::Invalid(e.to_string()))?;
        write_atomic(&self.file(Self::SUMMARY), text.as_bytes())?;
        RunEvents::log_evaluation(self, summary)
    }

    pub fn write_routing(&self, report: &super::RoutingReport) -> Result<()> {
        let text = serde_json::to_string_pretty(report).map_err(|e| Error::Invalid(e.to_string()))?;
        write_atomic(&self.file(Self::ROUTING), text.as_bytes())
    }

    pub fn read_summary(&self) -> Result<Summary> {
        let path = self.file(Self::SUMMARY);
        let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::data(&path, e.to_string()))
    }
}
