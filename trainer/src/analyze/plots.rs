//! The analysis figures: interference (cosine histograms per step, batch-level cosine against
//! pairs per batch and against width), zero-activation shares per layer for vanilla vs Mixup,
//! and the PCA embeddings.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Analysis, Snapshot};
use crate::error::Result;
use crate::plot::{panel, png, register_fonts, titled_with_legend, Curve, EpMarks, Mark, YBounds, COLORS};

fn line(name: String, color: RGBColor, points: impl IntoIterator<Item = (f64, f64)>) -> Curve {
    Curve {
        name,
        color,
        points: points.into_iter().map(|(x, y)| (x, y, y, y)).collect(),
    }
}

/// Density of `values` over [-1, 1] in `bins` bins, at the bin centres.
fn histogram(values: &[f64], bins: usize) -> Vec<(f64, f64)> {
    let mut counts = vec![0usize; bins];
    for &v in values.iter().filter(|v| v.is_finite()) {
        let b = (((v + 1.0) / 2.0 * bins as f64) as usize).min(bins - 1);
        counts[b] += 1;
    }
    let width = 2.0 / bins as f64;
    let n = values.len().max(1) as f64;
    counts
        .iter()
        .enumerate()
        .map(|(i, &c)| (-1.0 + (i as f64 + 0.5) * width, c as f64 / (n * width)))
        .collect()
}

/// No EP shading or marks: the analysis figures draw none.
fn no_ep() -> EpMarks {
    EpMarks {
        shade_to: None,
        ends: Vec::new(),
    }
}

/// The `i`th curve's colour, the palette repeating.
fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

pub(super) fn plot_analysis(a: &Analysis, dir: &Path) -> Result<Vec<PathBuf>> {
    register_fonts();
    let mut written = vec![plot_interference(a, dir)?];
    written.extend(plot_zero_activations(a, dir)?);
    written.extend(plot_embeddings(a, dir)?);
    Ok(written)
}

/// interference.png: the cosine histograms per snapshot, the batch-level cosine against pairs
/// per batch and, when widths were measured, the interference against width.
fn plot_interference(a: &Analysis, dir: &Path) -> Result<PathBuf> {
    let none = no_ep();
    png(dir.join("interference.png"), (1650, 520), |root| {
        let areas = root.split_evenly((1, 3));
        let hist: Vec<Curve> = a
            .snapshots
            .iter()
            .enumerate()
            .map(|(i, s)| line(format!("step {}", s.step), color(i), histogram(&s.cosines, 20)))
            .collect();
        panel(
            &areas[0],
            "cos(vanilla, Mixup gradient) over pairs",
            ("cosine", "density"),
            YBounds::NON_NEGATIVE,
            &hist,
            &none,
        )?;
        let by_batch: Vec<Curve> = a
            .snapshots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                line(
                    format!("step {}", s.step),
                    color(i),
                    s.by_batch.iter().map(|b| ((b.pairs as f64).log2(), b.mean_cosine)),
                )
            })
            .collect();
        panel(
            &areas[1],
            "batch-level cosine vs pairs per batch",
            ("log2(pairs per batch)", "mean cosine"),
            YBounds::COSINE,
            &by_batch,
            &none,
        )?;
        if !a.widths.is_empty() {
            width_panel(&areas[2], a)?;
        }
        Ok(())
    })
}

/// The mean cosine and interference ratio over pairs against the width (log10 parameters).
fn width_panel(area: &DrawingArea<BitMapBackend<'_>, Shift>, a: &Analysis) -> std::result::Result<(), String> {
    let widths = vec![
        line(
            "mean cosine".into(),
            color(0),
            a.widths.iter().map(|w| ((w.parameters as f64).log10(), w.mean_cosine)),
        ),
        line(
            "interference ratio".into(),
            color(1),
            a.widths.iter().map(|w| ((w.parameters as f64).log10(), w.mean_ratio)),
        ),
    ];
    let title = format!("pairwise interference vs width (after {} steps)", a.steps);
    panel(
        area,
        &title,
        ("log10(parameters)", "mean over pairs"),
        YBounds::COSINE,
        &widths,
        &no_ep(),
    )
}

/// zero_vs_alpha.png: the share of zero activations against the step, one panel per shown
/// layer; None when no layers were traced.
fn plot_zero_activations(a: &Analysis, dir: &Path) -> Result<Option<PathBuf>> {
    let layers = a
        .zero_traces
        .iter()
        .flat_map(|z| z.points.iter().map(|p| p.1.len()))
        .max()
        .unwrap_or(0);
    if layers == 0 {
        return Ok(None);
    }
    let shown = layers.min(6);
    let none = no_ep();
    let path = png(dir.join("zero_vs_alpha.png"), (520 * shown as u32, 500), |root| {
        // The first layers and the last (where the paper sees revival) when there are many.
        let picks: Vec<usize> = if layers <= 6 {
            (0..layers).collect()
        } else {
            vec![0, 1, layers / 3, layers / 2, 2 * layers / 3, layers - 1]
        };
        for (area, &k) in root.split_evenly((1, shown)).iter().zip(&picks) {
            let curves: Vec<Curve> = a
                .zero_traces
                .iter()
                .enumerate()
                .map(|(i, z)| {
                    line(
                        z.label.clone(),
                        color(i),
                        z.points.iter().filter_map(|(s, v)| v.get(k).map(|&x| (*s as f64, x))),
                    )
                })
                .collect();
            panel(
                area,
                &format!("layer {}: zero activations", k + 1),
                ("step", "share = 0"),
                YBounds::UNIT,
                &curves,
                &none,
            )?;
        }
        Ok(())
    })?;
    Ok(Some(path))
}

/// embeddings.png: one PCA scatter per snapshot; None when no snapshot has an embedding.
fn plot_embeddings(a: &Analysis, dir: &Path) -> Result<Option<PathBuf>> {
    if !a.snapshots.iter().any(|s| !s.embedding.is_empty()) {
        return Ok(None);
    }
    let n = a.snapshots.len().max(1);
    let path = png(dir.join("embeddings.png"), (480 * n as u32, 480), |root| {
        for (area, s) in root.split_evenly((1, n)).iter().zip(&a.snapshots) {
            embedding_panel(area, s)?;
        }
        Ok(())
    })?;
    Ok(Some(path))
}

/// One snapshot's PCA scatter of three classes, the legend above the scatter.
fn embedding_panel(area: &DrawingArea<BitMapBackend<'_>, Shift>, s: &Snapshot) -> std::result::Result<(), String> {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(_, x, y) in &s.embedding {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if !x0.is_finite() {
        return Ok(());
    }
    let (px, py) = (((x1 - x0) * 0.05).max(1e-9), ((y1 - y0) * 0.05).max(1e-9));
    let classes: Vec<(String, Mark)> = (0..3).map(|k| (format!("class {k}"), Mark::Dot(COLORS[k]))).collect();
    let body = titled_with_legend(area, &format!("penultimate features, step {}", s.step), &classes)?;
    let mut chart = ChartBuilder::on(&body)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x0 - px..x1 + px, y0 - py..y1 + py)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("PC 1")
        .y_desc("PC 2")
        .light_line_style(WHITE.mix(0.0))
        .x_label_formatter(&|v| format!("{v:.1}"))
        .y_label_formatter(&|v| format!("{v:.1}"))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;
    for class in 0..3i64 {
        let c = COLORS[class as usize];
        chart
            .draw_series(
                s.embedding
                    .iter()
                    .filter(|e| e.0 == class)
                    .map(|&(_, x, y)| Circle::new((x, y), 3, c.mix(0.7).filled())),
            )
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
