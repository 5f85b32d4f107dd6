//! What the phase controller watches to end the Enlightenment Period, and how precisely.
//!
//! Two cheap sources and one expensive one:
//! - `train-clean`: the accuracy of each training batch on its own labels, which the loss kernel
//!   counts anyway (no extra forward pass), smoothed over a window of recent steps. Unbiased only
//!   when the EP's batches are not mixed (Mixup Pause, High-Loss Removal, vanilla).
//! - `probe`: a fixed, seeded subset of held-out rows evaluated in eval mode every k steps during
//!   the EP, k chosen by the training loop so the probe costs a set share of the training compute.
//! - `val`: the full validation split every `eval_every` steps (the ground truth, and its cost).
//!
//! `auto` (the default) is `train-clean` when the EP's batches are not mixed, else `probe`.
//! Every source reports counts, so the controller knows the binomial standard error of the value
//! that ended the EP.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Which accuracy the controller watches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Monitor {
    /// `train-clean` when the EP's batches are not mixed, else `probe` (resolved by `Schedule`).
    #[default]
    Auto,
    /// Accuracy on the whole validation split, evaluated every `eval_every` steps.
    Val,
    /// Accuracy on each training batch's own (first) labels, from the loss kernel's counts,
    /// smoothed over `window` steps.
    TrainClean,
    /// Accuracy on a fixed seeded subset of held-out rows, evaluated in eval mode when the loop's
    /// cost budget allows ([`crate::strategy::PhaseController::probe_due`]).
    Probe,
}

impl Monitor {
    /// `Auto` made concrete for a strategy that mixes its EP batches (`mixes_in_ep`) or not;
    /// other monitors stay as chosen.
    pub fn resolve(self, mixes_in_ep: bool) -> Monitor {
        match self {
            Monitor::Auto if mixes_in_ep => Monitor::Probe,
            Monitor::Auto => Monitor::TrainClean,
            m => m,
        }
    }

    /// The name as the configuration spells it.
    pub fn name(self) -> &'static str {
        match self {
            Monitor::Auto => "auto",
            Monitor::Val => "val",
            Monitor::TrainClean => "train-clean",
            Monitor::Probe => "probe",
        }
    }
}

impl std::fmt::Display for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Predictions the default `train-clean` window holds at least: a binomial standard error of at
/// most 0.031 at 50% accuracy, over 2 steps of a batch of 128.
pub const DEFAULT_WINDOW_PREDICTIONS: f64 = 256.0;

/// The binomial standard error of an accuracy of `correct` out of `predictions`.
pub fn binomial_se(correct: f64, predictions: f64) -> f64 {
    if predictions <= 0.0 {
        return f64::NAN;
    }
    let p = correct / predictions;
    (p * (1.0 - p) / predictions).sqrt()
}

/// A measured accuracy with the counts behind it (when known).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// The accuracy, a share of predictions.
    pub accuracy: f64,
    /// How many predictions it counts, when known.
    pub predictions: Option<f64>,
}

impl Measurement {
    /// `correct` out of `predictions`.
    pub fn from_counts(correct: f64, predictions: f64) -> Measurement {
        Measurement {
            accuracy: correct / predictions,
            predictions: Some(predictions),
        }
    }

    /// The binomial standard error, when the predictions are known.
    pub fn std_error(&self) -> Option<f64> {
        self.predictions
            .map(|n| binomial_se(self.accuracy * n, n))
            .filter(|s| s.is_finite())
    }
}

/// What the controller remembers between observations; serialised with it so a resumed run
/// continues with the same window, interval and probe plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MonitorState {
    /// `train-clean`: the recent steps' (correct, predictions), oldest first.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub window: VecDeque<(f64, f64)>,
    /// The EP end the last observation below the threshold stood for (its step + 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_below: Option<u64>,
    /// The latest observed value (for logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<f64>,
    /// `probe`: the step after which the next probe runs, once the loop has planned it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_probe: Option<u64>,
}

impl MonitorState {
    /// Adds one step's counts to the `train-clean` window of `steps` steps (None: the fewest
    /// recent steps holding [`DEFAULT_WINDOW_PREDICTIONS`]); returns the window's measurement
    /// once it is full.
    pub fn push(&mut self, correct: f64, predictions: f64, steps: Option<u64>) -> Option<Measurement> {
        self.window.push_back((correct, predictions));
        let total = |w: &VecDeque<(f64, f64)>| w.iter().map(|c| c.1).sum::<f64>();
        let full = match steps {
            Some(n) => {
                while self.window.len() as u64 > n {
                    self.window.pop_front();
                }
                self.window.len() as u64 == n
            }
            None => {
                while self.window.len() > 1 && total(&self.window) - self.window[0].1 >= DEFAULT_WINDOW_PREDICTIONS {
                    self.window.pop_front();
                }
                total(&self.window) >= DEFAULT_WINDOW_PREDICTIONS
            }
        };
        let (c, n) = self.window.iter().fold((0.0, 0.0), |a, w| (a.0 + w.0, a.1 + w.1));
        (full && n > 0.0).then(|| Measurement::from_counts(c, n))
    }
}
