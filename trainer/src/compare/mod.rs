//! `enlighten compare`: every strategy x seed of one configuration as a run under
//! `runs/<name>/<strategy>-s<seed>/` (finished runs are skipped, interrupted ones resume), then
//! `report.md`, `report.json` and the plots in `runs/<name>/`.

mod plots;
mod report;
pub mod stats;

pub use crate::plot::register_fonts;
pub use plots::plot_comparison;
pub use report::{Report, RunResult, StrategyResult};

use std::path::{Path, PathBuf};

pub use crate::train::CompareSection;

use crate::error::Result;
use crate::train::{DataParallel, Summary, TrainConfig};
use enlighten::strategy::StrategyKind;

/// One run of a comparison.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    pub strategy: StrategyKind,
    pub seed: u64,
    pub config: TrainConfig,
}

impl PlannedRun {
    pub fn dir(&self) -> PathBuf {
        self.config.run.out_dir.join(&self.config.run.name)
    }
}

/// Where a planned run stands on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// `summary.json` is there: skip it.
    Finished,
    /// A checkpoint is there but no summary: resume it.
    Interrupted,
    NotStarted,
}

pub fn run_state(dir: &Path) -> RunState {
    if read_summary(dir).is_some() {
        RunState::Finished
    } else if dir.join("checkpoints").join("latest").exists() {
        RunState::Interrupted
    } else {
        RunState::NotStarted
    }
}

pub(crate) fn read_summary(dir: &Path) -> Option<Summary> {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).ok()?).ok()
}

/// The folder a comparison writes into: `<out_dir>/<name>`.
pub fn compare_dir(config: &TrainConfig) -> PathBuf {
    config.run.out_dir.join(&config.run.name)
}

/// Every strategy x seed as a configuration: the base configuration with the strategy's kind
/// (its other settings kept; the drop share only for High-Loss Removal), seed `base + i`, and
/// its folder inside the comparison's.
pub fn plan(config: &TrainConfig, section: &CompareSection) -> Result<Vec<PlannedRun>> {
    section.validate()?;
    let mut runs = Vec::new();
    for &strategy in &section.strategies {
        for i in 0..section.seeds as u64 {
            let mut c = config.clone();
            c.strategy.kind = strategy;
            if strategy != StrategyKind::HighLossRemoval {
                c.strategy.drop_share = None;
            }
            c.run.seed = config.run.seed + i;
            c.run.out_dir = compare_dir(config);
            c.run.name = format!("{}-s{}", strategy.name(), c.run.seed);
            c.compare = None;
            c.validate()?;
            runs.push(PlannedRun {
                strategy,
                seed: c.run.seed,
                config: c,
            });
        }
    }
    Ok(runs)
}

/// Trains one planned run (the CLI's runner trains; tests use fakes).
pub trait Runner {
    fn run(&mut self, run: &PlannedRun, resume: bool, index: usize, total: usize) -> Result<Summary>;
}

/// What happened to each run of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Skipped,
    Resumed,
    Ran,
}

/// What a comparison produced.
#[derive(Debug)]
pub struct Comparison {
    pub report: Report,
    /// Each planned run's outcome, in plan order.
    pub outcomes: Vec<Outcome>,
    /// The PNGs written next to report.md.
    pub plots: Vec<PathBuf>,
}

/// Runs what is not finished, in plan order, then writes the report and the plots.
pub fn compare(config: &TrainConfig, section: &CompareSection, runner: &mut dyn Runner) -> Result<Comparison> {
    let (runs, outcomes) = run_all(config, section, runner)?;
    let report = Report::collect(&config.run.name, section, &runs)?;
    let dir = compare_dir(config);
    let plots = plot_comparison(&report, &runs, &dir)?;
    report.write(&dir, &plots)?;
    Ok(Comparison {
        report,
        outcomes,
        plots,
    })
}

/// The training part of [`compare`]: every planned run not finished, in plan order. The ranks
/// of a data-parallel comparison other than 0 call this alone (rank 0 writes the report); they
/// read each run's state from the same run folders, which a job across machines must share.
pub fn run_all(
    config: &TrainConfig,
    section: &CompareSection,
    runner: &mut dyn Runner,
) -> Result<(Vec<PlannedRun>, Vec<Outcome>)> {
    let runs = plan(config, section)?;
    let mut outcomes = Vec::with_capacity(runs.len());
    for (i, run) in runs.iter().enumerate() {
        let outcome = match run_state(&run.dir()) {
            RunState::Finished => Outcome::Skipped,
            RunState::Interrupted => {
                runner.run(run, true, i, runs.len())?;
                Outcome::Resumed
            }
            RunState::NotStarted => {
                runner.run(run, false, i, runs.len())?;
                Outcome::Ran
            }
        };
        outcomes.push(outcome);
    }
    Ok((runs, outcomes))
}

/// The runner `enlighten compare` uses: trains each run with its progress bar under one bar over
/// all runs; an interrupt checkpoints the current run and stops the comparison. Under data
/// parallelism every run is trained by all ranks of the job.
pub struct TrainRunner<'a> {
    pub group: indicatif::MultiProgress,
    pub overall: indicatif::ProgressBar,
    pub interrupt: Option<&'a std::sync::atomic::AtomicBool>,
    pub parallel: Option<&'a DataParallel>,
}

impl<'a> TrainRunner<'a> {
    /// The bar over all runs learns their number from the first run it is given.
    pub fn new(
        interrupt: Option<&'a std::sync::atomic::AtomicBool>,
        parallel: Option<&'a DataParallel>,
    ) -> TrainRunner<'a> {
        let group = indicatif::MultiProgress::new();
        let overall = group.add(indicatif::ProgressBar::new(0));
        let style = indicatif::ProgressStyle::with_template(
            "runs {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        overall.set_style(style);
        TrainRunner {
            group,
            overall,
            interrupt,
            parallel,
        }
    }
}

impl Runner for TrainRunner<'_> {
    fn run(&mut self, run: &PlannedRun, resume: bool, index: usize, total: usize) -> Result<Summary> {
        self.overall.set_length(total as u64);
        self.overall.set_position(index as u64);
        self.overall.set_message(format!(
            "{}{}",
            run.config.run.name,
            if resume { " (resuming)" } else { "" }
        ));
        let options = crate::train::TrainOptions {
            resume,
            progress: true,
            progress_group: Some(&self.group),
            interrupt: self.interrupt,
            parallel: self.parallel,
        };
        let summary = crate::train::train(&run.config, &options).inspect_err(|e| {
            self.overall
                .println(format!("run {} stopped: {e}", run.dir().display()));
        })?;
        self.overall.set_position(index as u64 + 1);
        Ok(summary)
    }
}
