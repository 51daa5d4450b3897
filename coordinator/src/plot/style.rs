//! Colours and marker shapes, chosen so every series stays visible where points coincide: the
//! D2NN is drawn last, filled; random routing hollow and larger, so it rings a D2NN point it
//! lies on instead of hiding it.
use plotters::coord::Shift;
use plotters::prelude::*;

/// A colour-blind-safe palette (Okabe–Ito, without yellow, which reads badly on white).
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(230, 159, 0),   // orange
];

pub const GREY: RGBColor = RGBColor(120, 120, 120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Circle,
    Triangle,
    Square,
    Diamond,
}

/// How one series looks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Style {
    pub color: RGBColor,
    pub shape: Shape,
    pub filled: bool,
    /// Marker radius in pixels.
    pub size: i32,
}

/// Draws a marker centred on a pixel.
pub fn marker<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    (x, y): (i32, i32),
    style: Style,
    size: i32,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let color = style.color;
    let paint = if style.filled { color.filled() } else { color.stroke_width(2) };
    match style.shape {
        Shape::Circle => area.draw(&Circle::new((x, y), size, paint)),
        Shape::Square => area.draw(&Rectangle::new([(x - size, y - size), (x + size, y + size)], paint)),
        Shape::Triangle | Shape::Diamond => {
            let pts = if style.shape == Shape::Triangle {
                let h = size + size / 3;
                vec![(x, y - h), (x + h, y + h * 2 / 3), (x - h, y + h * 2 / 3)]
            } else {
                let h = size + size / 4;
                vec![(x, y - h), (x + h, y), (x, y + h), (x - h, y)]
            };
            if style.filled {
                area.draw(&Polygon::new(pts, color.filled()))
            } else {
                let mut closed = pts.clone();
                closed.push(pts[0]);
                area.draw(&PathElement::new(closed, color.stroke_width(2)))
            }
        }
    }
}

/// The half-width of the box a marker of `size` covers.
pub fn marker_extent(size: i32) -> f64 {
    f64::from(size + size / 3 + 2)
}
