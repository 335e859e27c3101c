//! The TCP port: HTTP/1.1 with `/v1/ws` (the WebSocket fallback), `/healthz`, `/metrics`,
//! `/v1/cert-hashes` and a minimal page that loads from the edge's own origin.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tracing::{Instrument, debug, debug_span, field, warn};

use crate::endpoint::EdgeShared;
use crate::websocket::serve_websocket;

/// Path of the WebSocket endpoint.
pub const WEBSOCKET_PATH: &str = "/v1/ws";

/// The page served at `/`: it shows the URLs a browser client uses.
const INDEX_PAGE: &str = include_str!("index.html");

/// Builds the router of the TCP port.
pub fn router(edge: Arc<EdgeShared>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/cert-hashes", get(cert_hashes))
        .route(WEBSOCKET_PATH, get(websocket))
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

async fn index() -> Html<&'static str> {
    Html(INDEX_PAGE)
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
