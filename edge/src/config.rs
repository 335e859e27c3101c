//! Settings of an edge node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tidings_schema::frame::Limits;

use crate::certs::RotationSchedule;
use crate::presence::PresenceConfig;

/// Source of the edge's TLS certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// A development PKI in this directory, created on first use (see [`crate::tls::DevPki`]).
    DevPki { dir: PathBuf },
    /// A certificate chain and private key in PEM files, used as they are.
    Files { cert_chain: PathBuf, key: PathBuf },
}

/// A token bucket: `per_second` tokens refill each second, up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateConfig {
    pub per_second: f64,
    pub burst: u32,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            per_second: 200.0,
            burst: 400,
        }
    }
}

/// Settings of an edge node. `Default` listens on 127.0.0.1:4433 with a development PKI in
/// `./tidings-data/tls`.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// UDP address of the QUIC endpoint; port 0 picks a free port.
    pub listen: SocketAddr,
    pub tls: TlsSource,
    /// Snowflake node id of this edge, below 1,024 and unique in the fleet.
    pub node_id: u16,
    /// Name under which this edge registers with owners for fan-out.
    pub edge_id: String,
    /// Limits announced in `Welcome` and enforced on every session.
    pub limits: Limits,
    /// Rate of `Send` frames per connection.
    pub send_rate: RateConfig,
    /// A connection with no traffic for this long is closed. Keep-alives go out at a third
    /// of it, so a live client is never idle.
    pub idle_timeout: Duration,
    /// Time a new connection has to open its control stream and send a valid `Hello`.
    pub hello_timeout: Duration,
    /// A server-opened delivery stream with nothing to send for this long is finished.
    pub delivery_idle_timeout: Duration,
    /// Maximum number of deliveries queued for one session before the edge closes the
    /// connection as too slow.
    pub session_queue: usize,
    /// Client addresses (`host:port`) of edges announced in `Welcome`.
    pub public_edges: Vec<String>,
    /// TCP address of the HTTP port (WebSocket fallback, health, metrics); `None` serves
    /// no HTTP. Port 0 picks a free port.
    pub http_listen: Option<SocketAddr>,
    /// Whether the HTTP port serves HTTPS with the edge's certificate. `None` decides by
    /// address: plain HTTP on loopback (the development default, where browsers treat
    /// `http://127.0.0.1` as a secure context), HTTPS on any other address.
    pub http_tls: Option<bool>,
    /// Origins (`scheme://host:port`) allowed to open WebSocket and WebTransport
    /// sessions. Empty allows the edge's own HTTP origins only.
    pub allowed_origins: Vec<String>,
    /// When development leaf certificates are replaced.
    pub cert_rotation: RotationSchedule,
    /// Heartbeat expiry, debounce, snapshot and typing timing.
    pub presence: PresenceConfig,
    /// Maximum wait in shutdown for clients to leave after their `Close` frame.
    pub drain_timeout: Duration,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 4433)),
            tls: TlsSource::DevPki {
                dir: PathBuf::from("tidings-data/tls"),
            },
            node_id: 1,
            edge_id: "edge-1".to_owned(),
            limits: Limits::default(),
            send_rate: RateConfig::default(),
            idle_timeout: Duration::from_secs(30),
            hello_timeout: Duration::from_secs(10),
            delivery_idle_timeout: Duration::from_secs(60),
            session_queue: 1024,
            public_edges: Vec::new(),
            http_listen: None,
            http_tls: None,
            allowed_origins: Vec::new(),
            cert_rotation: RotationSchedule::default(),
            presence: PresenceConfig::default(),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl EdgeConfig {
    /// Reports whether an HTTP port bound to `addr` serves HTTPS; see `http_tls`.
    pub fn http_uses_tls(&self, addr: SocketAddr) -> bool {
        self.http_tls.unwrap_or(!addr.ip().is_loopback())
    }

    /// Returns the keep-alive interval: a third of the idle timeout, so two keep-alives can
    /// be lost before the peer's idle timer fires.
    pub fn keep_alive_interval(&self) -> Duration {
        self.idle_timeout / 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_tls_defaults_from_address() {
        let config = EdgeConfig::default();
        assert!(!config.http_uses_tls(SocketAddr::from(([127, 0, 0, 1], 8080))));
        assert!(!config.http_uses_tls("[::1]:8080".parse().unwrap()));
        assert!(config.http_uses_tls(SocketAddr::from(([0, 0, 0, 0], 8080))));
        assert!(config.http_uses_tls(SocketAddr::from(([192, 0, 2, 7], 443))));

        let forced = EdgeConfig {
            http_tls: Some(true),
            ..EdgeConfig::default()
        };
        assert!(forced.http_uses_tls(SocketAddr::from(([127, 0, 0, 1], 8080))));
    }
}
