//! The impairment engine: no I/O, time passed in, every random decision from a seeded stream.
//!
//! A [`Link`] has two [`DirectionEngine`]s and an optional NAT. Callers push packets as they
//! arrive, ask for packets that are due, and sleep until [`Link::next_event`]. With the same
//! seed and the same arrivals at the same offsets from the start, every decision repeats.

mod codel;
mod corrupt;
mod delay;
mod loss;
mod nat;
mod queue;
mod rng;
mod schedule;
mod trace;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

pub use nat::NatSpec;
pub use queue::{BottleneckSpec, DEFAULT_QUEUE_PACKETS, Service};
pub use rng::Direction;
pub use schedule::{blackhole_active, rebind_epoch};
pub use trace::{OPPORTUNITY_BYTES, Trace};

use self::delay::{DelayLine, DelaySampler};
use self::loss::Loss;
use self::queue::Bottleneck;
use self::rng::{Stage, StageRng};
use crate::config::{
    BlackholeConfig, DelayConfig, DirectionConfig, NatConfig, Scenario, ScenarioError,
};

/// One packet in the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The bytes: a whole IPv4 packet, or a UDP payload in proxy mode.
    pub bytes: Vec<u8>,
    /// Caller's tag, carried unchanged (the proxy stores its session id here).
    pub flow: u64,
}

/// What the packet bytes are, which decides how corruption and queue accounting work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketFormat {
    /// Whole IP packets read from a TUN device.
    Ipv4,
    /// UDP payloads; 28 bytes of IPv4 and UDP header are added for rate and queue accounting.
    Datagram,
}

impl PacketFormat {
    fn wire_size(self, bytes: &[u8]) -> usize {
        match self {
            Self::Ipv4 => bytes.len(),
            Self::Datagram => bytes.len() + 28,
        }
    }
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Packets offered to the direction.
    pub received: u64,
    /// Dropped because a blackhole window was open.
    pub dropped_blackhole: u64,
    /// Dropped by the loss model.
    pub dropped_loss: u64,
    /// Dropped because the queue was full.
    pub dropped_queue: u64,
    /// Dropped by CoDel.
    pub dropped_codel: u64,
    /// Dropped because they hit a NAT mapping that a rebinding removed.
    pub dropped_nat: u64,
    /// Packets with one byte corrupted.
    pub corrupted: u64,
    /// Extra copies made by duplication.
    pub duplicated: u64,
    /// Packets handed back to the caller.
    pub delivered: u64,
    /// Bytes handed back to the caller.
    pub delivered_bytes: u64,
}

/// Fully resolved settings of one direction, with traces loaded.
#[derive(Debug, Clone, Default)]
pub struct DirectionSpec {
    /// Loss model.
    pub loss: Option<crate::config::LossConfig>,
    /// Delay and jitter.
    pub delay: Option<DelayConfig>,
    /// Duplication probability.
    pub duplicate: f64,
    /// Corruption probability.
    pub corrupt: f64,
    /// Bottleneck queue.
    pub bottleneck: Option<BottleneckSpec>,
    /// Blackhole schedule.
    pub blackhole: Option<BlackholeConfig>,
}

impl DirectionSpec {
    /// Resolves a direction of a scenario; `trace_override` replaces the file's trace path.
    pub fn resolve(
        config: &DirectionConfig,
        prefix: &str,
        trace_override: Option<&Path>,
    ) -> Result<Self, ScenarioError> {
        let bottleneck = match &config.rate {
            None => {
                if trace_override.is_some() {
                    return Err(ScenarioError::Field {
                        field: format!("{prefix}.rate"),
                        reason: "a trace was given but the scenario has no rate section".into(),
                    });
                }
                None
            }
            Some(rate) => {
                let service = match (rate.mbit, trace_override.or(rate.trace.as_deref())) {
                    (_, Some(path)) => Service::Trace {
                        trace: Arc::new(Trace::load(path)?),
                        repeat: rate.repeat,
                    },
                    (Some(mbit), None) => Service::Fixed {
                        bits_per_second: mbit * 1e6,
                    },
                    (None, None) => {
                        let flag = if prefix == "uplink" {
                            "--trace-up"
                        } else {
                            "--trace-down"
                        };
                        return Err(ScenarioError::Field {
                            field: format!("{prefix}.rate.trace"),
                            reason: format!(
                                "missing: this scenario takes its trace at run time, pass {flag} PATH"
                            ),
                        });
                    }
                };
                Some(BottleneckSpec {
                    service,
                    queue_packets: rate.queue_packets,
                    queue_bytes: rate.queue_bytes,
                    aqm: rate.aqm,
                    codel_target: rate.codel_target,
                    codel_interval: rate.codel_interval,
                })
            }
        };
        Ok(Self {
            loss: config.loss.clone(),
            delay: config.delay.clone(),
            duplicate: config.duplicate.as_ref().map_or(0.0, |d| d.rate),
            corrupt: config.corrupt.as_ref().map_or(0.0, |c| c.rate),
            bottleneck,
            blackhole: config.blackhole.clone(),
        })
    }
}

/// Fully resolved settings of a link.
#[derive(Debug, Clone, Default)]
pub struct LinkSpec {
    /// Client to server.
    pub uplink: DirectionSpec,
    /// Server to client.
    pub downlink: DirectionSpec,
    /// NAT rebinding schedule, without the address pool (the link layout supplies it).
    pub nat: Option<NatConfig>,
}

impl LinkSpec {
    /// Resolves a scenario, loading traces from the file or from the given overrides.
    pub fn resolve(
        scenario: &Scenario,
        trace_up: Option<&Path>,
        trace_down: Option<&Path>,
    ) -> Result<Self, ScenarioError> {
        Ok(Self {
            uplink: DirectionSpec::resolve(&scenario.uplink, "uplink", trace_up)?,
            downlink: DirectionSpec::resolve(&scenario.downlink, "downlink", trace_down)?,
            nat: scenario.nat.clone(),
        })
    }
}

/// The pipeline of one direction: blackhole, loss, corruption, duplication, bottleneck, delay.
#[derive(Debug)]
pub struct DirectionEngine {
    format: PacketFormat,
    start: Instant,
    blackhole: Option<BlackholeConfig>,
    loss: Option<Loss>,
    corrupt: f64,
    corrupt_rng: StageRng,
    duplicate: f64,
    duplicate_rng: StageRng,
    bottleneck: Option<Bottleneck>,
    line: DelayLine,
    stats: DirectionStats,
}

impl DirectionEngine {
    /// Builds the pipeline; `start` is time zero for schedules and traces.
    pub fn new(
        spec: &DirectionSpec,
        format: PacketFormat,
        seed: u64,
        direction: Direction,
        start: Instant,
    ) -> Self {
        let stream = |stage| StageRng::new(seed, direction, stage);
        let sampler = spec
            .delay
            .clone()
            .map(|delay| DelaySampler::new(delay, stream(Stage::Delay)));
        Self {
            format,
            start,
            blackhole: spec.blackhole.clone(),
            loss: spec
                .loss
                .clone()
                .map(|loss| Loss::new(loss, stream(Stage::Loss))),
            corrupt: spec.corrupt,
            corrupt_rng: stream(Stage::Corrupt),
            duplicate: spec.duplicate,
            duplicate_rng: stream(Stage::Duplicate),
            bottleneck: spec.bottleneck.clone().map(|b| Bottleneck::new(b, start)),
            line: DelayLine::new(sampler),
            stats: DirectionStats::default(),
        }
    }

    /// Offers a packet that arrived at `now`.
    pub fn push(&mut self, now: Instant, mut packet: Packet) {
        self.stats.received += 1;
        let elapsed = now.saturating_duration_since(self.start);
        if let Some(blackhole) = &self.blackhole
            && blackhole_active(blackhole, elapsed)
        {
            self.stats.dropped_blackhole += 1;
            return;
        }
        if let Some(loss) = &mut self.loss
            && loss.drops_next()
        {
            self.stats.dropped_loss += 1;
            return;
        }
        if self.corrupt_rng.chance(self.corrupt)
            && corrupt::corrupt_one_byte(&mut packet.bytes, self.format, &mut self.corrupt_rng)
        {
            self.stats.corrupted += 1;
        }
        if self.duplicate_rng.chance(self.duplicate) {
            self.stats.duplicated += 1;
            self.send(now, packet.clone());
        }
        self.send(now, packet);
    }

    fn send(&mut self, now: Instant, packet: Packet) {
        let line = &mut self.line;
        match &mut self.bottleneck {
            None => line.send(now, packet),
            Some(bottleneck) => {
                let size = self.format.wire_size(&packet.bytes);
                bottleneck.enqueue(now, packet, size, &mut self.stats, &mut |at, p| {
                    line.send(at, p);
                });
            }
        }
    }

    /// Removes the next packet that is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Packet> {
        if let Some(bottleneck) = &mut self.bottleneck {
            let line = &mut self.line;
            bottleneck.drain(now, true, &mut self.stats, &mut |at, p| line.send(at, p));
        }
        let packet = self.line.pop_due(now)?;
        self.stats.delivered += 1;
        self.stats.delivered_bytes += packet.bytes.len() as u64;
        Some(packet)
    }

    /// Earliest time at which `pop_due` could return a packet or the queue could move.
    pub fn next_event(&self) -> Option<Instant> {
        let queue = self.bottleneck.as_ref().and_then(Bottleneck::next_event);
        match (queue, self.line.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Packets waiting in the bottleneck queue.
    pub fn queued_packets(&self) -> usize {
        self.bottleneck
            .as_ref()
            .map_or(0, Bottleneck::queued_packets)
    }

    /// Counters so far.
    pub fn stats(&self) -> DirectionStats {
        self.stats
    }
}

/// Both directions of a link and the NAT between the client and the link.
#[derive(Debug)]
pub struct Link {
    uplink: DirectionEngine,
    downlink: DirectionEngine,
    nat: Option<nat::Nat>,
}

impl Link {
    /// Builds a link. IP-level NAT applies only to [`PacketFormat::Ipv4`]; the UDP proxy
    /// rebinds its own sockets instead.
    pub fn new(
        spec: &LinkSpec,
        format: PacketFormat,
        seed: u64,
        start: Instant,
        nat_pool: Vec<std::net::Ipv4Addr>,
    ) -> Self {
        let nat = match (&spec.nat, format) {
            (Some(config), PacketFormat::Ipv4) => Some(nat::Nat::new(
                NatSpec {
                    config: config.clone(),
                    address_pool: nat_pool,
                },
                start,
            )),
            _ => None,
        };
        Self {
            uplink: DirectionEngine::new(&spec.uplink, format, seed, Direction::Uplink, start),
            downlink: DirectionEngine::new(
                &spec.downlink,
                format,
                seed,
                Direction::Downlink,
                start,
            ),
            nat,
        }
    }

    /// Offers a packet travelling in `direction`.
    pub fn push(&mut self, direction: Direction, now: Instant, mut packet: Packet) {
        match direction {
            Direction::Uplink => {
                // The NAT sits on the client side, so it rewrites before the link.
                if let Some(nat) = &mut self.nat {
                    nat.outbound(now, &mut packet.bytes);
                }
                self.uplink.push(now, packet);
            }
            Direction::Downlink => self.downlink.push(now, packet),
        }
    }

    /// Removes the next packet due in `direction`.
    pub fn pop_due(&mut self, direction: Direction, now: Instant) -> Option<Packet> {
        match direction {
            Direction::Uplink => self.uplink.pop_due(now),
            Direction::Downlink => loop {
                let mut packet = self.downlink.pop_due(now)?;
                let kept = self
                    .nat
                    .as_mut()
                    .is_none_or(|nat| nat.inbound(now, &mut packet.bytes));
                if kept {
                    return Some(packet);
                }
                // The packet left the direction's queue but not the link: it is a drop.
                self.downlink.stats.delivered -= 1;
                self.downlink.stats.delivered_bytes -= packet.bytes.len() as u64;
                self.downlink.stats.dropped_nat += 1;
            },
        }
    }

    /// Earliest time at which either direction has work.
    pub fn next_event(&self) -> Option<Instant> {
        match (self.uplink.next_event(), self.downlink.next_event()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The engine of one direction.
    pub fn direction(&self, direction: Direction) -> &DirectionEngine {
        match direction {
            Direction::Uplink => &self.uplink,
            Direction::Downlink => &self.downlink,
        }
    }
}

#[cfg(test)]
mod tests;
