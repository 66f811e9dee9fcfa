//! The project's seeded random number generator.
//!
//! Every random choice of a run (initialisation, shuffling, dropout masks,
//! noise, search trials) draws from a [`Rng`] derived from the recipe seed
//! and a label naming the choice. candle's CPU device cannot be seeded, so
//! no random tensor is ever made by candle itself: values are drawn here and
//! turned into tensors. Labels keep streams independent, so adding a block
//! to a recipe does not change the random numbers another block sees.

use rand::{Rng as _, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A deterministic generator: the same seed and labels give the same values
/// on every machine.
#[derive(Debug, Clone)]
pub struct Rng {
    inner: ChaCha8Rng,
    /// A Box-Muller pair yields two normals; the second waits here.
    spare_normal: Option<f64>,
}

impl Rng {
    /// The generator for `label` under the recipe seed `seed`.
    pub fn new(seed: u64, label: &str) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&seed.to_le_bytes());
        hasher.update(label.as_bytes());
        Rng { inner: ChaCha8Rng::from_seed(*hasher.finalize().as_bytes()), spare_normal: None }
    }

    /// An independent generator for a sub-choice, e.g. one epoch's shuffle.
    pub fn fork(&mut self, label: &str) -> Rng {
        let seed = self.inner.next_u64();
        Rng::new(seed, label)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// A uniform value in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        self.inner.random::<f64>()
    }

    /// A uniform value in `[low, high)`.
    pub fn uniform_in(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.uniform()
    }

    /// A uniform integer in `0..n`; `n` must be positive.
    pub fn below(&mut self, n: usize) -> usize {
        self.inner.random_range(0..n)
    }

    /// A standard normal value (Box-Muller, so the stream does not depend on
    /// the internals of a distribution crate).
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        self.spare_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// A random permutation of `0..n` (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i + 1);
            idx.swap(i, j);
        }
        idx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_and_label_repeat() {
        let mut a = Rng::new(42, "init");
        let mut b = Rng::new(42, "init");
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(42, "init").next_u64(), Rng::new(42, "shuffle").next_u64());
        assert_ne!(Rng::new(42, "init").next_u64(), Rng::new(43, "init").next_u64());
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut rng = Rng::new(7, "normal");
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        // Standard error of the mean is 1/sqrt(n) ~ 0.0022; allow 3 of them.
        assert!(mean.abs() < 0.007, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "variance {var}");
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut rng = Rng::new(1, "perm");
        let mut p = rng.permutation(100);
        assert_ne!(p, (0..100).collect::<Vec<_>>());
        p.sort();
        assert_eq!(p, (0..100).collect::<Vec<_>>());
    }
}
