//! Row primitives for the fused CPU paths written so LLVM vectorises them: lane-array
//! accumulators (float sums are never reordered otherwise) and a branch-free exp.

const LANES: usize = 8;

/// a * b + c: one fused multiply-add instruction in the AVX2 + FMA build of a row pass
/// (`FMA = true`, only called where the CPU has FMA), two rounded operations otherwise.
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// exp(x) for x <= 0 (softmax arguments), Cephes' expf polynomial: relative error ~1e-7.
/// NaN propagates; x < -87 gives exactly 0 (so exp(-inf) = 0).
#[inline(always)]
pub(crate) fn exp_nonpos<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer, to nearest even
                                     // Comparisons (not f32::max) so that NaN passes through unchanged.
    let xc = if x < -87.0 { -87.0 } else { x };
    let t = madd::<FMA>(xc, LOG2E, ROUND);
    let n = t - ROUND;
    let r = madd::<FMA>(-n, C2, madd::<FMA>(-n, C1, xc));
    let mut p = 1.987_569_1e-4;
    // Cephes' last coefficient, 5.0000001e-1, is 0.5 in f32.
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
        p = madd::<FMA>(p, r, c);
    }
    let y = madd::<FMA>(p, r * r, r + 1.0);
    let pow2 = f32::from_bits(((t.to_bits() as i32 - ROUND.to_bits() as i32 + 127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        y * pow2
    }
}

/// What one read of a row gives before any exp: its max (NaN ignored, as `v > m` is false for
/// NaN; -inf for an empty row), whether any value is -inf (a masked logit), and the sum of the
/// values above -inf (masked logits add nothing, as in the kernel's RowStats). The first read
/// of a row waits on memory, so the min and the sum ride along for free.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RowScan {
    pub max: f32,
    pub masked: bool,
    pub sum: f32,
}

/// [`RowScan`] of a row, with lane accumulators: a fixed order, so vectorised and deterministic.
#[inline(always)]
pub(crate) fn scan_row(z: &[f32]) -> RowScan {
    let (mut acc, mut low, mut sums) = ([f32::NEG_INFINITY; LANES], [f32::INFINITY; LANES], [0f32; LANES]);
    let chunks = z.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            if c[l] > acc[l] {
                acc[l] = c[l];
            }
            if c[l] < low[l] {
                low[l] = c[l];
            }
            sums[l] += finite_or_up(c[l]);
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in acc.iter().chain(tail) {
        if v > m {
            m = v;
        }
    }
    RowScan {
        max: m,
        masked: low.contains(&f32::NEG_INFINITY) || tail.contains(&f32::NEG_INFINITY),
        sum: sums.iter().sum::<f32>() + tail.iter().map(|&x| finite_or_up(x)).sum::<f32>(),
    }
}

/// x, or 0 for -inf.
#[inline(always)]
fn finite_or_up(x: f32) -> f32 {
    if x == f32::NEG_INFINITY {
        0.0
    } else {
        x
    }
}

/// Writes e[c] = exp(z[c] - m) and returns rest, where 1 + rest is the sum of e: `rest` leaves
/// out the max's own exact 1 so that log1p(rest) keeps small losses precise (as the kernel's
/// RowStats does). One exp per element. A row whose max is not finite takes the exact scalar
/// path, where exp(a - m) is 1 for a == m as in the kernel; every other row runs branch-free and
/// vectorised.
#[inline(always)]
pub(crate) fn exp_shifted_sums<const FMA: bool>(z: &[f32], m: f32, e: &mut [f32]) -> f32 {
    if !m.is_finite() {
        let mut s = 0f32;
        for (&zv, ev) in z.iter().zip(e.iter_mut()) {
            *ev = exp_shift(zv, m);
            s += *ev;
        }
        return s - 1.0;
    }
    // A plain map loop is what LLVM's loop vectoriser handles best; the sums follow from L1.
    for (ev, &zv) in e.iter_mut().zip(z) {
        *ev = exp_nonpos::<FMA>(zv - m);
    }
    // Sum of e without the maxima's exact 1s (e - [z == m]), so the 1 never rounds the rest,
    // with the maxima counted in the same pass (32-bit lanes); the maxima beyond the first
    // (ties) add 1 each at the end.
    let (mut others, mut maxima) = ([0f32; LANES], [0u32; LANES]);
    let (ec, zc) = (e.chunks_exact(LANES), z.chunks_exact(LANES));
    let (et, zt) = (ec.remainder(), zc.remainder());
    for (es, zs) in ec.zip(zc) {
        for l in 0..LANES {
            let at_max = zs[l] == m;
            others[l] += es[l] - f32::from(u8::from(at_max));
            maxima[l] += u32::from(at_max);
        }
    }
    let mut other = others.iter().sum::<f32>();
    for (&ev, &zv) in et.iter().zip(zt) {
        other += ev - f32::from(u8::from(zv == m));
    }
    let n_max = (maxima.iter().map(|&n| n as usize).sum::<usize>() + zt.iter().filter(|&&v| v == m).count()) as f32;
    // The extra maxima (ties) count 1 each; adding them last keeps `other` unrounded by 1.
    other + (n_max - 1.0)
}

/// exp(a - m), with a == m (including -inf == -inf) giving exactly 1, as the kernel does.
#[inline(always)]
fn exp_shift(a: f32, m: f32) -> f32 {
    if a == m {
        1.0
    } else {
        exp_nonpos::<false>(a - m)
    }
}

/// Whether `at` is the first index holding the row's maximum `m` (the argmax with `>`
/// comparisons, so NaN never wins). Scans the prefix only when z[at] is a maximum.
#[inline(always)]
pub(crate) fn is_first_max(z: &[f32], m: f32, at: usize) -> bool {
    z[at] == m && z[..at].iter().filter(|&&v| v == m).count() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_on_its_domain_and_handles_edges() {
        for exp in [exp_nonpos::<false>, exp_nonpos::<true>] {
            let mut worst = 0f64;
            let mut x = -87.0f32;
            while x <= 0.0 {
                let got = exp(x) as f64;
                let want = (x as f64).exp();
                worst = worst.max(((got - want) / want).abs());
                x += 0.001_37;
            }
            assert!(worst < 3e-7, "worst relative error {worst:e}");
            assert_eq!(exp(0.0), 1.0);
            assert_eq!(exp(f32::NEG_INFINITY), 0.0);
            assert_eq!(exp(-1000.0), 0.0);
            assert!(exp(f32::NAN).is_nan());
        }
    }

    #[test]
    fn max_and_sums_match_plain_loops() {
        let z: Vec<f32> = (0..1001).map(|i| ((i * 7919) % 1000) as f32 / 37.0 - 13.0).collect();
        let m = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let t_ref: f64 = z.iter().map(|&v| v as f64).sum();
        let scan = scan_row(&z);
        assert_eq!((scan.max, scan.masked), (m, false));
        assert!(((scan.sum as f64 - t_ref) / t_ref.abs()).abs() < 1e-5);
        let mut masked = z.clone();
        masked[1000] = f32::NEG_INFINITY; // in the tail
        let scan = scan_row(&masked);
        assert_eq!((scan.max, scan.masked), (m, true));
        let without: f64 = z[..1000].iter().map(|&v| v as f64).sum();
        assert!(
            ((scan.sum as f64 - without) / without.abs()).abs() < 1e-5,
            "-inf adds nothing"
        );
        masked[1000] = 0.0;
        masked[17] = f32::NEG_INFINITY; // in a lane
        assert!(scan_row(&masked).masked);
        let mut e = vec![0f32; z.len()];
        let rest = exp_shifted_sums::<false>(&z, m, &mut e);
        let s_ref: f64 = z.iter().map(|&v| ((v - m) as f64).exp()).sum();
        assert!(((1.0 + rest as f64 - s_ref) / s_ref).abs() < 1e-5);
        // A confident row: rest is tiny and exact to f32 precision, not rounded against 1.
        let confident = [0.0f32, -12.0, -13.0, -11.5, -14.0, -12.5, -13.5, -12.25, -11.0];
        let mut e2 = [0f32; 9];
        let rest = exp_shifted_sums::<false>(&confident, 0.0, &mut e2);
        let exact: f64 = confident[1..].iter().map(|&v| (v as f64).exp()).sum();
        assert!(((rest as f64 - exact) / exact).abs() < 1e-6, "rest {rest} vs {exact}");
        let first = z.iter().position(|&v| v == m).unwrap();
        assert!(is_first_max(&z, m, first));
        assert!(!is_first_max(&z, m, (first + 1) % z.len()));
        assert!(scan_row(&[f32::NAN, 1.0]).max == 1.0);
    }
}
