//! Data-parallel gradient averaging as PyTorch's DDP does it: gradients grouped into buckets of
//! about 25 MB in reverse parameter order (the order backward produces them), each bucket
//! flattened into one buffer, one asynchronous all-reduce per bucket, all awaited before the
//! optimiser step; and the parameters broadcast from rank 0 so every rank starts identical.

use std::ffi::c_char;
use std::ptr;

use tch::{Device, Kind, Tensor};

use super::{ffi, layout, ProcessGroup};
use crate::error::check_bridge as check;
use crate::error::{Error, Result};

/// DDP's default `bucket_cap_mb`.
pub const DEFAULT_BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// The gradients of a fixed parameter list, laid out once into flat per-bucket buffers.
pub struct GradientBuckets {
    params: Vec<Tensor>,
    buckets: Vec<Bucket>,
    layout_checked: bool,
}

/// One all-reduce: the members' gradients back to back, then one presence flag per member (1
/// where the rank has a gradient), so after the sum every rank knows which parameters some rank
/// computed a gradient for.
struct Bucket {
    slots: Vec<Slot>,
    flat: Tensor,
    flags_at: i64,
}

/// A parameter's place in its bucket's buffer.
struct Slot {
    param: usize,
    offset: i64,
    numel: i64,
}

impl GradientBuckets {
    /// Buckets of [`DEFAULT_BUCKET_BYTES`] over `params` (a model's trainable variables, in the
    /// same order on every rank).
    pub fn new(params: Vec<Tensor>) -> Result<GradientBuckets> {
        GradientBuckets::with_bucket_bytes(params, DEFAULT_BUCKET_BYTES)
    }

    /// Buckets that close once they hold at least `bucket_bytes` of gradients (a parameter
    /// larger than that has a bucket of its own); a change of dtype or device also starts a new
    /// bucket. Parameters must be floating point.
    pub fn with_bucket_bytes(params: Vec<Tensor>, bucket_bytes: usize) -> Result<GradientBuckets> {
        if bucket_bytes == 0 {
            return Err(Error::value("bucket_bytes", "at least 1", 0));
        }
        for param in &params {
            if !param.defined() {
                return Err(Error::value("params", "defined tensors", "an undefined tensor"));
            }
            if !matches!(param.kind(), Kind::Half | Kind::BFloat16 | Kind::Float | Kind::Double) {
                return Err(Error::Dtype {
                    arg: "params",
                    expected: "a floating-point dtype (f16, bf16, f32, f64)".into(),
                    got: param.kind(),
                });
            }
        }
        let buckets = plan(&params, bucket_bytes)
            .into_iter()
            .map(|members| Bucket::new(&params, &members))
            .collect::<Result<_>>()?;
        Ok(GradientBuckets {
            params,
            buckets,
            layout_checked: false,
        })
    }

    /// The parameter indices of each bucket, in all-reduce order.
    pub fn buckets(&self) -> Vec<Vec<usize>> {
        self.buckets
            .iter()
            .map(|b| b.slots.iter().map(|s| s.param).collect())
            .collect()
    }

    /// Replaces every parameter's gradient by its mean over the ranks. A parameter without a
    /// gradient counts as a zero gradient; it receives the mean when another rank had one, and
    /// stays without a gradient when no rank had. The first call also checks that every rank
    /// holds the same parameter layout.
    pub fn average(&mut self, group: &ProcessGroup) -> Result<()> {
        if !self.layout_checked {
            let device = self.params.first().map_or(Device::Cpu, Tensor::device);
            group.agree(
                "params",
                &layout::fingerprint(&self.params),
                device,
                layout::show_fingerprint,
            )?;
            self.layout_checked = true;
        }
        let _no_grad = tch::no_grad_guard();
        // All buckets are in flight before the first wait, so packing overlaps communication.
        let mut pending = Vec::with_capacity(self.buckets.len());
        for bucket in &mut self.buckets {
            bucket.pack(&self.params)?;
            pending.push(group.all_reduce_sum(&[&bucket.flat])?);
        }
        let ranks = group.world_size() as f64;
        for (bucket, work) in self.buckets.iter_mut().zip(pending) {
            work.wait()?;
            let _ = bucket.flat.f_div_scalar_(ranks)?;
            bucket.unpack(&self.params)?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for GradientBuckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GradientBuckets")
            .field("params", &self.params.len())
            .field("buckets", &self.buckets())
            .finish()
    }
}

/// Parameter indices per bucket: reverse order, consecutive runs of one dtype and device, each
/// closed once it reaches `bucket_bytes`.
fn plan(params: &[Tensor], bucket_bytes: usize) -> Vec<Vec<usize>> {
    let mut buckets: Vec<Vec<usize>> = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    let mut bytes = 0usize;
    for index in (0..params.len()).rev() {
        let param = &params[index];
        let joins = open
            .first()
            .is_none_or(|&first| params[first].kind() == param.kind() && params[first].device() == param.device());
        if !joins {
            buckets.push(std::mem::take(&mut open));
            bytes = 0;
        }
        open.push(index);
        bytes += param.numel() * param.kind().elt_size_in_bytes();
        if bytes >= bucket_bytes {
            buckets.push(std::mem::take(&mut open));
            bytes = 0;
        }
    }
    if !open.is_empty() {
        buckets.push(open);
    }
    buckets
}

impl Bucket {
    fn new(params: &[Tensor], members: &[usize]) -> Result<Bucket> {
        let mut offset = 0i64;
        let slots: Vec<Slot> = members
            .iter()
            .map(|&param| {
                let numel = params[param].numel() as i64;
                offset += numel;
                Slot {
                    param,
                    offset: offset - numel,
                    numel,
                }
            })
            .collect();
        let first = &params[members[0]];
        let flat = Tensor::f_zeros([offset + slots.len() as i64], (first.kind(), first.device()))?;
        Ok(Bucket {
            slots,
            flat,
            flags_at: offset,
        })
    }

    /// Copies the gradients in (zeros where there is none) and sets the presence flags.
    fn pack(&mut self, params: &[Tensor]) -> Result<()> {
        let _ = self
            .flat
            .f_narrow(0, self.flags_at, self.slots.len() as i64)?
            .f_fill_(1.0)?;
        for (i, slot) in self.slots.iter().enumerate() {
            let param = &params[slot.param];
            let mut dst = self.slice(slot, param)?;
            let grad = param.grad();
            if grad.defined() {
                dst.f_copy_(&grad)?;
            } else {
                let _ = dst.f_zero_()?;
                let _ = self.flat.f_narrow(0, self.flags_at + i as i64, 1)?.f_zero_()?;
            }
        }
        Ok(())
    }

    /// Copies the averaged gradients back; a parameter with no gradient here gets one (a copy,
    /// the buffer is reused) when its summed flag says another rank had one. Reading that flag
    /// is the only host read, and only for such parameters.
    fn unpack(&self, params: &[Tensor]) -> Result<()> {
        for (i, slot) in self.slots.iter().enumerate() {
            let param = &params[slot.param];
            let src = self.slice(slot, param)?;
            let mut grad = param.grad();
            if grad.defined() {
                grad.f_copy_(&src)?;
            } else if enlighten::cuda::read_f64(&self.flat.f_get(self.flags_at + i as i64)?)? > 0.0 {
                let mut own = src.f_empty_like()?;
                own.f_copy_(&src)?;
                set_grad(param, &own)?;
            }
        }
        Ok(())
    }

    /// The parameter's part of the buffer, in the parameter's shape.
    fn slice(&self, slot: &Slot, param: &Tensor) -> Result<Tensor> {
        Ok(self
            .flat
            .f_narrow(0, slot.offset, slot.numel)?
            .f_view(param.size().as_slice())?)
    }
}

/// Gives `param` the gradient `grad` (tch has no setter for `.grad`).
fn set_grad(param: &Tensor, grad: &Tensor) -> Result<()> {
    let mut message: *mut c_char = ptr::null_mut();
    // SAFETY: both tensors are live for the call; the bridge shares `grad` (a reference count)
    // and never throws.
    let code = unsafe { ffi::enl_set_grad(param.as_ptr(), grad.as_ptr(), &mut message) };
    check("set_grad", code, message)
}

/// Overwrites every tensor of `params` with rank 0's, so all ranks start from the same model
/// (parameters, and buffers such as batch-norm statistics when given). The ranks first check
/// that their lists agree (count, dtypes, shapes); the values then travel in ~25 MB buckets.
pub fn broadcast_parameters(group: &ProcessGroup, params: &[Tensor]) -> Result<()> {
    for param in params {
        if !param.defined() || !param.is_contiguous() {
            return Err(Error::value(
                "params",
                "defined, contiguous tensors",
                format!("{:?}", param.size()),
            ));
        }
    }
    let device = params.first().map_or(Device::Cpu, Tensor::device);
    group.agree("params", &layout::fingerprint(params), device, layout::show_fingerprint)?;
    let _no_grad = tch::no_grad_guard();
    // The gradient buckets' layout, values in place of gradients: a few large broadcasts
    // instead of one per tensor.
    for members in plan(params, DEFAULT_BUCKET_BYTES) {
        let bucket = Bucket::new(params, &members)?;
        for slot in &bucket.slots {
            bucket.slice(slot, &params[slot.param])?.f_copy_(&params[slot.param])?;
        }
        group.broadcast_unchecked(&bucket.flat, 0)?;
        for slot in &bucket.slots {
            params[slot.param]
                .shallow_clone()
                .f_copy_(&bucket.slice(slot, &params[slot.param])?)?;
        }
    }
    Ok(())
}
