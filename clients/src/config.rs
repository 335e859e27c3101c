//! Client settings: where to connect, who to be, which certificates to trust and how
//! long to keep trying.

use std::path::PathBuf;
use std::time::Duration;

use crate::backoff::Backoff;

/// Default server address of a local `tidings serve`.
pub const DEFAULT_SERVER: &str = "127.0.0.1:4433";

/// TLS server name the development certificate is issued for.
pub const DEFAULT_SERVER_NAME: &str = "localhost";

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
    /// Consecutive failed reconnect attempts after which the client gives up and every
    /// call fails with the last connection error.
    pub max_reconnect_attempts: u32,
    /// Number of deliveries buffered for [`crate::Client::deliveries`] before the client
    /// stops reading delivery streams.
    pub delivery_buffer: usize,
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
            delivery_buffer: 1024,
        }
    }
}
