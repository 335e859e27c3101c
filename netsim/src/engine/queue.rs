//! The bottleneck: a byte-accounted queue drained at a fixed rate or by an mm-link trace.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::codel::Codel;
use super::trace::{OPPORTUNITY_BYTES, Trace, TraceCursor};
use super::{DirectionStats, Packet};
use crate::config::Aqm;

/// Queue limit used when a scenario sets neither `queue_packets` nor `queue_bytes`.
pub const DEFAULT_QUEUE_PACKETS: u32 = 1000;

/// How the bottleneck drains.
#[derive(Debug, Clone)]
pub enum Service {
    /// Fixed rate in bits per second.
    Fixed {
        /// Link rate, counting the accounted size of each packet.
        bits_per_second: f64,
    },
    /// Delivery opportunities from a trace.
    Trace {
        /// The trace.
        trace: Arc<Trace>,
        /// Whether the trace restarts at its end; if not, the link stops delivering.
        repeat: bool,
    },
}

/// A fully resolved bottleneck.
#[derive(Debug, Clone)]
pub struct BottleneckSpec {
    /// How the queue drains.
    pub service: Service,
    /// Queue limit in packets, if any.
    pub queue_packets: Option<u32>,
    /// Queue limit in bytes, if any.
    pub queue_bytes: Option<u64>,
    /// Queue management.
    pub aqm: Aqm,
    /// CoDel target sojourn time.
    pub codel_target: Duration,
    /// CoDel interval.
    pub codel_interval: Duration,
}

#[derive(Debug)]
struct Queued {
    enqueued: Instant,
    size: usize,
    remaining: usize,
    packet: Packet,
}

/// Queue state of one direction.
#[derive(Debug)]
pub(crate) struct Bottleneck {
    spec: BottleneckSpec,
    start: Instant,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    busy_until: Instant,
    cursor: TraceCursor,
    codel: Option<Codel>,
}

impl Bottleneck {
    pub(crate) fn new(spec: BottleneckSpec, start: Instant) -> Self {
        let codel =
            (spec.aqm == Aqm::Codel).then(|| Codel::new(spec.codel_target, spec.codel_interval));
        Self {
            spec,
            start,
            queue: VecDeque::new(),
            queued_bytes: 0,
            busy_until: start,
            cursor: TraceCursor::default(),
            codel,
        }
    }

    /// Offers a packet at `now`; `size` is its accounted length on the wire.
    pub(crate) fn enqueue(
        &mut self,
        now: Instant,
        packet: Packet,
        size: usize,
        stats: &mut DirectionStats,
        sent: &mut impl FnMut(Instant, Packet),
    ) {
        // Opportunities strictly before the arrival cannot carry this packet.
        self.drain(now, false, stats, sent);

        let packet_limit = match (self.spec.queue_packets, self.spec.queue_bytes) {
            (None, None) => Some(DEFAULT_QUEUE_PACKETS),
            (packets, _) => packets,
        };
        let over_packets = packet_limit.is_some_and(|limit| self.queue.len() >= limit as usize);
        let over_bytes = self
            .spec
            .queue_bytes
            .is_some_and(|limit| (self.queued_bytes + size) as u64 > limit);
        if over_packets || over_bytes {
            stats.dropped_queue += 1;
            return;
        }
        self.queued_bytes += size;
        self.queue.push_back(Queued {
            enqueued: now,
            size,
            remaining: size,
            packet,
        });
        self.drain(now, true, stats, sent);
    }

    /// Moves every packet whose transmission starts by `now` onto the wire.
    pub(crate) fn drain(
        &mut self,
        now: Instant,
        inclusive: bool,
        stats: &mut DirectionStats,
        sent: &mut impl FnMut(Instant, Packet),
    ) {
        match self.spec.service.clone() {
            Service::Fixed { bits_per_second } => {
                self.drain_fixed(now, inclusive, bits_per_second, stats, sent);
            }
            Service::Trace { trace, repeat } => {
                self.drain_trace(now, inclusive, &trace, repeat, stats, sent);
            }
        }
    }

    fn drain_fixed(
        &mut self,
        now: Instant,
        inclusive: bool,
        bits_per_second: f64,
        stats: &mut DirectionStats,
        sent: &mut impl FnMut(Instant, Packet),
    ) {
        while let Some(head) = self.queue.front() {
            let begins = self.busy_until.max(head.enqueued);
            if begins > now || (!inclusive && begins == now) {
                break;
            }
            let Some(queued) = self.dequeue(begins, stats) else {
                continue;
            };
            let transmit = Duration::from_secs_f64(queued.size as f64 * 8.0 / bits_per_second);
            self.busy_until = begins + transmit;
            sent(self.busy_until, queued.packet);
        }
    }

    fn drain_trace(
        &mut self,
        now: Instant,
        inclusive: bool,
        trace: &Trace,
        repeat: bool,
        stats: &mut DirectionStats,
        sent: &mut impl FnMut(Instant, Packet),
    ) {
        loop {
            // An idle link wastes its opportunities, so jump straight to the first one that
            // a queued packet (or the present) could use.
            let idle_until = self
                .queue
                .front()
                .map_or(now, |head| head.enqueued.min(now));
            self.cursor
                .seek(trace, idle_until.saturating_duration_since(self.start));

            let Some(at) = self.cursor.time(trace, self.start, repeat) else {
                return;
            };
            if at > now || (!inclusive && at == now) {
                return;
            }
            self.use_opportunity(at, stats, sent);
            self.cursor.advance(trace);
        }
    }

    fn use_opportunity(
        &mut self,
        at: Instant,
        stats: &mut DirectionStats,
        sent: &mut impl FnMut(Instant, Packet),
    ) {
        // As in mm-link, one opportunity carries up to 1500 bytes, a packet may span several
        // opportunities, and bytes left over are lost.
        let mut budget = OPPORTUNITY_BYTES;
        while budget > 0 {
            let Some(head) = self.queue.front_mut() else {
                return;
            };
            if head.enqueued > at {
                return;
            }
            if head.remaining == head.size && self.codel.is_some() {
                let Some(queued) = self.dequeue(at, stats) else {
                    continue;
                };
                self.queue.push_front(queued);
                self.queued_bytes += self.queue[0].size;
            }
            let head = &mut self.queue[0];
            let take = budget.min(head.remaining);
            head.remaining -= take;
            budget -= take;
            if head.remaining == 0 {
                let done = self.queue.pop_front().map(|queued| {
                    self.queued_bytes -= queued.size;
                    queued.packet
                });
                if let Some(packet) = done {
                    sent(at, packet);
                }
            }
        }
    }

    /// Pops the head at `now`, or drops it when CoDel says so (then returns `None`).
    fn dequeue(&mut self, now: Instant, stats: &mut DirectionStats) -> Option<Queued> {
        let queued = self.queue.pop_front()?;
        self.queued_bytes -= queued.size;
        let sojourn = now.saturating_duration_since(queued.enqueued);
        if let Some(codel) = &mut self.codel
            && codel.should_drop(now, sojourn, self.queued_bytes)
        {
            stats.dropped_codel += 1;
            return None;
        }
        Some(queued)
    }

    /// Time at which the head of the queue could next move, if anything is queued.
    pub(crate) fn next_event(&self) -> Option<Instant> {
        let head = self.queue.front()?;
        match &self.spec.service {
            Service::Fixed { .. } => Some(self.busy_until.max(head.enqueued)),
            Service::Trace { trace, repeat } => {
                let mut cursor = self.cursor.clone();
                cursor.seek(trace, head.enqueued.saturating_duration_since(self.start));
                cursor.time(trace, self.start, *repeat)
            }
        }
    }

    pub(crate) fn queued_packets(&self) -> usize {
        self.queue.len()
    }
}
