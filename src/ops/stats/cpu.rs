//! The fused CPU paths of kernels/stats.cu, over contiguous slices.

use half::{bf16, f16};
use tch::{Kind, Tensor};

use super::Accumulate;
use crate::error::Result;
use crate::ops::element::{cpu_bytes, cpu_plain_mut, cpu_slice, cpu_slice_mut, Element};
use crate::ops::parallel;

/// Zero counts `[L, B]` and, with `alive`, the dead-unit flags (one int32 per unit and layer).
pub(in crate::ops) fn zero_counts(
    layers: &[Tensor],
    batch: i64,
    eps: Option<f64>,
    alive: Option<&[Tensor]>,
) -> Result<Tensor> {
    let b = batch as usize;
    let mut counts = vec![0i64; layers.len() * b];
    for (l, t) in layers.iter().enumerate() {
        let mut flags = alive.map(|a| a[l].shallow_clone());
        let flags_slice = flags.as_mut().map(|f| cpu_plain_mut::<i32>(f, Kind::Int));
        let out = &mut counts[l * b..(l + 1) * b];
        match t.kind() {
            Kind::Float => layer_counts::<f32>(t, eps, out, flags_slice),
            Kind::Half => layer_counts::<f16>(t, eps, out, flags_slice),
            _ => layer_counts::<bf16>(t, eps, out, flags_slice),
        }
    }
    Ok(Tensor::from_slice(&counts).view([layers.len() as i64, batch]))
}

fn layer_counts<T: Element>(t: &Tensor, eps: Option<f64>, out: &mut [i64], flags: Option<&mut [i32]>) {
    let x = cpu_slice::<T>(t);
    let b = out.len();
    let per_sample = x.len() / b;
    let units = t.size()[1] as usize;
    let inner = per_sample / units;
    // The kernel's threshold: exact for every element type (see f32_threshold).
    let eps = eps.map(super::f32_threshold);
    let is_zero = |v: f32| match eps {
        Some(e) => v.abs() <= e,
        None => v == 0.0,
    };
    parallel::rows(b, per_sample, out, 1, |range, out| {
        for (k, i) in range.enumerate() {
            out[k] = count_zeros(&x[i * per_sample..(i + 1) * per_sample], eps);
        }
    });
    // Dead units: one pass per unit block, stopping at the first non-zero value.
    if let Some(flags) = flags {
        for (u, flag) in flags.iter_mut().enumerate().filter(|(_, f)| **f == 0) {
            let alive = (0..b).any(|i| {
                let start = i * per_sample + u * inner;
                x[start..start + inner].iter().any(|v| {
                    let f = v.to_f32();
                    !is_zero(f) && !f.is_nan()
                })
            });
            *flag = i32::from(alive);
        }
    }
}

/// Values of `row` that count as zero (`|v| <= eps`, or `v == 0` without eps; NaN never).
/// f32 rows are read in place, f16/bf16 rows widened a block at a time.
fn count_zeros<T: Element>(row: &[T], eps: Option<f32>) -> i64 {
    if T::KIND == Kind::Float {
        return row_zeros(bytemuck::cast_slice(row), eps);
    }
    let mut buf = [0f32; 1024];
    row.chunks(buf.len())
        .map(|c| {
            T::widen(c, &mut buf[..c.len()]);
            row_zeros(&buf[..c.len()], eps)
        })
        .sum()
}

/// Values summed as u32 before the total takes them (no u32 sum can overflow).
const COUNT_SPAN: usize = 1 << 24;

/// The count over f32 values, 32-byte compares where the CPU has AVX2 (checked at run time; the
/// crate is built for baseline x86-64).
fn row_zeros(row: &[f32], eps: Option<f32>) -> i64 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked on the line above.
        return unsafe { row_zeros_avx2(row, eps) };
    }
    row_zeros_lanes(row, eps)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_zeros_avx2(row: &[f32], eps: Option<f32>) -> i64 {
    row_zeros_lanes(row, eps)
}

/// A u32 sum of the comparisons' 0/1 over spans, which LLVM vectorises as a reduction: packed
/// compares and subtracts into several vector accumulators, the loads contiguous (no branch per
/// element; the eps test is chosen once per row). Written as an explicit array of 16 lane
/// counters instead, the loop vectoriser took the outer loop and gathered each lane's values
/// one by one (`vinsertps`), spilling the counters: 69% of the op's time in perf.
#[inline(always)]
fn row_zeros_lanes(row: &[f32], eps: Option<f32>) -> i64 {
    #[inline(always)]
    fn count(xs: &[f32], zero: impl Fn(f32) -> bool) -> i64 {
        xs.chunks(COUNT_SPAN)
            .map(|span| i64::from(span.iter().map(|&v| u32::from(zero(v))).sum::<u32>()))
            .sum()
    }
    match eps {
        Some(e) => count(row, |v| v.abs() <= e),
        None => count(row, |v| v == 0.0),
    }
}

pub(in crate::ops) fn dot_norms(a: &[Tensor], b: &[Tensor], acc: Accumulate) -> Result<Tensor> {
    // Work items of at most DOT_ITEM elements, cut from the pairs in list order, split evenly
    // over the workers: ResNet-like lists hold most of their elements in a few last tensors, so
    // splitting by tensor count left one worker with most of the bytes. The items' sums are
    // added in list order, so the result does not depend on the number of workers.
    // Tensors are not Sync; their element bytes are.
    let pairs: Vec<(Kind, &[u8], &[u8])> = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x.kind(), cpu_bytes(x), cpu_bytes(y)))
        .collect();
    let items: Vec<(usize, usize, usize)> = pairs
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            let n = p.1.len() / p.0.elt_size_in_bytes();
            (0..n).step_by(DOT_ITEM).map(move |s| (i, s, (s + DOT_ITEM).min(n)))
        })
        .collect();
    let mut item_sums = vec![[0f64; 3]; items.len()];
    parallel::rows(items.len(), DOT_ITEM, &mut item_sums, 1, |range, out| {
        for (k, &(i, s, e)) in range.map(|r| &items[r]).enumerate() {
            let (kind, x, y) = pairs[i];
            out[k] = match kind {
                Kind::Float => sums_of::<f32>(x, y, s..e, acc),
                Kind::Half => sums_of::<f16>(x, y, s..e, acc),
                _ => sums_of::<bf16>(x, y, s..e, acc),
            };
        }
    });
    let sums = item_sums
        .iter()
        .fold([0f64; 3], |s, g| [s[0] + g[0], s[1] + g[1], s[2] + g[2]]);
    Ok(Tensor::from_slice(&sums))
}

/// Elements of one dot_norms work item: 256 KiB of f32 per side, enough to amortise the
/// item's horizontal sums, small enough that ResNet18's 11M parameters make about 170 items.
const DOT_ITEM: usize = 1 << 16;

/// [`pair_sums`] over elements `r` of two element-byte slices of type `T`.
fn sums_of<T: Element>(x: &[u8], y: &[u8], r: std::ops::Range<usize>, acc: Accumulate) -> [f64; 3] {
    let (x, y): (&[T], &[T]) = (bytemuck::cast_slice(x), bytemuck::cast_slice(y));
    pair_sums(&x[r.clone()], &y[r], acc)
}

/// dot, |x|^2, |y|^2 of one pair: f32 pairs on a CPU with AVX2 + FMA take the explicit SIMD
/// loop ([`f32_sums_avx2`]); everything else the portable lane-array loop.
fn pair_sums<T: Element>(xs: &[T], ys: &[T], acc: Accumulate) -> [f64; 3] {
    #[cfg(target_arch = "x86_64")]
    if T::KIND == Kind::Float && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        let (x, y): (&[f32], &[f32]) = (bytemuck::cast_slice(xs), bytemuck::cast_slice(ys));
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { f32_sums_avx2(x, y, acc) };
    }
    pair_sums_lanes(xs, ys, acc)
}

/// dot, |x|^2, |y|^2 over f32 slices, 8 elements a step: products in f64 (two 4-lane halves,
/// F64) or f32 (F32), fused multiply-adds into 6 independent accumulators, then the tail.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn f32_sums_avx2(xs: &[f32], ys: &[f32], acc: Accumulate) -> [f64; 3] {
    use std::arch::x86_64::*;
    let n = xs.len().min(ys.len()) / 8 * 8;
    let hsum = |v: __m256d| {
        let mut a = [0f64; 4];
        _mm256_storeu_pd(a.as_mut_ptr(), v);
        (a[0] + a[1]) + (a[2] + a[3])
    };
    let mut sums = match acc {
        Accumulate::F64 => {
            let mut s = [_mm256_setzero_pd(); 6];
            for i in (0..n).step_by(8) {
                // SAFETY: i + 8 <= n <= both lengths.
                let (x, y) = (_mm256_loadu_ps(xs.as_ptr().add(i)), _mm256_loadu_ps(ys.as_ptr().add(i)));
                for (h, (x, y)) in [
                    (
                        _mm256_cvtps_pd(_mm256_castps256_ps128(x)),
                        _mm256_cvtps_pd(_mm256_castps256_ps128(y)),
                    ),
                    (
                        _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)),
                        _mm256_cvtps_pd(_mm256_extractf128_ps(y, 1)),
                    ),
                ]
                .into_iter()
                .enumerate()
                {
                    s[3 * h] = _mm256_fmadd_pd(x, y, s[3 * h]);
                    s[3 * h + 1] = _mm256_fmadd_pd(x, x, s[3 * h + 1]);
                    s[3 * h + 2] = _mm256_fmadd_pd(y, y, s[3 * h + 2]);
                }
            }
            [0, 1, 2].map(|j| hsum(s[j]) + hsum(s[3 + j]))
        }
        Accumulate::F32 => {
            let mut s = [_mm256_setzero_ps(); 3];
            for i in (0..n).step_by(8) {
                // SAFETY: as above.
                let (x, y) = (_mm256_loadu_ps(xs.as_ptr().add(i)), _mm256_loadu_ps(ys.as_ptr().add(i)));
                s[0] = _mm256_fmadd_ps(x, y, s[0]);
                s[1] = _mm256_fmadd_ps(x, x, s[1]);
                s[2] = _mm256_fmadd_ps(y, y, s[2]);
            }
            s.map(|v| {
                let mut a = [0f32; 8];
                _mm256_storeu_ps(a.as_mut_ptr(), v);
                a.iter().map(|&x| f64::from(x)).sum::<f64>()
            })
        }
    };
    for (&a, &b) in xs[n..].iter().zip(&ys[n..]) {
        let (a, b) = (f64::from(a), f64::from(b));
        sums[0] += a * b;
        sums[1] += a * a;
        sums[2] += b * b;
    }
    sums
}

/// dot, |x|^2, |y|^2 with lane-array accumulators (so LLVM vectorises the loop).
fn pair_sums_lanes<T: Element>(xs: &[T], ys: &[T], acc: Accumulate) -> [f64; 3] {
    const LANES: usize = 8;
    let (xc, yc) = (xs.chunks_exact(LANES), ys.chunks_exact(LANES));
    let tail: [f64; 3] = xc.remainder().iter().zip(yc.remainder()).fold([0f64; 3], |s, (a, b)| {
        let (a, b) = (a.to_f32() as f64, b.to_f32() as f64);
        [s[0] + a * b, s[1] + a * a, s[2] + b * b]
    });
    let lanes = match acc {
        Accumulate::F64 => {
            let mut s = [[0f64; LANES]; 3];
            for (a, b) in xc.zip(yc) {
                for l in 0..LANES {
                    let (p, q) = (a[l].to_f32() as f64, b[l].to_f32() as f64);
                    s[0][l] += p * q;
                    s[1][l] += p * p;
                    s[2][l] += q * q;
                }
            }
            s.map(|v| v.iter().sum::<f64>())
        }
        Accumulate::F32 => {
            let mut s = [[0f32; LANES]; 3];
            for (a, b) in xc.zip(yc) {
                for l in 0..LANES {
                    let (p, q) = (a[l].to_f32(), b[l].to_f32());
                    s[0][l] += p * q;
                    s[1][l] += p * p;
                    s[2][l] += q * q;
                }
            }
            s.map(|v| v.iter().map(|&x| x as f64).sum::<f64>())
        }
    };
    [lanes[0] + tail[0], lanes[1] + tail[1], lanes[2] + tail[2]]
}

pub(in crate::ops) fn diff_sq(a: &[Tensor], b: &[Tensor], copy: bool) -> Result<Tensor> {
    let mut total = 0f64;
    for (x, y) in a.iter().zip(b) {
        let mut y = y.shallow_clone();
        total += match x.kind() {
            Kind::Float => pair_diff::<f32>(x, &mut y, copy),
            Kind::Half => pair_diff::<f16>(x, &mut y, copy),
            _ => pair_diff::<bf16>(x, &mut y, copy),
        };
    }
    Ok(Tensor::from(total))
}

fn pair_diff<T: Element>(x: &Tensor, y: &mut Tensor, copy: bool) -> f64 {
    let xs = cpu_slice::<T>(x);
    let ys = cpu_slice_mut::<T>(y);
    let s = xs
        .iter()
        .zip(ys.iter())
        .map(|(a, b)| {
            let d = a.to_f32() as f64 - b.to_f32() as f64;
            d * d
        })
        .sum();
    if copy {
        ys.copy_from_slice(xs);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::{row_zeros, row_zeros_lanes};

    #[test]
    fn zero_counts_agree_on_both_paths() {
        // Zeros of both signs, values at and beside the threshold, NaN, infinities; a length
        // with a tail past the 16 lanes.
        let eps = 0.25f32;
        let pattern = [
            0.0,
            -0.0,
            eps,
            -eps,
            f32::from_bits(eps.to_bits() + 1),
            1.0,
            f32::NAN,
            f32::INFINITY,
            1e-30,
        ];
        let row: Vec<f32> = (0..1003).map(|i| pattern[(i * 7 + i / 5) % pattern.len()]).collect();
        for e in [None, Some(eps)] {
            let expected = row
                .iter()
                .filter(|&&v| match e {
                    Some(e) => v.abs() <= e,
                    None => v == 0.0,
                })
                .count() as i64;
            assert_eq!(row_zeros(&row, e), expected, "dispatched, eps {e:?}");
            assert_eq!(row_zeros_lanes(&row, e), expected, "plain, eps {e:?}");
        }
    }
}
