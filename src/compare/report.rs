//! The comparison's tables: per strategy the mean and standard deviation over seeds of the test
//! and best validation metric, the difference to the baseline with Welch's and the paired
//! t-test, the EP end and wall time of every run; as `report.json` and `report.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::stats::{mean, paired, std_dev, welch, TTest};
use super::{read_summary, CompareSection, PlannedRun};
use crate::error::{Error, Result};
use crate::strategy::EpEndInfo;

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
    pub wall_seconds_mean: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub name: String,
    pub task: String,
    pub metric: String,
    pub higher_is_better: bool,
    pub seeds: u32,
    pub baseline: String,
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
                results.push(RunResult {
                    seed: run.seed,
                    dir,
                    test: s.test,
                    test_loss: s.test_loss,
                    best_val: s.best_val,
                    final_val: s.final_val,
                    ep_end: s.ep_end,
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
        }
        Ok(Report {
            name: name.into(),
            task,
            metric,
            higher_is_better: higher,
            seeds: section.seeds,
            baseline,
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
            "| strategy | test {m} (mean ± std) | best val {m} | Δ test vs {b} | Welch p | paired p | EP end step (mean) | wall s/run |\n|---|---|---|---|---|---|---|---|\n",
            m = self.metric,
            b = self.baseline
        );
        for s in &self.strategies {
            let ends: Vec<f64> = s.runs.iter().filter_map(|r| r.ep_end.map(|e| e.step as f64)).collect();
            let ep = if ends.is_empty() {
                "—".to_string()
            } else {
                format!("{:.0} ({}/{} runs)", mean(&ends), ends.len(), s.runs.len())
            };
            let p = |t: Option<TTest>| t.map_or("—".to_string(), |t| format!("{:.3}", t.p));
            let _ = writeln!(
                t,
                "| {} | {:.4} ± {:.4} | {:.4} ± {:.4} | {} | {} | {} | {} | {:.1} |",
                s.strategy,
                s.test_mean,
                s.test_std,
                s.best_val_mean,
                s.best_val_std,
                s.diff_to_baseline
                    .map_or("baseline".to_string(), |d| format!("{d:+.4}")),
                p(s.welch),
                p(s.paired),
                ep,
                s.wall_seconds_mean
            );
        }
        let _ = write!(t, "\n{} over {} seed(s); {better}.", self.metric, self.seeds);
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
             strategy uses seed i), against the baseline. With few seeds only large, consistent differences reach \
             p < 0.05; a difference without that is not evidence of a gain.\n\n## Runs\n\n\
             | strategy | seed | test | test loss | best val | final val | EP end (step, epoch, accuracy) | steps | wall s |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for s in &self.strategies {
            for r in &s.runs {
                let ep = r.ep_end.map_or("did not end".to_string(), |e| {
                    format!(
                        "{}, {}, {}",
                        e.step,
                        e.epoch,
                        e.accuracy.map_or("—".to_string(), |a| format!("{a:.4}"))
                    )
                });
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {} | {} | {:.1} |",
                    s.strategy, r.seed, r.test, r.test_loss, r.best_val, r.final_val, ep, r.steps, r.wall_seconds
                );
            }
        }
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
