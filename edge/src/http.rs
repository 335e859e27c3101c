//! The TCP port: HTTP/1.1 with `/v1/ws` (the WebSocket fallback), `/healthz`, `/metrics`,
//! `/v1/cert-hashes`, `/v1/client-config`, the operator endpoints (`admin`) and the web
//! client (`static_files`), which loads from the edge's own origin.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tracing::{Instrument, debug, debug_span, field, warn};

use crate::endpoint::EdgeShared;
use crate::http3::WEBTRANSPORT_PATH;
use crate::websocket::serve_websocket;

/// Path of the WebSocket endpoint.
pub const WEBSOCKET_PATH: &str = "/v1/ws";

/// Builds the router of the TCP port.
pub fn router(edge: Arc<EdgeShared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/cert-hashes", get(cert_hashes))
        .route("/v1/client-config", get(client_config))
        .route(WEBSOCKET_PATH, get(websocket))
        .route(crate::admin::KICK_PATH, post(crate::admin::kick))
        .fallback(crate::static_files::serve)
        .with_state(edge)
}

/// Serves HTTP on `listener` (plain TCP, or [`crate::https::TlsListener`] for HTTPS)
/// until the edge shuts down.
pub async fn serve_http<L>(listener: L, edge: Arc<EdgeShared>)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let shutdown = edge.shutdown.clone().cancelled_owned();
    let app = router(Arc::clone(&edge));
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        warn!(%error, "HTTP server failed");
    }
}

/// Returns the address of `listener`, for logs and the origin allow-list.
pub fn local_addr(listener: &TcpListener) -> Option<SocketAddr> {
    listener.local_addr().ok()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(edge): State<Arc<EdgeShared>>) -> Response {
    let body = edge.metrics.render(edge.registry.len());
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn cert_hashes(State(edge): State<Arc<EdgeShared>>) -> Response {
    let hashes = edge.certs.published_hashes();
    let headers = [(header::CACHE_CONTROL, "no-store")];
    (headers, axum::Json(hashes)).into_response()
}

/// Endpoints of this edge for a browser on its HTTP origin, read by the web client.
#[derive(Debug, serde::Serialize)]
struct ClientConfig {
    /// UDP port of WebTransport on the page's host; `null` when the edge cannot tell.
    webtransport_port: Option<u16>,
    webtransport_path: &'static str,
    websocket_path: &'static str,
}

async fn client_config(State(edge): State<Arc<EdgeShared>>) -> Response {
    let config = ClientConfig {
        webtransport_port: quic_port(&edge),
        webtransport_path: WEBTRANSPORT_PATH,
        websocket_path: WEBSOCKET_PATH,
    };
    let headers = [(header::CACHE_CONTROL, "no-store")];
    (headers, axum::Json(config)).into_response()
}

/// Returns this edge's QUIC port: the configured one, or for port 0 the bound port, which
/// the edge announces as the one public edge that is not another edge of the cluster.
fn quic_port(edge: &EdgeShared) -> Option<u16> {
    let configured = edge.config.listen.port();
    if configured != 0 {
        return Some(configured);
    }
    edge.config
        .public_edges
        .iter()
        .find(|public| !edge.other_edges.contains(public))
        .and_then(|own| own.parse::<SocketAddr>().ok())
        .map(|own| own.port())
}

async fn websocket(
    State(edge): State<Arc<EdgeShared>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok());
    if let Err(reason) = edge.origins.check(origin) {
        debug!(%reason, "WebSocket upgrade rejected");
        return (StatusCode::FORBIDDEN, reason).into_response();
    }

    // NOTE: one WebSocket message is one frame, so both limits are the frame limit, and
    // tungstenite checks a frame's declared length before it buffers the payload.
    let limit = edge.config.limits.max_frame_bytes as usize;
    let conn_id = edge.next_connection_id();
    let tracker = edge.track_connection();
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            let span = debug_span!("conn", conn_id, alpn = "websocket", user = field::Empty);
            async move {
                serve_websocket(socket, edge, conn_id).await;
                drop(tracker);
            }
            .instrument(span)
        })
}
