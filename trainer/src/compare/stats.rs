//! Two-sample tests for comparing strategies over seeds: Welch's unequal-variance t-test and the
//! paired t-test, with two-sided p-values from Student's t distribution (the regularised
//! incomplete beta function by Lentz's continued fraction, log-gamma by Lanczos); Holm's
//! step-down adjustment for several comparisons; a seeded percentile bootstrap interval of a
//! difference of means.

use serde::{Deserialize, Serialize};

use enlighten::SeededRng;

/// A t-test's statistic, degrees of freedom and two-sided p-value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TTest {
    pub t: f64,
    pub df: f64,
    pub p: f64,
}

pub fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// The sample standard deviation (n - 1 in the denominator); 0 for a single value.
pub fn std_dev(x: &[f64]) -> f64 {
    if x.len() < 2 {
        return 0.0;
    }
    let m = mean(x);
    (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() - 1) as f64).sqrt()
}

/// Welch's t-test of mean(a) - mean(b); None with fewer than 2 values a side or no variance.
pub fn welch(a: &[f64], b: &[f64]) -> Option<TTest> {
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let (va, vb) = (std_dev(a).powi(2) / a.len() as f64, std_dev(b).powi(2) / b.len() as f64);
    let se2 = va + vb;
    if se2.is_nan() || se2 <= 0.0 {
        return None;
    }
    let t = (mean(a) - mean(b)) / se2.sqrt();
    let df = se2 * se2 / (va * va / (a.len() - 1) as f64 + vb * vb / (b.len() - 1) as f64);
    Some(TTest {
        t,
        df,
        p: two_sided_p(t, df),
    })
}

/// The paired t-test of mean(a - b) = 0 over pairs (a[i], b[i]); None with fewer than 2 pairs,
/// unequal lengths, or differences without variance.
pub fn paired(a: &[f64], b: &[f64]) -> Option<TTest> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let sd = std_dev(&d);
    if sd.is_nan() || sd <= 0.0 {
        return None;
    }
    let df = (d.len() - 1) as f64;
    let t = mean(&d) / (sd / (d.len() as f64).sqrt());
    Some(TTest {
        t,
        df,
        p: two_sided_p(t, df),
    })
}

/// Holm's step-down adjustment of `p` (one family of m = `p.len()` comparisons), in the input's
/// order: with the p-values sorted ascending, the i-th (from 0) becomes max over j <= i of
/// min(1, (m - j) p_(j)). It controls the family-wise error rate without assuming independence.
/// A NaN (a comparison without a test) stays NaN but still counts in m, as a hypothesis that
/// cannot be rejected: the others are adjusted no less than with it tested.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p.len()).filter(|&i| !p[i].is_nan()).collect();
    order.sort_by(|&i, &j| p[i].total_cmp(&p[j]).then(i.cmp(&j)));
    let m = p.len();
    let mut adjusted = vec![f64::NAN; p.len()];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

/// A confidence interval of mean(a) - mean(b).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
    /// The coverage asked for, e.g. 0.95.
    pub level: f64,
}

/// The percentile bootstrap interval of mean(a) - mean(b) at `level`: `resamples` times, each
/// sample is resampled with replacement on its own (as Welch's test treats them), from a
/// [`SeededRng`] seeded with `seed`, so the same inputs give the same interval. The bounds are
/// the (1 - level)/2 and (1 + level)/2 quantiles (linear interpolation between order
/// statistics). None with fewer than 2 values a side, `resamples` < 2 or a level outside (0, 1).
pub fn bootstrap_diff(a: &[f64], b: &[f64], level: f64, resamples: usize, seed: u64) -> Option<Interval> {
    if a.len() < 2 || b.len() < 2 || resamples < 2 || !(level > 0.0 && level < 1.0) {
        return None;
    }
    let mut rng = SeededRng::new(seed);
    let resample_mean = |x: &[f64], rng: &mut SeededRng| {
        (0..x.len()).map(|_| x[rng.below(x.len() as u64) as usize]).sum::<f64>() / x.len() as f64
    };
    let mut diffs: Vec<f64> = (0..resamples)
        .map(|_| resample_mean(a, &mut rng) - resample_mean(b, &mut rng))
        .collect();
    diffs.sort_by(f64::total_cmp);
    Some(Interval {
        low: quantile_sorted(&diffs, (1.0 - level) / 2.0),
        high: quantile_sorted(&diffs, (1.0 + level) / 2.0),
        level,
    })
}

/// The q-quantile of sorted values, interpolating linearly between order statistics (numpy's
/// default, "linear").
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, frac) = (pos.floor() as usize, pos - pos.floor());
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + frac * (sorted[hi] - sorted[lo])
}

/// P(|T| >= |t|) for Student's t with `df` degrees of freedom: I_{df/(df+t^2)}(df/2, 1/2).
pub fn two_sided_p(t: f64, df: f64) -> f64 {
    if t.is_nan() || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    regularized_beta(df / (df + t * t), df / 2.0, 0.5)
}

/// The regularised incomplete beta function I_x(a, b).
pub fn regularized_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front = (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    // The continued fraction converges fast for x < (a + 1) / (a + b + 2); use symmetry beyond.
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(x, a, b) / a
    } else {
        1.0 - front * beta_fraction(1.0 - x, b, a) / b
    }
}

/// The continued fraction of the incomplete beta function (modified Lentz).
fn beta_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    d = 1.0 / if d.abs() < TINY { TINY } else { d };
    let mut h = d;
    for m in 1..=300 {
        let m = m as f64;
        let step = |coef: f64, c: &mut f64, d: &mut f64| {
            *d = 1.0 + coef * *d;
            *d = 1.0 / if d.abs() < TINY { TINY } else { *d };
            *c = 1.0 + coef / *c;
            if c.abs() < TINY {
                *c = TINY;
            }
            *c * *d
        };
        let even = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        h *= step(even, &mut c, &mut d);
        let odd = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
        let delta = step(odd, &mut c, &mut d);
        h *= delta;
        if (delta - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// ln Gamma(x) for x > 0 (Lanczos, g = 7, 9 terms; relative error ~1e-15).
pub fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Gamma(x) Gamma(1 - x) = pi / sin(pi x).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = G[0];
    for (i, g) in G.iter().enumerate().skip(1) {
        sum += g / (x + i as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}
