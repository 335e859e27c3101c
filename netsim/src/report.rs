//! The report of `netsim run`: `summary.json`, per-transport latency samples and the
//! table printed at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use tidings_clients::{QuicStats, TcpStats, TransportStats};

use crate::engine::DirectionStats;
use crate::faults::FaultTimeline;
use crate::stats::{DeliveryLedger, MessageCounts, Percentiles, Sample};
use crate::workload::{ConversationKind, WorkloadConfig};

/// Contents of `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Scenario name or path as given.
    pub scenario: String,
    /// Seed of the link and of the workload.
    pub seed: u64,
    /// Version of the `tidings-netsim` crate that produced the report.
    pub version: String,
    /// Length of the send phase of each transport, in seconds.
    pub duration_s: f64,
    /// The workload every transport ran.
    pub workload: WorkloadConfig,
    /// One entry per transport, keyed `quic` or `ws`.
    pub transports: BTreeMap<String, TransportReport>,
}

/// Results of one transport.
#[derive(Debug, Clone, Serialize)]
pub struct TransportReport {
    /// Message and delivery counts.
    pub messages: MessageCounts,
    /// Deliveries whose body this run never sent.
    pub unexpected_deliveries: u64,
    /// Send-to-delivery latency of every conversation.
    pub latency_ms: Option<Percentiles>,
    /// Busy conversations only.
    pub busy: KindReport,
    /// Quiet conversations only.
    pub quiet: KindReport,
    /// Time from the start of a connect to the node's `Welcome`, one sample per client.
    pub handshake_ms: Option<Percentiles>,
    /// Sessions lost and regained during the run.
    pub reconnects: ReconnectReport,
    /// Transport counters summed over all clients: from quinn for QUIC, from `TCP_INFO`
    /// for the WebSocket's TCP connections. `None` when no client reported any.
    pub transport: Option<TransportCounters>,
    /// Blackhole windows and NAT rebindings of the scenario during this run, on the clock
    /// of the latency samples.
    pub faults: FaultTimeline,
    /// Packet counters of the emulated link during this transport's run.
    pub link: LinkReport,
    /// CPU use of the whole machine during this transport's run.
    pub cpu: CpuReport,
}

/// Latency of one conversation kind.
#[derive(Debug, Clone, Serialize)]
pub struct KindReport {
    /// Send-to-delivery latency.
    pub latency_ms: Option<Percentiles>,
}

/// Sessions lost during a run and how long clients stayed without one.
#[derive(Debug, Clone, Serialize)]
pub struct ReconnectReport {
    /// New sessions after each client's first, counted by the clients themselves.
    pub count: u64,
    /// Sessions lost, over all clients, as sampled every 20 ms (outages shorter than
    /// that are not counted).
    pub disconnects: u64,
    /// Time from losing a session to having a new one, for outages that ended.
    pub outage_ms: Option<Percentiles>,
}

/// Transport counters of one transport, summed over clients.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum TransportCounters {
    /// QUIC connections.
    Quic(QuicCounters),
    /// TCP connections under the WebSockets.
    Tcp(TcpCounters),
}

/// QUIC counters from quinn's connection statistics.
#[derive(Debug, Clone, Serialize)]
pub struct QuicCounters {
    /// QUIC packets sent.
    pub sent_packets: u64,
    /// Packets declared lost by the senders' loss detection.
    pub lost_packets: u64,
    /// Bytes in lost packets.
    pub lost_bytes: u64,
    /// `lost_packets / sent_packets`.
    pub loss_fraction: Option<f64>,
    /// Congestion window reductions.
    pub congestion_events: u64,
    /// UDP datagrams sent.
    pub sent_datagrams: u64,
    /// UDP datagrams received.
    pub received_datagrams: u64,
    /// Smoothed RTT of each client's last connection at the end of the run.
    pub rtt_ms: Option<Percentiles>,
    /// Minimum RTT of each client's last connection.
    pub min_rtt_ms: Option<Percentiles>,
}

/// TCP counters from `TCP_INFO`.
#[derive(Debug, Clone, Serialize)]
pub struct TcpCounters {
    /// Segments retransmitted by the clients (`tcpi_total_retrans`).
    pub retransmits: u64,
    /// Smoothed RTT of each client's last connection at the end of the run.
    pub rtt_ms: Option<Percentiles>,
    /// RTT variation of each client's last connection.
    pub rtt_var_ms: Option<Percentiles>,
}

impl TransportCounters {
    /// Sums the statistics of every client; `None` when none has any.
    pub fn of(stats: &[TransportStats]) -> Option<Self> {
        let millis = |duration: std::time::Duration| duration.as_secs_f64() * 1000.0;
        let quic: Vec<QuicStats> = stats.iter().filter_map(|client| client.quic).collect();
        if !quic.is_empty() {
            let sent_packets = quic.iter().map(|q| q.sent_packets).sum::<u64>();
            let lost_packets = quic.iter().map(|q| q.lost_packets).sum::<u64>();
            let rtts: Vec<f64> = quic.iter().map(|q| millis(q.rtt)).collect();
            let min_rtts: Vec<f64> = quic.iter().map(|q| millis(q.min_rtt)).collect();
            return Some(TransportCounters::Quic(QuicCounters {
                sent_packets,
                lost_packets,
                lost_bytes: quic.iter().map(|q| q.lost_bytes).sum(),
                loss_fraction: (sent_packets > 0)
                    .then(|| lost_packets as f64 / sent_packets as f64),
                congestion_events: quic.iter().map(|q| q.congestion_events).sum(),
                sent_datagrams: quic.iter().map(|q| q.sent_datagrams).sum(),
                received_datagrams: quic.iter().map(|q| q.received_datagrams).sum(),
                rtt_ms: Percentiles::of(&rtts),
                min_rtt_ms: Percentiles::of(&min_rtts),
            }));
        }
        let tcp: Vec<TcpStats> = stats.iter().filter_map(|client| client.tcp).collect();
        if tcp.is_empty() {
            return None;
        }
        let rtts: Vec<f64> = tcp.iter().map(|t| millis(t.rtt)).collect();
        let rtt_vars: Vec<f64> = tcp.iter().map(|t| millis(t.rtt_var)).collect();
        Some(TransportCounters::Tcp(TcpCounters {
            retransmits: tcp.iter().map(|t| t.retransmits).sum(),
            rtt_ms: Percentiles::of(&rtts),
            rtt_var_ms: Percentiles::of(&rtt_vars),
        }))
    }
}

/// Link counters of both directions.
#[derive(Debug, Clone, Serialize)]
pub struct LinkReport {
    /// Client to server.
    pub uplink: LinkCounters,
    /// Server to client.
    pub downlink: LinkCounters,
}

/// Packet counters of one direction of the link.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LinkCounters {
    /// Packets that entered the link.
    pub packets_in: u64,
    /// Packets that left it.
    pub packets_out: u64,
    /// Dropped by the loss model, the queue, CoDel, a blackhole or a stale NAT mapping.
    pub dropped: u64,
    /// Extra copies made by duplication.
    pub duplicated: u64,
    /// Packets with one byte changed.
    pub corrupted: u64,
}

impl From<DirectionStats> for LinkCounters {
    fn from(stats: DirectionStats) -> Self {
        LinkCounters {
            packets_in: stats.received,
            packets_out: stats.delivered,
            dropped: stats.dropped_loss
                + stats.dropped_queue
                + stats.dropped_codel
                + stats.dropped_blackhole
                + stats.dropped_nat,
            duplicated: stats.duplicated,
            corrupted: stats.corrupted,
        }
    }
}

/// Machine CPU use over an interval.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuReport {
    /// Share of CPU time not idle, over all cores, from 0 to 1.
    pub busy_fraction: Option<f64>,
    /// One-minute load average at the end.
    pub load_average_1m: Option<f64>,
}

/// Cumulative CPU times from the first line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// All time.
    pub total: u64,
    /// Idle and I/O wait time.
    pub idle: u64,
}

impl CpuTimes {
    /// Parses the aggregate `cpu` line of `/proc/stat`.
    pub fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|line| line.starts_with("cpu "))?;
        let values: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
        Some(CpuTimes {
            total: values.iter().sum(),
            idle,
        })
    }

    /// Reads `/proc/stat`; `None` where it is missing or unreadable.
    pub fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// Returns the busy share of the interval from `self` to `later`.
    pub fn busy_fraction(&self, later: &CpuTimes) -> Option<f64> {
        let total = later.total.checked_sub(self.total)?;
        let idle = later.idle.checked_sub(self.idle)?;
        (total > 0).then(|| (total - idle.min(total)) as f64 / total as f64)
    }
}

/// Reads the one-minute load average from `/proc/loadavg`.
pub fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

impl TransportReport {
    /// Builds the report of one transport from its ledger and measurements.
    pub fn new(
        ledger: &DeliveryLedger,
        handshakes_ms: &[f64],
        reconnects: ReconnectReport,
        transport: Option<TransportCounters>,
        link: LinkReport,
        cpu: CpuReport,
    ) -> Self {
        TransportReport {
            messages: ledger.counts(),
            unexpected_deliveries: ledger.unexpected(),
            latency_ms: Percentiles::of(&ledger.latencies(None)),
            busy: KindReport {
                latency_ms: Percentiles::of(&ledger.latencies(Some(ConversationKind::Busy))),
            },
            quiet: KindReport {
                latency_ms: Percentiles::of(&ledger.latencies(Some(ConversationKind::Quiet))),
            },
            handshake_ms: Percentiles::of(handshakes_ms),
            reconnects,
            transport,
            faults: FaultTimeline::default(),
            link,
            cpu,
        }
    }
}

/// Writes the latency samples of one transport as CSV: send time, kind, latency.
pub fn write_samples(path: &Path, ledger: &DeliveryLedger) -> std::io::Result<()> {
    let mut text = String::from("sent_at_ms,kind,latency_ms\n");
    for sample in ledger.samples() {
        let _ = writeln!(
            text,
            "{:.3},{},{:.3}",
            sample.sent_at_ms,
            sample.kind.as_str(),
            sample.latency_ms
        );
    }
    std::fs::write(path, text)
}

/// Parses a file written by [`write_samples`]. The error is the number of the first
/// invalid line.
pub fn parse_samples(text: &str) -> Result<Vec<Sample>, usize> {
    let mut samples = Vec::new();
    for (number, line) in text.lines().enumerate().skip(1) {
        let mut fields = line.split(',');
        let sample = (|| {
            let sent_at_ms = fields.next()?.parse().ok()?;
            let kind = match fields.next()? {
                "busy" => ConversationKind::Busy,
                "quiet" => ConversationKind::Quiet,
                _ => return None,
            };
            let latency_ms = fields.next()?.parse().ok()?;
            Some(Sample {
                kind,
                sent_at_ms,
                latency_ms,
            })
        })();
        samples.push(sample.ok_or(number + 1)?);
    }
    Ok(samples)
}

/// Formats the short table printed at the end of a run.
pub fn table(summary: &Summary) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{:<6} {:>7} {:>9} {:>5} {:>5} {:>9} {:>9} {:>9} {:>9}",
        "", "sent", "delivered", "lost", "dup", "p50 ms", "p99 ms", "quiet p50", "quiet p99"
    );
    for (name, report) in &summary.transports {
        let all = report.latency_ms;
        let quiet = report.quiet.latency_ms;
        let _ = writeln!(
            text,
            "{:<6} {:>7} {:>9} {:>5} {:>5} {:>9} {:>9} {:>9} {:>9}",
            name,
            report.messages.sent,
            report.messages.delivered,
            report.messages.lost,
            report.messages.duplicated,
            milliseconds(all.map(|value| value.p50)),
            milliseconds(all.map(|value| value.p99)),
            milliseconds(quiet.map(|value| value.p50)),
            milliseconds(quiet.map(|value| value.p99)),
        );
    }
    text
}

fn milliseconds(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.1}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_times_parse_proc_stat() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n";
        let times = CpuTimes::parse(stat).unwrap();
        assert_eq!(times.total, 1000);
        assert_eq!(times.idle, 850);

        let later = CpuTimes {
            total: 2000,
            idle: 1350,
        };
        assert_eq!(times.busy_fraction(&later), Some(0.5));
        assert_eq!(times.busy_fraction(&times), None);
        assert_eq!(CpuTimes::parse("intr 1 2 3\n"), None);
    }

    #[test]
    fn samples_round_trip_through_csv() {
        let mut ledger = DeliveryLedger::default();
        ledger.record_send(0, ConversationKind::Busy, 1);
        ledger.record_delivery(crate::stats::Delivery {
            recipient: 1,
            send_index: 0,
            conversation_id: 5,
            seq: 1,
            sent_at_micros: 2_000,
            received_at_micros: 37_500,
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latency-quic.csv");
        write_samples(&path, &ledger).unwrap();

        let samples = parse_samples(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].kind, ConversationKind::Busy);
        assert_eq!(samples[0].sent_at_ms, 2.0);
        assert_eq!(samples[0].latency_ms, 35.5);
        assert_eq!(parse_samples("header\n1.0,loud,2.0\n"), Err(2));
    }

    #[test]
    fn link_counters_sum_drops() {
        let stats = DirectionStats {
            received: 100,
            dropped_loss: 2,
            dropped_queue: 1,
            dropped_blackhole: 3,
            delivered: 94,
            duplicated: 4,
            ..DirectionStats::default()
        };
        let counters = LinkCounters::from(stats);
        assert_eq!(counters.dropped, 6);
        assert_eq!(counters.packets_out, 94);
        assert_eq!(counters.duplicated, 4);
    }

    #[test]
    fn transport_counters_sum_clients() {
        let mut first = TransportStats::default();
        let mut quic = QuicStats::default();
        quic.sent_packets = 100;
        quic.lost_packets = 2;
        quic.congestion_events = 1;
        quic.rtt = std::time::Duration::from_millis(40);
        first.quic = Some(quic);
        let mut second = TransportStats::default();
        quic.sent_packets = 300;
        quic.lost_packets = 6;
        quic.rtt = std::time::Duration::from_millis(60);
        second.quic = Some(quic);

        let Some(TransportCounters::Quic(counters)) = TransportCounters::of(&[first, second])
        else {
            panic!("expected QUIC counters");
        };
        assert_eq!(counters.sent_packets, 400);
        assert_eq!(counters.lost_packets, 8);
        assert_eq!(counters.congestion_events, 2);
        assert_eq!(counters.loss_fraction, Some(0.02));
        assert_eq!(counters.rtt_ms.unwrap().max, 60.0);

        let mut tcp_client = TransportStats::default();
        let mut tcp = TcpStats::default();
        tcp.retransmits = 3;
        tcp_client.tcp = Some(tcp);
        let Some(TransportCounters::Tcp(counters)) =
            TransportCounters::of(&[tcp_client, tcp_client])
        else {
            panic!("expected TCP counters");
        };
        assert_eq!(counters.retransmits, 6);
        assert!(TransportCounters::of(&[TransportStats::default()]).is_none());
    }

    #[test]
    fn table_lists_each_transport() {
        let mut ledger = DeliveryLedger::default();
        ledger.record_send(0, ConversationKind::Quiet, 1);
        let link = LinkReport {
            uplink: LinkCounters::from(DirectionStats::default()),
            downlink: LinkCounters::from(DirectionStats::default()),
        };
        let cpu = CpuReport {
            busy_fraction: None,
            load_average_1m: None,
        };
        let reconnects = ReconnectReport {
            count: 0,
            disconnects: 0,
            outage_ms: None,
        };
        let report = TransportReport::new(&ledger, &[], reconnects, None, link, cpu);
        assert_eq!(report.messages.lost, 1);
        let summary = Summary {
            scenario: "baseline-30ms".into(),
            seed: 1,
            version: "0".into(),
            duration_s: 1.0,
            workload: WorkloadConfig::default(),
            transports: BTreeMap::from([("quic".into(), report.clone()), ("ws".into(), report)]),
        };
        let text = table(&summary);
        assert!(text.lines().any(|line| line.starts_with("quic")));
        assert!(text.lines().any(|line| line.starts_with("ws")));
    }
}
