//! Row primitives for the fused CPU paths written so LLVM vectorises them: lane-array
//! accumulators (float sums are never reordered otherwise) and a branch-free exp.

const LANES: usize = 8;

/// exp(x) for x <= 0 (softmax arguments), Cephes' expf polynomial: relative error ~1e-7.
/// NaN propagates; x < -87 gives exactly 0 (so exp(-inf) = 0).
#[inline(always)]
pub(crate) fn exp_nonpos(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer, to nearest even
    // Comparisons (not f32::max) so that NaN passes through unchanged.
    let xc = if x < -87.0 { -87.0 } else { x };
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let r = xc - n * C1 - n * C2;
    let z = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 5.000_000_1e-1;
    let y = p * z + r + 1.0;
    let pow2 = f32::from_bits(((t.to_bits() as i32 - ROUND.to_bits() as i32 + 127) as u32) << 23);
    if x < -87.0 { 0.0 } else { y * pow2 }
}

/// max over a row (NaN ignored, as `v > m` is false for NaN); -inf for an empty row.
#[inline(always)]
pub(crate) fn max(z: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = z.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            if c[l] > acc[l] {
                acc[l] = c[l];
            }
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in acc.iter().chain(tail) {
        if v > m {
            m = v;
        }
    }
    m
}

/// Writes e[c] = exp(z[c] - m) and returns (sum of e, sum of z). One exp per element.
#[inline(always)]
pub(crate) fn exp_shifted_sums(z: &[f32], m: f32, e: &mut [f32]) -> (f32, f32) {
    let (mut se, mut sz) = ([0f32; LANES], [0f32; LANES]);
    let mut zc = z.chunks_exact(LANES);
    let mut ec = e.chunks_exact_mut(LANES);
    for (zs, es) in (&mut zc).zip(&mut ec) {
        for l in 0..LANES {
            let v = exp_shift(zs[l], m);
            es[l] = v;
            se[l] += v;
            sz[l] += zs[l];
        }
    }
    let (mut s, mut t) = (se.iter().sum::<f32>(), sz.iter().sum::<f32>());
    for (&zv, ev) in zc.remainder().iter().zip(ec.into_remainder()) {
        *ev = exp_shift(zv, m);
        s += *ev;
        t += zv;
    }
    (s, t)
}

/// exp(a - m), with a == m (including -inf == -inf) giving exactly 1, as the kernel does.
#[inline(always)]
fn exp_shift(a: f32, m: f32) -> f32 {
    if a == m { 1.0 } else { exp_nonpos(a - m) }
}

/// The first index holding the row's maximum (`>` comparisons: NaN never wins); None if the
/// row has no number above -inf... or is all NaN.
#[inline(always)]
pub(crate) fn first_index_of(z: &[f32], m: f32) -> Option<usize> {
    z.iter().position(|&v| v == m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_on_its_domain_and_handles_edges() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let got = exp_nonpos(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_37;
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert_eq!(exp_nonpos(0.0), 1.0);
        assert_eq!(exp_nonpos(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpos(-1000.0), 0.0);
        assert!(exp_nonpos(f32::NAN).is_nan());
    }

    #[test]
    fn max_and_sums_match_plain_loops() {
        let z: Vec<f32> = (0..1001).map(|i| ((i * 7919) % 1000) as f32 / 37.0 - 13.0).collect();
        let m = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(max(&z), m);
        let mut e = vec![0f32; z.len()];
        let (s, t) = exp_shifted_sums(&z, m, &mut e);
        let s_ref: f64 = z.iter().map(|&v| ((v - m) as f64).exp()).sum();
        let t_ref: f64 = z.iter().map(|&v| v as f64).sum();
        assert!(((s as f64 - s_ref) / s_ref).abs() < 1e-5);
        assert!(((t as f64 - t_ref) / t_ref.abs()).abs() < 1e-5);
        assert_eq!(first_index_of(&z, m), z.iter().position(|&v| v == m));
        assert!(max(&[f32::NAN, 1.0]) == 1.0);
    }
}
