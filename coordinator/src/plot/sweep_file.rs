//! The points of a trade-off plot, from one or more `sweep.json` files (several: seeds of one
//! sweep, drawn as separate points around their mean).
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::PlotError;

/// What a point is; decides its style and whether it is labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    D2nn,
    RandomRouting,
    Static,
    Other,
}

impl Kind {
    pub fn of(kind: &str) -> Kind {
        match kind {
            "d2nn" => Kind::D2nn,
            "random_routing" | "random routing" => Kind::RandomRouting,
            "static" => Kind::Static,
            _ => Kind::Other,
        }
    }
}

/// One point of one sweep (one seed).
#[derive(Debug, Clone, PartialEq)]
pub struct PlotPoint {
    pub kind: Kind,
    /// What the point is called: `λ=0.9` for a D2NN and for the random routing at its rates (so
    /// the two pair up), the config name for a static baseline. Points of several sweeps with the
    /// same kind and name are seeds of one point.
    pub name: String,
    pub cost: f64,
    pub metric: f64,
}

/// Everything a trade-off plot shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Tradeoff {
    pub title: String,
    /// `test F1` or `test accuracy`.
    pub metric_name: String,
    pub points: Vec<PlotPoint>,
    /// How many random-routing points are exact expectations over the coin flips (one-controller
    /// D2NNs on accuracy, from `expected_accuracy`), and how many random-routing points there are;
    /// the others are one draw of the coin flips.
    pub random_expected: (usize, usize),
    /// How many sweeps (seeds) the points come from.
    pub sweeps: usize,
}

#[derive(Debug, Deserialize)]
struct SweepFile {
    #[serde(default)]
    config: String,
    metric: String,
    points: Vec<FilePoint>,
}

#[derive(Debug, Deserialize)]
struct FilePoint {
    kind: String,
    label: String,
    lambda: Option<f64>,
    accuracy: f64,
    f1: Option<f64>,
    mean_cost_fraction: f64,
    #[serde(default)]
    expected_accuracy: Option<f64>,
}

/// `sweep.json` itself, or the one inside a sweep directory.
pub fn sweep_json(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("sweep.json")
    } else {
        path.to_path_buf()
    }
}

/// The trade-off of one or more sweeps of the same metric.
pub fn load_sweeps(paths: &[PathBuf]) -> Result<Tradeoff, PlotError> {
    let mut files = Vec::new();
    for p in paths {
        let path = sweep_json(p);
        let err = |m: String| PlotError { path: path.display().to_string(), message: m };
        let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
        let file: SweepFile = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        files.push((path, file));
    }
    let Some((first_path, first)) = files.first() else {
        return Err(PlotError { path: String::new(), message: "no sweep.json given".into() });
    };
    let f1 = first.metric == "f1";
    let mut points = Vec::new();
    let mut random_expected = (0, 0);
    for (path, file) in &files {
        if file.metric != first.metric {
            return Err(PlotError {
                path: path.display().to_string(),
                message: format!("metric `{}`, but {} has `{}`", file.metric, first_path.display(), first.metric),
            });
        }
        for p in &file.points {
            let kind = Kind::of(&p.kind);
            let name = match (kind, p.lambda) {
                (Kind::D2nn | Kind::RandomRouting, Some(l)) => format!("λ={l}"),
                _ => p.label.clone(),
            };
            let metric = match (f1, kind, p.expected_accuracy) {
                (true, _, _) => p.f1.unwrap_or(f64::NAN),
                (false, Kind::RandomRouting, Some(expected)) => {
                    random_expected.0 += 1;
                    expected
                }
                (false, _, _) => p.accuracy,
            };
            if !(metric.is_finite() && p.mean_cost_fraction.is_finite()) {
                return Err(PlotError {
                    path: path.display().to_string(),
                    message: format!("point `{}` has no {}", p.label, first.metric),
                });
            }
            if kind == Kind::RandomRouting {
                random_expected.1 += 1;
            }
            points.push(PlotPoint { kind, name, cost: p.mean_cost_fraction, metric });
        }
    }
    let stem = Path::new(&first.config).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let what = if f1 { "F1" } else { "accuracy" };
    let seeds = if files.len() > 1 { format!(" ({} sweeps)", files.len()) } else { String::new() };
    Ok(Tradeoff {
        title: format!("{stem} — test {what} against cost{seeds}"),
        metric_name: format!("test {what}"),
        points,
        random_expected,
        sweeps: files.len(),
    })
}
