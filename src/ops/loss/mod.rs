//! Per-sample losses with High-Loss Removal, their gradient computed in the same pass, and no
//! host sync on CUDA.
//!
//! Cross-entropy of logits `[B, C]` against class indices or Mixup's compact targets, with label
//! smoothing and `ignore_index`: sample i's target is `t = (1-eps) (lam e_ya + (1-lam) e_yb) + eps/C`,
//! its loss `logsumexp(z) - t.z`. High-Loss Removal drops the `k = floor(r B)` largest losses
//! (ties: the lower index is dropped first); the reported loss is the mean over kept, non-ignored
//! rows, and the gradient `dlogits = (softmax - t) / n_kept` on kept rows, 0 elsewhere.
//!
//! When nothing is kept (every row ignored) the loss is NaN, as PyTorch's mean is, and the
//! gradient is 0.
//!
//! NaN: a NaN loss is never removed (it ranks below every number), so it always reaches the mean
//! and a training loop sees it. Labels and per-sample lambdas are range-checked on the CPU; on
//! CUDA (no host sync) an out-of-range label makes that row's loss and gradient NaN instead of
//! reading out of bounds, and a lambda outside [0, 1] extrapolates the target (Mixup's meaning).
//!
//! The `_autograd` forms return the kernel's loss as the output of a real autograd node (C++,
//! bridge/autograd.cpp: tch has no custom Function): the node keeps the kernel's gradient, and
//! its backward hands it on scaled by the incoming gradient, with no forward work repeated and
//! no host sync. On the CPU an incoming gradient of exactly 1 (a plain `loss.backward()`) hands
//! the gradient on as it is, and a leaf takes it without a copy. Double backward is refused with
//! an error; under no-grad the loss comes back detached.

mod cpu;
mod cuda;
#[cfg(feature = "testing")]
pub mod reference;
mod select;
mod sequence;

pub use select::{remove_highest, reweight, reweight_over, RunningQuantile};
pub use sequence::{lm_cross_entropy, lm_cross_entropy_autograd, SequenceRank};

use tch::{Device, Kind, Tensor};

use super::element::{check_batch, check_float, check_kind, check_same_device};
use super::mixup::{check_lambda, Lambda, MixedTargets};
use crate::error::{Error, Result};

/// What each sample's loss is measured against.
#[derive(Debug, Clone, Copy)]
pub enum Targets<'a> {
    /// Class indices, int64 `[B]`.
    Index(&'a Tensor),
    /// Mixup's compact targets: `lam` of `y_a`, `1 - lam` of `y_b`.
    Mixed(&'a MixedTargets),
}

/// Options of the cross-entropy op.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrossEntropy {
    /// Label smoothing eps in [0, 1].
    pub label_smoothing: f64,
    /// Rows whose (first) label equals this are ignored: loss 0, no gradient, not counted.
    pub ignore_index: Option<i64>,
    /// High-Loss Removal share r in [0, 1): the floor(r B) largest losses are dropped.
    pub drop_share: f64,
}

impl Default for CrossEntropy {
    fn default() -> Self {
        CrossEntropy {
            label_smoothing: 0.0,
            ignore_index: None,
            drop_share: 0.0,
        }
    }
}

impl CrossEntropy {
    /// High-Loss Removal of the `drop_share` highest losses of each batch, nothing else.
    pub fn with_removal(drop_share: f64) -> CrossEntropy {
        CrossEntropy {
            drop_share,
            ..CrossEntropy::default()
        }
    }
}

impl<'a> From<&'a Tensor> for Targets<'a> {
    /// Class indices: `(&labels).into()`.
    fn from(y: &'a Tensor) -> Targets<'a> {
        Targets::Index(y)
    }
}

impl<'a> From<&'a MixedTargets> for Targets<'a> {
    /// Mixup's compact targets: `(&targets).into()`.
    fn from(t: &'a MixedTargets) -> Targets<'a> {
        Targets::Mixed(t)
    }
}

/// Everything one loss launch produces; all tensors live on the input's device.
#[derive(Debug)]
pub struct LossOutput {
    /// Mean loss over kept rows, f32 scalar: the value to report.
    pub loss: Tensor,
    /// Per-sample loss, f32 `[B]` (0 for ignored rows).
    pub per_sample: Tensor,
    /// Rows that count towards the loss, bool `[B]`.
    pub keep: Tensor,
    /// The smallest removed loss, f32 scalar (+inf when nothing was removed).
    pub threshold: Tensor,
    /// Rows whose argmax equals `y_a` (ignored rows excluded), int64 scalar. 0 for MSE.
    pub correct: Tensor,
    /// Rows High-Loss Removal was asked to remove, `floor(r B)` (fewer are removed only when
    /// fewer rows are removable: ignored rows and NaN losses never are). 0 when the removal came
    /// from a keep mask ([`reweight`], [`RunningQuantile`]): `keep` says which rows count.
    pub removed: i64,
    /// d loss / d input in the input's dtype, when asked for.
    pub grad: Option<Tensor>,
}

/// Rows to remove for a share r of a batch of b: floor(r b), computed on the host.
pub fn removed_rows(drop_share: f64, batch: i64) -> i64 {
    (drop_share * batch as f64).floor() as i64
}

/// Per-sample cross-entropy, selection and (with `with_grad`) the gradient, in one or two
/// launches on CUDA (three with `ignore_index`).
pub fn cross_entropy(
    logits: &Tensor,
    targets: Targets<'_>,
    opts: &CrossEntropy,
    with_grad: bool,
) -> Result<LossOutput> {
    let grad = with_grad.then(|| Tensor::empty(logits.size().as_slice(), (logits.kind(), logits.device())));
    cross_entropy_impl(logits, targets, opts, grad)
}

/// [`cross_entropy`] writing the gradient into a caller-provided contiguous tensor of the
/// logits' shape, dtype and device (no allocation per step); `LossOutput::grad` shares it.
pub fn cross_entropy_into(
    logits: &Tensor,
    targets: Targets<'_>,
    opts: &CrossEntropy,
    grad: &mut Tensor,
) -> Result<LossOutput> {
    check_grad_buffer(grad, logits)?;
    cross_entropy_impl(logits, targets, opts, Some(grad.shallow_clone()))
}

fn cross_entropy_impl(
    logits: &Tensor,
    targets: Targets<'_>,
    opts: &CrossEntropy,
    grad: Option<Tensor>,
) -> Result<LossOutput> {
    let logits = logits.contiguous();
    let args = check_ce(&logits, targets, opts)?;
    if crate::cuda::uses_kernels(logits.device()) {
        cuda::cross_entropy(&logits, &args, opts, grad)
    } else {
        cpu::cross_entropy(&logits, &args, opts, grad)
    }
}

/// The differentiable form: a scalar whose value is the loss and whose backward writes the
/// kernel's gradient into `logits.grad()`. The gradient lives in the autograd node, so the
/// returned [`LossOutput::grad`] is `None`. See the module docs.
pub fn cross_entropy_autograd(
    logits: &Tensor,
    targets: Targets<'_>,
    opts: &CrossEntropy,
) -> Result<(Tensor, LossOutput)> {
    attach_gradient(logits, cross_entropy(&logits.detach(), targets, opts, true)?)
}

/// Per-sample mean squared error over `[B, ...]` with the same selection: the reported loss is
/// the mean over kept rows of each row's mean squared error.
pub fn mse(pred: &Tensor, target: &Tensor, drop_share: f64, with_grad: bool) -> Result<LossOutput> {
    let (pred, target) = (pred.contiguous(), target.contiguous());
    check_float("pred", &pred)?;
    let b = check_batch("pred", &pred)?;
    check_kind("target", &target, pred.kind())?;
    check_same_device("target", &target, &pred)?;
    if target.size() != pred.size() {
        return Err(Error::shape(
            "target",
            format!("{:?} (the shape of `pred`)", pred.size()),
            &target.size(),
        ));
    }
    check_share(drop_share)?;
    let k = removed_rows(drop_share, b);
    let grad = with_grad.then(|| pred.empty_like());
    if crate::cuda::uses_kernels(pred.device()) {
        cuda::mse(&pred, &target, k, grad)
    } else {
        cpu::mse(&pred, &target, k, grad)
    }
}

/// The differentiable form of [`mse`] (see [`cross_entropy_autograd`]).
pub fn mse_autograd(pred: &Tensor, target: &Tensor, drop_share: f64) -> Result<(Tensor, LossOutput)> {
    attach_gradient(pred, mse(&pred.detach(), target, drop_share, true)?)
}

/// The loss of an output computed with its gradient (`with_grad`), made differentiable: the
/// returned scalar is `out.loss` as the output of an autograd node that holds `out.grad`, so
/// `backward` writes that gradient (times the incoming one) into `input`'s. `out` comes back
/// without its gradient. For losses post-processed before the backward pass, such as a removal
/// decided across data-parallel ranks ([`reweight_over`]).
pub fn attach_gradient(input: &Tensor, mut out: LossOutput) -> Result<(Tensor, LossOutput)> {
    let grad = out
        .grad
        .take()
        .ok_or_else(|| Error::Internal("the loss kernel returned no gradient".into()))?;
    Ok((crate::bridge::attach_gradient(input, &out.loss, grad)?, out))
}

// ---- argument checks ---------------------------------------------------------------------------

/// Checked views of the targets for one launch.
pub(crate) struct CeArgs<'a> {
    pub y_a: &'a Tensor,
    /// None when the targets are plain indices (y_b = y_a).
    pub y_b: Option<&'a Tensor>,
    pub lam: Option<&'a Lambda>,
    pub removed: i64,
}

fn check_grad_buffer(grad: &Tensor, like: &Tensor) -> Result<()> {
    if grad.size() != like.size() {
        return Err(Error::shape(
            "grad",
            format!("{:?} (the shape of the input)", like.size()),
            &grad.size(),
        ));
    }
    check_kind("grad", grad, like.kind())?;
    check_same_device("grad", grad, like)?;
    if !grad.is_contiguous() {
        return Err(Error::NotContiguous {
            arg: "grad",
            size: grad.size(),
            strides: grad.stride(),
        });
    }
    if super::element::overlaps(grad, like) {
        return Err(Error::value(
            "grad",
            "a tensor whose storage does not overlap the input",
            "an overlapping tensor",
        ));
    }
    Ok(())
}

fn check_share(r: f64) -> Result<()> {
    if (0.0..1.0).contains(&r) {
        Ok(())
    } else {
        Err(Error::value("drop_share", "a share in [0, 1)", r))
    }
}

fn check_labels(
    arg: &'static str,
    y: &Tensor,
    batch: i64,
    classes: i64,
    ignore: Option<i64>,
    like: &Tensor,
) -> Result<()> {
    check_kind(arg, y, Kind::Int64)?;
    check_same_device(arg, y, like)?;
    if y.size() != [batch] {
        return Err(Error::shape(
            arg,
            format!("[{batch}] (one label per row of the logits)"),
            &y.size(),
        ));
    }
    if !y.is_contiguous() {
        return Err(Error::NotContiguous {
            arg,
            size: y.size(),
            strides: y.stride(),
        });
    }
    if y.device() == Device::Cpu {
        let labels = super::element::cpu_plain::<i64>(y, Kind::Int64);
        if let Some(bad) = labels
            .iter()
            .find(|&&l| !(0..classes).contains(&l) && Some(l) != ignore)
        {
            let also = ignore.map(|i| format!(" or the ignore_index {i}")).unwrap_or_default();
            return Err(Error::value(arg, format!("labels in [0, {classes}){also}"), bad));
        }
    }
    Ok(())
}

fn check_ce<'a>(logits: &Tensor, targets: Targets<'a>, opts: &CrossEntropy) -> Result<CeArgs<'a>> {
    check_float("logits", logits)?;
    let b = check_batch("logits", logits)?;
    if logits.dim() != 2 {
        return Err(Error::shape(
            "logits",
            "[B, C] (flatten sequence dimensions first)",
            &logits.size(),
        ));
    }
    let c = logits.size()[1];
    if !(0.0..=1.0).contains(&opts.label_smoothing) {
        return Err(Error::value(
            "label_smoothing",
            "a value in [0, 1]",
            opts.label_smoothing,
        ));
    }
    check_share(opts.drop_share)?;
    let removed = removed_rows(opts.drop_share, b);
    Ok(match targets {
        Targets::Index(y) => {
            check_labels("y", y, b, c, opts.ignore_index, logits)?;
            CeArgs {
                y_a: y,
                y_b: None,
                lam: None,
                removed,
            }
        }
        Targets::Mixed(t) => {
            check_labels("y_a", &t.y_a, b, c, opts.ignore_index, logits)?;
            check_labels("y_b", &t.y_b, b, c, opts.ignore_index, logits)?;
            check_lambda(&t.lam, b, logits)?;
            CeArgs {
                y_a: &t.y_a,
                y_b: Some(&t.y_b),
                lam: Some(&t.lam),
                removed,
            }
        }
    })
}
