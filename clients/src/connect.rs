//! Transport choice: one connection attempt over QUIC, the WebSocket fallback, or both in
//! order, as [`ClientConfig::transport`] allows.

use std::time::Duration;

use tracing::{debug, info};

use crate::config::{ClientConfig, Transport};
use crate::error::ConnectError;
use crate::session::Connected;
use crate::transport::handshake;
use crate::websocket::handshake_websocket;

/// Opens a session to `quic_target` (QUIC) or the configured WebSocket URL.
///
/// With [`Transport::Auto`], `preferred` is tried first: QUIC is bounded by
/// `quic_fallback_timeout` when the WebSocket follows it, and the second transport is
/// tried only when the first could not reach the edge at all. A rejected token is not
/// tried again over the other transport, because the edge would reject it there too.
pub(crate) async fn connect(
    config: &ClientConfig,
    quic: &quinn::ClientConfig,
    quic_target: &str,
    preferred: Transport,
) -> Result<Connected, ConnectError> {
    match config.transport {
        Transport::Quic => connect_quic(config, quic, quic_target, config.connect_timeout).await,
        Transport::WebSocket => connect_websocket(config).await,
        Transport::Auto if preferred == Transport::WebSocket => {
            let websocket = match connect_websocket(config).await {
                Ok(connected) => return Ok(connected),
                Err(error) if unreachable_websocket(&error) => error,
                Err(error) => return Err(error),
            };
            debug!(%websocket, "WebSocket failed; trying QUIC");
            let timeout = config.connect_timeout;
            connect_quic(config, quic, quic_target, timeout)
                .await
                .map_err(|quic| unreachable(quic, websocket))
        }
        Transport::Auto => {
            let timeout = config.quic_fallback_timeout.min(config.connect_timeout);
            let quic_error = match connect_quic(config, quic, quic_target, timeout).await {
                Ok(connected) => return Ok(connected),
                Err(error) if error.is_unreachable() => error,
                Err(error) => return Err(error),
            };
            info!(server = quic_target, error = %quic_error, "QUIC failed; falling back to WebSocket");
            connect_websocket(config)
                .await
                .map_err(|websocket| unreachable(quic_error, websocket))
        }
    }
}

async fn connect_quic(
    config: &ClientConfig,
    quic: &quinn::ClientConfig,
    target: &str,
    timeout: Duration,
) -> Result<Connected, ConnectError> {
    let attempt = handshake(config, quic, target);
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result.map(Connected::Quic),
        Err(_) => Err(ConnectError::Timeout {
            server: target.to_owned(),
            after: timeout,
        }),
    }
}

async fn connect_websocket(config: &ClientConfig) -> Result<Connected, ConnectError> {
    let url = config.websocket_url();
    let attempt = handshake_websocket(config, &url);
    match tokio::time::timeout(config.connect_timeout, attempt).await {
        Ok(result) => result.map(Connected::WebSocket),
        Err(_) => Err(ConnectError::Timeout {
            server: url,
            after: config.connect_timeout,
        }),
    }
}

fn unreachable_websocket(error: &ConnectError) -> bool {
    matches!(
        error,
        ConnectError::WebSocket { .. } | ConnectError::Timeout { .. }
    )
}

/// Combines the errors of both transports; a rejection from the second wins, because it
/// is the server's reply rather than a network failure.
fn unreachable(quic: ConnectError, websocket: ConnectError) -> ConnectError {
    let (quic, websocket) = match (quic, websocket) {
        (ConnectError::Rejected(rejection), _) | (_, ConnectError::Rejected(rejection)) => {
            return ConnectError::Rejected(rejection);
        }
        (ConnectError::Closed { code, reason }, _) | (_, ConnectError::Closed { code, reason }) => {
            return ConnectError::Closed { code, reason };
        }
        pair => pair,
    };
    ConnectError::Unreachable {
        quic: Box::new(quic),
        websocket: Box::new(websocket),
    }
}
