//! The Enlightenment Period (EP) controller: when does the first phase of training end?
//!
//! The EP ends at a fixed epoch or step, or at the first observation at which a monitored accuracy
//! reaches a threshold (raw, or chance-normalised so that it means the same for 2 or 1000
//! classes). Once ended it stays ended (latched), and the end is kept for logs and reports as an
//! interval: the last observation below the threshold and the first at or above it, with the
//! monitor's binomial standard error at the crossing.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use super::monitor::Monitor;
use super::monitor::{Measurement, MonitorState};
use crate::error::{Error, Result};

/// When an accuracy counts as "reached".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", deny_unknown_fields)]
pub enum Threshold {
    /// accuracy >= value (the paper's ~50%).
    Raw {
        /// The accuracy to reach.
        value: f64,
    },
    /// (accuracy - 1/K) / (1 - 1/K) >= value: 0 is chance, 1 is perfect, for any class count K.
    ChanceNormalized {
        /// The normalised score to reach.
        value: f64,
        /// The number of classes K.
        classes: u32,
    },
}

impl Threshold {
    /// The accuracy as this threshold measures it.
    pub fn score(&self, accuracy: f64) -> f64 {
        match *self {
            Threshold::Raw { .. } => accuracy,
            Threshold::ChanceNormalized { classes, .. } => {
                let chance = 1.0 / classes as f64;
                (accuracy - chance) / (1.0 - chance)
            }
        }
    }

    /// The threshold the score must reach.
    pub fn value(&self) -> f64 {
        match *self {
            Threshold::Raw { value } | Threshold::ChanceNormalized { value, .. } => value,
        }
    }

    /// Whether `accuracy` reaches the threshold.
    pub fn reached(&self, accuracy: f64) -> bool {
        self.score(accuracy) >= self.value()
    }

    fn validate(&self) -> Result<()> {
        let v = self.value();
        if !(v > 0.0 && v <= 1.0) {
            return Err(Error::value("ep.threshold", "a value in (0, 1]", v));
        }
        if let Threshold::ChanceNormalized { classes, .. } = *self {
            if classes < 2 {
                return Err(Error::value("ep.classes", "at least 2 classes", classes));
            }
        }
        Ok(())
    }
}

/// How the EP ends.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "end", deny_unknown_fields)]
pub enum EpEnd {
    /// After this many epochs (the paper's experiments: 10-25).
    Epochs {
        /// Epochs in the EP.
        epochs: u32,
    },
    /// After this many optimiser steps.
    Steps {
        /// Steps in the EP.
        steps: u64,
    },
    /// At the first observation where the monitored accuracy reaches the threshold.
    Accuracy {
        /// Which accuracy (default `auto`).
        #[serde(default)]
        monitor: Monitor,
        /// When it counts as reached (default: raw accuracy 0.5).
        #[serde(default = "Threshold::paper")]
        threshold: Threshold,
        /// `val`: steps between the validation evaluations that watch the EP (default 100).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        eval_every: Option<u64>,
        /// `train-clean`: steps the batch accuracy is smoothed over (default: the fewest recent
        /// steps holding 256 predictions).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window: Option<u64>,
        /// `probe`: held-out rows per probe (default 256; fewer if the split has fewer).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        probe_rows: Option<u64>,
        /// `probe`: the most the probe may cost, as a share of the training compute it
        /// interleaves with (default 0.01); the loop measures both and spaces the probes so.
        #[serde(default = "default_probe_budget")]
        probe_budget: f64,
        /// `probe`: a fixed number of steps between probes instead of the budget's (for runs
        /// that must repeat exactly; the measured cost is still reported).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        probe_every: Option<u64>,
    },
}

/// The validation cadence of `monitor = "val"` when `eval_every` is not given.
pub const DEFAULT_VAL_EVERY: u64 = 100;
/// Held-out rows per probe when `probe_rows` is not given.
pub const DEFAULT_PROBE_ROWS: u64 = 256;

fn default_probe_budget() -> f64 {
    0.01
}

impl Threshold {
    /// The paper's: raw accuracy 0.5.
    pub fn paper() -> Threshold {
        Threshold::Raw { value: 0.5 }
    }
}

impl EpEnd {
    /// Ends at `threshold` on the default (`auto`) monitor with every other setting at its
    /// default.
    pub fn accuracy(monitor: Monitor, threshold: Threshold) -> EpEnd {
        EpEnd::Accuracy {
            monitor,
            threshold,
            eval_every: None,
            window: None,
            probe_rows: None,
            probe_budget: default_probe_budget(),
            probe_every: None,
        }
    }

    /// The default: accuracy >= 0.5 on the `auto` monitor.
    pub fn default_accuracy() -> EpEnd {
        EpEnd::accuracy(Monitor::Auto, Threshold::paper())
    }

    /// The monitor watched (none for a fixed length).
    pub fn monitor(&self) -> Option<Monitor> {
        match *self {
            EpEnd::Accuracy { monitor, .. } => Some(monitor),
            _ => None,
        }
    }

    /// Checks the rule, naming the field out of range.
    pub fn validate(&self) -> Result<()> {
        let EpEnd::Accuracy {
            monitor,
            threshold,
            eval_every,
            window,
            probe_rows,
            probe_budget,
            probe_every,
        } = *self
        else {
            return Ok(());
        };
        if eval_every.is_some() && monitor != Monitor::Val {
            return Err(Error::value(
                "ep.eval_every",
                "no eval_every unless monitor = \"val\" (the other monitors choose their own cadence)",
                format!("eval_every with monitor = \"{monitor}\""),
            ));
        }
        for (field, v) in [
            ("ep.eval_every", eval_every),
            ("ep.window", window),
            ("ep.probe_rows", probe_rows),
            ("ep.probe_every", probe_every),
        ] {
            if v == Some(0) {
                return Err(Error::value(field, "at least 1", 0));
            }
        }
        if !(probe_budget > 0.0 && probe_budget <= 1.0) {
            return Err(Error::value("ep.probe_budget", "a share in (0, 1]", probe_budget));
        }
        threshold.validate()
    }
}

/// Where and how the EP ended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpEndInfo {
    /// The first step that is no longer in the EP.
    pub step: u64,
    /// The epoch of that step.
    pub epoch: u32,
    /// The monitored accuracy that ended it (accuracy mode only).
    pub accuracy: Option<f64>,
    /// Accuracy mode: the EP end the last observation known below the threshold stood for; the
    /// crossing lies in `last_below..=step`. None when no observation came before. For
    /// `train-clean`'s window of w steps it is the previous window's oldest step (a rising
    /// accuracy whose window mean was below was below there): `step - w`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_below: Option<u64>,
    /// The binomial standard error of `accuracy` (from the window's or the probe's size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std_error: Option<f64>,
    /// The monitor that ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<Monitor>,
    /// The predictions behind `accuracy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictions: Option<f64>,
}

impl EpEndInfo {
    /// A fixed-length end at `step`.
    fn fixed(step: u64, epoch: u32) -> EpEndInfo {
        EpEndInfo {
            step,
            epoch,
            accuracy: None,
            last_below: None,
            std_error: None,
            monitor: None,
            predictions: None,
        }
    }

    /// The steps the end is known to lie in, both included: exact for a fixed length, from the
    /// last observation below the threshold (or step 0) to the first at or above it otherwise.
    pub fn interval(&self) -> (u64, u64) {
        match self.accuracy {
            None => (self.step, self.step),
            Some(_) => (self.last_below.unwrap_or(0), self.step),
        }
    }
}

impl fmt::Display for EpEndInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (lo, hi) = self.interval();
        write!(f, "EP ended at step {} (epoch {})", self.step, self.epoch)?;
        if lo < hi {
            write!(f, ", crossing within steps {lo}..{hi}")?;
        }
        if let Some(a) = self.accuracy {
            let m = self.monitor.map(|m| format!("{m} ")).unwrap_or_default();
            write!(f, " with {m}accuracy {a:.4}")?;
            if let Some(se) = self.std_error {
                write!(f, " ± {se:.4}")?;
            }
        }
        Ok(())
    }
}

/// The latched phase state; serialisable so a resumed run continues in the same phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseController {
    end: EpEnd,
    ended: Option<EpEndInfo>,
    #[serde(default)]
    watch: MonitorState,
}

impl PhaseController {
    /// A controller in the EP, ending by `end` (validated).
    pub fn new(end: EpEnd) -> Result<PhaseController> {
        end.validate()?;
        Ok(PhaseController {
            end,
            ended: None,
            watch: MonitorState::default(),
        })
    }

    /// This controller with an `auto` monitor made concrete for a strategy that mixes its EP
    /// batches (`mixes_in_ep`) or not.
    pub fn resolved(mut self, mixes_in_ep: bool) -> PhaseController {
        if let EpEnd::Accuracy { monitor, .. } = &mut self.end {
            *monitor = monitor.resolve(mixes_in_ep);
        }
        self
    }

    /// How the EP ends.
    pub fn end_rule(&self) -> &EpEnd {
        &self.end
    }

    /// Where the EP ended, once it has.
    pub fn ended(&self) -> Option<EpEndInfo> {
        self.ended
    }

    /// The monitor still to be fed: the accuracy rule's while the EP lasts, else none.
    pub fn watching(&self) -> Option<Monitor> {
        self.ended.is_none().then(|| self.end.monitor()).flatten()
    }

    /// The latest value the monitor observed (the smoothed window, a probe, a validation).
    pub fn latest(&self) -> Option<f64> {
        self.watch.latest
    }

    /// Whether `step` (in `epoch`) is inside the EP. Fixed-length EPs latch their end here.
    pub fn in_ep(&mut self, step: u64, epoch: u32) -> bool {
        if self.ended.is_some() {
            return false;
        }
        let over = match self.end {
            EpEnd::Epochs { epochs } => epoch >= epochs,
            EpEnd::Steps { steps } => step >= steps,
            EpEnd::Accuracy { .. } => false,
        };
        if over {
            self.ended = Some(EpEndInfo::fixed(step, epoch));
        }
        !over
    }

    /// Whether a validation evaluation for the `val` monitor is due after `step`.
    pub fn eval_due(&self, step: u64) -> bool {
        match self.end {
            EpEnd::Accuracy {
                monitor: Monitor::Val,
                eval_every,
                ..
            } => self.ended.is_none() && (step + 1) % eval_every.unwrap_or(DEFAULT_VAL_EVERY) == 0,
            _ => false,
        }
    }

    /// Whether the `probe` monitor's evaluation is due after `step` (as planned by
    /// [`PhaseController::plan_probe`]).
    pub fn probe_due(&self, step: u64) -> bool {
        self.watching() == Some(Monitor::Probe) && self.watch.next_probe == Some(step)
    }

    /// The step after which the next probe runs, once planned.
    pub fn next_probe(&self) -> Option<u64> {
        self.watch.next_probe
    }

    /// Plans the next probe after `step`.
    pub fn plan_probe(&mut self, step: u64) {
        self.watch.next_probe = Some(step);
    }

    /// Feeds an accuracy measured after `step` without its counts (no standard error).
    /// Returns the end when this observation ended the EP. Other monitors are ignored.
    pub fn observe(&mut self, monitor: Monitor, accuracy: f64, step: u64, epoch: u32) -> Option<EpEndInfo> {
        let m = Measurement {
            accuracy,
            predictions: None,
        };
        self.decide(monitor, m, step, epoch)
    }

    /// Feeds `correct` of `predictions` measured after `step` (summed over every process):
    /// one step's training batch for `train-clean` (it joins the window, which decides once
    /// full), one evaluation for `val` and `probe`. Returns the end when this ended the EP.
    pub fn observe_counts(
        &mut self,
        monitor: Monitor,
        correct: f64,
        predictions: f64,
        step: u64,
        epoch: u32,
    ) -> Option<EpEndInfo> {
        if self.watching() != Some(monitor) || predictions <= 0.0 {
            return None;
        }
        let m = match self.end {
            EpEnd::Accuracy { window, .. } if monitor == Monitor::TrainClean => {
                self.watch.push(correct, predictions, window)?
            }
            _ => Measurement::from_counts(correct, predictions),
        };
        self.decide(monitor, m, step, epoch)
    }

    /// One observation of the watched monitor after `step`: below the threshold it becomes the
    /// interval's lower end, at or above it ends the EP at `step + 1`.
    fn decide(&mut self, monitor: Monitor, m: Measurement, step: u64, epoch: u32) -> Option<EpEndInfo> {
        if self.watching() != Some(monitor) {
            return None;
        }
        let EpEnd::Accuracy { threshold, .. } = self.end else {
            return None;
        };
        self.watch.latest = Some(m.accuracy);
        if !threshold.reached(m.accuracy) {
            self.watch.last_below = Some(step + 1);
            return None;
        }
        // A window's mean lags its newest step: the previous (lower) window vouches for its
        // oldest step only.
        let last_below = match monitor {
            Monitor::TrainClean if !self.watch.window.is_empty() => {
                let span = self.watch.window.len() as u64;
                self.watch.last_below.map(|_| (step + 1).saturating_sub(span))
            }
            _ => self.watch.last_below,
        };
        let info = EpEndInfo {
            step: step + 1,
            epoch,
            accuracy: Some(m.accuracy),
            last_below,
            std_error: m.std_error(),
            monitor: Some(monitor),
            predictions: m.predictions,
        };
        self.ended = Some(info);
        self.watch.window.clear();
        self.watch.next_probe = None;
        Some(info)
    }
}

impl fmt::Display for EpEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EpEnd::Epochs { epochs } => write!(f, "first {epochs} epochs"),
            EpEnd::Steps { steps } => write!(f, "first {steps} steps"),
            EpEnd::Accuracy {
                monitor,
                threshold,
                eval_every,
                window,
                probe_rows,
                probe_budget,
                probe_every,
            } => {
                match threshold {
                    Threshold::Raw { value } => write!(f, "until {monitor} accuracy >= {value}")?,
                    Threshold::ChanceNormalized { value, classes } => write!(
                        f,
                        "until chance-normalised {monitor} accuracy >= {value} ({classes} classes)"
                    )?,
                }
                match monitor {
                    Monitor::Val => write!(f, ", checked every {} steps", eval_every.unwrap_or(DEFAULT_VAL_EVERY)),
                    Monitor::TrainClean => match window {
                        Some(w) => write!(f, ", each step over the last {w} batches"),
                        None => write!(f, ", each step over the last batches holding 256 predictions"),
                    },
                    Monitor::Probe => {
                        let rows = probe_rows.unwrap_or(DEFAULT_PROBE_ROWS);
                        match probe_every {
                            Some(k) => write!(f, ", {rows} held-out rows every {k} steps"),
                            None => write!(
                                f,
                                ", {rows} held-out rows at most {:.1}% of the training compute",
                                100.0 * probe_budget
                            ),
                        }
                    }
                    Monitor::Auto => Ok(()),
                }
            }
        }
    }
}

impl fmt::Display for PhaseController {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ended {
            None => write!(f, "in EP ({})", self.end),
            Some(info) => write!(f, "{info}"),
        }
    }
}
