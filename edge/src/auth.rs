//! Bearer tokens: JWTs whose `sub` is the user id.
//!
//! HS256 with a shared secret is the default; EdDSA (Ed25519) lets edges verify with a
//! public key only. Expiry is checked against a `now` passed by the caller, so tests and
//! the session timer agree on one clock.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tidings_schema::error::{ErrorCode, Rejection};
use tidings_schema::ids;

/// Clock skew tolerated when checking `exp` and `iat`, in seconds.
pub const LEEWAY_SECS: u64 = 2;

/// Length of a generated HS256 secret in bytes.
const HS256_SECRET_BYTES: usize = 32;

/// The claims of a Tidings token. Times are seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    /// Whether the token may call the operator endpoints (`/v1/admin/...`). Absent in
    /// client tokens.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

/// Failure to load a signing or verification key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("failed to access key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid key in {path}: {message}; expected {expected}")]
    Invalid {
        path: PathBuf,
        message: String,
        expected: &'static str,
    },
    #[error("this key source cannot sign tokens; configure the Ed25519 private key")]
    NoSigningKey,
    #[error("failed to encode token: {0}")]
    Encode(String),
}

/// Key material for tokens.
#[derive(Clone)]
pub enum KeySource {
    /// A shared HS256 secret, used to sign and to verify.
    Hs256 { secret: Vec<u8> },
    /// Ed25519 keys in PEM: the public key verifies, the private key (when present) signs.
    EdDsa {
        public_pem: Vec<u8>,
        private_pem: Option<Vec<u8>>,
    },
}

impl std::fmt::Debug for KeySource {
    // Never prints key bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Hs256 { .. } => f.write_str("KeySource::Hs256"),
            KeySource::EdDsa { private_pem, .. } => f
                .debug_struct("KeySource::EdDsa")
                .field("can_sign", &private_pem.is_some())
                .finish(),
        }
    }
}

impl KeySource {
    /// Loads the HS256 secret from `path`, or creates the file with 32 random bytes when it
    /// does not exist. The file contains the raw secret and is readable by its owner only.
    pub fn load_or_create_hs256(path: &Path) -> Result<KeySource, KeyError> {
        let io_error = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        match fs::read(path) {
            Ok(secret) if secret.len() >= HS256_SECRET_BYTES => Ok(KeySource::Hs256 { secret }),
            Ok(secret) => Err(KeyError::Invalid {
                path: path.to_owned(),
                message: format!("secret has {} bytes", secret.len()),
                expected: "at least 32 bytes; delete the file to create a new secret",
            }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let mut secret = vec![0u8; HS256_SECRET_BYTES];
                rand::rng().fill_bytes(&mut secret);
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(io_error)?;
                }
                fs::write(path, &secret).map_err(io_error)?;
                restrict_permissions(path).map_err(io_error)?;
                Ok(KeySource::Hs256 { secret })
            }
            Err(error) => Err(io_error(error)),
        }
    }

    /// Loads Ed25519 keys from PEM files; without a private key the source only verifies.
    pub fn load_eddsa(public: &Path, private: Option<&Path>) -> Result<KeySource, KeyError> {
        let read = |path: &Path| {
            fs::read(path).map_err(|source| KeyError::Io {
                path: path.to_owned(),
                source,
            })
        };
        let public_pem = read(public)?;
        DecodingKey::from_ed_pem(&public_pem).map_err(|error| KeyError::Invalid {
            path: public.to_owned(),
            message: error.to_string(),
            expected: "an Ed25519 public key in PEM",
        })?;
        let private_pem = match private {
            Some(path) => {
                let pem = read(path)?;
                EncodingKey::from_ed_pem(&pem).map_err(|error| KeyError::Invalid {
                    path: path.to_owned(),
                    message: error.to_string(),
                    expected: "an Ed25519 private key in PKCS#8 PEM",
                })?;
                Some(pem)
            }
            None => None,
        };
        Ok(KeySource::EdDsa {
            public_pem,
            private_pem,
        })
    }

    fn algorithm(&self) -> Algorithm {
        match self {
            KeySource::Hs256 { .. } => Algorithm::HS256,
            KeySource::EdDsa { .. } => Algorithm::EdDSA,
        }
    }
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path) -> io::Result<()> {
    Ok(())
}

/// Issues tokens.
#[derive(Clone)]
pub struct TokenSigner {
    key: EncodingKey,
    algorithm: Algorithm,
}

impl TokenSigner {
    /// Creates a signer; fails when the source has no private key.
    pub fn new(source: &KeySource) -> Result<TokenSigner, KeyError> {
        let key = match source {
            KeySource::Hs256 { secret } => EncodingKey::from_secret(secret),
            KeySource::EdDsa {
                private_pem: Some(pem),
                ..
            } => EncodingKey::from_ed_pem(pem),
            KeySource::EdDsa {
                private_pem: None, ..
            } => return Err(KeyError::NoSigningKey),
        }
        .map_err(|error| KeyError::Encode(error.to_string()))?;
        Ok(TokenSigner {
            key,
            algorithm: source.algorithm(),
        })
    }

    /// Signs a token for `user` valid for `ttl` from now.
    pub fn sign(&self, user: &str, ttl: Duration) -> Result<String, KeyError> {
        self.sign_at(user, SystemTime::now(), ttl)
    }

    /// Signs a token for `user` issued at `issued_at` and valid for `ttl` after it.
    pub fn sign_at(
        &self,
        user: &str,
        issued_at: SystemTime,
        ttl: Duration,
    ) -> Result<String, KeyError> {
        self.encode(user, issued_at, ttl, false)
    }

    /// Signs an operator token for `user` valid for `ttl` from now: it carries the `admin`
    /// claim that the `/v1/admin/...` endpoints require.
    pub fn sign_admin(&self, user: &str, ttl: Duration) -> Result<String, KeyError> {
        self.encode(user, SystemTime::now(), ttl, true)
    }

    fn encode(
        &self,
        user: &str,
        issued_at: SystemTime,
        ttl: Duration,
        admin: bool,
    ) -> Result<String, KeyError> {
        let iat = unix_secs(issued_at);
        let claims = Claims {
            sub: user.to_owned(),
            iat,
            exp: iat + ttl.as_secs(),
            admin,
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.key)
            .map_err(|error| KeyError::Encode(error.to_string()))
    }
}

/// Checks tokens presented in `Hello`.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    /// Creates a verifier that accepts only the source's algorithm.
    pub fn new(source: &KeySource) -> Result<TokenVerifier, KeyError> {
        let key = match source {
            KeySource::Hs256 { secret } => DecodingKey::from_secret(secret),
            KeySource::EdDsa { public_pem, .. } => DecodingKey::from_ed_pem(public_pem),
        }
        .map_err(|error| KeyError::Encode(error.to_string()))?;

        let mut validation = Validation::new(source.algorithm());
        // Expiry is checked in `verify` against the caller's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["sub", "exp", "iat"]);
        Ok(TokenVerifier { key, validation })
    }

    /// Verifies `token` at time `now`: signature, algorithm, claims, a valid user id in
    /// `sub`, and `exp` not passed (with [`LEEWAY_SECS`] of skew).
    ///
    /// Fails with `InvalidToken` or `TokenExpired`. The message never contains the token.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Claims, Rejection> {
        if token.is_empty() {
            return Err(Rejection::new(
                ErrorCode::InvalidToken,
                "the Hello carried no token",
            ));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|error| Rejection::new(ErrorCode::InvalidToken, describe_jwt_error(&error)))?;
        let claims = data.claims;

        if !ids::is_valid_user_id(&claims.sub) {
            return Err(Rejection::new(
                ErrorCode::InvalidToken,
                "the token's sub is not a valid user id (1 to 64 of A-Z a-z 0-9 . _ - @)",
            ));
        }
        let now_secs = unix_secs(now);
        if claims.exp + LEEWAY_SECS <= now_secs {
            return Err(Rejection::new(
                ErrorCode::TokenExpired,
                format!(
                    "the token expired at {} (Unix seconds); get a new one",
                    claims.exp
                ),
            ));
        }
        if claims.iat > now_secs + LEEWAY_SECS {
            return Err(Rejection::new(
                ErrorCode::InvalidToken,
                "the token's iat is in the future; check the issuer's clock",
            ));
        }
        Ok(claims)
    }
}

/// Describes why a token failed to decode, in words a user can act on.
fn describe_jwt_error(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    let reason = match error.kind() {
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => "it is not a well-formed JWT",
        ErrorKind::InvalidSignature => "its signature does not match this server's key",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "it is signed with an algorithm this server does not accept"
        }
        ErrorKind::MissingRequiredClaim(_) => "it lacks a required claim (sub, iat or exp)",
        _ => "it failed validation",
    };
    format!("invalid token: {reason}; get a new one with `tidings token --user NAME`")
}

/// Returns whole seconds since the Unix epoch, 0 for times before it.
pub fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs256() -> KeySource {
        KeySource::Hs256 {
            secret: vec![7u8; 32],
        }
    }

    #[test]
    fn hs256_round_trip() {
        let signer = TokenSigner::new(&hs256()).expect("signer");
        let verifier = TokenVerifier::new(&hs256()).expect("verifier");
        let token = signer.sign("alice", Duration::from_secs(60)).expect("sign");
        let claims = verifier.verify(&token, SystemTime::now()).expect("verify");
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.exp, claims.iat + 60);
        assert!(!claims.admin);
    }

    #[test]
    fn admin_claim_round_trip() {
        let signer = TokenSigner::new(&hs256()).expect("signer");
        let verifier = TokenVerifier::new(&hs256()).expect("verifier");
        let admin = signer
            .sign_admin("ops", Duration::from_secs(60))
            .expect("sign");
        assert!(
            verifier
                .verify(&admin, SystemTime::now())
                .expect("verify")
                .admin
        );

        // A client token's payload has no `admin` field at all.
        let client = signer.sign("alice", Duration::from_secs(60)).expect("sign");
        let claims =
            jsonwebtoken::decode::<serde_json::Value>(&client, &verifier.key, &verifier.validation)
                .expect("decode")
                .claims;
        assert!(claims.get("admin").is_none(), "{claims}");
    }

    #[test]
    fn expired_token_is_rejected() {
        let signer = TokenSigner::new(&hs256()).expect("signer");
        let verifier = TokenVerifier::new(&hs256()).expect("verifier");
        let issued = SystemTime::now() - Duration::from_secs(120);
        let token = signer
            .sign_at("alice", issued, Duration::from_secs(60))
            .expect("sign");
        let error = verifier
            .verify(&token, SystemTime::now())
            .expect_err("expired");
        assert_eq!(error.code, ErrorCode::TokenExpired);
    }

    #[test]
    fn token_within_leeway_is_accepted() {
        let signer = TokenSigner::new(&hs256()).expect("signer");
        let verifier = TokenVerifier::new(&hs256()).expect("verifier");
        let issued = SystemTime::now();
        let token = signer
            .sign_at("alice", issued, Duration::from_secs(10))
            .expect("sign");
        let at_exp = issued + Duration::from_secs(10 + LEEWAY_SECS - 1);
        assert!(verifier.verify(&token, at_exp).is_ok());
        let past = issued + Duration::from_secs(10 + LEEWAY_SECS);
        assert_eq!(
            verifier.verify(&token, past).expect_err("expired").code,
            ErrorCode::TokenExpired
        );
    }

    #[test]
    fn wrong_secret_and_garbage_are_invalid() {
        let signer = TokenSigner::new(&hs256()).expect("signer");
        let other = TokenVerifier::new(&KeySource::Hs256 {
            secret: vec![8u8; 32],
        })
        .expect("verifier");
        let token = signer.sign("alice", Duration::from_secs(60)).expect("sign");
        let now = SystemTime::now();
        assert_eq!(
            other.verify(&token, now).expect_err("bad sig").code,
            ErrorCode::InvalidToken
        );
        assert_eq!(
            other.verify("garbage", now).expect_err("garbage").code,
            ErrorCode::InvalidToken
        );
        assert_eq!(
            other.verify("", now).expect_err("empty").code,
            ErrorCode::InvalidToken
        );
    }

    #[test]
    fn invalid_user_id_is_rejected() {
        let signer = TokenSigner::new(&hs256()).expect("signer");
        let verifier = TokenVerifier::new(&hs256()).expect("verifier");
        let token = signer
            .sign("has space", Duration::from_secs(60))
            .expect("sign");
        let error = verifier
            .verify(&token, SystemTime::now())
            .expect_err("bad sub");
        assert_eq!(error.code, ErrorCode::InvalidToken);
    }

    #[test]
    fn hs256_secret_file_is_created_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keys/token.key");
        let KeySource::Hs256 { secret: first } =
            KeySource::load_or_create_hs256(&path).expect("create")
        else {
            panic!("expected an HS256 source");
        };
        assert_eq!(first.len(), 32);
        let KeySource::Hs256 { secret: second } =
            KeySource::load_or_create_hs256(&path).expect("reload")
        else {
            panic!("expected an HS256 source");
        };
        assert_eq!(first, second);
    }

    #[test]
    fn eddsa_round_trip_and_algorithm_pinning() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("generate key");
        let private = dir.path().join("ed.key");
        fs::write(&private, key.serialize_pem()).expect("write key");
        let public = dir.path().join("ed.pub");
        fs::write(&public, key.public_key_pem()).expect("write public key");

        let source = KeySource::load_eddsa(&public, Some(&private)).expect("load keys");
        let signer = TokenSigner::new(&source).expect("signer");
        let verifier = TokenVerifier::new(&source).expect("verifier");
        let token = signer.sign("bob", Duration::from_secs(60)).expect("sign");
        assert_eq!(
            verifier
                .verify(&token, SystemTime::now())
                .expect("verify")
                .sub,
            "bob"
        );

        // An HS256 token must not pass an EdDSA verifier.
        let hs_token = TokenSigner::new(&hs256())
            .expect("signer")
            .sign("bob", Duration::from_secs(60));
        let hs_token = hs_token.expect("sign");
        let error = verifier
            .verify(&hs_token, SystemTime::now())
            .expect_err("wrong alg");
        assert_eq!(error.code, ErrorCode::InvalidToken);

        let verify_only = KeySource::load_eddsa(&public, None).expect("load public key");
        assert!(matches!(
            TokenSigner::new(&verify_only),
            Err(KeyError::NoSigningKey)
        ));
    }
}
