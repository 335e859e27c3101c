//! Edge-side stamps: Snowflake message ids, hybrid logical clock and wall-clock time.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tidings_schema::ids::{HybridClock, Snowflake};
use tidings_schema::mesh::Stamp;

/// Stamps messages that arrive at this edge. Shared by every connection.
#[derive(Debug)]
pub struct Stamper {
    clocks: Mutex<(Snowflake, HybridClock)>,
}

impl Stamper {
    pub fn new(node_id: u16) -> Stamper {
        Stamper {
            clocks: Mutex::new((Snowflake::new(node_id), HybridClock::new())),
        }
    }

    /// Returns a fresh stamp for a message arriving now.
    pub fn stamp(&self) -> Stamp {
        let now = now_ms();
        // A poisoned lock only means another thread panicked mid-stamp; the counters are
        // still monotonic, so keep using them.
        let mut clocks = self
            .clocks
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let (snowflake, hlc) = &mut *clocks;
        Stamp {
            message_id: snowflake.next_id(now),
            hlc: hlc.tick(now),
            server_time_ms: now,
        }
    }
}

/// Returns wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_increase() {
        let stamper = Stamper::new(3);
        let first = stamper.stamp();
        let second = stamper.stamp();
        assert!(second.message_id > first.message_id);
        assert!(second.hlc > first.hlc);
        assert!(first.server_time_ms > 0);
    }
}
