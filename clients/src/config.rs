//! Client settings: where to connect, who to be, which certificates to trust and how
//! long to keep trying.

use std::path::PathBuf;
use std::time::Duration;

use crate::backoff::Backoff;

/// Default server address of a local `tidings serve`.
pub const DEFAULT_SERVER: &str = "127.0.0.1:4433";

/// TLS server name the development certificate is issued for.
pub const DEFAULT_SERVER_NAME: &str = "localhost";

/// Default TCP port of the WebSocket fallback, the HTTP port of a local `tidings serve`.
pub const DEFAULT_HTTP_PORT: u16 = 8080;

/// Path of the WebSocket endpoint on the edge's HTTP port.
pub const WEBSOCKET_PATH: &str = "/v1/ws";

/// Transports a [`crate::Client`] may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// QUIC first; WebSocket when QUIC gets no connection within
    /// [`ClientConfig::quic_fallback_timeout`] or fails before the TLS handshake ends.
    #[default]
    Auto,
    /// Native QUIC (ALPN `tidings/1`) only.
    Quic,
    /// The WebSocket fallback only: one frame per binary message over TCP.
    WebSocket,
}

impl Transport {
    /// Returns the name used on the command line and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Auto => "auto",
            Transport::Quic => "quic",
            Transport::WebSocket => "ws",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Transport {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "auto" => Ok(Transport::Auto),
            "quic" => Ok(Transport::Quic),
            "ws" | "websocket" => Ok(Transport::WebSocket),
            other => Err(format!(
                "invalid transport {other:?}; expected auto, quic or ws"
            )),
        }
    }
}

/// Source of the CA certificates the client trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustRoots {
    /// A PEM file with one or more CA certificates, such as the development CA that
    /// `tidings serve` writes to `<data-dir>/tls/ca.pem`.
    CaPemFile(PathBuf),
    /// PEM text with one or more CA certificates.
    CaPem(String),
}

/// Settings of a [`crate::Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Server address as `host:port`; the host may be a name or an IP address.
    pub server: String,
    /// Name checked against the server certificate.
    pub server_name: String,
    /// Bearer token sent in `Hello`.
    pub token: String,
    /// Id of this device, stable across reconnects.
    pub device_id: String,
    pub client_version: String,
    pub trust: TrustRoots,
    /// Maximum time for one connection attempt, handshake and `Welcome` included.
    pub connect_timeout: Duration,
    /// Maximum time one call (`send`, `history`, ...) spends, waiting for a reconnect and
    /// retries included.
    pub request_timeout: Duration,
    /// Maximum number of times a request or send is transmitted, the first time included.
    pub max_attempts: u32,
    /// Delays between reconnect attempts.
    pub reconnect_backoff: Backoff,
    /// Transports the client may use.
    pub transport: Transport,
    /// URL of the WebSocket fallback (`ws://` or `wss://`). `None` derives it from the host
    /// of `server`: port [`DEFAULT_HTTP_PORT`], path [`WEBSOCKET_PATH`], `ws` on loopback
    /// and `wss` elsewhere, because the edge serves HTTPS off loopback.
    pub ws_url: Option<String>,
    /// Maximum time [`Transport::Auto`] waits for QUIC before it tries the WebSocket.
    pub quic_fallback_timeout: Duration,
    /// Consecutive failed reconnect attempts after which the client gives up and every
    /// call fails with the last connection error.
    pub max_reconnect_attempts: u32,
    /// Number of deliveries buffered for [`crate::Client::deliveries`] before the client
    /// stops reading delivery streams.
    pub delivery_buffer: usize,
    /// File that receives the TLS secrets of every QUIC and WebSocket (`wss`) connection
    /// in the NSS key log format, so Wireshark can decrypt captures. Lines are appended.
    /// `None` writes no secrets; keep such a file private, since it decrypts the traffic.
    pub key_log_file: Option<PathBuf>,
}

impl ClientConfig {
    /// Creates a configuration with default timeouts for `server`, authenticated by
    /// `token` and trusting the CA certificates in the PEM file `ca_pem_path`.
    pub fn new(
        server: impl Into<String>,
        token: impl Into<String>,
        device_id: impl Into<String>,
        ca_pem_path: impl Into<PathBuf>,
    ) -> Self {
        ClientConfig {
            server: server.into(),
            server_name: DEFAULT_SERVER_NAME.to_owned(),
            token: token.into(),
            device_id: device_id.into(),
            client_version: concat!("tidings-clients/", env!("CARGO_PKG_VERSION")).to_owned(),
            trust: TrustRoots::CaPemFile(ca_pem_path.into()),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_attempts: 8,
            reconnect_backoff: Backoff::default(),
            max_reconnect_attempts: 60,
            transport: Transport::Auto,
            ws_url: None,
            quic_fallback_timeout: Duration::from_secs(3),
            delivery_buffer: 1024,
            key_log_file: None,
        }
    }

    /// Returns the WebSocket URL: `ws_url`, or the one derived from `server`.
    pub fn websocket_url(&self) -> String {
        if let Some(url) = &self.ws_url {
            return url.clone();
        }
        let host = match self.server.rsplit_once(':') {
            Some((host, _port)) => host,
            None => self.server.as_str(),
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let is_loopback = bare == "localhost"
            || bare
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let scheme = if is_loopback { "ws" } else { "wss" };
        format!("{scheme}://{host}:{DEFAULT_HTTP_PORT}{WEBSOCKET_PATH}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_url_derives_from_server() {
        let cases = [
            ("127.0.0.1:4433", "ws://127.0.0.1:8080/v1/ws"),
            ("localhost:4433", "ws://localhost:8080/v1/ws"),
            ("[::1]:4433", "ws://[::1]:8080/v1/ws"),
            ("chat.example:443", "wss://chat.example:8080/v1/ws"),
        ];
        for (server, expected) in cases {
            let config = ClientConfig::new(server, "token", "device", "ca.pem");
            assert_eq!(config.websocket_url(), expected, "server {server}");
        }
    }

    #[test]
    fn websocket_url_option_wins() {
        let mut config = ClientConfig::new("127.0.0.1:4433", "token", "device", "ca.pem");
        config.ws_url = Some("wss://edge.example/v1/ws".to_owned());
        assert_eq!(config.websocket_url(), "wss://edge.example/v1/ws");
    }

    #[test]
    fn transport_parses_cli_names() {
        assert_eq!("auto".parse(), Ok(Transport::Auto));
        assert_eq!("quic".parse(), Ok(Transport::Quic));
        assert_eq!("ws".parse(), Ok(Transport::WebSocket));
        assert!("tcp".parse::<Transport>().is_err());
    }
}
