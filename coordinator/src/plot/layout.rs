//! Where point labels go: a pure function of pixel positions and text sizes, so a test can check
//! that no label leaves its area, covers a marker, or overlaps another label.

/// An axis-aligned box in pixels (y grows downwards, as on the canvas).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x0: f64,
    pub y0: f64,
    pub x1: f64,
    pub y1: f64,
}

impl Rect {
    pub fn new(x0: f64, y0: f64, x1: f64, y1: f64) -> Rect {
        Rect { x0, y0, x1, y1 }
    }

    /// A `w`×`h` box centred on (`cx`, `cy`).
    pub fn centered(cx: f64, cy: f64, w: f64, h: f64) -> Rect {
        Rect::new(cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0)
    }

    pub fn width(&self) -> f64 {
        self.x1 - self.x0
    }

    pub fn height(&self) -> f64 {
        self.y1 - self.y0
    }

    /// Whether the interiors meet (boxes that only touch do not).
    pub fn overlaps(&self, o: &Rect) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }

    pub fn inside(&self, o: &Rect) -> bool {
        self.x0 >= o.x0 && self.y0 >= o.y0 && self.x1 <= o.x1 && self.y1 <= o.y1
    }

    /// The point of the box nearest to (`x`, `y`).
    pub fn nearest(&self, x: f64, y: f64) -> (f64, f64) {
        (x.clamp(self.x0, self.x1), y.clamp(self.y0, self.y1))
    }
}

/// A drawn line segment, from one pixel to another.
pub type Segment = ((f64, f64), (f64, f64));

/// Whether a segment passes through the box (Liang–Barsky clipping).
pub fn crosses(rect: &Rect, &((x0, y0), (x1, y1)): &Segment) -> bool {
    let (dx, dy) = (x1 - x0, y1 - y0);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [(-dx, x0 - rect.x0), (dx, rect.x1 - x0), (-dy, y0 - rect.y0), (dy, rect.y1 - y0)] {
        if p == 0.0 {
            if q < 0.0 {
                return false;
            }
        } else {
            let r = q / p;
            if p < 0.0 {
                t0 = t0.max(r);
            } else {
                t1 = t1.min(r);
            }
            if t0 > t1 {
                return false;
            }
        }
    }
    true
}

/// A label to place: the point it names and the size of its text.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelRequest {
    pub anchor: (f64, f64),
    pub width: f64,
    pub height: f64,
    /// Its width in the overflow list, where it also says where the point is.
    pub list_width: f64,
}

/// Where a label went.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// Beside its point; far ones get a leader line from the point to the box.
    Beside { rect: Rect, leader: Option<((f64, f64), (f64, f64))> },
    /// No room beside the point: a row of the overflow list (`list_width` wide).
    Listed { rect: Rect },
    /// Neither beside the point nor in the overflow list.
    Dropped,
}

impl Placement {
    pub fn rect(&self) -> Option<Rect> {
        match self {
            Placement::Beside { rect, .. } | Placement::Listed { rect } => Some(*rect),
            Placement::Dropped => None,
        }
    }
}

/// Distances from the point to the label, in pixels; beyond `LEADER_FROM` a leader line is drawn.
const RADII: [f64; 9] = [5.0, 12.0, 22.0, 34.0, 50.0, 70.0, 95.0, 125.0, 160.0];
const LEADER_FROM: f64 = 20.0;
/// Directions tried at each distance, in eighths and then sixteenths of a turn: right first, then
/// above, left, below (text reads best beside its point).
const DIRECTIONS: [f64; 16] = [0.0, 2.0, 4.0, 6.0, 1.0, 3.0, 5.0, 7.0, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5];

/// Places each label greedily, in order, at the nearest free spot around its point: inside `area`,
/// clear of every marker box and of the labels placed before it, and where possible clear of the
/// drawn `lines` and of earlier labels' leader lines too. A label with no free spot goes
/// to the next row of `overflow` (rows of `row_height`), or is dropped when `overflow` is full. Every returned box is inside `area` or `overflow`, and no two
/// boxes and no box and marker overlap, as long as `overflow` is clear of `area`.
pub fn place_labels(
    labels: &[LabelRequest],
    markers: &[Rect],
    lines: &[Segment],
    area: Rect,
    overflow: Rect,
    row_height: f64,
) -> Vec<Placement> {
    let mut taken: Vec<Rect> = Vec::new();
    let mut lines: Vec<Segment> = lines.to_vec();
    let mut next_row = overflow.y0;
    labels
        .iter()
        .map(|l| {
            let (px, py) = l.anchor;
            let search = |avoid_lines: bool| {
                RADII.iter().find_map(|&r| {
                    DIRECTIONS.iter().find_map(|&eighths| {
                        let theta = eighths * std::f64::consts::FRAC_PI_4;
                        let (c, s) = (theta.cos(), theta.sin());
                        // The box's centre sits so that its nearest edge is about `r` from the point.
                        let cx = px + c * (r + l.width / 2.0);
                        let cy = py - s * (r + l.height / 2.0);
                        let rect = Rect::centered(cx, cy, l.width, l.height);
                        let on_a_line = avoid_lines && lines.iter().any(|seg| crosses(&rect, seg));
                        let free = rect.inside(&area)
                            && !markers.iter().any(|m| m.overlaps(&rect))
                            && !taken.iter().any(|t| t.overlaps(&rect))
                            && !on_a_line;
                        free.then_some((rect, r))
                    })
                })
            };
            match search(true).or_else(|| search(false)) {
                Some((rect, r)) => {
                    taken.push(rect);
                    let leader = (r >= LEADER_FROM).then(|| ((px, py), rect.nearest(px, py)));
                    lines.extend(leader);
                    Placement::Beside { rect, leader }
                }
                None => {
                    let rect = Rect::new(overflow.x0, next_row, overflow.x0 + l.list_width, next_row + row_height);
                    if rect.inside(&overflow) {
                        next_row += row_height;
                        Placement::Listed { rect }
                    } else {
                        Placement::Dropped
                    }
                }
            }
        })
        .collect()
}

#[cfg(test)]
#[path = "layout_tests.rs"]
pub(crate) mod tests;
