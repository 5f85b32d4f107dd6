//! Selection on its own: rank any per-sample losses, re-weight an output by a keep mask, and
//! the running-quantile mode (drop what exceeds the q-quantile of recent losses, as in loss
//! truncation). All of it stays on the device: no host sync.

use tch::{Device, Kind, Tensor};

use super::{check_share, removed_rows, LossOutput};
use crate::error::{Error, Result};
use crate::ops::element::{check_kind, check_same_device};

fn check_losses(losses: &Tensor) -> Result<i64> {
    check_kind("losses", losses, Kind::Float)?;
    let size = losses.size();
    if size.len() != 1 || size[0] == 0 {
        return Err(Error::shape("losses", "a non-empty [B]", &size));
    }
    Ok(size[0])
}

/// Drops the floor(r B) largest of `losses` (f32 `[B]`; ties: lower index first; NaN never
/// dropped). `valid` (bool `[B]`) marks rows that count at all. The output carries the keep
/// mask, the threshold and the mean over kept rows; no gradient.
pub fn remove_highest(losses: &Tensor, valid: Option<&Tensor>, drop_share: f64) -> Result<LossOutput> {
    let b = check_losses(losses)?;
    check_share(drop_share)?;
    let losses = losses.contiguous();
    let valid = valid.map(|v| -> Result<Tensor> {
        check_kind("valid", v, Kind::Bool)?;
        check_same_device("valid", v, &losses)?;
        if v.size() != [b] {
            return Err(Error::shape("valid", format!("[{b}] (one per loss)"), &v.size()));
        }
        Ok(v.contiguous())
    });
    let valid = valid.transpose()?;
    let k = removed_rows(drop_share, b);
    crate::ops::dispatch::on(losses.device()).remove_highest(&losses, valid.as_ref(), k)
}

/// Applies a keep mask (bool `[B]`) to an output computed with nothing removed: the loss
/// becomes the mean over kept rows and the gradient rows are re-weighted from 1/n_valid to
/// keep/n_kept, with device ops only.
pub fn reweight(out: LossOutput, keep: &Tensor) -> Result<LossOutput> {
    reweight_over(out, keep, None)
}

/// [`reweight`] with the kept rows' sum divided by `count` (an f32 scalar on the output's
/// device) instead of their number: data parallelism divides by the kept rows of the global
/// batch over the world size, so that the ranks' averaged gradient is the global batch's mean.
pub fn reweight_over(out: LossOutput, keep: &Tensor, count: Option<&Tensor>) -> Result<LossOutput> {
    let b = out.per_sample.size()[0];
    check_kind("keep", keep, Kind::Bool)?;
    check_same_device("keep", keep, &out.per_sample)?;
    if keep.size() != [b] {
        return Err(Error::shape("keep", format!("[{b}] (one per row)"), &keep.size()));
    }
    if let Some(c) = count {
        check_kind("count", c, Kind::Float)?;
        check_same_device("count", c, &out.per_sample)?;
    }
    let keep = keep.logical_and(&out.keep);
    let n_valid = out.keep.sum(Kind::Float);
    let kept = keep.to_kind(Kind::Float);
    let n_kept = match count {
        Some(c) => c.shallow_clone(),
        None => kept.sum(Kind::Float),
    };
    let loss = (&out.per_sample * &kept).sum(Kind::Float) / &n_kept;
    let grad = match out.grad {
        Some(g) => {
            // A count of 0 comes with no kept row here: the clamp only avoids 0 / 0.
            let floor = if count.is_some() {
                f64::from(f32::MIN_POSITIVE)
            } else {
                1.0
            };
            let factor = &kept * n_valid / n_kept.clamp_min(floor);
            let mut shape = vec![b];
            shape.resize(g.dim(), 1);
            Some(&g * factor.view(shape.as_slice()).to_kind(g.kind()))
        }
        None => None,
    };
    Ok(LossOutput {
        loss,
        per_sample: out.per_sample,
        keep,
        threshold: out.threshold,
        correct: out.correct,
        removed: 0,
        grad,
    })
}

/// Running-quantile removal: a sample is dropped when its loss exceeds the q-quantile of the
/// last `window` losses seen before its batch. The history lives on the device (a ring of
/// f32, NaN = empty), so nothing is read back.
#[derive(Debug)]
pub struct RunningQuantile {
    q: f64,
    window: i64,
    history: Tensor,
    next: i64,
    filled: i64,
}

impl RunningQuantile {
    /// Drops losses above the `q`-quantile (0 < q < 1) of the last `window` losses; the history lives on `device`.
    pub fn new(q: f64, window: usize, device: Device) -> Result<RunningQuantile> {
        if !(q > 0.0 && q < 1.0) {
            return Err(Error::value("q", "a quantile in (0, 1)", q));
        }
        if window == 0 {
            return Err(Error::value("window", "a history of at least 1 loss", 0));
        }
        let history = Tensor::full([window as i64], f64::NAN, (Kind::Float, device));
        Ok(RunningQuantile {
            q,
            window: window as i64,
            history,
            next: 0,
            filled: 0,
        })
    }

    /// Removes this batch's losses above the running quantile from `out` (an output computed
    /// with nothing removed), then adds them to the history. The first batch keeps everything.
    pub fn apply(&mut self, out: LossOutput) -> Result<LossOutput> {
        let b = out.per_sample.size()[0];
        check_same_device("out", &out.per_sample, &self.history)?;
        let keep = if self.filled == 0 {
            out.keep.shallow_clone()
        } else {
            let threshold = self.history.nanquantile_scalar(self.q, None::<i64>, false, "linear");
            out.per_sample.le_tensor(&threshold).logical_or(&out.per_sample.isnan())
        };
        // Only valid rows enter the history; ignored rows are written as NaN (empty).
        let values = out.per_sample.where_scalarother(&out.keep, f64::NAN);
        let take = b.min(self.window);
        let idx: Vec<i64> = (0..take).map(|i| (self.next + i) % self.window).collect();
        let idx = crate::cuda::upload(&idx, self.history.device());
        let _ = self.history.index_copy_(0, &idx, &values.narrow(0, b - take, take));
        self.next = (self.next + take) % self.window;
        self.filled = (self.filled + take).min(self.window);
        reweight(out, &keep)
    }
}
