//! `tidings serve`: every role in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use tidings_edge::{Edge, EdgeConfig, KeySource, TlsSource, TokenSigner, TokenVerifier};
use tidings_relay::{OwnerHandle, Router};
use tidings_store::{Owner, OwnerConfig};

/// Users that get a development sign-in link, so a newcomer can chat between two tabs.
const SIGN_IN_USERS: [&str; 2] = ["alice", "bob"];

/// Lifetime of the tokens in the sign-in links.
const SIGN_IN_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Folder for messages, the development CA and certificate, and the token key.
    #[arg(long, default_value = "tidings-data")]
    data_dir: PathBuf,
    /// UDP address for QUIC clients (ALPN tidings/1); port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:4433")]
    quic_listen: SocketAddr,
    /// TCP address for the WebSocket fallback, /healthz and /metrics [default:
    /// 127.0.0.1:8080, or 127.0.0.1:0 when --quic-listen uses port 0]; port 0 picks a free
    /// port.
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Number of redb files the messages are spread over; fixed once data exists.
    #[arg(long, default_value_t = 4)]
    storage_shards: u16,
}

/// Returns the HTTP address: the option, or 127.0.0.1:8080, or a free port when QUIC
/// also takes a free port (so test instances never collide).
fn http_listen(args: &ServeArgs) -> SocketAddr {
    if let Some(addr) = args.http_listen {
        return addr;
    }
    let port = if args.quic_listen.port() == 0 {
        0
    } else {
        8080
    };
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Prints a link per development user that opens the web client signed in. The token
/// travels in the URL fragment, which browsers never send to the server.
fn print_sign_in_links(signer: &TokenSigner, http: SocketAddr, tls: bool) -> Result<()> {
    let scheme = if tls { "https" } else { "http" };
    let host = if http.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], http.port()))
    } else {
        http
    };
    for user in SIGN_IN_USERS {
        let token = signer
            .sign(user, SIGN_IN_TTL)
            .with_context(|| format!("failed to sign a token for {user}"))?;
        println!("web client as {user}: open {scheme}://{host}/#token={token}");
    }
    Ok(())
}

pub async fn run(args: ServeArgs) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir).with_context(|| {
        format!(
            "failed to create data directory {}",
            args.data_dir.display()
        )
    })?;

    let mut owner_config = OwnerConfig::new(args.data_dir.join("store"));
    owner_config.storage_shards = args.storage_shards;
    let owner = Owner::open(owner_config).context("failed to open the message store")?;

    let key_path = args.data_dir.join("token.key");
    let keys = KeySource::load_or_create_hs256(&key_path)
        .with_context(|| format!("failed to load the token key {}", key_path.display()))?;
    let verifier = TokenVerifier::new(&keys).context("invalid token key")?;

    let tls_dir = args.data_dir.join("tls");
    let config = EdgeConfig {
        listen: args.quic_listen,
        tls: TlsSource::DevPki {
            dir: tls_dir.clone(),
        },
        node_id: 1,
        edge_id: "serve".to_owned(),
        public_edges: vec![args.quic_listen.to_string()],
        http_listen: Some(http_listen(&args)),
        ..EdgeConfig::default()
    };
    let router = Router::single(OwnerHandle::Local(Arc::clone(&owner)));
    let edge = Edge::start(config, verifier, router)
        .await
        .context("failed to start the edge")?;

    let data_dir = args.data_dir.display();
    println!("tidings serve: edge, relay and owner in one process");
    println!("data directory {data_dir}");
    println!(
        "quic listening on {} (ALPN tidings/1 and h3)",
        edge.local_addr()
    );
    if let Some(http) = edge.http_addr() {
        println!("http listening on {http}");
    }
    println!("development CA {}", tls_dir.join("ca.pem").display());
    println!("get a token: tidings token --user alice --data-dir {data_dir}");
    if let Some(http) = edge.http_addr() {
        let signer = TokenSigner::new(&keys).context("invalid token key")?;
        print_sign_in_links(&signer, http, edge.http_is_tls())?;
    }
    tracing::info!(quic = %edge.local_addr(), data_dir = %data_dir, "serving");

    crate::shutdown_signal().await;
    tracing::info!("shutting down");
    edge.shutdown().await;
    tokio::task::spawn_blocking(move || owner.shutdown())
        .await
        .context("store shutdown failed")?;
    Ok(())
}
