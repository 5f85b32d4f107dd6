//! Fused Mixup and CutMix: one pass over the batch, on CUDA or on the CPU, with the same meaning.
//!
//! `out[i] = lam_i * x[i] + (1 - lam_i) * x[p(i)]` over a batch `[B, ...]` of any trailing shape,
//! with each product and the sum rounded in f32 exactly as the tch composite
//! `x * lam + x.index_select(0, perm) * (1 - lam)` rounds them: for f32 inputs the fused result is
//! bit-identical to that composite. f16/bf16 are read and written in their own type and computed
//! in f32 (rounded once, so they are closer to the exact value than the composite).
//!
//! Validation: permutations and per-sample lambdas are checked on the CPU. On CUDA they are not
//! read back (that would cost a host sync per batch): an out-of-range permutation entry writes a
//! NaN row instead of reading out of bounds, and lambdas outside [0, 1] extrapolate. The losses'
//! mixed targets use the same lambda check (`check_lambda`: one meaning for both).
//!
//! Three configs, one per op: [`MixSpec`] draws lambda, partners and boxes from the caller's
//! generator and mixes a batch with its labels (what a training loop calls); [`Mixup`] and
//! [`CutMix`] mix with values already drawn. The spec's modes ([`LambdaMode`], [`PairingMode`])
//! are plain numbers a configuration file holds; the drawn values ([`Lambda`], [`Pairing`]) hold
//! device tensors, so each is its own type. The mixed batch is new data with no autograd history.
//!
//! ```
//! use enlighten::ops::mixup::MixSpec;
//! use enlighten::SeededRng;
//! use tch::{Device, Kind, Tensor};
//!
//! # fn main() -> enlighten::Result<()> {
//! let mut rng = SeededRng::new(0);
//! let x = Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu));
//! let y = Tensor::randint(10, [8], (Kind::Int64, Device::Cpu));
//! let (mixed, targets) = MixSpec::cutmix(1.0).forward(&x, &y, &mut rng)?;
//! assert_eq!(mixed.size(), x.size());
//! assert_eq!(targets.y_b.size(), [8]);
//! # Ok(())
//! # }
//! ```

mod batch;
pub(super) mod cpu;
pub(super) mod cuda;
#[cfg(feature = "testing")]
pub mod reference;
mod spec;

pub use batch::MixedTargets;
pub use spec::{LambdaMode, MixKind, MixSpec, PairingMode};

use tch::{Device, Kind, Tensor};

use super::element::{check_batch, check_contiguous, check_float, check_kind, check_same_device, overlaps};
use crate::error::{Error, Result};

/// The mixing weight of each sample's own image.
#[derive(Debug)]
pub enum Lambda {
    /// One lambda for the whole batch (torchvision's convention), in [0, 1].
    Batch(f64),
    /// One lambda per sample (timm's elem mode): an f32 tensor `[B]` on the input's device.
    PerSample(Tensor),
}

impl Lambda {
    /// A copy that shares the per-sample tensor's storage.
    pub fn shallow_clone(&self) -> Lambda {
        match self {
            Lambda::Batch(l) => Lambda::Batch(*l),
            Lambda::PerSample(t) => Lambda::PerSample(t.shallow_clone()),
        }
    }
}

/// Which sample each sample is mixed with.
#[derive(Debug)]
pub enum Pairing {
    /// Sample i mixes with `perm[i]`: an int64 tensor `[B]` holding a permutation of 0..B, on the
    /// input's device.
    Permutation(Tensor),
    /// Sample i mixes with B-1-i (allows the in-place form).
    Flip,
    /// Sample i mixes with `x.roll(k, 0)[i]`, i.e. sample (i - k) mod B.
    Roll(i64),
}

impl Pairing {
    /// A copy that shares the permutation tensor's storage.
    pub fn shallow_clone(&self) -> Pairing {
        match self {
            Pairing::Permutation(p) => Pairing::Permutation(p.shallow_clone()),
            Pairing::Flip => Pairing::Flip,
            Pairing::Roll(k) => Pairing::Roll(*k),
        }
    }

    /// A random permutation of a batch of `batch` from `rng`, on `device`.
    pub fn permutation(batch: i64, rng: &mut crate::SeededRng, device: Device) -> Pairing {
        Pairing::Permutation(crate::cuda::upload(&rng.permutation(batch as usize), device))
    }

    /// Row i of the result is row i's partner: `t[perm]`, `t.flip(0)` or `t.roll(k, 0)`.
    pub fn partner_rows(&self, t: &Tensor) -> Tensor {
        match self {
            Pairing::Permutation(p) => t.index_select(0, p),
            Pairing::Flip => t.flip([0]),
            Pairing::Roll(k) => t.roll([*k], [0]),
        }
    }

    /// The variant's name, for messages.
    fn name(&self) -> &'static str {
        match self {
            Pairing::Permutation(_) => "Pairing::Permutation",
            Pairing::Flip => "Pairing::Flip",
            Pairing::Roll(_) => "Pairing::Roll",
        }
    }

    /// The partner of each row as an index vector on the host.
    pub fn partners(&self, batch: i64) -> Result<Vec<i64>> {
        Ok(match self {
            Pairing::Permutation(p) => {
                let p = crate::cuda::read_back(p).to_kind(Kind::Int64).contiguous();
                super::element::cpu_plain::<i64>(&p, Kind::Int64).to_vec()
            }
            Pairing::Flip => (0..batch).map(|i| batch - 1 - i).collect(),
            Pairing::Roll(k) => (0..batch).map(|i| (i - k).rem_euclid(batch)).collect(),
        })
    }
}

/// Per-channel normalisation `(x / 255 - mean_c) / std_c` applied while reading u8 images.
#[derive(Debug)]
pub struct Normalize {
    mean: Vec<f64>,
    std: Vec<f64>,
    /// 1 / (255 std_c) and -mean_c / std_c as f32 [C] on the device the kernel runs on.
    scale: Tensor,
    bias: Tensor,
}

impl Normalize {
    /// Per-channel `mean` and `std` of the pixels scaled to [0, 1] (torchvision's `Normalize`),
    /// uploaded to `device` once.
    pub fn new(mean: &[f64], std: &[f64], device: Device) -> Result<Normalize> {
        if mean.is_empty() || mean.len() != std.len() {
            return Err(Error::value(
                "std",
                format!("{} values, one per channel like `mean`", mean.len().max(1)),
                std.len(),
            ));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::value("std", "finite values > 0", s));
        }
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(Error::value("mean", "finite values", m));
        }
        let scale: Vec<f32> = std.iter().map(|s| (1.0 / (255.0 * s)) as f32).collect();
        let bias: Vec<f32> = mean.iter().zip(std).map(|(m, s)| (-m / s) as f32).collect();
        Ok(Normalize {
            mean: mean.to_vec(),
            std: std.to_vec(),
            scale: crate::cuda::upload(&scale, device),
            bias: crate::cuda::upload(&bias, device),
        })
    }

    /// The number of channels.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// The per-channel means.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// The per-channel standard deviations.
    pub fn std(&self) -> &[f64] {
        &self.std
    }
}

/// A half-open CutMix box `[y0, y1) x [x0, x1)` in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutBox {
    /// First row.
    pub y0: i64,
    /// One past the last row.
    pub y1: i64,
    /// First column.
    pub x0: i64,
    /// One past the last column.
    pub x1: i64,
}

impl CutBox {
    /// Pixels inside the box (0 for an empty one).
    pub fn area(&self) -> i64 {
        (self.y1 - self.y0).max(0) * (self.x1 - self.x0).max(0)
    }
}

/// CutMix boxes: one for the batch, or one per sample (an int64 tensor `[B, 4]` of
/// y0, y1, x0, x1 rows on the input's device).
#[derive(Debug)]
pub enum CutBoxes {
    /// One box for every sample.
    Batch(CutBox),
    /// One box per sample: int64 `[B, 4]`.
    PerSample(Tensor),
}

impl CutBoxes {
    /// A copy that shares the per-sample tensor's storage.
    pub fn shallow_clone(&self) -> CutBoxes {
        match self {
            CutBoxes::Batch(b) => CutBoxes::Batch(*b),
            CutBoxes::PerSample(t) => CutBoxes::PerSample(t.shallow_clone()),
        }
    }
}

/// The Mixup op with drawn values: `out[i] = lam_i x[i] + (1 - lam_i) x[p(i)]`.
#[derive(Debug)]
pub struct Mixup {
    /// The weight of each sample's own image.
    pub lam: Lambda,
    /// Each sample's partner.
    pub pairing: Pairing,
}

impl Mixup {
    /// The mixed batch, in a new tensor of the input's dtype and device.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = contiguous_batch("x", x)?;
        let mut out = x.empty_like();
        crate::alloc::prefer_huge_pages(&out);
        self.mix_checked(&x, &mut out)?;
        Ok(out)
    }

    /// The mixed batch into a caller-provided contiguous tensor of the input's shape, dtype and
    /// device, so a training loop allocates nothing per batch. `out` must not overlap `x`.
    pub fn forward_into(&self, x: &Tensor, out: &mut Tensor) -> Result<()> {
        let x = contiguous_batch("x", x)?;
        check_output(out, &x, x.kind())?;
        self.mix_checked(&x, out)
    }

    /// The mixed batch in place, for [`Pairing::Flip`] only (each pair is read once and written
    /// once); `x` must be contiguous.
    pub fn forward_(&self, x: &mut Tensor) -> Result<()> {
        if !matches!(self.pairing, Pairing::Flip) {
            return Err(Error::value(
                "pairing",
                "Pairing::Flip (in place, sample i can only swap with B-1-i)",
                self.pairing.name(),
            ));
        }
        check_batch("x", x)?;
        check_float("x", x)?;
        check_contiguous("x", x)?;
        let b = x.size()[0];
        check_lambda(&self.lam, b, x)?;
        super::dispatch::on(x.device()).mixup_flip_inplace(x, &self.lam)
    }

    /// Mixup of u8 images `[B, C, ...]` with per-channel normalisation fused into the same pass,
    /// writing a new float tensor of `kind` (f32, f16 or bf16).
    pub fn forward_u8(&self, x: &Tensor, norm: &Normalize, kind: Kind) -> Result<Tensor> {
        check_kind("x", x, Kind::Uint8)?;
        let x = contiguous_batch("x", x)?;
        let size = x.size();
        if size.len() < 2 || size[1] as usize != norm.channels() {
            return Err(Error::shape(
                "x",
                format!("[B, {}, ...] (channels of `norm`)", norm.channels()),
                &size,
            ));
        }
        check_same_device("norm", &norm.scale, &x)?;
        let mut out = Tensor::empty(size.as_slice(), (kind, x.device()));
        check_float("kind", &out)?;
        let b = size[0];
        check_lambda(&self.lam, b, &x)?;
        check_pairing(&self.pairing, b, &x)?;
        super::dispatch::on(x.device()).mixup_u8(&x, norm, &self.lam, &self.pairing, &mut out)?;
        Ok(out)
    }

    /// The compact targets of a batch with labels `y` mixed by this op.
    pub fn targets(&self, y: &Tensor) -> MixedTargets {
        MixedTargets::new(y, &self.pairing, self.lam.shallow_clone())
    }

    fn mix_checked(&self, x: &Tensor, out: &mut Tensor) -> Result<()> {
        check_float("x", x)?;
        let b = x.size()[0];
        check_lambda(&self.lam, b, x)?;
        check_pairing(&self.pairing, b, x)?;
        super::dispatch::on(x.device()).mixup(x, &self.lam, &self.pairing, out)
    }
}

/// The CutMix op with drawn values: inside each sample's box the pixels come from its partner.
#[derive(Debug)]
pub struct CutMix {
    /// The pasted box(es), clipped to the image.
    pub boxes: CutBoxes,
    /// Each sample's partner.
    pub pairing: Pairing,
}

impl CutMix {
    /// CutMix of `[B, C, H, W]` (or `[B, H, W]`). Returns the mixed batch and the lambda of each
    /// sample's own image after clipping, `1 - area / (H W)` (timm's and torchvision's convention).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Lambda)> {
        let x = contiguous_batch("x", x)?;
        check_float("x", &x)?;
        let size = x.size();
        if size.len() < 3 {
            return Err(Error::shape("x", "[B, C, H, W] or [B, H, W]", &size));
        }
        let (b, h, w) = (size[0], size[size.len() - 2], size[size.len() - 1]);
        check_pairing(&self.pairing, b, &x)?;
        let boxes = clip_boxes(&self.boxes, b, h, w, &x)?;
        let mut out = x.empty_like();
        crate::alloc::prefer_huge_pages(&out);
        super::dispatch::on(x.device()).cutmix(&x, &boxes, &self.pairing, &mut out)?;
        Ok((out, box_lambda(&boxes, h, w)))
    }
}

/// The lambda of each sample's own image: the share of its pixels outside the clipped box.
fn box_lambda(boxes: &CutBoxes, h: i64, w: i64) -> Lambda {
    let hw = (h * w) as f64;
    match boxes {
        CutBoxes::Batch(bx) => Lambda::Batch(1.0 - bx.area() as f64 / hw),
        CutBoxes::PerSample(t) => {
            let areas = (t.select(1, 1) - t.select(1, 0)) * (t.select(1, 3) - t.select(1, 2));
            Lambda::PerSample(
                (areas.to_kind(Kind::Double) / hw)
                    .g_mul_scalar(-1.0)
                    .g_add_scalar(1.0)
                    .to_kind(Kind::Float),
            )
        }
    }
}

// ---- argument checks ---------------------------------------------------------------------------

/// A non-empty batch `[B, ...]` on the CPU or a CUDA device, made contiguous.
fn contiguous_batch(arg: &'static str, x: &Tensor) -> Result<Tensor> {
    check_batch(arg, x)?;
    Ok(x.contiguous())
}

fn check_output(out: &Tensor, x: &Tensor, kind: Kind) -> Result<()> {
    if out.size() != x.size() {
        return Err(Error::shape(
            "out",
            format!("{:?} (the input's shape)", x.size()),
            &out.size(),
        ));
    }
    check_kind("out", out, kind)?;
    check_same_device("out", out, x)?;
    check_contiguous("out", out)?;
    if overlaps(out, x) {
        return Err(Error::value(
            "out",
            "a tensor whose storage does not overlap `x`",
            "an overlapping tensor",
        ));
    }
    Ok(())
}

/// The one check of a lambda, for Mixup and for the losses' mixed targets: a batch lambda in
/// [0, 1]; per-sample lambdas f32, contiguous, `[batch]` on `x`'s device, and in [0, 1] when
/// they are on the CPU. CUDA lambdas are not read back (that would cost a host sync per batch):
/// values outside [0, 1] extrapolate the blend and the target.
pub(crate) fn check_lambda(lam: &Lambda, batch: i64, x: &Tensor) -> Result<()> {
    match lam {
        Lambda::Batch(l) if !(0.0..=1.0).contains(l) => Err(Error::value("lam", "a value in [0, 1]", l)),
        Lambda::Batch(_) => Ok(()),
        Lambda::PerSample(t) => {
            check_kind("lam", t, Kind::Float)?;
            check_same_device("lam", t, x)?;
            if t.size() != [batch] {
                return Err(Error::shape("lam", format!("[{batch}] (one per sample)"), &t.size()));
            }
            check_contiguous("lam", t)?;
            if t.device() == Device::Cpu {
                let values = super::element::cpu_plain::<f32>(t, Kind::Float);
                if let Some(v) = values.iter().find(|v| !(0.0..=1.0).contains(*v)) {
                    return Err(Error::value("lam", "values in [0, 1]", v));
                }
            }
            Ok(())
        }
    }
}

fn check_pairing(pairing: &Pairing, batch: i64, x: &Tensor) -> Result<()> {
    let Pairing::Permutation(p) = pairing else {
        return Ok(());
    };
    check_kind("perm", p, Kind::Int64)?;
    check_same_device("perm", p, x)?;
    if p.size() != [batch] {
        return Err(Error::shape("perm", format!("[{batch}] (the batch size)"), &p.size()));
    }
    check_contiguous("perm", p)?;
    if p.device() == Device::Cpu {
        let mut seen = vec![false; batch as usize];
        for &i in super::element::cpu_plain::<i64>(p, Kind::Int64) {
            if !(0..batch).contains(&i) || std::mem::replace(&mut seen[i as usize], true) {
                return Err(Error::value(
                    "perm",
                    format!("a permutation of 0..{batch}"),
                    format!("an entry {i} out of range or repeated"),
                ));
            }
        }
    }
    Ok(())
}

/// Boxes clipped to the image, validated, and (per sample) on the input's device, without a
/// host sync.
fn clip_boxes(boxes: &CutBoxes, batch: i64, h: i64, w: i64, x: &Tensor) -> Result<CutBoxes> {
    let clip = |b: CutBox| CutBox {
        y0: b.y0.clamp(0, h),
        y1: b.y1.clamp(0, h).max(b.y0.clamp(0, h)),
        x0: b.x0.clamp(0, w),
        x1: b.x1.clamp(0, w).max(b.x0.clamp(0, w)),
    };
    match boxes {
        CutBoxes::Batch(b) => Ok(CutBoxes::Batch(clip(*b))),
        CutBoxes::PerSample(t) => {
            check_kind("boxes", t, Kind::Int64)?;
            if t.size() != [batch, 4] {
                return Err(Error::shape(
                    "boxes",
                    format!("[{batch}, 4] (y0, y1, x0, x1 per sample)"),
                    &t.size(),
                ));
            }
            // Clipped with device ops: reading the boxes back would stall the GPU's queue. Boxes
            // made on the host go up without blocking; boxes on a device for host images are
            // a (counted) read.
            let t = match (t.device(), x.device()) {
                (Device::Cpu, _) | (_, Device::Cuda(_)) => crate::cuda::to_device_async(t, x.device())?,
                _ => crate::cuda::read_back(t),
            };
            let y0 = t.select(1, 0).clamp(0, h);
            let y1 = t.select(1, 1).clamp(0, h).maximum(&y0);
            let x0 = t.select(1, 2).clamp(0, w);
            let x1 = t.select(1, 3).clamp(0, w).maximum(&x0);
            Ok(CutBoxes::PerSample(Tensor::stack(&[y0, y1, x0, x1], 1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, Tensor};

    use super::{Lambda, MixedTargets, Mixup, Pairing};
    use crate::ops::loss::CrossEntropy;

    /// Mixup and the loss's mixed targets refuse the same per-sample lambdas, by the same name.
    #[test]
    fn per_sample_lambdas_outside_0_1_are_refused_on_the_cpu_by_mixup_and_by_the_loss() {
        let x = Tensor::randn([4, 3], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1, 2, 0]);
        for bad in [1.5f32, -0.25, f32::NAN] {
            let lam = Tensor::from_slice(&[0.5f32, bad, 0.2, 1.0]);
            let mix = Mixup {
                lam: Lambda::PerSample(lam.shallow_clone()),
                pairing: Pairing::Flip,
            };
            let mixed = mix.forward(&x);
            assert!(mixed.unwrap_err().to_string().contains("`lam`"), "mixup accepted {bad}");
            let targets = MixedTargets {
                y_a: y.shallow_clone(),
                y_b: y.flip([0]),
                lam: Lambda::PerSample(lam),
            };
            let loss = CrossEntropy::default().forward(&x, &targets);
            assert!(
                loss.unwrap_err().to_string().contains("`lam`"),
                "the loss accepted {bad}"
            );
        }
    }
}
