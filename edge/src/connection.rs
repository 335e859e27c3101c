//! One stream-based session (native QUIC or WebTransport): the `Hello` handshake on the
//! first client-opened stream, then the session's tasks until it ends.

use std::sync::Arc;

use tidings_schema::codec;
use tidings_schema::error::CloseCode;
use tidings_schema::frame::{ErrorFrame, Frame, Hello};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, debug_span};

use crate::auth::Claims;
use crate::control::{ControlEnd, run_control};
use crate::conversation::run_conversation_stream;
use crate::delivery::{DeliveryConfig, run_delivery_streams};
use crate::endpoint::EdgeShared;
use crate::hello::check_hello;
use crate::metrics::Transport;
use crate::session::{
    OpenSession, Session, SessionEnd, close_frame, close_session, hello_close_code, open_session,
    watch_session,
};
use crate::streams::{SharedConnection, StreamRecv};
use crate::writer::FrameSink;

/// Frames queued on the control stream's writer.
const CONTROL_QUEUE: usize = 256;

/// Serves one stream-based connection until it closes. Runs inside the connection's span.
pub async fn serve_streams(
    connection: SharedConnection,
    edge: Arc<EdgeShared>,
    conn_id: u64,
    transport: Transport,
) {
    let Some((sink, recv, hello, claims)) = accept_hello(&connection, &edge).await else {
        return;
    };
    Span::current().record("user", claims.sub.as_str());

    let open = open_session(&edge, conn_id, transport, &hello, &claims);
    let OpenSession {
        session,
        welcome,
        deliveries,
        end_signal,
        expires,
    } = open;
    if sink.send(&Frame::Welcome(welcome)).await.is_err() {
        close_session(&session);
        return;
    }

    let cancel = CancellationToken::new();
    crate::presence_session::start(&session, connection.datagrams(), &sink, &cancel);
    spawn_session_tasks(&session, &connection, deliveries, &cancel);
    let transport_end = run_control_until_end(&session, &connection, sink.clone(), recv);
    let end = watch_session(&session, expires, &end_signal, transport_end).await;
    close_session(&session);
    cancel.cancel();
    end_streams(&session, &connection, &sink, end).await;
}

/// Waits for the control stream and a valid `Hello`, within the hello timeout. On failure
/// the connection is closed with `AuthFailed`, `TokenExpired` or `ProtocolViolation`.
async fn accept_hello(
    connection: &SharedConnection,
    edge: &EdgeShared,
) -> Option<(FrameSink, Box<dyn StreamRecv>, Hello, Claims)> {
    let max_frame_bytes = edge.config.limits.max_frame_bytes;
    let first = async {
        let mut stream = connection.accept_bi().await?;
        let frame = codec::read_frame(&mut stream.recv, max_frame_bytes).await;
        Some((stream, frame))
    };
    let outcome = tokio::select! {
        _ = edge.shutdown.cancelled() => {
            connection.close(CloseCode::ServerShutdown, "the edge is shutting down");
            return None;
        }
        outcome = tokio::time::timeout(edge.config.hello_timeout, first) => outcome,
    };
    let (stream, frame) = match outcome {
        Err(_elapsed) => {
            debug!("no Hello within the hello timeout");
            let reason = "no Hello within the hello timeout";
            connection.close(CloseCode::AuthFailed, reason);
            return None;
        }
        Ok(None) => {
            debug!("connection ended before Hello");
            return None;
        }
        Ok(Some(parts)) => parts,
    };
    let span = debug_span!("stream", stream_id = stream.id);
    let sink = FrameSink::spawn(stream.send, CONTROL_QUEUE, span);

    let rejection = match check_hello(frame, &edge.verifier) {
        Ok(Some((hello, claims))) => return Some((sink, stream.recv, hello, claims)),
        Ok(None) => return None,
        Err(rejection) => rejection,
    };
    debug!(code = %rejection.code, reason = %rejection.message, "Hello rejected");
    let _ = sink
        .send(&Frame::Error(ErrorFrame::from_rejection(&rejection)))
        .await;
    sink.finish().await;
    connection.linger().await;
    connection.close(hello_close_code(&rejection), &rejection.message);
    None
}

fn spawn_session_tasks(
    session: &Arc<Session>,
    connection: &SharedConnection,
    deliveries: tokio::sync::mpsc::Receiver<Arc<crate::registry::EncodedDelivery>>,
    cancel: &CancellationToken,
) {
    let limits = session.edge.config.limits;
    let config = DeliveryConfig {
        max_streams: limits.max_conversation_streams as usize,
        idle_timeout: session.edge.config.delivery_idle_timeout,
        max_frame_bytes: limits.max_frame_bytes,
    };
    let delivery = run_delivery_streams(
        Arc::clone(connection),
        deliveries,
        config,
        Arc::clone(&session.cursors),
        Arc::clone(&session.edge.metrics),
        cancel.clone(),
    );
    tokio::spawn(delivery.in_current_span());

    let accept =
        accept_conversation_streams(Arc::clone(session), Arc::clone(connection), cancel.clone());
    tokio::spawn(accept.in_current_span());
}

/// Accepts client-opened conversation streams. The QUIC stream limit bounds how many are
/// open at once.
async fn accept_conversation_streams(
    session: Arc<Session>,
    connection: SharedConnection,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = connection.accept_bi() => accepted,
        };
        let Some(stream) = accepted else { return };
        let span = debug_span!("stream", stream_id = stream.id);
        let task = run_conversation_stream(stream, Arc::clone(&session));
        tokio::spawn(task.instrument(span));
    }
}

/// Runs the control stream until the connection is lost or the client breaks the
/// protocol.
async fn run_control_until_end(
    session: &Arc<Session>,
    connection: &SharedConnection,
    sink: FrameSink,
    recv: Box<dyn StreamRecv>,
) -> SessionEnd {
    let span = debug_span!("stream");
    let control = run_control(recv, sink, Arc::clone(session));
    let mut control = tokio::spawn(control.instrument(span));
    let mut control_running = true;
    loop {
        tokio::select! {
            _ = connection.closed() => return SessionEnd::Lost,
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

/// Sends the `Close` frame where the edge ends the session on purpose, finishes the
/// control stream and closes the connection.
async fn end_streams(
    session: &Session,
    connection: &SharedConnection,
    sink: &FrameSink,
    end: SessionEnd,
) {
    if matches!(end, SessionEnd::Lost) {
        debug!("connection closed");
        return;
    }
    let Some((code, frame)) = close_frame(session, &end) else {
        // A violation: the Error frame is queued, and no Close frame follows it.
        sink.finish().await;
        connection.linger().await;
        let reason = "protocol violation on the control stream";
        connection.close(CloseCode::ProtocolViolation, reason);
        return;
    };
    debug!(%code, transport = session.transport.as_str(), "closing session");
    crate::metrics::EdgeMetrics::inc(&session.metrics().sessions_closed_by_edge);
    let reason = frame.message.clone();
    if sink.send(&Frame::Close(frame)).await.is_ok() {
        sink.finish().await;
        connection.linger().await;
    }
    connection.close(code, &reason);
}
