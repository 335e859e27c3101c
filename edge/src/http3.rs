//! HTTP/3 on the QUIC port (ALPN `h3`): WebTransport sessions at `/v1/wt`, and real
//! answers to plain requests (`/healthz`, `/v1/cert-hashes`) so none of them hangs.

use std::sync::Arc;

use bytes::{Buf, Bytes};
use h3::ext::Protocol;
use h3::server::RequestStream;
use h3_webtransport::server::WebTransportSession;
use http::{Method, Request, Response, StatusCode};
use tidings_schema::error::CloseCode;
use tracing::{debug, trace};

use crate::connection::serve_streams;
use crate::endpoint::EdgeShared;
use crate::metrics::{EdgeMetrics, Transport};
use crate::webtransport::WebTransportConnection;

/// Path of the WebTransport endpoint.
pub const WEBTRANSPORT_PATH: &str = "/v1/wt";

type H3Stream = RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// Serves one HTTP/3 connection: plain requests until a WebTransport session starts,
/// then that session until the connection closes.
pub async fn serve_h3(connection: quinn::Connection, edge: Arc<EdgeShared>, conn_id: u64) {
    let mut builder = h3::server::builder();
    builder
        .enable_webtransport(true)
        .enable_extended_connect(true)
        .enable_datagram(true)
        .max_webtransport_sessions(1)
        .send_grease(true);
    let quic = connection.clone();
    let mut h3 = match builder.build(h3_quinn::Connection::new(connection)).await {
        Ok(h3) => h3,
        Err(error) => {
            debug!(%error, "HTTP/3 setup failed");
            return;
        }
    };

    loop {
        let resolver = tokio::select! {
            _ = edge.shutdown.cancelled() => {
                quic.close(CloseCode::ServerShutdown.as_u32().into(), b"the edge is shutting down");
                return;
            }
            resolver = h3.accept() => resolver,
        };
        let resolver = match resolver {
            Ok(Some(resolver)) => resolver,
            Ok(None) => return,
            Err(error) => {
                debug!(%error, "HTTP/3 connection ended");
                return;
            }
        };
        let resolved =
            tokio::time::timeout(edge.config.hello_timeout, resolver.resolve_request()).await;
        let (request, mut stream) = match resolved {
            Ok(Ok(parts)) => parts,
            Ok(Err(error)) => {
                debug!(%error, "invalid HTTP/3 request");
                continue;
            }
            Err(_elapsed) => {
                debug!("HTTP/3 request headers timed out");
                continue;
            }
        };
        if !is_webtransport(&request) {
            tokio::spawn(answer(request, stream, Arc::clone(&edge)));
            continue;
        }

        if let Err(status) = check_webtransport(&request, &edge) {
            respond(&mut stream, status, Bytes::new(), "text/plain").await;
            continue;
        }
        let session = match WebTransportSession::accept(request, stream, h3).await {
            Ok(session) => session,
            Err(error) => {
                debug!(%error, "WebTransport session setup failed");
                return;
            }
        };
        edge.metrics.connection(Transport::WebTransport);
        let wt = WebTransportConnection::new(session, quic, Arc::clone(&edge));
        serve_streams(Arc::new(wt), edge, conn_id, Transport::WebTransport).await;
        return;
    }
}

fn is_webtransport(request: &Request<()>) -> bool {
    let protocol = request.extensions().get::<Protocol>();
    request.method() == Method::CONNECT && protocol == Some(&Protocol::WEB_TRANSPORT)
}

/// Checks the path and the `origin` of a WebTransport CONNECT request.
fn check_webtransport(request: &Request<()>, edge: &EdgeShared) -> Result<(), StatusCode> {
    if request.uri().path() != WEBTRANSPORT_PATH {
        return Err(StatusCode::NOT_FOUND);
    }
    let origin = request
        .headers()
        .get(http::header::ORIGIN)
        .and_then(|value| value.to_str().ok());
    if let Err(reason) = edge.origins.check(origin) {
        debug!(%reason, "WebTransport session rejected");
        return Err(StatusCode::FORBIDDEN);
    }
    Ok(())
}

/// Answers one plain HTTP/3 request.
pub async fn answer(request: Request<()>, mut stream: H3Stream, edge: Arc<EdgeShared>) {
    EdgeMetrics::inc(&edge.metrics.http3_requests);
    trace!(method = %request.method(), path = request.uri().path(), "HTTP/3 request");
    let (status, body, content_type) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz") => (StatusCode::OK, Bytes::from_static(b"ok\n"), "text/plain"),
        (&Method::GET, "/v1/cert-hashes") => {
            let hashes = edge.certs.published_hashes();
            let body = serde_json::to_vec(&hashes).unwrap_or_default();
            (StatusCode::OK, Bytes::from(body), "application/json")
        }
        (&Method::GET, _) => (StatusCode::NOT_FOUND, Bytes::new(), "text/plain"),
        _ => (StatusCode::METHOD_NOT_ALLOWED, Bytes::new(), "text/plain"),
    };
    respond(&mut stream, status, body, content_type).await;
}

async fn respond(stream: &mut H3Stream, status: StatusCode, body: Bytes, content_type: &str) {
    let response = Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(());
    let Ok(response) = response else { return };
    if let Err(error) = stream.send_response(response).await {
        debug!(%error, "sending the HTTP/3 response failed");
        return;
    }
    if body.has_remaining()
        && let Err(error) = stream.send_data(body).await
    {
        debug!(%error, "sending the HTTP/3 body failed");
        return;
    }
    let _ = stream.finish().await;
}
