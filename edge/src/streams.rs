//! Stream-based transports behind one interface: native QUIC connections and WebTransport
//! sessions both carry the protocol on bidirectional streams, so the session core drives
//! them through [`StreamConnection`] and never names the transport.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use quinn::VarInt;
use tidings_schema::error::CloseCode;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::datagram::DatagramChannel;
use crate::writer::FLUSH_TIMEOUT;

/// A boxed future that can move between threads.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The sending half of a stream.
pub trait StreamSend: AsyncWrite + Unpin + Send + 'static {
    /// Finishes the stream and waits, at most [`FLUSH_TIMEOUT`], until the peer has
    /// acknowledged everything written, where the transport can tell.
    fn finish(&mut self) -> BoxFuture<'_, ()>;
}

/// The receiving half of a stream.
pub trait StreamRecv: AsyncRead + Unpin + Send + 'static {
    /// Asks the peer to stop sending, with `code`.
    fn stop(&mut self, code: CloseCode);
}

/// One bidirectional stream, split into its halves.
pub struct BiStream {
    /// The QUIC stream id, for logs.
    pub id: u64,
    pub send: Box<dyn StreamSend>,
    pub recv: Box<dyn StreamRecv>,
}

/// A connection that carries the protocol on bidirectional streams.
pub trait StreamConnection: Send + Sync + 'static {
    /// Waits for the next stream the client opens; `None` once the connection is gone.
    fn accept_bi(&self) -> BoxFuture<'_, Option<BiStream>>;

    /// Opens a stream to the client; `None` once the connection is gone.
    fn open_bi(&self) -> BoxFuture<'_, Option<BiStream>>;

    /// Closes the connection with `code`. Data not yet acknowledged may be lost, so
    /// callers finish the streams that matter first.
    fn close(&self, code: CloseCode, reason: &str);

    /// Completes when the connection has closed, for any reason.
    fn closed(&self) -> BoxFuture<'_, ()>;

    /// Waits, at most [`FLUSH_TIMEOUT`], before [`StreamConnection::close`] on transports
    /// whose finished streams cannot confirm delivery, so a final frame is not cut off by
    /// the close. Returns at once where [`StreamSend::finish`] already waited.
    fn linger(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Starts the connection's datagram tasks; `None` when the transport has no
    /// datagrams. Call at most once per connection.
    fn datagrams(&self) -> Option<DatagramChannel> {
        None
    }
}

/// A shared stream connection.
pub type SharedConnection = Arc<dyn StreamConnection>;

impl StreamSend for quinn::SendStream {
    fn finish(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if quinn::SendStream::finish(self).is_ok() {
                // `stopped` completes once the peer acknowledged the finished stream.
                let _ = tokio::time::timeout(FLUSH_TIMEOUT, self.stopped()).await;
            }
        })
    }
}

impl StreamRecv for quinn::RecvStream {
    fn stop(&mut self, code: CloseCode) {
        let _ = quinn::RecvStream::stop(self, VarInt::from_u32(code.as_u32()));
    }
}

/// A native (`tidings/1`) QUIC connection.
pub struct NativeConnection(pub quinn::Connection);

impl StreamConnection for NativeConnection {
    fn accept_bi(&self) -> BoxFuture<'_, Option<BiStream>> {
        Box::pin(async move {
            let (send, recv) = self.0.accept_bi().await.ok()?;
            Some(native_stream(send, recv))
        })
    }

    fn open_bi(&self) -> BoxFuture<'_, Option<BiStream>> {
        Box::pin(async move {
            let (send, recv) = self.0.open_bi().await.ok()?;
            Some(native_stream(send, recv))
        })
    }

    fn close(&self, code: CloseCode, reason: &str) {
        self.0
            .close(VarInt::from_u32(code.as_u32()), reason.as_bytes());
    }

    fn closed(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.0.closed().await;
        })
    }

    fn datagrams(&self) -> Option<DatagramChannel> {
        Some(crate::datagram::native(self.0.clone()))
    }
}

fn native_stream(send: quinn::SendStream, recv: quinn::RecvStream) -> BiStream {
    BiStream {
        id: VarInt::from(send.id()).into_inner(),
        send: Box::new(send),
        recv: Box::new(recv),
    }
}
