//! WebSocket sessions (`/v1/ws`): the native protocol over one socket.
//!
//! Each binary message is one frame without the length prefix. Control requests, sends,
//! deliveries and acknowledgements share the socket, and every conversation frame names
//! its conversation, so the per-stream binding of QUIC does not apply. The session core
//! (`session`, `control`, `conversation`) is the same as on QUIC.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tidings_schema::codec::{self, DecodeError, ReadError};
use tidings_schema::error::{CloseCode, ErrorCode};
use tidings_schema::frame::{ErrorFrame, Frame};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::error::CapacityError;
use tracing::{Instrument, Span, debug, debug_span, trace};

use crate::control::Requests;
use crate::conversation::Sends;
use crate::delivery::record_ack;
use crate::endpoint::EdgeShared;
use crate::hello::check_hello;
use crate::metrics::{EdgeMetrics, Transport};
use crate::registry::EncodedDelivery;
use crate::session::{
    OpenSession, Session, SessionEnd, close_frame, close_session, error_frame, hello_close_code,
    open_session, watch_session,
};
use crate::writer::{FLUSH_TIMEOUT, FrameSink, Outgoing};

/// Frames queued for the socket's writer.
const SOCKET_QUEUE: usize = 1024;

/// WebSocket close code for a message over the size limit (RFC 6455, section 7.4.1).
pub const CLOSE_TOO_BIG: u16 = 1009;

/// WebSocket close code for a normal close (RFC 6455, section 7.4.1).
const CLOSE_NORMAL: u16 = 1000;

/// Maximum length of a close reason: a control frame carries at most 125 bytes, two of
/// them the code (RFC 6455, section 5.5).
const MAX_CLOSE_REASON: usize = 123;

/// Maps a Tidings close code to the WebSocket close code: `Normal` is 1000, and every
/// other code 0x1NN is 40NN, in the range RFC 6455 leaves to applications.
pub fn websocket_close_code(code: CloseCode) -> u16 {
    match code {
        CloseCode::Normal => CLOSE_NORMAL,
        other => 4000 + (other.as_u32() & 0xff) as u16,
    }
}

/// What the reader got from the socket.
enum Inbound {
    Frame(Frame),
    Malformed(DecodeError),
    TooLarge {
        size: usize,
        max: usize,
    },
    Text,
    /// The client sent a Close or the socket ended.
    Closed,
    /// Nothing arrived within the idle timeout.
    Idle,
}

struct Reader {
    socket: SplitStream<WebSocket>,
    idle_timeout: Duration,
}

impl Reader {
    /// Reads the next data message. Any inbound message, pongs included, counts as
    /// liveness and restarts the idle timer.
    async fn next(&mut self) -> Inbound {
        loop {
            let message = match tokio::time::timeout(self.idle_timeout, self.socket.next()).await {
                Err(_elapsed) => return Inbound::Idle,
                Ok(None) => return Inbound::Closed,
                Ok(Some(Err(error))) => return read_error(error),
                Ok(Some(Ok(message))) => message,
            };
            match message {
                Message::Binary(bytes) => {
                    return match codec::decode(&bytes) {
                        Ok(frame) => Inbound::Frame(frame),
                        Err(error) => Inbound::Malformed(error),
                    };
                }
                Message::Text(_) => return Inbound::Text,
                Message::Close(_) => return Inbound::Closed,
                Message::Ping(_) | Message::Pong(_) => trace!("websocket liveness"),
            }
        }
    }

    /// Reads until the client's Close or `FLUSH_TIMEOUT`, ignoring data, so the close
    /// handshake completes.
    async fn drain(&mut self) {
        let drain = async {
            while let Some(Ok(message)) = self.socket.next().await {
                if let Message::Close(_) = message {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, drain).await;
    }
}

fn read_error(error: axum::Error) -> Inbound {
    let inner = error.into_inner();
    match inner.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
        Some(tokio_tungstenite::tungstenite::Error::Capacity(CapacityError::MessageTooLong {
            size,
            max_size,
        })) => Inbound::TooLarge {
            size: *size,
            max: *max_size,
        },
        _ => {
            debug!(error = %inner, "websocket read failed");
            Inbound::Closed
        }
    }
}

/// The socket's writer: frames from the sink's queue as binary messages, pings on a
/// fixed schedule whatever else is sent, and the WebSocket Close at the end.
async fn run_writer(
    mut socket: SplitSink<WebSocket, Message>,
    mut queue: mpsc::Receiver<Outgoing>,
    mut close: oneshot::Receiver<(u16, String)>,
    ping_interval: Duration,
) {
    let mut ping = tokio::time::interval(ping_interval);
    ping.tick().await;
    let mut reading_queue = true;
    let close_frame = loop {
        tokio::select! {
            item = queue.recv(), if reading_queue => match item {
                Some(Outgoing::Frame(bytes)) => {
                    // Strip the stream length prefix: a message is one frame.
                    let body = bytes.slice(codec::LENGTH_PREFIX_BYTES.min(bytes.len())..);
                    if socket.send(Message::Binary(body)).await.is_err() {
                        return;
                    }
                }
                Some(Outgoing::Finish(done)) => {
                    // Frames queued after a finish are dropped, as on streams.
                    reading_queue = false;
                    let _ = socket.flush().await;
                    let _ = done.send(());
                }
                None => reading_queue = false,
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            close = &mut close => break close.ok(),
        }
    };
    if let Some((code, reason)) = close_frame {
        let frame = CloseFrame {
            code,
            reason: truncate(&reason, MAX_CLOSE_REASON).into(),
        };
        let _ = socket.send(Message::Close(Some(frame))).await;
    }
    // Flushes a queued Close reply when the client closed first.
    let _ = tokio::time::timeout(FLUSH_TIMEOUT, socket.close()).await;
}

fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// How the socket ends, besides the session core's reasons.
enum SocketEnd {
    Session(SessionEnd),
    TooLarge { size: usize, max: usize },
}

/// Serves one upgraded WebSocket until it closes.
pub async fn serve_websocket(socket: WebSocket, edge: Arc<EdgeShared>, conn_id: u64) {
    edge.metrics.connection(Transport::WebSocket);
    let (socket_sink, socket_stream) = socket.split();
    let (sink, queue) = FrameSink::channel(SOCKET_QUEUE);
    let (close_tx, close_rx) = oneshot::channel();
    let ping_interval = edge.config.keep_alive_interval();
    let writer = run_writer(socket_sink, queue, close_rx, ping_interval);
    let writer = tokio::spawn(writer.in_current_span());
    let mut reader = Reader {
        socket: socket_stream,
        idle_timeout: edge.config.idle_timeout,
    };

    let close = match accept_hello(&mut reader, &sink, &edge, conn_id).await {
        Ok(open) => run_session(open, &mut reader, &sink).await,
        Err(close) => close,
    };
    if let Some((code, reason)) = close {
        sink.finish().await;
        let _ = close_tx.send((code, reason));
        reader.drain().await;
    } else {
        drop(close_tx);
    }
    drop(sink);
    let _ = tokio::time::timeout(FLUSH_TIMEOUT * 2, writer).await;
}

/// Reads the first message as `Hello`. On failure returns the WebSocket close to send,
/// after queueing the `Error` frame.
async fn accept_hello(
    reader: &mut Reader,
    sink: &FrameSink,
    edge: &Arc<EdgeShared>,
    conn_id: u64,
) -> Result<(OpenSession, Arc<Session>), Option<(u16, String)>> {
    let first = tokio::select! {
        _ = edge.shutdown.cancelled() => {
            let code = websocket_close_code(CloseCode::ServerShutdown);
            return Err(Some((code, "the edge is shutting down".to_owned())));
        }
        first = tokio::time::timeout(edge.config.hello_timeout, reader.next()) => first,
    };
    let frame = match first {
        Err(_elapsed) => {
            let code = websocket_close_code(CloseCode::AuthFailed);
            return Err(Some((code, "no Hello within the hello timeout".to_owned())));
        }
        Ok(Inbound::Frame(frame)) => Ok(Some(frame)),
        Ok(Inbound::Malformed(error)) => Err(ReadError::Decode(error)),
        Ok(Inbound::TooLarge { size, max }) => return Err(Some(too_large(size, max))),
        Ok(Inbound::Text) => Err(ReadError::Decode(DecodeError::Malformed(
            "text message; frames are binary messages".to_owned(),
        ))),
        Ok(Inbound::Closed | Inbound::Idle) => return Err(None),
    };
    let rejection = match check_hello(frame, &edge.verifier) {
        Ok(Some((hello, claims))) => {
            Span::current().record("user", claims.sub.as_str());
            let open = open_session(edge, conn_id, Transport::WebSocket, &hello, &claims);
            let session = Arc::clone(&open.session);
            return Ok((open, session));
        }
        Ok(None) => return Err(None),
        Err(rejection) => rejection,
    };
    debug!(code = %rejection.code, reason = %rejection.message, "Hello rejected");
    let _ = sink
        .send(&Frame::Error(ErrorFrame::from_rejection(&rejection)))
        .await;
    let code = websocket_close_code(hello_close_code(&rejection));
    Err(Some((code, rejection.message)))
}

/// Runs an authenticated session until it ends and returns the WebSocket close to send.
async fn run_session(
    (open, session): (OpenSession, Arc<Session>),
    reader: &mut Reader,
    sink: &FrameSink,
) -> Option<(u16, String)> {
    let OpenSession {
        welcome,
        deliveries,
        end_signal,
        expires,
        ..
    } = open;
    if sink.send(&Frame::Welcome(welcome)).await.is_err() {
        close_session(&session);
        return None;
    }
    let no_datagrams = None;
    let presence_reader = tokio_util::sync::CancellationToken::new();
    crate::presence_session::start(&session, no_datagrams, sink, &presence_reader);
    let span = debug_span!("deliveries");
    let delivery = forward_deliveries(deliveries, sink.clone(), Arc::clone(&session.edge));
    let delivery = tokio::spawn(delivery.instrument(span));

    let mut socket_end = None;
    let transport = async {
        let end = read_frames(&session, reader, sink).await;
        match end {
            SocketEnd::Session(end) => end,
            other => {
                socket_end = Some(other);
                SessionEnd::Violation
            }
        }
    };
    let end = watch_session(&session, expires, &end_signal, transport).await;
    close_session(&session);
    delivery.abort();

    if let Some(SocketEnd::TooLarge { size, max }) = socket_end {
        return Some(too_large(size, max));
    }
    match end {
        SessionEnd::Lost => None,
        SessionEnd::Violation => {
            let code = websocket_close_code(CloseCode::ProtocolViolation);
            Some((code, "protocol violation; see the Error frame".to_owned()))
        }
        end => {
            let (code, frame) = close_frame(&session, &end)?;
            debug!(%code, transport = "websocket", "closing session");
            EdgeMetrics::inc(&session.metrics().sessions_closed_by_edge);
            let reason = frame.message.clone();
            let _ = sink.send(&Frame::Close(frame)).await;
            Some((websocket_close_code(code), reason))
        }
    }
}

/// Reads frames and feeds them to the session core until the socket ends or the client
/// breaks the protocol.
async fn read_frames(session: &Arc<Session>, reader: &mut Reader, sink: &FrameSink) -> SocketEnd {
    let requests = Requests::default();
    let sends = Sends::default();
    loop {
        let frame = match reader.next().await {
            Inbound::Frame(frame) => frame,
            Inbound::Malformed(error) => {
                return violation(sink, error.code(), error.to_string()).await;
            }
            Inbound::Text => {
                let reason = "text message received; send frames as binary messages";
                return violation(sink, ErrorCode::MalformedFrame, reason).await;
            }
            Inbound::TooLarge { size, max } => return SocketEnd::TooLarge { size, max },
            Inbound::Closed => return SocketEnd::Session(SessionEnd::Lost),
            Inbound::Idle => {
                debug!("websocket idle; closing");
                return SocketEnd::Session(SessionEnd::Lost);
            }
        };
        trace!(kind = frame.kind(), "websocket frame");
        match frame {
            Frame::Send(message) => {
                if sends.submit(session, sink, message).await.is_err() {
                    return SocketEnd::Session(SessionEnd::Lost);
                }
            }
            Frame::DeliveryAck(ack) => record_ack(&session.cursors, ack.conversation_id, ack.seq),
            other => {
                let kind = other.kind();
                let Some(other) = crate::presence_session::handle_frame(session, sink, other).await
                else {
                    continue;
                };
                if requests.submit(session, sink, other).await.is_err() {
                    let reason = format!("{kind} is not allowed after Welcome");
                    return violation(sink, ErrorCode::UnknownFrame, reason).await;
                }
            }
        }
    }
}

async fn violation(sink: &FrameSink, code: ErrorCode, reason: impl Into<String>) -> SocketEnd {
    let reason = reason.into();
    debug!(%code, %reason, "protocol violation on websocket");
    let _ = sink.send(&Frame::Error(error_frame(code, reason))).await;
    SocketEnd::Session(SessionEnd::Violation)
}

fn too_large(size: usize, max: usize) -> (u16, String) {
    debug!(size, max, "websocket message over the limit");
    let reason = format!("message of {size} bytes exceeds the limit of {max} bytes");
    (CLOSE_TOO_BIG, reason)
}

/// Writes the session's deliveries to the socket in the order the owners sent them.
async fn forward_deliveries(
    mut deliveries: mpsc::Receiver<Arc<EncodedDelivery>>,
    sink: FrameSink,
    edge: Arc<EdgeShared>,
) {
    while let Some(delivery) = deliveries.recv().await {
        trace!(
            conversation_id = delivery.conversation_id,
            seq = delivery.seq,
            "deliver"
        );
        if sink.send_encoded(delivery.frame.clone()).await.is_err() {
            return;
        }
        EdgeMetrics::inc(&edge.metrics.session_deliveries);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_map_into_the_application_range() {
        assert_eq!(websocket_close_code(CloseCode::Normal), 1000);
        assert_eq!(websocket_close_code(CloseCode::ProtocolViolation), 4001);
        assert_eq!(websocket_close_code(CloseCode::ServerShutdown), 4004);
        assert_eq!(websocket_close_code(CloseCode::InternalError), 4007);
    }

    #[test]
    fn close_reason_is_cut_at_a_char_boundary() {
        let reason = "é".repeat(100);
        let cut = truncate(&reason, MAX_CLOSE_REASON);
        assert!(cut.len() <= MAX_CLOSE_REASON);
        assert!(reason.starts_with(cut));
    }
}
