//! The fused CPU path: the same arithmetic as kernels/mixup.cu over contiguous slices, row
//! blocks spread over the cores. Inputs were checked by the caller.

use half::{bf16, f16};
use tch::{Kind, Tensor};

use super::{CutBoxes, Lambda, Normalize, Pairing};
use crate::error::Result;
use crate::ops::element::{
    cpu_plain, cpu_slice, cpu_slice_mut, fill_with, map2, map2_streaming, map_pair, Element, STREAM_FROM,
};
use crate::ops::parallel;

/// Same rounding as the kernel's `blend`: two rounded products, one rounded sum, no FMA.
#[inline(always)]
fn blend(x: f32, lam: f32, xp: f32, one_minus: f32) -> f32 {
    x * lam + xp * one_minus
}

/// Each row's (lambda, 1 - lambda) pair, as the kernel derives it.
fn row_lambdas(lam: &Lambda, batch: usize) -> Vec<(f32, f32)> {
    match lam {
        Lambda::Batch(l) => vec![(*l as f32, (1.0 - *l) as f32); batch],
        Lambda::PerSample(t) => cpu_plain::<f32>(t, Kind::Float).iter().map(|&l| (l, 1.0 - l)).collect(),
    }
}

fn rows_of(x: &Tensor) -> (usize, usize) {
    let b = x.size()[0] as usize;
    (b, x.numel() / b)
}

/// Runs `f(row_index, out_row)` over the rows of `out`, in parallel when the batch is large.
fn for_each_row<T: Send>(out: &mut [T], row_len: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let rows = out.len() / row_len;
    parallel::rows(rows, row_len, out, row_len, |range, block| {
        for (i, row) in range.zip(block.chunks_mut(row_len)) {
            f(i, row);
        }
    });
}

macro_rules! dispatch_float {
    ($kind:expr, $f:ident ( $($arg:expr),* )) => {
        match $kind {
            Kind::Float => $f::<f32>($($arg),*),
            Kind::Half => $f::<f16>($($arg),*),
            _ => $f::<bf16>($($arg),*),
        }
    };
}

pub(in crate::ops) fn mixup(x: &Tensor, lam: &Lambda, pairing: &Pairing, out: &mut Tensor) -> Result<()> {
    let (b, _) = rows_of(x);
    let partners = pairing.partners(b as i64)?;
    let lams = row_lambdas(lam, b);
    dispatch_float!(x.kind(), mixup_typed(x, &partners, &lams, out));
    Ok(())
}

fn mixup_typed<T: Element>(x: &Tensor, partners: &[i64], lams: &[(f32, f32)], out: &mut Tensor) {
    let (_, f) = rows_of(x);
    let src = cpu_slice::<T>(x);
    let dst = cpu_slice_mut::<T>(out);
    // An output larger than a cache is streamed out: its lines need not be read first.
    let stream = std::mem::size_of_val(dst) >= STREAM_FROM;
    for_each_row(dst, f, |i, row| {
        let p = partners[i] as usize;
        let (l, om) = lams[i];
        let (a, b) = (&src[i * f..(i + 1) * f], &src[p * f..(p + 1) * f]);
        let blend_row = |a: f32, b: f32| blend(a, l, b, om);
        if stream {
            map2_streaming(row, a, b, blend_row);
        } else {
            map2(row, a, b, blend_row);
        }
    });
}

pub(in crate::ops) fn mixup_flip_inplace(x: &mut Tensor, lam: &Lambda) -> Result<()> {
    let (b, _) = rows_of(x);
    let lams = row_lambdas(lam, b);
    dispatch_float!(x.kind(), flip_inplace_typed(x, &lams));
    Ok(())
}

fn flip_inplace_typed<T: Element>(x: &mut Tensor, lams: &[(f32, f32)]) {
    let (b, f) = rows_of(x);
    let data = cpu_slice_mut::<T>(x);
    let half = b / 2;
    let (top, rest) = data.split_at_mut(half * f);
    let (middle, bottom) = rest.split_at_mut((b - 2 * half) * f);
    let pair = |i: usize, ri: &mut [T], rj: &mut [T]| {
        let ((li, oi), (lj, oj)) = (lams[i], lams[b - 1 - i]);
        map_pair(ri, rj, |a, c| (blend(a, li, c, oi), blend(c, lj, a, oj)));
    };
    // Row i of the top half pairs with row B-1-i: the mirrored block of the bottom half.
    parallel::mirrored_row_blocks(half, f, top, bottom, |range, t, b| {
        for (i, (ri, rj)) in range.zip(t.chunks_mut(f).zip(b.chunks_mut(f).rev())) {
            pair(i, ri, rj);
        }
    });
    if !middle.is_empty() {
        let (l, om) = lams[half];
        for v in middle.iter_mut() {
            let fv = v.to_f32();
            *v = T::from_f32(blend(fv, l, fv, om));
        }
    }
}

pub(in crate::ops) fn mixup_u8(
    x: &Tensor,
    norm: &Normalize,
    lam: &Lambda,
    pairing: &Pairing,
    out: &mut Tensor,
) -> Result<()> {
    let (b, _) = rows_of(x);
    let partners = pairing.partners(b as i64)?;
    let lams = row_lambdas(lam, b);
    let scale = cpu_plain::<f32>(&norm.scale, Kind::Float);
    let bias = cpu_plain::<f32>(&norm.bias, Kind::Float);
    dispatch_float!(out.kind(), mixup_u8_typed(x, scale, bias, &partners, &lams, out));
    Ok(())
}

fn mixup_u8_typed<T: Element>(
    x: &Tensor,
    scale: &[f32],
    bias: &[f32],
    partners: &[i64],
    lams: &[(f32, f32)],
    out: &mut Tensor,
) {
    let (_, f) = rows_of(x);
    let inner = f / scale.len();
    let src = cpu_plain::<u8>(x, Kind::Uint8);
    for_each_row(cpu_slice_mut::<T>(out), f, |i, row| {
        let p = partners[i] as usize;
        let (l, om) = lams[i];
        let (a, b) = (&src[i * f..(i + 1) * f], &src[p * f..(p + 1) * f]);
        for (c, ((o, a), b)) in row
            .chunks_mut(inner)
            .zip(a.chunks(inner))
            .zip(b.chunks(inner))
            .enumerate()
        {
            let (s, o_) = (scale[c], bias[c]);
            fill_with(o, |k| blend(a[k] as f32 * s + o_, l, b[k] as f32 * s + o_, om));
        }
    });
}

pub(in crate::ops) fn cutmix(x: &Tensor, boxes: &CutBoxes, pairing: &Pairing, out: &mut Tensor) -> Result<()> {
    let size = x.size();
    let b = size[0];
    let partners = pairing.partners(b)?;
    let rows: Vec<[i64; 4]> = match boxes {
        CutBoxes::Batch(bx) => vec![[bx.y0, bx.y1, bx.x0, bx.x1]; b as usize],
        CutBoxes::PerSample(t) => cpu_plain::<i64>(t, Kind::Int64)
            .chunks_exact(4)
            .map(|r| [r[0], r[1], r[2], r[3]])
            .collect(),
    };
    let (h, w) = (size[size.len() - 2] as usize, size[size.len() - 1] as usize);
    dispatch_float!(x.kind(), cutmix_typed(x, &rows, &partners, h, w, out));
    Ok(())
}

fn cutmix_typed<T: Element>(x: &Tensor, boxes: &[[i64; 4]], partners: &[i64], h: usize, w: usize, out: &mut Tensor) {
    let (_, f) = rows_of(x);
    let src = cpu_slice::<T>(x);
    for_each_row(cpu_slice_mut::<T>(out), f, |i, row| {
        let p = partners[i] as usize;
        row.copy_from_slice(&src[i * f..(i + 1) * f]);
        let [y0, y1, x0, x1] = boxes[i].map(|v| v as usize);
        let partner = &src[p * f..(p + 1) * f];
        for plane in (0..f).step_by(h * w) {
            for y in y0..y1 {
                let at = plane + y * w;
                row[at + x0..at + x1].copy_from_slice(&partner[at + x0..at + x1]);
            }
        }
    });
}
