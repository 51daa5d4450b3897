//! A run's training curves (`curves.png`): small panels against the global step, from
//! `metrics.jsonl`, the checkpoints' validation accuracy and `summary.json`.
use std::path::{Path, PathBuf};

use d2nn_common::train::{checkpoint_validation, run_controllers, MetricsLine, RunDir, Summary};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::style::{marker, Shape, Style, PALETTE};
use super::{axis_range, draw_err, tick_format, PlotError};

pub const CURVES_FILE: &str = "curves.png";
const FONT: &str = "sans-serif";
const PANEL: (u32, u32) = (430, 290);
const COLUMNS: usize = 3;
const LEGEND_ROW: u32 = 18;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// A line through the logged steps.
    Line,
    /// Squares: validation evaluations.
    Validation,
    /// Diamonds: the test evaluation at the end of the run.
    Test,
}

/// One series of a panel, in colour `color` of the palette.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub mark: Mark,
    pub color: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub series: Vec<Series>,
    /// A fixed y range (rates), else the data's.
    pub y_range: Option<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Curves {
    pub title: String,
    pub panels: Vec<Panel>,
}

fn line(name: &str, color: usize, lines: &[MetricsLine], f: impl Fn(&MetricsLine) -> Option<f64>) -> Series {
    Series {
        name: name.into(),
        points: lines.iter().filter_map(|l| Some((l.step as f64, f(l)?))).filter(|p| p.1.is_finite()).collect(),
        mark: Mark::Line,
        color,
    }
}

fn dots(name: &str, mark: Mark, color: usize, points: Vec<(f64, f64)>) -> Series {
    Series { name: name.into(), points, mark, color }
}

/// The test evaluation's colour, the same in every panel.
const TEST_COLOR: usize = 2;
const VALIDATION_COLOR: usize = 1;

/// The panels of a run: task loss, control loss, accuracy (train, validation, test), cost
/// fraction (train, test), each controller's action rates, and ε (Q-learning) or the advantage
/// variance (REINFORCE) when logged.
pub fn run_curves(
    title: &str,
    lines: &[MetricsLine],
    controllers: &[d2nn_common::train::ControllerInfo],
    validation: &[(u64, f64)],
    summary: Option<&Summary>,
) -> Curves {
    let mut panels = vec![
        Panel {
            title: "task loss".into(),
            series: vec![line("train", 0, lines, |l| Some(l.task_loss))],
            y_range: None,
        },
        Panel {
            title: "control loss".into(),
            series: vec![line("train", 0, lines, |l| Some(l.control_loss))],
            y_range: None,
        },
    ];
    let mut accuracy = vec![line("train", 0, lines, |l| Some(l.train_accuracy))];
    let mut val: Vec<(f64, f64)> = validation.iter().map(|&(s, v)| (s as f64, v)).collect();
    if let Some(s) = summary {
        if let Some(v) = s.val_accuracy {
            if !val.iter().any(|p| p.0 == s.steps as f64) {
                val.push((s.steps as f64, v));
            }
        }
    }
    if !val.is_empty() {
        accuracy.push(dots("validation", Mark::Validation, VALIDATION_COLOR, val));
    }
    let mut cost = vec![line("train", 0, lines, |l| Some(l.mean_cost_fraction))];
    if let Some(s) = summary {
        accuracy.push(dots("test (end)", Mark::Test, TEST_COLOR, vec![(s.steps as f64, s.test_accuracy)]));
        cost.push(dots("test (end)", Mark::Test, TEST_COLOR, vec![(s.steps as f64, s.mean_cost_fraction)]));
    }
    panels.push(Panel { title: "accuracy".into(), series: accuracy, y_range: None });
    panels.push(Panel { title: "cost fraction (executed / full FLOPs)".into(), series: cost, y_range: None });

    let n_controllers = lines.iter().map(|l| l.action_rates.len()).max().unwrap_or(0);
    for i in 0..n_controllers {
        let info = controllers.get(i);
        let name = info.map_or_else(|| format!("controller {i}"), |c| c.name.clone());
        let n_actions = lines.iter().filter_map(|l| l.action_rates.get(i)).map(Vec::len).max().unwrap_or(0);
        let action_name =
            |a: usize| info.and_then(|c| c.actions.get(a)).cloned().unwrap_or_else(|| format!("action {a}"));
        let mut series: Vec<Series> = (0..n_actions)
            .map(|a| line(&action_name(a), a, lines, |l| l.action_rates.get(i)?.get(a).copied()))
            .collect();
        // The test-time (argmax) rates at the end, in each action's colour: training rates include
        // exploration, these are what the trained router does.
        if let Some(rates) = summary.and_then(|s| s.action_rates.get(&name)) {
            let steps = summary.map_or(0.0, |s| s.steps as f64);
            for (a, r) in rates.iter().enumerate() {
                series.push(dots(&format!("{} (test)", action_name(a)), Mark::Test, a, vec![(steps, *r)]));
            }
        }
        panels.push(Panel { title: format!("{name}: action rates"), series, y_range: Some((-0.02, 1.02)) });
    }
    if lines.iter().any(|l| l.epsilon.is_some()) {
        let series = vec![line("ε", 0, lines, |l| l.epsilon)];
        panels.push(Panel { title: "ε (exploration)".into(), series, y_range: Some((-0.02, 1.02)) });
    } else if lines.iter().any(|l| l.advantage_variance.is_some()) {
        let series = vec![line("train", 0, lines, |l| l.advantage_variance)];
        panels.push(Panel { title: "advantage variance".into(), series, y_range: None });
    }
    Curves { title: title.into(), panels }
}

/// Reads a run directory and writes its `curves.png`; returns the file's path.
pub fn write_run_curves(run_dir: &Path) -> Result<PathBuf, PlotError> {
    let err = |m: String| PlotError { path: run_dir.display().to_string(), message: m };
    let run = RunDir::open(run_dir).map_err(|e| err(e.to_string()))?;
    let lines = run.read_metrics().map_err(|e| err(e.to_string()))?;
    if lines.is_empty() {
        return Err(err("metrics.jsonl has no lines".into()));
    }
    let summary = run.read_summary().ok();
    let cfg = run.read_config().ok();
    let what = match (&summary, &cfg) {
        (Some(s), _) if s.algorithm == "static" => format!("{}, static network", s.task),
        (Some(s), _) => format!("{} {}, λ = {}", s.task, s.algorithm, s.lambda),
        (None, Some(c)) => format!("λ = {}", c.train.lambda),
        (None, None) => String::new(),
    };
    let title = format!("{} — {what}", run_dir.display());
    let curves = run_curves(&title, &lines, &run_controllers(&run), &checkpoint_validation(&run), summary.as_ref());
    let path = run.file(CURVES_FILE);
    curves_png(&path, &curves)?;
    Ok(path)
}

/// Draws the panels in a grid of three columns.
pub fn curves_png(path: &Path, curves: &Curves) -> Result<(), PlotError> {
    let err = |m: String| PlotError { path: path.display().to_string(), message: m };
    let rows = curves.panels.len().div_ceil(COLUMNS).max(1);
    let size = (PANEL.0 * COLUMNS as u32, PANEL.1 * rows as u32 + 40);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let body = root.titled(&curves.title, (FONT, 20)).map_err(|e| err(e.to_string()))?;
    let cells = body.split_evenly((rows, COLUMNS));
    for (panel, cell) in curves.panels.iter().zip(&cells) {
        draw_panel(&root, cell, panel).map_err(|m| err(format!("panel `{}`: {m}", panel.title)))?;
    }
    root.present().map_err(|e| err(e.to_string()))
}

/// One panel in `area`; markers go on `root` (whose pixels are the chart's backend coordinates).
fn draw_panel<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
) -> Result<(), String> {
    let (_, h) = area.dim_in_pixel();
    let legend_rows = if panel.series.len() > 1 { panel.series.len().div_ceil(3) as u32 } else { 0 };
    let (chart_area, legend) = area.split_vertically(h - legend_rows * LEGEND_ROW - 4);
    let all = || panel.series.iter().flat_map(|s| s.points.iter());
    if all().next().is_none() {
        chart_area
            .draw(&Text::new(format!("{}: not logged", panel.title), (20, 40), (FONT, 14).into_font()))
            .map_err(draw_err)?;
        return Ok(());
    }
    // Steps from 0; values padded by 8 % of their span, or 5 % of their size when they barely move.
    let last = all().map(|p| p.0).fold(0.0f64, f64::max);
    let xs = 0.0..(last * 1.03).max(1.0);
    let ys = match panel.y_range {
        Some((lo, hi)) => lo..hi,
        None => {
            let size = all().map(|p| p.1.abs()).filter(|v| v.is_finite()).fold(0.0f64, f64::max);
            axis_range(all().map(|p| p.1), 0.08, (size * 0.05).max(1e-3), None)
        }
    };
    let mut chart = ChartBuilder::on(&chart_area)
        .caption(&panel.title, (FONT, 16))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(55)
        .build_cartesian_2d(xs, ys.clone())
        .map_err(draw_err)?;
    let y_fmt = tick_format(&ys);
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_labels(5)
        .y_labels(5)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&y_fmt)
        .label_style((FONT, 12))
        .draw()
        .map_err(draw_err)?;
    for s in &panel.series {
        let color = PALETTE[s.color % PALETTE.len()];
        if let Some(shape) = shape_of(s.mark) {
            let style = Style { color, shape, filled: true, size: 4 };
            for &p in &s.points {
                marker(root, chart.backend_coord(&p), style, 4).map_err(draw_err)?;
            }
        } else {
            chart.draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2))).map_err(draw_err)?;
            if s.points.len() == 1 {
                marker(
                    root,
                    chart.backend_coord(&s.points[0]),
                    Style { color, shape: Shape::Circle, filled: true, size: 3 },
                    3,
                )
                .map_err(draw_err)?;
            }
        }
    }
    // The legend under the chart, three entries a row, never over the data.
    let (w, _) = legend.dim_in_pixel();
    let font = (FONT, 13).into_font().color(&BLACK);
    for (i, s) in panel.series.iter().enumerate() {
        if legend_rows == 0 {
            break;
        }
        let color = PALETTE[s.color % PALETTE.len()];
        let x = 60 + (i % 3) as i32 * ((w as i32 - 60) / 3);
        let y = (i / 3) as i32 * LEGEND_ROW as i32 + 2;
        if let Some(shape) = shape_of(s.mark) {
            marker(&legend, (x + 8, y + 7), Style { color, shape, filled: true, size: 4 }, 4).map_err(draw_err)?;
        } else {
            legend.draw(&PathElement::new([(x, y + 7), (x + 16, y + 7)], color.stroke_width(2))).map_err(draw_err)?;
        }
        legend.draw(&Text::new(s.name.clone(), (x + 21, y), font.clone())).map_err(draw_err)?;
    }
    Ok(())
}

fn shape_of(mark: Mark) -> Option<Shape> {
    match mark {
        Mark::Line => None,
        Mark::Validation => Some(Shape::Square),
        Mark::Test => Some(Shape::Diamond),
    }
}

#[cfg(test)]
#[path = "curves_tests.rs"]
mod tests;
