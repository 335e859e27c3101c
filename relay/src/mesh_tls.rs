//! Mutual TLS for the mesh: every node presents a certificate signed by the mesh CA, and
//! accepts only peers that do the same.
//!
//! A node certificate carries the node id as its DNS name, so a client checks that it
//! reached the owner it meant to. Servers check only that a client certificate chains to
//! the mesh CA. `tidings cluster up` creates a development CA with [`create_dev_pki`];
//! production clusters point the cluster file at certificates from their own CA.
//!
//! Every rustls config is built with the ring provider named explicitly, because with more
//! than one provider compiled in `ServerConfig::builder()` cannot pick one and panics.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// ALPN of the mesh protocol, so a mesh port never talks to a client of another protocol.
pub const ALPN_MESH: &[u8] = b"tidings-mesh/1";

/// Failure to load or create mesh TLS material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshTlsError {
    #[error("failed to access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid PEM in {path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("failed to generate a mesh certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("rustls rejected the mesh certificate, key or CA: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("invalid mesh client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("node id {0:?} is not a valid DNS name, so it cannot name a mesh certificate")]
    InvalidNodeName(String),
}

/// Paths of one node's mesh certificate, key and the CA it trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshTlsPaths {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Client and server TLS settings of one mesh node.
#[derive(Clone)]
pub struct MeshTls {
    connector: TlsConnector,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTls").finish_non_exhaustive()
    }
}

impl MeshTls {
    /// Loads the node's certificate and key and the CA that every peer must chain to.
    pub fn load(paths: &MeshTlsPaths) -> Result<MeshTls, MeshTlsError> {
        let ca = read_certs(&paths.ca_cert)?;
        let certs = read_certs(&paths.cert)?;
        let key = PrivateKeyDer::from_pem_file(&paths.key)
            .map_err(|error| pem_error(&paths.key, error))?;

        let mut roots = RootCertStore::empty();
        for ca_cert in ca {
            roots.add(ca_cert)?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())?;
        server.alpn_protocols = vec![ALPN_MESH.to_vec()];

        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)?;
        client.alpn_protocols = vec![ALPN_MESH.to_vec()];

        Ok(MeshTls {
            connector: TlsConnector::from(Arc::new(client)),
            acceptor: TlsAcceptor::from(Arc::new(server)),
        })
    }

    /// Returns the connector for outgoing mesh connections.
    pub fn connector(&self) -> &TlsConnector {
        &self.connector
    }

    /// Returns the acceptor for incoming mesh connections.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

/// Returns the TLS server name under which node `node_id` is reached.
pub fn server_name(node_id: &str) -> Result<ServerName<'static>, MeshTlsError> {
    ServerName::try_from(node_id.to_owned())
        .map_err(|_| MeshTlsError::InvalidNodeName(node_id.to_owned()))
}

/// Returns where [`create_dev_pki`] puts the files of `node_id` inside `dir`.
pub fn dev_paths(dir: &Path, node_id: &str) -> MeshTlsPaths {
    MeshTlsPaths {
        ca_cert: dir.join("ca.pem"),
        cert: dir.join(format!("{node_id}.pem")),
        key: dir.join(format!("{node_id}.key")),
    }
}

/// Creates a development mesh CA in `dir` (`ca.pem`, `ca.key`) and a certificate with key
/// for every node (`<id>.pem`, `<id>.key`), replacing files that exist.
pub fn create_dev_pki(dir: &Path, node_ids: &[&str]) -> Result<(), MeshTlsError> {
    fs::create_dir_all(dir).map_err(|source| io_error(dir, source))?;
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let ca = CertifiedIssuer::self_signed(ca_params(), ca_key)?;
    write_private(&dir.join("ca.key"), &ca.key().serialize_pem())?;
    write_file(&dir.join("ca.pem"), &ca.pem())?;

    for node_id in node_ids {
        server_name(node_id)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = node_params(node_id)?.signed_by(&key, &ca)?;
        let paths = dev_paths(dir, node_id);
        write_private(&paths.key, &key.serialize_pem())?;
        write_file(&paths.cert, &cert.pem())?;
    }
    Ok(())
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "Tidings development mesh CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2026, 1, 1);
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    params
}

fn node_params(node_id: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(vec![node_id.to_owned()])?;
    params.distinguished_name.push(DnType::CommonName, node_id);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // One certificate serves both directions: owners accept edges and call other owners.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = rcgen::date_time_ymd(2026, 1, 1);
    params.not_after = rcgen::date_time_ymd(2036, 1, 1);
    Ok(params)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, MeshTlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|error| pem_error(path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(path, error))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

fn write_file(path: &Path, contents: &str) -> Result<(), MeshTlsError> {
    fs::write(path, contents).map_err(|source| io_error(path, source))
}

/// Writes a private key readable by the owner only.
fn write_private(path: &Path, contents: &str) -> Result<(), MeshTlsError> {
    write_file(path, contents)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(|source| io_error(path, source))?;
    }
    Ok(())
}

fn io_error(path: &Path, source: io::Error) -> MeshTlsError {
    MeshTlsError::Io {
        path: path.to_owned(),
        source,
    }
}

fn pem_error(path: &Path, error: impl std::fmt::Display) -> MeshTlsError {
    MeshTlsError::Pem {
        path: path.to_owned(),
        message: error.to_string(),
    }
}
