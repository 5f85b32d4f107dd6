//! What one batch gets: the mixing spec and the High-Loss Removal share. Plain numbers, so the
//! engine stays tensor-free; `ops::mixup::mix_batch` consumes [`MixSpec`] directly.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MixKind {
    Mixup,
    #[serde(rename = "cutmix")]
    CutMix,
}

/// One lambda per batch (torchvision) or one per sample (timm's elem mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LambdaMode {
    Batch,
    PerSample,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PairingMode {
    Permutation,
    Flip,
    /// Pair with the previous sample (roll by 1), like torchvision's `roll(1, 0)`.
    Roll,
}

/// How to mix one batch. `alpha == 0` means no mixing: the batch comes back unchanged, no
/// kernel runs and lambda is 1 (the strategy engine pauses Mixup this way).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MixSpec {
    pub kind: MixKind,
    pub alpha: f64,
    pub lambda: LambdaMode,
    pub pairing: PairingMode,
}

impl MixSpec {
    /// Mixup with lambda ~ Beta(alpha, alpha) for the whole batch and a random permutation as
    /// partners (torchvision's and timm's defaults); alpha 0 does not mix.
    pub fn mixup(alpha: f64) -> MixSpec {
        MixSpec {
            kind: MixKind::Mixup,
            alpha,
            lambda: LambdaMode::Batch,
            pairing: PairingMode::Permutation,
        }
    }

    /// CutMix with the box's lambda ~ Beta(alpha, alpha) for the whole batch and a random
    /// permutation as partners.
    pub fn cutmix(alpha: f64) -> MixSpec {
        MixSpec {
            kind: MixKind::CutMix,
            ..MixSpec::mixup(alpha)
        }
    }

    /// Whether this spec mixes at all.
    pub fn mixes(&self) -> bool {
        self.alpha > 0.0
    }
}

/// The engine's answer for one batch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BatchPlan {
    pub step: u64,
    /// Whether this step is inside the Enlightenment Period.
    pub in_ep: bool,
    pub mix: MixSpec,
    /// High-Loss Removal share r: the floor(r B) highest per-sample losses are dropped.
    pub drop_share: f64,
}

impl fmt::Display for MixSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.mixes() {
            return write!(f, "no mixing");
        }
        let kind = match self.kind {
            MixKind::Mixup => "mixup",
            MixKind::CutMix => "cutmix",
        };
        write!(f, "{kind} alpha={}", self.alpha)
    }
}

impl fmt::Display for BatchPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = if self.in_ep { "EP" } else { "after EP" };
        write!(f, "step {} [{phase}] {}", self.step, self.mix)?;
        if self.drop_share > 0.0 {
            write!(f, ", drop top {:.1}% losses", 100.0 * self.drop_share)?;
        }
        Ok(())
    }
}
