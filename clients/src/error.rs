//! Errors of the client library.
//!
//! Messages are for people and logs. Programs should match on the variants and on
//! [`ClientError::code`], never on the text.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tidings_schema::codec::ReadError;
use tidings_schema::{CloseCode, ErrorCode, Rejection};

/// Error of establishing a connection and its session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    #[error(
        "cannot read CA certificate file {path}: {source}; pass --cert PATH or start `tidings serve` to create it"
    )]
    ReadCa { path: PathBuf, source: io::Error },
    #[error("no PEM certificate found in {origin}; expected a CA certificate in PEM format")]
    NoCertificate { origin: String },
    #[error("invalid CA certificate in {origin}: {reason}")]
    InvalidCertificate { origin: String, reason: String },
    #[error("invalid server address {server:?}: {reason}; expected host:port")]
    InvalidAddress { server: String, reason: String },
    /// The TLS key log file in [`crate::ClientConfig::key_log_file`] could not be opened.
    #[error(
        "cannot open TLS key log file {path}: {source}; check that its folder exists and is writable"
    )]
    KeyLog { path: PathBuf, source: io::Error },
    #[error("cannot open a UDP socket for QUIC: {0}")]
    Socket(#[source] io::Error),
    #[error("cannot connect to {server}: {reason}")]
    Connect { server: String, reason: String },
    #[error("connection to {server} failed during the handshake: {source}")]
    Handshake {
        server: String,
        source: quinn::ConnectionError,
    },
    #[error("connection to {server} timed out after {after:?}")]
    Timeout { server: String, after: Duration },
    /// The server replied to `Hello` with an `Error` frame.
    #[error("server rejected the session: {0}")]
    Rejected(Rejection),
    /// The server closed the connection with an application code before `Welcome`.
    #[error("server closed the connection with {code}: {reason}")]
    Closed { code: CloseCode, reason: String },
    #[error("protocol error from {server}: {reason}")]
    Protocol { server: String, reason: String },
    #[error("invalid WebSocket URL {url:?}: {reason}; expected ws://HOST:PORT/v1/ws or wss://...")]
    InvalidUrl { url: String, reason: String },
    /// The TCP connection, TLS or the WebSocket upgrade failed.
    #[error("WebSocket connection to {url} failed: {reason}")]
    WebSocket { url: String, reason: String },
    /// [`crate::Transport::Auto`] tried QUIC and then the WebSocket fallback, and both
    /// failed.
    #[error("QUIC failed ({quic}), and the WebSocket fallback failed too ({websocket})")]
    Unreachable {
        quic: Box<ConnectError>,
        websocket: Box<ConnectError>,
    },
}

impl ConnectError {
    /// Reports whether a later attempt with the same settings may succeed. Bad settings, bad
    /// certificates and a rejected token are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectError::Socket(_)
            | ConnectError::Connect { .. }
            | ConnectError::Handshake { .. }
            | ConnectError::Timeout { .. }
            | ConnectError::WebSocket { .. } => true,
            ConnectError::Unreachable { quic, websocket } => {
                quic.is_transient() && websocket.is_transient()
            }
            ConnectError::Rejected(rejection) => rejection.code.is_retryable(),
            ConnectError::Closed { code, .. } => !code.is_final(),
            _ => false,
        }
    }

    /// Returns the server's error code when the server rejected the session with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ConnectError::Rejected(rejection) => Some(rejection.code),
            ConnectError::Unreachable { websocket, .. } => websocket.code(),
            _ => None,
        }
    }

    /// Reports whether QUIC itself failed (no UDP path, no handshake), the case in which
    /// the WebSocket fallback may still reach the edge.
    pub(crate) fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ConnectError::Socket(_)
                | ConnectError::Connect { .. }
                | ConnectError::Handshake { .. }
                | ConnectError::Timeout { .. }
        )
    }
}

/// Why a request of a connected [`crate::Client`] failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server rejected the request. Retryable codes are only returned once the
    /// client ran out of attempts or the next retry would pass the request timeout.
    #[error("{0}")]
    Rejected(Rejection),
    /// The connection was lost while a request was in flight, and the request was not
    /// safe to repeat or ran out of attempts or time, so its outcome is unknown.
    #[error("connection lost during {operation}; the outcome is unknown")]
    ConnectionLost { operation: &'static str },
    /// The client could not (re)connect and gave up.
    #[error("not connected: {0}")]
    Connect(Arc<ConnectError>),
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        operation: &'static str,
        after: Duration,
    },
    /// The server sent something the protocol does not allow here.
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// [`crate::Client::close`] was called.
    #[error("the client is closed")]
    Closed,
}

impl ClientError {
    /// Returns the server's error code when the server rejected the request with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Rejected(rejection) => Some(rejection.code),
            ClientError::Connect(error) => error.code(),
            _ => None,
        }
    }

    /// Returns the server's rejection when there is one.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            ClientError::Rejected(rejection) => Some(rejection),
            ClientError::Connect(error) => match error.as_ref() {
                ConnectError::Rejected(rejection) => Some(rejection),
                ConnectError::Unreachable { websocket, .. } => match websocket.as_ref() {
                    ConnectError::Rejected(rejection) => Some(rejection),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        }
    }
}

/// Failure of a frame exchange on one stream that ended without a reply. Internal: the request
/// layer turns it into a retry or a [`ClientError`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("cannot open a stream: {0}")]
    Open(#[from] quinn::ConnectionError),
    #[error("stream read failed: {0}")]
    Read(#[from] ReadError),
    #[error("WebSocket write failed: {0}")]
    Socket(String),
    /// The stream or connection ended before the reply arrived.
    #[error("stream ended before the reply")]
    Ended,
}
