//! Plain-tch references, computed in f64 (`*_f64`): the formulas timm and torchvision use. Tests
//! compare the fused ops with these; benchmarks time [`composite`], the form a PyTorch user
//! writes, and the trainer's composite mode runs [`composite_batch`].

use tch::{Kind, Tensor};

use super::batch::{check_batch_labels, draw};
use super::{CutBoxes, Lambda, MixSpec, MixedTargets, Normalize, Pairing};
use crate::error::Result;
use crate::rng::SeededRng;

/// `lam` broadcast against a batch of rank `rank`, as f64.
fn lambda_f64(lam: &Lambda, rank: usize) -> Tensor {
    match lam {
        Lambda::Batch(l) => Tensor::from(*l),
        Lambda::PerSample(t) => {
            let mut shape = vec![-1i64];
            shape.resize(rank, 1);
            t.to_kind(Kind::Double).view(shape.as_slice())
        }
    }
}

/// Mixup in f64: `x * lam + x[p] * (1 - lam)`.
pub fn mixup_f64(x: &Tensor, lam: &Lambda, pairing: &Pairing) -> Tensor {
    let x = x.to_kind(Kind::Double);
    let l = lambda_f64(lam, x.dim()).to_device(x.device());
    &x * &l + pairing.partner_rows(&x) * (1.0 - &l)
}

/// Mixup of u8 images after `(x / 255 - mean_c) / std_c`, in f64.
pub fn mixup_u8_f64(x: &Tensor, norm: &Normalize, lam: &Lambda, pairing: &Pairing) -> Tensor {
    let mut shape = vec![1i64, -1];
    shape.resize(x.dim(), 1);
    let mean = Tensor::from_slice(norm.mean())
        .to_kind(Kind::Double)
        .to_device(x.device())
        .view(shape.as_slice());
    let std = Tensor::from_slice(norm.std())
        .to_kind(Kind::Double)
        .to_device(x.device())
        .view(shape.as_slice());
    let v = (x.to_kind(Kind::Double) / 255.0 - mean) / std;
    mixup_f64(&v, lam, pairing)
}

/// CutMix in f64 from a pixel mask: `where(mask_i, x[p], x)`; boxes are clipped like the op.
pub fn cutmix_f64(x: &Tensor, boxes: &CutBoxes, pairing: &Pairing) -> Result<Tensor> {
    let size = x.size();
    let (b, h, w) = (size[0], size[size.len() - 2], size[size.len() - 1]);
    let dev = x.device();
    let rows: Tensor = match boxes {
        CutBoxes::Batch(bx) => Tensor::from_slice(&[bx.y0, bx.y1, bx.x0, bx.x1])
            .view([1, 4])
            .repeat([b, 1]),
        CutBoxes::PerSample(t) => t.shallow_clone(),
    };
    let rows = crate::cuda::to_device_async(&rows, dev)?;
    let rows = rows.view([b, 4, 1, 1]);
    let ys = Tensor::arange(h, (Kind::Int64, dev)).view([1, h, 1]);
    let xs = Tensor::arange(w, (Kind::Int64, dev)).view([1, 1, w]);
    let clip = |v: Tensor, hi: i64| v.clamp(0, hi);
    let (y0, y1) = (clip(rows.select(1, 0), h), clip(rows.select(1, 1), h));
    let (x0, x1) = (clip(rows.select(1, 2), w), clip(rows.select(1, 3), w));
    let mask = ys
        .ge_tensor(&y0)
        .logical_and(&ys.lt_tensor(&y1))
        .logical_and(&xs.ge_tensor(&x0))
        .logical_and(&xs.lt_tensor(&x1));
    let mut mshape = vec![b];
    mshape.resize(x.dim() - 2, 1);
    mshape.extend([h, w]);
    let mask = mask.view(mshape.as_slice());
    let xd = x.to_kind(Kind::Double);
    Ok(xd.where_self(&mask.logical_not(), &pairing.partner_rows(&xd)))
}

/// The tch composite a PyTorch user writes today, in the input's dtype:
/// `x * lam + x.index_select(0, perm) * (1 - lam)` (timm / torchvision). Benchmarks time this.
pub fn composite(x: &Tensor, lam: &Lambda, pairing: &Pairing) -> Tensor {
    match lam {
        Lambda::Batch(l) => x * *l + pairing.partner_rows(x) * (1.0 - *l),
        Lambda::PerSample(t) => {
            let mut shape = vec![-1i64];
            shape.resize(x.dim(), 1);
            let l = t.view(shape.as_slice()).to_kind(x.kind());
            x * &l + pairing.partner_rows(x) * (1.0 - &l)
        }
    }
}

/// timm's in-place flip form: `x.mul_(lam).add_(x.flip(0).mul_(1 - lam))`.
pub fn composite_flip_(x: &mut Tensor, lam: f64) -> Result<()> {
    let flipped = x.f_flip([0])?.f_mul_scalar_(1.0 - lam)?;
    let _ = x.f_mul_scalar_(lam)?.f_add_(&flipped)?;
    Ok(())
}

/// [`MixSpec::forward`] computed with the plain tch composite ([`composite`] for Mixup,
/// [`cutmix_f64`] for CutMix) from the same random draws: what the trainer's composite mode
/// runs, to measure what the fused ops save in a real training step.
pub fn composite_batch(spec: &MixSpec, x: &Tensor, y: &Tensor, rng: &mut SeededRng) -> Result<(Tensor, MixedTargets)> {
    check_batch_labels(x, y, spec)?;
    if spec.alpha == 0.0 {
        return Ok((x.shallow_clone(), MixedTargets::unmixed(y)));
    }
    let draw = draw(spec, x, rng)?;
    let pairing = &draw.mixup.pairing;
    let (mixed, lam) = match draw.cut {
        None => (composite(x, &draw.mixup.lam, pairing), draw.mixup.lam),
        Some(ref cut) => {
            // The box lambda comes from the fused op's clipping; the pixels from the reference.
            let lam = cut.forward(x)?.1;
            (cutmix_f64(x, &cut.boxes, pairing)?.to_kind(x.kind()), lam)
        }
    };
    Ok((mixed, MixedTargets::new(y, pairing, lam)))
}
