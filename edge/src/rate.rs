//! Per-connection send rate limit: a token bucket that takes time as an argument.

use std::time::{Duration, Instant};

use crate::config::RateConfig;

/// A token bucket. Each accepted send takes one token; tokens refill continuously.
#[derive(Debug)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    /// Creates a full bucket.
    pub fn new(config: RateConfig, now: Instant) -> TokenBucket {
        let burst = f64::from(config.burst.max(1));
        TokenBucket {
            per_second: config.per_second.max(f64::MIN_POSITIVE),
            burst,
            tokens: burst,
            refilled_at: now,
        }
    }

    /// Takes one token at `now`, or returns how long to wait until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.refilled_at = now;

        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - self.tokens) / self.per_second;
        Err(Duration::from_secs_f64(wait))
    }
}

/// Rounds a wait up to whole milliseconds, at least 1, for `retry_after_ms`.
pub fn retry_after_ms(wait: Duration) -> u32 {
    let ms = wait.as_micros().div_ceil(1000).max(1);
    u32::try_from(ms).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let start = Instant::now();
        let config = RateConfig {
            per_second: 10.0,
            burst: 3,
        };
        let mut bucket = TokenBucket::new(config, start);
        for _ in 0..3 {
            assert!(bucket.try_take(start).is_ok());
        }
        let wait = bucket.try_take(start).expect_err("bucket is empty");
        assert_eq!(retry_after_ms(wait), 100);

        assert!(bucket.try_take(start + Duration::from_millis(100)).is_ok());
        assert!(bucket.try_take(start + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn refill_caps_at_burst() {
        let start = Instant::now();
        let config = RateConfig {
            per_second: 1000.0,
            burst: 2,
        };
        let mut bucket = TokenBucket::new(config, start);
        let later = start + Duration::from_secs(60);
        assert!(bucket.try_take(later).is_ok());
        assert!(bucket.try_take(later).is_ok());
        assert!(bucket.try_take(later).is_err());
    }
}
