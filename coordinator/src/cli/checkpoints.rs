//! `d2nn checkpoints list|inspect`: what a run's checkpoints hold, verified.
use std::path::Path;

use anyhow::{bail, Context};
use d2nn_common::checkpoint::{self, CheckpointMeta, CheckpointStore};
use d2nn_common::exec::named_digest;

use super::commands::CheckpointsCommand;

pub fn run(cmd: CheckpointsCommand) -> anyhow::Result<()> {
    match cmd {
        CheckpointsCommand::List { dir } => list(&dir),
        CheckpointsCommand::Inspect { path, json } => inspect(&path, json),
    }
}

fn megabytes(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

fn list(dir: &Path) -> anyhow::Result<()> {
    let store = CheckpointStore::find(dir);
    let listed = store.list().with_context(|| format!("listing checkpoints of {}", dir.display()))?;
    if listed.is_empty() {
        println!("no checkpoints in {}", store.root().display());
        return Ok(());
    }
    println!("{:<18} {:>8} {:>6} {:>8} {:>10}  {:<8}  marks", "checkpoint", "step", "epoch", "val", "size", "files");
    let mut damaged = Vec::new();
    for l in &listed {
        let marks: Vec<&str> = [(l.latest, "LATEST"), (l.best, "best")].iter().filter(|m| m.0).map(|m| m.1).collect();
        // Every file's checksum, so a listing says which checkpoint a resume could not load, and why.
        match l
            .meta
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|m| m.verify_files(&l.dir).map(|()| m).map_err(|e| e.to_string()))
        {
            Ok(m) => {
                let val = m.val_metric.map_or("-".into(), |v| format!("{v:.4}"));
                let p = &m.position;
                let size = megabytes(l.bytes);
                let name = &l.name;
                println!(
                    "{name:<18} {:>8} {:>6} {val:>8} {size:>10}  {:<8}  {}",
                    p.step,
                    p.epoch,
                    "verified",
                    marks.join(" ")
                );
            }
            Err(e) => {
                println!("{:<18} DAMAGED: {e} {}", l.name, marks.join(" "));
                damaged.push(l.name.clone());
            }
        }
    }
    if !damaged.is_empty() {
        bail!(
            "{} of {} checkpoints in {} are damaged: {}",
            damaged.len(),
            listed.len(),
            store.root().display(),
            damaged.join(", ")
        );
    }
    Ok(())
}

fn inspect(path: &Path, json: bool) -> anyhow::Result<()> {
    let (dir, meta) = checkpoint::open(path)?;
    let params = checkpoint::read_params(&dir)?;
    let recomputed = named_digest(&params)?;
    if recomputed != meta.params_sha256 {
        bail!(
            "{}: params_sha256 recomputed from the file is {recomputed}, meta.json records {}",
            dir.join(checkpoint::MODEL_FILE).display(),
            meta.params_sha256
        );
    }
    if json {
        let mut value = serde_json::to_value(&meta)?;
        value["path"] = dir.display().to_string().into();
        value["checksums_verified"] = true.into();
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_meta(&dir, &meta);
    }
    Ok(())
}

fn print_meta(dir: &Path, m: &CheckpointMeta) {
    let p = &m.position;
    let s = &m.schedules;
    println!("checkpoint     {}", dir.display());
    println!("format         {} v{}, written by d2nn {}", m.format, m.format_version, m.d2nn_version);
    println!(
        "position       step {} = epoch {} + {} of {} steps ({} training examples)",
        p.step, p.epoch, p.step_in_epoch, p.steps_per_epoch, p.train_examples
    );
    let epsilon = s.next_epsilon.map_or(String::new(), |e| format!(", next ε {e} (position {})", s.epsilon_position));
    println!("schedules      next lr {}{epsilon}, {} steps in all", s.next_lr, s.total_steps);
    println!(
        "rng            {}, data-order seed {}, decision seed {}",
        m.rng.kind, m.rng.data_order_seed, m.rng.decision_seed
    );
    println!("baselines      {:?}", m.baseline.node);
    println!("optimizer      {} updates", m.optimizer_steps);
    match &m.sampler {
        Some(sampler) => {
            let retry: usize = sampler.retry.iter().map(|b| b.ids.len()).sum();
            println!(
                "sample order   {} examples of epoch {} handed out, {retry} to retry",
                sampler.cursor, sampler.epoch
            );
            for c in &sampler.coverage {
                println!(
                    "  epoch {:<6} {} of {} committed, {} duplicates, {} retried, {} skipped",
                    c.epoch,
                    c.examples_committed,
                    c.examples_in_epoch,
                    c.duplicates,
                    c.examples_retried,
                    c.examples_skipped
                );
            }
        }
        None => println!("sample order   not recorded (format version 1: derived from the step on resume)"),
    }
    println!("world size     {}", m.world_size);
    println!("val metric     {}", m.val_metric.map_or("-".into(), |v| format!("{v:.4}")));
    for (i, (name, f)) in m.files.iter().enumerate() {
        let head = if i == 0 { "files" } else { "" };
        println!("{head:<14} {name:<22} {:>10}  sha256 {}  verified", megabytes(f.bytes), f.sha256);
    }
    println!("params_sha256  {} (recomputed from {}: matches)", m.params_sha256, checkpoint::MODEL_FILE);
}
