//! The comparison's figures (PNG, plotters, DejaVu Sans embedded so no system font is needed):
//! validation metric and training loss per strategy (mean over seeds with a min-max band, the EP
//! shaded, each run's EP end marked), zero-activation shares per layer, BENR per epoch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::Report;
use super::PlannedRun;
use crate::error::{Error, Result};
use crate::train::MetricsLine;

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

/// From light (first layer) to dark (last): depth reads as shade.
fn layer_color(k: usize, layers: usize) -> RGBColor {
    let t = if layers > 1 { k as f64 / (layers - 1) as f64 } else { 1.0 };
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * t).round() as u8;
    RGBColor(mix(253, 8), mix(174, 48), mix(97, 107))
}

fn plot_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::unwritable(path, format!("drawing failed: {e}"))
}

/// A strategy's curve: per x, the mean over runs and the band (min, max).
pub(crate) struct Curve {
    pub name: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64, f64, f64)>,
}

/// Mean and min-max band over runs of `value(line)` at each step where some run has it.
fn aggregate(runs: &[Vec<MetricsLine>], value: impl Fn(&MetricsLine) -> Option<f64>) -> Vec<(f64, f64, f64, f64)> {
    let mut by_step: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for lines in runs {
        for l in lines {
            if let Some(v) = value(l).filter(|v| v.is_finite()) {
                by_step.entry(l.step).or_default().push(v);
            }
        }
    }
    by_step
        .into_iter()
        .map(|(step, v)| {
            let m = v.iter().sum::<f64>() / v.len() as f64;
            let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
            ((step + 1) as f64, m, lo, hi)
        })
        .collect()
}

/// The EP's extent for shading (the median end over runs whose EP ended) and each run's end.
pub(crate) struct EpMarks {
    pub shade_to: Option<f64>,
    pub ends: Vec<(f64, RGBColor)>,
}

/// One panel: lines with bands, the EP shaded and marked, a legend.
pub(crate) fn panel(area: &DrawingArea<BitMapBackend<'_>, Shift>, title: &str, x_desc: &str, y_desc: &str, curves: &[Curve], ep: &EpMarks) -> std::result::Result<(), String> {
    let pts = curves.iter().flat_map(|c| c.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, _, lo, hi) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(lo), y1.max(hi));
    }
    if !x0.is_finite() {
        return Ok(());
    }
    // Step axes start at 0; an axis far from 0 (log parameter counts) keeps its range.
    if x0 >= 0.0 && x0 < 0.2 * x1 {
        x0 = 0.0;
    }
    // Headroom above the data for the legend, so it never covers a curve.
    let span = (y1 - y0).max(1e-6);
    let (y0, y1) = (y0 - 0.05 * span, y1 + 0.08 * span + 0.1 * span * (curves.len() + 1) as f64);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22).into_font().style(FontStyle::Bold))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1.max(x0 + 1.0), y0..y1)
        .map_err(|e| e.to_string())?;
    let (xd, yd) = (decimals(x1 - x0), decimals(y1 - y0));
    chart.configure_mesh().x_label_formatter(&|x| format!("{x:.xd$}")).y_label_formatter(&|y| format!("{y:.yd$}")).x_desc(x_desc).y_desc(y_desc).label_style(("sans-serif", 15)).axis_desc_style(("sans-serif", 17)).light_line_style(WHITE.mix(0.0)).draw().map_err(|e| e.to_string())?;
    if let Some(to) = ep.shade_to {
        chart
            .draw_series(std::iter::once(Rectangle::new([(x0, y0), (to.min(x1), y1)], EP_SHADE.mix(0.35).filled())))
            .map_err(|e| e.to_string())?
            .label("Enlightenment Period (median end)")
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], EP_SHADE.mix(0.6).filled()));
    }
    for &(x, color) in &ep.ends {
        chart.draw_series(DashedLineSeries::new(vec![(x, y0), (x, y1)], 6, 4, color.mix(0.7).stroke_width(1))).map_err(|e| e.to_string())?;
    }
    for c in curves {
        if c.points.len() > 1 {
            let mut band: Vec<(f64, f64)> = c.points.iter().map(|p| (p.0, p.3)).collect();
            band.extend(c.points.iter().rev().map(|p| (p.0, p.2)));
            chart.draw_series(std::iter::once(Polygon::new(band, c.color.mix(0.18)))).map_err(|e| e.to_string())?;
        }
        let color = c.color;
        chart
            .draw_series(LineSeries::new(c.points.iter().map(|p| (p.0, p.1)), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(c.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
        // Sparse curves (per-epoch values) show their points.
        if c.points.len() < 20 {
            chart.draw_series(c.points.iter().map(|p| Circle::new((p.0, p.1), 4, color.filled()))).map_err(|e| e.to_string())?;
        }
    }
    legend(&mut chart)
}

/// The legend every chart uses: upper right, over a light box.
pub(crate) fn legend<'a>(chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>) -> std::result::Result<(), String> {
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
pub(crate) fn png(path: PathBuf, size: (u32, u32), draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> std::result::Result<(), String>) -> Result<PathBuf> {
    {
        let root = BitMapBackend::new(&path, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(&path, e))?;
        draw(&root).map_err(|e| plot_error(&path, e))?;
        root.present().map_err(|e| plot_error(&path, e))?;
    }
    Ok(path)
}

fn load_metrics(dir: &Path) -> Vec<MetricsLine> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .map(|t| t.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
        .unwrap_or_default()
}

/// Writes the comparison's PNGs into `dir` and returns their paths.
pub fn plot_comparison(report: &Report, runs: &[PlannedRun], dir: &Path) -> Result<Vec<PathBuf>> {
    register_fonts();
    let per_strategy: Vec<(String, RGBColor, Vec<Vec<MetricsLine>>)> = report
        .strategies
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let lines = runs.iter().filter(|r| r.strategy.name() == s.strategy).map(|r| load_metrics(&r.dir())).collect();
            (s.strategy.clone(), COLORS[i % COLORS.len()], lines)
        })
        .collect();
    let mut ends: Vec<(f64, RGBColor)> = Vec::new();
    for (i, s) in report.strategies.iter().enumerate() {
        ends.extend(s.runs.iter().filter_map(|r| r.ep_end.map(|e| (e.step as f64, COLORS[i % COLORS.len()]))));
    }
    let mut sorted: Vec<f64> = ends.iter().map(|e| e.0).collect();
    sorted.sort_by(f64::total_cmp);
    let ep = EpMarks { shade_to: sorted.get(sorted.len() / 2).copied(), ends };
    let curves = |value: &dyn Fn(&MetricsLine) -> Option<f64>| -> Vec<Curve> {
        per_strategy.iter().map(|(name, color, runs)| Curve { name: name.clone(), color: *color, points: aggregate(runs, value) }).collect()
    };
    let metric = format!("validation {}", report.metric);
    let title = format!("{}: {metric} (mean, min-max over {} seeds)", report.name, report.seeds);
    let mut written = vec![png(dir.join("curves.png"), (1500, 560), |root| {
        let halves = root.split_evenly((1, 2));
        panel(&halves[0], &title, "step", &metric, &curves(&|l| l.val), &ep)?;
        panel(&halves[1], "training loss (mean over the log window)", "step", "loss", &curves(&|l| Some(l.loss)), &ep)
    })?];

    let layers = per_strategy.iter().flat_map(|s| s.2.iter().flatten()).filter_map(|l| l.zero_share.as_ref().map(Vec::len)).max().unwrap_or(0);
    if layers > 0 {
        let n = per_strategy.len();
        written.push(png(dir.join("zero_share.png"), (560 * n as u32, 520), |root| {
            for ((name, _, runs), area) in per_strategy.iter().zip(root.split_evenly((1, n)).iter()) {
                let per_layer: Vec<Curve> = (0..layers)
                    .map(|k| Curve {
                        name: format!("layer {}", k + 1),
                        color: layer_color(k, layers),
                        points: aggregate(runs, |l| l.zero_share.as_ref().and_then(|z| z.get(k).copied())),
                    })
                    .collect();
                panel(area, &format!("{name}: zero activations"), "step", "share of activations = 0", &per_layer, &ep)?;
            }
            Ok(())
        })?);
    }

    let benr = curves(&|l| l.benr);
    if benr.iter().any(|c| !c.points.is_empty()) {
        written.push(png(dir.join("benr.png"), (900, 520), |root| panel(root, "batch-epoch norm ratio per epoch", "step (epoch end)", "BENR", &benr, &ep))?);
    }
    Ok(written)
}
