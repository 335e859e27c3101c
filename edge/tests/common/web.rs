//! Browser-transport clients for the tests: a WebSocket client (tokio-tungstenite), a
//! WebTransport client (the `wtransport` crate, which pins certificates by hash like a
//! browser) and a plain HTTP/3 GET (h3 over quinn).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::{Buf, Bytes};
use futures::{SinkExt, StreamExt};
use quinn::crypto::rustls::QuicClientConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tidings_schema::codec;
use tidings_schema::frame::{Frame, Hello, Welcome};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{TestEdge, WAIT};

/// A WebSocket client speaking the frame codec, one frame per binary message.
pub struct WsClient {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// Opens `/v1/ws` with the given `origin` header, or none.
pub async fn ws_connect(edge: &TestEdge, origin: Option<&str>) -> Result<WsClient> {
    let url = format!("ws://{}{}", edge.http_addr(), tidings_edge::WEBSOCKET_PATH);
    let mut request = url.into_client_request()?;
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", origin.parse()?);
    }
    let (socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .context("timed out opening the websocket")??;
    Ok(WsClient { socket })
}

/// Logs in over WebSocket and expects `Welcome`.
pub async fn ws_login(edge: &TestEdge, user: &str, device: &str) -> Result<(WsClient, Welcome)> {
    let mut client = ws_connect(edge, None).await?;
    client.send(&hello(edge, user, device)).await?;
    match client.recv().await? {
        Frame::Welcome(welcome) => Ok((client, welcome)),
        other => bail!("expected Welcome, got {other:?}"),
    }
}

impl WsClient {
    pub async fn send(&mut self, frame: &Frame) -> Result<()> {
        let bytes = Bytes::from(codec::encode(frame));
        self.socket.send(Message::Binary(bytes)).await?;
        Ok(())
    }

    /// Returns the next frame, skipping pings; fails on a close or after [`WAIT`].
    pub async fn recv(&mut self) -> Result<Frame> {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .context("timed out waiting for a websocket frame")?
                .ok_or_else(|| anyhow!("websocket ended"))??;
            match message {
                Message::Binary(bytes) => return Ok(codec::decode(&bytes)?),
                Message::Close(close) => bail!("websocket closed: {close:?}"),
                _ => {}
            }
        }
    }

    /// Waits for the WebSocket Close and returns its code and reason, skipping frames.
    pub async fn close_code(&mut self) -> Result<(u16, String)> {
        loop {
            let message = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .context("timed out waiting for the websocket close")?
                .ok_or_else(|| anyhow!("websocket ended without a close frame"))??;
            if let Message::Close(close) = message {
                let close = close.ok_or_else(|| anyhow!("close frame without a code"))?;
                return Ok((close.code.into(), close.reason.to_string()));
            }
        }
    }
}

pub fn hello(edge: &TestEdge, user: &str, device: &str) -> Frame {
    Frame::Hello(Hello {
        token: edge.token(user),
        device_id: device.to_owned(),
        client_version: "test".to_owned(),
    })
}

/// A WebTransport session with its control stream.
pub struct WtClient {
    pub connection: wtransport::Connection,
    pub control_send: wtransport::SendStream,
    pub control_recv: wtransport::RecvStream,
    pub welcome: Welcome,
    _endpoint: wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>,
}

/// Returns the SHA-256 hashes the edge publishes for `serverCertificateHashes`.
pub fn published_hashes(edge: &TestEdge) -> Vec<[u8; 32]> {
    let hashes = edge.edge.as_ref().expect("edge is running").certificates();
    let hashes = hashes.published_hashes().hashes;
    let decode = |hash: String| {
        let bytes = hex::decode(hash).expect("hashes are hex");
        <[u8; 32]>::try_from(bytes).expect("hashes are 32 bytes")
    };
    hashes.into_iter().map(decode).collect()
}

/// Opens a WebTransport session at `/v1/wt`, trusting only `hashes`, like a browser page
/// with `serverCertificateHashes`.
pub async fn wt_connect(
    edge: &TestEdge,
    hashes: Vec<[u8; 32]>,
    origin: Option<&str>,
) -> Result<(
    wtransport::Connection,
    wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>,
)> {
    let digests = hashes.into_iter().map(wtransport::tls::Sha256Digest::new);
    let config = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes(digests)
        .build();
    let endpoint = wtransport::Endpoint::client(config)?;
    let url = format!(
        "https://127.0.0.1:{}{}",
        edge.addr().port(),
        tidings_edge::WEBTRANSPORT_PATH
    );
    let mut options = wtransport::endpoint::ConnectOptions::builder(url);
    if let Some(origin) = origin {
        options = options.add_header("origin", origin);
    }
    let connection = tokio::time::timeout(WAIT, endpoint.connect(options.build()))
        .await
        .context("timed out opening the WebTransport session")??;
    Ok((connection, endpoint))
}

/// Logs in over WebTransport and expects `Welcome`.
pub async fn wt_login(edge: &TestEdge, user: &str, device: &str) -> Result<WtClient> {
    let (connection, endpoint) = wt_connect(edge, published_hashes(edge), None).await?;
    let (mut control_send, mut control_recv) = connection.open_bi().await?.await?;
    wt_write(&mut control_send, &hello(edge, user, device)).await?;
    let reply = wt_read(&mut control_recv, edge.config.limits.max_frame_bytes).await?;
    let Frame::Welcome(welcome) = reply else {
        bail!("expected Welcome, got {reply:?}");
    };
    Ok(WtClient {
        connection,
        control_send,
        control_recv,
        welcome,
        _endpoint: endpoint,
    })
}

pub async fn wt_write(send: &mut wtransport::SendStream, frame: &Frame) -> Result<()> {
    let mut bytes = Vec::new();
    codec::encode_framed(frame, &mut bytes);
    send.write_all(&bytes).await?;
    Ok(())
}

pub async fn wt_read(recv: &mut wtransport::RecvStream, max_frame_bytes: u32) -> Result<Frame> {
    let read = tokio::time::timeout(WAIT, codec::read_frame(recv, max_frame_bytes))
        .await
        .context("timed out waiting for a WebTransport frame")??;
    read.ok_or_else(|| anyhow!("stream ended before a frame"))
}

/// Sends one HTTP/3 GET to the edge's QUIC port, trusting the development CA, and
/// returns the status and body.
pub async fn h3_get(edge: &TestEdge, path: &str) -> Result<(u16, Bytes)> {
    let ca = CertificateDer::from_pem_file(&edge.ca_cert).context("read ca.pem")?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![tidings_edge::ALPN_H3.to_vec()];
    let client_config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    let mut endpoint = quinn::Endpoint::client(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
    endpoint.set_default_client_config(client_config);
    let connection = endpoint.connect(edge.addr(), "localhost")?;
    let connection = tokio::time::timeout(WAIT, connection).await??;

    let (mut driver, mut send_request) =
        h3::client::new(h3_quinn::Connection::new(connection)).await?;
    let drive = tokio::spawn(async move { driver.wait_idle().await });
    let request = http::Request::get(format!("https://localhost{path}")).body(())?;
    let fetch = async {
        let mut stream = send_request.send_request(request).await?;
        stream.finish().await?;
        let response = stream.recv_response().await?;
        let mut body = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await? {
            while chunk.has_remaining() {
                let part = chunk.chunk();
                body.extend_from_slice(part);
                let len = part.len();
                chunk.advance(len);
            }
        }
        Ok::<_, anyhow::Error>((response.status().as_u16(), Bytes::from(body)))
    };
    let result = tokio::time::timeout(WAIT, fetch)
        .await
        .context("timed out waiting for the HTTP/3 response")?;
    drive.abort();
    endpoint.close(0u32.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    result
}
