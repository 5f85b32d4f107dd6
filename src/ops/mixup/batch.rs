//! Sampling a whole mixed batch: lambda ~ Beta(alpha, alpha), partners and CutMix boxes drawn
//! from the caller's generator, then one fused pass. Returns compact targets, never one-hot.

use tch::{Kind, Tensor};

use super::{cutmix, mixup, mixup_u8, CutBox, CutBoxes, Lambda, Normalize, Pairing};
use crate::error::{Error, Result};
use crate::rng::SeededRng;
use crate::strategy::{LambdaMode, MixKind, MixSpec, PairingMode};

/// The compact target of a mixed batch: sample i is `lam_i` of class `y_a[i]` and
/// `1 - lam_i` of class `y_b[i]`. The loss op consumes this directly.
#[derive(Debug)]
pub struct MixedTargets {
    pub y_a: Tensor,
    pub y_b: Tensor,
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

/// Mixes `x` `[B, ...]` with labels `y` `[B]` (int64, on x's device) according to `spec`.
pub fn mix_batch(x: &Tensor, y: &Tensor, spec: &MixSpec, rng: &mut SeededRng) -> Result<(Tensor, MixedTargets)> {
    check_batch_labels(x, y, spec)?;
    if spec.alpha == 0.0 {
        return Ok((x.shallow_clone(), MixedTargets::unmixed(y)));
    }
    let draw = draw(spec, x, rng)?;
    let (mixed, lam) = match draw.cut {
        None => (mixup(x, &draw.lam, &draw.pairing)?, draw.lam),
        Some(ref boxes) => cutmix(x, boxes, &draw.pairing)?,
    };
    Ok((mixed, MixedTargets::new(y, &draw.pairing, lam)))
}

/// [`mix_batch`] for u8 images `[B, C, H, W]`: normalised to `kind` in the same pass that mixes
/// them (`mixup_u8`); unmixed batches go through the same kernel with lambda 1, so mixed and
/// unmixed batches are normalised identically. CutMix normalises first, then pastes.
pub fn mix_images(
    images: &Tensor,
    y: &Tensor,
    norm: &Normalize,
    spec: &MixSpec,
    rng: &mut SeededRng,
    kind: Kind,
) -> Result<(Tensor, MixedTargets)> {
    check_batch_labels(images, y, spec)?;
    let normalised = |x: &Tensor| mixup_u8(x, norm, &Lambda::Batch(1.0), &Pairing::Flip, kind);
    if !spec.mixes() {
        return Ok((normalised(images)?, MixedTargets::unmixed(y)));
    }
    let draw = draw(spec, images, rng)?;
    let (mixed, lam) = match draw.cut {
        None => (mixup_u8(images, norm, &draw.lam, &draw.pairing, kind)?, draw.lam),
        Some(ref boxes) => cutmix(&normalised(images)?, boxes, &draw.pairing)?,
    };
    Ok((mixed, MixedTargets::new(y, &draw.pairing, lam)))
}

/// [`mix_batch`] computed with the plain tch composite (`reference::composite` for Mixup,
/// `reference::cutmix` for CutMix) from the same random draws: what the trainer's composite mode
/// runs, to measure what the fused ops save in a real training step.
pub fn mix_batch_composite(
    x: &Tensor,
    y: &Tensor,
    spec: &MixSpec,
    rng: &mut SeededRng,
) -> Result<(Tensor, MixedTargets)> {
    check_batch_labels(x, y, spec)?;
    if spec.alpha == 0.0 {
        return Ok((x.shallow_clone(), MixedTargets::unmixed(y)));
    }
    let draw = draw(spec, x, rng)?;
    let (mixed, lam) = match draw.cut {
        None => (super::reference::composite(x, &draw.lam, &draw.pairing), draw.lam),
        Some(ref boxes) => {
            // The box lambda comes from the fused op's clipping; the pixels from the reference.
            let lam = cutmix(x, boxes, &draw.pairing)?.1;
            (
                super::reference::cutmix(x, boxes, &draw.pairing)?.to_kind(x.kind()),
                lam,
            )
        }
    };
    Ok((mixed, MixedTargets::new(y, &draw.pairing, lam)))
}

/// One batch's random choices: partners, lambda(s) and, for CutMix, the boxes.
struct Draw {
    pairing: Pairing,
    lam: Lambda,
    cut: Option<CutBoxes>,
}

/// Draws partners, then one lambda per batch or per sample from Beta(alpha, alpha), then (for
/// CutMix) a box per lambda, all from `rng` in that order.
fn draw(spec: &MixSpec, x: &Tensor, rng: &mut SeededRng) -> Result<Draw> {
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
    Ok(Draw { pairing, lam, cut })
}

fn check_batch_labels(x: &Tensor, y: &Tensor, spec: &MixSpec) -> Result<()> {
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
