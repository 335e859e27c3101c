//! The fault timeline of a run: when the scenario's blackholes were open and when its NAT
//! rebound, on the clock of the workload's latency samples.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{BlackholeConfig, NatConfig};
use crate::engine::{Direction, LinkSpec};

/// Upper bound on the events listed, so a tiny period over a long run stays bounded.
const MAX_EVENTS: usize = 10_000;

/// Faults of one transport's run, in seconds since the workload's time origin (the same
/// origin as `sent_at_ms` in the latency samples). Times before it are negative.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultTimeline {
    /// Windows in which a blackhole dropped every packet: direction, start, end.
    pub blackholes: Vec<BlackholeWindow>,
    /// Times at which the NAT changed the client's public address or port.
    pub rebinds_s: Vec<f64>,
}

/// One blackhole window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlackholeWindow {
    /// `uplink` or `downlink`.
    pub direction: String,
    /// Start, in seconds.
    pub start_s: f64,
    /// End, in seconds.
    pub end_s: f64,
}

impl FaultTimeline {
    /// Lists the faults of `spec` from the link's start until `span` after it, shifted so
    /// that `origin_offset` after the link started is time zero.
    pub fn of(spec: &LinkSpec, origin_offset: Duration, span: Duration) -> Self {
        let shift = origin_offset.as_secs_f64();
        let mut blackholes = Vec::new();
        for (direction, config) in [
            (Direction::Uplink, &spec.uplink.blackhole),
            (Direction::Downlink, &spec.downlink.blackhole),
        ] {
            let Some(config) = config else {
                continue;
            };
            let name = match direction {
                Direction::Uplink => "uplink",
                Direction::Downlink => "downlink",
            };
            for (start, end) in blackhole_windows(config, span) {
                blackholes.push(BlackholeWindow {
                    direction: name.to_owned(),
                    start_s: start.as_secs_f64() - shift,
                    end_s: end.as_secs_f64() - shift,
                });
            }
        }
        let rebinds_s = spec
            .nat
            .as_ref()
            .map(|nat| rebind_times(nat, span))
            .unwrap_or_default()
            .into_iter()
            .map(|at| at.as_secs_f64() - shift)
            .collect();
        Self {
            blackholes,
            rebinds_s,
        }
    }

    /// Reports whether the timeline has no fault.
    pub fn is_empty(&self) -> bool {
        self.blackholes.is_empty() && self.rebinds_s.is_empty()
    }
}

/// Returns the windows, since the link started, in which `config` drops everything.
fn blackhole_windows(config: &BlackholeConfig, span: Duration) -> Vec<(Duration, Duration)> {
    let cycle = config.pass_for + config.drop_for;
    if config.drop_for.is_zero() || cycle.is_zero() {
        return Vec::new();
    }
    let mut windows = Vec::new();
    let mut start = config.pass_for;
    while start < span && windows.len() < MAX_EVENTS {
        windows.push((start, start + config.drop_for));
        if !config.repeat {
            break;
        }
        start += cycle;
    }
    windows
}

/// Returns the rebinding times, since the link started, up to `span`.
fn rebind_times(config: &NatConfig, span: Duration) -> Vec<Duration> {
    let mut times = Vec::new();
    let mut at = config.first;
    while at < span && times.len() < MAX_EVENTS {
        times.push(at);
        match config.every {
            Some(every) if !every.is_zero() => at += every,
            _ => break,
        }
    }
    times
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RebindKind;
    use crate::engine::{blackhole_active, rebind_epoch};

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    #[test]
    fn windows_match_the_engine_schedule() {
        let config = BlackholeConfig {
            pass_for: ms(5000),
            drop_for: ms(2000),
            repeat: true,
        };
        let windows = blackhole_windows(&config, ms(20_000));
        assert_eq!(
            windows,
            vec![
                (ms(5000), ms(7000)),
                (ms(12_000), ms(14_000)),
                (ms(19_000), ms(21_000))
            ]
        );
        for (start, end) in windows {
            assert!(blackhole_active(&config, start));
            assert!(blackhole_active(&config, end - ms(1)));
            assert!(!blackhole_active(&config, end));
        }
    }

    #[test]
    fn rebinds_match_the_engine_epochs() {
        let config = NatConfig {
            rebind: RebindKind::Port,
            first: ms(1000),
            every: Some(ms(5000)),
        };
        let times = rebind_times(&config, ms(12_000));
        assert_eq!(times, vec![ms(1000), ms(6000), ms(11_000)]);
        for (index, at) in times.iter().enumerate() {
            assert_eq!(rebind_epoch(&config, *at), index as u64 + 1);
            assert_eq!(rebind_epoch(&config, *at - ms(1)), index as u64);
        }
    }

    #[test]
    fn timeline_shifts_to_the_origin() {
        let mut spec = LinkSpec::default();
        spec.downlink.blackhole = Some(BlackholeConfig {
            pass_for: ms(3000),
            drop_for: ms(1000),
            repeat: false,
        });
        let timeline = FaultTimeline::of(&spec, ms(500), ms(60_000));
        assert_eq!(timeline.blackholes.len(), 1);
        assert_eq!(timeline.blackholes[0].direction, "downlink");
        assert_eq!(timeline.blackholes[0].start_s, 2.5);
        assert_eq!(timeline.blackholes[0].end_s, 3.5);
        assert!(timeline.rebinds_s.is_empty());
    }
}
