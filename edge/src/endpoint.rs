//! The QUIC endpoint: start, accept, dispatch by ALPN, shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use quinn::crypto::rustls::{HandshakeData, QuicServerConfig};
use quinn::{Endpoint, IdleTimeout, Incoming, TransportConfig, VarInt};
use tidings_relay::Router;
use tidings_schema::error::CloseCode;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, debug_span, field, info};

use crate::auth::TokenVerifier;
use crate::config::EdgeConfig;
use crate::connection::serve_native;
use crate::fanout::run_dispatcher;
use crate::registry::SessionRegistry;
use crate::stamp::Stamper;
use crate::tls::{self, ALPN_TIDINGS, TlsError};

/// Maximum wait in `shutdown` for sessions to send their `Close` frames.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Highest Snowflake node id.
const MAX_NODE_ID: u16 = 1023;

/// Failure to start the edge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("invalid edge config: {0}")]
    Config(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("failed to bind the QUIC endpoint on {addr}: {source}; pick a free port or 0")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// State shared by every task of the edge.
pub struct EdgeShared {
    pub config: EdgeConfig,
    pub verifier: TokenVerifier,
    pub router: Router,
    pub stamper: Stamper,
    pub registry: Arc<SessionRegistry>,
    pub shutdown: CancellationToken,
    connections: TaskTracker,
    next_conn_id: AtomicU64,
}

/// The edge node.
pub struct Edge;

impl Edge {
    /// Binds the endpoint, registers with every owner for fan-out and starts accepting.
    /// Must be called inside a tokio runtime.
    pub async fn start(
        config: EdgeConfig,
        verifier: TokenVerifier,
        router: Router,
    ) -> Result<EdgeHandle, StartError> {
        validate(&config)?;
        let server_config = quinn_server_config(&config)?;
        let endpoint =
            Endpoint::server(server_config, config.listen).map_err(|source| StartError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = endpoint.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;

        let shared = Arc::new(EdgeShared {
            stamper: Stamper::new(config.node_id),
            registry: Arc::new(SessionRegistry::default()),
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
            next_conn_id: AtomicU64::new(1),
            config,
            verifier,
            router,
        });
        for (owner_index, owner) in shared.router.owners().iter().enumerate() {
            let dispatcher = run_dispatcher(
                owner_index,
                owner.clone(),
                shared.config.edge_id.clone(),
                Arc::clone(&shared.registry),
                shared.shutdown.clone(),
            );
            tokio::spawn(dispatcher.instrument(debug_span!("dispatcher", owner_index)));
        }

        let accept = tokio::spawn(accept_loop(endpoint.clone(), Arc::clone(&shared)));
        info!(%local_addr, edge_id = %shared.config.edge_id, "edge listening");
        Ok(EdgeHandle {
            local_addr,
            endpoint,
            shared,
            accept: Some(accept),
        })
    }
}

fn validate(config: &EdgeConfig) -> Result<(), StartError> {
    if config.node_id > MAX_NODE_ID {
        let message = format!("node_id {} exceeds {MAX_NODE_ID}", config.node_id);
        return Err(StartError::Config(message));
    }
    if config.limits.max_conversation_streams == 0 {
        let message = "limits.max_conversation_streams must be at least 1".to_owned();
        return Err(StartError::Config(message));
    }
    if config.idle_timeout.is_zero() || config.hello_timeout.is_zero() {
        let message = "idle_timeout and hello_timeout must be above zero".to_owned();
        return Err(StartError::Config(message));
    }
    Ok(())
}

fn quinn_server_config(config: &EdgeConfig) -> Result<quinn::ServerConfig, StartError> {
    // NOTE: this is the ALPN dispatch point; offering `h3` here and handling it in
    // `serve_incoming` adds HTTP/3 on the same port.
    let tls = tls::server_config(&config.tls, &[ALPN_TIDINGS])?;
    let crypto = QuicServerConfig::try_from(tls)
        .map_err(|error| StartError::Config(format!("TLS config unusable for QUIC: {error}")))?;

    let mut transport = TransportConfig::default();
    // One control stream plus the conversation streams.
    let bidi = config.limits.max_conversation_streams.saturating_add(1);
    transport.max_concurrent_bidi_streams(VarInt::from_u32(bidi));
    transport.max_concurrent_uni_streams(VarInt::from_u32(0));
    let idle = IdleTimeout::try_from(config.idle_timeout).map_err(|_| {
        StartError::Config(format!(
            "idle_timeout {:?} is too large",
            config.idle_timeout
        ))
    })?;
    transport.max_idle_timeout(Some(idle));
    transport.keep_alive_interval(Some(config.keep_alive_interval()));
    transport.datagram_receive_buffer_size(Some(64 * 1024));

    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport));
    Ok(server)
}

async fn accept_loop(endpoint: Endpoint, shared: Arc<EdgeShared>) {
    loop {
        let incoming = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            incoming = endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else { break };
        let conn_id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let peer = incoming.remote_address();
        let span = debug_span!("conn", conn_id, %peer, alpn = field::Empty, user = field::Empty);
        let task = serve_incoming(incoming, Arc::clone(&shared), conn_id);
        shared.connections.spawn(task.instrument(span));
    }
}

/// Completes the handshake and hands the connection to the protocol its ALPN names.
async fn serve_incoming(incoming: Incoming, shared: Arc<EdgeShared>, conn_id: u64) {
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(error) => {
            debug!(%error, "incoming connection failed");
            return;
        }
    };
    let mut connecting = connecting;
    let alpn = match connecting.handshake_data().await {
        Ok(data) => data
            .downcast::<HandshakeData>()
            .ok()
            .and_then(|data| data.protocol),
        Err(error) => {
            debug!(%error, "handshake failed");
            return;
        }
    };
    let alpn_name = alpn
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    tracing::Span::current().record("alpn", alpn_name.as_ref());

    let connection = match connecting.await {
        Ok(connection) => connection,
        Err(error) => {
            debug!(%error, "handshake failed");
            return;
        }
    };
    debug!("connection established");
    match alpn.as_deref() {
        Some(ALPN_TIDINGS) => serve_native(connection, shared, conn_id).await,
        _ => {
            // rustls only completes handshakes for offered protocols, so this is reached
            // only if a protocol is offered without a handler.
            debug!("no handler for the negotiated ALPN");
            connection.close(
                VarInt::from_u32(CloseCode::ProtocolViolation.as_u32()),
                b"unsupported ALPN",
            );
        }
    }
}

/// A running edge. Dropping it without `shutdown` closes the endpoint abruptly.
pub struct EdgeHandle {
    local_addr: SocketAddr,
    endpoint: Endpoint,
    shared: Arc<EdgeShared>,
    accept: Option<JoinHandle<()>>,
}

impl EdgeHandle {
    /// Returns the UDP address the endpoint is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Returns the number of authenticated sessions on this edge.
    pub fn session_count(&self) -> usize {
        self.shared.registry.len()
    }

    /// Stops accepting, sends every session a `Close` frame, closes their connections with
    /// `ServerShutdown` and waits (up to a few seconds) for the endpoint to go idle.
    pub async fn shutdown(mut self) {
        info!(local_addr = %self.local_addr, "edge shutting down");
        self.shared.shutdown.cancel();
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
        self.shared.connections.close();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.shared.connections.wait()).await;
        self.endpoint.close(
            VarInt::from_u32(CloseCode::ServerShutdown.as_u32()),
            b"the edge is shutting down",
        );
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.endpoint.wait_idle()).await;
    }
}

impl Drop for EdgeHandle {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        self.endpoint.close(
            VarInt::from_u32(CloseCode::ServerShutdown.as_u32()),
            b"the edge is shutting down",
        );
    }
}
