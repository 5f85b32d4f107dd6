//! The fused CPU path of kernels/loss.cu: per row one max pass and one exp pass (one exp per
//! element, the exps kept for the gradient), then the gradient while the row is still in cache;
//! the selection uses the kernel's ordering, so both paths remove exactly the same rows.

use half::{bf16, f16};
use tch::{Kind, Tensor};

use super::{CeArgs, CrossEntropy, LossOutput};
use crate::error::Result;
use crate::ops::element::{cpu_bytes_mut, cpu_plain, cpu_slice, cpu_slice_mut, fill_with, Element};
use crate::ops::fastmath::{exp_shifted_sums, is_first_max, scan_row, RowScan};
use crate::ops::mixup::Lambda;
use crate::ops::parallel;

/// A cross-entropy element (max, exp, sums, gradient) costs about this many memory-bound element
/// copies: measured, one thread does 1024x1000 in ~1.0 ms, a Mixup blend of 1M elements ~0.15 ms.
const CE_WORK_PER_ELEMENT: usize = 8;

/// What the row pass needs to know about each row's target.
struct RowTargets<'a> {
    ya: &'a [i64],
    yb: Vec<i64>,
    lam: Vec<f32>,
    valid: Vec<bool>,
    on: f32,
    off: f32,
    /// 1 / n_kept, the gradient weight of a kept row.
    scale: f32,
}

pub(in crate::ops) fn cross_entropy(
    logits: &Tensor,
    args: &CeArgs<'_>,
    opts: &CrossEntropy,
    grad: Option<Tensor>,
) -> Result<LossOutput> {
    let (b, c) = (logits.size()[0] as usize, logits.size()[1] as usize);
    let ya = cpu_plain::<i64>(args.y_a, Kind::Int64);
    // A partner whose label is ignored gives its weight to the row's own label (as the kernel).
    let yb: Vec<i64> = match args.y_b {
        Some(t) => cpu_plain::<i64>(t, Kind::Int64)
            .iter()
            .zip(ya)
            .map(|(&b, &a)| if Some(b) == opts.ignore_index { a } else { b })
            .collect(),
        None => ya.to_vec(),
    };
    let lam = match args.lam {
        None => vec![1.0; b],
        Some(Lambda::Batch(l)) => vec![*l as f32; b],
        Some(Lambda::PerSample(t)) => cpu_plain::<f32>(t, Kind::Float).to_vec(),
    };
    let valid: Vec<bool> = ya.iter().map(|&y| Some(y) != opts.ignore_index).collect();
    let n_valid = valid.iter().filter(|&&v| v).count() as i64;
    let n_kept = n_valid - args.removed.min(n_valid);
    let eps = opts.label_smoothing as f32;
    let rt = RowTargets {
        ya,
        yb,
        lam,
        valid,
        on: 1.0 - eps,
        off: eps / c as f32,
        scale: if n_kept > 0 { 1.0 / n_kept as f32 } else { 0.0 },
    };
    let mut results = vec![RowResult::default(); b];
    let mut grad = grad;
    // The gradient is in the logits' dtype, or in f32 for half logits under autograd.
    match (logits.kind(), grad.as_ref().map(Tensor::kind)) {
        (Kind::Float, _) => ce_rows::<f32, f32>(logits, grad.as_mut(), &rt, &mut results),
        (Kind::Half, Some(Kind::Float)) => ce_rows::<f16, f32>(logits, grad.as_mut(), &rt, &mut results),
        (Kind::Half, _) => ce_rows::<f16, f16>(logits, grad.as_mut(), &rt, &mut results),
        (_, Some(Kind::Float)) => ce_rows::<bf16, f32>(logits, grad.as_mut(), &rt, &mut results),
        _ => ce_rows::<bf16, bf16>(logits, grad.as_mut(), &rt, &mut results),
    }
    let losses: Vec<f32> = results.iter().map(|r| r.loss).collect();
    let sel = select(&losses, &rt.valid, args.removed);
    if let Some(g) = grad.as_mut() {
        zero_rows(g, &sel.keep, &rt.valid, c);
    }
    let n_correct = results.iter().filter(|r| r.correct).count() as i64;
    Ok(output(losses, sel, Tensor::from(n_correct), grad, args.removed))
}

/// What the row pass produces per row besides the gradient.
#[derive(Debug, Clone, Copy, Default)]
struct RowResult {
    loss: f32,
    correct: bool,
}

/// The rows of logits stored as T, their gradient (when asked for) stored as G.
fn ce_rows<T: Element, G: Element>(
    logits: &Tensor,
    grad: Option<&mut Tensor>,
    rt: &RowTargets<'_>,
    results: &mut [RowResult],
) {
    let (b, c) = (results.len(), logits.size()[1] as usize);
    let z_all = cpu_slice::<T>(logits);
    let (g, g_stride): (&mut [G], usize) = match grad {
        Some(g) => (cpu_slice_mut::<G>(g), c),
        None => (&mut [], 0),
    };
    let row_pass = RowPass::detect();
    parallel::row_blocks(
        b,
        c * CE_WORK_PER_ELEMENT,
        results,
        1,
        g,
        g_stride,
        |range, results, g| {
            let (is_f32, g_f32) = (T::KIND == Kind::Float, G::KIND == Kind::Float);
            let mut zbuf = vec![0f32; if is_f32 { 0 } else { c }];
            // f32 gradients are built in place in the output row; other dtypes go through `e`.
            let mut e = vec![0f32; if g_f32 && g_stride > 0 { 0 } else { c }];
            for (r, i) in range.enumerate() {
                let raw = &z_all[i * c..(i + 1) * c];
                let z: &[f32] = if is_f32 {
                    bytemuck::cast_slice(raw)
                } else {
                    T::widen(raw, &mut zbuf);
                    &zbuf
                };
                let g_row = (g_stride > 0).then(|| &mut g[r * c..(r + 1) * c]);
                let exps: &mut [f32] = match g_row {
                    Some(row) if g_f32 => bytemuck::cast_slice_mut(row),
                    _ => &mut e,
                };
                let (loss, correct, rest) = row_pass.loss(z, i, rt, exps);
                results[r] = RowResult { loss, correct };
                if g_stride > 0 {
                    row_pass.grad(rest, i, rt, exps);
                    if !g_f32 {
                        G::narrow(&e, &mut g[r * c..(r + 1) * c]);
                    }
                }
            }
        },
    );
}

/// The row functions, compiled once for the baseline target and once with AVX2 + FMA (picked
/// at run time). The FMA build evaluates exp's polynomial with fused multiply-adds, so its last
/// bits can differ from the baseline build's (both within 3e-7 of the exact exp).
#[derive(Clone, Copy)]
struct RowPass {
    avx2: bool,
}

impl RowPass {
    fn detect() -> RowPass {
        #[cfg(target_arch = "x86_64")]
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        RowPass { avx2 }
    }

    fn loss(self, z: &[f32], i: usize, rt: &RowTargets<'_>, e: &mut [f32]) -> (f32, bool, f32) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: the CPU supports AVX2 and FMA (checked in detect).
            return unsafe { ce_row_avx2(z, i, rt, e) };
        }
        ce_row::<false>(z, i, rt, e)
    }

    fn grad(self, rest: f32, i: usize, rt: &RowTargets<'_>, e: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: as above.
            return unsafe { ce_grad_row_avx2(rest, i, rt, e) };
        }
        ce_grad_row(rest, i, rt, e)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn ce_row_avx2(z: &[f32], i: usize, rt: &RowTargets<'_>, e: &mut [f32]) -> (f32, bool, f32) {
    ce_row::<true>(z, i, rt, e)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn ce_grad_row_avx2(rest: f32, i: usize, rt: &RowTargets<'_>, e: &mut [f32]) {
    ce_grad_row(rest, i, rt, e)
}

/// Loss, correctness and `rest` (softmax denominator - 1) of row i; leaves exp(z - max) in `e`.
#[inline(always)]
fn ce_row<const FMA: bool>(z: &[f32], i: usize, rt: &RowTargets<'_>, e: &mut [f32]) -> (f32, bool, f32) {
    let RowScan { max: m, masked, sum } = scan_row(z);
    let rest = exp_shifted_sums::<FMA>(z, m, e);
    if !rt.valid[i] {
        return (0.0, false, rest);
    }
    let (ya, yb, l) = (rt.ya[i] as usize, rt.yb[i] as usize, rt.lam[i]);
    // lse - t.z = log1p(rest) - t.(z - m), as the kernel computes it: no cancellation of m, and
    // small losses keep their precision. A row without a number (all -inf) has NaN loss. A zero
    // target weight adds nothing (0 log 0 = 0), so a masked (-inf) logit matters only where the
    // target has weight: then the loss is +inf, as PyTorch's.
    let own = weighted(l, z[ya] - m) + weighted(1.0 - l, z[yb] - m);
    let spread = if rt.off != 0.0 && masked {
        f32::NEG_INFINITY
    } else {
        sum - z.len() as f32 * m
    };
    let shifted = weighted(rt.on, own) + weighted(rt.off, spread);
    let loss = if m == f32::NEG_INFINITY {
        f32::NAN
    } else {
        rest.ln_1p() - shifted
    };
    // A row holding a NaN is never counted correct (its loss is NaN).
    (loss, !sum.is_nan() && is_first_max(z, m, ya), rest)
}

/// w * x, and exactly 0 when the weight is 0 (so 0 * -inf adds nothing), as the kernel computes it.
#[inline(always)]
fn weighted(w: f32, x: f32) -> f32 {
    if w != 0.0 {
        w * x
    } else {
        0.0
    }
}

/// Turns the exps of row i (in `e`, summing to 1 + `rest`) into its gradient (softmax - t) * w.
#[inline(always)]
fn ce_grad_row(rest: f32, i: usize, rt: &RowTargets<'_>, e: &mut [f32]) {
    if !rt.valid[i] {
        e.fill(0.0);
        return;
    }
    let inv_s = 1.0 / (1.0 + rest);
    let (w, off) = (rt.scale, rt.off);
    let (ya, yb, l) = (rt.ya[i] as usize, rt.yb[i] as usize, rt.lam[i]);
    // p - t at a maximum (e == 1, p near 1 in a confident row) as (1 - t) - rest / (1 + rest):
    // no cancellation, as in the kernel.
    let target_grad = |e_c: f32, t: f32| {
        if e_c == 1.0 {
            ((1.0 - t) - rest * inv_s) * w
        } else {
            (e_c * inv_s - t) * w
        }
    };
    let t_a = off + rt.on * l + if ya == yb { rt.on * (1.0 - l) } else { 0.0 };
    let t_b = off + rt.on * (1.0 - l) + if ya == yb { rt.on * l } else { 0.0 };
    let (g_a, g_b) = (target_grad(e[ya], t_a), target_grad(e[yb], t_b));
    for v in e.iter_mut() {
        *v = (*v * inv_s - off) * w;
    }
    e[ya] = g_a;
    e[yb] = g_b;
}

pub(in crate::ops) fn mse(pred: &Tensor, target: &Tensor, removed: i64, grad: Option<Tensor>) -> Result<LossOutput> {
    let b = pred.size()[0] as usize;
    let f = pred.numel() / b;
    let n_kept = b as i64 - removed;
    let scale = 1.0 / n_kept as f32;
    let mut losses = vec![0f32; b];
    let mut grad = grad;
    let rows = &mut losses;
    // The gradient is in the prediction's dtype, or in f32 for half predictions under autograd.
    match (pred.kind(), grad.as_ref().map(Tensor::kind)) {
        (Kind::Float, _) => mse_rows::<f32, f32>(pred, target, grad.as_mut(), scale, rows),
        (Kind::Half, Some(Kind::Float)) => mse_rows::<f16, f32>(pred, target, grad.as_mut(), scale, rows),
        (Kind::Half, _) => mse_rows::<f16, f16>(pred, target, grad.as_mut(), scale, rows),
        (_, Some(Kind::Float)) => mse_rows::<bf16, f32>(pred, target, grad.as_mut(), scale, rows),
        _ => mse_rows::<bf16, bf16>(pred, target, grad.as_mut(), scale, rows),
    }
    let valid = vec![true; b];
    let sel = select(&losses, &valid, removed);
    if let Some(g) = grad.as_mut() {
        zero_rows(g, &sel.keep, &valid, f);
    }
    Ok(output(losses, sel, Tensor::from(0i64), grad, removed))
}

/// Row losses of predictions and targets stored as T, the gradient (when asked for) as G.
fn mse_rows<T: Element, G: Element>(
    pred: &Tensor,
    target: &Tensor,
    grad: Option<&mut Tensor>,
    scale: f32,
    losses: &mut [f32],
) {
    let f = pred.numel() / losses.len();
    let (p, q) = (cpu_slice::<T>(pred), cpu_slice::<T>(target));
    let w = 2.0 * scale / f as f32;
    let (g, g_stride): (&mut [G], usize) = match grad {
        Some(g) => (cpu_slice_mut::<G>(g), f),
        None => (&mut [], 0),
    };
    parallel::row_blocks(losses.len(), f, losses, 1, g, g_stride, |range, losses, g| {
        for (r, i) in range.enumerate() {
            let (pr, qr) = (&p[i * f..(i + 1) * f], &q[i * f..(i + 1) * f]);
            let acc: f64 = pr
                .iter()
                .zip(qr)
                .map(|(&a, &b)| {
                    let d = a.to_f32() - b.to_f32();
                    (d * d) as f64
                })
                .sum();
            losses[r] = (acc / f as f64) as f32;
            if g_stride > 0 {
                fill_with(&mut g[r * f..(r + 1) * f], |k| (pr[k].to_f32() - qr[k].to_f32()) * w);
            }
        }
    });
}

/// The rows High-Loss Removal keeps, as the kernel chooses them.
pub(crate) struct Selection {
    pub keep: Vec<bool>,
    pub threshold: f32,
    pub mean: f32,
}

/// Orders losses like the kernel: larger loss -> larger key; 0 for rows that are never removed
/// (ignored rows, NaN losses).
pub(crate) fn rank_key(loss: f32, candidate: bool) -> u32 {
    if !candidate || loss.is_nan() {
        return 0;
    }
    let b = loss.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Removes the k largest keys (ties: lower index first); mean over kept valid rows in f64.
pub(crate) fn select(losses: &[f32], valid: &[bool], k: i64) -> Selection {
    let mut order: Vec<(u32, usize)> = losses
        .iter()
        .zip(valid)
        .enumerate()
        .map(|(i, (&l, &v))| (rank_key(l, v), i))
        .filter(|&(key, _)| key != 0)
        .collect();
    let k_eff = (k.max(0) as usize).min(order.len());
    let mut keep = valid.to_vec();
    let mut threshold = f32::INFINITY;
    if k_eff > 0 {
        let by_rank = |a: &(u32, usize), b: &(u32, usize)| b.0.cmp(&a.0).then(a.1.cmp(&b.1));
        order.select_nth_unstable_by(k_eff - 1, by_rank);
        for &(_, i) in &order[..k_eff] {
            keep[i] = false;
        }
        threshold = losses[order[k_eff - 1].1];
    }
    let (sum, n) = losses
        .iter()
        .zip(&keep)
        .filter(|(_, &k)| k)
        .fold((0f64, 0usize), |(s, n), (&l, _)| (s + l as f64, n + 1));
    Selection {
        keep,
        threshold,
        mean: (sum / n as f64) as f32,
    }
}

/// Zeroes the gradient rows of removed samples (valid rows that are not kept).
fn zero_rows(grad: &mut Tensor, keep: &[bool], valid: &[bool], row_len: usize) {
    let row_bytes = row_len * grad.kind().elt_size_in_bytes();
    let bytes = cpu_bytes_mut(grad);
    for (i, _) in keep.iter().zip(valid).enumerate().filter(|(_, (&k, &v))| v && !k) {
        bytes[i * row_bytes..(i + 1) * row_bytes].fill(0);
    }
}

fn output(losses: Vec<f32>, sel: Selection, correct: Tensor, grad: Option<Tensor>, removed: i64) -> LossOutput {
    LossOutput {
        loss: Tensor::from(sel.mean),
        per_sample: Tensor::from_slice(&losses),
        keep: Tensor::from_slice(&sel.keep.iter().map(|&k| k as u8).collect::<Vec<u8>>()).to_kind(Kind::Bool),
        threshold: Tensor::from(sel.threshold),
        correct,
        removed,
        grad,
    }
}

/// [`select`] over a loss tensor with an optional validity mask (all valid when None).
pub(in crate::ops) fn remove_highest(losses: &Tensor, valid: Option<&Tensor>, k: i64) -> Result<LossOutput> {
    let l = cpu_plain::<f32>(losses, Kind::Float);
    let valid: Vec<bool> = match valid {
        Some(v) => cpu_plain::<u8>(v, Kind::Bool).iter().map(|&b| b != 0).collect(),
        None => vec![true; l.len()],
    };
    let sel = select(l, &valid, k);
    Ok(output(l.to_vec(), sel, Tensor::from(0i64), None, k))
}
