//! The seeded generator that the caller owns: every random choice enlighten makes (lambdas,
//! permutations, CutMix boxes) comes from one of these, so equal seeds give identical runs.
//!
//! xoshiro256++ seeded through splitmix64, with Beta sampled from two Gammas
//! (Marsaglia–Tsang). Written out here rather than taken from a crate so that a dependency
//! upgrade can never change the random stream of a recorded experiment.

/// A small, fast, reproducible generator. `Clone` snapshots its state (for checkpoints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeededRng {
    s: [u64; 4],
}

impl SeededRng {
    /// A generator whose whole stream follows from `seed` (the state is expanded with SplitMix64).
    pub fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        SeededRng {
            s: [next(), next(), next(), next()],
        }
    }

    /// The raw state, for checkpoints; [`SeededRng::from_state`] restores it.
    pub fn state(&self) -> [u64; 4] {
        self.s
    }

    /// The generator whose state [`SeededRng::state`] returned.
    pub fn from_state(s: [u64; 4]) -> Self {
        SeededRng { s }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n), without modulo bias (Lemire's method). `n` must be > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            let low = m as u64;
            if low >= n.wrapping_neg() % n {
                return (m >> 64) as u64;
            }
        }
    }

    /// Standard normal (Marsaglia polar method).
    pub fn normal(&mut self) -> f64 {
        loop {
            let u = 2.0 * self.uniform() - 1.0;
            let v = 2.0 * self.uniform() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                return u * (-2.0 * s.ln() / s).sqrt();
            }
        }
    }

    /// Gamma(shape, 1) for shape > 0 (Marsaglia–Tsang; shape < 1 boosted by U^(1/shape)).
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = self.uniform().max(f64::MIN_POSITIVE);
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.uniform();
            if u < 1.0 - 0.0331 * x.powi(4) || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
                return d * v;
            }
        }
    }

    /// Beta(a, b) for a, b > 0.
    pub fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a);
        let y = self.gamma(b);
        if x + y > 0.0 {
            x / (x + y)
        } else {
            // Both gammas underflowed (tiny shapes): the Beta mass sits at 0 and 1 equally.
            if self.uniform() < a / (a + b) {
                1.0
            } else {
                0.0
            }
        }
    }

    /// A uniformly random permutation of 0..n (Fisher–Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<i64> {
        let mut p: Vec<i64> = (0..n as i64).collect();
        for i in (1..n).rev() {
            let j = self.below(i as u64 + 1) as usize;
            p.swap(i, j);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_var(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let m = xs.iter().sum::<f64>() / n;
        (m, xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0))
    }

    #[test]
    fn equal_seeds_equal_streams_and_state_round_trips() {
        let mut a = SeededRng::new(7);
        let mut b = SeededRng::new(7);
        let mut c = SeededRng::new(8);
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        assert_eq!(xs, (0..100).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(xs, (0..100).map(|_| c.next_u64()).collect::<Vec<_>>());
        let mut restored = SeededRng::from_state(a.state());
        assert_eq!(restored.next_u64(), a.next_u64());
    }

    #[test]
    fn beta_moments_match_theory() {
        for &(a, b) in &[(0.2, 0.2), (1.0, 1.0), (0.4, 0.4), (2.0, 5.0)] {
            let mut r = SeededRng::new(42);
            let xs: Vec<f64> = (0..200_000).map(|_| r.beta(a, b)).collect();
            assert!(xs.iter().all(|x| (0.0..=1.0).contains(x)));
            let (m, v) = mean_var(&xs);
            let tm = a / (a + b);
            let tv = a * b / ((a + b).powi(2) * (a + b + 1.0));
            assert!((m - tm).abs() < 0.005, "Beta({a},{b}) mean {m} vs {tm}");
            assert!((v - tv).abs() / tv < 0.03, "Beta({a},{b}) var {v} vs {tv}");
        }
    }

    #[test]
    fn permutation_is_a_permutation_and_below_is_unbiased() {
        let mut r = SeededRng::new(3);
        let mut p = r.permutation(1001);
        p.sort();
        assert_eq!(p, (0..1001).collect::<Vec<i64>>());
        let mut counts = [0u32; 3];
        for _ in 0..30_000 {
            counts[r.below(3) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (c as i32 - 10_000).abs() < 400), "{counts:?}");
    }
}
