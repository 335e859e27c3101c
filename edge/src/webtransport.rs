//! WebTransport sessions: a WebTransport session over HTTP/3 carries the native protocol
//! unchanged, its bidirectional streams taking the place of QUIC streams.

use std::sync::Arc;

use bytes::Bytes;
use h3::quic::{BidiStream as _, RecvStream as _, SendStream as _};
use h3_webtransport::server::{AcceptedBi, WebTransportSession};
use h3_webtransport::stream::{RecvStream, SendStream};
use quinn::VarInt;
use tidings_schema::error::CloseCode;
use tokio::sync::mpsc;
use tracing::{Instrument, debug, trace};

use crate::datagram::{DATAGRAM_QUEUE, DatagramChannel};
use crate::endpoint::EdgeShared;
use crate::http3;
use crate::streams::{BiStream, BoxFuture, StreamConnection, StreamRecv, StreamSend};
use crate::writer::FLUSH_TIMEOUT;

type Session = WebTransportSession<h3_quinn::Connection, Bytes>;
type WtSend = SendStream<h3_quinn::SendStream<Bytes>, Bytes>;
type WtRecv = RecvStream<h3_quinn::RecvStream, Bytes>;

/// One WebTransport session and the QUIC connection under it.
///
/// NOTE: h3-webtransport 0.1.2 cannot send the WebTransport session close capsule, so
/// the edge ends a session by closing the QUIC connection. Browsers then report a
/// closed transport; they learn the reason from the Tidings `Close` frame sent before it.
pub struct WebTransportConnection {
    session: Session,
    quic: quinn::Connection,
    edge: Arc<EdgeShared>,
}

impl WebTransportConnection {
    pub fn new(session: Session, quic: quinn::Connection, edge: Arc<EdgeShared>) -> Self {
        WebTransportConnection {
            session,
            quic,
            edge,
        }
    }
}

impl WebTransportConnection {
    /// Starts tasks that carry WebTransport datagrams (HTTP datagrams on the session's
    /// CONNECT stream) to and from two queues.
    fn datagram_tasks(&self) -> DatagramChannel {
        let (outgoing, mut to_send) = mpsc::channel::<Bytes>(DATAGRAM_QUEUE);
        let (received, incoming) = mpsc::channel(DATAGRAM_QUEUE);

        let mut sender = self.session.datagram_sender();
        let send = async move {
            while let Some(datagram) = to_send.recv().await {
                if let Err(error) = sender.send_datagram(datagram) {
                    debug!(%error, "WebTransport datagram not sent");
                }
            }
        };
        tokio::spawn(send.in_current_span());

        let mut reader = self.session.datagram_reader();
        let read = async move {
            loop {
                let datagram = tokio::select! {
                    _ = received.closed() => return,
                    datagram = reader.read_datagram() => datagram,
                };
                let Ok(datagram) = datagram else { return };
                if received.try_send(datagram.payload().clone()).is_err() {
                    trace!("incoming WebTransport datagram dropped; queue full");
                }
            }
        };
        tokio::spawn(read.in_current_span());
        DatagramChannel { outgoing, incoming }
    }
}

impl StreamConnection for WebTransportConnection {
    fn accept_bi(&self) -> BoxFuture<'_, Option<BiStream>> {
        Box::pin(async move {
            loop {
                match self.session.accept_bi().await {
                    Ok(Some(AcceptedBi::BidiStream(_, stream))) => {
                        let id = stream.send_id().into_inner();
                        let (send, recv) = stream.split();
                        return Some(BiStream {
                            id,
                            send: Box::new(send),
                            recv: Box::new(recv),
                        });
                    }
                    // Plain HTTP/3 requests may share the connection with the session.
                    Ok(Some(AcceptedBi::Request(request, stream))) => {
                        let edge = Arc::clone(&self.edge);
                        tokio::spawn(http3::answer(request, stream, edge));
                    }
                    Ok(None) => return None,
                    Err(error) => {
                        debug!(%error, "WebTransport session ended");
                        return None;
                    }
                }
            }
        })
    }

    fn open_bi(&self) -> BoxFuture<'_, Option<BiStream>> {
        Box::pin(async move {
            let stream = self.session.open_bi(self.session.session_id()).await.ok()?;
            let id = stream.send_id().into_inner();
            let (send, recv) = stream.split();
            Some(BiStream {
                id,
                send: Box::new(send),
                recv: Box::new(recv),
            })
        })
    }

    fn close(&self, code: CloseCode, reason: &str) {
        self.quic
            .close(VarInt::from_u32(code.as_u32()), reason.as_bytes());
    }

    fn closed(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.quic.closed().await;
        })
    }

    fn datagrams(&self) -> Option<DatagramChannel> {
        Some(self.datagram_tasks())
    }

    fn linger(&self) -> BoxFuture<'_, ()> {
        // The h3 stream types cannot report the peer's acknowledgement, so the edge gives
        // the client a moment to read the last frame and close by itself.
        Box::pin(async move {
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, self.quic.closed()).await;
        })
    }
}

impl StreamSend for WtSend {
    fn finish(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let finish = std::future::poll_fn(|cx| self.poll_finish(cx));
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, finish).await;
        })
    }
}

impl StreamRecv for WtRecv {
    fn stop(&mut self, code: CloseCode) {
        self.stop_sending(u64::from(code.as_u32()));
    }
}
