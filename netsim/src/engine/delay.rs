//! Propagation delay with jitter, and the line of packets in flight.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::Packet;
use super::rng::StageRng;
use crate::config::{DelayConfig, JitterDistribution};

/// Samples one-way delays.
#[derive(Debug, Clone)]
pub(crate) struct DelaySampler {
    config: DelayConfig,
    rng: StageRng,
}

impl DelaySampler {
    pub(crate) fn new(config: DelayConfig, rng: StageRng) -> Self {
        Self { config, rng }
    }

    /// Draws the delay of the next packet; never negative.
    pub(crate) fn sample(&mut self) -> Duration {
        let base = self.config.base.as_secs_f64();
        let jitter = self.config.jitter.as_secs_f64();
        if jitter == 0.0 {
            return self.config.base;
        }
        let offset = match self.config.distribution {
            JitterDistribution::Uniform => (self.rng.unit() * 2.0 - 1.0) * jitter,
            JitterDistribution::Normal => self.rng.standard_normal() * jitter,
            JitterDistribution::Pareto => {
                // Lomax (Pareto II) by inversion: scale = jitter * (shape - 1) gives mean jitter.
                let shape = self.config.pareto_shape;
                let scale = jitter * (shape - 1.0);
                let u = 1.0 - self.rng.unit();
                scale * (u.powf(-1.0 / shape) - 1.0)
            }
        };
        Duration::from_secs_f64((base + offset).max(0.0))
    }

    pub(crate) fn allows_reorder(&self) -> bool {
        self.config.reorder
    }
}

#[derive(Debug)]
struct InFlight {
    due: Instant,
    order: u64,
    packet: Packet,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due && self.order == other.order
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    // Reversed so the max-heap pops the earliest due time, ties in arrival order.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .due
            .cmp(&self.due)
            .then_with(|| other.order.cmp(&self.order))
    }
}

/// Packets that left the bottleneck and are propagating.
#[derive(Debug, Default)]
pub(crate) struct DelayLine {
    sampler: Option<DelaySampler>,
    heap: BinaryHeap<InFlight>,
    next_order: u64,
    last_due: Option<Instant>,
}

impl DelayLine {
    pub(crate) fn new(sampler: Option<DelaySampler>) -> Self {
        Self {
            sampler,
            ..Self::default()
        }
    }

    /// Adds a packet that enters the wire at `sent`.
    pub(crate) fn send(&mut self, sent: Instant, packet: Packet) {
        let (delay, reorder) = match &mut self.sampler {
            Some(sampler) => (sampler.sample(), sampler.allows_reorder()),
            None => (Duration::ZERO, false),
        };
        let mut due = sent + delay;
        if !reorder && let Some(last) = self.last_due {
            due = due.max(last);
        }
        self.last_due = Some(self.last_due.map_or(due, |last| last.max(due)));
        self.heap.push(InFlight {
            due,
            order: self.next_order,
            packet,
        });
        self.next_order += 1;
    }

    /// Removes the next packet due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Packet> {
        if self.heap.peek()?.due <= now {
            self.heap.pop().map(|flight| flight.packet)
        } else {
            None
        }
    }

    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|flight| flight.due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rng::{Direction, Stage};

    fn sampler(base_ms: u64, jitter_ms: u64, distribution: JitterDistribution) -> DelaySampler {
        let config = DelayConfig {
            base: Duration::from_millis(base_ms),
            jitter: Duration::from_millis(jitter_ms),
            distribution,
            reorder: true,
            pareto_shape: 3.0,
        };
        DelaySampler::new(config, StageRng::new(5, Direction::Uplink, Stage::Delay))
    }

    fn samples_ms(sampler: &mut DelaySampler, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| sampler.sample().as_secs_f64() * 1000.0)
            .collect()
    }

    fn mean(values: &[f64]) -> f64 {
        values.iter().sum::<f64>() / values.len() as f64
    }

    fn std_dev(values: &[f64]) -> f64 {
        let m = mean(values);
        (values.iter().map(|x| (x - m).powi(2)).sum::<f64>() / values.len() as f64).sqrt()
    }

    #[test]
    fn uniform_jitter_bounds_and_moments() {
        let values = samples_ms(&mut sampler(50, 10, JitterDistribution::Uniform), 50_000);
        assert!(values.iter().all(|v| (40.0..=60.0).contains(v)));
        assert!((mean(&values) - 50.0).abs() < 0.2, "mean {}", mean(&values));
        // A uniform on [-10, 10] has standard deviation 10 / sqrt(3) = 5.77.
        assert!(
            (std_dev(&values) - 5.774).abs() < 0.1,
            "std {}",
            std_dev(&values)
        );
    }

    #[test]
    fn normal_jitter_moments() {
        let values = samples_ms(&mut sampler(100, 10, JitterDistribution::Normal), 50_000);
        assert!(
            (mean(&values) - 100.0).abs() < 0.2,
            "mean {}",
            mean(&values)
        );
        assert!(
            (std_dev(&values) - 10.0).abs() < 0.2,
            "std {}",
            std_dev(&values)
        );
        let within_one_sigma = values.iter().filter(|v| (**v - 100.0).abs() < 10.0).count();
        let share = within_one_sigma as f64 / values.len() as f64;
        assert!(
            (share - 0.6827).abs() < 0.01,
            "share within one sigma {share}"
        );
    }

    #[test]
    fn normal_jitter_clamped_at_zero() {
        let values = samples_ms(&mut sampler(1, 10, JitterDistribution::Normal), 10_000);
        assert!(values.iter().all(|v| *v >= 0.0));
    }

    #[test]
    fn pareto_jitter_positive_with_mean() {
        let values = samples_ms(&mut sampler(20, 5, JitterDistribution::Pareto), 200_000);
        assert!(values.iter().all(|v| *v >= 20.0));
        assert!(
            (mean(&values) - 25.0).abs() < 0.25,
            "mean {}",
            mean(&values)
        );
        // Heavy tail: the median extra delay of Lomax(3) is scale * (2^(1/3) - 1) = 2.6 ms.
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let median_extra = sorted[sorted.len() / 2] - 20.0;
        assert!(
            (median_extra - 2.599).abs() < 0.1,
            "median extra {median_extra}"
        );
    }

    #[test]
    fn no_reorder_keeps_fifo() {
        let start = Instant::now();
        let mut config_sampler = sampler(50, 20, JitterDistribution::Uniform);
        config_sampler.config.reorder = false;
        let mut line = DelayLine::new(Some(config_sampler));
        for i in 0..1000u64 {
            let packet = Packet {
                bytes: i.to_be_bytes().to_vec(),
                flow: 0,
            };
            line.send(start + Duration::from_micros(i * 100), packet);
        }
        let end = start + Duration::from_secs(10);
        let order: Vec<u64> = std::iter::from_fn(|| line.pop_due(end))
            .map(|p| u64::from_be_bytes(p.bytes.try_into().unwrap()))
            .collect();
        assert_eq!(order, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn reorder_allowed_reorders() {
        let start = Instant::now();
        let mut line = DelayLine::new(Some(sampler(50, 20, JitterDistribution::Uniform)));
        for i in 0..1000u64 {
            let packet = Packet {
                bytes: i.to_be_bytes().to_vec(),
                flow: 0,
            };
            line.send(start + Duration::from_micros(i * 100), packet);
        }
        let end = start + Duration::from_secs(10);
        let order: Vec<u64> = std::iter::from_fn(|| line.pop_due(end))
            .map(|p| u64::from_be_bytes(p.bytes.try_into().unwrap()))
            .collect();
        let inversions = order.windows(2).filter(|w| w[0] > w[1]).count();
        assert_eq!(order.len(), 1000);
        assert!(inversions > 100, "inversions {inversions}");
    }

    #[test]
    fn packet_not_due_before_delay() {
        let start = Instant::now();
        let mut line = DelayLine::new(Some(sampler(15, 0, JitterDistribution::Uniform)));
        line.send(
            start,
            Packet {
                bytes: vec![1],
                flow: 0,
            },
        );
        assert!(
            line.pop_due(start + Duration::from_micros(14_999))
                .is_none()
        );
        assert_eq!(line.next_due(), Some(start + Duration::from_millis(15)));
        assert!(line.pop_due(start + Duration::from_millis(15)).is_some());
    }
}
