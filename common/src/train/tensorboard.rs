//! A run's TensorBoard scalars, under `RUN/tb/`: every `metrics.jsonl` line at its step, and the
//! end-of-run evaluation (test metrics, validation accuracy, the checkpoints' validation accuracy).
//! `tensorboard --logdir runs` shows every run and every sweep point (`docs/plots.md`).
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::path::PathBuf;

use super::outputs::{MetricsLine, RunDir, Summary};
use crate::checkpoint::CheckpointStore;
use crate::graph::{GraphSpec, NodeKind, INPUT};
use crate::tfevents::{event_files, read_intact_events, wall_time, Event, EventWriter};
use crate::{Error, Result};

/// A controller as plots and tags name it: its node's name and a name per action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerInfo {
    pub name: String,
    /// The nodes each action enables, joined by `+` (`none` for an action that enables nothing).
    pub actions: Vec<String>,
}

/// The controllers of a graph spec in the engine's order (`Graph::controls`, which orders
/// `MetricsLine::baseline` and `action_rates`): the smallest topological order by declaration
/// over data inputs and action edges, as `Graph::build` computes it, without building layers. A
/// spec that does not resolve (unknown names, a cycle) falls back to declaration order.
pub fn controllers(spec: &GraphSpec) -> Vec<ControllerInfo> {
    let info = |i: usize| {
        let n = &spec.nodes[i];
        let mut seen: HashMap<String, usize> = HashMap::new();
        let actions = n
            .actions
            .iter()
            .map(|targets| {
                let base = if targets.is_empty() { "none".to_string() } else { targets.join("+") };
                let k = seen.entry(base.clone()).or_insert(0);
                *k += 1;
                if *k == 1 {
                    base
                } else {
                    format!("{base}#{k}")
                }
            })
            .collect();
        ControllerInfo { name: n.name.clone(), actions }
    };
    let declared: Vec<usize> = (0..spec.nodes.len()).filter(|&i| spec.nodes[i].kind == NodeKind::Control).collect();
    match topological(spec) {
        Some(order) => order.into_iter().filter(|&i| spec.nodes[i].kind == NodeKind::Control).map(info).collect(),
        None => declared.into_iter().map(info).collect(),
    }
}

/// Indices into `spec.nodes` in Kahn order, smallest declared index first (the input node is
/// index 0 there, before every declared node, so it changes nothing).
fn topological(spec: &GraphSpec) -> Option<Vec<usize>> {
    let index: HashMap<&str, usize> = spec.nodes.iter().enumerate().map(|(i, n)| (n.name.as_str(), i)).collect();
    let n = spec.nodes.len();
    let mut children = vec![Vec::new(); n];
    let mut pending = vec![0usize; n];
    for (i, node) in spec.nodes.iter().enumerate() {
        for input in node.inputs.iter().filter(|name| name.as_str() != INPUT) {
            children[*index.get(input.as_str())?].push(i);
            pending[i] += 1;
        }
        for target in node.actions.iter().flatten() {
            let t = *index.get(target.as_str())?;
            children[i].push(t);
            pending[t] += 1;
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..n).filter(|&i| pending[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &c in &children[i] {
            pending[c] -= 1;
            if pending[c] == 0 {
                ready.push(Reverse(c));
            }
        }
    }
    (order.len() == n).then_some(order)
}

/// The name of controller `i` and of its action `a`, or positional names beyond what is known.
fn names(controllers: &[ControllerInfo], i: usize, a: usize) -> (String, String) {
    match controllers.get(i) {
        Some(c) => (c.name.clone(), c.actions.get(a).cloned().unwrap_or_else(|| format!("action{a}"))),
        None => (format!("controller{i}"), format!("action{a}")),
    }
}

/// The scalars of one metrics line, as TensorBoard tags: `train/*`, `baseline/<controller>` and
/// `actions/<controller>/<action>` (the rate of each action among the examples the controller ran on).
pub fn line_scalars(line: &MetricsLine, controllers: &[ControllerInfo]) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = vec![
        ("train/loss".into(), line.loss),
        ("train/task_loss".into(), line.task_loss),
        ("train/control_loss".into(), line.control_loss),
        ("train/accuracy".into(), line.train_accuracy),
        ("train/cost_fraction".into(), line.mean_cost_fraction),
        ("train/reward_mean".into(), line.reward_mean),
        ("train/lr".into(), line.lr),
        ("train/examples_per_sec".into(), line.examples_per_sec),
    ];
    let optional = [
        ("train/epsilon", line.epsilon),
        ("train/advantage_variance", line.advantage_variance),
        ("time/compute_seconds", line.split.map(|s| s.compute)),
        ("time/allreduce_seconds", line.split.map(|s| s.allreduce)),
        ("time/wait_seconds", line.split.map(|s| s.wait)),
        ("time/coordination_seconds", line.split.map(|s| s.coordination)),
    ];
    out.extend(optional.into_iter().filter_map(|(tag, v)| Some((tag.to_string(), v?))));
    for (i, b) in line.baseline.iter().enumerate() {
        out.push((format!("baseline/{}", names(controllers, i, 0).0), *b));
    }
    for (i, rates) in line.action_rates.iter().enumerate() {
        for (a, r) in rates.iter().enumerate() {
            let (c, action) = names(controllers, i, a);
            out.push((format!("actions/{c}/{action}"), *r));
        }
    }
    out
}

/// The evaluation a summary holds, as TensorBoard tags: `test/*` and `val/accuracy`.
pub fn summary_scalars(summary: &Summary, controllers: &[ControllerInfo]) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = vec![
        ("test/accuracy".into(), summary.test_accuracy),
        ("test/loss".into(), summary.test_loss),
        ("test/cost_fraction".into(), summary.mean_cost_fraction),
        ("test/mflops_per_example".into(), summary.mean_mflops_per_example),
    ];
    if let Some(f1) = summary.test_f1 {
        out.push(("test/f1".into(), f1));
    }
    if let Some(val) = summary.val_accuracy {
        out.push(("val/accuracy".into(), val));
    }
    for (name, rates) in &summary.action_rates {
        let known = controllers.iter().find(|c| &c.name == name);
        for (a, r) in rates.iter().enumerate() {
            let action = known.and_then(|c| c.actions.get(a).cloned()).unwrap_or_else(|| format!("action{a}"));
            out.push((format!("test/actions/{name}/{action}"), *r));
        }
    }
    out
}

/// The validation accuracy each readable checkpoint of a run recorded, by step.
pub fn checkpoint_validation(run: &RunDir) -> Vec<(u64, f64)> {
    let listed = CheckpointStore::of_run(&run.path).list().unwrap_or_default();
    let mut points: Vec<(u64, f64)> = listed
        .iter()
        .filter_map(|l| {
            let meta = l.meta.as_ref().ok()?;
            Some((meta.position.step, meta.val_metric?))
        })
        .collect();
    points.sort_by_key(|p| p.0);
    points.dedup_by_key(|p| p.0);
    points
}

/// The controllers of a run directory's config; none when it cannot be read.
pub fn run_controllers(run: &RunDir) -> Vec<ControllerInfo> {
    run.read_config().map(|cfg| controllers(&cfg.model)).unwrap_or_default()
}

fn to_f32(scalars: Vec<(String, f64)>) -> Vec<(String, f32)> {
    scalars.into_iter().map(|(t, v)| (t, v as f32)).collect()
}

/// The event file a run is writing.
#[derive(Debug)]
pub(super) struct RunEvents {
    writer: EventWriter,
    controllers: Vec<ControllerInfo>,
}

impl RunEvents {
    fn dir(run: &RunDir) -> PathBuf {
        run.file(RunDir::TENSORBOARD)
    }

    /// A fresh run: the event files of an earlier run in the directory go, as its metrics.jsonl does.
    pub(super) fn start(run: &RunDir) -> Result<RunEvents> {
        let dir = Self::dir(run);
        remove_all(&event_files(&dir)?)?;
        Ok(RunEvents { writer: EventWriter::create(&dir)?, controllers: run_controllers(run) })
    }

    /// A resumed run: the events up to `up_to` (all with None) are copied into one new file and
    /// the old files removed, so the resumed steps follow without duplicates.
    pub(super) fn resume(run: &RunDir, up_to: Option<u64>) -> Result<RunEvents> {
        let dir = Self::dir(run);
        let old = event_files(&dir)?;
        let mut writer = EventWriter::create(&dir)?;
        for path in &old {
            for event in read_intact_events(path)? {
                let keep = event.file_version.is_none() && up_to.is_none_or(|s| event.step <= s as i64);
                if keep {
                    writer.write(&event)?;
                }
            }
        }
        remove_all(&old)?;
        Ok(RunEvents { writer, controllers: run_controllers(run) })
    }

    pub(super) fn log(&mut self, line: &MetricsLine) -> Result<()> {
        let scalars = to_f32(line_scalars(line, &self.controllers));
        self.writer.write(&Event::scalars(wall_time(), line.step, scalars))
    }

    /// The evaluation of a finished run, at its last step, and the checkpoints' validation accuracy
    /// at theirs, appended to the newest event file; (tag, step) pairs already there are skipped.
    pub(super) fn log_evaluation(run: &RunDir, summary: &Summary) -> Result<()> {
        let dir = Self::dir(run);
        let files = event_files(&dir)?;
        let mut present: BTreeSet<(String, i64)> = BTreeSet::new();
        for path in &files {
            for event in read_intact_events(path)? {
                present.extend(event.scalars.into_iter().map(|(tag, _)| (tag, event.step)));
            }
        }
        let controllers = run_controllers(run);
        let mut by_step: Vec<(u64, Vec<(String, f64)>)> = checkpoint_validation(run)
            .into_iter()
            .map(|(step, v)| (step, vec![("val/accuracy".to_string(), v)]))
            .collect();
        by_step.push((summary.steps, summary_scalars(summary, &controllers)));
        let mut writer = None;
        for (step, scalars) in by_step {
            let fresh: Vec<(String, f64)> =
                scalars.into_iter().filter(|(tag, _)| present.insert((tag.clone(), step as i64))).collect();
            if fresh.is_empty() {
                continue;
            }
            let w = match writer.take() {
                Some(w) => w,
                None => match files.last() {
                    Some(last) => EventWriter::append(last)?,
                    None => EventWriter::create(&dir)?,
                },
            };
            let w = writer.insert(w);
            w.write(&Event::scalars(wall_time(), step, to_f32(fresh)))?;
        }
        Ok(())
    }
}

fn remove_all(files: &[PathBuf]) -> Result<()> {
    for f in files {
        std::fs::remove_file(f).map_err(|e| Error::io(f, e))?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "tensorboard_tests.rs"]
mod tests;
