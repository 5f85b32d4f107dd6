//! The comparison's figures: validation metric and training loss per strategy (mean over seeds
//! with a min-max band, the EP shaded, each run's EP end interval banded), zero-activation shares
//! per layer, BENR per epoch once runs have enough epochs to draw a trend (with fewer, report.md
//! lists the values). The frame, panels and legend are crate::plot's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::report::Report;
use super::PlannedRun;
use crate::error::Result;
use crate::plot::{panel, png, register_fonts, Curve, EpMarks, YBounds, COLORS};
use crate::train::MetricsLine;

/// From light (first layer) to dark (last): depth reads as shade.
fn layer_color(k: usize, layers: usize) -> RGBColor {
    let t = if layers > 1 {
        k as f64 / (layers - 1) as f64
    } else {
        1.0
    };
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * t).round() as u8;
    RGBColor(mix(253, 8), mix(174, 48), mix(97, 107))
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
            let (lo, hi) = v
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
            ((step + 1) as f64, m, lo, hi)
        })
        .collect()
}

fn load_metrics(dir: &Path) -> Vec<MetricsLine> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .map(|t| t.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
        .unwrap_or_default()
}

/// One strategy's runs' metrics logs and the colour its curves are drawn in.
struct StrategyMetrics {
    name: String,
    color: RGBColor,
    runs: Vec<Vec<MetricsLine>>,
}

/// Writes the comparison's PNGs into `dir` and returns their paths.
pub fn plot_comparison(report: &Report, runs: &[PlannedRun], dir: &Path) -> Result<Vec<PathBuf>> {
    register_fonts();
    let per_strategy = load_strategies(report, runs);
    let ep = ep_marks(report);
    let mut written = vec![plot_curves(report, &per_strategy, &ep, dir)?];
    written.extend(plot_zero_share(&per_strategy, &ep, dir)?);
    written.extend(plot_benr(&per_strategy, &ep, dir)?);
    Ok(written)
}

/// Each strategy of the report with the metrics of its runs, in the report's order.
fn load_strategies(report: &Report, runs: &[PlannedRun]) -> Vec<StrategyMetrics> {
    report
        .strategies
        .iter()
        .enumerate()
        .map(|(i, s)| StrategyMetrics {
            name: s.strategy.clone(),
            color: COLORS[i % COLORS.len()],
            runs: runs
                .iter()
                .filter(|r| r.strategy.name() == s.strategy)
                .map(|r| load_metrics(&r.dir()))
                .collect(),
        })
        .collect()
}

/// Every run's EP end interval in its strategy's colour, the EP shaded to the median end.
fn ep_marks(report: &Report) -> EpMarks {
    let mut ends: Vec<(f64, f64, RGBColor)> = Vec::new();
    for (i, s) in report.strategies.iter().enumerate() {
        ends.extend(s.runs.iter().filter_map(|r| {
            let (lo, hi) = r.ep_end?.interval();
            Some((lo as f64, hi as f64, COLORS[i % COLORS.len()]))
        }));
    }
    let mut sorted: Vec<f64> = ends.iter().map(|e| e.1).collect();
    sorted.sort_by(f64::total_cmp);
    EpMarks {
        shade_to: sorted.get(sorted.len() / 2).copied(),
        ends,
    }
}

/// One curve per strategy of `value` aggregated over its runs.
fn curves(per_strategy: &[StrategyMetrics], value: &dyn Fn(&MetricsLine) -> Option<f64>) -> Vec<Curve> {
    per_strategy
        .iter()
        .map(|s| Curve {
            name: s.name.clone(),
            color: s.color,
            points: aggregate(&s.runs, value),
        })
        .collect()
}

/// curves.png: the validation metric and the training loss per strategy.
fn plot_curves(report: &Report, per_strategy: &[StrategyMetrics], ep: &EpMarks, dir: &Path) -> Result<PathBuf> {
    let metric = format!("validation {}", report.metric);
    let title = format!("{}: {metric} (mean, min-max over {} seeds)", report.name, report.seeds);
    png(dir.join("curves.png"), (1500, 560), |root| {
        let halves = root.split_evenly((1, 2));
        panel(
            &halves[0],
            &title,
            ("step", &metric),
            YBounds::of_metric(&report.metric),
            &curves(per_strategy, &|l| l.val),
            ep,
        )?;
        panel(
            &halves[1],
            "training loss (mean over the log window)",
            ("step", "loss"),
            YBounds::NON_NEGATIVE,
            &curves(per_strategy, &|l| Some(l.loss)),
            ep,
        )
    })
}

/// zero_share.png: per strategy, the share of zero activations of each layer; None when no run
/// logged it.
fn plot_zero_share(per_strategy: &[StrategyMetrics], ep: &EpMarks, dir: &Path) -> Result<Option<PathBuf>> {
    let layers = per_strategy
        .iter()
        .flat_map(|s| s.runs.iter().flatten())
        .filter_map(|l| l.zero_share.as_ref().map(Vec::len))
        .max()
        .unwrap_or(0);
    if layers == 0 {
        return Ok(None);
    }
    let n = per_strategy.len();
    let path = png(dir.join("zero_share.png"), (560 * n as u32, 520), |root| {
        for (s, area) in per_strategy.iter().zip(root.split_evenly((1, n)).iter()) {
            let per_layer: Vec<Curve> = (0..layers)
                .map(|k| Curve {
                    name: format!("layer {}", k + 1),
                    color: layer_color(k, layers),
                    points: aggregate(&s.runs, |l| l.zero_share.as_ref().and_then(|z| z.get(k).copied())),
                })
                .collect();
            panel(
                area,
                &format!("{}: zero activations", s.name),
                ("step", "share of activations = 0"),
                YBounds::UNIT,
                &per_layer,
                ep,
            )?;
        }
        Ok(())
    })?;
    Ok(Some(path))
}

/// Epochs a BENR figure needs to show a trend; with fewer the report lists the values.
pub const BENR_MIN_EPOCHS: usize = 5;

/// benr.png: the batch-epoch norm ratio per strategy; None when no strategy logged it for at
/// least [`BENR_MIN_EPOCHS`] epochs.
fn plot_benr(per_strategy: &[StrategyMetrics], ep: &EpMarks, dir: &Path) -> Result<Option<PathBuf>> {
    let benr = curves(per_strategy, &|l| l.benr);
    if !benr.iter().any(|c| c.points.len() >= BENR_MIN_EPOCHS) {
        return Ok(None);
    }
    let path = png(dir.join("benr.png"), (900, 520), |root| {
        panel(
            root,
            "batch-epoch norm ratio per epoch",
            ("step (epoch end)", "BENR"),
            YBounds::NON_NEGATIVE,
            &benr,
            ep,
        )
    })?;
    Ok(Some(path))
}
