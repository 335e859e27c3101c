//! Time schedules: blackhole windows and NAT rebinding epochs.

use std::time::Duration;

use crate::config::{BlackholeConfig, NatConfig};

/// Returns whether the link drops everything `elapsed` after it started.
pub fn blackhole_active(config: &BlackholeConfig, elapsed: Duration) -> bool {
    let cycle = config.pass_for + config.drop_for;
    if !config.repeat && elapsed >= cycle {
        return false;
    }
    let within = Duration::from_nanos(
        u64::try_from(elapsed.as_nanos() % cycle.as_nanos().max(1)).unwrap_or(0),
    );
    within >= config.pass_for
}

/// Returns how many rebindings have happened `elapsed` after the link started.
pub fn rebind_epoch(config: &NatConfig, elapsed: Duration) -> u64 {
    if elapsed < config.first {
        return 0;
    }
    match config.every {
        None => 1,
        Some(every) => {
            let since = (elapsed - config.first).as_nanos();
            1 + u64::try_from(since / every.as_nanos().max(1)).unwrap_or(u64::MAX - 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RebindKind;

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    #[test]
    fn blackhole_windows() {
        let config = BlackholeConfig {
            pass_for: ms(5000),
            drop_for: ms(2000),
            repeat: true,
        };
        assert!(!blackhole_active(&config, ms(0)));
        assert!(!blackhole_active(&config, ms(4999)));
        assert!(blackhole_active(&config, ms(5000)));
        assert!(blackhole_active(&config, ms(6999)));
        assert!(!blackhole_active(&config, ms(7000)));
        assert!(blackhole_active(&config, ms(12_500)));
    }

    #[test]
    fn blackhole_once() {
        let config = BlackholeConfig {
            pass_for: ms(1000),
            drop_for: ms(500),
            repeat: false,
        };
        assert!(blackhole_active(&config, ms(1200)));
        assert!(!blackhole_active(&config, ms(2200)));
    }

    #[test]
    fn rebind_epochs() {
        let config = NatConfig {
            rebind: RebindKind::Port,
            first: ms(1000),
            every: Some(ms(5000)),
        };
        assert_eq!(rebind_epoch(&config, ms(999)), 0);
        assert_eq!(rebind_epoch(&config, ms(1000)), 1);
        assert_eq!(rebind_epoch(&config, ms(5999)), 1);
        assert_eq!(rebind_epoch(&config, ms(6000)), 2);
        let once = NatConfig {
            every: None,
            ..config
        };
        assert_eq!(rebind_epoch(&once, ms(60_000)), 1);
    }
}
