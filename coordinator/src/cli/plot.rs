//! `d2nn plot`: redraw a sweep's trade-off plot or a run's training curves from their files.
use std::path::PathBuf;

use d2nn_coordinator::plot::{load_sweeps, sweep_json, tradeoff_png, write_run_curves, Placement};

use super::commands::PlotCommand;

/// Where `d2nn plot sweep` writes by default: `tradeoff.png` beside a `sweep.json`, else the
/// first input's name with `.png` (docs/img/sweep_x.json → docs/img/sweep_x.png).
fn default_out(first: &std::path::Path) -> PathBuf {
    let json = sweep_json(first);
    if json.file_name().is_some_and(|n| n == "sweep.json") {
        json.with_file_name("tradeoff.png")
    } else {
        json.with_extension("png")
    }
}

pub fn run(cmd: PlotCommand) -> anyhow::Result<()> {
    match cmd {
        PlotCommand::Sweep { sweeps, out, title } => {
            let mut plot = load_sweeps(&sweeps)?;
            if let Some(title) = title {
                plot.title = title;
            }
            let out = match (out, sweeps.first()) {
                (Some(out), _) => out,
                (None, Some(first)) => default_out(first),
                (None, None) => anyhow::bail!("give at least one sweep.json or sweep directory"),
            };
            let layout = tradeoff_png(&out, &plot)?;
            let listed = layout.labels.iter().filter(|(_, p)| matches!(p, Placement::Listed { .. })).count();
            let dropped = layout.labels.iter().filter(|(_, p)| matches!(p, Placement::Dropped)).count();
            println!(
                "wrote {} ({} points from {} sweep(s); {} labels beside the chart, {} without room)",
                out.display(),
                plot.points.len(),
                plot.sweeps,
                listed,
                dropped
            );
        }
        PlotCommand::Curves { run_dir } => {
            let path = write_run_curves(&run_dir)?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
