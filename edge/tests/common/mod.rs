//! Test harness: a real edge over a real owner in a temporary directory, and a small
//! QUIC client that speaks the frame codec.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the harness"
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use quinn::crypto::rustls::QuicClientConfig;
use quinn::{Connection, ConnectionError, Endpoint, RecvStream, SendStream};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tidings_edge::{
    Edge, EdgeConfig, EdgeHandle, KeySource, TlsSource, TokenSigner, TokenVerifier,
};
use tidings_relay::{OwnerHandle, Router};
use tidings_schema::codec;
use tidings_schema::frame::{Frame, Hello, Welcome};
use tidings_store::{Owner, OwnerConfig};

pub mod web;

/// Upper bound on every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestEdge {
    pub edge: Option<EdgeHandle>,
    pub signer: TokenSigner,
    pub config: EdgeConfig,
    pub ca_cert: PathBuf,
    pub owner: Arc<Owner>,
    _dir: tempfile::TempDir,
}

impl TestEdge {
    pub fn addr(&self) -> SocketAddr {
        self.edge.as_ref().expect("edge is running").local_addr()
    }

    pub fn http_addr(&self) -> SocketAddr {
        let edge = self.edge.as_ref().expect("edge is running");
        edge.http_addr()
            .expect("the harness configures an HTTP port")
    }

    pub fn token(&self, user: &str) -> String {
        self.signer
            .sign(user, Duration::from_secs(3600))
            .expect("sign token")
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Starts an edge on 127.0.0.1:0 over a fresh owner; `adjust` edits the config first.
pub async fn start_edge(adjust: impl FnOnce(&mut EdgeConfig)) -> Result<TestEdge> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let pki_dir = dir.path().join("pki");
    let mut config = EdgeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: TlsSource::DevPki {
            dir: pki_dir.clone(),
        },
        public_edges: vec!["127.0.0.1:4433".to_owned()],
        http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..EdgeConfig::default()
    };
    adjust(&mut config);
    let ca_cert = match &config.tls {
        TlsSource::DevPki { dir } => dir.join("ca.pem"),
        TlsSource::Files { .. } => bail!("the harness trusts a development PKI only"),
    };

    let keys = KeySource::load_or_create_hs256(&dir.path().join("token.key"))?;
    let signer = TokenSigner::new(&keys)?;
    let verifier = TokenVerifier::new(&keys)?;
    let owner = Owner::open(OwnerConfig::new(dir.path().join("data")))?;
    let router = Router::single(OwnerHandle::Local(Arc::clone(&owner)));
    let edge = Edge::start(config.clone(), verifier, router).await?;
    Ok(TestEdge {
        edge: Some(edge),
        signer,
        config,
        ca_cert,
        owner,
        _dir: dir,
    })
}

/// Opens a QUIC connection that trusts the edge's development CA.
pub async fn connect(edge: &TestEdge) -> Result<Connection> {
    connect_with(edge, quinn::TransportConfig::default()).await
}

/// Opens a QUIC connection with the given client transport settings.
pub async fn connect_with(
    edge: &TestEdge,
    transport: quinn::TransportConfig,
) -> Result<Connection> {
    let ca = CertificateDer::from_pem_file(&edge.ca_cert).context("read ca.pem")?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![tidings_edge::ALPN_TIDINGS.to_vec()];
    let mut client_config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    client_config.transport_config(Arc::new(transport));

    let mut endpoint = Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    endpoint.set_default_client_config(client_config);
    let connecting = endpoint.connect(edge.addr(), "localhost")?;
    let connection = tokio::time::timeout(WAIT, connecting).await??;
    Ok(connection)
}

/// A logged-in client: its connection and control stream.
pub struct Client {
    pub connection: Connection,
    pub control_send: SendStream,
    pub control_recv: RecvStream,
    pub welcome: Welcome,
    pub max_frame_bytes: u32,
}

/// Connects, opens the control stream, sends `Hello` with `token` and returns the edge's
/// first reply frame.
pub async fn hello(
    edge: &TestEdge,
    token: &str,
    device: &str,
) -> Result<(Connection, SendStream, RecvStream, Frame)> {
    let connection = connect(edge).await?;
    hello_on(edge, connection, token, device).await
}

/// Sends `Hello` on a new control stream of `connection` and returns the first reply.
pub async fn hello_on(
    edge: &TestEdge,
    connection: Connection,
    token: &str,
    device: &str,
) -> Result<(Connection, SendStream, RecvStream, Frame)> {
    let (mut send, mut recv) = connection.open_bi().await?;
    let frame = Frame::Hello(Hello {
        token: token.to_owned(),
        device_id: device.to_owned(),
        client_version: "test".to_owned(),
    });
    write_frame(&mut send, &frame).await?;
    let reply = read_frame(&mut recv, edge.config.limits.max_frame_bytes).await?;
    Ok((connection, send, recv, reply))
}

/// Logs in as `user` on `device` and expects `Welcome`.
pub async fn login(edge: &TestEdge, user: &str, device: &str) -> Result<Client> {
    let token = edge.token(user);
    let (connection, control_send, control_recv, reply) = hello(edge, &token, device).await?;
    let Frame::Welcome(welcome) = reply else {
        bail!("expected Welcome, got {reply:?}");
    };
    Ok(Client {
        connection,
        control_send,
        control_recv,
        welcome,
        max_frame_bytes: edge.config.limits.max_frame_bytes,
    })
}

pub async fn write_frame(send: &mut SendStream, frame: &Frame) -> Result<()> {
    let mut bytes = Vec::new();
    codec::encode_framed(frame, &mut bytes);
    send.write_all(&bytes).await?;
    Ok(())
}

/// Reads one frame, failing on a clean end of stream or after [`WAIT`].
pub async fn read_frame(recv: &mut RecvStream, max_frame_bytes: u32) -> Result<Frame> {
    let read = tokio::time::timeout(WAIT, codec::read_frame(recv, max_frame_bytes))
        .await
        .context("timed out waiting for a frame")??;
    read.ok_or_else(|| anyhow!("stream ended before a frame"))
}

/// Waits for the connection to close and returns the application close code.
pub async fn close_code(connection: &Connection) -> Result<u64> {
    let error = tokio::time::timeout(WAIT, connection.closed())
        .await
        .context("timed out waiting for the connection to close")?;
    match error {
        ConnectionError::ApplicationClosed(close) => Ok(close.error_code.into_inner()),
        other => bail!("connection closed without an application code: {other}"),
    }
}

/// Accepts the next server-opened delivery stream and reads its first frame.
pub async fn accept_delivery(client: &Client) -> Result<(SendStream, RecvStream, Frame)> {
    let accepted = tokio::time::timeout(WAIT, client.connection.accept_bi())
        .await
        .context("timed out waiting for a delivery stream")?;
    let (send, mut recv) = accepted?;
    let frame = read_frame(&mut recv, client.max_frame_bytes).await?;
    Ok((send, recv, frame))
}
