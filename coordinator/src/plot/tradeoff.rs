//! The trade-off plot of a sweep (`tradeoff.png`): test accuracy or F1 against mean cost
//! fraction. The D2NN's λ points are joined in cost order and drawn last; random routing at each
//! D2NN's rates is a hollow triangle tied to its D2NN point by a dashed line; static baselines are
//! squares. With several sweeps (seeds), each seed is a small hollow marker and the large marker is
//! their mean. Labels go where they fit (`layout`), else into the list beside the legend.
use std::collections::BTreeMap;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::layout::{place_labels, LabelRequest, Placement, Rect, Segment};
use super::style::{marker, marker_extent, Shape, Style, GREY, PALETTE};
use super::sweep_file::{Kind, PlotPoint, Tradeoff};
use super::{axis_range, draw_err, tick_format, PlotError};

pub const SIZE: (u32, u32) = (1100, 680);
/// Where the chart ends and the legend panel begins.
const PANEL_X: i32 = 800;
const FONT: &str = "sans-serif";
const LABEL_PT: u32 = 14;
const ROW: f64 = 19.0;
/// The first legend row, in pixels below the top of the panel.
const LEGEND_TOP: i32 = 60;

/// What was drawn where, in pixels: for tests and for anyone checking a layout.
#[derive(Debug, Clone, PartialEq)]
pub struct TradeoffLayout {
    pub canvas: Rect,
    /// The plotting area (inside the axes).
    pub area: Rect,
    /// Where labels without room beside their point are listed.
    pub overflow: Rect,
    /// Every marker, as the box it covers.
    pub markers: Vec<Rect>,
    /// Each label's text and where it went.
    pub labels: Vec<(String, Placement)>,
    /// Pixel centre of each D2NN mean point.
    pub d2nn_centres: Vec<(i32, i32)>,
}

fn style_of(kind: Kind) -> Style {
    match kind {
        Kind::D2nn => Style { color: PALETTE[0], shape: Shape::Circle, filled: true, size: 5 },
        Kind::RandomRouting => Style { color: PALETTE[1], shape: Shape::Triangle, filled: false, size: 6 },
        Kind::Static => Style { color: PALETTE[2], shape: Shape::Square, filled: true, size: 5 },
        Kind::Other => Style { color: PALETTE[3], shape: Shape::Diamond, filled: true, size: 5 },
    }
}

/// One point of the plot: the seeds of one (kind, name) and their mean.
struct Group<'a> {
    kind: Kind,
    name: &'a str,
    seeds: Vec<(f64, f64)>,
    mean: (f64, f64),
}

fn groups(points: &[PlotPoint]) -> Vec<Group<'_>> {
    let mut by_key: BTreeMap<(Kind, &str), Vec<(f64, f64)>> = BTreeMap::new();
    for p in points {
        by_key.entry((p.kind, p.name.as_str())).or_default().push((p.cost, p.metric));
    }
    by_key
        .into_iter()
        .map(|((kind, name), seeds)| {
            let n = seeds.len() as f64;
            let mean = (seeds.iter().map(|s| s.0).sum::<f64>() / n, seeds.iter().map(|s| s.1).sum::<f64>() / n);
            Group { kind, name, seeds, mean }
        })
        .collect()
}

/// Draws the plot into a PNG file.
pub fn tradeoff_png(path: &Path, plot: &Tradeoff) -> Result<TradeoffLayout, PlotError> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    let layout = draw_tradeoff(&root, plot).map_err(|m| PlotError { path: path.display().to_string(), message: m })?;
    root.present().map_err(|e| PlotError { path: path.display().to_string(), message: e.to_string() })?;
    Ok(layout)
}

/// Draws the plot on any drawing area of `SIZE`.
pub fn draw_tradeoff<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    plot: &Tradeoff,
) -> Result<TradeoffLayout, String> {
    if plot.points.is_empty() {
        return Err("no points to plot".into());
    }
    root.fill(&WHITE).map_err(draw_err)?;
    let (w, h) = root.dim_in_pixel();
    let canvas = Rect::new(0.0, 0.0, f64::from(w), f64::from(h));
    let (chart_area, panel) = root.split_horizontally(PANEL_X);
    let groups = groups(&plot.points);
    let xs = axis_range(plot.points.iter().map(|p| p.cost), 0.08, 0.02, Some(0.0));
    let ys = axis_range(plot.points.iter().map(|p| p.metric), 0.1, 0.0005, None);
    let mut chart = ChartBuilder::on(&chart_area)
        .caption(&plot.title, (FONT, 20))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(75)
        .build_cartesian_2d(xs.clone(), ys.clone())
        .map_err(draw_err)?;
    let (x_fmt, y_fmt) = (tick_format(&xs), tick_format(&ys));
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("mean cost fraction (executed FLOPs / full D2NN FLOPs)")
        .y_desc(&plot.metric_name)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()
        .map_err(draw_err)?;

    // Lines first, markers over them: random and static, then the D2NN on top.
    let mut d2nn: Vec<&Group> = groups.iter().filter(|g| g.kind == Kind::D2nn).collect();
    d2nn.sort_by(|a, b| a.mean.0.total_cmp(&b.mean.0));
    let d2nn_style = style_of(Kind::D2nn);
    chart
        .draw_series(LineSeries::new(d2nn.iter().map(|g| g.mean), d2nn_style.color.stroke_width(2)))
        .map_err(draw_err)?;
    let twin = |g: &Group| d2nn.iter().find(|d| d.name == g.name).map(|d| d.mean);
    for g in groups.iter().filter(|g| g.kind == Kind::RandomRouting) {
        if let Some(d) = twin(g) {
            chart.draw_series(DashedLineSeries::new(vec![g.mean, d], 4, 3, GREY.stroke_width(1))).map_err(draw_err)?;
        }
    }
    // Each seed is tied to its mean by a faint line in its series' colour.
    for g in groups.iter().filter(|g| g.seeds.len() > 1) {
        let faint = style_of(g.kind).color.mix(0.35).stroke_width(1);
        for &s in &g.seeds {
            chart.draw_series(LineSeries::new(vec![g.mean, s], faint)).map_err(draw_err)?;
        }
    }
    // Every marker's place first: the labels keep clear of all of them.
    let to_px = |p: (f64, f64)| chart.backend_coord(&p);
    let seeded = groups.iter().any(|g| g.seeds.len() > 1);
    let mut drawn: Vec<((i32, i32), Style, i32)> = Vec::new();
    for kind in [Kind::RandomRouting, Kind::Static, Kind::Other, Kind::D2nn] {
        let style = style_of(kind);
        for g in groups.iter().filter(|g| g.kind == kind) {
            if g.seeds.len() > 1 {
                let seed_style = Style { filled: false, ..style };
                drawn.extend(g.seeds.iter().map(|&s| (to_px(s), seed_style, 4)));
            }
            drawn.push((to_px(g.mean), style, style.size));
        }
    }
    let markers: Vec<Rect> = drawn.iter().map(|&(c, _, size)| marker_box(c, size)).collect();
    // The lines drawn: labels keep off them where they can.
    let at = |p: (f64, f64)| {
        let (x, y) = to_px(p);
        (f64::from(x), f64::from(y))
    };
    let mut lines: Vec<Segment> = d2nn.windows(2).map(|w| (at(w[0].mean), at(w[1].mean))).collect();
    for g in &groups {
        lines.extend(g.seeds.iter().filter(|_| g.seeds.len() > 1).map(|&s| (at(g.mean), at(s))));
        if g.kind == Kind::RandomRouting {
            lines.extend(twin(g).map(|d| (at(g.mean), at(d))));
        }
    }
    let d2nn_centres: Vec<(i32, i32)> = d2nn.iter().map(|g| to_px(g.mean)).collect();

    let legend_rows = draw_legend(&panel, plot, seeded)?;
    let (px, py) = chart.plotting_area().get_pixel_range();
    let area = Rect::new(
        f64::from(px.start) + 2.0,
        f64::from(py.start) + 2.0,
        f64::from(px.end) - 2.0,
        f64::from(py.end) - 2.0,
    );
    let overflow_top = f64::from(LEGEND_TOP) + ROW * legend_rows as f64 + 40.0;
    let overflow = Rect::new(f64::from(PANEL_X) + 12.0, overflow_top, canvas.x1 - 8.0, canvas.y1 - 8.0);

    // Labels: the D2NN's λ (which also names its random-routing twin), static baselines, others;
    // a random point without a D2NN twin names itself.
    let font = (FONT, LABEL_PT).into_font();
    let metric_short = plot.metric_name.trim_start_matches("test ");
    let mut texts: Vec<(String, String, Kind, (i32, i32))> = Vec::new();
    let mut labelled: Vec<&Group> = d2nn.clone();
    labelled.extend(groups.iter().filter(|g| matches!(g.kind, Kind::Static | Kind::Other)));
    labelled.extend(groups.iter().filter(|g| g.kind == Kind::RandomRouting && twin(g).is_none()));
    for g in labelled {
        let text = if g.kind == Kind::RandomRouting { format!("random {}", g.name) } else { g.name.to_string() };
        let listed = format!("{text}: cost {:.3}, {metric_short} {:.4}", g.mean.0, g.mean.1);
        texts.push((text, listed, g.kind, to_px(g.mean)));
    }
    let text_style: TextStyle = font.clone().into();
    let measure = |t: &str| -> (f64, f64) {
        match root.estimate_text_size(t, &text_style) {
            Ok((w, h)) => (f64::from(w) + 4.0, f64::from(h.max(LABEL_PT)) + 2.0),
            Err(_) => (t.chars().count() as f64 * 0.62 * f64::from(LABEL_PT) + 4.0, f64::from(LABEL_PT) + 4.0),
        }
    };
    let requests: Vec<LabelRequest> = texts
        .iter()
        .map(|(text, listed, _, (x, y))| {
            let (w, h) = measure(text);
            LabelRequest { anchor: (f64::from(*x), f64::from(*y)), width: w, height: h, list_width: measure(listed).0 }
        })
        .collect();
    let placements = place_labels(&requests, &markers, &lines, area, overflow, ROW);

    // Leader lines under the markers, the markers (the D2NN last, on top), then the text.
    for p in &placements {
        if let Placement::Beside { leader: Some((a, b)), .. } = p {
            let line = [(a.0 as i32, a.1 as i32), (b.0 as i32, b.1 as i32)];
            root.draw(&PathElement::new(line, GREY.mix(0.8).stroke_width(1))).map_err(draw_err)?;
        }
    }
    for &(c, style, size) in &drawn {
        marker(root, c, style, size).map_err(draw_err)?;
    }
    let mut listed_any = false;
    for ((text, listed, kind, _), p) in texts.iter().zip(&placements) {
        let ink = font.color(&darker(style_of(*kind).color));
        match p {
            Placement::Beside { rect, .. } => {
                root.draw(&Text::new(text.clone(), (rect.x0 as i32 + 2, rect.y0 as i32 + 1), ink)).map_err(draw_err)?;
            }
            Placement::Listed { rect } => {
                listed_any = true;
                root.draw(&Text::new(listed.clone(), (rect.x0 as i32, rect.y0 as i32 + 2), ink)).map_err(draw_err)?;
            }
            Placement::Dropped => {}
        }
    }
    if listed_any {
        let head = (FONT, 14).into_font().color(&BLACK);
        root.draw(&Text::new("no room beside the point:", (overflow.x0 as i32, overflow.y0 as i32 - 20), head))
            .map_err(draw_err)?;
    }
    let dropped = placements.iter().filter(|p| matches!(p, Placement::Dropped)).count();
    if dropped > 0 {
        tracing::warn!(dropped, "trade-off plot: labels without room anywhere (the numbers are in sweep.json)");
    }
    let labels = texts.into_iter().zip(placements).map(|((text, ..), p)| (text, p)).collect();
    Ok(TradeoffLayout { canvas, area, overflow, markers, labels, d2nn_centres })
}

fn marker_box((x, y): (i32, i32), size: i32) -> Rect {
    let e = marker_extent(size);
    Rect::centered(f64::from(x), f64::from(y), 2.0 * e, 2.0 * e)
}

fn darker(c: RGBColor) -> RGBColor {
    RGBColor((f64::from(c.0) * 0.75) as u8, (f64::from(c.1) * 0.75) as u8, (f64::from(c.2) * 0.75) as u8)
}

/// The legend at the top of the panel; returns how many rows it used.
fn draw_legend<DB: DrawingBackend>(
    panel: &DrawingArea<DB, Shift>,
    plot: &Tradeoff,
    seeded: bool,
) -> Result<usize, String> {
    let random = match plot.random_expected {
        (0, _) => "random routing at the D2NN's rates",
        (e, n) if e == n => "random routing, D2NN's rates (expected)",
        _ => "random routing (expected where recorded)",
    };
    let mut rows: Vec<(Option<Style>, String)> = Vec::new();
    let kinds: Vec<Kind> = [Kind::D2nn, Kind::RandomRouting, Kind::Static, Kind::Other]
        .into_iter()
        .filter(|k| plot.points.iter().any(|p| p.kind == *k))
        .collect();
    for k in kinds {
        let text = match k {
            Kind::D2nn => "D2NN, one point per λ".to_string(),
            Kind::RandomRouting => random.to_string(),
            Kind::Static => "static baseline".to_string(),
            Kind::Other => "other".to_string(),
        };
        rows.push((Some(style_of(k)), text));
    }
    if plot.points.iter().any(|p| p.kind == Kind::RandomRouting) {
        rows.push((None, "dashed: random ↔ its D2NN".into()));
    }
    if seeded {
        rows.push((None, format!("small hollow: one of {} sweeps,", plot.sweeps)));
        rows.push((None, "tied to the large marker, their mean".into()));
    }
    let font = (FONT, 14).into_font().color(&BLACK);
    for (i, (style, text)) in rows.iter().enumerate() {
        let y = LEGEND_TOP + (ROW * i as f64) as i32;
        if let Some(s) = style {
            marker(panel, (18, y + 8), *s, s.size).map_err(draw_err)?;
        }
        panel.draw(&Text::new(text.clone(), (34, y), font.clone())).map_err(draw_err)?;
    }
    Ok(rows.len())
}

#[cfg(test)]
#[path = "tradeoff_tests.rs"]
mod tests;
