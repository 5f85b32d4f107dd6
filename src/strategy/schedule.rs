//! The paper's strategies as schedules over the phase controller: one `plan` per batch.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::phase::{EpEndInfo, Monitor, PhaseController};
use super::plan::BatchPlan;
use crate::error::{Error, Result};
use crate::ops::mixup::{LambdaMode, MixKind, MixSpec, PairingMode};
use crate::rng::SeededRng;

/// How the Mixup alpha behaves around the EP.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "policy", deny_unknown_fields)]
pub enum MixPolicy {
    /// No mixing at any time.
    Vanilla,
    /// The constant-alpha baseline.
    Constant {
        /// Mixup alpha throughout.
        alpha: f64,
    },
    /// Mixup Pause: no mixing in the EP, `alpha` after.
    Pause {
        /// Mixup alpha after the EP.
        alpha: f64,
    },
    /// Alpha Boost: `boosted` in the EP, `alpha` after.
    Boost {
        /// Mixup alpha after the EP.
        alpha: f64,
        /// Mixup alpha in the EP.
        boosted: f64,
    },
}

impl MixPolicy {
    /// The alpha for a step inside or outside the EP.
    pub fn alpha(&self, in_ep: bool) -> f64 {
        match *self {
            MixPolicy::Vanilla => 0.0,
            MixPolicy::Constant { alpha } => alpha,
            MixPolicy::Pause { alpha } => {
                if in_ep {
                    0.0
                } else {
                    alpha
                }
            }
            MixPolicy::Boost { alpha, boosted } => {
                if in_ep {
                    boosted
                } else {
                    alpha
                }
            }
        }
    }

    fn validate(&self) -> Result<()> {
        let check = |field: &'static str, a: f64| {
            if a.is_finite() && a >= 0.0 {
                Ok(())
            } else {
                Err(Error::value(field, "a finite alpha >= 0", a))
            }
        };
        match *self {
            MixPolicy::Vanilla => Ok(()),
            MixPolicy::Constant { alpha } | MixPolicy::Pause { alpha } => check("strategy.alpha", alpha),
            MixPolicy::Boost { alpha, boosted } => {
                check("strategy.alpha", alpha)?;
                check("strategy.boost", boosted)
            }
        }
    }
}

/// A strategy: the alpha policy, optional CutMix switching, and High-Loss Removal in the EP.
/// Compositions (e.g. Mixup Pause with High-Loss Removal) are a policy plus a drop share.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Strategy {
    /// The alpha in and after the EP.
    pub policy: MixPolicy,
    /// Share of each EP batch's highest losses to drop (0 = off; never applied after the EP).
    pub drop_share: f64,
    /// Probability of CutMix instead of Mixup for a mixed batch (timm's switch_prob).
    pub cutmix_prob: f64,
    /// CutMix's own alpha (scaled by the policy like Mixup's: paused in the EP by Pause).
    pub cutmix_alpha: f64,
    /// One lambda per batch or per sample.
    pub lambda: LambdaMode,
    /// How partners are chosen.
    pub pairing: PairingMode,
}

impl Strategy {
    fn with_policy(policy: MixPolicy) -> Strategy {
        Strategy {
            policy,
            drop_share: 0.0,
            cutmix_prob: 0.0,
            cutmix_alpha: 1.0,
            lambda: LambdaMode::Batch,
            pairing: PairingMode::Permutation,
        }
    }

    /// No mixing, no removal.
    pub fn vanilla() -> Strategy {
        Self::with_policy(MixPolicy::Vanilla)
    }

    /// Mixup with a constant `alpha`.
    pub fn mixup(alpha: f64) -> Strategy {
        Self::with_policy(MixPolicy::Constant { alpha })
    }

    /// Mixup Pause: no mixing in the EP, `alpha` after.
    pub fn mixup_pause(alpha: f64) -> Strategy {
        Self::with_policy(MixPolicy::Pause { alpha })
    }

    /// Alpha Boost with `factor * alpha` in the EP (the default factor is 2).
    pub fn alpha_boost(alpha: f64, factor: f64) -> Strategy {
        Self::with_policy(MixPolicy::Boost {
            alpha,
            boosted: alpha * factor,
        })
    }

    /// High-Loss Removal alone (no mixing): drop `share` of each EP batch's highest losses.
    pub fn high_loss_removal(share: f64) -> Strategy {
        Strategy {
            drop_share: share,
            ..Self::vanilla()
        }
    }

    /// This strategy plus High-Loss Removal in the EP.
    pub fn with_removal(self, share: f64) -> Strategy {
        Strategy {
            drop_share: share,
            ..self
        }
    }

    /// Whether the EP's batches are mixed (then their accuracy on the first labels is biased,
    /// and the `auto` monitor probes held-out rows instead).
    pub fn mixes_in_ep(&self) -> bool {
        self.policy.alpha(true) > 0.0
    }

    /// Checks every value, naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        self.policy.validate()?;
        if !(0.0..1.0).contains(&self.drop_share) {
            return Err(Error::value(
                "strategy.drop_share",
                "a share in [0, 1)",
                self.drop_share,
            ));
        }
        if !(0.0..=1.0).contains(&self.cutmix_prob) {
            return Err(Error::value(
                "strategy.cutmix_prob",
                "a probability in [0, 1]",
                self.cutmix_prob,
            ));
        }
        if !(self.cutmix_alpha.is_finite() && self.cutmix_alpha > 0.0) {
            return Err(Error::value(
                "strategy.cutmix_alpha",
                "a finite alpha > 0",
                self.cutmix_alpha,
            ));
        }
        Ok(())
    }

    /// The plan of one step, given whether it is in the EP.
    pub fn plan(&self, step: u64, in_ep: bool, rng: &mut SeededRng) -> BatchPlan {
        let alpha = self.policy.alpha(in_ep);
        // The switch draw happens only for mixed batches, so pausing consumes no randomness.
        let cutmix = alpha > 0.0 && self.cutmix_prob > 0.0 && rng.uniform() < self.cutmix_prob;
        let base = match self.policy {
            MixPolicy::Vanilla => 0.0,
            MixPolicy::Constant { alpha } | MixPolicy::Pause { alpha } | MixPolicy::Boost { alpha, .. } => alpha,
        };
        let (kind, alpha) = if cutmix {
            (MixKind::CutMix, self.cutmix_alpha * alpha / base)
        } else {
            (MixKind::Mixup, alpha)
        };
        BatchPlan {
            step,
            in_ep,
            mix: MixSpec {
                kind,
                alpha,
                lambda: self.lambda,
                pairing: self.pairing,
            },
            drop_share: if in_ep { self.drop_share } else { 0.0 },
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.policy {
            MixPolicy::Vanilla if self.drop_share > 0.0 => write!(f, "high-loss-removal")?,
            MixPolicy::Vanilla => write!(f, "vanilla")?,
            MixPolicy::Constant { alpha } => write!(f, "mixup(alpha={alpha})")?,
            MixPolicy::Pause { alpha } => write!(f, "mixup-pause(alpha={alpha})")?,
            MixPolicy::Boost { alpha, boosted } => write!(f, "alpha-boost(alpha={alpha}, EP alpha={boosted})")?,
        }
        if self.drop_share > 0.0 {
            write!(f, " + drop {:.1}% in EP", 100.0 * self.drop_share)?;
        }
        if self.cutmix_prob > 0.0 {
            write!(f, " + cutmix p={}", self.cutmix_prob)?;
        }
        Ok(())
    }
}

/// A strategy driven by the phase controller: the object a training loop holds.
/// Serialisable, so checkpoints carry the latched phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    strategy: Strategy,
    phase: PhaseController,
}

impl Schedule {
    /// A schedule of a validated `strategy`, phased by `phase`.
    pub fn new(strategy: Strategy, phase: PhaseController) -> Result<Schedule> {
        strategy.validate()?;
        let phase = phase.resolved(strategy.mixes_in_ep());
        Ok(Schedule { strategy, phase })
    }

    /// The strategy.
    pub fn strategy(&self) -> &Strategy {
        &self.strategy
    }

    /// The phase controller (where the EP ended, once it has).
    pub fn phase(&self) -> &PhaseController {
        &self.phase
    }

    /// What batch `step` (in `epoch`) gets. Call once per step, in order.
    pub fn plan(&mut self, step: u64, epoch: u32, rng: &mut SeededRng) -> BatchPlan {
        let in_ep = self.phase.in_ep(step, epoch);
        self.strategy.plan(step, in_ep, rng)
    }

    /// Whether the loop should evaluate the validation split for the `val` monitor after `step`.
    pub fn eval_due(&self, step: u64) -> bool {
        self.phase.eval_due(step)
    }

    /// Whether the loop should evaluate the probe for the `probe` monitor after `step`.
    pub fn probe_due(&self, step: u64) -> bool {
        self.phase.probe_due(step)
    }

    /// The monitor to feed while the EP lasts (`auto` already resolved); none after it.
    pub fn watching(&self) -> Option<Monitor> {
        self.phase.watching()
    }

    /// Plans the next probe after `step`.
    pub fn plan_probe(&mut self, step: u64) {
        self.phase.plan_probe(step)
    }

    /// Feeds an accuracy measured after `step`; returns the EP end if this ended it.
    pub fn observe(&mut self, monitor: Monitor, accuracy: f64, step: u64, epoch: u32) -> Option<EpEndInfo> {
        self.phase.observe(monitor, accuracy, step, epoch)
    }

    /// Feeds `correct` of `predictions` measured after `step` (see
    /// [`PhaseController::observe_counts`]); returns the EP end if this ended it.
    pub fn observe_counts(
        &mut self,
        monitor: Monitor,
        correct: f64,
        predictions: f64,
        step: u64,
        epoch: u32,
    ) -> Option<EpEndInfo> {
        self.phase.observe_counts(monitor, correct, predictions, step, epoch)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; EP: {}", self.strategy, self.phase.end_rule())?;
        if let Some(end) = self.phase.ended() {
            write!(f, "; {end}")?;
        }
        Ok(())
    }
}
