//! Batched augmentation on the device: random crops with zero padding and random horizontal
//! flips as a handful of whole-batch tensor ops (pad, one gather, one where), with the per-sample
//! offsets and flips drawn from the caller's generator: no per-sample loop, reproducible runs. The
//! offsets and flips reach the device by non-blocking uploads.

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use enlighten::cuda::upload;
use enlighten::SeededRng;

/// For `[B, C, H, W]` images of any dtype: each sample is cropped back to H x W from its
/// zero-padded (by `pad` on every side) self at a uniform offset, then mirrored left-right with
/// probability 1/2 when `flip`.
pub fn random_crop_flip(x: &Tensor, pad: i64, flip: bool, rng: &mut SeededRng) -> Result<Tensor> {
    let size = x.size();
    if size.len() != 4 || x.numel() == 0 {
        return Err(Error::shape("x", "non-empty images [B, C, H, W]", &size));
    }
    if pad < 0 {
        return Err(Error::value("pad", "a padding >= 0", pad));
    }
    let (b, c, h, w) = (size[0], size[1], size[2], size[3]);
    let dev = x.device();
    let (hp, wp) = (h + 2 * pad, w + 2 * pad);
    let offsets: Vec<i64> = (0..2 * b).map(|_| rng.below(2 * pad as u64 + 1) as i64).collect();
    let flips: Vec<bool> = (0..b).map(|_| flip && rng.below(2) == 1).collect();
    // Uploaded without blocking (pinned, on the current stream): the step never waits here.
    let offsets = upload(&offsets, dev).view([b, 2]);
    let (dy, dx) = (
        offsets.select(1, 0).view([b, 1, 1]),
        offsets.select(1, 1).view([b, 1, 1]),
    );
    let rows = Tensor::arange(h, (Kind::Int64, dev)).view([1, h, 1]) + dy;
    let cols = Tensor::arange(w, (Kind::Int64, dev)).view([1, 1, w]) + dx;
    let index = (rows * wp + cols).view([b, 1, h * w]).expand([b, c, h * w], false);
    let padded = if pad > 0 {
        x.constant_pad_nd([pad, pad, pad, pad])
    } else {
        x.shallow_clone()
    };
    let cropped = padded
        .reshape([b, c, hp * wp])
        .gather(2, &index, false)
        .view([b, c, h, w]);
    if !flips.iter().any(|&f| f) {
        return Ok(cropped);
    }
    let mirror = upload(&flips, dev).view([b, 1, 1, 1]);
    Ok(cropped.flip([3]).where_self(&mirror, &cropped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// The per-sample loop the batched version replaces, for comparison.
    fn reference(x: &Tensor, pad: i64, offsets: &[(i64, i64)], flips: &[bool]) -> Tensor {
        let padded = x.constant_pad_nd([pad, pad, pad, pad]);
        let (h, w) = (x.size()[2], x.size()[3]);
        let crops: Vec<Tensor> = offsets
            .iter()
            .zip(flips)
            .enumerate()
            .map(|(i, (&(dy, dx), &f))| {
                let c = padded.get(i as i64).narrow(1, dy, h).narrow(2, dx, w);
                if f {
                    c.flip([2])
                } else {
                    c
                }
            })
            .collect();
        Tensor::stack(&crops, 0)
    }

    #[test]
    fn matches_the_per_sample_loop_and_is_seeded() {
        let x = Tensor::randint(256, [7, 3, 9, 11], (Kind::Uint8, Device::Cpu));
        for (pad, flip) in [(0, false), (2, false), (4, true), (0, true)] {
            let out = random_crop_flip(&x, pad, flip, &mut SeededRng::new(5)).unwrap();
            let mut rng = SeededRng::new(5);
            let offs: Vec<i64> = (0..14).map(|_| rng.below(2 * pad as u64 + 1) as i64).collect();
            let offsets: Vec<(i64, i64)> = offs.chunks(2).map(|c| (c[0], c[1])).collect();
            let flips: Vec<bool> = (0..7).map(|_| flip && rng.below(2) == 1).collect();
            assert!(
                out.equal(&reference(&x, pad, &offsets, &flips)),
                "pad {pad} flip {flip}"
            );
            if pad == 0 && !flip {
                assert!(out.equal(&x), "no padding, no flip: identity");
            }
            assert!(
                out.equal(&random_crop_flip(&x, pad, flip, &mut SeededRng::new(5)).unwrap()),
                "seeded"
            );
        }
        assert!(random_crop_flip(&x.get(0), 1, true, &mut SeededRng::new(0)).is_err());
        assert!(random_crop_flip(&x, -1, true, &mut SeededRng::new(0)).is_err());
    }
}
