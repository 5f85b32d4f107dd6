//! Training-dynamics statistics, one launch each and no host sync: zero-activation counts per
//! layer and sample (Activation Revival), dead units over a window, multi-tensor dot products and
//! norms with the cosine and interference ratio built on them (Gradient Interference), and the
//! batch-epoch norm ratio (BENR).

pub(super) mod cpu;
pub(super) mod cuda;
mod interference;
#[cfg(feature = "testing")]
pub mod reference;

pub use interference::{batch_interference, gradient_interference, InterferenceStats};

use tch::{Device, Kind, Tensor};

use super::element::check_float;
use crate::error::{Error, Result};

/// Accumulation of the multi-tensor reductions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accumulate {
    /// f32 accumulators (the CPU path; on CUDA each thread still sums in f32 then the blocks in f64).
    F32,
    /// f64 accumulators everywhere.
    F64,
}

fn check_list(arg: &'static str, tensors: &[&Tensor]) -> Result<Device> {
    let first = tensors
        .first()
        .ok_or_else(|| Error::value(arg, "a non-empty list of tensors", "an empty list"))?;
    let device = first.device();
    for t in tensors {
        check_float(arg, t)?;
        if t.device() != device {
            return Err(Error::Device {
                arg,
                expected: format!("{device:?} like the first tensor"),
                got: t.device(),
            });
        }
        if !matches!(device, Device::Cpu | Device::Cuda(_)) {
            return Err(Error::Device {
                arg,
                expected: "cpu or cuda".into(),
                got: device,
            });
        }
    }
    Ok(device)
}

/// Per layer and sample, the number of activations that are exactly zero (or |x| <= eps),
/// `[L, B]` int64 on the layers' device, in one launch over all layers. Layers are `[B, ...]`
/// with one batch size and may mix f32/f16/bf16. -0 is zero; NaN is not. `|x| <= eps` holds
/// exactly, as in f64: a value just above `eps` is not zero even where `eps` rounds up to it in
/// the layer's precision (PyTorch's `x.abs() <= eps` on an f16 tensor rounds `eps` to f16 first).
pub fn zero_counts(layers: &[&Tensor], eps: Option<f64>) -> Result<Tensor> {
    let (device, batch) = check_layers(layers, eps)?;
    let layers: Vec<Tensor> = layers.iter().map(|t| t.contiguous()).collect();
    super::dispatch::on(device).zero_counts(&layers, batch, eps, None)
}

/// Per layer, the share of its activations that count as zero ([`zero_counts`] over the layer's
/// size), read back to the host: one launch and one sync. Empty for no layers.
pub fn zero_shares(layers: &[&Tensor], eps: Option<f64>) -> Result<Vec<f64>> {
    if layers.is_empty() {
        return Ok(Vec::new());
    }
    let counts = crate::cuda::read_vec::<i64>(&zero_counts(layers, eps)?.sum_dim_intlist(1, false, Kind::Int64))?;
    Ok(counts
        .iter()
        .zip(layers)
        .map(|(&c, t)| c as f64 / t.numel() as f64)
        .collect())
}

fn check_layers(layers: &[&Tensor], eps: Option<f64>) -> Result<(Device, i64)> {
    let device = check_list("layers", layers)?;
    let batch = layers[0].size().first().copied().unwrap_or(0);
    for t in layers {
        let size = t.size();
        if size.len() < 2 || size[0] != batch || t.numel() == 0 {
            return Err(Error::shape(
                "layers",
                format!("non-empty [B, ...] activations with B = {batch} for every layer"),
                &size,
            ));
        }
    }
    if let Some(e) = eps {
        if !(e.is_finite() && e >= 0.0) {
            return Err(Error::value("eps", "a finite tolerance >= 0", e));
        }
    }
    Ok((device, batch))
}

/// The f32 threshold for which `|v| <= threshold` holds for an f32 (or f16, bf16) `v` exactly
/// when `|v| <= eps` does (`eps >= 0`): the largest f32 not above `eps` (`eps as f32` rounds to
/// nearest, so up about half the time).
pub(crate) fn f32_threshold(eps: f64) -> f32 {
    let rounded = eps as f32;
    if rounded as f64 > eps {
        // The f32 just below a positive one (rounded up from eps >= 0, so positive).
        f32::from_bits(rounded.to_bits() - 1)
    } else {
        rounded
    }
}

/// Dead units over a window (an epoch, say): per layer, which units (channels of `[B, C, ...]`,
/// features of `[B, D]`) have held a non-zero value in any sample of any batch seen since the
/// last reset. Each update also returns that batch's zero counts, in the same launch.
#[derive(Debug)]
pub struct DeadUnits {
    /// One int32 flag per unit and layer: 1 once the unit was non-zero (int32, so that the CUDA
    /// kernel's blocks set it with atomics).
    alive: Vec<Tensor>,
}

impl DeadUnits {
    /// An empty window; the first update sets the layers and their units.
    pub fn new() -> DeadUnits {
        DeadUnits { alive: Vec::new() }
    }

    /// Marks the units that are non-zero in these activations; returns the zero counts `[L, B]`.
    pub fn update(&mut self, layers: &[&Tensor], eps: Option<f64>) -> Result<Tensor> {
        let (device, batch) = check_layers(layers, eps)?;
        if self.alive.is_empty() {
            self.alive = layers
                .iter()
                .map(|t| Tensor::zeros([t.size()[1]], (Kind::Int, device)))
                .collect();
        }
        if self.alive.len() != layers.len() {
            return Err(Error::value(
                "layers",
                format!("{} layers, as in the first update", self.alive.len()),
                layers.len(),
            ));
        }
        for (t, flags) in layers.iter().zip(&self.alive) {
            if t.size()[1] != flags.size()[0] || t.device() != flags.device() {
                return Err(Error::shape(
                    "layers",
                    format!(
                        "{} units on {:?}, as in the first update",
                        flags.size()[0],
                        flags.device()
                    ),
                    &t.size(),
                ));
            }
        }
        let layers: Vec<Tensor> = layers.iter().map(|t| t.contiguous()).collect();
        super::dispatch::on(device).zero_counts(&layers, batch, eps, Some(&self.alive))
    }

    /// The share of units per layer that stayed zero since the last reset, f64 `[L]`.
    pub fn dead_share(&self) -> Tensor {
        let shares: Vec<Tensor> = self
            .alive
            .iter()
            .map(|f| 1.0 - f.to_kind(Kind::Double).mean(Kind::Double))
            .collect();
        if shares.is_empty() {
            Tensor::zeros([0], (Kind::Double, Device::Cpu))
        } else {
            Tensor::stack(&shares, 0)
        }
    }

    /// Starts a new window.
    pub fn reset(&mut self) {
        for f in &mut self.alive {
            let _ = f.zero_();
        }
    }
}

impl Default for DeadUnits {
    fn default() -> Self {
        Self::new()
    }
}

/// `<a, b>`, `|a|^2` and `|b|^2` over two lists of tensors (e.g. two gradients over all
/// parameters), as an f64 `[3]` tensor on their device, in one launch.
pub fn dot_norms(a: &[&Tensor], b: &[&Tensor], acc: Accumulate) -> Result<DotNorms> {
    let device = check_pairs(a, b)?;
    let (a, b): (Vec<Tensor>, Vec<Tensor>) = (
        a.iter().map(|t| t.contiguous()).collect(),
        b.iter().map(|t| t.contiguous()).collect(),
    );
    let sums = super::dispatch::on(device).dot_norms(&a, &b, acc)?;
    Ok(DotNorms { sums })
}

fn check_pairs(a: &[&Tensor], b: &[&Tensor]) -> Result<Device> {
    let device = check_list("a", a)?;
    check_list("b", b)?;
    if a.len() != b.len() {
        return Err(Error::value(
            "b",
            format!("{} tensors, as many as `a`", a.len()),
            b.len(),
        ));
    }
    for (x, y) in a.iter().zip(b) {
        if x.size() != y.size() || x.kind() != y.kind() || x.device() != y.device() {
            return Err(Error::Shape {
                arg: "b",
                expected: format!("{:?} {:?} on {:?} (its partner in `a`)", x.size(), x.kind(), x.device()),
                got: format!("{:?} {:?} on {:?}", y.size(), y.kind(), y.device()),
            });
        }
    }
    Ok(device)
}

/// The three sums of [`dot_norms`], still on the device; the accessors read them back.
#[derive(Debug)]
pub struct DotNorms {
    /// f64 `[3]`: dot, |a|^2, |b|^2.
    pub sums: Tensor,
}

impl DotNorms {
    fn host(&self) -> [f64; 3] {
        let v = crate::cuda::read_vec::<f64>(&self.sums).unwrap_or_else(|_| vec![f64::NAN; 3]);
        [v[0], v[1], v[2]]
    }

    /// cos(a, b) (NaN when either is zero).
    pub fn cosine(&self) -> f64 {
        let [d, aa, bb] = self.host();
        d / (aa.sqrt() * bb.sqrt())
    }

    /// |b - (b.a / |a|^2) a| / |b|: the share of b perpendicular to a (0 parallel, 1 orthogonal).
    pub fn interference_ratio(&self) -> f64 {
        let [d, aa, bb] = self.host();
        ((bb - d * d / aa).max(0.0) / bb).sqrt()
    }
}

/// Batch-epoch norm ratio: per epoch, the sum of the norms of every step's parameter update
/// divided by the norm of the net change over the epoch (>= 1; large means noisy, cancelling
/// steps). Kept on the device; one launch per step; read once per epoch.
#[derive(Debug)]
pub struct Benr {
    start: Vec<Tensor>,
    previous: Vec<Tensor>,
    /// Sum over steps of |update| (f64 scalar on the device).
    path: Tensor,
    steps: u64,
}

impl Benr {
    /// Starts an epoch at the current parameters.
    pub fn new(params: &[&Tensor]) -> Result<Benr> {
        let device = check_list("params", params)?;
        // Contiguous copies: the kernels read each tensor as flat memory.
        let snapshot = |ps: &[&Tensor]| {
            ps.iter()
                .map(|p| p.detach().contiguous().copy())
                .collect::<Vec<Tensor>>()
        };
        Ok(Benr {
            start: snapshot(params),
            previous: snapshot(params),
            path: Tensor::zeros([], (Kind::Double, device)),
            steps: 0,
        })
    }

    /// After an optimiser step: adds |params - previous| and makes params the new previous.
    pub fn step(&mut self, params: &[&Tensor]) -> Result<()> {
        let current: Vec<Tensor> = params.iter().map(|p| p.detach().contiguous()).collect();
        let refs: Vec<&Tensor> = current.iter().collect();
        let prev: Vec<&Tensor> = self.previous.iter().collect();
        check_pairs(&refs, &prev)?;
        let sq = diff_sq(&current, &self.previous, true)?;
        self.path += sq.sqrt();
        self.steps += 1;
        Ok(())
    }

    /// Ends the epoch: BENR = path / |params - start| (f64, read back once), and starts the next.
    pub fn end_epoch(&mut self, params: &[&Tensor]) -> Result<f64> {
        let current: Vec<Tensor> = params.iter().map(|p| p.detach().contiguous()).collect();
        let net = diff_sq(&current, &self.start, true)?.sqrt();
        let ratio = crate::cuda::read_f64(&(&self.path / net))?;
        let _ = self.path.zero_();
        self.steps = 0;
        Ok(ratio)
    }

    /// Steps added since the epoch started.
    pub fn steps(&self) -> u64 {
        self.steps
    }
}

/// |a - b|^2 over lists, f64 scalar on the device; with `copy`, b = a in the same pass.
fn diff_sq(a: &[Tensor], b: &[Tensor], copy: bool) -> Result<Tensor> {
    super::dispatch::on(a[0].device()).diff_sq(a, b, copy)
}
