//! TLS for the QUIC endpoint: a development PKI and the rustls server configuration.
//!
//! Every rustls config here is built with the ring provider named explicitly, because with
//! more than one provider compiled in `ServerConfig::builder()` cannot pick one and panics.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsSource;

/// ALPN of the native Tidings protocol.
pub const ALPN_TIDINGS: &[u8] = b"tidings/1";

/// ALPN of HTTP/3, which carries WebTransport and plain requests on the QUIC port.
pub const ALPN_H3: &[u8] = b"h3";

/// Names the development leaf certificate is valid for.
const DEV_SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Total validity of a development leaf, backdating included. Chromium accepts a
/// certificate pinned with `serverCertificateHashes` only when it is valid for at most
/// 14 days.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(13 * 24 * 3600);

/// How far a new leaf's `not_before` lies in the past, to absorb client clock skew.
const LEAF_BACKDATE: Duration = Duration::from_secs(3600);

/// Failure to load or create TLS material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("failed to access {path}: {source}; check that the directory exists and is writable")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid PEM in {path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("failed to generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("rustls rejected the certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A development PKI: a long-lived ECDSA P-256 CA and a leaf certificate it signed for
/// `localhost`, `127.0.0.1` and `::1`. Clients trust `ca.pem`.
///
/// `server.pem` holds a leaf for tools that read a file. The edge itself serves leaves it
/// issues in memory with [`DevPki::issue_leaf`] and rotates before they expire.
#[derive(Debug, Clone)]
pub struct DevPki {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl DevPki {
    /// Loads the PKI from `dir`, creating the directory, the CA and the leaf where missing.
    ///
    /// Existing files are reused. A missing leaf is signed by the existing CA, so clients
    /// that trust `ca.pem` keep working.
    // NOTE: `server.pem` is not renewed when it nears expiry because reading its validity
    // needs an X.509 parser; delete it to get a fresh one.
    pub fn load_or_create(dir: &Path) -> Result<DevPki, TlsError> {
        fs::create_dir_all(dir).map_err(|source| io_error(dir, source))?;
        let pki = DevPki {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        };

        let ca_key = if pki.ca_cert.exists() && pki.ca_key.exists() {
            let pem = read_string(&pki.ca_key)?;
            KeyPair::from_pem(&pem).map_err(|error| pem_error(&pki.ca_key, error))?
        } else {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
            let ca = CertifiedIssuer::self_signed(ca_params(), key)?;
            write_private(&pki.ca_key, &ca.key().serialize_pem())?;
            write_file(&pki.ca_cert, &ca.pem())?;
            // The leaf of an older CA would no longer verify.
            remove_if_exists(&pki.server_cert)?;
            KeyPair::from_pem(&ca.key().serialize_pem())?
        };

        if !(pki.server_cert.exists() && pki.server_key.exists()) {
            // NOTE: the CA parameters are rebuilt identically rather than parsed, so the
            // leaf's issuer name and authority key id match the stored CA certificate.
            let issuer = Issuer::new(ca_params(), ca_key);
            let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
            let leaf = leaf_params(SystemTime::now())?.signed_by(&leaf_key, &issuer)?;
            write_private(&pki.server_key, &leaf_key.serialize_pem())?;
            write_file(&pki.server_cert, &leaf.pem())?;
        }
        Ok(pki)
    }

    /// Issues a fresh ECDSA P-256 leaf signed by the CA, valid from an hour before `now`
    /// for [`LEAF_VALIDITY`] in total. Returns the DER certificate and its PKCS#8 key.
    pub fn issue_leaf(&self, now: SystemTime) -> Result<IssuedLeaf, TlsError> {
        let pem = read_string(&self.ca_key)?;
        let ca_key = KeyPair::from_pem(&pem).map_err(|error| pem_error(&self.ca_key, error))?;
        let issuer = Issuer::new(ca_params(), ca_key);
        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let leaf = leaf_params(now)?.signed_by(&leaf_key, &issuer)?;
        let (not_before, not_after) = leaf_window(now);
        Ok(IssuedLeaf {
            cert: leaf.der().clone(),
            key: PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            not_before,
            not_after,
        })
    }
}

/// A leaf certificate issued by [`DevPki::issue_leaf`].
#[derive(Debug)]
pub struct IssuedLeaf {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Returns the validity window of a leaf issued at `now`.
fn leaf_window(now: SystemTime) -> (SystemTime, SystemTime) {
    let not_before = now - LEAF_BACKDATE;
    (not_before, not_before + LEAF_VALIDITY)
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "Tidings development CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2026, 1, 1);
    params.not_after = rcgen::date_time_ymd(2046, 1, 1);
    params
}

fn leaf_params(now: SystemTime) -> Result<CertificateParams, rcgen::Error> {
    let names: Vec<String> = DEV_SERVER_NAMES
        .iter()
        .map(|name| name.to_string())
        .collect();
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "Tidings development server");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let (not_before, not_after) = leaf_window(now);
    params.not_before = time::OffsetDateTime::from(not_before);
    params.not_after = time::OffsetDateTime::from(not_after);
    Ok(params)
}

/// Loads the certificate chain and key named by `source`, creating a development PKI
/// when the source is [`TlsSource::DevPki`].
pub fn load_identity(
    source: &TlsSource,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let (cert_path, key_path) = match source {
        TlsSource::DevPki { dir } => {
            let pki = DevPki::load_or_create(dir)?;
            (pki.server_cert, pki.server_key)
        }
        TlsSource::Files { cert_chain, key } => (cert_chain.clone(), key.clone()),
    };
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|error| pem_error(&cert_path, error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| pem_error(&cert_path, error))?;
    if certs.is_empty() {
        return Err(pem_error(&cert_path, "no CERTIFICATE block found"));
    }
    let key =
        PrivateKeyDer::from_pem_file(&key_path).map_err(|error| pem_error(&key_path, error))?;
    Ok((certs, key))
}

/// Builds the rustls server config for the QUIC endpoint, offering `alpn` protocols.
pub fn server_config(source: &TlsSource, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
    let (certs, key) = load_identity(source)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(config)
}

/// Builds the rustls server config that presents the certificates `resolver` picks, for
/// every handshake, offering `alpn` protocols.
pub fn resolver_config(
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
    alpn: &[&[u8]],
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(config)
}

fn read_string(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| io_error(path, source))
}

fn write_file(path: &Path, contents: &str) -> Result<(), TlsError> {
    fs::write(path, contents).map_err(|source| io_error(path, source))
}

/// Writes a private key readable by the owner only (on Unix).
fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    write_file(path, contents)?;
    restrict_permissions(path)
}

#[cfg(unix)]
pub(crate) fn restrict_permissions(path: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|source| io_error(path, source))
}

#[cfg(not(unix))]
pub(crate) fn restrict_permissions(_path: &Path) -> Result<(), TlsError> {
    Ok(())
}

fn remove_if_exists(path: &Path) -> Result<(), TlsError> {
    match fs::remove_file(path) {
        Err(source) if source.kind() != io::ErrorKind::NotFound => Err(io_error(path, source)),
        _ => Ok(()),
    }
}

fn io_error(path: &Path, source: io::Error) -> TlsError {
    TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

fn pem_error(path: &Path, error: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        message: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_pki_is_created_once_and_reused() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let first = DevPki::load_or_create(dir.path()).expect("create PKI");
        let ca_before = fs::read(&first.ca_cert).expect("read ca.pem");
        let leaf_before = fs::read(&first.server_cert).expect("read server.pem");

        let second = DevPki::load_or_create(dir.path()).expect("reload PKI");
        assert_eq!(fs::read(&second.ca_cert).expect("read ca.pem"), ca_before);
        assert_eq!(
            fs::read(&second.server_cert).expect("read server.pem"),
            leaf_before
        );
    }

    #[test]
    fn missing_leaf_is_signed_by_existing_ca() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let pki = DevPki::load_or_create(dir.path()).expect("create PKI");
        let ca_before = fs::read(&pki.ca_cert).expect("read ca.pem");
        fs::remove_file(&pki.server_cert).expect("remove leaf");

        DevPki::load_or_create(dir.path()).expect("recreate leaf");
        assert_eq!(fs::read(&pki.ca_cert).expect("read ca.pem"), ca_before);
        assert!(pki.server_cert.exists());
    }

    #[test]
    fn server_config_offers_alpn() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let source = TlsSource::DevPki {
            dir: dir.path().to_owned(),
        };
        let config = server_config(&source, &[ALPN_TIDINGS]).expect("build server config");
        assert_eq!(config.alpn_protocols, vec![ALPN_TIDINGS.to_vec()]);
    }
}
