use std::path::{Path, PathBuf};

use super::*;
use crate::plot::layout::tests::check_layout;
use crate::plot::load_sweeps;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/plot/fixtures").join(name)
}

/// The crowded fixture: two seeds of eleven λ whose D2NN and random-routing points coincide in
/// clusters at cost 1 and near 0.13, and three static baselines, one with a long name at the edge.
fn crowded() -> Tradeoff {
    load_sweeps(&[fixture("crowded_seed0.json"), fixture("crowded_seed1.json")]).unwrap()
}

#[test]
fn a_crowded_sweep_keeps_every_label_on_the_canvas_apart_and_the_d2nn_on_top() {
    let plot = crowded();
    assert_eq!((plot.sweeps, plot.points.len()), (2, 50));
    assert_eq!(plot.random_expected, (0, 22), "F1 sweeps have no expected random accuracy");
    let (w, h) = SIZE;
    let mut pixels = vec![0u8; (w * h * 3) as usize];
    let layout = {
        let root = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
        let layout = draw_tradeoff(&root, &plot).unwrap();
        root.present().unwrap();
        layout
    };
    let placements: Vec<Placement> = layout.labels.iter().map(|(_, p)| p.clone()).collect();
    check_layout(&placements, &layout.markers, layout.area, layout.overflow);
    for (text, p) in &layout.labels {
        let rect = p.rect().unwrap_or_else(|| panic!("label `{text}` dropped"));
        assert!(rect.inside(&layout.canvas), "`{text}` at {rect:?} leaves the canvas");
    }
    assert!(layout.overflow.x0 >= layout.area.x1, "the overflow list must lie beside the chart");
    // Eleven λ (one label names a D2NN point and its random twin) and three static baselines.
    let names: Vec<&str> = layout.labels.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(names.len(), 14, "{names:?}");
    assert!(names.contains(&"λ=0.8") && names.contains(&"static_cascade_stage2_with_a_long_name"));
    // Markers: 25 means and 50 seeds.
    assert_eq!(layout.markers.len(), 75);
    // Every D2NN mean is drawn in the D2NN's colour, over the random point at the same place.
    assert_eq!(layout.d2nn_centres.len(), 11);
    for &(x, y) in &layout.d2nn_centres {
        let at = ((y as u32 * w + x as u32) * 3) as usize;
        let px = (pixels[at], pixels[at + 1], pixels[at + 2]);
        let blue = PALETTE[0];
        assert_eq!(px, (blue.0, blue.1, blue.2), "D2NN point at ({x}, {y}) is hidden");
    }
}

#[test]
fn the_axes_start_where_the_data_does() {
    let plot = crowded();
    let (w, h) = SIZE;
    let mut pixels = vec![0u8; (w * h * 3) as usize];
    let root = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
    let layout = draw_tradeoff(&root, &plot).unwrap();
    // The lowest and highest F1 lie within the inner 80 % of the plot's height, not squeezed
    // into a strip of an axis that starts at 0.
    let ys: Vec<f64> = layout.markers.iter().map(|m| (m.y0 + m.y1) / 2.0).collect();
    let (lo, hi) = ys.iter().fold((f64::MAX, f64::MIN), |(a, b), &y| (a.min(y), b.max(y)));
    assert!(hi - lo > 0.7 * layout.area.height(), "points span {} of {} px", hi - lo, layout.area.height());
}

#[test]
fn the_png_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tradeoff.png");
    tradeoff_png(&path, &crowded()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(bytes.len() > 10_000, "{} bytes", bytes.len());
}

#[test]
fn sweeps_of_different_metrics_do_not_mix() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("sweep.json");
    let text = std::fs::read_to_string(fixture("crowded_seed0.json"))
        .unwrap()
        .replace("\"metric\": \"f1\"", "\"metric\": \"accuracy\"");
    std::fs::write(&other, text).unwrap();
    let e = load_sweeps(&[fixture("crowded_seed0.json"), dir.path().to_path_buf()]).unwrap_err();
    assert!(e.to_string().contains("metric `accuracy`"), "{e}");
}

#[test]
fn random_routing_uses_the_exact_expectation_where_a_sweep_recorded_it() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, expected: Option<f64>| {
        let mut random = serde_json::json!({"kind": "random_routing", "label": "rand λ=0.9", "lambda": 0.9,
            "accuracy": 0.80, "f1": null, "mean_cost_fraction": 0.5});
        if let Some(e) = expected {
            random["expected_accuracy"] = e.into();
        }
        let d2nn = serde_json::json!({"kind": "d2nn", "label": "λ=0.9", "lambda": 0.9, "accuracy": 0.9,
            "f1": null, "mean_cost_fraction": 0.5});
        let json =
            serde_json::json!({"config": "configs/high_low.toml", "metric": "accuracy", "points": [d2nn, random]});
        let path = dir.path().join(name);
        std::fs::write(&path, json.to_string()).unwrap();
        path
    };
    let (a, b) = (write("a.json", Some(0.85)), write("b.json", None));
    let plot = load_sweeps(&[a.clone(), b]).unwrap();
    assert_eq!(plot.random_expected, (1, 2));
    let random: Vec<f64> = plot.points.iter().filter(|p| p.kind == Kind::RandomRouting).map(|p| p.metric).collect();
    assert_eq!(random, [0.85, 0.80]);
    assert_eq!(load_sweeps(&[a]).unwrap().random_expected, (1, 1));
}
