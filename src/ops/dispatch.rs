//! The one place where a tensor's device picks the implementation of an op: the CUDA kernels
//! (a CUDA tensor, or a CPU tensor while the emulator runs them) or the fused CPU path. Every op
//! checks its arguments, then calls its method on [`on`]'s answer; no op branches on the device.

use tch::{Device, Tensor};

use super::loss::{self, CeArgs, CrossEntropy, LossOutput};
use super::mixup::{self, CutBoxes, Lambda, Normalize, Pairing};
use super::stats::{self, Accumulate};
use crate::error::Result;

/// One execution path of every op, called with checked, contiguous arguments. Outputs are
/// written in place; the CUDA path only reads the `&mut` (its kernels write device memory).
pub(crate) trait Backend {
    fn cross_entropy(
        &self,
        logits: &Tensor,
        args: &CeArgs<'_>,
        opts: &CrossEntropy,
        grad: Option<Tensor>,
    ) -> Result<LossOutput>;
    fn mse(&self, pred: &Tensor, target: &Tensor, removed: i64, grad: Option<Tensor>) -> Result<LossOutput>;
    fn remove_highest(&self, losses: &Tensor, valid: Option<&Tensor>, removed: i64) -> Result<LossOutput>;
    fn mixup(&self, x: &Tensor, lam: &Lambda, pairing: &Pairing, out: &mut Tensor) -> Result<()>;
    fn mixup_flip_inplace(&self, x: &mut Tensor, lam: &Lambda) -> Result<()>;
    fn mixup_u8(&self, x: &Tensor, norm: &Normalize, lam: &Lambda, pairing: &Pairing, out: &mut Tensor) -> Result<()>;
    fn cutmix(&self, x: &Tensor, boxes: &CutBoxes, pairing: &Pairing, out: &mut Tensor) -> Result<()>;
    fn zero_counts(&self, layers: &[Tensor], batch: i64, eps: Option<f64>, alive: Option<&[Tensor]>) -> Result<Tensor>;
    fn dot_norms(&self, a: &[Tensor], b: &[Tensor], acc: Accumulate) -> Result<Tensor>;
    fn diff_sq(&self, a: &[Tensor], b: &[Tensor], copy: bool) -> Result<Tensor>;
}

/// The CUDA kernels (kernels/*.cu), launched through crate::cuda.
struct Kernels;

/// The fused CPU twins of the kernels.
struct Cpu;

/// The path that runs ops on `device`'s tensors.
pub(crate) fn on(device: Device) -> &'static dyn Backend {
    if crate::cuda::uses_kernels(device) {
        &Kernels
    } else {
        &Cpu
    }
}

impl Backend for Kernels {
    fn cross_entropy(
        &self,
        logits: &Tensor,
        args: &CeArgs<'_>,
        opts: &CrossEntropy,
        grad: Option<Tensor>,
    ) -> Result<LossOutput> {
        loss::cuda::cross_entropy(logits, args, opts, grad)
    }
    fn mse(&self, pred: &Tensor, target: &Tensor, removed: i64, grad: Option<Tensor>) -> Result<LossOutput> {
        loss::cuda::mse(pred, target, removed, grad)
    }
    fn remove_highest(&self, losses: &Tensor, valid: Option<&Tensor>, removed: i64) -> Result<LossOutput> {
        loss::cuda::remove_highest(losses, valid, removed)
    }
    fn mixup(&self, x: &Tensor, lam: &Lambda, pairing: &Pairing, out: &mut Tensor) -> Result<()> {
        mixup::cuda::mixup(x, lam, pairing, out)
    }
    fn mixup_flip_inplace(&self, x: &mut Tensor, lam: &Lambda) -> Result<()> {
        mixup::cuda::mixup_flip_inplace(x, lam)
    }
    fn mixup_u8(&self, x: &Tensor, norm: &Normalize, lam: &Lambda, pairing: &Pairing, out: &mut Tensor) -> Result<()> {
        mixup::cuda::mixup_u8(x, norm, lam, pairing, out)
    }
    fn cutmix(&self, x: &Tensor, boxes: &CutBoxes, pairing: &Pairing, out: &mut Tensor) -> Result<()> {
        mixup::cuda::cutmix(x, boxes, pairing, out)
    }
    fn zero_counts(&self, layers: &[Tensor], batch: i64, eps: Option<f64>, alive: Option<&[Tensor]>) -> Result<Tensor> {
        stats::cuda::zero_counts(layers, batch, eps, alive)
    }
    /// The kernels always accumulate each thread's share in f32 and the blocks in f64.
    fn dot_norms(&self, a: &[Tensor], b: &[Tensor], _acc: Accumulate) -> Result<Tensor> {
        stats::cuda::dot_norms(a, b)
    }
    fn diff_sq(&self, a: &[Tensor], b: &[Tensor], copy: bool) -> Result<Tensor> {
        stats::cuda::diff_sq(a, b, copy)
    }
}

impl Backend for Cpu {
    fn cross_entropy(
        &self,
        logits: &Tensor,
        args: &CeArgs<'_>,
        opts: &CrossEntropy,
        grad: Option<Tensor>,
    ) -> Result<LossOutput> {
        loss::cpu::cross_entropy(logits, args, opts, grad)
    }
    fn mse(&self, pred: &Tensor, target: &Tensor, removed: i64, grad: Option<Tensor>) -> Result<LossOutput> {
        loss::cpu::mse(pred, target, removed, grad)
    }
    fn remove_highest(&self, losses: &Tensor, valid: Option<&Tensor>, removed: i64) -> Result<LossOutput> {
        loss::cpu::remove_highest(losses, valid, removed)
    }
    fn mixup(&self, x: &Tensor, lam: &Lambda, pairing: &Pairing, out: &mut Tensor) -> Result<()> {
        mixup::cpu::mixup(x, lam, pairing, out)
    }
    fn mixup_flip_inplace(&self, x: &mut Tensor, lam: &Lambda) -> Result<()> {
        mixup::cpu::mixup_flip_inplace(x, lam)
    }
    fn mixup_u8(&self, x: &Tensor, norm: &Normalize, lam: &Lambda, pairing: &Pairing, out: &mut Tensor) -> Result<()> {
        mixup::cpu::mixup_u8(x, norm, lam, pairing, out)
    }
    fn cutmix(&self, x: &Tensor, boxes: &CutBoxes, pairing: &Pairing, out: &mut Tensor) -> Result<()> {
        mixup::cpu::cutmix(x, boxes, pairing, out)
    }
    fn zero_counts(&self, layers: &[Tensor], batch: i64, eps: Option<f64>, alive: Option<&[Tensor]>) -> Result<Tensor> {
        stats::cpu::zero_counts(layers, batch, eps, alive)
    }
    fn dot_norms(&self, a: &[Tensor], b: &[Tensor], acc: Accumulate) -> Result<Tensor> {
        stats::cpu::dot_norms(a, b, acc)
    }
    fn diff_sq(&self, a: &[Tensor], b: &[Tensor], copy: bool) -> Result<Tensor> {
        stats::cpu::diff_sq(a, b, copy)
    }
}
