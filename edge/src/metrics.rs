//! Edge counters, rendered in the Prometheus text format at `/metrics`.
//!
//! Adding a counter takes two lines: one field in [`EdgeMetrics`] and one row in the table
//! of [`EdgeMetrics::render`]. Counters only go up; a gauge (such as open sessions) is read
//! from the state it describes when rendering.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of every metric name.
const PREFIX: &str = "tidings_edge_";

/// The transports a client session can arrive on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// QUIC with ALPN `tidings/1`.
    Native,
    /// A WebTransport session over HTTP/3.
    WebTransport,
    /// A WebSocket over HTTP/1.1.
    WebSocket,
}

impl Transport {
    /// The label value used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Native => "native",
            Transport::WebTransport => "webtransport",
            Transport::WebSocket => "websocket",
        }
    }
}

/// Monotonic counters of one edge. Every field is a plain relaxed atomic.
#[derive(Debug, Default)]
pub struct EdgeMetrics {
    pub native_connections: AtomicU64,
    pub webtransport_connections: AtomicU64,
    pub websocket_connections: AtomicU64,
    /// Plain HTTP/3 requests (not WebTransport) answered on the QUIC port.
    pub http3_requests: AtomicU64,
    /// Sessions that completed `Hello`/`Welcome`, on any transport.
    pub sessions_started: AtomicU64,
    /// `Send` frames admitted and forwarded to an owner.
    pub sends: AtomicU64,
    /// Message deliveries received from owners by the fan-out dispatchers.
    pub owner_deliveries: AtomicU64,
    /// Receipt updates received from owners (they share the delivery path).
    pub owner_receipt_pushes: AtomicU64,
    /// `Deliver` frames queued on client sessions.
    pub session_deliveries: AtomicU64,
    /// Sessions the edge ended with a `Close` frame (drain, token expiry, kick).
    pub sessions_closed_by_edge: AtomicU64,
}

impl EdgeMetrics {
    /// Adds one to `counter`.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a new connection on `transport`.
    pub fn connection(&self, transport: Transport) {
        let counter = match transport {
            Transport::Native => &self.native_connections,
            Transport::WebTransport => &self.webtransport_connections,
            Transport::WebSocket => &self.websocket_connections,
        };
        Self::inc(counter);
    }

    /// Renders every counter, plus the `open_sessions` gauge, in the Prometheus text
    /// exposition format (version 0.0.4).
    pub fn render(&self, open_sessions: usize) -> String {
        let mut out = String::new();
        let connections = [
            ("native", &self.native_connections),
            ("webtransport", &self.webtransport_connections),
            ("websocket", &self.websocket_connections),
        ];
        let help = "Connections accepted, by transport.";
        labelled(
            &mut out,
            "connections_total",
            help,
            "transport",
            &connections,
        );

        #[rustfmt::skip]
        let counters: &[(&str, &str, &AtomicU64)] = &[
            ("http3_requests_total", "Plain HTTP/3 requests answered.", &self.http3_requests),
            ("sessions_started_total", "Sessions that received Welcome.", &self.sessions_started),
            ("sends_total", "Send frames forwarded to owners.", &self.sends),
            ("owner_deliveries_total", "Message deliveries received from owners.", &self.owner_deliveries),
            ("owner_receipt_pushes_total", "Receipt updates received from owners.", &self.owner_receipt_pushes),
            ("session_deliveries_total", "Deliver frames queued on sessions.", &self.session_deliveries),
            ("sessions_closed_total", "Sessions the edge ended with Close.", &self.sessions_closed_by_edge),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {PREFIX}{name} {help}");
            let _ = writeln!(out, "# TYPE {PREFIX}{name} counter");
            let _ = writeln!(out, "{PREFIX}{name} {}", value.load(Ordering::Relaxed));
        }

        let _ = writeln!(out, "# HELP tidings_edge_open_sessions Sessions open now.");
        let _ = writeln!(out, "# TYPE tidings_edge_open_sessions gauge");
        let _ = writeln!(out, "tidings_edge_open_sessions {open_sessions}");
        out
    }
}

fn labelled(out: &mut String, name: &str, help: &str, label: &str, values: &[(&str, &AtomicU64)]) {
    let _ = writeln!(out, "# HELP {PREFIX}{name} {help}");
    let _ = writeln!(out, "# TYPE {PREFIX}{name} counter");
    for (value_label, value) in values {
        let value = value.load(Ordering::Relaxed);
        let _ = writeln!(out, "{PREFIX}{name}{{{label}=\"{value_label}\"}} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_counters_and_gauge() {
        let metrics = EdgeMetrics::default();
        metrics.connection(Transport::WebSocket);
        metrics.connection(Transport::WebSocket);
        EdgeMetrics::inc(&metrics.sends);

        let text = metrics.render(3);
        assert!(text.contains("connections_total{transport=\"websocket\"} 2\n"));
        assert!(text.contains("connections_total{transport=\"native\"} 0\n"));
        assert!(text.contains("sends_total 1\n"));
        assert!(text.contains("open_sessions 3\n"));
        assert!(text.contains("# TYPE tidings_edge_sends_total counter\n"));
    }
}
