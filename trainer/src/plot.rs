//! The figures' frame, shared by `compare` and `analyze`: PNGs drawn with plotters, DejaVu Sans
//! embedded so no system font is needed, one palette, one panel (lines with min-max bands, the
//! EP shaded and each run's EP end interval banded) and one legend style: a strip between the
//! title and the chart, so a legend never covers data. Bounded quantities (accuracies, shares,
//! cosines) never get an axis past their bounds.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};

pub(crate) const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];
const EP_SHADE: RGBColor = RGBColor(255, 221, 120);

/// Makes "sans-serif" DejaVu Sans for plotters (once per process).
pub fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font("sans-serif", FontStyle::Bold, dejavu::sans::bold());
    });
}

/// Decimals that tell ticks apart over an axis spanning `range`.
pub(crate) fn decimals(range: f64) -> usize {
    if range.is_nan() || range <= 0.0 {
        return 2;
    }
    (1.0 - range.log10().floor()).clamp(0.0, 4.0) as usize
}

fn plot_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::unwritable(path, format!("drawing failed: {e}"))
}

/// A named curve: per x, the mean (over runs) and the band (min, max).
pub(crate) struct Curve {
    pub name: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64, f64, f64)>,
}

/// The EP's extent for shading (the median end over runs whose EP ended) and each run's end
/// as the interval its crossing lies in (first and last step).
pub(crate) struct EpMarks {
    pub shade_to: Option<f64>,
    pub ends: Vec<(f64, f64, RGBColor)>,
}

/// What a y axis may show: accuracies and shares stop at 0 and 1, cosines at -1 and 1.
#[derive(Debug, Clone, Copy)]
pub(crate) struct YBounds {
    pub lo: Option<f64>,
    pub hi: Option<f64>,
}

impl YBounds {
    pub const UNIT: YBounds = YBounds {
        lo: Some(0.0),
        hi: Some(1.0),
    };
    pub const COSINE: YBounds = YBounds {
        lo: Some(-1.0),
        hi: Some(1.0),
    };
    pub const NON_NEGATIVE: YBounds = YBounds {
        lo: Some(0.0),
        hi: None,
    };

    /// The bounds of a metric by its name: accuracy in [0, 1], anything else (MSE) >= 0.
    pub fn of_metric(metric: &str) -> YBounds {
        if metric == "accuracy" {
            YBounds::UNIT
        } else {
            YBounds::NON_NEGATIVE
        }
    }
}

/// How a legend entry is drawn.
#[derive(Clone, Copy)]
pub(crate) enum Mark {
    Line(RGBColor),
    Dot(RGBColor),
    Patch(RGBAColor),
}

/// A chart on a PNG with both axes in f64.
pub(crate) type Chart<'a> = ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// An area with `title` on top and the legend `entries` under it; returns the area left for
/// the chart.
pub(crate) fn titled_with_legend<'a>(
    area: &DrawingArea<BitMapBackend<'a>, Shift>,
    title: &str,
    entries: &[(String, Mark)],
) -> std::result::Result<DrawingArea<BitMapBackend<'a>, Shift>, String> {
    let body = area
        .margin(6, 0, 0, 0)
        .titled(title, ("sans-serif", 22).into_font().style(FontStyle::Bold))
        .map_err(|e| e.to_string())?;
    let width = body.dim_in_pixel().0 as i32;
    // Entries flow left to right, wrapping: each a 24-pixel mark and its text (~8 px a char).
    let mut rows = vec![Vec::new()];
    let mut x = 70;
    for (name, mark) in entries {
        let w = 24 + 8 * name.chars().count() as i32 + 22;
        if x + w > width - 10 && x > 70 {
            rows.push(Vec::new());
            x = 70;
        }
        if let Some(r) = rows.last_mut() {
            r.push((x, name, *mark));
        }
        x += w;
    }
    let height = if entries.is_empty() {
        0
    } else {
        22 * rows.len() as u32 + 6
    };
    let (strip, chart) = body.split_vertically(height);
    for (r, row) in rows.iter().enumerate() {
        let y = 11 + 22 * r as i32;
        for &(x, name, mark) in row {
            draw_mark(&strip, mark, (x, y))?;
            strip
                .draw(&Text::new(name.clone(), (x + 28, y - 8), ("sans-serif", 15)))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(chart)
}

fn draw_mark(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    mark: Mark,
    (x, y): (i32, i32),
) -> std::result::Result<(), String> {
    let r = match mark {
        Mark::Line(c) => area.draw(&PathElement::new(vec![(x, y), (x + 22, y)], c.stroke_width(3))),
        Mark::Dot(c) => area.draw(&Circle::new((x + 11, y), 5, c.filled())),
        Mark::Patch(c) => area.draw(&Rectangle::new([(x, y - 7), (x + 22, y + 7)], c.filled())),
    };
    r.map_err(|e| e.to_string())
}

/// The legend of a panel: its curves and the EP's marks.
fn entries(curves: &[Curve], ep: &EpMarks) -> Vec<(String, Mark)> {
    let mut e: Vec<(String, Mark)> = curves.iter().map(|c| (c.name.clone(), Mark::Line(c.color))).collect();
    if ep.shade_to.is_some() {
        e.push(("EP (median end)".into(), Mark::Patch(EP_SHADE.mix(0.6))));
    }
    if !ep.ends.is_empty() {
        e.push(("each run's EP end interval".into(), Mark::Patch(BLACK.mix(0.25))));
    }
    e
}

/// One panel: lines with bands, the EP shaded and each run's end interval banded, the y axis
/// within `bounds`, the legend between the title and the chart.
pub(crate) fn panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    bounds: YBounds,
    curves: &[Curve],
    ep: &EpMarks,
) -> std::result::Result<(), String> {
    let Some((x0, x1, y0, y1)) = extent(curves, bounds) else {
        return Ok(());
    };
    let body = titled_with_legend(area, title, &entries(curves, ep))?;
    let mut chart = ChartBuilder::on(&body)
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1.max(x0 + 1.0), y0..y1)
        .map_err(|e| e.to_string())?;
    let (xd, yd) = (decimals(x1 - x0), decimals(y1 - y0));
    chart
        .configure_mesh()
        .x_label_formatter(&|x| format!("{x:.xd$}"))
        .y_label_formatter(&|y| format!("{y:.yd$}"))
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| e.to_string())?;
    draw_ep_marks(&mut chart, ep, (x0, x1), (y0, y1))?;
    for c in curves {
        draw_curve(&mut chart, c)?;
    }
    Ok(())
}

/// A panel's axes (x0, x1, y0, y1) over the curves' points and bands, a margin around them
/// within `bounds`; None when there are no points.
fn extent(curves: &[Curve], bounds: YBounds) -> Option<(f64, f64, f64, f64)> {
    let pts = curves.iter().flat_map(|c| c.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, _, lo, hi) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(lo), y1.max(hi));
    }
    if !x0.is_finite() {
        return None;
    }
    // Step axes start at 0; an axis far from 0 (log parameter counts) keeps its range.
    if x0 >= 0.0 && x0 < 0.2 * x1 {
        x0 = 0.0;
    }
    let span = (y1 - y0).max(1e-6);
    let (mut y0, mut y1) = (y0 - 0.05 * span, y1 + 0.05 * span);
    if let Some(lo) = bounds.lo {
        y0 = y0.max(lo);
    }
    if let Some(hi) = bounds.hi {
        y1 = y1.min(hi);
    }
    Some((x0, x1, y0, y1.max(y0 + 1e-6)))
}

/// The EP shaded up to its median end (within the x axis `x0..x1`) and each run's end
/// interval as a band over the y axis `y0..y1` (at least a line where the interval is a step).
fn draw_ep_marks(
    chart: &mut Chart<'_>,
    ep: &EpMarks,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> std::result::Result<(), String> {
    if let Some(to) = ep.shade_to {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x0, y0), (to.min(x1), y1)],
                EP_SHADE.mix(0.35).filled(),
            )))
            .map_err(|e| e.to_string())?;
    }
    // Overlapping runs' bands add up to one strong band, never to an opaque block.
    let alpha = (0.45 / ep.ends.len().max(1) as f64).max(0.05);
    for &(lo, hi, color) in &ep.ends {
        if hi > lo {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(lo.max(x0), y0), (hi.min(x1), y1)],
                    color.mix(alpha).filled(),
                )))
                .map_err(|e| e.to_string())?;
        }
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(hi, y0), (hi, y1)],
                color.mix(0.6).stroke_width(1),
            )))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// One curve: its min-max band, its mean line (in the legend) and, when sparse, its points.
fn draw_curve(chart: &mut Chart<'_>, c: &Curve) -> std::result::Result<(), String> {
    if c.points.len() > 1 {
        let mut band: Vec<(f64, f64)> = c.points.iter().map(|p| (p.0, p.3)).collect();
        band.extend(c.points.iter().rev().map(|p| (p.0, p.2)));
        chart
            .draw_series(std::iter::once(Polygon::new(band, c.color.mix(0.18))))
            .map_err(|e| e.to_string())?;
    }
    let color = c.color;
    chart
        .draw_series(LineSeries::new(
            c.points.iter().map(|p| (p.0, p.1)),
            color.stroke_width(2),
        ))
        .map_err(|e| e.to_string())?;
    // Sparse curves (per-epoch values) show their points.
    if c.points.len() < 20 {
        chart
            .draw_series(c.points.iter().map(|p| Circle::new((p.0, p.1), 4, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// One PNG of `size` pixels on white, drawn by `draw`; returns its path.
pub(crate) fn png(
    path: PathBuf,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> std::result::Result<(), String>,
) -> Result<PathBuf> {
    {
        let root = BitMapBackend::new(&path, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(&path, e))?;
        draw(&root).map_err(|e| plot_error(&path, e))?;
        root.present().map_err(|e| plot_error(&path, e))?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(points: &[(f64, f64)]) -> Curve {
        Curve {
            name: "c".into(),
            color: COLORS[0],
            points: points.iter().map(|&(x, y)| (x, y, y - 0.02, y + 0.02)).collect(),
        }
    }

    #[test]
    fn bounded_axes_stop_at_their_bounds_with_a_margin_inside_them() {
        let c = curve(&[(1.0, 0.1), (50.0, 0.97), (100.0, 0.99)]);
        let (_, _, y0, y1) = extent(&[c], YBounds::UNIT).unwrap();
        assert_eq!(y1, 1.0, "an accuracy axis stops at 1.0");
        assert!((0.0..0.08).contains(&y0), "{y0}");
        let c = curve(&[(1.0, -0.98), (2.0, 0.5)]);
        let (_, _, y0, y1) = extent(&[c], YBounds::COSINE).unwrap();
        assert_eq!(y0, -1.0);
        assert!(y1 < 0.7, "no headroom beyond a margin: {y1}");
        let c = curve(&[(1.0, 2.0), (2.0, 3.0)]);
        let (_, _, y0, y1) = extent(&[c], YBounds::NON_NEGATIVE).unwrap();
        assert!(y0 > 1.8 && y1 > 3.0 && y1 < 3.2, "{y0}..{y1}");
    }
}
