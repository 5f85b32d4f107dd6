//! Plain-tch references in f64 (`*_f64`, for the tests), and the composite a PyTorch user writes
//! today (benchmarks, the trainer's composite mode): `cross_entropy(reduction='none')` -> `topk`
//! -> mask -> mean -> backward.

use tch::{Device, Kind, Reduction, Tensor};

use super::{removed_rows, CrossEntropy, LmCrossEntropy, SequenceRank, Targets};
use crate::error::Result;
use crate::ops::mixup::Lambda;

/// The reference's results, all f64 (bool for `keep`) on the CPU.
#[derive(Debug)]
pub struct ReferenceLoss {
    /// The mean over kept rows.
    pub loss: Tensor,
    /// Each row's loss (0 for ignored rows).
    pub per_sample: Tensor,
    /// Rows that count.
    pub keep: Tensor,
    /// d loss / d input.
    pub grad: Tensor,
    /// Rows whose argmax is their label.
    pub correct: i64,
}

fn host(t: &Tensor) -> Tensor {
    t.to_device(Device::Cpu)
}

/// (y_a, y_b, lambda [B] f64) on the CPU.
fn target_parts(targets: Targets<'_>, b: i64) -> (Tensor, Tensor, Tensor) {
    match targets {
        Targets::Index(y) => (host(y), host(y), Tensor::ones([b], (Kind::Double, Device::Cpu))),
        Targets::Mixed(t) => {
            let lam = match &t.lam {
                Lambda::Batch(l) => Tensor::full([b], *l, (Kind::Double, Device::Cpu)),
                Lambda::PerSample(l) => host(l).to_kind(Kind::Double),
            };
            (host(&t.y_a), host(&t.y_b), lam)
        }
    }
}

/// The rows kept when the k largest losses are removed: NaN and invalid rows are never
/// removed (nor counted when invalid); ties remove the lower index first.
fn rank_keep(per_sample: &Tensor, valid: &Tensor, k: i64) -> Tensor {
    let b = per_sample.size()[0];
    let candidate = valid.logical_and(&per_sample.isnan().logical_not());
    let k_eff = k.min(candidate.sum(Kind::Int64).int64_value(&[]));
    let key = per_sample.where_scalarother(&candidate, f64::NEG_INFINITY);
    let (_, order) = key.sort_stable(true, 0, true);
    let removed = Tensor::zeros([b], (Kind::Bool, Device::Cpu)).index_fill(0, &order.narrow(0, 0, k_eff), 1);
    valid.logical_and(&removed.logical_not())
}

/// Language-model cross-entropy in f64, ranking sequences (by mean token loss) or tokens.
pub fn lm_cross_entropy_f64(logits: &Tensor, tokens: &Tensor, lm: &LmCrossEntropy) -> Result<ReferenceLoss> {
    let opts = &lm.token_loss();
    let size = logits.size();
    let (b, t, v) = (size[0], size[1], size[2]);
    let flat = logits.reshape([b * t, v]);
    let flat_tokens = tokens.reshape([b * t]);
    if lm.rank == SequenceRank::PerToken {
        let r = cross_entropy_f64(&flat, Targets::Index(&flat_tokens), opts)?;
        return Ok(ReferenceLoss {
            per_sample: r.per_sample.view([b, t]),
            keep: r.keep.view([b, t]),
            grad: r.grad.view([b, t, v]),
            ..r
        });
    }
    let tok = cross_entropy_f64(
        &flat,
        Targets::Index(&flat_tokens),
        &CrossEntropy {
            drop_share: 0.0,
            ..*opts
        },
    )?;
    let valid_tok = tok.keep.view([b, t]);
    let n_tok = valid_tok.sum_dim_intlist(1, false, Kind::Double);
    let seq = tok.per_sample.view([b, t]).sum_dim_intlist(1, false, Kind::Double) / n_tok.clamp_min(1.0);
    let valid = n_tok.gt(0.0);
    let keep = rank_keep(&seq, &valid, removed_rows(opts.drop_share, b));
    let kept = keep.to_kind(Kind::Double);
    let n_kept = kept.sum(Kind::Double);
    let loss = (&seq * &kept).sum(Kind::Double) / &n_kept;
    // tok.grad is (p - t) / n_valid_tokens on valid tokens: rescale per sequence.
    let factor = &kept * n_tok.sum(Kind::Double) / (n_tok.clamp_min(1.0) * n_kept.clamp_min(1.0));
    let grad = tok.grad.view([b, t, v]) * factor.view([b, 1, 1]);
    Ok(ReferenceLoss {
        loss,
        per_sample: seq,
        keep,
        grad,
        correct: tok.correct,
    })
}

/// Cross-entropy with smoothing, mixing, ignore_index and High-Loss Removal, in f64. It states
/// the meaning the kernel and the CPU path implement:
/// - the loss is -sum_c t_c log p_c with 0 log 0 = 0: a masked (-inf) logit changes nothing
///   where the target has no weight, and makes the loss +inf where it has (any -inf logit with
///   label smoothing), as PyTorch's `cross_entropy`; a row with a NaN logit, or with every logit
///   -inf, has a NaN loss;
/// - a row counts when y_a is not ignore_index; a partner label y_b equal to ignore_index gives
///   its weight (1 - lambda) to y_a;
/// - a row is correct when the first index of its largest logit is y_a (-0.0 and +0.0 tie, so
///   the lower index wins); a row holding a NaN is never correct (PyTorch's argmax would pick
///   the NaN);
/// - the results agree with the kernel and the CPU path within f32 rounding, not bit for bit:
///   nvcc may contract products and sums into FMAs, and the CPU path's exp is vectorised.
pub fn cross_entropy_f64(logits: &Tensor, targets: Targets<'_>, opts: &CrossEntropy) -> Result<ReferenceLoss> {
    let z = host(logits).to_kind(Kind::Double);
    let (b, c) = (z.size()[0], z.size()[1]);
    let (ya, yb, lam) = target_parts(targets, b);
    let (valid, yb) = match opts.ignore_index {
        Some(i) => (ya.ne(i), ya.where_self(&yb.eq(i), &yb)),
        None => (Tensor::ones([b], (Kind::Bool, Device::Cpu)), yb),
    };
    let safe = |y: &Tensor| y.where_scalarother(&valid, 0);
    let onehot =
        |y: &Tensor| Tensor::zeros([b, c], (Kind::Double, Device::Cpu)).scatter_value(1, &safe(y).unsqueeze(1), 1.0);
    let eps = opts.label_smoothing;
    let lam2 = lam.unsqueeze(1);
    let t = (onehot(&ya) * &lam2 + onehot(&yb) * (1.0 - &lam2)) * (1.0 - eps) + eps / c as f64;
    let logp = z.log_softmax(1, Kind::Double);
    let t_logp = Tensor::zeros_like(&t).where_self(&t.eq(0.0), &(&t * &logp));
    let per_sample = (-t_logp.sum_dim_intlist(1, false, Kind::Double)).where_scalarother(&valid, 0.0);

    let k = removed_rows(opts.drop_share, b);
    let keep = rank_keep(&per_sample, &valid, k);
    let n_valid = valid.sum(Kind::Int64).int64_value(&[]);
    // Nothing kept (every row ignored): the loss is NaN like PyTorch's mean, the gradient 0.
    let n_kept = (n_valid - k.min(n_valid)).max(1) as f64;
    let keep_f = keep.to_kind(Kind::Double);
    let loss = (&per_sample * &keep_f).sum(Kind::Double) / keep_f.sum(Kind::Double);
    let grad = (logp.exp() - &t) * keep_f.unsqueeze(1) / n_kept;
    let no_nan = z.isnan().any_dim(1, false).logical_not();
    let correct = z
        .argmax(1, false)
        .eq_tensor(&ya)
        .logical_and(&valid)
        .logical_and(&no_nan)
        .sum(Kind::Int64)
        .int64_value(&[]);
    Ok(ReferenceLoss {
        loss,
        per_sample,
        keep,
        grad,
        correct,
    })
}

/// Per-sample mean squared error with High-Loss Removal, in f64.
pub fn mse_f64(pred: &Tensor, target: &Tensor, drop_share: f64) -> Result<ReferenceLoss> {
    let p = host(pred).to_kind(Kind::Double);
    let q = host(target).to_kind(Kind::Double);
    let b = p.size()[0];
    let d = (&p - &q).reshape([b, -1]);
    let f = d.size()[1] as f64;
    let per_sample = d.square().mean_dim(1, false, Kind::Double);
    let k = removed_rows(drop_share, b);
    let keep = rank_keep(&per_sample, &Tensor::ones([b], (Kind::Bool, Device::Cpu)), k);
    let keep_f = keep.to_kind(Kind::Double);
    let loss = (&per_sample * &keep_f).sum(Kind::Double) / keep_f.sum(Kind::Double);
    let mut shape = vec![b];
    shape.resize(p.dim(), 1);
    let grad = (&p - &q) * 2.0 / f * keep_f.view(shape.as_slice()) / (b - k) as f64;
    Ok(ReferenceLoss {
        loss,
        per_sample,
        keep,
        grad,
        correct: 0,
    })
}

/// libtorch's per-sample cross-entropy (differentiable), mixed as `lam ce(y_a) + (1-lam) ce(y_b)`.
pub fn per_sample_ce_autograd(logits: &Tensor, targets: Targets<'_>, opts: &CrossEntropy) -> Result<Tensor> {
    let ignore = opts.ignore_index.unwrap_or(-100);
    let ce = |y: &Tensor| logits.f_cross_entropy_loss::<Tensor>(y, None, Reduction::None, ignore, opts.label_smoothing);
    Ok(match targets {
        Targets::Index(y) => ce(y)?,
        Targets::Mixed(t) => {
            // An ignored partner gives its weight to y_a, as in the fused op.
            let y_b = match opts.ignore_index {
                Some(i) => t.y_a.f_where_self(&t.y_b.f_eq(i)?, &t.y_b)?,
                None => t.y_b.shallow_clone(),
            };
            match &t.lam {
                Lambda::Batch(l) => ce(&t.y_a)? * *l + ce(&y_b)? * (1.0 - *l),
                Lambda::PerSample(l) => ce(&t.y_a)? * l + ce(&y_b)? * (1.0 - l),
            }
        }
    })
}

/// The composite a PyTorch user writes: per-sample CE, `topk` of the losses, a keep mask and
/// the mean over kept rows. Call `.backward()` on the result to include the gradient.
pub fn composite(logits: &Tensor, targets: Targets<'_>, opts: &CrossEntropy) -> Result<Tensor> {
    mean_without_highest(&per_sample_ce_autograd(logits, targets, opts)?, opts.drop_share)
}

/// High-Loss Removal as a PyTorch user writes it, over any per-row losses `[B]`: `topk` of the
/// detached losses picks the floor(share B) highest, a keep mask zeroes them, and the sum over
/// kept rows is divided by their number. Differentiable; the plain mean when nothing is removed.
pub fn mean_without_highest(per_row: &Tensor, share: f64) -> Result<Tensor> {
    let b = per_row.size()[0];
    let k = removed_rows(share, b);
    if k == 0 {
        return Ok(per_row.f_mean(Kind::Float)?);
    }
    let (_, idx) = per_row.detach().f_topk(k, 0, true, false)?;
    let keep = Tensor::f_ones([b], (Kind::Float, per_row.device()))?.f_index_fill(0, &idx, 0.0)?;
    Ok((per_row * keep).f_sum(Kind::Float)? / (b - k) as f64)
}
