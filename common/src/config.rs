//! The run config: one TOML file, layered with `D2NN_*` environment variables and `--set key=value`
//! overrides. Unknown keys and wrong types are errors naming the key and the file.
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::checkpoint::CheckpointConfig;
use crate::data::DataConfig;
use crate::graph::GraphSpec;
use crate::optim::{LrSchedule, OptimizerConfig};
use crate::rl::{Accuracy, BagCredit, EpsilonSchedule, QContinuation, QTargets, RateFloor};
use crate::train::{BranchPaths, QAlternatives};
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Seeds parameter init, data order and every random decision.
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(default)]
    pub sweep: SweepConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    pub model: GraphSpec,
}

/// What `d2nn sweep` compares a design against.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SweepConfig {
    /// λ values swept when `--lambdas` is not given.
    pub lambdas: Vec<f64>,
    /// The design's static baselines: config files, relative to this config's folder.
    pub baselines: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// The paper's method: scores are Q-values regressed onto the reward; ε-greedy exploration.
    #[default]
    QLearning,
    /// Softmax policy, policy gradient with a central per-action reward baseline.
    Reinforce,
}

/// How the coordinator sizes each worker's share of a global batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Every worker trains on the same number of examples per step.
    #[default]
    Equal,
    /// In proportion to each worker's measured examples per second (in whole mini-bags, at least
    /// one each), so a slow worker does not set the pace. The update equals the equal-share one up
    /// to float summation order, but the shares, and so a run's bits, depend on timing.
    Throughput,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: u64,
    /// Examples per optimizer step over all workers.
    pub batch_size: usize,
    pub lr: f64,
    pub optimizer: OptimizerConfig,
    pub schedule: LrSchedule,
    /// Clip the gradient norm to this value: the controllers' and the other modules' apart, so a large
    /// control loss cannot shrink the classifiers' gradients.
    pub grad_clip: Option<f64>,
    pub algorithm: Algorithm,
    /// Reward r = λ·A + (1−λ)·E.
    pub lambda: f64,
    /// Examples per mini-bag (1: per-example reward).
    pub bag_size: usize,
    /// Accuracy term A of the reward: `"per_example"` 0/1 correctness (the paper's), `"f1"` the
    /// F-score of a mini-bag, or `"true_class_prob"` (not the paper's) the probability the output
    /// gives the true class, a graded A whose differences between paths are rarely zero.
    pub accuracy: Accuracy,
    pub epsilon: EpsilonSchedule,
    /// REINFORCE entropy bonus.
    pub entropy_coef: f64,
    /// EMA decay of the reward baselines.
    pub baseline_decay: f64,
    /// Weight α of the controllers' loss against the task loss.
    pub control_weight: f64,
    /// Whether the controllers' loss also trains the regular modules that feed them.
    pub control_grad_to_trunk: bool,
    /// Steps of uniformly random routing that train the regular modules before the controllers learn.
    pub warmup_steps: u64,
    /// Weight of a second task loss that trains every action's path on every example (0: off, the
    /// paper's training, where a module learns only from the examples routed to it). Each step also
    /// runs the network once per distinct joint action of its controllers, forced for the whole
    /// batch (a cascade of two gates: 3 paths), and adds the cross-entropy of each such output, times
    /// this weight. Training computes every path; the controllers' reward, the cost and evaluation
    /// still follow the sampled decisions. Graphs with more than 8 joint actions (the product of the
    /// controllers' action counts) are refused; without a controller (a static baseline) it does
    /// nothing, as the only path already learns from every example.
    pub branch_loss_weight: f64,
    /// Which forced passes the branch loss trains: `"every"` (default) every distinct joint action,
    /// as above; `"uniform"` (not the paper's) only those where every controller takes the same
    /// action index (a chain's all-full, all-slim, all-skip: one pass per action index, so graphs
    /// with many controllers are allowed). `q_every_action` needs `"every"`.
    pub branch_paths: BranchPaths,
    /// Q-learning only: regress every action's Q onto the reward that action earns on the example
    /// (false: only the taken action's, the paper's eq. (3)). Each step runs the forced passes the
    /// branch loss runs, so the reward of every path is observed rather than sampled; ε-greedy then
    /// only picks the path the task loss follows. With several controllers, a controller's action is
    /// regressed onto the best reward among the paths that continue from it (the later controllers
    /// acting greedily on the observed rewards); with one, onto its own path's reward. Same limit of
    /// 8 joint actions; without a controller it does nothing.
    pub q_every_action: bool,
    /// With `q_every_action`: which passes observe the rewards of the actions not taken.
    /// `"joint_paths"` (default) the forced passes above, every joint action (at most 8);
    /// `"one_at_a_time"` (not the paper's) one pass per controller and action, that controller
    /// forced to the action on every example and the others keeping their sampled actions (a chain
    /// of three 3-way controllers: 6 passes without gradients instead of 27), so each action is
    /// credited with what it changes given the others' decisions. Needs per-example rewards
    /// (`bag_size = 1`).
    pub q_alternatives: QAlternatives,
    /// With `q_every_action`: `"bag"` (default, the paper's credit) regresses the sum of a bag's
    /// Q-values onto the bag's reward; `"marginal"` (not the paper's) regresses each example's Q onto
    /// m × the change of its bag's reward (F-score or accuracy, and cost) when that example alone
    /// takes the action's path and the rest of the bag keeps its sampled outcome: the bag's F-score
    /// stays the objective, but each example is credited with its own decision's effect.
    pub bag_credit: BagCredit,
    /// With `q_every_action` and several controllers, what an earlier controller's action regresses
    /// onto among the paths that continue from it: `"best_path"` (default) the best of their
    /// observed rewards, as if the later controllers knew which path will be right;
    /// `"greedy_path"` (not the paper's forced passes, but the paper's target: every controller onto
    /// the final reward) the reward of the path the later controllers choose greedily by their own
    /// Q. Needs per-example rewards (`bag_credit = "marginal"` or `bag_size = 1`).
    pub q_continuation: QContinuation,
    /// With `q_every_action`: `"raw"` (default) regresses each action's Q onto its path's reward;
    /// `"centered"` (not the paper's) regresses an example's Q-values relative to their mean over
    /// the controller's actions onto its rewards relative to theirs, so a controller fits only what
    /// tells its actions apart, not the part of the reward they share. Needs per-example rewards.
    pub q_targets: QTargets,
    /// With `q_targets = "centered"` (not the paper's; off when absent): `{ rate, bonus }`, a term
    /// against a controller's collapse onto one action. While a controller's runner-up action (second
    /// by mean Q) is the greedy choice on fewer than `rate` of a step's decisions, its regression
    /// target gains `bonus · (rate − share) / rate` times the mean absolute centered target on every
    /// row, which moves the threshold between the two actions and keeps their order by the reward
    /// ([`RateFloor`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_floor: Option<RateFloor>,
    pub log_every: u64,
    /// Workers' shares of each global batch (`equal` or `throughput`); one worker or the local loop
    /// ignores it.
    pub balance: Balance,
    /// Examples per evaluation forward pass. Kept small enough that activations stay under glibc's
    /// largest mmap threshold (32 MiB): at 1000, high_low's widest activation (50 MB) was mapped and
    /// page-faulted afresh every batch, and a test-set evaluation spent 7.6 s in the kernel.
    pub eval_batch_size: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 5,
            batch_size: 128,
            lr: 0.05,
            optimizer: OptimizerConfig::default(),
            schedule: LrSchedule::default(),
            grad_clip: Some(5.0),
            algorithm: Algorithm::default(),
            lambda: 0.9,
            bag_size: 1,
            accuracy: Accuracy::PerExample,
            epsilon: EpsilonSchedule::default(),
            entropy_coef: 0.01,
            baseline_decay: 0.9,
            control_weight: 1.0,
            control_grad_to_trunk: false,
            warmup_steps: 200,
            branch_loss_weight: 0.0,
            branch_paths: BranchPaths::Every,
            q_every_action: false,
            q_alternatives: QAlternatives::JointPaths,
            bag_credit: BagCredit::Bag,
            q_continuation: QContinuation::BestPath,
            q_targets: QTargets::Raw,
            rate_floor: None,
            log_every: 20,
            balance: Balance::Equal,
            eval_batch_size: 256,
        }
    }
}

type Builder = config::ConfigBuilder<config::builder::DefaultState>;

/// Overrides arrive as text; give them the type they spell (bool, integer, float, else string), since
/// serde cannot turn a string into a number inside tagged enums such as `train.schedule`.
fn set_typed(builder: Builder, key: &str, value: &str) -> std::result::Result<Builder, config::ConfigError> {
    if value.starts_with('[') {
        // An array (`data.coarse_groups=[[0,2],[1]]`), read as TOML.
        let parsed: toml::Table = toml::from_str(&format!("v = {value}"))
            .map_err(|e| config::ConfigError::Message(format!("`{value}` is not a TOML array: {e}")))?;
        let array = parsed.get("v").map(toml_to_config).ok_or_else(|| config::ConfigError::Message(value.into()))?;
        builder.set_override(key, array?)
    } else if let Ok(b) = value.parse::<bool>() {
        builder.set_override(key, b)
    } else if let Ok(i) = value.parse::<i64>() {
        builder.set_override(key, i)
    } else if let Ok(f) = value.parse::<f64>() {
        builder.set_override(key, f)
    } else {
        builder.set_override(key, value)
    }
}

fn toml_to_config(value: &toml::Value) -> std::result::Result<config::Value, config::ConfigError> {
    Ok(match value {
        toml::Value::Integer(i) => (*i).into(),
        toml::Value::Float(f) => (*f).into(),
        toml::Value::Boolean(b) => (*b).into(),
        toml::Value::String(s) => s.clone().into(),
        toml::Value::Array(items) => {
            items.iter().map(toml_to_config).collect::<std::result::Result<Vec<_>, _>>()?.into()
        }
        other => {
            return Err(config::ConfigError::Message(format!(
                "`{other}`: only arrays of numbers, booleans and strings"
            )))
        }
    })
}

/// Environment variables that are not config overrides even though they start with `D2NN_`.
const NOT_CONFIG: &[&str] = &["D2NN_DATA_DIR", "D2NN_CLUSTER_COOKIE", "D2NN_LOG"];

impl RunConfig {
    /// Loads `path`, then `D2NN_SECTION__KEY=value` variables from `env`, then `overrides`
    /// (`key.path=value`), in that order of precedence (last wins).
    pub fn load(path: &Path, env: &[(String, String)], overrides: &[String]) -> Result<RunConfig> {
        let file = path.display().to_string();
        if !path.is_file() {
            return Err(Error::Config { file, message: "no such config file".into() });
        }
        let source = config::File::from(path).format(config::FileFormat::Toml).required(true);
        Self::load_layered(source, &file, env, overrides)
    }

    /// [`RunConfig::load`] with the base layer given as TOML text (a checkpoint's resolved config);
    /// `file` names it in errors.
    pub fn load_text(text: &str, file: &str, env: &[(String, String)], overrides: &[String]) -> Result<RunConfig> {
        Self::load_layered(config::File::from_str(text, config::FileFormat::Toml), file, env, overrides)
    }

    fn load_layered<S>(source: S, file: &str, env: &[(String, String)], overrides: &[String]) -> Result<RunConfig>
    where
        S: config::Source + Send + Sync + 'static,
    {
        let cfg_err = |message: String| Error::Config { file: file.to_string(), message };
        let mut builder = config::Config::builder().add_source(source);
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("D2NN_") else { continue };
            if NOT_CONFIG.contains(&name.as_str()) || rest.is_empty() {
                continue;
            }
            let key = rest.to_lowercase().replace("__", ".");
            builder = set_typed(builder, &key, value).map_err(|e| cfg_err(format!("{name}: {e}")))?;
        }
        for item in overrides {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| cfg_err(format!("override `{item}` is not of the form key=value")))?;
            builder =
                set_typed(builder, key.trim(), value.trim()).map_err(|e| cfg_err(format!("--set {item}: {e}")))?;
        }
        let merged = builder.build().map_err(|e| cfg_err(e.to_string()))?;
        let cfg: RunConfig = serde_path_to_error::deserialize(merged).map_err(|e| {
            let key = e.path().to_string();
            cfg_err(format!("key `{key}`: {}", e.into_inner()))
        })?;
        cfg.check().map_err(cfg_err)?;
        Ok(cfg)
    }

    /// Parses a config from TOML text (a saved resolved config).
    pub fn from_toml(text: &str, file: &str) -> Result<RunConfig> {
        let de = toml::Deserializer::new(text);
        let cfg: RunConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            Error::Config { file: file.into(), message: format!("key `{key}`: {}", e.into_inner()) }
        })?;
        cfg.check().map_err(|message| Error::Config { file: file.into(), message })?;
        Ok(cfg)
    }

    /// The resolved config as TOML, as written into every run directory.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::Invalid(format!("cannot write the config as TOML: {e}")))
    }

    /// Range checks serde cannot express, of every section: the one place a config is validated
    /// (loading a file, a saved config, or a peer's), before any data is loaded or any tensor built.
    fn check(&self) -> std::result::Result<(), String> {
        let t = &self.train;
        let bad = |key: &str, why: &str| Err(format!("key `train.{key}`: {why}"));
        let sections = [
            ("optimizer", t.optimizer.validate()),
            ("schedule", t.schedule.validate()),
            ("epsilon", t.epsilon.validate()),
            ("rate_floor", t.rate_floor.as_ref().map_or(Ok(()), RateFloor::validate)),
        ];
        for (key, checked) in sections {
            if let Err(e) = checked {
                return bad(key, &e.to_string());
            }
        }
        // The resolved config is saved as TOML, whose integers are signed 64-bit.
        let counts = [
            ("seed", self.seed),
            ("train.epochs", t.epochs),
            ("train.warmup_steps", t.warmup_steps),
            ("train.log_every", t.log_every),
            ("train.epsilon.decay_steps", t.epsilon.decay_steps),
            ("checkpoint.every_steps", self.checkpoint.every_steps),
        ];
        if let Some((key, v)) = counts.iter().find(|(_, v)| *v > i64::MAX as u64) {
            return Err(format!("key `{key}`: {v} is over {} (TOML integers are signed 64-bit)", i64::MAX));
        }
        if !(0.0..=1.0).contains(&t.lambda) {
            return bad("lambda", "must be in [0, 1]");
        }
        if t.batch_size == 0 {
            return bad("batch_size", "must be positive");
        }
        if t.bag_size == 0 || !t.batch_size.is_multiple_of(t.bag_size) {
            return bad("bag_size", &format!("must divide batch_size ({})", t.batch_size));
        }
        if t.lr <= 0.0 || t.lr.is_nan() {
            return bad("lr", "must be positive");
        }
        if !(0.0..1.0).contains(&t.baseline_decay) {
            return bad("baseline_decay", "must be in [0, 1)");
        }
        if t.eval_batch_size == 0 {
            return bad("eval_batch_size", "must be positive");
        }
        self.data.checked_coarse_groups().map_err(|e| e.to_string())?;
        let controls: Vec<&crate::graph::NodeSpec> =
            self.model.nodes.iter().filter(|n| n.kind == crate::graph::NodeKind::Control).collect();
        t.check_forced_passes(&controls).map_err(|(key, why)| format!("key `train.{key}`: {why}"))?;
        if self.checkpoint.keep_last == 0 {
            return Err("key `checkpoint.keep_last`: must be at least 1 (the latest checkpoint is always kept)".into());
        }
        Ok(())
    }
}

mod forced_checks;
#[cfg(test)]
mod tests;
