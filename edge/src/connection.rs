//! One native (`tidings/1`) connection: the `Hello` handshake, then the session's tasks
//! until the connection ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quinn::{Connection, RecvStream, VarInt};
use rand::Rng;
use tidings_schema::codec::{self, ReadError};
use tidings_schema::error::{CloseCode, ErrorCode, Rejection};
use tidings_schema::frame::{Close, ErrorFrame, Frame, Hello, Welcome};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, debug_span};

use crate::auth::{Claims, TokenVerifier};
use crate::control::{ControlEnd, run_control};
use crate::conversation::run_conversation_stream;
use crate::delivery::{DeliveryConfig, run_delivery_streams};
use crate::endpoint::EdgeShared;
use crate::rate::TokenBucket;
use crate::registry::SessionEntry;
use crate::session::Session;
use crate::stamp::now_ms;
use crate::writer::FrameSink;

/// Frames queued on the control stream's writer.
const CONTROL_QUEUE: usize = 256;

/// Milliseconds a client waits before reconnecting after a shutdown `Close`.
const SHUTDOWN_RETRY_AFTER_MS: u32 = 1_000;

/// The reason a session ended.
enum SessionEnd {
    Shutdown,
    TokenExpired,
    Violation,
    Closed(quinn::ConnectionError),
}

/// Serves one native connection until it closes. Runs inside the connection's span.
pub async fn serve_native(connection: Connection, edge: Arc<EdgeShared>, conn_id: u64) {
    let Some((sink, recv, hello, claims)) = accept_hello(&connection, &edge).await else {
        return;
    };
    Span::current().record("user", claims.sub.as_str());

    let session = Arc::new(Session {
        conn_id,
        session_id: rand::rng().random_range(1..=u64::MAX),
        user: claims.sub.clone(),
        device_id: hello.device_id.clone(),
        connection: connection.clone(),
        send_rate: Mutex::new(TokenBucket::new(
            edge.config.send_rate,
            std::time::Instant::now(),
        )),
        cursors: Arc::new(Mutex::new(HashMap::new())),
        edge: Arc::clone(&edge),
    });
    let welcome = Welcome {
        session_id: session.session_id,
        user_id: session.user.clone(),
        server_time_ms: now_ms(),
        limits: edge.config.limits,
        edges: edge.config.public_edges.clone(),
    };
    if sink.send(&Frame::Welcome(welcome)).await.is_err() {
        return;
    }
    debug!(session_id = session.session_id, device_id = %session.device_id, "session started");

    let cancel = CancellationToken::new();
    let (queue, deliveries) = mpsc::channel(edge.config.session_queue.max(1));
    let entry = SessionEntry::new(
        conn_id,
        session.session_id,
        session.user.clone(),
        session.device_id.clone(),
        queue,
        connection.clone(),
    );
    edge.registry.insert(Arc::new(entry));
    spawn_session_tasks(&session, deliveries, &cancel);

    let end = run_session(&session, sink.clone(), recv, claims.exp).await;
    edge.registry.remove(&session.user, session.session_id);
    cancel.cancel();
    close_session(&connection, &sink, end).await;
}

/// Waits for the control stream and a valid `Hello`, within the hello timeout. On failure
/// the connection is closed with `AuthFailed`, `TokenExpired` or `ProtocolViolation`.
async fn accept_hello(
    connection: &Connection,
    edge: &EdgeShared,
) -> Option<(FrameSink, RecvStream, Hello, Claims)> {
    let max_frame_bytes = edge.config.limits.max_frame_bytes;
    let first = async {
        let (send, mut recv) = connection.accept_bi().await?;
        let frame = codec::read_frame(&mut recv, max_frame_bytes).await;
        Ok::<_, quinn::ConnectionError>((send, recv, frame))
    };
    let outcome = tokio::select! {
        _ = edge.shutdown.cancelled() => {
            close(connection, CloseCode::ServerShutdown, "the edge is shutting down");
            return None;
        }
        outcome = tokio::time::timeout(edge.config.hello_timeout, first) => outcome,
    };
    let (send, recv, frame) = match outcome {
        Err(_elapsed) => {
            debug!("no Hello within the hello timeout");
            close(
                connection,
                CloseCode::AuthFailed,
                "no Hello within the hello timeout",
            );
            return None;
        }
        Ok(Err(error)) => {
            debug!(%error, "connection ended before Hello");
            return None;
        }
        Ok(Ok(parts)) => parts,
    };
    let span = debug_span!("stream", stream_id = %send.id());
    let sink = FrameSink::spawn(send, CONTROL_QUEUE, span);

    let rejection = match check_hello(frame, &edge.verifier) {
        Ok(Some((hello, claims))) => return Some((sink, recv, hello, claims)),
        Ok(None) => return None,
        Err(rejection) => rejection,
    };
    let close_code = match rejection.code {
        ErrorCode::TokenExpired => CloseCode::TokenExpired,
        ErrorCode::InvalidToken | ErrorCode::Unauthenticated => CloseCode::AuthFailed,
        _ => CloseCode::ProtocolViolation,
    };
    debug!(code = %rejection.code, reason = %rejection.message, "Hello rejected");
    let _ = sink
        .send(&Frame::Error(ErrorFrame::from_rejection(&rejection)))
        .await;
    sink.finish().await;
    close(connection, close_code, &rejection.message);
    None
}

/// Checks the first control frame: a `Hello` with a valid token. `Ok(None)` means the
/// stream failed, so no `Error` frame can be sent.
fn check_hello(
    frame: Result<Option<Frame>, ReadError>,
    verifier: &TokenVerifier,
) -> Result<Option<(Hello, Claims)>, Rejection> {
    match frame {
        Ok(Some(Frame::Hello(hello))) => {
            let claims = verifier.verify(&hello.token, SystemTime::now())?;
            Ok(Some((hello, claims)))
        }
        Ok(Some(other)) => Err(Rejection::new(
            ErrorCode::Unauthenticated,
            format!("the first frame must be Hello, not {}", other.kind()),
        )),
        Ok(None) => Err(Rejection::new(
            ErrorCode::Unauthenticated,
            "the control stream ended before Hello",
        )),
        Err(ReadError::Decode(error)) => Err(Rejection::new(error.code(), error.to_string())),
        Err(ReadError::Truncated) => Err(Rejection::new(
            ErrorCode::MalformedFrame,
            "the control stream ended inside Hello",
        )),
        Err(error) => {
            debug!(%error, "control stream failed before Hello");
            Ok(None)
        }
    }
}

fn spawn_session_tasks(
    session: &Arc<Session>,
    deliveries: mpsc::Receiver<Arc<crate::registry::EncodedDelivery>>,
    cancel: &CancellationToken,
) {
    let limits = session.edge.config.limits;
    let config = DeliveryConfig {
        max_streams: limits.max_conversation_streams as usize,
        idle_timeout: session.edge.config.delivery_idle_timeout,
        max_frame_bytes: limits.max_frame_bytes,
    };
    let delivery = run_delivery_streams(
        session.connection.clone(),
        deliveries,
        config,
        Arc::clone(&session.cursors),
        cancel.clone(),
    );
    tokio::spawn(delivery.in_current_span());

    let accept = accept_conversation_streams(Arc::clone(session), cancel.clone());
    tokio::spawn(accept.in_current_span());
}

/// Accepts client-opened conversation streams. QUIC's stream limit bounds how many are
/// open at once.
async fn accept_conversation_streams(session: Arc<Session>, cancel: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = session.connection.accept_bi() => accepted,
        };
        let Ok((send, recv)) = accepted else { return };
        let span = debug_span!("stream", stream_id = %send.id());
        let stream = run_conversation_stream(send, recv, Arc::clone(&session));
        tokio::spawn(stream.instrument(span));
    }
}

/// Runs the control stream and watches for token expiry, shutdown and connection loss.
async fn run_session(
    session: &Arc<Session>,
    sink: FrameSink,
    recv: RecvStream,
    exp: u64,
) -> SessionEnd {
    let span = debug_span!("stream", stream_id = %recv.id());
    let control = run_control(recv, sink, Arc::clone(session));
    let mut control = tokio::spawn(control.instrument(span));
    let mut control_running = true;
    let expiry = tokio::time::sleep(until_unix_secs(exp));
    tokio::pin!(expiry);

    loop {
        tokio::select! {
            _ = session.edge.shutdown.cancelled() => return SessionEnd::Shutdown,
            _ = &mut expiry => return SessionEnd::TokenExpired,
            error = session.connection.closed() => return SessionEnd::Closed(error),
            end = &mut control, if control_running => {
                control_running = false;
                match end {
                    Ok(ControlEnd::Violation) => return SessionEnd::Violation,
                    // NOTE: a client that finishes its control stream keeps its session
                    // until the connection closes, so in-flight deliveries still arrive.
                    Ok(ControlEnd::Finished) => debug!("client finished the control stream"),
                    Ok(ControlEnd::Lost) | Err(_) => {}
                }
            }
        }
    }
}

/// Returns the time from now until `exp` (Unix seconds), zero when it has passed.
fn until_unix_secs(exp: u64) -> Duration {
    let deadline = UNIX_EPOCH + Duration::from_secs(exp);
    deadline
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

async fn close_session(connection: &Connection, sink: &FrameSink, end: SessionEnd) {
    let (code, message) = match end {
        SessionEnd::Closed(error) => {
            debug!(%error, "connection closed");
            return;
        }
        SessionEnd::Violation => {
            sink.finish().await;
            close(
                connection,
                CloseCode::ProtocolViolation,
                "protocol violation on the control stream",
            );
            return;
        }
        SessionEnd::Shutdown => (
            CloseCode::ServerShutdown,
            "the edge is shutting down; reconnect",
        ),
        SessionEnd::TokenExpired => (
            CloseCode::TokenExpired,
            "the token expired; reconnect with a new one",
        ),
    };
    debug!(%code, "closing session");
    let retry_after_ms = match code {
        CloseCode::ServerShutdown => SHUTDOWN_RETRY_AFTER_MS,
        _ => 0,
    };
    let frame = Frame::Close(Close {
        code: code.as_u32(),
        message: message.to_owned(),
        retry_after_ms,
        redirect: String::new(),
    });
    if sink.send(&frame).await.is_ok() {
        sink.finish().await;
    }
    close(connection, code, message);
}

fn close(connection: &Connection, code: CloseCode, reason: &str) {
    connection.close(VarInt::from_u32(code.as_u32()), reason.as_bytes());
}
