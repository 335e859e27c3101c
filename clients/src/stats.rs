//! Transport statistics of a client's connections: QUIC counters from quinn and TCP
//! counters from the kernel (`TCP_INFO`), summed over every session of the client.

use std::time::Duration;

/// Counters of the QUIC connections a client opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuicStats {
    /// QUIC packets sent.
    pub sent_packets: u64,
    /// Packets the sender declared lost.
    pub lost_packets: u64,
    /// Bytes in the packets declared lost.
    pub lost_bytes: u64,
    /// Times the congestion controller reduced its window.
    pub congestion_events: u64,
    /// UDP datagrams sent.
    pub sent_datagrams: u64,
    /// UDP datagrams received.
    pub received_datagrams: u64,
    /// Smoothed round-trip time of the latest connection.
    pub rtt: Duration,
    /// Lowest round-trip time the latest connection measured.
    pub min_rtt: Duration,
}

impl QuicStats {
    pub(crate) fn from_connection(connection: &quinn::Connection) -> Self {
        let stats = connection.stats();
        QuicStats {
            sent_packets: stats.path.sent_packets,
            lost_packets: stats.path.lost_packets,
            lost_bytes: stats.path.lost_bytes,
            congestion_events: stats.path.congestion_events,
            sent_datagrams: stats.udp_tx.datagrams,
            received_datagrams: stats.udp_rx.datagrams,
            rtt: stats.path.rtt,
            min_rtt: stats.path.min_rtt,
        }
    }

    /// Adds the counters of `later` and keeps its round-trip times.
    fn add(&mut self, later: &QuicStats) {
        self.sent_packets += later.sent_packets;
        self.lost_packets += later.lost_packets;
        self.lost_bytes += later.lost_bytes;
        self.congestion_events += later.congestion_events;
        self.sent_datagrams += later.sent_datagrams;
        self.received_datagrams += later.received_datagrams;
        self.rtt = later.rtt;
        self.min_rtt = later.min_rtt;
    }
}

/// Counters of the TCP connections under a client's WebSockets, from `TCP_INFO`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpStats {
    /// Segments retransmitted (`tcpi_total_retrans`).
    pub retransmits: u64,
    /// Smoothed round-trip time of the latest connection (`tcpi_rtt`).
    pub rtt: Duration,
    /// Round-trip time variation of the latest connection (`tcpi_rttvar`).
    pub rtt_var: Duration,
    /// Congestion window of the latest connection, in segments (`tcpi_snd_cwnd`).
    pub congestion_window: u32,
}

impl TcpStats {
    fn add(&mut self, later: &TcpStats) {
        self.retransmits += later.retransmits;
        self.rtt = later.rtt;
        self.rtt_var = later.rtt_var;
        self.congestion_window = later.congestion_window;
    }
}

/// Transport statistics of a [`crate::Client`], summed over all its sessions so far.
///
/// Counters add up over sessions; round-trip times are those of the latest session that
/// used the transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportStats {
    /// Sessions started, the first one included.
    pub sessions: u64,
    /// QUIC counters; `None` when no session used QUIC.
    pub quic: Option<QuicStats>,
    /// TCP counters of WebSocket sessions; `None` when no session used a WebSocket or the
    /// platform has no `TCP_INFO`.
    pub tcp: Option<TcpStats>,
}

impl TransportStats {
    /// Returns the number of sessions after the first: how often the client reconnected.
    pub fn reconnects(&self) -> u64 {
        self.sessions.saturating_sub(1)
    }

    /// Adds the final or current statistics of one session.
    pub(crate) fn add_session(&mut self, session: &SessionStats) {
        match session {
            SessionStats::Quic(quic) => self.quic.get_or_insert_default().add(quic),
            SessionStats::Tcp(Some(tcp)) => self.tcp.get_or_insert_default().add(tcp),
            SessionStats::Tcp(None) => {}
        }
    }
}

/// Statistics of one session's connection.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SessionStats {
    Quic(QuicStats),
    /// `None` where `TCP_INFO` could not be read.
    Tcp(Option<TcpStats>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_add_counters_and_keep_latest_rtt() {
        let mut total = TransportStats {
            sessions: 2,
            ..TransportStats::default()
        };
        let first = QuicStats {
            sent_packets: 10,
            lost_packets: 1,
            rtt: Duration::from_millis(40),
            ..QuicStats::default()
        };
        let second = QuicStats {
            sent_packets: 5,
            lost_packets: 2,
            congestion_events: 1,
            rtt: Duration::from_millis(30),
            ..QuicStats::default()
        };
        total.add_session(&SessionStats::Quic(first));
        total.add_session(&SessionStats::Quic(second));
        total.add_session(&SessionStats::Tcp(None));

        let quic = total.quic.unwrap();
        assert_eq!(quic.sent_packets, 15);
        assert_eq!(quic.lost_packets, 3);
        assert_eq!(quic.congestion_events, 1);
        assert_eq!(quic.rtt, Duration::from_millis(30));
        assert_eq!(total.tcp, None);
        assert_eq!(total.reconnects(), 1);
    }
}
