//! QUIC transport: TLS trust, the endpoint, and the `Hello`/`Welcome` handshake that turns
//! a QUIC connection into a session.

use std::io::BufReader;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use tidings_schema::codec::{encode_framed, read_frame};
use tidings_schema::frame::{Hello, Limits, Welcome};
use tidings_schema::{CloseCode, Frame};
use tracing::debug;

use crate::config::{ClientConfig, TrustRoots};
use crate::error::ConnectError;
use crate::keylog::KeyLogPath;

/// ALPN protocol id of the native Tidings protocol.
pub const ALPN: &[u8] = b"tidings/1";

/// Maximum number of delivery streams the server may have open to this client at once.
const MAX_INCOMING_STREAMS: u32 = 1024;

/// Interval of QUIC keep-alives, so an idle session survives NAT bindings and the
/// server's idle timeout.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// A connection that completed the handshake, with its open control stream.
pub(crate) struct Handshaken {
    pub connection: quinn::Connection,
    pub control_send: quinn::SendStream,
    pub control_recv: quinn::RecvStream,
    pub welcome: Welcome,
    /// Kept so the endpoint's socket lives as long as the connection.
    pub endpoint: quinn::Endpoint,
}

/// Builds the QUIC client configuration that trusts `config.trust`, offers [`ALPN`] and
/// logs TLS secrets to `config.key_log_file` when set.
pub(crate) fn quic_config(config: &ClientConfig) -> Result<quinn::ClientConfig, ConnectError> {
    let roots = load_roots(&config.trust)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| ConnectError::InvalidCertificate {
            origin: "TLS configuration".to_owned(),
            reason: error.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    if let Some(key_log) = open_key_log(config)? {
        tls.key_log = key_log;
    }

    let quic =
        QuicClientConfig::try_from(tls).map_err(|error| ConnectError::InvalidCertificate {
            origin: "TLS configuration".to_owned(),
            reason: error.to_string(),
        })?;
    let mut transport = quinn::TransportConfig::default();
    // The server opens one delivery stream per active conversation, which quinn's default
    // of 100 concurrent streams would cap.
    transport.max_concurrent_bidi_streams(MAX_INCOMING_STREAMS.into());
    transport.keep_alive_interval(Some(KEEP_ALIVE_INTERVAL));

    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Opens the key log of `config`, if it names one.
pub(crate) fn open_key_log(
    config: &ClientConfig,
) -> Result<Option<Arc<dyn rustls::KeyLog>>, ConnectError> {
    let Some(path) = &config.key_log_file else {
        return Ok(None);
    };
    let log = KeyLogPath::open(path).map_err(|source| ConnectError::KeyLog {
        path: path.clone(),
        source,
    })?;
    Ok(Some(Arc::new(log)))
}

pub(crate) fn load_roots(trust: &TrustRoots) -> Result<RootCertStore, ConnectError> {
    let (origin, pem) = match trust {
        TrustRoots::CaPemFile(path) => {
            let pem = std::fs::read(path).map_err(|source| ConnectError::ReadCa {
                path: path.clone(),
                source,
            })?;
            (path.display().to_string(), pem)
        }
        TrustRoots::CaPem(text) => (
            "the configured PEM text".to_owned(),
            text.as_bytes().to_vec(),
        ),
    };

    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut BufReader::new(&pem[..]))
        .collect::<Result<_, _>>()
        .map_err(|error| ConnectError::InvalidCertificate {
            origin: origin.clone(),
            reason: error.to_string(),
        })?;
    if certs.is_empty() {
        return Err(ConnectError::NoCertificate { origin });
    }

    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|error| ConnectError::InvalidCertificate {
                origin: origin.clone(),
                reason: error.to_string(),
            })?;
    }
    Ok(roots)
}

/// Resolves `host:port` to the first address it names.
pub(crate) async fn resolve(server: &str) -> Result<SocketAddr, ConnectError> {
    let invalid = |reason: String| ConnectError::InvalidAddress {
        server: server.to_owned(),
        reason,
    };
    let mut addresses = tokio::net::lookup_host(server)
        .await
        .map_err(|error| invalid(error.to_string()))?;
    addresses
        .next()
        .ok_or_else(|| invalid("the name resolved to no address".to_owned()))
}

/// Connects to `server`, opens the control stream and exchanges `Hello` for `Welcome`.
///
/// Cancel safety: cancelling drops the half-open connection, which the server treats as a
/// lost connection.
pub(crate) async fn handshake(
    config: &ClientConfig,
    quic: &quinn::ClientConfig,
    server: &str,
) -> Result<Handshaken, ConnectError> {
    let address = resolve(server).await?;
    let bind: SocketAddr = if address.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let mut endpoint = quinn::Endpoint::client(bind).map_err(ConnectError::Socket)?;
    endpoint.set_default_client_config(quic.clone());

    let connect_failed = |reason: String| ConnectError::Connect {
        server: server.to_owned(),
        reason,
    };
    let connection = endpoint
        .connect(address, &config.server_name)
        .map_err(|error| connect_failed(error.to_string()))?
        .await
        .map_err(|source| handshake_error(server, source))?;
    debug!(server, remote = %connection.remote_address(), "QUIC connection established");

    let (mut control_send, mut control_recv) = connection
        .open_bi()
        .await
        .map_err(|source| handshake_error(server, source))?;
    let hello = Frame::Hello(Hello {
        token: config.token.clone(),
        device_id: config.device_id.clone(),
        client_version: config.client_version.clone(),
    });
    let mut bytes = Vec::new();
    encode_framed(&hello, &mut bytes);
    control_send
        .write_all(&bytes)
        .await
        .map_err(|error| connect_failed(format!("sending Hello failed: {error}")))?;

    // NOTE: the limits are unknown until Welcome, so the first reply is read with the
    // protocol's default frame limit.
    let reply = read_frame(&mut control_recv, Limits::default().max_frame_bytes).await;
    match reply {
        Ok(Some(Frame::Welcome(welcome))) => Ok(Handshaken {
            connection,
            control_send,
            control_recv,
            welcome,
            endpoint,
        }),
        Ok(Some(Frame::Error(error))) => Err(ConnectError::Rejected(error.rejection())),
        Ok(Some(Frame::Close(close))) => Err(ConnectError::Closed {
            code: CloseCode::from_u32(close.code).unwrap_or(CloseCode::InternalError),
            reason: close.message,
        }),
        Ok(Some(other)) => Err(ConnectError::Protocol {
            server: server.to_owned(),
            reason: format!("expected Welcome, received {}", other.kind()),
        }),
        Ok(None) | Err(_) => Err(closed_error(server, &connection, reply.err())),
    }
}

fn handshake_error(server: &str, source: quinn::ConnectionError) -> ConnectError {
    match source {
        quinn::ConnectionError::ApplicationClosed(close) => application_closed(&close),
        quinn::ConnectionError::TimedOut => ConnectError::Connect {
            server: server.to_owned(),
            reason: "no reply from the server (is it running and reachable over UDP?)".to_owned(),
        },
        source => ConnectError::Handshake {
            server: server.to_owned(),
            source,
        },
    }
}

fn application_closed(close: &quinn::ApplicationClose) -> ConnectError {
    let code = u32::try_from(close.error_code.into_inner())
        .ok()
        .and_then(CloseCode::from_u32)
        .unwrap_or(CloseCode::InternalError);
    ConnectError::Closed {
        code,
        reason: String::from_utf8_lossy(&close.reason).into_owned(),
    }
}

/// Explains why the control stream ended before `Welcome`.
fn closed_error(
    server: &str,
    connection: &quinn::Connection,
    read_error: Option<tidings_schema::codec::ReadError>,
) -> ConnectError {
    if let Some(reason) = connection.close_reason() {
        return handshake_error(server, reason);
    }
    let reason = match read_error {
        Some(error) => format!("reading Welcome failed: {error}"),
        None => "the server ended the control stream before Welcome".to_owned(),
    };
    ConnectError::Protocol {
        server: server.to_owned(),
        reason,
    }
}
