//! Link traces in the mm-link format of the Mahimahi emulator.
//!
//! Each line is a time in milliseconds from the start of the trace and stands for one
//! opportunity to deliver 1500 bytes. Several opportunities in one millisecond repeat the
//! timestamp. When the trace repeats, the next pass starts at the last timestamp, so the
//! period is the last value (as in Mahimahi's `mm-link`).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::ScenarioError;

/// Bytes one delivery opportunity can carry.
pub const OPPORTUNITY_BYTES: usize = 1500;

/// A parsed mm-link trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    opportunities_ms: Vec<u64>,
}

impl Trace {
    /// Reads and parses a trace file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|error| ScenarioError::Trace {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
        Self::parse(&text).map_err(|reason| ScenarioError::Trace {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses trace text; the error names the offending line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut opportunities_ms = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let value: u64 = line.parse().map_err(|_| {
                format!(
                    "line {}: expected a whole number of milliseconds, got `{line}`",
                    index + 1
                )
            })?;
            if opportunities_ms.last().is_some_and(|last| value < *last) {
                return Err(format!(
                    "line {}: timestamp {value} goes backwards",
                    index + 1
                ));
            }
            opportunities_ms.push(value);
        }
        match opportunities_ms.last() {
            None => Err("the trace has no timestamps".to_owned()),
            Some(0) => Err("the last timestamp must be above 0, since it is the period".to_owned()),
            Some(_) => Ok(Self { opportunities_ms }),
        }
    }

    /// Length of one pass through the trace.
    pub fn period(&self) -> Duration {
        Duration::from_millis(self.period_ms())
    }

    fn period_ms(&self) -> u64 {
        self.opportunities_ms.last().copied().unwrap_or(1)
    }

    /// Mean capacity in bits per second over one period.
    pub fn mean_bits_per_second(&self) -> f64 {
        let bits = (self.opportunities_ms.len() * OPPORTUNITY_BYTES * 8) as f64;
        bits / self.period().as_secs_f64()
    }
}

/// Position of the next delivery opportunity.
#[derive(Debug, Clone, Default)]
pub(crate) struct TraceCursor {
    pass: u64,
    index: usize,
}

impl TraceCursor {
    /// Time of the opportunity under the cursor, or `None` once a non-repeating trace ended.
    pub(crate) fn time(&self, trace: &Trace, start: Instant, repeat: bool) -> Option<Instant> {
        if !repeat && self.pass > 0 {
            return None;
        }
        let offset = self.pass * trace.period_ms() + trace.opportunities_ms[self.index];
        Some(start + Duration::from_millis(offset))
    }

    pub(crate) fn advance(&mut self, trace: &Trace) {
        self.index += 1;
        if self.index == trace.opportunities_ms.len() {
            self.index = 0;
            self.pass += 1;
        }
    }

    /// Moves to the first opportunity at or after `elapsed`, skipping idle time in one step.
    pub(crate) fn seek(&mut self, trace: &Trace, elapsed: Duration) {
        let target_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let period = trace.period_ms();
        let (pass, within) = (target_ms / period, target_ms % period);
        let index = trace.opportunities_ms.partition_point(|&at| at < within);
        let current = self.pass * period + trace.opportunities_ms[self.index];
        if pass * period + within <= current {
            return;
        }
        if index == trace.opportunities_ms.len() {
            self.pass = pass + 1;
            self.index = 0;
        } else {
            self.pass = pass;
            self.index = index;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_bad_lines() {
        assert!(Trace::parse("1\n2\nx\n").unwrap_err().contains("line 3"));
        assert!(Trace::parse("5\n3\n").unwrap_err().contains("backwards"));
        assert!(Trace::parse("\n").is_err());
        assert!(Trace::parse("0\n0\n").is_err());
    }

    #[test]
    fn single_line_is_one_packet_per_ms() {
        let trace = Trace::parse("1\n").unwrap();
        assert_eq!(trace.period(), Duration::from_millis(1));
        assert!((trace.mean_bits_per_second() - 12_000_000.0).abs() < 1.0);
    }

    #[test]
    fn cursor_wraps_at_last_timestamp() {
        let trace = Trace::parse("0\n2\n5\n").unwrap();
        let start = Instant::now();
        let mut cursor = TraceCursor::default();
        let mut times = Vec::new();
        for _ in 0..7 {
            times.push(cursor.time(&trace, start, true).unwrap() - start);
            cursor.advance(&trace);
        }
        let ms: Vec<u64> = times.iter().map(|d| d.as_millis() as u64).collect();
        assert_eq!(ms, vec![0, 2, 5, 5, 7, 10, 10]);
    }

    #[test]
    fn cursor_stops_without_repeat() {
        let trace = Trace::parse("1\n2\n").unwrap();
        let start = Instant::now();
        let mut cursor = TraceCursor::default();
        cursor.advance(&trace);
        assert!(cursor.time(&trace, start, false).is_some());
        cursor.advance(&trace);
        assert!(cursor.time(&trace, start, false).is_none());
    }

    #[test]
    fn seek_skips_idle_time() {
        let trace = Trace::parse("0\n2\n5\n").unwrap();
        let start = Instant::now();
        let mut cursor = TraceCursor::default();
        cursor.seek(&trace, Duration::from_millis(13));
        // Pass 2 starts at 10 ms, so the opportunities are at 10, 12, 15: the first at or
        // after 13 ms is 15 ms.
        assert_eq!(
            cursor.time(&trace, start, true).unwrap() - start,
            Duration::from_millis(15)
        );
    }
}
