//! Seeded random streams for the impairment stages.
//!
//! NOTE: replay depends on this exact algorithm. Each stage draws from ChaCha8, seeded with
//! `SeedableRng::seed_from_u64(seed)` from rand_core 0.9 and set to its own stream number, and
//! floats are built here from the top 53 bits of `next_u64`. So enabling one impairment never
//! shifts the decisions of another, and a rand upgrade cannot change a replay silently.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// Which direction of the link a stream belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server.
    Uplink,
    /// Server to client.
    Downlink,
}

/// The impairment stage that owns a stream.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stage {
    Loss = 1,
    Corrupt = 2,
    Duplicate = 3,
    Delay = 4,
}

/// A deterministic random stream.
#[derive(Debug, Clone)]
pub(crate) struct StageRng(ChaCha8Rng);

impl StageRng {
    pub(crate) fn new(seed: u64, direction: Direction, stage: Stage) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let direction_bit = match direction {
            Direction::Uplink => 0,
            Direction::Downlink => 1,
        };
        rng.set_stream((stage as u64) * 2 + direction_bit);
        Self(rng)
    }

    /// Returns a float uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
        (self.0.next_u64() >> 11) as f64 * SCALE
    }

    /// Returns true with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// Returns an integer uniform in `[0, bound)`; `bound` must be above zero.
    pub(crate) fn below(&mut self, bound: usize) -> usize {
        // The bias of a plain multiply is below 2^-40 for the buffer sizes used here.
        ((self.unit() * bound as f64) as usize).min(bound - 1)
    }

    /// Returns a standard normal sample (Box-Muller, one value per call).
    pub(crate) fn standard_normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = StageRng::new(7, Direction::Uplink, Stage::Loss);
        let mut b = StageRng::new(7, Direction::Uplink, Stage::Loss);
        for _ in 0..100 {
            assert_eq!(a.unit().to_bits(), b.unit().to_bits());
        }
    }

    #[test]
    fn stages_and_directions_differ() {
        let mut loss = StageRng::new(7, Direction::Uplink, Stage::Loss);
        let mut delay = StageRng::new(7, Direction::Uplink, Stage::Delay);
        let mut down = StageRng::new(7, Direction::Downlink, Stage::Loss);
        let first = loss.unit();
        assert_ne!(first, delay.unit());
        assert_ne!(first, down.unit());
    }

    #[test]
    fn normal_moments() {
        let mut rng = StageRng::new(3, Direction::Uplink, Stage::Delay);
        let samples: Vec<f64> = (0..100_000).map(|_| rng.standard_normal()).collect();
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        let variance =
            samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / samples.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((variance - 1.0).abs() < 0.02, "variance {variance}");
    }
}
