//! The figures' frame, shared by `compare` and `analyze`: PNGs drawn with plotters, DejaVu Sans
//! embedded so no system font is needed, one palette, one panel (lines with min-max bands, the
//! EP shaded and marked) and one legend style.

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

/// The EP's extent for shading (the median end over runs whose EP ended) and each run's end.
pub(crate) struct EpMarks {
    pub shade_to: Option<f64>,
    pub ends: Vec<(f64, RGBColor)>,
}

/// A chart on a PNG with both axes in f64.
pub(crate) type Chart<'a> = ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// One panel: lines with bands, the EP shaded and marked, a legend.
pub(crate) fn panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    curves: &[Curve],
    ep: &EpMarks,
) -> std::result::Result<(), String> {
    let Some((x0, x1, y0, y1)) = extent(curves) else {
        return Ok(());
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22).into_font().style(FontStyle::Bold))
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
    legend(&mut chart)
}

/// A panel's axes (x0, x1, y0, y1) over the curves' points and bands; None when there are no
/// points.
fn extent(curves: &[Curve]) -> Option<(f64, f64, f64, f64)> {
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
    // Headroom above the data for the legend, so it never covers a curve.
    let span = (y1 - y0).max(1e-6);
    let (y0, y1) = (
        y0 - 0.05 * span,
        y1 + 0.08 * span + 0.1 * span * (curves.len() + 1) as f64,
    );
    Some((x0, x1, y0, y1))
}

/// The EP shaded up to its median end (within the x axis `x0..x1`) and each run's end dashed
/// over the y axis `y0..y1`.
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
            .map_err(|e| e.to_string())?
            .label("Enlightenment Period (median end)")
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], EP_SHADE.mix(0.6).filled()));
    }
    for &(x, color) in &ep.ends {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(x, y0), (x, y1)],
                6,
                4,
                color.mix(0.7).stroke_width(1),
            ))
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
        .map_err(|e| e.to_string())?
        .label(c.name.clone())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
    // Sparse curves (per-epoch values) show their points.
    if c.points.len() < 20 {
        chart
            .draw_series(c.points.iter().map(|p| Circle::new((p.0, p.1), 4, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The legend every chart uses: upper right, over a light box.
pub(crate) fn legend(chart: &mut Chart<'_>) -> std::result::Result<(), String> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(|e| e.to_string())
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
