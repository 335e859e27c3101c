//! Mutual TLS on the mesh, over real TCP connections on 127.0.0.1: a peer with a
//! certificate from the mesh CA is served, and peers without one are refused.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tidings_store::{Owner, OwnerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use crate::mesh_tls::{self, MeshTls, create_dev_pki, dev_paths};
use crate::rpc::{OwnerServer, RemoteOwner, RemoteOwnerConfig, serve_service_with};
use tidings_schema::ErrorCode;
use tidings_schema::mesh::OwnerRequest;

/// Upper bound on any single wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

/// How long a refused client is given to connect anyway before the test checks it did not.
const REFUSAL_WINDOW: Duration = Duration::from_millis(1_500);

fn list() -> OwnerRequest {
    OwnerRequest::ListConversations {
        user: "alice".into(),
    }
}

/// Starts a real owner behind mutual TLS with certificates from `pki`.
async fn start_owner(pki: &std::path::Path, data: &std::path::Path) -> OwnerServer {
    let tls = MeshTls::load(&dev_paths(pki, "owner-1")).unwrap();
    let owner = Owner::open(OwnerConfig::new(data.to_owned())).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_service_with(owner, listener, Some(tls)).unwrap()
}

fn client_config(tls: MeshTls) -> RemoteOwnerConfig {
    RemoteOwnerConfig {
        tls: Some(tls),
        server_name: Some("owner-1".into()),
        connect_timeout: Duration::from_millis(500),
        ..RemoteOwnerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_with_mesh_certificate_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("mesh");
    create_dev_pki(&pki, &["owner-1", "edge-1"]).unwrap();
    let server = start_owner(&pki, &dir.path().join("data")).await;

    let tls = MeshTls::load(&dev_paths(&pki, "edge-1")).unwrap();
    let remote =
        RemoteOwner::connect_with(server.local_addr(), "edge-1".into(), client_config(tls))
            .unwrap();
    timeout(WAIT, remote.wait_connected())
        .await
        .expect("edge with a valid certificate did not connect");
    remote.call(list()).await.expect("call over mutual TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_from_other_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("mesh");
    let rogue = dir.path().join("rogue");
    create_dev_pki(&pki, &["owner-1"]).unwrap();
    // The rogue CA issues a certificate with the right name, and trusts the real CA so
    // that only the server's check of the client certificate can stop it.
    create_dev_pki(&rogue, &["edge-1"]).unwrap();
    std::fs::copy(pki.join("ca.pem"), rogue.join("trusted-ca.pem")).unwrap();
    let server = start_owner(&pki, &dir.path().join("data")).await;

    let mut paths = dev_paths(&rogue, "edge-1");
    paths.ca_cert = rogue.join("trusted-ca.pem");
    let tls = MeshTls::load(&paths).unwrap();
    let remote =
        RemoteOwner::connect_with(server.local_addr(), "edge-1".into(), client_config(tls))
            .unwrap();

    let connected = timeout(REFUSAL_WINDOW, remote.wait_connected()).await;
    assert!(
        connected.is_err(),
        "a certificate from another CA was accepted"
    );
    let rejection = remote.call(list()).await.unwrap_err();
    assert_eq!(rejection.code, ErrorCode::OwnerUnavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_without_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("mesh");
    create_dev_pki(&pki, &["owner-1"]).unwrap();
    let server = start_owner(&pki, &dir.path().join("data")).await;

    // A TLS client that trusts the mesh CA but presents no certificate of its own.
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.join("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![mesh_tls::ALPN_MESH.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));

    let stream = TcpStream::connect(server.local_addr()).await.unwrap();
    let name = mesh_tls::server_name("owner-1").unwrap();
    // With TLS 1.3 the client finishes its side first; the server's refusal arrives as
    // an alert on the first read, or the connection closes.
    let outcome = timeout(WAIT, async {
        let mut tls = connector.connect(name, stream).await?;
        tls.write_all(b"\0\0\0\0\0\0\0\0").await?;
        let mut buffer = [0u8; 16];
        tls.read(&mut buffer).await
    })
    .await
    .expect("the owner neither refused nor answered in time");
    match outcome {
        Err(_) | Ok(0) => {}
        Ok(read) => panic!("the owner answered {read} bytes to a peer without a certificate"),
    }
}

#[test]
fn invalid_node_name_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let error = create_dev_pki(dir.path(), &["not a name"]).unwrap_err();
    assert!(error.to_string().contains("not a name"), "{error}");
}
