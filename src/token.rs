//! `tidings token`: sign a client token.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use tidings_edge::{KeySource, TokenSigner};
use tidings_relay::cluster::ClusterFile;
use tidings_schema::ids;

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// User id the token is for (its `sub` claim).
    #[arg(long)]
    user: String,
    /// How long the token is valid, for example `24h` or `30m` (at most 366 days).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Sign an operator token, which may call the edge's `/v1/admin/...` endpoints.
    #[arg(long)]
    admin: bool,
    /// Data directory of a `tidings serve` node; its `token.key` signs the token.
    #[arg(long, default_value = "tidings-data")]
    data_dir: PathBuf,
    /// Cluster file whose `token_key` signs the token (instead of the data directory).
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// Ed25519 private key (PEM) that signs an EdDSA token instead of HS256.
    #[arg(long, requires = "eddsa_public_key")]
    eddsa_private_key: Option<PathBuf>,
    /// Ed25519 public key (PEM) matching `--eddsa-private-key`.
    #[arg(long)]
    eddsa_public_key: Option<PathBuf>,
}

/// Longest token lifetime `tidings token` issues; a longer-lived bearer token is a risk.
const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

pub fn run(args: TokenArgs) -> Result<()> {
    if args.ttl.is_zero() || args.ttl > MAX_TTL {
        bail!(
            "invalid --ttl {}: use a duration above 0s and at most 366 days",
            humantime::format_duration(args.ttl)
        );
    }
    if !ids::is_valid_user_id(&args.user) {
        bail!(
            "invalid user id {:?}: use 1 to 64 ASCII letters, digits, '.', '_', '-' or '@'",
            args.user
        );
    }
    let keys =
        if let (Some(private), Some(public)) = (&args.eddsa_private_key, &args.eddsa_public_key) {
            KeySource::load_eddsa(public, Some(private)).context("failed to load the EdDSA keys")?
        } else {
            let key_path = match &args.cluster {
                Some(path) => ClusterFile::load(path)?
                    .settings
                    .token_key
                    .context("the cluster file has no token_key to sign HS256 tokens with")?,
                None => {
                    std::fs::create_dir_all(&args.data_dir).with_context(|| {
                        format!(
                            "failed to create data directory {}",
                            args.data_dir.display()
                        )
                    })?;
                    args.data_dir.join("token.key")
                }
            };
            KeySource::load_or_create_hs256(&key_path)
                .with_context(|| format!("failed to load the token key {}", key_path.display()))?
        };
    let signer = TokenSigner::new(&keys)?;
    let token = if args.admin {
        signer.sign_admin(&args.user, args.ttl)?
    } else {
        signer.sign(&args.user, args.ttl)?
    };
    println!("{token}");
    Ok(())
}
