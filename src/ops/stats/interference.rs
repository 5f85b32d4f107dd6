//! Gradient interference (the paper's Fig. 3 analysis): for sample pairs (i, j), the cosine
//! between the gradient of the vanilla loss on {x_i, x_j} and the gradient of the Mixup loss on
//! lam x_i + (1 - lam) x_j, and the interference ratio (the share of the Mixup gradient
//! perpendicular to the vanilla one). Pairs are looped: tch has no vmap.

use tch::Tensor;

use super::{dot_norms, Accumulate};
use crate::error::{Error, Result};
use crate::ops::mixup::{Lambda, MixedTargets};

/// Per-pair values and their summaries.
#[derive(Debug, Clone, PartialEq)]
pub struct InterferenceStats {
    /// cos of each pair of gradients.
    pub cosines: Vec<f64>,
    /// Each pair's interference ratio ([`DotNorms::interference_ratio`](super::DotNorms::interference_ratio)).
    pub ratios: Vec<f64>,
    /// The mean of `cosines`.
    pub mean_cosine: f64,
    /// Share of pairs whose angle exceeds 60 degrees (cos < 0.5).
    pub share_below_half: f64,
    /// Share of pairs whose angle exceeds 90 degrees (cos < 0).
    pub share_below_zero: f64,
    /// The mean of `ratios`.
    pub mean_ratio: f64,
}

impl InterferenceStats {
    fn from_pairs(cosines: Vec<f64>, ratios: Vec<f64>) -> InterferenceStats {
        let n = cosines.len().max(1) as f64;
        let share = |pred: fn(f64) -> bool| cosines.iter().filter(|&&c| pred(c)).count() as f64 / n;
        InterferenceStats {
            mean_cosine: cosines.iter().sum::<f64>() / n,
            share_below_half: share(|c| c < 0.5),
            share_below_zero: share(|c| c < 0.0),
            mean_ratio: ratios.iter().sum::<f64>() / n,
            cosines,
            ratios,
        }
    }
}

/// The arguments both interference measurements share: lam in [0, 1], some parameters, pair
/// indices inside `x`.
fn check_pairs(params: &[Tensor], x: &Tensor, pairs: &[(i64, i64)], lam: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&lam) {
        return Err(Error::value("lam", "a value in [0, 1]", lam));
    }
    if params.is_empty() {
        return Err(Error::value(
            "params",
            "a non-empty list of parameters",
            "an empty list",
        ));
    }
    let n = x.size().first().copied().unwrap_or(0);
    if let Some(&(i, j)) = pairs
        .iter()
        .find(|&&(i, j)| !(0..n).contains(&i) || !(0..n).contains(&j))
    {
        return Err(Error::value(
            "pairs",
            format!("indices in [0, {n})"),
            format!("({i}, {j})"),
        ));
    }
    Ok(())
}

/// `loss(inputs, targets)` must return a scalar built from `params` by autograd; it is called
/// with the pair's two samples and unmixed targets, then with their mix at `lam` and mixed
/// targets. `x` is `[N, ...]`, `y` int64 `[N]`, pairs index into them.
pub fn gradient_interference(
    params: &[Tensor],
    x: &Tensor,
    y: &Tensor,
    pairs: &[(i64, i64)],
    lam: f64,
    loss: impl Fn(&Tensor, &MixedTargets) -> Result<Tensor>,
) -> Result<InterferenceStats> {
    check_pairs(params, x, pairs, lam)?;
    let (mut cosines, mut ratios) = (Vec::with_capacity(pairs.len()), Vec::with_capacity(pairs.len()));
    for &pair in pairs {
        let (cosine, ratio) = batch_interference(params, x, y, &[pair], lam, &loss)?;
        cosines.push(cosine);
        ratios.push(ratio);
    }
    Ok(InterferenceStats::from_pairs(cosines, ratios))
}

/// The batch form: the vanilla gradient of the loss over all 2B samples of `pairs`, against
/// the Mixup gradient over their B mixes at `lam`; returns (cosine, interference ratio). With
/// one pair it is [`gradient_interference`]'s value for that pair; over more samples the
/// per-sample interference averages out (the paper's diminishing effect).
pub fn batch_interference(
    params: &[Tensor],
    x: &Tensor,
    y: &Tensor,
    pairs: &[(i64, i64)],
    lam: f64,
    loss: impl Fn(&Tensor, &MixedTargets) -> Result<Tensor>,
) -> Result<(f64, f64)> {
    if pairs.is_empty() {
        return Err(Error::value("pairs", "at least one pair", "an empty list"));
    }
    check_pairs(params, x, pairs, lam)?;
    let device = x.device();
    let first = crate::cuda::upload(&pairs.iter().map(|p| p.0).collect::<Vec<_>>(), device);
    let second = crate::cuda::upload(&pairs.iter().map(|p| p.1).collect::<Vec<_>>(), device);
    let (xa, xb) = (x.index_select(0, &first), x.index_select(0, &second));
    let (ya, yb) = (y.index_select(0, &first), y.index_select(0, &second));
    let vanilla = loss(
        &Tensor::cat(&[&xa, &xb], 0),
        &MixedTargets::unmixed(&Tensor::cat(&[&ya, &yb], 0)),
    )?;
    let g_vanilla = Tensor::run_backward(&[vanilla], params, false, false);
    let mixed = loss(
        &(xa * lam + xb * (1.0 - lam)),
        &MixedTargets {
            y_a: ya,
            y_b: yb,
            lam: Lambda::Batch(lam),
        },
    )?;
    let g_mixup = Tensor::run_backward(&[mixed], params, false, false);
    let sums = dot_norms(
        &g_vanilla.iter().collect::<Vec<_>>(),
        &g_mixup.iter().collect::<Vec<_>>(),
        Accumulate::F64,
    )?;
    Ok((sums.cosine(), sums.interference_ratio()))
}
