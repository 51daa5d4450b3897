//! The pictures d2nn draws (`docs/plots.md`): a sweep's trade-off plot (`tradeoff.png`) and a
//! run's training curves (`curves.png`).
use std::ops::Range;

mod curves;
mod layout;
mod style;
mod sweep_file;
mod tradeoff;

pub use curves::{curves_png, run_curves, write_run_curves, Curves, Mark, Panel, Series, CURVES_FILE};
pub use layout::{crosses, place_labels, LabelRequest, Placement, Rect, Segment};
pub use sweep_file::{load_sweeps, sweep_json, Kind, PlotPoint, Tradeoff};
pub use tradeoff::{draw_tradeoff, tradeoff_png, TradeoffLayout};

#[derive(Debug, thiserror::Error)]
#[error("plot {path}: {message}")]
pub struct PlotError {
    pub path: String,
    pub message: String,
}

fn draw_err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// An axis range that starts and ends where the data does, padded by `frac` of the span (at least
/// `min_pad`) and never below `floor` when the data is not.
fn axis_range(values: impl Iterator<Item = f64>, frac: f64, min_pad: f64, floor: Option<f64>) -> Range<f64> {
    let (lo, hi) = values.filter(|v| v.is_finite()).fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * frac).max(min_pad);
    let mut start = lo - pad;
    if let Some(f) = floor {
        if lo >= f {
            start = start.max(f);
        }
    }
    start..hi + pad
}

/// Tick labels with as many decimals as the range needs.
fn tick_format(range: &Range<f64>) -> impl Fn(&f64) -> String {
    let span = (range.end - range.start).abs().max(1e-12);
    let decimals = (-(span / 6.0).log10()).ceil().clamp(0.0, 6.0) as usize;
    move |v: &f64| format!("{v:.decimals$}")
}
