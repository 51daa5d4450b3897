//! The trade-off plot of a sweep: accuracy (or F-score) against mean cost fraction.
use std::path::Path;

use plotters::prelude::*;

/// One point of the plot, in a named series.
#[derive(Debug, Clone)]
pub struct PlotPoint {
    pub series: String,
    pub label: String,
    pub cost: f64,
    pub metric: f64,
}

#[derive(Debug, thiserror::Error)]
#[error("plot {path}: {message}")]
pub struct PlotError {
    pub path: String,
    pub message: String,
}

const COLORS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];

/// Draws every series as points joined in cost order, with each point labelled.
pub fn tradeoff_png(path: &Path, title: &str, metric_name: &str, points: &[PlotPoint]) -> Result<(), PlotError> {
    let err = |e: &dyn std::fmt::Display| PlotError { path: path.display().to_string(), message: e.to_string() };
    let (lo, hi) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(p.metric), hi.max(p.metric)));
    let margin = ((hi - lo) * 0.15).max(0.005);
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..1.05f64, (lo - margin)..(hi + margin))
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("mean cost fraction (executed FLOPs / full-network FLOPs)")
        .y_desc(metric_name)
        .draw()
        .map_err(|e| err(&e))?;
    let mut series: Vec<&str> = points.iter().map(|p| p.series.as_str()).collect();
    series.dedup();
    series.sort();
    series.dedup();
    for (i, name) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut pts: Vec<&PlotPoint> = points.iter().filter(|p| p.series == *name).collect();
        pts.sort_by(|a, b| a.cost.total_cmp(&b.cost));
        let xy: Vec<(f64, f64)> = pts.iter().map(|p| (p.cost, p.metric)).collect();
        chart
            .draw_series(LineSeries::new(xy.clone(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name.to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(xy.iter().map(|&(x, y)| Circle::new((x, y), 5, color.filled()))).map_err(|e| err(&e))?;
        chart
            .draw_series(
                pts.iter().map(|p| {
                    Text::new(p.label.clone(), (p.cost, p.metric), ("sans-serif", 13).into_font().color(&color))
                }),
            )
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
