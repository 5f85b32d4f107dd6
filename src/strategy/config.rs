//! The strategy section of a TOML configuration, validated on load; every error names its field.
//!
//! ```toml
//! [strategy]
//! kind = "mixup-pause"     # vanilla | mixup | mixup-pause | alpha-boost | high-loss-removal
//! alpha = 0.2
//! boost = 2.0              # alpha-boost: EP alpha = boost * alpha
//! drop_share = 0.1         # high-loss-removal's share; with another kind it composes
//! scope = "local"          # data parallelism: rank each process's batch (local) or the global
//!                          # batch of all processes (global: one process's removal, exactly)
//! cutmix_prob = 0.0        # chance that a mixed batch uses CutMix instead
//! cutmix_alpha = 1.0
//! lambda = "batch"         # batch | per-sample
//! pairing = "permutation"  # permutation | flip | roll
//!
//! [strategy.ep]
//! end = "accuracy"         # epochs | steps | accuracy (the default, with what follows)
//! threshold = { kind = "raw", value = 0.5 }   # or { kind = "chance-normalized", value = 0.45, classes = 10 }
//! monitor = "auto"         # auto: train-clean when the EP's batches are not mixed, else probe
//!                          # train-clean: each training batch's own-label accuracy (no extra
//!                          #   forward pass), smoothed over `window` steps (default: >= 256 rows)
//!                          # probe: `probe_rows` (256) seeded held-out rows in eval mode, spaced
//!                          #   so they cost at most `probe_budget` (0.01) of the training compute
//!                          # val: the whole validation split every `eval_every` (100) steps
//! ```

use serde::{Deserialize, Serialize};

use super::phase::{EpEnd, PhaseController};
use super::schedule::{MixPolicy, Schedule, Strategy};
use crate::error::{Error, Result};
use crate::ops::mixup::{LambdaMode, PairingMode};

/// The strategies a configuration names (`kind = "mixup-pause"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    /// No mixing, no removal.
    Vanilla,
    /// Mixup with a constant alpha.
    Mixup,
    /// No Mixup in the EP, Mixup after.
    MixupPause,
    /// A boosted alpha in the EP, the base alpha after.
    AlphaBoost,
    /// No mixing; the EP drops each batch's highest losses.
    HighLossRemoval,
}

impl StrategyKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [StrategyKind; 5] = [
        StrategyKind::Vanilla,
        StrategyKind::Mixup,
        StrategyKind::MixupPause,
        StrategyKind::AlphaBoost,
        StrategyKind::HighLossRemoval,
    ];

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::Vanilla => "vanilla",
            StrategyKind::Mixup => "mixup",
            StrategyKind::MixupPause => "mixup-pause",
            StrategyKind::AlphaBoost => "alpha-boost",
            StrategyKind::HighLossRemoval => "high-loss-removal",
        }
    }
}

impl std::str::FromStr for StrategyKind {
    type Err = Error;

    /// A strategy by its configuration name (`mixup-pause`, ...).
    fn from_str(name: &str) -> Result<StrategyKind> {
        StrategyKind::ALL
            .into_iter()
            .find(|k| k.name() == name.trim())
            .ok_or_else(|| {
                let all: Vec<&str> = StrategyKind::ALL.iter().map(|k| k.name()).collect();
                Error::value("strategy", format!("one of {all:?}"), name)
            })
    }
}

/// Which losses High-Loss Removal ranks when several processes train together: each process's
/// own batch, or the global batch of all of them (the rows one process would remove from the
/// concatenated batch). One process has one batch, and both mean the same.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RemovalScope {
    /// Each process ranks its own batch.
    #[default]
    Local,
    /// The global batch of all processes is ranked.
    Global,
}

impl RemovalScope {
    fn is_local(&self) -> bool {
        *self == RemovalScope::Local
    }
}

fn default_alpha() -> f64 {
    0.2
}
fn default_boost() -> f64 {
    2.0
}
fn default_cutmix_alpha() -> f64 {
    1.0
}
fn default_lambda() -> LambdaMode {
    LambdaMode::Batch
}
fn default_pairing() -> PairingMode {
    PairingMode::Permutation
}
fn default_ep() -> EpEnd {
    EpEnd::default_accuracy()
}

/// `[strategy]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategyConfig {
    /// Which strategy.
    pub kind: StrategyKind,
    /// Mixup alpha (after the EP for Mixup Pause; the base for Alpha Boost). Default 0.2.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Alpha Boost's factor on alpha in the EP. Default 2.
    #[serde(default = "default_boost")]
    pub boost: f64,
    /// None: 0.1 for high-loss-removal, off for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_share: Option<f64>,
    /// Which losses High-Loss Removal ranks with several processes. Default local.
    #[serde(default, skip_serializing_if = "RemovalScope::is_local")]
    pub scope: RemovalScope,
    /// Probability of CutMix instead of Mixup for a mixed batch. Default 0.
    #[serde(default)]
    pub cutmix_prob: f64,
    /// CutMix's own alpha. Default 1.
    #[serde(default = "default_cutmix_alpha")]
    pub cutmix_alpha: f64,
    /// One lambda per batch or per sample. Default per batch.
    #[serde(default = "default_lambda")]
    pub lambda: LambdaMode,
    /// How partners are chosen. Default a random permutation.
    #[serde(default = "default_pairing")]
    pub pairing: PairingMode,
    /// How the EP ends. Default: validation accuracy 0.5, checked every 100 steps.
    #[serde(default = "default_ep")]
    pub ep: EpEnd,
}

impl StrategyConfig {
    /// A config of `kind` with every other field at its default.
    pub fn of_kind(kind: StrategyKind) -> StrategyConfig {
        StrategyConfig {
            kind,
            alpha: default_alpha(),
            boost: default_boost(),
            drop_share: None,
            scope: RemovalScope::Local,
            cutmix_prob: 0.0,
            cutmix_alpha: default_cutmix_alpha(),
            lambda: default_lambda(),
            pairing: default_pairing(),
            ep: default_ep(),
        }
    }

    /// Parses `[strategy]` from a TOML document (the whole file, other tables ignored).
    pub fn from_toml(text: &str) -> Result<StrategyConfig> {
        #[derive(Deserialize)]
        struct Doc {
            strategy: StrategyConfig,
        }
        let doc: Doc = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        doc.strategy.validate()?;
        Ok(doc.strategy)
    }

    /// The `[strategy]` table as TOML.
    pub fn to_toml(&self) -> Result<String> {
        #[derive(Serialize)]
        struct Doc<'a> {
            strategy: &'a StrategyConfig,
        }
        toml::to_string(&Doc { strategy: self }).map_err(|e| Error::Config(e.to_string()))
    }

    /// The strategy this section describes.
    pub fn strategy(&self) -> Strategy {
        let policy = match self.kind {
            StrategyKind::Vanilla | StrategyKind::HighLossRemoval => MixPolicy::Vanilla,
            StrategyKind::Mixup => MixPolicy::Constant { alpha: self.alpha },
            StrategyKind::MixupPause => MixPolicy::Pause { alpha: self.alpha },
            StrategyKind::AlphaBoost => MixPolicy::Boost {
                alpha: self.alpha,
                boosted: self.alpha * self.boost,
            },
        };
        let default_share = if self.kind == StrategyKind::HighLossRemoval {
            0.1
        } else {
            0.0
        };
        Strategy {
            policy,
            drop_share: self.drop_share.unwrap_or(default_share),
            cutmix_prob: self.cutmix_prob,
            cutmix_alpha: self.cutmix_alpha,
            lambda: self.lambda,
            pairing: self.pairing,
        }
    }

    /// Checks every value, naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(Error::value("strategy.alpha", "a finite alpha >= 0", self.alpha));
        }
        if !(self.boost.is_finite() && self.boost > 0.0) {
            return Err(Error::value("strategy.boost", "a finite factor > 0", self.boost));
        }
        if let Some(r) = self.drop_share {
            if !(0.0..1.0).contains(&r) {
                return Err(Error::value("strategy.drop_share", "a share in [0, 1)", r));
            }
        }
        self.strategy().validate()?;
        self.ep.validate()
    }

    /// The schedule a training loop drives.
    pub fn build(&self) -> Result<Schedule> {
        self.validate()?;
        Schedule::new(self.strategy(), PhaseController::new(self.ep)?)
    }
}
