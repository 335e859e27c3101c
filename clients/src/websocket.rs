//! The WebSocket fallback: the native protocol over one socket on the edge's HTTP port.
//!
//! Each binary message carries one frame without the stream length prefix. Control
//! requests, sends, deliveries and acknowledgements share the socket, and every
//! conversation frame names its conversation, so no per-stream routing is needed. `wss`
//! URLs use TLS with the same trust roots and server name as QUIC.

use std::collections::HashMap;
use std::os::fd::{AsRawFd as _, RawFd};
use std::sync::{Arc, Mutex};

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tidings_schema::codec;
use tidings_schema::frame::{Hello, Message as ChatMessage, Send, SendAck, Welcome};
use tidings_schema::{CloseCode, ErrorCode, Frame, Rejection};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{debug, trace, warn};

use crate::config::ClientConfig;
use crate::deliveries::DeliverySink;
use crate::error::{ConnectError, StreamError};
use crate::session::Session;
use crate::stats::TcpStats;
use crate::transport::{load_roots, open_key_log};

/// WebSocket close code of a normal close (RFC 6455, section 7.4.1).
const CLOSE_NORMAL: u16 = 1000;

/// WebSocket close code the edge sends for a message over its size limit (RFC 6455,
/// section 7.4.1).
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Close code recorded when the socket ended without a Close frame (RFC 6455, section
/// 7.1.5); it is never sent.
const CLOSE_ABNORMAL: u16 = 1006;

/// First WebSocket close code the edge uses for Tidings close codes: `0x1NN` is sent as
/// `40NN`.
const TIDINGS_CLOSE_BASE: u16 = 4000;

/// A byte stream a WebSocket can run on: plain TCP or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + std::marker::Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + std::marker::Send + Unpin> Io for T {}

type Socket = WebSocketStream<Box<dyn Io>>;

type AckWaiter = oneshot::Sender<Result<SendAck, Rejection>>;

/// A WebSocket that completed `Hello`/`Welcome`.
pub(crate) struct WsHandshaken {
    pub socket: Socket,
    pub welcome: Welcome,
    /// Descriptor of the TCP socket under `socket`, for `TCP_INFO`.
    pub tcp_fd: RawFd,
}

/// Opens the WebSocket at `url`, sends `Hello` and waits for `Welcome`.
///
/// Cancel safety: cancelling drops the socket, which the server treats as a lost
/// connection.
pub(crate) async fn handshake_websocket(
    config: &ClientConfig,
    url: &str,
) -> Result<WsHandshaken, ConnectError> {
    let failed = |reason: String| ConnectError::WebSocket {
        url: url.to_owned(),
        reason,
    };
    let target = WsTarget::parse(url)?;
    let key_log = if target.tls {
        open_key_log(config)?
    } else {
        None
    };
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|error| failed(format!("TCP connect failed: {error}")))?;
    // Frames are small and latency matters more than packet count.
    tcp.set_nodelay(true)
        .map_err(|error| failed(format!("setting TCP_NODELAY failed: {error}")))?;
    let tcp_fd = tcp.as_raw_fd();
    let stream: Box<dyn Io> = if target.tls {
        Box::new(tls_connect(config, key_log, tcp).await.map_err(failed)?)
    } else {
        Box::new(tcp)
    };

    let request = url
        .into_client_request()
        .map_err(|error| failed(error.to_string()))?;
    let (mut socket, _response) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(|error| failed(format!("upgrade failed: {error}")))?;
    debug!(url, "WebSocket connected");

    let hello = Frame::Hello(Hello {
        token: config.token.clone(),
        device_id: config.device_id.clone(),
        client_version: config.client_version.clone(),
    });
    socket
        .send(Message::binary(codec::encode(&hello)))
        .await
        .map_err(|error| failed(format!("sending Hello failed: {error}")))?;

    let welcome = read_welcome(&mut socket, url).await?;
    Ok(WsHandshaken {
        socket,
        welcome,
        tcp_fd,
    })
}

/// Reads the reply to `Hello`, skipping pings.
async fn read_welcome(socket: &mut Socket, url: &str) -> Result<Welcome, ConnectError> {
    let protocol = |reason: String| ConnectError::Protocol {
        server: url.to_owned(),
        reason,
    };
    loop {
        let message = match socket.next().await {
            Some(Ok(message)) => message,
            Some(Err(error)) => return Err(protocol(format!("reading Welcome failed: {error}"))),
            None => return Err(protocol("the socket ended before Welcome".to_owned())),
        };
        let frame = match message {
            Message::Binary(bytes) => codec::decode(&bytes)
                .map_err(|error| protocol(format!("invalid reply to Hello: {error}")))?,
            Message::Close(close) => {
                let (code, reason) = close_parts(close.as_ref());
                return Err(ConnectError::Closed {
                    code: tidings_close_code(code).unwrap_or(CloseCode::InternalError),
                    reason,
                });
            }
            Message::Text(_) => return Err(protocol("text message instead of Welcome".into())),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        return match frame {
            Frame::Welcome(welcome) => Ok(welcome),
            Frame::Error(error) => Err(ConnectError::Rejected(error.rejection())),
            Frame::Close(close) => Err(ConnectError::Closed {
                code: CloseCode::from_u32(close.code).unwrap_or(CloseCode::InternalError),
                reason: close.message,
            }),
            other => Err(protocol(format!(
                "expected Welcome, received {}",
                other.kind()
            ))),
        };
    }
}

/// Host, port and scheme of a `ws://` or `wss://` URL.
struct WsTarget {
    host: String,
    port: u16,
    tls: bool,
}

impl WsTarget {
    fn parse(url: &str) -> Result<WsTarget, ConnectError> {
        let invalid = |reason: &str| ConnectError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: tungstenite::http::Uri = url.parse().map_err(|_| invalid("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(invalid("the scheme must be ws or wss")),
        };
        let host = uri.host().ok_or_else(|| invalid("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(WsTarget { host, port, tls })
    }
}

/// Runs TLS over `tcp` with the configured trust roots, checking `config.server_name`.
async fn tls_connect(
    config: &ClientConfig,
    key_log: Option<Arc<dyn rustls::KeyLog>>,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let roots = load_roots(&config.trust).map_err(|error| error.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS configuration failed: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    if let Some(key_log) = key_log {
        tls.key_log = key_log;
    }

    let name = ServerName::try_from(config.server_name.clone())
        .map_err(|error| format!("invalid server name {:?}: {error}", config.server_name))?;
    tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .map_err(|error| format!("TLS handshake failed: {error}"))
}

/// Maps a WebSocket close code from the edge back to the Tidings close code.
fn tidings_close_code(code: u16) -> Option<CloseCode> {
    match code {
        CLOSE_NORMAL => Some(CloseCode::Normal),
        code if (TIDINGS_CLOSE_BASE..TIDINGS_CLOSE_BASE + 0x100).contains(&code) => {
            CloseCode::from_u32(0x100 + u32::from(code - TIDINGS_CLOSE_BASE))
        }
        _ => None,
    }
}

fn close_parts(close: Option<&CloseFrame>) -> (u16, String) {
    match close {
        Some(frame) => (u16::from(frame.code), frame.reason.to_string()),
        // A Close without a status code (RFC 6455, section 7.1.5).
        None => (1005, String::new()),
    }
}

/// The close code and reason a socket ended with.
#[derive(Debug, Clone)]
struct SocketClose {
    code: u16,
    reason: String,
}

/// A send written on the socket and waiting for its reply.
struct PendingSend {
    waiter: AckWaiter,
    frame_bytes: usize,
}

/// The WebSocket under a session: the write half, the sends waiting for replies and
/// the close state. The socket reader owns the read half.
pub(crate) struct WsLink {
    writer: tokio::sync::Mutex<SplitSink<Socket, Message>>,
    pending: Mutex<HashMap<String, PendingSend>>,
    /// The first close seen: sent by this client or received from the server.
    close: Mutex<Option<SocketClose>>,
    /// Becomes true when the reader stopped, so the socket is done.
    ended: watch::Sender<bool>,
    max_frame_bytes: u32,
    /// NOTE: valid while this link exists, because the write half keeps the socket open.
    tcp_fd: RawFd,
}

impl WsLink {
    pub fn new(
        socket: Socket,
        max_frame_bytes: u32,
        tcp_fd: RawFd,
    ) -> (WsLink, SplitStream<Socket>) {
        let (writer, reader) = socket.split();
        let link = WsLink {
            writer: tokio::sync::Mutex::new(writer),
            pending: Mutex::new(HashMap::new()),
            close: Mutex::new(None),
            ended: watch::Sender::new(false),
            max_frame_bytes,
            tcp_fd,
        };
        (link, reader)
    }

    /// Reads the kernel's counters of the TCP connection under this WebSocket.
    pub fn tcp_stats(&self) -> Option<TcpStats> {
        crate::tcp_info::read(self.tcp_fd)
    }

    pub fn is_open(&self) -> bool {
        self.close.lock().expect("close mutex poisoned").is_none() && !*self.ended.borrow()
    }

    /// Waits until the reader stopped and returns the close, for logs.
    pub async fn closed(&self) -> String {
        self.wait_ended().await;
        match &*self.close.lock().expect("close mutex poisoned") {
            Some(close) => format!("WebSocket closed with {}: {}", close.code, close.reason),
            None => "WebSocket ended".to_owned(),
        }
    }

    pub async fn wait_ended(&self) {
        let mut ended = self.ended.subscribe();
        // An error means the link is gone, which also ends the wait.
        drop(ended.wait_for(|ended| *ended).await);
    }

    /// Returns the Tidings close code of the server's WebSocket close, if it sent one.
    pub fn close_code(&self) -> Option<CloseCode> {
        let close = self.close.lock().expect("close mutex poisoned");
        tidings_close_code(close.as_ref()?.code)
    }

    /// Sends a WebSocket Close with the edge's mapping of `code`; the reader stops when
    /// the server replies to it.
    pub async fn close(&self, code: CloseCode, reason: &str) {
        let ws_code = match code {
            CloseCode::Normal => CLOSE_NORMAL,
            other => TIDINGS_CLOSE_BASE + (other.as_u32() & 0xff) as u16,
        };
        self.record_close(ws_code, reason.to_owned());
        let frame = CloseFrame {
            code: ws_code.into(),
            reason: reason.into(),
        };
        // A failure means the socket is already gone, which is what closing wants.
        drop(
            self.writer
                .lock()
                .await
                .send(Message::Close(Some(frame)))
                .await,
        );
    }

    fn record_close(&self, code: u16, reason: String) {
        let mut close = self.close.lock().expect("close mutex poisoned");
        if close.is_none() {
            *close = Some(SocketClose { code, reason });
        }
    }

    /// Writes one frame as one binary message.
    pub async fn write(&self, frame: &Frame) -> Result<(), StreamError> {
        let bytes = codec::encode(frame);
        self.write_bytes(bytes).await
    }

    async fn write_bytes(&self, bytes: Vec<u8>) -> Result<(), StreamError> {
        let mut writer = self.writer.lock().await;
        writer
            .send(Message::binary(bytes))
            .await
            .map_err(|error| StreamError::Socket(error.to_string()))
    }

    /// Writes `send` and waits for its `SendAck` or `Error`.
    pub async fn send(&self, send: Send) -> Result<Result<SendAck, Rejection>, StreamError> {
        let client_msg_id = send.client_msg_id.clone();
        let conversation_id = send.conversation_id;
        let bytes = codec::encode(&Frame::Send(send));
        let (ack_tx, ack_rx) = oneshot::channel();
        let pending = PendingSend {
            waiter: ack_tx,
            frame_bytes: bytes.len(),
        };
        self.pending
            .lock()
            .expect("pending map poisoned")
            .insert(client_msg_id.clone(), pending);

        if let Err(error) = self.write_bytes(bytes).await {
            self.take_waiter(&client_msg_id);
            return Err(error);
        }
        trace!(conversation_id, client_msg_id, "send written");
        ack_rx.await.map_err(|_| StreamError::Ended)
    }

    fn take_waiter(&self, client_msg_id: &str) -> Option<AckWaiter> {
        let mut pending = self.pending.lock().expect("pending map poisoned");
        pending.remove(client_msg_id).map(|send| send.waiter)
    }

    /// Fails the sends still waiting when the socket ended.
    ///
    /// After a 1009 close the sends whose frame exceeds the announced frame limit (or, if
    /// none does, the largest one) are rejected with `MessageTooLarge`, so they are not
    /// retried. Every other send gets [`StreamError::Ended`] and is retried with its key.
    fn fail_pending(&self, close: Option<&SocketClose>) {
        let pending: Vec<(String, PendingSend)> = self
            .pending
            .lock()
            .expect("pending map poisoned")
            .drain()
            .collect();
        let Some(close) = close.filter(|close| close.code == CLOSE_TOO_BIG) else {
            return;
        };

        let limit = self.max_frame_bytes as usize;
        let largest = pending.iter().map(|(_, send)| send.frame_bytes).max();
        let any_over = pending.iter().any(|(_, send)| send.frame_bytes > limit);
        for (client_msg_id, send) in pending {
            let too_large = if any_over {
                send.frame_bytes > limit
            } else {
                Some(send.frame_bytes) == largest
            };
            if too_large {
                debug!(
                    client_msg_id,
                    size = send.frame_bytes,
                    "send rejected as too large"
                );
                let message = format!(
                    "the server closed the WebSocket with 1009 for a frame of {} bytes: {}",
                    send.frame_bytes, close.reason
                );
                let rejection = Rejection::new(ErrorCode::MessageTooLarge, message);
                drop(send.waiter.send(Err(rejection)));
            }
        }
    }
}

/// Reads the socket until it ends: replies go to their requests and sends, deliveries
/// to the delivery task, `Close` frames to the session.
pub(crate) async fn read_socket(
    session: Arc<Session>,
    mut reader: SplitStream<Socket>,
    sink: DeliverySink,
) {
    let link = session
        .websocket()
        .expect("read_socket runs on WebSocket sessions");
    // NOTE: unbounded, because a gap fill in the delivery task waits for a history reply
    // that only this reader can pass on. A bounded queue could block the reader on a full
    // queue while the delivery task waits for the reader.
    let (delivery_tx, delivery_rx) = mpsc::unbounded_channel();
    tokio::spawn(acknowledge_deliveries(
        session.clone(),
        sink.clone(),
        delivery_rx,
    ));

    let close = loop {
        let message = match reader.next().await {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                debug!(%error, "WebSocket read failed");
                break None;
            }
            None => break None,
        };
        match message {
            Message::Binary(bytes) => match codec::decode(&bytes) {
                Ok(Frame::ReceiptUpdate(update)) => sink.receipt(update),
                Ok(frame) => route_frame(&session, link, frame, &delivery_tx),
                Err(error) => {
                    warn!(%error, "malformed frame on the WebSocket; closing");
                    session
                        .close(CloseCode::ProtocolViolation, "malformed frame")
                        .await;
                }
            },
            Message::Close(close) => {
                let (code, reason) = close_parts(close.as_ref());
                debug!(code, %reason, "server closed the WebSocket");
                break Some(SocketClose { code, reason });
            }
            Message::Text(_) => warn!("text message on the WebSocket ignored"),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    };

    let close = close.unwrap_or(SocketClose {
        code: CLOSE_ABNORMAL,
        reason: "the connection ended without a close handshake".to_owned(),
    });
    link.record_close(close.code, close.reason.clone());
    // Lets tungstenite send its reply to the server's Close; the server closes the TCP
    // connection after it, so this read ends promptly.
    drop(tokio::time::timeout(std::time::Duration::from_secs(1), reader.next()).await);
    let recorded = link.close.lock().expect("close mutex poisoned").clone();
    link.fail_pending(recorded.as_ref());
    session.end_requests();
    link.ended.send_replace(true);
}

fn route_frame(
    session: &Session,
    link: &WsLink,
    frame: Frame,
    deliveries: &mpsc::UnboundedSender<ChatMessage>,
) {
    match frame {
        Frame::SendAck(ack) => {
            if let Some(waiter) = link.take_waiter(&ack.client_msg_id) {
                drop(waiter.send(Ok(ack)));
            }
        }
        Frame::Error(error) if !error.client_msg_id.is_empty() => {
            if let Some(waiter) = link.take_waiter(&error.client_msg_id) {
                drop(waiter.send(Err(error.rejection())));
            }
        }
        Frame::Deliver(deliver) => {
            // An error means the delivery task stopped, which happens only at the end.
            drop(deliveries.send(deliver.message));
        }
        other => session.handle_control(other),
    }
}

/// Passes deliveries to the application in arrival order and acknowledges each one,
/// duplicates included, so the server can advance its cursor.
async fn acknowledge_deliveries(
    session: Arc<Session>,
    sink: DeliverySink,
    mut deliveries: mpsc::UnboundedReceiver<ChatMessage>,
) {
    while let Some(message) = deliveries.recv().await {
        let ack = tidings_schema::frame::DeliveryAck {
            conversation_id: message.conversation_id,
            seq: message.seq,
        };
        trace!(
            conversation_id = ack.conversation_id,
            seq = ack.seq,
            "delivery received"
        );
        sink.deliver(&session, message).await;
        if let Err(error) = session.write_frame(&Frame::DeliveryAck(ack)).await {
            debug!(%error, "writing DeliveryAck failed");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_map_back_to_tidings_codes() {
        assert_eq!(tidings_close_code(1000), Some(CloseCode::Normal));
        assert_eq!(tidings_close_code(4002), Some(CloseCode::AuthFailed));
        assert_eq!(tidings_close_code(4004), Some(CloseCode::ServerShutdown));
        assert_eq!(tidings_close_code(1009), None);
        assert_eq!(tidings_close_code(4999), None);
    }

    #[test]
    fn urls_parse_into_targets() {
        let target = WsTarget::parse("ws://127.0.0.1:8080/v1/ws").expect("valid URL");
        assert_eq!(
            (target.host.as_str(), target.port, target.tls),
            ("127.0.0.1", 8080, false)
        );
        let target = WsTarget::parse("wss://[::1]/v1/ws").expect("valid URL");
        assert_eq!(
            (target.host.as_str(), target.port, target.tls),
            ("::1", 443, true)
        );
        assert!(WsTarget::parse("http://127.0.0.1/v1/ws").is_err());
        assert!(WsTarget::parse("not a url").is_err());
    }
}
