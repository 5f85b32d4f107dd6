//! `Auto`: recommends a strategy from the scale of the problem, following the paper's rule.
//!
//! - Mixup does not apply (time series, language models, regression) -> High-Loss Removal.
//! - Small data or a small model -> Mixup Pause (gradient interference dominates).
//! - Large data, and the model underfits early -> Alpha Boost (activation revival dominates).
//! - Large data, not underfitting -> Mixup Pause (the safe default; the paper shows Alpha Boost
//!   only for ViT-T on full ImageNet-1K).
//!
//! The paper gives no numbers for "small" and "large"; the defaults below put its own settings on
//! the side it reports (CIFAR-10, Tiny-ImageNet with ViT-S or PreActResNet50 -> Mixup Pause;
//! ViT-T on ImageNet-1K -> Alpha Boost). Override them with [`AutoThresholds`].

use std::fmt;

use serde::{Deserialize, Serialize};

use super::schedule::Strategy;

/// What `Auto` knows about the problem.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProblemScale {
    /// Training samples per epoch.
    pub train_samples: u64,
    /// The model's trainable parameters.
    pub parameters: u64,
    /// Whether input Mixup makes sense (images, features); false for sequences of tokens,
    /// forecasting targets and the like.
    pub mixup_applicable: bool,
    /// Early accuracies (train, val) after a short probe, if measured: a model whose train
    /// accuracy is no better than its validation accuracy is not fitting the data yet.
    pub early_accuracy: Option<(f64, f64)>,
}

/// The cut-offs `Auto` uses; documented defaults, overridable.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AutoThresholds {
    /// Fewer training samples than this is "small data" (default 500,000: Tiny-ImageNet's
    /// 100k is small, ImageNet-1K's 1.28M is large).
    pub small_data: u64,
    /// Fewer parameters than this is "small model" (default 1,000,000).
    pub small_model: u64,
    /// Underfitting: train accuracy - val accuracy below this gap (default 0.02).
    pub underfit_gap: f64,
    /// The Mixup alpha of the recommended strategy (default 0.2).
    pub alpha: f64,
    /// Alpha Boost's factor on alpha in the EP (default 2).
    pub boost_factor: f64,
    /// High-Loss Removal's share where it is recommended (default 0.1).
    pub drop_share: f64,
}

impl Default for AutoThresholds {
    fn default() -> Self {
        AutoThresholds {
            small_data: 500_000,
            small_model: 1_000_000,
            underfit_gap: 0.02,
            alpha: 0.2,
            boost_factor: 2.0,
            drop_share: 0.1,
        }
    }
}

/// A recommended strategy and the reason, for logs.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// The strategy to train with.
    pub strategy: Strategy,
    /// Why, in one sentence.
    pub reason: String,
}

impl fmt::Display for Recommendation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} — {}", self.strategy, self.reason)
    }
}

/// The strategy the paper's findings suggest for a problem of this scale (see the module docs).
pub fn recommend(scale: &ProblemScale, t: &AutoThresholds) -> Recommendation {
    if !scale.mixup_applicable {
        return Recommendation {
            strategy: Strategy::high_loss_removal(t.drop_share),
            reason: "Mixup does not apply to this task, so the EP drops its highest losses instead".into(),
        };
    }
    let small_data = scale.train_samples < t.small_data;
    let small_model = scale.parameters < t.small_model;
    if small_data || small_model {
        let why = match (small_data, small_model) {
            (true, true) => format!(
                "{} samples < {} and {} parameters < {}",
                scale.train_samples, t.small_data, scale.parameters, t.small_model
            ),
            (true, false) => format!("{} samples < {}", scale.train_samples, t.small_data),
            _ => format!("{} parameters < {}", scale.parameters, t.small_model),
        };
        return Recommendation {
            strategy: Strategy::mixup_pause(t.alpha),
            reason: format!("small scale ({why}): gradient interference dominates, pause Mixup in the EP"),
        };
    }
    match scale.early_accuracy {
        Some((train, val)) if train - val < t.underfit_gap => Recommendation {
            strategy: Strategy::alpha_boost(t.alpha, t.boost_factor),
            reason: format!(
                "large scale and underfitting (train {train:.3} - val {val:.3} < {}): activation revival dominates, boost alpha in the EP",
                t.underfit_gap
            ),
        },
        Some((train, val)) => Recommendation {
            strategy: Strategy::mixup_pause(t.alpha),
            reason: format!("large scale, not underfitting (train {train:.3} - val {val:.3} >= {}): pause Mixup in the EP", t.underfit_gap),
        },
        None => Recommendation {
            strategy: Strategy::mixup_pause(t.alpha),
            reason: "large scale, no early accuracies to judge underfitting: pause Mixup in the EP (the safe default)".into(),
        },
    }
}
