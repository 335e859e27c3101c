//! CoDel active queue management (RFC 8289), applied when a packet leaves the queue.

use std::time::{Duration, Instant};

/// Bytes below which CoDel never drops, so a link with one packet queued is left alone
/// (RFC 8289 section 4.2 uses one MTU).
const MIN_BACKLOG_BYTES: usize = 1500;

#[derive(Debug, Clone)]
pub(crate) struct Codel {
    target: Duration,
    interval: Duration,
    first_above: Option<Instant>,
    dropping: bool,
    drop_next: Option<Instant>,
    count: u32,
    last_count: u32,
}

impl Codel {
    pub(crate) fn new(target: Duration, interval: Duration) -> Self {
        Self {
            target,
            interval,
            first_above: None,
            dropping: false,
            drop_next: None,
            count: 0,
            last_count: 0,
        }
    }

    fn control_law(&self, from: Instant) -> Instant {
        from + self.interval.div_f64(f64::from(self.count.max(1)).sqrt())
    }

    /// Returns whether the sojourn time has stayed above target for a whole interval.
    fn above_target(&mut self, now: Instant, sojourn: Duration, backlog: usize) -> bool {
        if sojourn < self.target || backlog <= MIN_BACKLOG_BYTES {
            self.first_above = None;
            return false;
        }
        match self.first_above {
            None => {
                self.first_above = Some(now + self.interval);
                false
            }
            Some(at) => now >= at,
        }
    }

    /// Decides for the packet leaving the queue at `now` after `sojourn`, with `backlog` bytes
    /// still queued behind it.
    pub(crate) fn should_drop(&mut self, now: Instant, sojourn: Duration, backlog: usize) -> bool {
        let above = self.above_target(now, sojourn, backlog);
        if self.dropping {
            if !above {
                self.dropping = false;
                return false;
            }
            let drop_next = self.drop_next.unwrap_or(now);
            if now >= drop_next {
                self.count += 1;
                self.drop_next = Some(self.control_law(drop_next));
                return true;
            }
            return false;
        }
        if !above {
            return false;
        }

        // Enter the dropping state. Reuse the previous drop rate if the last episode ended
        // recently, as RFC 8289 section 5.5 recommends.
        self.dropping = true;
        let delta = self.count.saturating_sub(self.last_count);
        let recent = self
            .drop_next
            .is_some_and(|next| now.saturating_duration_since(next) < self.interval * 16);
        self.count = if delta > 1 && recent { delta } else { 1 };
        self.last_count = self.count;
        self.drop_next = Some(self.control_law(now));
        true
    }
}
