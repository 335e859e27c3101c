//! Sends: `Send` frames in, `SendAck` or `Error` frames out.
//!
//! On QUIC and WebTransport each client-opened conversation stream carries one
//! conversation, and its first frame binds it. On a WebSocket every `Send` names its
//! conversation and [`Sends`] is fed from the socket. Sends may be pipelined, and their
//! acknowledgements may complete out of order.

use std::sync::Arc;
use std::time::Instant;

use tidings_schema::codec::{self, ReadError};
use tidings_schema::error::{CloseCode, ErrorCode, Rejection};
use tidings_schema::frame::{ErrorFrame, Frame, Send};
use tidings_schema::mesh::{OwnerReply, OwnerRequest, SendRequest};
use tokio::sync::Semaphore;
use tracing::{Instrument, Span, debug, field, trace, trace_span};

use crate::metrics::EdgeMetrics;
use crate::rate::retry_after_ms;
use crate::session::Session;
use crate::streams::{BiStream, StreamRecv};
use crate::writer::{FrameSink, WriterClosed};

/// Sends of one stream forwarded to owners at once; reading pauses above it.
const MAX_PIPELINED_SENDS: usize = 128;

/// Frames queued for the stream's writer.
const REPLY_QUEUE: usize = 256;

/// Serves one conversation stream until the client finishes it, breaks the protocol or
/// the connection ends.
pub async fn run_conversation_stream(stream: BiStream, session: Arc<Session>) {
    let BiStream { send, mut recv, .. } = stream;
    let sink = FrameSink::spawn(send, REPLY_QUEUE, Span::current());
    let sends = Sends::default();
    let mut bound: Option<u64> = None;

    loop {
        let read = codec::read_frame(&mut recv, session.max_frame_bytes()).await;
        let message = match next_send(read, &mut bound) {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(error) => return violation(&sink, &mut recv, &session, error).await,
        };
        if sends.submit(&session, &sink, message).await.is_err() {
            break;
        }
    }
}

/// Forwards the sends of one stream or socket to their owners, at most
/// `MAX_PIPELINED_SENDS` at once.
pub struct Sends {
    permits: Arc<Semaphore>,
}

impl Default for Sends {
    fn default() -> Self {
        Sends {
            permits: Arc::new(Semaphore::new(MAX_PIPELINED_SENDS)),
        }
    }
}

impl Sends {
    /// Checks `message` against the rate and size limits, then forwards it and queues
    /// the `SendAck` or `Error` on `sink`. Waits while too many sends are in flight.
    /// Fails only when the sink's writer has stopped.
    pub async fn submit(
        &self,
        session: &Arc<Session>,
        sink: &FrameSink,
        message: Send,
    ) -> Result<(), WriterClosed> {
        let conversation_id = message.conversation_id;
        if let Err(rejection) = admit(session, &message) {
            let error = reject(conversation_id, &message.client_msg_id, rejection);
            return sink.send(&Frame::Error(error)).await;
        }
        let Ok(permit) = Arc::clone(&self.permits).acquire_owned().await else {
            return Err(WriterClosed);
        };
        EdgeMetrics::inc(&session.metrics().sends);
        let span = trace_span!("send", conversation_id, seq = field::Empty);
        let work = forward_send(Arc::clone(session), sink.clone(), message);
        tokio::spawn(
            async move {
                work.await;
                drop(permit);
            }
            .instrument(span),
        );
        Ok(())
    }
}

/// Returns the next `Send` of the stream, `None` when the stream ended, or the `Error`
/// frame for a protocol violation. The first `Send` binds the stream to its conversation.
fn next_send(
    read: Result<Option<Frame>, ReadError>,
    bound: &mut Option<u64>,
) -> Result<Option<Send>, ErrorFrame> {
    let stream_conversation = bound.unwrap_or(0);
    let frame = match read {
        Ok(Some(frame)) => frame,
        Ok(None) => return Ok(None),
        Err(ReadError::Decode(error)) => {
            let rejection = Rejection::new(error.code(), error.to_string());
            return Err(reject(stream_conversation, "", rejection));
        }
        Err(ReadError::Truncated) => {
            let reason = "conversation stream ended inside a frame";
            let rejection = Rejection::new(ErrorCode::MalformedFrame, reason);
            return Err(reject(stream_conversation, "", rejection));
        }
        Err(error) => {
            debug!(%error, "conversation stream read failed");
            return Ok(None);
        }
    };

    let Frame::Send(message) = frame else {
        let kind = frame.kind();
        let reason = format!("{kind} is not allowed on a conversation stream; send Send");
        let rejection = Rejection::new(ErrorCode::UnknownFrame, reason);
        return Err(reject(stream_conversation, "", rejection));
    };
    let conversation_id = *bound.get_or_insert(message.conversation_id);
    if message.conversation_id != conversation_id {
        let reason = format!(
            "Send names conversation {} on a stream of conversation {conversation_id}",
            message.conversation_id
        );
        let rejection = Rejection::new(ErrorCode::StreamMismatch, reason);
        return Err(reject(
            message.conversation_id,
            &message.client_msg_id,
            rejection,
        ));
    }
    Ok(Some(message))
}

/// Checks the rate limit and the body size before anything is stamped or forwarded.
fn admit(session: &Session, message: &Send) -> Result<(), Rejection> {
    let rate_check = {
        let mut bucket = session
            .send_rate
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        bucket.try_take(Instant::now())
    };
    if let Err(wait) = rate_check {
        return Err(Rejection::retry(
            ErrorCode::RateLimited,
            "the connection sends faster than its configured rate",
            retry_after_ms(wait),
        ));
    }

    let max = session.edge.config.limits.max_message_bytes;
    if message.body.len() > max as usize {
        return Err(Rejection::new(
            ErrorCode::MessageTooLarge,
            format!(
                "message body of {} bytes exceeds the limit of {max} bytes",
                message.body.len()
            ),
        ));
    }
    Ok(())
}

/// Stamps the send, forwards it to the conversation's owner and queues the reply.
async fn forward_send(session: Arc<Session>, sink: FrameSink, message: Send) {
    let stamp = session.edge.stamper.stamp();
    let conversation_id = message.conversation_id;
    let client_msg_id = message.client_msg_id.clone();
    let request = OwnerRequest::Send(SendRequest {
        sender: session.user.clone(),
        device_id: session.device_id.clone(),
        conversation_id,
        client_msg_id: message.client_msg_id,
        body: message.body,
        direct_peer: message.direct_peer,
        message_id: stamp.message_id,
        hlc: stamp.hlc,
        server_time_ms: stamp.server_time_ms,
    });

    let owner = session.edge.router.for_conversation(conversation_id);
    let reply = match owner.call(request).await {
        Ok(OwnerReply::SendAck(ack)) => {
            Span::current().record("seq", ack.seq);
            trace!("send acknowledged");
            session.edge.presence.note_activity(&session.user);
            Frame::SendAck(ack)
        }
        Ok(_) => {
            let rejection = Rejection::internal("the owner answered a Send with another reply");
            Frame::Error(reject(conversation_id, &client_msg_id, rejection))
        }
        Err(rejection) => {
            trace!(code = %rejection.code, "send rejected");
            Frame::Error(reject(conversation_id, &client_msg_id, rejection))
        }
    };
    let _ = sink.send(&reply).await;
}

pub fn reject(conversation_id: u64, client_msg_id: &str, rejection: Rejection) -> ErrorFrame {
    ErrorFrame {
        conversation_id,
        client_msg_id: client_msg_id.to_owned(),
        ..ErrorFrame::from_rejection(&rejection)
    }
}

/// Sends the `Error` frame, finishes the edge's half of the stream so the frame arrives,
/// and stops the client's half with `ProtocolViolation`.
async fn violation(
    sink: &FrameSink,
    recv: &mut Box<dyn StreamRecv>,
    session: &Session,
    error: ErrorFrame,
) {
    debug!(
        conn_id = session.conn_id,
        user = %session.user,
        code = %error.code,
        reason = %error.message,
        "protocol violation on conversation stream"
    );
    recv.stop(CloseCode::ProtocolViolation);
    let _ = sink.send(&Frame::Error(error)).await;
    sink.finish().await;
}
