use super::*;

/// Every box inside its region, no two boxes overlapping, no box over a marker.
pub(crate) fn check_layout(placements: &[Placement], markers: &[Rect], area: Rect, overflow: Rect) {
    let rects: Vec<Rect> = placements.iter().filter_map(Placement::rect).collect();
    for p in placements {
        match p {
            Placement::Beside { rect, .. } => assert!(rect.inside(&area), "{rect:?} leaves {area:?}"),
            Placement::Listed { rect } => assert!(rect.inside(&overflow), "{rect:?} leaves {overflow:?}"),
            Placement::Dropped => {}
        }
    }
    for (i, a) in rects.iter().enumerate() {
        for b in &rects[i + 1..] {
            assert!(!a.overlaps(b), "labels overlap: {a:?} and {b:?}");
        }
        for m in markers {
            assert!(!a.overlaps(m), "label {a:?} covers marker {m:?}");
        }
    }
}

fn marker(x: f64, y: f64) -> Rect {
    Rect::centered(x, y, 12.0, 12.0)
}

#[test]
fn lone_points_get_their_label_right_beside_them() {
    let area = Rect::new(0.0, 0.0, 400.0, 300.0);
    let overflow = Rect::new(450.0, 0.0, 600.0, 300.0);
    let labels = [
        LabelRequest { anchor: (100.0, 100.0), width: 50.0, height: 14.0, list_width: 50.0 },
        LabelRequest { anchor: (300.0, 200.0), width: 50.0, height: 14.0, list_width: 50.0 },
    ];
    let markers = [marker(100.0, 100.0), marker(300.0, 200.0)];
    let placed = place_labels(&labels, &markers, &[], area, overflow, 18.0);
    check_layout(&placed, &markers, area, overflow);
    for (p, l) in placed.iter().zip(&labels) {
        let Placement::Beside { rect, leader: None } = p else { panic!("{p:?}") };
        assert!(rect.x0 > l.anchor.0 && rect.x0 - l.anchor.0 < 20.0, "{rect:?} not right of {:?}", l.anchor);
    }
}

#[test]
fn a_label_at_the_right_edge_goes_inside_the_area() {
    let area = Rect::new(0.0, 0.0, 400.0, 300.0);
    let overflow = Rect::new(450.0, 0.0, 600.0, 300.0);
    let labels = [LabelRequest { anchor: (395.0, 150.0), width: 140.0, height: 14.0, list_width: 140.0 }];
    let markers = [marker(395.0, 150.0)];
    let placed = place_labels(&labels, &markers, &[], area, overflow, 18.0);
    check_layout(&placed, &markers, area, overflow);
    assert!(matches!(placed[0], Placement::Beside { .. }), "{placed:?}");
}

#[test]
fn a_crowd_is_placed_without_overlap_and_the_rest_is_listed_then_dropped() {
    let area = Rect::new(60.0, 40.0, 360.0, 240.0);
    let overflow = Rect::new(380.0, 40.0, 560.0, 130.0);
    // 40 labels on five nearly equal points: far more than fit around them.
    let labels: Vec<LabelRequest> = (0..40)
        .map(|i| LabelRequest {
            anchor: (200.0 + (i % 5) as f64, 140.0 + (i % 3) as f64),
            width: 70.0,
            height: 14.0,
            list_width: 90.0,
        })
        .collect();
    let markers: Vec<Rect> = labels.iter().map(|l| marker(l.anchor.0, l.anchor.1)).collect();
    let placed = place_labels(&labels, &markers, &[], area, overflow, 18.0);
    check_layout(&placed, &markers, area, overflow);
    let beside = placed.iter().filter(|p| matches!(p, Placement::Beside { .. })).count();
    let listed = placed.iter().filter(|p| matches!(p, Placement::Listed { .. })).count();
    let dropped = placed.iter().filter(|p| matches!(p, Placement::Dropped)).count();
    assert!(beside >= 10, "only {beside} beside their points");
    assert_eq!(listed, 5, "the overflow holds 90 px / 18 px rows");
    assert_eq!(beside + listed + dropped, 40);
    assert!(dropped > 0);
    // The far ones are tied to their point.
    assert!(placed.iter().any(|p| matches!(p, Placement::Beside { leader: Some(_), .. })));
}

#[test]
fn a_label_keeps_off_a_line_through_its_first_spot() {
    let area = Rect::new(0.0, 0.0, 400.0, 300.0);
    let overflow = Rect::new(450.0, 0.0, 600.0, 300.0);
    let labels = [LabelRequest { anchor: (100.0, 100.0), width: 50.0, height: 14.0, list_width: 50.0 }];
    let markers = [marker(100.0, 100.0)];
    // A line leaving the point to the right, where the label would go first.
    let line = ((100.0, 100.0), (300.0, 100.0));
    let free = place_labels(&labels, &markers, &[], area, overflow, 18.0);
    assert!(crosses(&free[0].rect().unwrap(), &line), "the test's line must cross the first spot");
    let placed = place_labels(&labels, &markers, &[line], area, overflow, 18.0);
    check_layout(&placed, &markers, area, overflow);
    let rect = placed[0].rect().unwrap();
    assert!(!crosses(&rect, &line), "{rect:?} lies on the line");
    assert!(matches!(placed[0], Placement::Beside { .. }));
}

#[test]
fn crossing_is_exact_for_segments_near_a_box() {
    let r = Rect::new(10.0, 10.0, 20.0, 20.0);
    assert!(crosses(&r, &((0.0, 15.0), (30.0, 15.0))), "through");
    assert!(crosses(&r, &((15.0, 15.0), (15.0, 16.0))), "inside");
    assert!(!crosses(&r, &((0.0, 5.0), (30.0, 5.0))), "above");
    assert!(!crosses(&r, &((0.0, 0.0), (9.0, 30.0))), "left, slanted");
    assert!(crosses(&r, &((0.0, 0.0), (30.0, 30.0))), "diagonal");
}
