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
//! [`CrossEntropy::forward`], [`Mse::forward`] and [`LmCrossEntropy::forward`] return the loss
//! as the output of a real autograd node (C++, bridge/autograd.cpp: tch has no custom Function),
//! so `loss.backward()` and tch's optimisers work as with tch's own losses. The node keeps the
//! kernel's gradient, and its backward hands it on scaled by the incoming gradient, with no
//! forward work repeated and no host sync. An incoming gradient of exactly 1 (a plain
//! `loss.backward()`) hands a gradient kept in the input's dtype on as it is, and a leaf takes it
//! without a copy: on the CPU the node reads the 1, on CUDA the in-place scaling kernel reads it
//! on the device and leaves the gradient untouched (any other scale is applied in place there,
//! unless the graph is retained or the caller holds the gradient's storage). Double
//! backward is refused with an error; under no-grad the loss comes back detached. An input that
//! does not require grad gets no node and no gradient is computed.
//!
//! Mixed precision: for f16/bf16 inputs the node keeps the gradient in f32, and its backward
//! multiplies it by the incoming gradient in f32 and rounds once to the input's dtype. Under
//! loss scaling the incoming gradient is the scale (`(loss * 65536).backward()`), so the small
//! entries of `(softmax - t) / n_kept` are scaled up before they are rounded, as in PyTorch's
//! own losses, instead of flushing to 0 in f16 first. With an incoming gradient of 1 the result
//! has the bits of `loss_and_grad`'s gradient. The price: the forward writes 4 bytes an element
//! instead of 2, and the node holds twice the memory of a half gradient until backward.
//!
//! `forward_with_stats` returns the same loss with the per-sample losses, the keep mask and the
//! counts ([`LossOutput`]). `loss_and_grad` is the non-differentiable form: the kernel's gradient
//! as a plain tensor, for a loss post-processed before the backward pass (a removal decided
//! across data-parallel ranks, [`reweight_over`]), made differentiable with [`attach_gradient`].
//!
//! ```
//! use enlighten::ops::loss::CrossEntropy;
//! use tch::{Device, Kind, Tensor};
//!
//! # fn main() -> enlighten::Result<()> {
//! let logits = Tensor::randn([8, 10], (Kind::Float, Device::Cpu)).set_requires_grad(true);
//! let labels = Tensor::randint(10, [8], (Kind::Int64, Device::Cpu));
//! let loss = CrossEntropy::with_removal(0.25).forward(&logits, &labels)?; // 2 of 8 rows dropped
//! loss.backward();
//! assert_eq!(logits.grad().size(), [8, 10]);
//! # Ok(())
//! # }
//! ```

pub(super) mod cpu;
pub(super) mod cuda;
#[cfg(feature = "testing")]
pub mod reference;
mod select;
mod sequence;

pub use select::{remove_highest, reweight, reweight_over, RunningQuantile};
pub use sequence::{LmCrossEntropy, SequenceRank};

use tch::{Device, Kind, Tensor};

use super::element::{check_batch, check_float, check_kind, check_same_device};
use super::mixup::{check_lambda, Lambda, MixedTargets};
use crate::error::{Error, Result};

/// What each sample's loss is measured against. `&Tensor` (class indices) and `&MixedTargets`
/// convert into it, so the ops take either directly.
#[derive(Debug, Clone, Copy)]
pub enum Targets<'a> {
    /// Class indices, int64 `[B]`.
    Index(&'a Tensor),
    /// Mixup's compact targets: `lam` of `y_a`, `1 - lam` of `y_b`.
    Mixed(&'a MixedTargets),
}

/// The cross-entropy op: logits `[B, C]` against class indices or Mixup's compact targets,
/// with label smoothing, `ignore_index` and High-Loss Removal. See the module docs.
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
    /// Plain cross-entropy: no smoothing, no ignored label, nothing removed.
    fn default() -> Self {
        CrossEntropy {
            label_smoothing: 0.0,
            ignore_index: None,
            drop_share: 0.0,
        }
    }
}

impl<'a> From<&'a Tensor> for Targets<'a> {
    /// Class indices.
    fn from(y: &'a Tensor) -> Targets<'a> {
        Targets::Index(y)
    }
}

impl<'a> From<&'a MixedTargets> for Targets<'a> {
    /// Mixup's compact targets.
    fn from(t: &'a MixedTargets) -> Targets<'a> {
        Targets::Mixed(t)
    }
}

/// Everything one loss launch produces; all tensors live on the input's device.
#[derive(Debug)]
pub struct LossOutput {
    /// Mean loss over kept rows, f32 scalar. From `forward_with_stats` it carries the autograd
    /// node (when the input requires grad); from `loss_and_grad` it is a plain value.
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
    /// d loss / d input in the input's dtype: `Some` from `loss_and_grad`, `None` where an
    /// autograd node holds it (in f32 for f16/bf16 inputs, see the module docs).
    pub grad: Option<Tensor>,
}

/// Rows to remove for a share r of a batch of b: floor(r b), computed on the host.
pub fn removed_rows(drop_share: f64, batch: i64) -> i64 {
    (drop_share * batch as f64).floor() as i64
}

impl CrossEntropy {
    /// High-Loss Removal of the `drop_share` highest losses of each batch, nothing else.
    pub fn with_removal(drop_share: f64) -> CrossEntropy {
        CrossEntropy {
            drop_share,
            ..CrossEntropy::default()
        }
    }

    /// The mean loss over kept rows, differentiable with respect to `logits` (see the module
    /// docs): one or two launches on CUDA (three with `ignore_index`), no host sync.
    pub fn forward<'t>(&self, logits: &Tensor, targets: impl Into<Targets<'t>>) -> Result<Tensor> {
        Ok(self.forward_with_stats(logits, targets)?.loss)
    }

    /// [`forward`](Self::forward) with the per-sample losses, keep mask and counts.
    pub fn forward_with_stats<'t>(&self, logits: &Tensor, targets: impl Into<Targets<'t>>) -> Result<LossOutput> {
        let targets = targets.into();
        differentiable(logits, |input, grad_kind| self.compute(input, targets, grad_kind))
    }

    /// The loss and the kernel's gradient `d loss / d logits` as plain tensors, no autograd node
    /// (see [`attach_gradient`]).
    pub fn loss_and_grad<'t>(&self, logits: &Tensor, targets: impl Into<Targets<'t>>) -> Result<LossOutput> {
        self.compute(logits, targets.into(), Some(logits.kind()))
    }

    /// [`loss_and_grad`](Self::loss_and_grad) with the gradient in f32 whatever the logits'
    /// dtype, for a gradient that is re-weighted ([`reweight_over`]) and then attached
    /// ([`attach_gradient`]) under mixed precision: the node scales it by the incoming gradient
    /// (the loss scale) before it is rounded to f16/bf16, as [`forward`](Self::forward) does.
    pub fn loss_and_grad_f32<'t>(&self, logits: &Tensor, targets: impl Into<Targets<'t>>) -> Result<LossOutput> {
        self.compute(logits, targets.into(), Some(NODE_GRAD_KIND))
    }

    /// [`loss_and_grad`](Self::loss_and_grad) writing the gradient into a caller-provided
    /// contiguous tensor of the logits' shape, dtype and device (no allocation per step);
    /// [`LossOutput::grad`] shares it.
    pub fn loss_and_grad_into<'t>(
        &self,
        logits: &Tensor,
        targets: impl Into<Targets<'t>>,
        grad: &mut Tensor,
    ) -> Result<LossOutput> {
        check_grad_buffer(grad, logits)?;
        self.launch(logits, targets.into(), Some(grad.shallow_clone()))
    }

    /// The output with the gradient in a new tensor of dtype `grad_kind`, or without one (None).
    fn compute(&self, logits: &Tensor, targets: Targets<'_>, grad_kind: Option<Kind>) -> Result<LossOutput> {
        let grad = grad_kind.map(|kind| Tensor::empty(logits.size().as_slice(), (kind, logits.device())));
        self.launch(logits, targets, grad)
    }

    fn launch(&self, logits: &Tensor, targets: Targets<'_>, grad: Option<Tensor>) -> Result<LossOutput> {
        let logits = logits.contiguous();
        let args = check_ce(&logits, targets, self)?;
        super::dispatch::on(logits.device()).cross_entropy(&logits, &args, self, grad)
    }
}

/// The MSE op: per-sample mean squared error over `[B, ...]` with High-Loss Removal; the loss
/// is the mean over kept rows of each row's mean squared error. Same forms as [`CrossEntropy`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Mse {
    /// High-Loss Removal share r in [0, 1): the floor(r B) largest row losses are dropped.
    pub drop_share: f64,
}

impl Mse {
    /// The mean loss over kept rows, differentiable with respect to `pred`.
    pub fn forward(&self, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
        Ok(self.forward_with_stats(pred, target)?.loss)
    }

    /// [`forward`](Self::forward) with the per-sample losses, keep mask and counts.
    pub fn forward_with_stats(&self, pred: &Tensor, target: &Tensor) -> Result<LossOutput> {
        differentiable(pred, |input, grad_kind| self.launch(input, target, grad_kind))
    }

    /// The loss and the kernel's gradient `d loss / d pred` as plain tensors, no autograd node.
    pub fn loss_and_grad(&self, pred: &Tensor, target: &Tensor) -> Result<LossOutput> {
        self.launch(pred, target, Some(pred.kind()))
    }

    /// [`loss_and_grad`](Self::loss_and_grad) with the gradient in f32 whatever the prediction's
    /// dtype, for a gradient that is re-weighted ([`reweight_over`]) and then attached
    /// ([`attach_gradient`]) under mixed precision: the node scales it by the incoming gradient
    /// (the loss scale) before it is rounded to f16/bf16, as [`forward`](Self::forward) does.
    pub fn loss_and_grad_f32(&self, pred: &Tensor, target: &Tensor) -> Result<LossOutput> {
        self.launch(pred, target, Some(NODE_GRAD_KIND))
    }

    /// The output with a gradient of dtype `grad_kind`, or without one (None).
    fn launch(&self, pred: &Tensor, target: &Tensor, grad_kind: Option<Kind>) -> Result<LossOutput> {
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
        check_share(self.drop_share)?;
        let k = removed_rows(self.drop_share, b);
        let grad = grad_kind.map(|kind| Tensor::empty(pred.size().as_slice(), (kind, pred.device())));
        super::dispatch::on(pred.device()).mse(&pred, &target, k, grad)
    }
}

/// The dtype of the gradient an autograd node keeps, whatever the input's: f32, so that the
/// incoming gradient (the loss scale under mixed precision) multiplies it before it is rounded
/// to f16/bf16 (see the module docs).
const NODE_GRAD_KIND: Kind = Kind::Float;

/// The differentiable form shared by the losses: `run(input, grad_kind)` computes the output
/// with a gradient of dtype `grad_kind` (None: no gradient); when `input` requires grad it runs
/// on the detached input with an f32 gradient, which becomes an autograd node's
/// ([`attach_gradient`]). Otherwise no gradient is computed.
fn differentiable(input: &Tensor, run: impl FnOnce(&Tensor, Option<Kind>) -> Result<LossOutput>) -> Result<LossOutput> {
    if input.requires_grad() {
        attach_gradient(input, run(&input.detach(), Some(NODE_GRAD_KIND))?)
    } else {
        run(input, None)
    }
}

/// An output of `loss_and_grad` made differentiable: its loss becomes the output of an autograd
/// node that holds its gradient, so `backward` writes that gradient (times the incoming one)
/// into `input`'s. The returned output's `grad` is `None`. For losses post-processed before the
/// backward pass, such as a removal decided across data-parallel ranks ([`reweight_over`]).
///
/// The gradient may be in `input`'s dtype or, for an f16/bf16 input, in f32: the node then
/// scales it in f32 and rounds once (loss scaling without underflow, see the module docs).
/// `loss_and_grad`'s gradient is in the input's dtype, so under f16 loss scaling its smallest
/// entries are already 0 when the node scales them: use `loss_and_grad_f32` for a gradient that
/// is attached afterwards.
pub fn attach_gradient(input: &Tensor, mut out: LossOutput) -> Result<LossOutput> {
    let grad = out
        .grad
        .take()
        .ok_or_else(|| Error::Internal("the loss output holds no gradient to attach".into()))?;
    out.loss = crate::bridge::attach_gradient(input, &out.loss, grad)?;
    Ok(out)
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
