//! One live session: a QUIC connection after `Welcome`, its control stream and the
//! requests waiting for replies on it.
//!
//! A session never outlives its connection. When the connection ends, every waiting
//! request gets [`StreamError::Ended`] and the reconnect supervisor builds a new session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tidings_schema::Frame;
use tidings_schema::codec::{encode_framed, read_frame};
use tidings_schema::frame::{Close, Welcome};
use tokio::sync::oneshot;
use tracing::{debug, trace, warn};

use crate::deliveries::{DeliverySink, accept_deliveries};
use crate::error::StreamError;
use crate::sends::ConversationStreams;
use crate::transport::Handshaken;

pub(crate) struct Session {
    pub connection: quinn::Connection,
    pub welcome: Welcome,
    control: tokio::sync::Mutex<quinn::SendStream>,
    requests: Mutex<HashMap<u64, oneshot::Sender<Frame>>>,
    next_request_id: AtomicU64,
    pub conversations: Arc<ConversationStreams>,
    /// The last `Close` frame the server sent on the control stream, if any.
    close: Mutex<Option<Close>>,
    /// Kept so the endpoint's socket lives as long as the session.
    pub endpoint: quinn::Endpoint,
}

impl Session {
    /// Wraps a handshaken connection and starts its control reader and delivery acceptor.
    pub fn start(handshaken: Handshaken, deliveries: DeliverySink) -> Arc<Session> {
        let Handshaken {
            connection,
            control_send,
            control_recv,
            welcome,
            endpoint,
        } = handshaken;
        let session = Arc::new(Session {
            connection,
            conversations: Arc::new(ConversationStreams::new(welcome.limits)),
            welcome,
            control: tokio::sync::Mutex::new(control_send),
            requests: Mutex::new(HashMap::new()),
            next_request_id: AtomicU64::new(1),
            close: Mutex::new(None),
            endpoint,
        });

        tokio::spawn(read_control(session.clone(), control_recv));
        tokio::spawn(accept_deliveries(session.clone(), deliveries));
        session
    }

    /// Returns a `request_id` not used before on this session.
    pub fn next_request_id(&self) -> u64 {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn max_frame_bytes(&self) -> u32 {
        self.welcome.limits.max_frame_bytes
    }

    /// Reports whether the connection is still open.
    pub fn is_open(&self) -> bool {
        self.connection.close_reason().is_none()
    }

    /// Returns the `Close` frame the server sent before closing, if any.
    pub fn close_frame(&self) -> Option<Close> {
        self.close.lock().expect("close mutex poisoned").clone()
    }

    /// Sends a request on the control stream and waits for the frame that carries the
    /// same `request_id`, which may be an `Error` frame.
    ///
    /// Cancel safety: a cancelled call leaves the request registered until its reply
    /// arrives or the session ends, and the reply is then dropped.
    pub async fn request(&self, request_id: u64, frame: Frame) -> Result<Frame, StreamError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.requests
            .lock()
            .expect("request map poisoned")
            .insert(request_id, reply_tx);

        let mut bytes = Vec::new();
        encode_framed(&frame, &mut bytes);
        let written = self.control.lock().await.write_all(&bytes).await;
        if let Err(error) = written {
            self.requests
                .lock()
                .expect("request map poisoned")
                .remove(&request_id);
            return Err(error.into());
        }
        trace!(request_id, kind = frame.kind(), "request sent");

        reply_rx.await.map_err(|_| StreamError::Ended)
    }

    fn complete_request(&self, request_id: u64, frame: Frame) {
        let waiter = self
            .requests
            .lock()
            .expect("request map poisoned")
            .remove(&request_id);
        match waiter {
            // A send error only means the caller stopped waiting.
            Some(waiter) => drop(waiter.send(frame)),
            None => debug!(
                request_id,
                kind = frame.kind(),
                "reply to no pending request"
            ),
        }
    }
}

/// Returns the `request_id` of the request a control-stream frame replies to, or `None`
/// for frames that reply to no request.
fn reply_request_id(frame: &Frame) -> Option<u64> {
    match frame {
        Frame::HistoryPage(page) => Some(page.request_id),
        Frame::ConversationReply(reply) => Some(reply.request_id),
        Frame::ConversationList(list) => Some(list.request_id),
        Frame::Error(error) if error.request_id != 0 => Some(error.request_id),
        _ => None,
    }
}

/// Reads the control stream until it ends, routing replies to their requests.
async fn read_control(session: Arc<Session>, mut recv: quinn::RecvStream) {
    let max_frame_bytes = session.max_frame_bytes();
    loop {
        let frame = match read_frame(&mut recv, max_frame_bytes).await {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                debug!("server ended the control stream");
                break;
            }
            Err(error) => {
                if session.is_open() {
                    warn!(%error, "reading the control stream failed");
                }
                break;
            }
        };

        if let Some(request_id) = reply_request_id(&frame) {
            session.complete_request(request_id, frame);
            continue;
        }
        match frame {
            Frame::Close(close) => {
                debug!(
                    code = close.code,
                    retry_after_ms = close.retry_after_ms,
                    "server sent Close"
                );
                *session.close.lock().expect("close mutex poisoned") = Some(close);
            }
            Frame::Error(error) => {
                warn!(code = %error.code, message = %error.message, "server reported an error")
            }
            other => warn!(
                kind = other.kind(),
                "unexpected frame on the control stream"
            ),
        }
    }

    // NOTE: without a control stream the session cannot serve requests, so the
    // connection is closed to make the supervisor reconnect.
    if session.is_open() {
        session
            .connection
            .close(0u32.into(), b"control stream ended");
    }
    session
        .requests
        .lock()
        .expect("request map poisoned")
        .clear();
}
