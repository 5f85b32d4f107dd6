//! The comparison's tables: per strategy the mean and standard deviation over seeds of the test
//! and best validation metric, the difference to the baseline with a bootstrap confidence
//! interval, Welch's and the paired t-test with their Holm-adjusted p-values (over the report's
//! comparisons), the EP end and wall time of every run; as `report.json` and `report.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::stats::{bootstrap_diff, holm, mean, paired, std_dev, welch, Interval, TTest};
use super::{read_summary, CompareSection, PlannedRun};
use crate::error::{Error, Result};
use crate::train::MonitorCost;
use enlighten::strategy::EpEndInfo;

/// One finished run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub seed: u64,
    pub dir: PathBuf,
    pub test: f64,
    pub test_loss: f64,
    pub best_val: f64,
    pub final_val: f64,
    pub ep_end: Option<EpEndInfo>,
    /// What watching the EP cost the run.
    #[serde(default)]
    pub monitor: Option<MonitorCost>,
    /// The batch-epoch norm ratio of each epoch, when the run logged diagnostics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub benr: Vec<f64>,
    pub steps: u64,
    pub wall_seconds: f64,
}

/// One strategy over its seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrategyResult {
    pub strategy: String,
    pub runs: Vec<RunResult>,
    pub test_mean: f64,
    pub test_std: f64,
    pub best_val_mean: f64,
    pub best_val_std: f64,
    /// mean(test) - mean(baseline's test); None for the baseline itself.
    pub diff_to_baseline: Option<f64>,
    /// Welch's t-test of the test metric against the baseline's.
    pub welch: Option<TTest>,
    /// The paired t-test over seeds (run i of each strategy shares its seed).
    pub paired: Option<TTest>,
    /// Welch's p after Holm's adjustment over the report's comparisons.
    #[serde(default)]
    pub welch_holm: Option<f64>,
    /// The paired p after Holm's adjustment over the report's comparisons.
    #[serde(default)]
    pub paired_holm: Option<f64>,
    /// The bootstrap confidence interval of `diff_to_baseline`.
    #[serde(default)]
    pub diff_ci: Option<Interval>,
    pub wall_seconds_mean: f64,
}

/// The confidence level of the reports' intervals.
pub const CI_LEVEL: f64 = 0.95;
/// Bootstrap resamples per interval.
pub const BOOTSTRAP_RESAMPLES: usize = 10_000;
/// The bootstrap's seed: fixed, so a report is reproducible from its runs.
pub const BOOTSTRAP_SEED: u64 = 20_261_127;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub name: String,
    pub task: String,
    pub metric: String,
    pub higher_is_better: bool,
    pub seeds: u32,
    pub baseline: String,
    /// How many comparisons (strategies against the baseline) the report holds: the family
    /// Holm's adjustment is over, for each of the two tests.
    #[serde(default)]
    pub comparisons: usize,
    /// The bootstrap behind `diff_ci`: resamples and seed.
    #[serde(default)]
    pub bootstrap_resamples: usize,
    #[serde(default)]
    pub bootstrap_seed: u64,
    pub strategies: Vec<StrategyResult>,
}

impl Report {
    /// Reads every planned run's `summary.json` (all must have finished).
    pub fn collect(name: &str, section: &CompareSection, runs: &[PlannedRun]) -> Result<Report> {
        let mut strategies = Vec::new();
        let (mut task, mut metric, mut higher) = (String::new(), String::new(), true);
        for &kind in &section.strategies {
            let mut results = Vec::new();
            for run in runs.iter().filter(|r| r.strategy == kind) {
                let dir = run.dir();
                let s = read_summary(&dir).ok_or_else(|| Error::Data {
                    path: dir.join("summary.json"),
                    problem: "missing or unreadable".into(),
                    hint: "run `enlighten compare` again: it finishes the runs that did not".into(),
                })?;
                (task, metric, higher) = (s.task.clone(), s.metric.clone(), s.higher_is_better);
                let benr = benr_of(&dir);
                results.push(RunResult {
                    seed: run.seed,
                    dir,
                    test: s.test,
                    test_loss: s.test_loss,
                    best_val: s.best_val,
                    final_val: s.final_val,
                    ep_end: s.ep_end,
                    monitor: s.monitor,
                    benr,
                    steps: s.steps,
                    wall_seconds: s.wall_seconds,
                });
            }
            let test: Vec<f64> = results.iter().map(|r| r.test).collect();
            let best: Vec<f64> = results.iter().map(|r| r.best_val).collect();
            strategies.push(StrategyResult {
                strategy: kind.name().into(),
                test_mean: mean(&test),
                test_std: std_dev(&test),
                best_val_mean: mean(&best),
                best_val_std: std_dev(&best),
                wall_seconds_mean: mean(&results.iter().map(|r| r.wall_seconds).collect::<Vec<_>>()),
                runs: results,
                diff_to_baseline: None,
                welch: None,
                paired: None,
                welch_holm: None,
                paired_holm: None,
                diff_ci: None,
            });
        }
        let baseline = section.baseline().name().to_string();
        let base_test: Vec<f64> = strategies
            .iter()
            .find(|s| s.strategy == baseline)
            .map(|s| s.runs.iter().map(|r| r.test).collect())
            .unwrap_or_default();
        for s in strategies.iter_mut().filter(|s| s.strategy != baseline) {
            let test: Vec<f64> = s.runs.iter().map(|r| r.test).collect();
            s.diff_to_baseline = Some(s.test_mean - mean(&base_test));
            s.welch = welch(&test, &base_test);
            s.paired = paired(&test, &base_test);
            s.diff_ci = bootstrap_diff(&test, &base_test, CI_LEVEL, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED);
        }
        let comparisons = strategies.iter().filter(|s| s.strategy != baseline).count();
        adjust(&mut strategies, &baseline);
        Ok(Report {
            name: name.into(),
            task,
            metric,
            higher_is_better: higher,
            seeds: section.seeds,
            baseline,
            comparisons,
            bootstrap_resamples: BOOTSTRAP_RESAMPLES,
            bootstrap_seed: BOOTSTRAP_SEED,
            strategies,
        })
    }

    /// Writes `report.json` and `report.md` (which shows `plots`, paths relative to `dir`).
    pub fn write(&self, dir: &Path, plots: &[PathBuf]) -> Result<()> {
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| Error::json(dir.join("report.json").display().to_string(), e))?;
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text).map_err(|e| Error::unwritable(dir.join(name), e))
        };
        write("report.json", &json)?;
        write("report.md", &self.markdown(dir, plots))
    }

    /// The summary table: one row per strategy.
    pub fn table(&self) -> String {
        let better = if self.higher_is_better {
            "higher is better"
        } else {
            "lower is better"
        };
        let mut t = format!(
            "| strategy | test {m} (mean ± std) | best val {m} | Δ test vs {b} | {l:.0}% CI of Δ (bootstrap) | Welch p | Welch p, Holm | paired p | paired p, Holm | EP end: step interval, accuracy SE (mean) | wall s/run |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
            l = CI_LEVEL * 100.0,
            m = self.metric,
            b = self.baseline
        );
        for s in &self.strategies {
            let ep = ep_cell(&s.runs);
            let p = |t: Option<TTest>| t.map_or("—".to_string(), |t| format!("{:.3}", t.p));
            let adj = |p: Option<f64>| p.map_or("—".to_string(), |p| format!("{p:.3}"));
            let ci = s
                .diff_ci
                .map_or("—".to_string(), |c| format!("[{:+.4}, {:+.4}]", c.low, c.high));
            let _ = writeln!(
                t,
                "| {} | {:.4} ± {:.4} | {:.4} ± {:.4} | {} | {} | {} | {} | {} | {} | {} | {:.1} |",
                s.strategy,
                s.test_mean,
                s.test_std,
                s.best_val_mean,
                s.best_val_std,
                s.diff_to_baseline
                    .map_or("baseline".to_string(), |d| format!("{d:+.4}")),
                ci,
                p(s.welch),
                adj(s.welch_holm),
                p(s.paired),
                adj(s.paired_holm),
                ep,
                s.wall_seconds_mean
            );
        }
        let _ = write!(
            t,
            "\n{} over {} seed(s); {better}. {} comparison(s) against {}: Holm's adjustment is over them.",
            self.metric, self.seeds, self.comparisons, self.baseline
        );
        t
    }

    fn markdown(&self, dir: &Path, plots: &[PathBuf]) -> String {
        let mut md = format!(
            "# Comparison `{}` ({} task)\n\n{}\n\n",
            self.name,
            self.task,
            self.table()
        );
        md.push_str(
            "p-values: two-sided, Welch's unequal-variance t-test and the paired t-test over seeds (run i of every \
             strategy uses seed i), against the baseline; the Holm columns adjust each test's p-values for the \
             report's number of comparisons (step-down, family-wise error rate). The interval is the percentile \
             bootstrap of the difference of means (each strategy's seeds resampled on their own; resamples and \
             seed in report.json). With few seeds only large, consistent differences reach p < 0.05; a \
             difference without that is not evidence of a gain, and one seen once is a claim to replicate on \
             fresh seeds before it is believed.\n\nThe EP end is an interval: the step of the last observation \
             of the monitor below the threshold and of the first at or above it (the EP ends at the latter); SE \
             is the monitor's binomial standard error at the crossing (its window's or probe's size). The \
             monitor cost is its own seconds during the EP as a share of the EP's training seconds.\n\n## Runs\n\n\
             | strategy | seed | test | test loss | best val | final val | EP end: step (interval), epoch, accuracy ± SE, monitor | monitor cost | steps | wall s |\n\
             |---|---|---|---|---|---|---|---|---|---|\n",
        );
        for s in &self.strategies {
            for r in &s.runs {
                let cost = r.monitor.map_or("—".to_string(), |m| {
                    format!("{:.2}% of {:.1} s", 100.0 * m.cost_share, m.ep_training_seconds)
                });
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {} | {} | {} | {:.1} |",
                    s.strategy,
                    r.seed,
                    r.test,
                    r.test_loss,
                    r.best_val,
                    r.final_val,
                    ep_run(r.ep_end),
                    cost,
                    r.steps,
                    r.wall_seconds
                );
            }
        }
        md.push_str(&self.benr_table());
        if !plots.is_empty() {
            md.push_str("\n## Plots\n\n");
            for p in plots {
                let rel = p.strip_prefix(dir).unwrap_or(p);
                let _ = writeln!(md, "![{}]({})\n", rel.display(), rel.display());
            }
        }
        md
    }
}

/// Fills the Holm-adjusted p-values of every strategy but the baseline, each test on its own.
fn adjust(strategies: &mut [StrategyResult], baseline: &str) {
    let rows: Vec<usize> = (0..strategies.len())
        .filter(|&i| strategies[i].strategy != baseline)
        .collect();
    let raw = |f: fn(&StrategyResult) -> Option<TTest>| -> Vec<f64> {
        rows.iter()
            .map(|&i| f(&strategies[i]).map_or(f64::NAN, |t| t.p))
            .collect()
    };
    let (welch_adj, paired_adj) = (holm(&raw(|s| s.welch)), holm(&raw(|s| s.paired)));
    let finite = |p: f64| (!p.is_nan()).then_some(p);
    for (k, &i) in rows.iter().enumerate() {
        strategies[i].welch_holm = finite(welch_adj[k]);
        strategies[i].paired_holm = finite(paired_adj[k]);
    }
}

/// A step as a mean over runs: whole when it is one.
fn steps(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The table's EP cell of a strategy: the mean interval over the runs whose EP ended, the mean
/// standard error, and how many ended.
fn ep_cell(runs: &[RunResult]) -> String {
    let ends: Vec<EpEndInfo> = runs.iter().filter_map(|r| r.ep_end).collect();
    if ends.is_empty() {
        return "—".to_string();
    }
    let lo = mean(&ends.iter().map(|e| e.interval().0 as f64).collect::<Vec<_>>());
    let hi = mean(&ends.iter().map(|e| e.interval().1 as f64).collect::<Vec<_>>());
    let se: Vec<f64> = ends.iter().filter_map(|e| e.std_error).collect();
    let se = if se.is_empty() {
        String::new()
    } else {
        format!(", ±{:.3}", mean(&se))
    };
    format!(
        "[{}, {}]{se} ({}/{} runs)",
        steps(lo),
        steps(hi),
        ends.len(),
        runs.len()
    )
}

/// One run's EP end for the runs table.
fn ep_run(end: Option<EpEndInfo>) -> String {
    let Some(e) = end else {
        return "did not end".to_string();
    };
    let (lo, hi) = e.interval();
    let accuracy = e.accuracy.map_or("—".to_string(), |a| match e.std_error {
        Some(se) => format!("{a:.4} ± {se:.4}"),
        None => format!("{a:.4}"),
    });
    let monitor = e.monitor.map_or("fixed".to_string(), |m| m.to_string());
    format!("{} ({lo}..{hi}), {}, {accuracy}, {monitor}", e.step, e.epoch)
}

/// The BENR values of a run's metrics.jsonl, one per epoch (none without diagnostics).
fn benr_of(dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str::<crate::train::MetricsLine>(l).ok()?.benr)
                .collect()
        })
        .unwrap_or_default()
}

impl Report {
    /// BENR per epoch, mean ± std over each strategy's seeds (a table: a few epochs make no
    /// readable figure); empty when no run logged it.
    fn benr_table(&self) -> String {
        let epochs = self
            .strategies
            .iter()
            .flat_map(|s| s.runs.iter().map(|r| r.benr.len()))
            .max()
            .unwrap_or(0);
        if epochs == 0 {
            return String::new();
        }
        let mut md =
            String::from("\n## Batch-epoch norm ratio (BENR) per epoch, mean ± std over seeds\n\n| strategy |");
        for e in 1..=epochs {
            let _ = write!(md, " epoch {e} |");
        }
        md.push_str(&format!("\n|---|{}\n", "---|".repeat(epochs)));
        for s in &self.strategies {
            let _ = write!(md, "| {} |", s.strategy);
            for e in 0..epochs {
                let v: Vec<f64> = s.runs.iter().filter_map(|r| r.benr.get(e).copied()).collect();
                let cell = if v.is_empty() {
                    "—".to_string()
                } else {
                    format!("{:.3} ± {:.3}", mean(&v), std_dev(&v))
                };
                let _ = write!(md, " {cell} |");
            }
            md.push('\n');
        }
        md
    }
}
