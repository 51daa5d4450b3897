//! May a run with config `new` continue from a checkpoint saved with config `saved`?
//!
//! Keys fall in three groups. Keys that cannot change what training computes (where the data lives,
//! logging, evaluation batch, checkpointing, sweeps) may always differ. Keys that change only the
//! rest of the run's schedule (epochs, learning rate and its schedule, the evaluation subset) may
//! differ with `--allow-config-change`. Anything else (the graph, the data, the seed, the batch,
//! the optimizer, the RL settings) would make the checkpoint's state meaningless or the result a
//! different run, so a difference is refused with the keys and both values.
use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::RunConfig;
use crate::{Error, Result};

/// Prefixes of keys that never matter to a resume.
const FREE: &[&str] =
    &["data.dir", "data.source", "train.log_every", "train.eval_batch_size", "train.balance", "checkpoint.", "sweep."];
/// Prefixes of keys `--allow-config-change` accepts.
const SAFE: &[&str] = &["train.epochs", "train.lr", "train.schedule", "data.test_limit"];

/// `checkpoint.` matches every key below `checkpoint`; `train.lr` matches itself and its sub-keys only.
fn matches(key: &str, prefixes: &[&str]) -> bool {
    prefixes.iter().any(|p| {
        if p.ends_with('.') {
            key.starts_with(p)
        } else {
            key == *p || key.starts_with(&format!("{p}."))
        }
    })
}

/// Dotted key → value of every leaf (`model.nodes.2.layers.0.out`).
fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    let join = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
    match value {
        Value::Object(map) => map.iter().for_each(|(k, v)| flatten(&join(k), v, out)),
        Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| flatten(&join(&i.to_string()), v, out)),
        leaf => {
            out.insert(prefix.to_string(), leaf.clone());
        }
    }
}

/// Keys whose values differ, with (saved, new); a key only one side has shows `absent` on the other.
fn differences(saved: &RunConfig, new: &RunConfig) -> Result<Vec<(String, String, String)>> {
    let as_leaves = |cfg: &RunConfig| -> Result<BTreeMap<String, Value>> {
        let value = serde_json::to_value(cfg).map_err(|e| Error::Invalid(format!("config as JSON: {e}")))?;
        let mut out = BTreeMap::new();
        flatten("", &value, &mut out);
        Ok(out)
    };
    let (a, b) = (as_leaves(saved)?, as_leaves(new)?);
    let show = |v: Option<&Value>| v.map_or_else(|| "absent".to_string(), Value::to_string);
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    Ok(keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| (k.clone(), show(a.get(k)), show(b.get(k))))
        .collect())
}

/// Refuses a resume whose config differs from the checkpoint's in a key that matters (see the
/// module docs), naming every such key with both values; returns the accepted differences of
/// `--allow-config-change` keys for the caller to log. `checkpoint` names the checkpoint in errors.
pub fn check_resume_config(
    checkpoint: &std::path::Path,
    saved: &RunConfig,
    new: &RunConfig,
    allow_change: bool,
) -> Result<Vec<String>> {
    let mut graph = Vec::new();
    let mut refused = Vec::new();
    let mut accepted = Vec::new();
    for (key, was, now) in differences(saved, new)? {
        if matches(&key, FREE) {
            continue;
        }
        let line = format!("{key}: {was} in the checkpoint, {now} now");
        if key.starts_with("model.") {
            graph.push(line);
        } else if matches(&key, SAFE) && allow_change {
            accepted.push(line);
        } else if matches(&key, SAFE) {
            refused.push(format!("{line} (allowed with --allow-config-change)"));
        } else {
            refused.push(line);
        }
    }
    let mut message = Vec::new();
    if !graph.is_empty() {
        message.push(format!("the checkpoint's graph differs from the config's:\n  {}", graph.join("\n  ")));
    }
    if !refused.is_empty() {
        message.push(format!("the config differs from the checkpoint's:\n  {}", refused.join("\n  ")));
    }
    if message.is_empty() {
        return Ok(accepted);
    }
    Err(Error::data(checkpoint, format!("cannot resume: {}", message.join("\n"))))
}
