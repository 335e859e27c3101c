//! Delivery accounting and latency percentiles, with no I/O.
//!
//! [`DeliveryLedger`] records every send and every delivery of a run and derives the
//! counts of the report. A message sent to a conversation of `n` members is expected
//! `n - 1` times, once at each member except the sender.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::workload::ConversationKind;

/// Latency percentiles in milliseconds (nearest-rank).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Number of samples.
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    /// Computes the percentiles of `samples`; `None` when there are none.
    pub fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = |quantile: f64| {
            let position = (quantile * sorted.len() as f64).ceil() as usize;
            sorted[position.clamp(1, sorted.len()) - 1]
        };
        Some(Percentiles {
            count: sorted.len(),
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            p999: rank(0.999),
            max: sorted[sorted.len() - 1],
        })
    }
}

/// Message counts of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct MessageCounts {
    /// Messages the workload sent.
    pub sent: u64,
    /// Sends the node acknowledged as durable.
    pub acknowledged: u64,
    /// Sends that failed with an error.
    pub send_failed: u64,
    /// Deliveries expected: one per sent message and member other than the sender.
    pub expected: u64,
    /// Distinct expected deliveries that arrived.
    pub delivered: u64,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    /// Deliveries of a message the member had already received.
    pub duplicated: u64,
    /// Deliveries with a lower seq than an earlier delivery of the same conversation to
    /// the same member.
    pub reordered: u64,
}

/// One delivery as the receiving client saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delivery {
    /// Client index of the receiver.
    pub recipient: usize,
    /// Index of the send in the plan, from the body.
    pub send_index: u64,
    /// Conversation id on the node.
    pub conversation_id: u64,
    /// Seq of the message in its conversation.
    pub seq: u64,
    /// Microseconds from the clock origin to sending, from the body.
    pub sent_at_micros: u64,
    /// Microseconds from the clock origin to arrival.
    pub received_at_micros: u64,
}

/// A latency sample kept for percentiles and the time series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Busy or quiet.
    pub kind: ConversationKind,
    /// When the message was sent, in milliseconds from the clock origin.
    pub sent_at_ms: f64,
    /// Send-to-delivery latency in milliseconds.
    pub latency_ms: f64,
}

#[derive(Debug, Clone, Copy)]
struct SentMessage {
    kind: ConversationKind,
}

/// Running account of sends and deliveries.
#[derive(Debug, Default)]
pub struct DeliveryLedger {
    sent: HashMap<u64, SentMessage>,
    received: HashSet<(usize, u64)>,
    highest_seq: HashMap<(usize, u64), u64>,
    counts: MessageCounts,
    samples: Vec<Sample>,
    unexpected: u64,
}

impl DeliveryLedger {
    /// Records that send `send_index` of a conversation of `kind` went out to
    /// `recipients` members.
    pub fn record_send(&mut self, send_index: u64, kind: ConversationKind, recipients: usize) {
        let recipients = recipients as u64;
        if self.sent.insert(send_index, SentMessage { kind }).is_none() {
            self.counts.sent += 1;
            self.counts.expected += recipients;
        }
    }

    /// Records the outcome of a send: acknowledged or failed.
    pub fn record_send_outcome(&mut self, acknowledged: bool) {
        if acknowledged {
            self.counts.acknowledged += 1;
        } else {
            self.counts.send_failed += 1;
        }
    }

    /// Records a delivery at a member.
    pub fn record_delivery(&mut self, delivery: Delivery) {
        let Some(sent) = self.sent.get(&delivery.send_index).copied() else {
            // A body this run never sent (for example from an earlier run on the same node).
            self.unexpected += 1;
            return;
        };

        let highest = self
            .highest_seq
            .entry((delivery.recipient, delivery.conversation_id))
            .or_insert(0);
        if delivery.seq < *highest {
            self.counts.reordered += 1;
        }
        *highest = (*highest).max(delivery.seq);

        if !self
            .received
            .insert((delivery.recipient, delivery.send_index))
        {
            self.counts.duplicated += 1;
            return;
        }
        self.counts.delivered += 1;
        let latency_micros = delivery
            .received_at_micros
            .saturating_sub(delivery.sent_at_micros);
        self.samples.push(Sample {
            kind: sent.kind,
            sent_at_ms: delivery.sent_at_micros as f64 / 1000.0,
            latency_ms: latency_micros as f64 / 1000.0,
        });
    }

    /// Reports whether every expected delivery has arrived.
    pub fn is_complete(&self) -> bool {
        self.counts.delivered >= self.counts.expected
    }

    /// Returns the counts, with `lost` as the expected deliveries still missing.
    pub fn counts(&self) -> MessageCounts {
        MessageCounts {
            lost: self.counts.expected.saturating_sub(self.counts.delivered),
            ..self.counts
        }
    }

    /// Returns the number of deliveries whose body this run never sent.
    pub fn unexpected(&self) -> u64 {
        self.unexpected
    }

    /// Returns every latency sample in arrival order.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Returns the latencies in milliseconds of `kind`, or of all kinds for `None`.
    pub fn latencies(&self, kind: Option<ConversationKind>) -> Vec<f64> {
        self.samples
            .iter()
            .filter(|sample| kind.is_none_or(|kind| sample.kind == kind))
            .map(|sample| sample.latency_ms)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(recipient: usize, send_index: u64, seq: u64, latency_micros: u64) -> Delivery {
        Delivery {
            recipient,
            send_index,
            conversation_id: 9,
            seq,
            sent_at_micros: 1_000,
            received_at_micros: 1_000 + latency_micros,
        }
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<f64> = (1..=1000).map(f64::from).collect();
        let result = Percentiles::of(&samples).unwrap();
        assert_eq!(result.count, 1000);
        assert_eq!(result.p50, 500.0);
        assert_eq!(result.p90, 900.0);
        assert_eq!(result.p99, 990.0);
        assert_eq!(result.p999, 999.0);
        assert_eq!(result.max, 1000.0);
    }

    #[test]
    fn percentiles_of_one_and_none() {
        assert_eq!(Percentiles::of(&[]), None);
        let one = Percentiles::of(&[4.5]).unwrap();
        assert_eq!(one.p50, 4.5);
        assert_eq!(one.p999, 4.5);
    }

    #[test]
    fn ledger_counts_lost_duplicated_reordered() {
        let mut ledger = DeliveryLedger::default();
        ledger.record_send(0, ConversationKind::Quiet, 2);
        ledger.record_send(1, ConversationKind::Busy, 1);
        ledger.record_send(2, ConversationKind::Quiet, 2);
        assert_eq!(ledger.counts().expected, 5);

        ledger.record_delivery(delivery(1, 0, 1, 2_000));
        ledger.record_delivery(delivery(2, 0, 1, 3_000));
        ledger.record_delivery(delivery(1, 2, 3, 1_000));
        ledger.record_delivery(delivery(1, 1, 2, 5_000));
        ledger.record_delivery(delivery(1, 1, 2, 5_000));

        let counts = ledger.counts();
        assert_eq!(counts.sent, 3);
        assert_eq!(counts.delivered, 4);
        assert_eq!(counts.lost, 1);
        assert_eq!(counts.duplicated, 1);
        // seq 2 after seq 3 at recipient 1, twice.
        assert_eq!(counts.reordered, 2);
        assert!(!ledger.is_complete());

        ledger.record_delivery(delivery(2, 2, 3, 1_000));
        assert!(ledger.is_complete());
        assert_eq!(ledger.counts().lost, 0);
    }

    #[test]
    fn ledger_splits_latency_by_kind() {
        let mut ledger = DeliveryLedger::default();
        ledger.record_send(0, ConversationKind::Quiet, 1);
        ledger.record_send(1, ConversationKind::Busy, 1);
        ledger.record_delivery(delivery(1, 0, 1, 2_500));
        ledger.record_delivery(delivery(1, 1, 2, 40_000));

        assert_eq!(ledger.latencies(Some(ConversationKind::Quiet)), vec![2.5]);
        assert_eq!(ledger.latencies(Some(ConversationKind::Busy)), vec![40.0]);
        assert_eq!(ledger.latencies(None).len(), 2);
    }

    #[test]
    fn ledger_ignores_unknown_bodies() {
        let mut ledger = DeliveryLedger::default();
        ledger.record_delivery(delivery(1, 77, 1, 1_000));
        assert_eq!(ledger.unexpected(), 1);
        assert_eq!(ledger.counts().delivered, 0);
    }

    #[test]
    fn ledger_counts_send_outcomes() {
        let mut ledger = DeliveryLedger::default();
        ledger.record_send_outcome(true);
        ledger.record_send_outcome(false);
        assert_eq!(ledger.counts().acknowledged, 1);
        assert_eq!(ledger.counts().send_failed, 1);
    }
}
