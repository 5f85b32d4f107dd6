//! Sampling a whole mixed batch: lambda ~ Beta(alpha, alpha), partners and CutMix boxes drawn
//! from the caller's generator, then one fused pass. Returns compact targets, never one-hot.

use tch::{Kind, Tensor};

use super::{CutBox, CutBoxes, CutMix, Lambda, LambdaMode, MixKind, MixSpec, Mixup, Normalize, Pairing, PairingMode};
use crate::error::{Error, Result};
use crate::rng::SeededRng;

/// The compact target of a mixed batch: sample i is `lam_i` of class `y_a[i]` and
/// `1 - lam_i` of class `y_b[i]`. The loss op consumes this directly.
#[derive(Debug)]
pub struct MixedTargets {
    /// Each sample's own label, int64 `[B]`.
    pub y_a: Tensor,
    /// Its partner's label, int64 `[B]`.
    pub y_b: Tensor,
    /// The weight of `y_a`.
    pub lam: Lambda,
}

impl MixedTargets {
    /// The targets of a batch mixed with `pairing` at `lam`: sample i is `lam_i` of `y[i]` and
    /// `1 - lam_i` of its partner's label.
    pub fn new(y: &Tensor, pairing: &Pairing, lam: Lambda) -> MixedTargets {
        MixedTargets {
            y_a: y.shallow_clone(),
            y_b: pairing.partner_rows(y),
            lam,
        }
    }

    /// Targets of an unmixed batch.
    pub fn unmixed(y: &Tensor) -> MixedTargets {
        MixedTargets {
            y_a: y.shallow_clone(),
            y_b: y.shallow_clone(),
            lam: Lambda::Batch(1.0),
        }
    }
}

impl MixSpec {
    /// Mixes `x` `[B, ...]` with labels `y` `[B]` (int64, on x's device): draws partners,
    /// lambda(s) and (CutMix) boxes from `rng`, then one fused pass. Returns the mixed batch and
    /// its compact targets.
    pub fn forward(&self, x: &Tensor, y: &Tensor, rng: &mut SeededRng) -> Result<(Tensor, MixedTargets)> {
        check_batch_labels(x, y, self)?;
        if self.alpha == 0.0 {
            return Ok((x.shallow_clone(), MixedTargets::unmixed(y)));
        }
        let draw = draw(self, x, rng)?;
        let (mixed, lam) = match draw.cut {
            None => (draw.mixup.forward(x)?, draw.mixup.lam),
            Some(cut) => cut.forward(x)?,
        };
        Ok((mixed, MixedTargets::new(y, &draw.mixup.pairing, lam)))
    }

    /// [`forward`](Self::forward) for u8 images `[B, C, H, W]`: normalised to `kind` in the same
    /// pass that mixes them ([`Mixup::forward_u8`]); unmixed batches go through the same kernel
    /// with lambda 1, so mixed and unmixed batches are normalised identically. CutMix normalises
    /// first, then pastes.
    pub fn forward_images(
        &self,
        images: &Tensor,
        y: &Tensor,
        norm: &Normalize,
        kind: Kind,
        rng: &mut SeededRng,
    ) -> Result<(Tensor, MixedTargets)> {
        check_batch_labels(images, y, self)?;
        let normalised = |x: &Tensor| Mixup::identity().forward_u8(x, norm, kind);
        if !self.mixes() {
            return Ok((normalised(images)?, MixedTargets::unmixed(y)));
        }
        let draw = draw(self, images, rng)?;
        let (mixed, lam) = match draw.cut {
            None => (draw.mixup.forward_u8(images, norm, kind)?, draw.mixup.lam),
            Some(cut) => cut.forward(&normalised(images)?)?,
        };
        Ok((mixed, MixedTargets::new(y, &draw.mixup.pairing, lam)))
    }
}

impl Mixup {
    /// Lambda 1 with flip partners: every sample stays itself (the normalising pass alone).
    pub fn identity() -> Mixup {
        Mixup {
            lam: Lambda::Batch(1.0),
            pairing: Pairing::Flip,
        }
    }
}

/// One batch's random choices: partners and lambda(s) and, for CutMix, the boxes with the same
/// partners (the box decides CutMix's lambda).
pub(super) struct Draw {
    pub mixup: Mixup,
    pub cut: Option<CutMix>,
}

/// Draws partners, then one lambda per batch or per sample from Beta(alpha, alpha), then (for
/// CutMix) a box per lambda, all from `rng` in that order.
pub(super) fn draw(spec: &MixSpec, x: &Tensor, rng: &mut SeededRng) -> Result<Draw> {
    let size = x.size();
    let (b, dev) = (size[0], x.device());
    let pairing = match spec.pairing {
        PairingMode::Permutation => Pairing::permutation(b, rng, dev),
        PairingMode::Flip => Pairing::Flip,
        PairingMode::Roll => Pairing::Roll(1),
    };
    let lams: Vec<f64> = match spec.lambda {
        LambdaMode::Batch => vec![rng.beta(spec.alpha, spec.alpha)],
        LambdaMode::PerSample => (0..b).map(|_| rng.beta(spec.alpha, spec.alpha)).collect(),
    };
    let lam = match spec.lambda {
        LambdaMode::Batch => Lambda::Batch(lams[0]),
        LambdaMode::PerSample => {
            let v: Vec<f32> = lams.iter().map(|&l| l as f32).collect();
            Lambda::PerSample(crate::cuda::upload(&v, dev))
        }
    };
    let cut = match spec.kind {
        MixKind::Mixup => None,
        MixKind::CutMix => {
            if size.len() < 3 {
                return Err(Error::shape("x", "[B, C, H, W] or [B, H, W] for CutMix", &size));
            }
            let (h, w) = (size[size.len() - 2], size[size.len() - 1]);
            let mut boxes: Vec<CutBox> = lams.iter().map(|&l| sample_box(l, h, w, rng)).collect();
            Some(match spec.lambda {
                LambdaMode::Batch => CutBoxes::Batch(boxes.remove(0)),
                LambdaMode::PerSample => {
                    let flat: Vec<i64> = boxes.iter().flat_map(|c| [c.y0, c.y1, c.x0, c.x1]).collect();
                    CutBoxes::PerSample(crate::cuda::upload(&flat, dev).view([b, 4]))
                }
            })
        }
    };
    let cut = cut.map(|boxes| CutMix {
        boxes,
        pairing: pairing.shallow_clone(),
    });
    Ok(Draw {
        mixup: Mixup { lam, pairing },
        cut,
    })
}

pub(super) fn check_batch_labels(x: &Tensor, y: &Tensor, spec: &MixSpec) -> Result<()> {
    if !(spec.alpha.is_finite() && spec.alpha >= 0.0) {
        return Err(Error::value("spec.alpha", "a finite value >= 0", spec.alpha));
    }
    let b = x.size().first().copied().unwrap_or(0);
    if y.size() != [b] || b == 0 {
        return Err(Error::shape(
            "y",
            format!("[{b}] (one label per sample of a non-empty batch)"),
            &y.size(),
        ));
    }
    if y.kind() != Kind::Int64 {
        return Err(Error::Dtype {
            arg: "y",
            expected: "Int64".into(),
            got: y.kind(),
        });
    }
    if y.device() != x.device() {
        return Err(Error::Device {
            arg: "y",
            expected: format!("{:?} (the device of `x`)", x.device()),
            got: y.device(),
        });
    }
    Ok(())
}

/// timm's `rand_bbox`: a box of side `sqrt(1 - lam)` of the image around a uniform centre,
/// clipped to the image (the op reports the lambda of the clipped area).
fn sample_box(lam: f64, h: i64, w: i64, rng: &mut SeededRng) -> CutBox {
    let cut = (1.0 - lam).sqrt();
    let (ch, cw) = ((h as f64 * cut) as i64, (w as f64 * cut) as i64);
    let cy = rng.below(h as u64) as i64;
    let cx = rng.below(w as u64) as i64;
    CutBox {
        y0: (cy - ch / 2).clamp(0, h),
        y1: (cy + ch / 2).clamp(0, h),
        x0: (cx - cw / 2).clamp(0, w),
        x1: (cx + cw / 2).clamp(0, w),
    }
}
