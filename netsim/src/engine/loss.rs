//! Packet loss: independent with an optional cap on consecutive drops, or Gilbert-Elliott.

use super::rng::StageRng;
use crate::config::LossConfig;

/// Per-direction loss state.
#[derive(Debug, Clone)]
pub(crate) struct Loss {
    config: LossConfig,
    rng: StageRng,
    consecutive: u32,
    bad_state: bool,
}

impl Loss {
    pub(crate) fn new(config: LossConfig, rng: StageRng) -> Self {
        Self {
            config,
            rng,
            consecutive: 0,
            bad_state: false,
        }
    }

    /// Decides whether the next packet is lost.
    pub(crate) fn drops_next(&mut self) -> bool {
        let lost = match self.config {
            LossConfig::Independent {
                rate,
                max_consecutive,
            } => {
                let capped = max_consecutive.is_some_and(|cap| self.consecutive >= cap);
                // NOTE: the cap lowers the effective rate slightly: by about rate^(cap+1).
                !capped && self.rng.chance(rate)
            }
            LossConfig::GilbertElliott {
                p,
                r,
                loss_good,
                loss_bad,
            } => {
                // The state moves first, then the packet sees the loss rate of the new state.
                let leave = if self.bad_state { r } else { p };
                if self.rng.chance(leave) {
                    self.bad_state = !self.bad_state;
                }
                let rate = if self.bad_state { loss_bad } else { loss_good };
                self.rng.chance(rate)
            }
        };
        self.consecutive = if lost { self.consecutive + 1 } else { 0 };
        lost
    }

    #[cfg(test)]
    /// Whether the Gilbert-Elliott chain is in its bad state (always false for independent).
    pub(crate) fn in_bad_state(&self) -> bool {
        self.bad_state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rng::{Direction, Stage};

    fn rng(seed: u64) -> StageRng {
        StageRng::new(seed, Direction::Uplink, Stage::Loss)
    }

    fn longest_run(decisions: &[bool]) -> usize {
        let mut longest = 0;
        let mut current = 0;
        for &lost in decisions {
            current = if lost { current + 1 } else { 0 };
            longest = longest.max(current);
        }
        longest
    }

    #[test]
    fn independent_rate_within_tolerance() {
        let mut loss = Loss::new(
            LossConfig::Independent {
                rate: 0.02,
                max_consecutive: None,
            },
            rng(1),
        );
        let n = 200_000;
        let lost = (0..n).filter(|_| loss.drops_next()).count();
        let observed = lost as f64 / n as f64;
        // Binomial standard deviation is 0.0003 here; 0.001 is more than 3 of them.
        assert!((observed - 0.02).abs() < 0.001, "observed {observed}");
    }

    #[test]
    fn consecutive_cap_holds() {
        let config = LossConfig::Independent {
            rate: 0.5,
            max_consecutive: Some(3),
        };
        let mut loss = Loss::new(config, rng(2));
        let decisions: Vec<bool> = (0..100_000).map(|_| loss.drops_next()).collect();
        assert_eq!(longest_run(&decisions), 3);
    }

    #[test]
    fn uncapped_runs_exceed_cap() {
        // Control for the cap test: without the cap, runs longer than 3 do occur.
        let config = LossConfig::Independent {
            rate: 0.5,
            max_consecutive: None,
        };
        let mut loss = Loss::new(config, rng(2));
        let decisions: Vec<bool> = (0..100_000).map(|_| loss.drops_next()).collect();
        assert!(longest_run(&decisions) > 3);
    }

    #[test]
    fn gilbert_elliott_state_statistics() {
        let (p, r) = (0.01, 0.25);
        let config = LossConfig::GilbertElliott {
            p,
            r,
            loss_good: 0.0,
            loss_bad: 0.5,
        };
        let mut loss = Loss::new(config, rng(3));
        let n = 400_000;
        let mut bad_packets = 0usize;
        let mut lost = 0usize;
        let mut bad_sojourns = Vec::new();
        let mut current_bad = 0usize;
        for _ in 0..n {
            lost += usize::from(loss.drops_next());
            if loss.in_bad_state() {
                bad_packets += 1;
                current_bad += 1;
            } else if current_bad > 0 {
                bad_sojourns.push(current_bad);
                current_bad = 0;
            }
        }

        // Stationary share of the bad state is p / (p + r) = 0.0385.
        let bad_share = bad_packets as f64 / n as f64;
        let expected_share = p / (p + r);
        assert!(
            (bad_share - expected_share).abs() / expected_share < 0.08,
            "bad share {bad_share}"
        );

        // Mean time in the bad state is 1 / r = 4 packets (geometric).
        let mean_sojourn = bad_sojourns.iter().sum::<usize>() as f64 / bad_sojourns.len() as f64;
        assert!(
            (mean_sojourn - 1.0 / r).abs() < 0.25,
            "mean bad sojourn {mean_sojourn}"
        );

        // Overall loss is the bad share times the loss rate there.
        let loss_rate = lost as f64 / n as f64;
        let expected_loss = expected_share * 0.5;
        assert!(
            (loss_rate - expected_loss).abs() / expected_loss < 0.1,
            "loss {loss_rate}"
        );
    }

    #[test]
    fn same_seed_replays_decisions() {
        let config = LossConfig::Independent {
            rate: 0.1,
            max_consecutive: Some(2),
        };
        let mut a = Loss::new(config.clone(), rng(9));
        let mut b = Loss::new(config, rng(9));
        let first: Vec<bool> = (0..10_000).map(|_| a.drops_next()).collect();
        let second: Vec<bool> = (0..10_000).map(|_| b.drops_next()).collect();
        assert_eq!(first, second);
    }
}
