//! The certificates the edge presents, and their rotation.
//!
//! With a development PKI the edge serves short-lived leaves it issues in memory. A page
//! that pins leaves with WebTransport's `serverCertificateHashes` needs the hash of the
//! leaf the edge will present when it connects, so the next leaf is issued well before
//! the switch, and `/v1/cert-hashes` publishes both during that overlap. Configured
//! certificate files are served as they are and never rotated.
//!
//! [`CertStore::rotate`] takes the time as an argument, so tests drive the schedule.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::info;

use crate::config::TlsSource;
use crate::tls::{DevPki, IssuedLeaf, TlsError, load_identity};

/// When development leaves are replaced, measured back from the current leaf's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationSchedule {
    /// The next leaf is issued and published this long before the current one expires.
    pub prepare_before: Duration,
    /// The edge starts presenting the next leaf this long before the current one expires.
    pub switch_before: Duration,
}

impl Default for RotationSchedule {
    /// Publishes the next leaf 4 days before expiry and switches 1 day before, so a page
    /// that fetched the hashes keeps working for at least 3 days.
    fn default() -> Self {
        RotationSchedule {
            prepare_before: Duration::from_secs(4 * 24 * 3600),
            switch_before: Duration::from_secs(24 * 3600),
        }
    }
}

/// One leaf certificate with its signing key.
pub struct Leaf {
    pub certified: Arc<CertifiedKey>,
    /// SHA-256 of the DER leaf certificate, as `serverCertificateHashes` expects.
    pub sha256: [u8; 32],
    /// Validity window; `None` for configured certificates, which the edge does not parse.
    pub validity: Option<(SystemTime, SystemTime)>,
}

impl fmt::Debug for Leaf {
    // Never prints key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leaf")
            .field("sha256", &hex::encode(self.sha256))
            .field("validity", &self.validity)
            .finish()
    }
}

/// What one [`CertStore::rotate`] call changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    Unchanged,
    /// The next leaf was issued and is now published next to the current one.
    Prepared,
    /// The edge now presents the former next leaf.
    Switched,
}

struct Leaves {
    current: Arc<Leaf>,
    next: Option<Arc<Leaf>>,
}

/// The leaves the edge presents on QUIC and TLS-over-TCP, shared with rustls as its
/// certificate resolver.
pub struct CertStore {
    leaves: RwLock<Leaves>,
    /// The development PKI that issues new leaves; `None` for configured files.
    pki: Option<DevPki>,
    schedule: RotationSchedule,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("hashes", &self.published_hashes())
            .finish()
    }
}

/// The body of `/v1/cert-hashes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertHashes {
    /// Always `sha-256`.
    pub algorithm: &'static str,
    /// Hex SHA-256 of the leaf the edge presents now.
    pub current: String,
    /// Hex SHA-256 of the leaf the edge presents next, during the overlap.
    pub next: Option<String>,
    /// `current` and `next`, for `serverCertificateHashes`.
    pub hashes: Vec<String>,
}

impl CertStore {
    /// Loads the identity named by `source`. A development PKI issues the first leaf at
    /// `now`; configured files are used as they are.
    pub fn load(
        source: &TlsSource,
        schedule: RotationSchedule,
        now: SystemTime,
    ) -> Result<CertStore, TlsError> {
        let (current, pki) = match source {
            TlsSource::DevPki { dir } => {
                let pki = DevPki::load_or_create(dir)?;
                let leaf = issued_leaf(pki.issue_leaf(now)?)?;
                (leaf, Some(pki))
            }
            TlsSource::Files { .. } => {
                let (certs, key) = load_identity(source)?;
                (leaf_from(certs, key, None)?, None)
            }
        };
        let leaves = Leaves {
            current: Arc::new(current),
            next: None,
        };
        Ok(CertStore {
            leaves: RwLock::new(leaves),
            pki,
            schedule,
        })
    }

    /// Advances the rotation to `now`: issues the next leaf once the current one is within
    /// `prepare_before` of expiry, and presents it from `switch_before` on.
    pub fn rotate(&self, now: SystemTime) -> Result<Rotation, TlsError> {
        let Some(pki) = &self.pki else {
            return Ok(Rotation::Unchanged);
        };
        let (expires, has_next) = {
            let leaves = self.read();
            let Some((_, expires)) = leaves.current.validity else {
                return Ok(Rotation::Unchanged);
            };
            (expires, leaves.next.is_some())
        };

        let switch_at = expires - self.schedule.switch_before;
        let prepare_at = expires - self.schedule.prepare_before;
        if now < prepare_at || (now < switch_at && has_next) {
            return Ok(Rotation::Unchanged);
        }
        // Issue outside the lock: signing takes a moment and handshakes keep resolving.
        let fresh = if has_next {
            None
        } else {
            Some(Arc::new(issued_leaf(pki.issue_leaf(now)?)?))
        };

        let mut leaves = self
            .leaves
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(fresh) = fresh {
            leaves.next.get_or_insert(fresh);
        }
        if now < switch_at {
            let next = leaves.next.as_ref().map(|leaf| hex::encode(leaf.sha256));
            info!(next = next.unwrap_or_default(), "next TLS leaf published");
            return Ok(Rotation::Prepared);
        }
        if let Some(next) = leaves.next.take() {
            leaves.current = next;
        }
        info!(current = %hex::encode(leaves.current.sha256), "switched to the next TLS leaf");
        Ok(Rotation::Switched)
    }

    /// Returns the time until [`CertStore::rotate`] has something to do, from `now`.
    /// `None` when leaves are never rotated.
    pub fn next_rotation_in(&self, now: SystemTime) -> Option<Duration> {
        self.pki.as_ref()?;
        let leaves = self.read();
        let (_, expires) = leaves.current.validity?;
        let before = if leaves.next.is_some() {
            self.schedule.switch_before
        } else {
            self.schedule.prepare_before
        };
        let due = expires - before;
        Some(due.duration_since(now).unwrap_or(Duration::ZERO))
    }

    /// Returns the leaf presented now.
    pub fn current(&self) -> Arc<Leaf> {
        Arc::clone(&self.read().current)
    }

    /// Returns the current and, during the overlap, the next leaf's hashes.
    pub fn published_hashes(&self) -> CertHashes {
        let leaves = self.read();
        let current = hex::encode(leaves.current.sha256);
        let next = leaves.next.as_ref().map(|leaf| hex::encode(leaf.sha256));
        let mut hashes = vec![current.clone()];
        hashes.extend(next.clone());
        CertHashes {
            algorithm: "sha-256",
            current,
            next,
            hashes,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Leaves> {
        self.leaves
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.read().current.certified))
    }
}

fn issued_leaf(issued: IssuedLeaf) -> Result<Leaf, TlsError> {
    let validity = Some((issued.not_before, issued.not_after));
    leaf_from(vec![issued.cert], issued.key, validity)
}

fn leaf_from(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    validity: Option<(SystemTime, SystemTime)>,
) -> Result<Leaf, TlsError> {
    let sha256: [u8; 32] = Sha256::digest(certs[0].as_ref()).into();
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)?;
    Ok(Leaf {
        certified: Arc::new(CertifiedKey::new(certs, signing_key)),
        sha256,
        validity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::LEAF_VALIDITY;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn leaves_are_short_lived_ecdsa() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let source = TlsSource::DevPki {
            dir: dir.path().to_owned(),
        };
        let now = SystemTime::now();
        let store = CertStore::load(&source, RotationSchedule::default(), now).expect("load");
        let (not_before, not_after) = store.current().validity.expect("dev leaves have a window");
        let total = not_after
            .duration_since(not_before)
            .expect("window is ordered");
        assert!(total < 14 * DAY, "leaf valid for {total:?}");
        assert_eq!(total, LEAF_VALIDITY);
        assert!(not_before <= now && now < not_after);
        let algorithm = store.current().certified.key.algorithm();
        assert_eq!(algorithm, rustls::SignatureAlgorithm::ECDSA);
    }

    #[test]
    fn rotation_publishes_both_hashes_through_the_overlap() {
        let dir = tempfile::tempdir().expect("create temp dir");
        let source = TlsSource::DevPki {
            dir: dir.path().to_owned(),
        };
        let start = SystemTime::now();
        let schedule = RotationSchedule::default();
        let store = CertStore::load(&source, schedule, start).expect("load");
        let first = store.published_hashes();
        assert_eq!(first.hashes, vec![first.current.clone()]);
        let (_, expires) = store.current().validity.expect("window");

        // Before the overlap nothing changes.
        assert_eq!(
            store.rotate(start + DAY).expect("rotate"),
            Rotation::Unchanged
        );
        assert_eq!(store.published_hashes(), first);

        // In the overlap both hashes are published and the old leaf is still presented.
        let prepare_at = expires - schedule.prepare_before;
        assert_eq!(
            store.rotate(prepare_at).expect("rotate"),
            Rotation::Prepared
        );
        let overlap = store.published_hashes();
        let next = overlap.next.clone().expect("next leaf published");
        assert_eq!(overlap.current, first.current);
        assert_eq!(overlap.hashes, vec![first.current.clone(), next.clone()]);
        assert_eq!(hex::encode(store.current().sha256), first.current);

        // Later in the overlap the same pair stays published.
        let mid = prepare_at + DAY;
        assert_eq!(store.rotate(mid).expect("rotate"), Rotation::Unchanged);
        assert_eq!(store.published_hashes(), overlap);
        let wait = store.next_rotation_in(mid).expect("dev leaves rotate");
        let switch_at = expires - schedule.switch_before;
        assert_eq!(
            wait,
            switch_at.duration_since(mid).expect("switch is later")
        );

        // At the switch the next leaf is presented and published alone.
        assert_eq!(store.rotate(switch_at).expect("rotate"), Rotation::Switched);
        let after = store.published_hashes();
        assert_eq!(after.current, next);
        assert_eq!(after.hashes, vec![next.clone()]);
        assert_eq!(hex::encode(store.current().sha256), next);
        let (not_before, _) = store.current().validity.expect("window");
        assert!(not_before <= prepare_at);
    }
}
