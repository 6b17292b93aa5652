//! A small seeded PRNG and the samplers the §4.1 model needs (predictive-dialing.md §4.1:
//! lognormal answer delay and talk, gamma wrap, exponential for validation).
//!
//! Implemented here rather than taken from `rand` so that a scenario's numbers never change
//! with a dependency upgrade: §4.3 asks for "fixed seeds listed in the config", and a seed is
//! only reproducible if the generator is pinned. xoshiro256++ seeded through splitmix64 (the
//! seeding its authors recommend).

/// splitmix64: one step. Used to expand seeds and to derive per-stream seeds from keys.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Derives the seed of a sub-stream from a parent seed and keys (replication, stream kind,
/// attempt index...). Common random numbers (§4.3 protocol) rest on this: attempt `k` of
/// replication `r` gets the same stream whichever policy launched it.
pub fn derive(parent: u64, keys: &[u64]) -> u64 {
    let mut s = parent;
    let mut out = splitmix64(&mut s);
    for &k in keys {
        s ^= k.wrapping_mul(0xD6E8_FEB8_6659_FD93).wrapping_add(out);
        out = splitmix64(&mut s);
    }
    out
}

/// xoshiro256++.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Rng { s }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[0]
            .wrapping_add(self.s[3])
            .rotate_left(23)
            .wrapping_add(self.s[0]);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1]: safe under `ln`.
    fn uniform_open0(&mut self) -> f64 {
        1.0 - self.uniform()
    }

    /// Standard normal (Box–Muller; one value per call, so the number of draws per sample is
    /// fixed, which keeps streams aligned).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform_open0();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * self.uniform_open0().ln()
    }

    /// Lognormal parameterised by its own mean and standard deviation, as §4.1 states the
    /// times ("mean 10 s, CV 0.5"): σ² = ln(1 + (sd/mean)²), μ = ln(mean) − σ²/2.
    pub fn lognormal(&mut self, mean: f64, sd: f64) -> f64 {
        if mean <= 0.0 {
            return 0.0;
        }
        let cv = sd / mean;
        let s2 = (1.0 + cv * cv).ln();
        let mu = mean.ln() - s2 / 2.0;
        (mu + s2.sqrt() * self.normal()).exp()
    }

    /// Gamma by mean and sd: shape k = (mean/sd)², scale θ = sd²/mean. Marsaglia–Tsang, with
    /// the k < 1 boost (X·U^{1/k}).
    pub fn gamma(&mut self, mean: f64, sd: f64) -> f64 {
        if mean <= 0.0 {
            return 0.0;
        }
        if sd <= 0.0 {
            return mean;
        }
        let k = (mean / sd) * (mean / sd);
        let theta = sd * sd / mean;
        let (shape, boost) = if k < 1.0 {
            (k + 1.0, Some(1.0 / k))
        } else {
            (k, None)
        };
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        // Marsaglia–Tsang accepts ~98 % of proposals; the bound only guards a broken stream.
        let mut g = d;
        for _ in 0..1000 {
            let x = self.normal();
            let v = 1.0 + c * x;
            if v <= 0.0 {
                continue;
            }
            let v = v * v * v;
            let u = self.uniform_open0();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                g = d * v;
                break;
            }
        }
        if let Some(b) = boost {
            g *= self.uniform_open0().powf(b);
        }
        g * theta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(mut f: impl FnMut() -> f64, n: usize) -> (f64, f64) {
        let xs: Vec<f64> = (0..n).map(|_| f()).collect();
        let m = xs.iter().sum::<f64>() / n as f64;
        let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1) as f64;
        (m, v.sqrt())
    }

    #[test]
    fn samplers_hit_their_mean_and_sd() {
        let mut r = Rng::new(7);
        let (m, s) = moments(|| r.lognormal(10.0, 5.0), 200_000);
        assert!((m - 10.0).abs() < 0.1 && (s - 5.0).abs() < 0.15, "{m} {s}");
        let (m, s) = moments(|| r.gamma(30.0, 15.0), 200_000);
        assert!((m - 30.0).abs() < 0.3 && (s - 15.0).abs() < 0.3, "{m} {s}");
        let (m, s) = moments(|| r.gamma(2.0, 4.0), 200_000);
        assert!((m - 2.0).abs() < 0.05 && (s - 4.0).abs() < 0.2, "{m} {s}");
        let (m, s) = moments(|| r.exponential(180.0), 200_000);
        assert!(
            (m - 180.0).abs() < 2.0 && (s - 180.0).abs() < 3.0,
            "{m} {s}"
        );
    }

    #[test]
    fn same_seed_same_stream_and_keys_separate() {
        let a: Vec<u64> = (0..5).map(|_| Rng::new(1).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(derive(1, &[0, 1]), derive(1, &[1, 0]));
        assert_eq!(derive(9, &[3, 4]), derive(9, &[3, 4]));
    }
}
