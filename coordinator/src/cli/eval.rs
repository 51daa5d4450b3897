//! `d2nn eval`: a trained run's (or a checkpoint's) test metrics recomputed, checked against its
//! summary.json, and with `--routing` the controller's routing report.
use anyhow::{bail, Context};
use d2nn_common::exec::{DecisionKey, Policy};
use d2nn_common::train::{evaluate, is_binary, load_checkpoint, load_run, routing_report, RunDir};

use super::commands::EvalArgs;
use super::config::parse_device;
use super::train::write_curves;

pub fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let device = parse_device(&args.device)?;
    let (cfg, dataset, model, run_dir) = match (&args.checkpoint, &args.run_dir) {
        (Some(path), _) => {
            let (cfg, dataset, model, dir) =
                load_checkpoint(path, device).with_context(|| format!("loading checkpoint {}", path.display()))?;
            println!("checkpoint         {}", dir.display());
            (cfg, dataset, model, None)
        }
        (None, Some(run_dir)) => {
            let (cfg, dataset, model) =
                load_run(run_dir, device).with_context(|| format!("loading run {}", run_dir.display()))?;
            (cfg, dataset, model, Some(run_dir))
        }
        (None, None) => bail!("give --run-dir or --checkpoint"),
    };
    let binary = is_binary(dataset.task);
    let key = DecisionKey { seed: cfg.seed, step: u64::MAX };
    let test = evaluate(&model, &dataset.test, cfg.train.eval_batch_size, &Policy::Argmax, key, binary)?;
    println!("test accuracy      {:.4}", test.accuracy);
    if let Some(f1) = test.f1 {
        println!("test F1            {f1:.4}");
    }
    println!(
        "mean cost fraction {:.4}  ({:.3} MFLOPs per example)",
        test.mean_cost_fraction, test.mean_mflops_per_example
    );
    if let Some(run_dir) = run_dir {
        if let Ok(saved) = RunDir::open(run_dir).and_then(|d| d.read_summary()) {
            let same = saved.test_accuracy == test.accuracy
                && saved.mean_cost_fraction == test.mean_cost_fraction
                && saved.test_f1 == test.f1;
            println!("summary.json       {}", if same { "matches" } else { "DIFFERS" });
            if !same {
                bail!("recomputed metrics differ from {}/summary.json", run_dir.display());
            }
        }
    }
    if let Some(run_dir) = run_dir {
        write_curves(run_dir);
    }
    if args.routing {
        let binary = is_binary(dataset.task);
        let report = routing_report(&model, &dataset.test, cfg.train.eval_batch_size, key, binary)
            .context("d2nn eval --routing")?;
        print!("{}", report.render());
        if let Some(run_dir) = run_dir {
            let dir = RunDir::open(run_dir)?;
            dir.write_routing(&report)?;
            println!("written            {}", dir.file(RunDir::ROUTING).display());
        }
    }
    Ok(())
}
