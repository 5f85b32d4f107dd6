//! The Mixup op's config: what to mix a batch with, drawn per batch from the caller's
//! generator. Plain numbers (serde), so the strategy engine plans with it and configuration
//! files hold it; [`MixSpec::forward`] draws and mixes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which of the two mixes a batch gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MixKind {
    /// Blend whole images: `lam x[i] + (1 - lam) x[p(i)]`.
    Mixup,
    /// Paste a box of the partner's pixels.
    #[serde(rename = "cutmix")]
    CutMix,
}

/// How lambda is drawn: one per batch (torchvision) or one per sample (timm's elem mode). The
/// drawn values are a [`Lambda`](super::Lambda).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LambdaMode {
    /// One lambda for the whole batch.
    Batch,
    /// One lambda per sample.
    PerSample,
}

/// How partners are chosen. The drawn partners are a [`Pairing`](super::Pairing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PairingMode {
    /// A random permutation per batch.
    Permutation,
    /// Sample i with sample B-1-i.
    Flip,
    /// Pair with the previous sample (roll by 1), like torchvision's `roll(1, 0)`.
    Roll,
}

/// The Mixup/CutMix op's config: how to mix one batch. `alpha == 0` means no mixing: the batch comes back unchanged, no
/// kernel runs and lambda is 1 (the strategy engine pauses Mixup this way).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MixSpec {
    /// Mixup or CutMix.
    pub kind: MixKind,
    /// lambda ~ Beta(alpha, alpha); 0 does not mix.
    pub alpha: f64,
    /// One lambda per batch or per sample.
    pub lambda: LambdaMode,
    /// How partners are chosen.
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
