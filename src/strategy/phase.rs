//! The Enlightenment Period (EP) controller: when does the first phase of training end?
//!
//! The EP ends at a fixed epoch or step, or at the first evaluation at which a monitored accuracy
//! reaches a threshold (raw, or chance-normalised so that it means the same for 2 or 1000
//! classes). Once ended it stays ended (latched), and the step, epoch and accuracy at the end are
//! kept for logs and reports.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which accuracy the controller watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Monitor {
    /// Accuracy on a held-out split, evaluated every `eval_every` steps.
    Val,
    /// Accuracy on each batch's un-mixed labels, from the loss kernel's correct-prediction counts.
    TrainClean,
}

/// When an accuracy counts as "reached".
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", deny_unknown_fields)]
pub enum Threshold {
    /// accuracy >= value (the paper's ~50%).
    Raw { value: f64 },
    /// (accuracy - 1/K) / (1 - 1/K) >= value: 0 is chance, 1 is perfect, for any class count K.
    ChanceNormalized { value: f64, classes: u32 },
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

    pub fn value(&self) -> f64 {
        match *self {
            Threshold::Raw { value } | Threshold::ChanceNormalized { value, .. } => value,
        }
    }

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
    Epochs { epochs: u32 },
    /// After this many optimiser steps.
    Steps { steps: u64 },
    /// At the first evaluation where the monitored accuracy reaches the threshold.
    Accuracy {
        monitor: Monitor,
        threshold: Threshold,
        eval_every: u64,
    },
}

impl EpEnd {
    /// The default of DESIGN.md: validation accuracy >= 0.5, evaluated every 100 steps.
    pub fn default_accuracy() -> EpEnd {
        EpEnd::Accuracy {
            monitor: Monitor::Val,
            threshold: Threshold::Raw { value: 0.5 },
            eval_every: 100,
        }
    }

    pub fn validate(&self) -> Result<()> {
        match *self {
            EpEnd::Epochs { .. } | EpEnd::Steps { .. } => Ok(()),
            EpEnd::Accuracy {
                threshold, eval_every, ..
            } => {
                if eval_every == 0 {
                    return Err(Error::value("ep.eval_every", "an evaluation interval >= 1 step", 0));
                }
                threshold.validate()
            }
        }
    }
}

/// Where and how the EP ended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpEndInfo {
    /// The first step that is no longer in the EP.
    pub step: u64,
    pub epoch: u32,
    /// The monitored accuracy that ended it (accuracy mode only).
    pub accuracy: Option<f64>,
}

impl fmt::Display for EpEndInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EP ended at step {} (epoch {})", self.step, self.epoch)?;
        if let Some(a) = self.accuracy {
            write!(f, " with accuracy {a:.4}")?;
        }
        Ok(())
    }
}

/// The latched phase state; serialisable so a resumed run continues in the same phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseController {
    end: EpEnd,
    ended: Option<EpEndInfo>,
}

impl PhaseController {
    pub fn new(end: EpEnd) -> Result<PhaseController> {
        end.validate()?;
        Ok(PhaseController { end, ended: None })
    }

    pub fn end_rule(&self) -> &EpEnd {
        &self.end
    }

    /// Where the EP ended, once it has.
    pub fn ended(&self) -> Option<EpEndInfo> {
        self.ended
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
            self.ended = Some(EpEndInfo {
                step,
                epoch,
                accuracy: None,
            });
        }
        !over
    }

    /// Whether an evaluation of the monitored accuracy is due after `step`.
    pub fn eval_due(&self, step: u64) -> bool {
        match self.end {
            EpEnd::Accuracy { eval_every, .. } => self.ended.is_none() && (step + 1) % eval_every == 0,
            _ => false,
        }
    }

    /// Feeds one evaluation made after `step` (so the EP, if it ends, ends at `step + 1`).
    /// Returns the end when this observation ended the EP. Other monitors are ignored.
    pub fn observe(&mut self, monitor: Monitor, accuracy: f64, step: u64, epoch: u32) -> Option<EpEndInfo> {
        if self.ended.is_some() {
            return None;
        }
        let EpEnd::Accuracy {
            monitor: watched,
            threshold,
            ..
        } = self.end
        else {
            return None;
        };
        if watched != monitor || !threshold.reached(accuracy) {
            return None;
        }
        let info = EpEndInfo {
            step: step + 1,
            epoch,
            accuracy: Some(accuracy),
        };
        self.ended = Some(info);
        Some(info)
    }
}

impl fmt::Display for EpEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EpEnd::Epochs { epochs } => write!(f, "first {epochs} epochs"),
            EpEnd::Steps { steps } => write!(f, "first {steps} steps"),
            EpEnd::Accuracy {
                monitor,
                threshold,
                eval_every,
            } => {
                let m = match monitor {
                    Monitor::Val => "val",
                    Monitor::TrainClean => "train-clean",
                };
                match threshold {
                    Threshold::Raw { value } => write!(f, "until {m} accuracy >= {value}")?,
                    Threshold::ChanceNormalized { value, classes } => {
                        write!(f, "until chance-normalised {m} accuracy >= {value} ({classes} classes)")?
                    }
                }
                write!(f, ", checked every {eval_every} steps")
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
