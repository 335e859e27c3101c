//! One live session: a connection after `Welcome` (QUIC or WebSocket), its control
//! requests waiting for replies, and how it ends.
//!
//! A session never outlives its connection. When the connection ends, every waiting
//! request gets [`StreamError::Ended`] and the reconnect supervisor builds a new session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tidings_schema::codec::{encode_framed, read_frame};
use tidings_schema::frame::{Close, Send, SendAck, Welcome};
use tidings_schema::{CloseCode, Frame, Rejection};
use tokio::sync::oneshot;
use tracing::{debug, trace, warn};

use crate::config::Transport;
use crate::deliveries::{DeliverySink, accept_deliveries};
use crate::error::StreamError;
use crate::presence::PresenceInbox;
use crate::sends::ConversationStreams;
use crate::stats::{QuicStats, SessionStats};
use crate::transport::Handshaken;
use crate::websocket::{WsHandshaken, WsLink};

/// A connection that completed `Hello`/`Welcome` on either transport.
pub(crate) enum Connected {
    Quic(Handshaken),
    WebSocket(WsHandshaken),
}

impl Connected {
    pub fn welcome(&self) -> &Welcome {
        match self {
            Connected::Quic(handshaken) => &handshaken.welcome,
            Connected::WebSocket(handshaken) => &handshaken.welcome,
        }
    }
}

/// The transport under a session.
enum Link {
    Quic(QuicLink),
    WebSocket(WsLink),
}

struct QuicLink {
    connection: quinn::Connection,
    control: tokio::sync::Mutex<quinn::SendStream>,
    conversations: Arc<ConversationStreams>,
    /// Kept so the endpoint's socket lives as long as the session.
    endpoint: quinn::Endpoint,
}

pub(crate) struct Session {
    pub welcome: Welcome,
    link: Link,
    requests: Mutex<HashMap<u64, oneshot::Sender<Frame>>>,
    next_request_id: AtomicU64,
    /// The last `Close` frame the server sent, if any.
    close: Mutex<Option<Close>>,
    presence: Arc<PresenceInbox>,
}

impl Session {
    /// Wraps a handshaken connection and starts its readers: on QUIC the control stream
    /// reader and the delivery stream acceptor, on a WebSocket the socket reader.
    pub fn start(connected: Connected, deliveries: DeliverySink) -> Arc<Session> {
        match connected {
            Connected::Quic(handshaken) => {
                let Handshaken {
                    connection,
                    control_send,
                    control_recv,
                    welcome,
                    endpoint,
                } = handshaken;
                let link = Link::Quic(QuicLink {
                    connection: connection.clone(),
                    control: tokio::sync::Mutex::new(control_send),
                    conversations: Arc::new(ConversationStreams::new(welcome.limits)),
                    endpoint,
                });
                let session = Session::new(welcome, link, deliveries.presence.clone());
                let presence = deliveries.presence.clone();
                tokio::spawn(crate::presence::read_datagrams(
                    connection.clone(),
                    presence,
                ));
                tokio::spawn(read_control(session.clone(), control_recv));
                tokio::spawn(accept_deliveries(session.clone(), connection, deliveries));
                session
            }
            Connected::WebSocket(handshaken) => {
                let WsHandshaken {
                    socket,
                    welcome,
                    tcp_fd,
                } = handshaken;
                let (link, reader) = WsLink::new(socket, welcome.limits.max_frame_bytes, tcp_fd);
                let presence = deliveries.presence.clone();
                let session = Session::new(welcome, Link::WebSocket(link), presence);
                tokio::spawn(crate::websocket::read_socket(
                    session.clone(),
                    reader,
                    deliveries,
                ));
                session
            }
        }
    }

    fn new(welcome: Welcome, link: Link, presence: Arc<PresenceInbox>) -> Arc<Session> {
        Arc::new(Session {
            welcome,
            link,
            requests: Mutex::new(HashMap::new()),
            next_request_id: AtomicU64::new(1),
            close: Mutex::new(None),
            presence,
        })
    }

    /// Returns the QUIC connection that carries presence datagrams; `None` on a
    /// WebSocket, where presence travels as frames.
    pub fn datagram_connection(&self) -> Option<&quinn::Connection> {
        match &self.link {
            Link::Quic(link) => Some(&link.connection),
            Link::WebSocket(_) => None,
        }
    }

    /// Reads the transport statistics of this session's connection.
    pub fn stats(&self) -> SessionStats {
        match &self.link {
            Link::Quic(link) => SessionStats::Quic(QuicStats::from_connection(&link.connection)),
            Link::WebSocket(link) => SessionStats::Tcp(link.tcp_stats()),
        }
    }

    /// Returns the transport this session runs on.
    pub fn transport(&self) -> Transport {
        match self.link {
            Link::Quic(_) => Transport::Quic,
            Link::WebSocket(_) => Transport::WebSocket,
        }
    }

    /// Returns the WebSocket link, for the socket reader.
    pub fn websocket(&self) -> Option<&WsLink> {
        match &self.link {
            Link::WebSocket(link) => Some(link),
            Link::Quic(_) => None,
        }
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
        match &self.link {
            Link::Quic(link) => link.connection.close_reason().is_none(),
            Link::WebSocket(link) => link.is_open(),
        }
    }

    /// Waits until the connection ends and returns why, for logs.
    pub async fn closed(&self) -> String {
        match &self.link {
            Link::Quic(link) => link.connection.closed().await.to_string(),
            Link::WebSocket(link) => link.closed().await,
        }
    }

    /// Closes the connection with `code`. Pending requests fail with
    /// [`StreamError::Ended`].
    pub async fn close(&self, code: CloseCode, reason: &str) {
        match &self.link {
            Link::Quic(link) => link
                .connection
                .close(code.as_u32().into(), reason.as_bytes()),
            Link::WebSocket(link) => link.close(code, reason).await,
        }
    }

    /// Waits until the close of the connection was sent and, on a WebSocket, acknowledged.
    /// Not bounded: callers put a timeout around it.
    pub async fn flush_close(&self) {
        match &self.link {
            Link::Quic(link) => link.endpoint.wait_idle().await,
            Link::WebSocket(link) => link.wait_ended().await,
        }
    }

    /// Returns the `Close` frame the server sent before closing, if any.
    pub fn close_frame(&self) -> Option<Close> {
        self.close.lock().expect("close mutex poisoned").clone()
    }

    /// Returns the server's close code: the one of its `Close` frame, else the one the
    /// transport closed with.
    pub fn close_code(&self) -> Option<CloseCode> {
        if let Some(close) = self.close_frame() {
            return CloseCode::from_u32(close.code);
        }
        match &self.link {
            Link::Quic(link) => match link.connection.close_reason() {
                Some(quinn::ConnectionError::ApplicationClosed(close)) => {
                    u32::try_from(close.error_code.into_inner())
                        .ok()
                        .and_then(CloseCode::from_u32)
                }
                _ => None,
            },
            Link::WebSocket(link) => link.close_code(),
        }
    }

    /// Writes one frame on the control stream (QUIC) or the socket (WebSocket).
    pub async fn write_frame(&self, frame: &Frame) -> Result<(), StreamError> {
        match &self.link {
            Link::Quic(link) => {
                let mut bytes = Vec::new();
                encode_framed(frame, &mut bytes);
                link.control.lock().await.write_all(&bytes).await?;
                Ok(())
            }
            Link::WebSocket(link) => link.write(frame).await,
        }
    }

    /// Sends a message and waits for its `SendAck` or rejection: on QUIC on the
    /// conversation's stream, on a WebSocket on the socket.
    ///
    /// Cancel safety: a cancelled call leaves the send registered until its reply
    /// arrives or the connection ends; the server may still commit the message.
    pub async fn send(&self, send: Send) -> Result<Result<SendAck, Rejection>, StreamError> {
        match &self.link {
            Link::Quic(link) => link.conversations.send(&link.connection, send).await,
            Link::WebSocket(link) => link.send(send).await,
        }
    }

    /// Sends a request and waits for the frame that carries the same `request_id`,
    /// which may be an `Error` frame.
    ///
    /// Cancel safety: a cancelled call leaves the request registered until its reply
    /// arrives or the session ends, and the reply is then dropped.
    pub async fn request(&self, request_id: u64, frame: Frame) -> Result<Frame, StreamError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.requests
            .lock()
            .expect("request map poisoned")
            .insert(request_id, reply_tx);

        if let Err(error) = self.write_frame(&frame).await {
            self.requests
                .lock()
                .expect("request map poisoned")
                .remove(&request_id);
            return Err(error);
        }
        trace!(request_id, kind = frame.kind(), "request sent");

        reply_rx.await.map_err(|_| StreamError::Ended)
    }

    /// Handles a frame of the control channel: routes replies to their requests and
    /// records `Close`.
    pub fn handle_control(&self, frame: Frame) {
        if let Some(request_id) = reply_request_id(&frame) {
            self.complete_request(request_id, frame);
            return;
        }
        let Some(frame) = self.presence.push(frame) else {
            return;
        };
        match frame {
            Frame::Close(close) => {
                debug!(
                    code = close.code,
                    retry_after_ms = close.retry_after_ms,
                    "server sent Close"
                );
                *self.close.lock().expect("close mutex poisoned") = Some(close);
            }
            Frame::Error(error) => {
                warn!(code = %error.code, message = %error.message, "server reported an error")
            }
            other => warn!(
                kind = other.kind(),
                "unexpected frame on the control channel"
            ),
        }
    }

    /// Drops every waiting request, so its caller sees [`StreamError::Ended`].
    pub fn end_requests(&self) {
        self.requests.lock().expect("request map poisoned").clear();
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

/// Returns the `request_id` of the request a control frame replies to, or `None` for
/// frames that reply to no request.
fn reply_request_id(frame: &Frame) -> Option<u64> {
    match frame {
        Frame::HistoryPage(page) => Some(page.request_id),
        Frame::ConversationReply(reply) => Some(reply.request_id),
        Frame::ConversationList(list) => Some(list.request_id),
        Frame::ReceiptList(list) => Some(list.request_id),
        Frame::InboxPage(page) => Some(page.request_id),
        Frame::GapPage(page) => Some(page.request_id),
        Frame::PresenceUpdate(update) if update.request_id != 0 => Some(update.request_id),
        Frame::PresenceSettings(settings) => Some(settings.request_id),
        Frame::Error(error) if error.request_id != 0 => Some(error.request_id),
        _ => None,
    }
}

/// Reads the QUIC control stream until it ends, routing replies to their requests.
async fn read_control(session: Arc<Session>, mut recv: quinn::RecvStream) {
    let max_frame_bytes = session.max_frame_bytes();
    loop {
        match read_frame(&mut recv, max_frame_bytes).await {
            Ok(Some(frame)) => session.handle_control(frame),
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
        }
    }

    // NOTE: without a control stream the session cannot serve requests, so the
    // connection is closed to make the supervisor reconnect.
    if session.is_open() {
        session
            .close(CloseCode::Normal, "control stream ended")
            .await;
    }
    session.end_requests();
}
