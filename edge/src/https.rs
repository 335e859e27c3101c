//! HTTPS on the TCP port: TLS (tokio-rustls) in front of the axum router.
//!
//! Off loopback a page must be a secure context to use WebTransport, and `wss` needs TLS,
//! so the edge serves HTTPS there with the same certificates as QUIC. TLS handshakes run
//! in their own tasks, so a slow or silent client never holds up the accept loop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::certs::CertStore;
use crate::tls::TlsError;

/// Maximum time a client has to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections that finished the handshake and wait for the HTTP server.
const READY_QUEUE: usize = 64;

/// ALPN protocol of the HTTPS port: HTTP/1.1 only, because the WebSocket upgrade
/// (RFC 6455) runs over HTTP/1.1.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Builds the rustls config of the HTTPS port: the certificates `certs` presents, rotated
/// leaves included.
pub fn https_config(certs: &Arc<CertStore>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let config = crate::tls::resolver_config(Arc::clone(certs) as _, &[ALPN_HTTP1])?;
    Ok(Arc::new(config))
}

/// A listener that yields TLS streams, for `axum::serve`.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` until `shutdown` is cancelled.
    pub fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
        shutdown: CancellationToken,
    ) -> io::Result<TlsListener> {
        let local_addr = tcp.local_addr()?;
        let (ready_tx, ready) = mpsc::channel(READY_QUEUE);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(accept_tls(tcp, acceptor, ready_tx, shutdown));
        Ok(TlsListener { ready, local_addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept task ends only at shutdown, which also ends the server, so no
            // further connection is needed.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

async fn accept_tls(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = tcp.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually out of file descriptors; waiting lets other connections close.
                warn!(%error, "accepting an HTTPS connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Chat frames are small and latency-bound: without this, Nagle's algorithm holds a
        // frame back until the previous one is acknowledged.
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => drop(ready.send((tls, peer)).await),
                Ok(Err(error)) => debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}
