//! Delays between reconnect attempts and between retries of a rejected send.
//!
//! Everything here is pure: the caller passes the attempt number and a uniform random
//! sample in `[0, 1)`, so tests can check the exact delays.

use std::time::Duration;

/// Exponential backoff with full jitter: attempt `n` waits a uniform random time between
/// zero and `min(cap, base * 2^n)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// Returns the upper bound of the delay before attempt `attempt` (0-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        // NOTE: 2^20 times any sensible base is already past any sensible cap, so the
        // shift is clamped to keep the multiplication from overflowing.
        let factor = 1u32 << attempt.min(20);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Returns the full-jitter delay before attempt `attempt`, given a uniform sample
    /// `unit` in `[0, 1)`. Samples outside `[0, 1]` are clamped to it.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        self.ceiling(attempt).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// Returns the delay before retrying after the server asked to wait
    /// `retry_after_ms`: at least that long, plus this backoff's jitter, so that clients
    /// rejected together do not all come back at the same instant.
    pub fn delay_after(&self, retry_after_ms: u32, attempt: u32, unit: f64) -> Duration {
        Duration::from_millis(u64::from(retry_after_ms)) + self.delay(attempt, unit)
    }
}

/// Draws a uniform sample in `[0, 1)` for [`Backoff::delay`].
pub fn jitter_sample() -> f64 {
    rand::random::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_until_cap() {
        let backoff = Backoff::default();
        assert_eq!(backoff.ceiling(0), Duration::from_millis(100));
        assert_eq!(backoff.ceiling(1), Duration::from_millis(200));
        assert_eq!(backoff.ceiling(4), Duration::from_millis(1_600));
        assert_eq!(backoff.ceiling(6), Duration::from_secs(5));
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn delay_scales_ceiling_by_sample() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(2, 0.0), Duration::ZERO);
        assert_eq!(backoff.delay(2, 0.5), Duration::from_millis(200));
        assert_eq!(backoff.delay(10, 0.5), Duration::from_millis(2_500));
    }

    #[test]
    fn delay_clamps_bad_samples() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(0, -3.0), Duration::ZERO);
        assert_eq!(backoff.delay(0, 7.0), Duration::from_millis(100));
    }

    #[test]
    fn delay_after_waits_at_least_retry_after() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay_after(750, 0, 0.0), Duration::from_millis(750));
        assert_eq!(backoff.delay_after(750, 1, 0.5), Duration::from_millis(850));
        assert_eq!(backoff.delay_after(0, 3, 0.25), Duration::from_millis(200));
    }

    #[test]
    fn random_delays_stay_in_bounds() {
        let backoff = Backoff::default();
        for attempt in 0..12 {
            let delay = backoff.delay(attempt, jitter_sample());
            assert!(
                delay <= backoff.ceiling(attempt),
                "attempt {attempt}: {delay:?}"
            );
        }
    }
}
