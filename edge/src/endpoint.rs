//! The edge's listeners: the QUIC endpoint (native and HTTP/3, dispatched by ALPN), the
//! HTTP port, start, certificate rotation and shutdown.

use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::serve::ListenerExt;
use quinn::crypto::rustls::{HandshakeData, QuicServerConfig};
use quinn::{Endpoint, IdleTimeout, Incoming, TransportConfig, VarInt};
use tidings_relay::Router;
use tidings_schema::error::CloseCode;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{TaskTracker, task_tracker::TaskTrackerToken};
use tracing::{Instrument, debug, debug_span, field, info, warn};

use crate::auth::TokenVerifier;
use crate::certs::CertStore;
use crate::config::EdgeConfig;
use crate::connection::serve_streams;
use crate::fanout::run_dispatcher;
use crate::http::serve_http;
use crate::http3::serve_h3;
use crate::https::TlsListener;
use crate::metrics::{EdgeMetrics, Transport};
use crate::origin::OriginPolicy;
use crate::presence_hub::{PresenceHub, run_presence};
use crate::registry::SessionRegistry;
use crate::stamp::Stamper;
use crate::streams::NativeConnection;
use crate::tls::{ALPN_H3, ALPN_TIDINGS, TlsError};

/// Maximum wait in `shutdown` for the endpoint to go idle and for each task to end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Highest Snowflake node id.
const MAX_NODE_ID: u16 = 1023;

/// Longest sleep of the certificate rotation task, so a suspended machine catches up
/// soon after it wakes.
const MAX_ROTATION_SLEEP: Duration = Duration::from_secs(3600);

/// Unidirectional streams a client may open: HTTP/3 needs three (control, QPACK encoder
/// and decoder); native connections use none and have theirs stopped.
const MAX_UNI_STREAMS: u32 = 8;

/// Bidirectional streams beyond the conversation streams: the control stream, and on
/// HTTP/3 the CONNECT stream and a few plain requests.
const EXTRA_BIDI_STREAMS: u32 = 4;

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
    #[error("failed to bind the HTTP port on {addr}: {source}; pick a free port or 0")]
    BindHttp {
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
    pub metrics: Arc<EdgeMetrics>,
    pub certs: Arc<CertStore>,
    pub origins: OriginPolicy,
    pub shutdown: CancellationToken,
    pub presence: Arc<PresenceHub>,
    /// Client addresses of the cluster's other edges, where a drain sends clients.
    pub other_edges: Vec<String>,
    connections: TaskTracker,
    next_conn_id: AtomicU64,
}

impl EdgeShared {
    /// Returns a connection id not used before on this edge.
    pub fn next_connection_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts a connection served outside the QUIC accept loop, so `shutdown` waits for
    /// it to send its `Close` frame. The connection is done when the token is dropped.
    pub fn track_connection(&self) -> TaskTrackerToken {
        self.connections.token()
    }

    /// Ends every session of `user` on this edge: each gets a `Close` frame with `code`
    /// and `reason`, then its transport is closed. Returns the number of sessions.
    pub fn kick(&self, user: &str, code: CloseCode, reason: &str) -> usize {
        let sessions = self.registry.sessions(user);
        for session in &sessions {
            session.end(code, reason);
        }
        info!(user, %code, sessions = sessions.len(), "sessions kicked");
        sessions.len()
    }
}

/// The edge node.
pub struct Edge;

impl Edge {
    /// Binds the QUIC endpoint (and `[::1]` beside `127.0.0.1`), the HTTP port when
    /// configured, registers with every owner for fan-out and starts accepting. Must be
    /// called inside a tokio runtime.
    pub async fn start(
        config: EdgeConfig,
        verifier: TokenVerifier,
        router: Router,
    ) -> Result<EdgeHandle, StartError> {
        validate(&config)?;
        let certs = Arc::new(CertStore::load(
            &config.tls,
            config.cert_rotation,
            SystemTime::now(),
        )?);
        let server_config = quinn_server_config(&config, &certs)?;
        let endpoint = bind_quic(&server_config, config.listen)?;
        let local_addr = endpoint.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let mut config = config;
        announce_bound_address(&mut config.public_edges, config.listen, local_addr);
        let mut endpoints = vec![endpoint];
        if local_addr.ip().is_loopback() && local_addr.is_ipv4() {
            // Chromium resolves `localhost` to ::1 for QUIC.
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, local_addr.port()));
            match bind_quic(&server_config, v6) {
                Ok(endpoint) => endpoints.push(endpoint),
                Err(error) => warn!(%error, "no QUIC listener on ::1; browsers must use 127.0.0.1"),
            }
        }

        let http = match config.http_listen {
            Some(addr) => bind_http(addr).await?,
            None => Vec::new(),
        };
        let http_addr = http.first().and_then(crate::http::local_addr);
        let http_tls = http_addr.is_some_and(|addr| config.http_uses_tls(addr));
        let https_config = if http_tls {
            Some(crate::https::https_config(&certs)?)
        } else {
            None
        };
        let origins = OriginPolicy::new(&config.allowed_origins, http_addr);

        let (presence, presence_work) =
            PresenceHub::new(config.presence, router.clone(), config.edge_id.clone());
        let other_edges = other_edges(&config.public_edges, &local_addrs(&endpoints));
        let shared = Arc::new(EdgeShared {
            presence,
            other_edges,
            stamper: Stamper::new(config.node_id),
            registry: Arc::new(SessionRegistry::default()),
            metrics: Arc::new(EdgeMetrics::default()),
            certs,
            origins,
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
            next_conn_id: AtomicU64::new(1),
            config,
            verifier,
            router,
        });
        spawn_dispatchers(&shared);
        let presence = run_presence(
            Arc::clone(&shared.presence),
            presence_work,
            shared.shutdown.clone(),
        );
        tokio::spawn(presence.instrument(debug_span!("presence")));
        tokio::spawn(rotate_certificates(Arc::clone(&shared)));

        let mut tasks = Vec::new();
        for endpoint in &endpoints {
            tasks.push(tokio::spawn(accept_loop(
                endpoint.clone(),
                Arc::clone(&shared),
            )));
        }
        for listener in http {
            let edge = Arc::clone(&shared);
            let task = match &https_config {
                Some(tls) => {
                    let addr = crate::http::local_addr(&listener);
                    let listener =
                        TlsListener::new(listener, Arc::clone(tls), edge.shutdown.clone())
                            .map_err(|source| StartError::BindHttp {
                                addr: addr.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
                                source,
                            })?;
                    tokio::spawn(serve_http(listener, edge))
                }
                // Chat frames are small and latency-bound: without TCP_NODELAY, Nagle's
                // algorithm holds a frame back until the previous one is acknowledged.
                None => {
                    let listener = listener.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    tokio::spawn(serve_http(listener, edge))
                }
            };
            tasks.push(task);
        }
        info!(%local_addr, http = ?http_addr, http_tls, edge_id = %shared.config.edge_id, "edge listening");
        Ok(EdgeHandle {
            local_addr,
            http_addr,
            http_tls,
            endpoints,
            shared,
            tasks,
        })
    }
}

/// Binds the HTTP port on `addr` and, when that is `127.0.0.1`, the same port on `[::1]`,
/// because browsers may resolve `localhost` to either.
async fn bind_http(addr: SocketAddr) -> Result<Vec<TcpListener>, StartError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::BindHttp { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StartError::BindHttp { addr, source })?;
    let mut listeners = vec![listener];
    if bound.ip().is_loopback() && bound.is_ipv4() {
        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, bound.port()));
        match TcpListener::bind(v6).await {
            Ok(listener) => listeners.push(listener),
            Err(error) => warn!(%error, "no HTTP listener on ::1; browsers must use 127.0.0.1"),
        }
    }
    Ok(listeners)
}

fn spawn_dispatchers(shared: &Arc<EdgeShared>) {
    for (owner_index, owner) in shared.router.owners().iter().enumerate() {
        let dispatcher = run_dispatcher(
            owner_index,
            owner.clone(),
            shared.config.edge_id.clone(),
            Arc::clone(&shared.registry),
            Arc::clone(&shared.presence),
            Arc::clone(&shared.metrics),
            shared.shutdown.clone(),
        );
        tokio::spawn(dispatcher.instrument(debug_span!("dispatcher", owner_index)));
    }
}

/// Makes the `Welcome` edge list name the address clients can reach: an entry for the
/// configured listen address with port 0 becomes the bound address, and an empty list
/// becomes the bound address alone.
fn announce_bound_address(edges: &mut Vec<String>, listen: SocketAddr, bound: SocketAddr) {
    let configured = listen.to_string();
    for edge in edges.iter_mut() {
        if listen.port() == 0 && *edge == configured {
            *edge = bound.to_string();
        }
    }
    if edges.is_empty() {
        edges.push(bound.to_string());
    }
}

/// Returns the edges of `public_edges` other than this one, which listens on `own`.
fn other_edges(public_edges: &[String], own: &[SocketAddr]) -> Vec<String> {
    let own: Vec<String> = own.iter().map(SocketAddr::to_string).collect();
    public_edges
        .iter()
        .filter(|edge| !own.contains(edge))
        .cloned()
        .collect()
}

fn local_addrs(endpoints: &[Endpoint]) -> Vec<SocketAddr> {
    let addrs = endpoints
        .iter()
        .filter_map(|endpoint| endpoint.local_addr().ok());
    addrs.collect()
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
    let schedule = config.cert_rotation;
    if schedule.switch_before >= schedule.prepare_before {
        let message = format!(
            "cert_rotation.switch_before ({:?}) must be shorter than prepare_before ({:?})",
            schedule.switch_before, schedule.prepare_before
        );
        return Err(StartError::Config(message));
    }
    Ok(())
}

fn bind_quic(config: &quinn::ServerConfig, addr: SocketAddr) -> Result<Endpoint, StartError> {
    Endpoint::server(config.clone(), addr).map_err(|source| StartError::Bind { addr, source })
}

fn quinn_server_config(
    config: &EdgeConfig,
    certs: &Arc<CertStore>,
) -> Result<quinn::ServerConfig, StartError> {
    // Both protocols share the port; `serve_incoming` dispatches on the negotiated ALPN.
    let tls = crate::tls::resolver_config(Arc::clone(certs) as _, &[ALPN_TIDINGS, ALPN_H3])?;
    let crypto = QuicServerConfig::try_from(tls)
        .map_err(|error| StartError::Config(format!("TLS config unusable for QUIC: {error}")))?;

    let mut transport = TransportConfig::default();
    let bidi = config
        .limits
        .max_conversation_streams
        .saturating_add(EXTRA_BIDI_STREAMS);
    transport.max_concurrent_bidi_streams(VarInt::from_u32(bidi));
    transport.max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS));
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

/// Advances the certificate rotation on the wall clock until shutdown.
async fn rotate_certificates(shared: Arc<EdgeShared>) {
    loop {
        let Some(wait) = shared.certs.next_rotation_in(SystemTime::now()) else {
            return;
        };
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait.min(MAX_ROTATION_SLEEP)) => {}
        }
        if let Err(error) = shared.certs.rotate(SystemTime::now()) {
            // The current leaf stays in use; the next loop retries within the hour.
            warn!(%error, "failed to issue the next TLS leaf");
            tokio::select! {
                _ = shared.shutdown.cancelled() => return,
                _ = tokio::time::sleep(MAX_ROTATION_SLEEP) => {}
            }
        }
    }
}

async fn accept_loop(endpoint: Endpoint, shared: Arc<EdgeShared>) {
    loop {
        let incoming = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            incoming = endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else { return };
        let conn_id = shared.next_connection_id();
        let peer = incoming.remote_address();
        let span = debug_span!("conn", conn_id, %peer, alpn = field::Empty, user = field::Empty);
        let task = serve_incoming(incoming, Arc::clone(&shared), conn_id);
        shared.connections.spawn(task.instrument(span));
    }
    refuse_while_draining(endpoint).await;
}

/// Rejects every new connection until the endpoint closes, so that a client that tries
/// a draining edge moves on to the next edge at once instead of waiting for its
/// handshake to time out.
async fn refuse_while_draining(endpoint: Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        debug!(peer = %incoming.remote_address(), "rejected a connection while draining");
        incoming.refuse();
    }
}

/// Completes the handshake and hands the connection to the protocol its ALPN names.
async fn serve_incoming(incoming: Incoming, shared: Arc<EdgeShared>, conn_id: u64) {
    let mut connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(error) => {
            debug!(%error, "incoming connection failed");
            return;
        }
    };
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
        Some(ALPN_TIDINGS) => {
            shared.metrics.connection(Transport::Native);
            tokio::spawn(reject_uni_streams(connection.clone()));
            let native = Arc::new(NativeConnection(connection));
            serve_streams(native, shared, conn_id, Transport::Native).await;
        }
        Some(ALPN_H3) => serve_h3(connection, shared, conn_id).await,
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

/// Stops every unidirectional stream of a native connection: the protocol has none, and
/// the transport allows a few for HTTP/3 on the same port.
async fn reject_uni_streams(connection: quinn::Connection) {
    while let Ok(mut stream) = connection.accept_uni().await {
        let _ = stream.stop(VarInt::from_u32(CloseCode::ProtocolViolation.as_u32()));
    }
}

/// A running edge. Dropping it without `shutdown` closes the endpoint abruptly.
pub struct EdgeHandle {
    local_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    http_tls: bool,
    endpoints: Vec<Endpoint>,
    shared: Arc<EdgeShared>,
    tasks: Vec<JoinHandle<()>>,
}

impl EdgeHandle {
    /// Returns the UDP address the endpoint is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Returns every UDP address the edge listens on: the configured one and, when that
    /// is `127.0.0.1`, the same port on `::1` if it could be bound.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        local_addrs(&self.endpoints)
    }

    /// Returns the TCP address of the HTTP port, when one is configured.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Reports whether the HTTP port serves HTTPS (and `wss`) rather than plain HTTP.
    pub fn http_is_tls(&self) -> bool {
        self.http_tls
    }

    /// Returns the edge's counters.
    pub fn metrics(&self) -> &EdgeMetrics {
        &self.shared.metrics
    }

    /// Returns the certificates the edge presents, and their rotation.
    pub fn certificates(&self) -> &CertStore {
        &self.shared.certs
    }

    /// Returns the presence service, for its counters.
    pub fn presence(&self) -> &PresenceHub {
        &self.shared.presence
    }

    /// Returns the number of authenticated sessions on this edge.
    pub fn session_count(&self) -> usize {
        self.shared.registry.len()
    }

    /// Ends every session of `user` on this edge: each gets a `Close` frame with `code`
    /// and `reason`, then its transport is closed. Returns the number of sessions.
    pub fn kick(&self, user: &str, code: CloseCode, reason: &str) -> usize {
        self.shared.kick(user, code, reason)
    }

    /// Drains the edge: rejects new connections, sends every session a `Close` frame with
    /// a retry hint and a redirect to another edge, waits until every connection is gone
    /// or `drain_timeout` has passed, then closes the endpoint with `ServerShutdown` and
    /// waits (up to a few seconds) for it to go idle.
    pub async fn shutdown(self) {
        let deadline = self.shared.config.drain_timeout;
        self.drain(deadline).await;
    }

    /// Drains the edge like [`EdgeHandle::shutdown`], waiting at most `deadline` for
    /// sessions to end.
    pub async fn drain(mut self, deadline: Duration) {
        let sessions = self.shared.registry.len();
        info!(
            local_addr = %self.local_addr,
            sessions,
            redirects = ?self.shared.other_edges,
            deadline_ms = deadline.as_millis() as u64,
            "edge draining"
        );
        let started = tokio::time::Instant::now();
        self.shared.shutdown.cancel();
        self.shared.connections.close();
        let drained = tokio::time::timeout(deadline, self.shared.connections.wait()).await;
        match drained {
            Ok(()) => info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "edge drained"
            ),
            Err(_) => warn!(
                left = self.shared.connections.len(),
                deadline_ms = deadline.as_millis() as u64,
                "drain deadline passed; closing the remaining connections"
            ),
        }
        for endpoint in &self.endpoints {
            endpoint.close(
                VarInt::from_u32(CloseCode::ServerShutdown.as_u32()),
                b"the edge is shutting down",
            );
        }
        for endpoint in &self.endpoints {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, endpoint.wait_idle()).await;
        }
        // The QUIC accept loops end with their endpoints; the HTTP servers with the token.
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, task).await;
        }
    }
}

impl Drop for EdgeHandle {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        for endpoint in &self.endpoints {
            endpoint.close(
                VarInt::from_u32(CloseCode::ServerShutdown.as_u32()),
                b"the edge is shutting down",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welcome_lists_bound_address_for_port_zero() {
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let bound: SocketAddr = "127.0.0.1:40123".parse().unwrap();

        let mut edges = vec!["127.0.0.1:0".to_owned(), "127.0.0.1:5000".to_owned()];
        announce_bound_address(&mut edges, listen, bound);
        assert_eq!(edges, ["127.0.0.1:40123", "127.0.0.1:5000"]);

        let mut empty = Vec::new();
        announce_bound_address(&mut empty, listen, bound);
        assert_eq!(empty, ["127.0.0.1:40123"]);

        let fixed: SocketAddr = "127.0.0.1:4433".parse().unwrap();
        let mut kept = vec!["127.0.0.1:4433".to_owned()];
        announce_bound_address(&mut kept, fixed, fixed);
        assert_eq!(kept, ["127.0.0.1:4433"]);
    }

    #[test]
    fn other_edges_leave_out_own_addresses() {
        let public = vec![
            "127.0.0.1:4001".to_owned(),
            "127.0.0.1:4002".to_owned(),
            "127.0.0.1:4003".to_owned(),
        ];
        let own: Vec<SocketAddr> = vec![
            "127.0.0.1:4002".parse().unwrap(),
            "[::1]:4002".parse().unwrap(),
        ];
        assert_eq!(
            other_edges(&public, &own),
            ["127.0.0.1:4001", "127.0.0.1:4003"]
        );
        assert!(other_edges(&public[1..2], &own).is_empty());
    }
}
