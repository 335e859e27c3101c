//! `tidings owner` and `tidings edge`: one node of a cluster file.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use tidings_edge::{Edge, EdgeConfig, KeySource, TlsSource, TokenVerifier};
use tidings_relay::cluster::{ClusterFile, NodeConfig, Role};
use tidings_relay::placement::OwnerWeight;
use tidings_relay::rpc::serve_service_with;
use tidings_relay::{OwnerHandle, Router};
use tokio::net::TcpListener;

use crate::cluster_cmd;

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Cluster file (TOML) that lists every node.
    #[arg(long)]
    cluster: PathBuf,
    /// Id of this node in the cluster file.
    #[arg(long)]
    node: String,
    /// Edges only: TCP address for the WebSocket fallback, /healthz and /metrics
    /// [default: the node's `http` in the cluster file, else the QUIC address with the
    /// same port number over TCP]; port 0 picks a free port.
    #[arg(long)]
    http_listen: Option<std::net::SocketAddr>,
    /// Edges only: seconds a draining edge (on SIGTERM or Ctrl-C) waits for its clients
    /// to leave after their `Close` frame before it closes what is left.
    #[arg(long, default_value_t = 10)]
    drain_timeout_secs: u64,
}

fn load_node(args: &NodeArgs, role: Role) -> Result<(ClusterFile, NodeConfig)> {
    let cluster = ClusterFile::load(&args.cluster)?;
    let node = cluster.node(&args.node)?.clone();
    if !node.has_role(role) {
        bail!(
            "node {:?} in {} does not have the {role:?} role",
            node.id,
            args.cluster.display()
        );
    }
    Ok((cluster, node))
}

pub async fn run_owner(args: NodeArgs) -> Result<()> {
    let (cluster, node) = load_node(&args, Role::Owner)?;
    let data_dir = node
        .data_dir
        .clone()
        .expect("validated: owners have a data_dir");
    let mesh = node.mesh.expect("validated: owners have a mesh address");

    let tls = cluster_cmd::load_mesh_tls(&cluster, &node)?;
    let (owner, peers) = cluster_cmd::open_owner(&cluster, &node, &tls)?;
    let listener = TcpListener::bind(mesh)
        .await
        .with_context(|| format!("failed to bind mesh address {mesh}"))?;
    let server = serve_service_with(owner.clone(), listener, tls)
        .context("failed to start the mesh server")?;
    cluster_cmd::wait_for_peers(&node.id, &peers).await;

    println!(
        "owner {} serving {} of {} virtual shards",
        node.id,
        owner.shards().local_count(),
        tidings_schema::ids::VIRTUAL_SHARDS
    );
    println!("mesh listening on {}", server.local_addr());
    tracing::info!(node = %node.id, mesh = %server.local_addr(), data_dir = %data_dir.display(), "owner started");

    crate::shutdown_signal().await;
    tracing::info!(node = %node.id, "owner shutting down");
    server.shutdown().await;
    tokio::task::spawn_blocking(move || owner.shutdown())
        .await
        .context("store shutdown failed")?;
    Ok(())
}

pub async fn run_edge(args: NodeArgs) -> Result<()> {
    let (cluster, node) = load_node(&args, Role::Edge)?;
    let listen = node.quic.expect("validated: edges have a quic address");

    let keys = match (
        &cluster.settings.token_public_key,
        &cluster.settings.token_key,
    ) {
        (Some(public), _) => KeySource::load_eddsa(public, None)
            .with_context(|| format!("failed to load token key {}", public.display()))?,
        (None, Some(secret)) => KeySource::load_or_create_hs256(secret)
            .with_context(|| format!("failed to load token key {}", secret.display()))?,
        (None, None) => unreachable!("validated: the cluster names a token key"),
    };
    let verifier = TokenVerifier::new(&keys).context("invalid token key")?;

    let tls = cluster_cmd::load_mesh_tls(&cluster, &node)?;
    let mut owners = Vec::new();
    for owner in cluster.owners() {
        let mesh = owner.mesh.expect("validated: owners have a mesh address");
        let remote = cluster_cmd::connect_owner(&tls, &node.id, owner, true)?;
        tracing::info!(node = %node.id, role = "edge", owner = %owner.id, %mesh, "owner peer");
        let weight = OwnerWeight {
            id: owner.id.clone(),
            weight: owner.weight,
        };
        owners.push((weight, OwnerHandle::Remote(remote)));
    }

    let tls_dir = cluster.settings.tls_dir.clone().unwrap_or_else(|| {
        let base = args.cluster.parent().unwrap_or(std::path::Path::new("."));
        base.join("tls")
    });
    let ca_path = tls_dir.join("ca.pem");
    let config = EdgeConfig {
        listen,
        tls: TlsSource::DevPki { dir: tls_dir },
        node_id: node.snowflake_node,
        edge_id: node.id.clone(),
        http_listen: Some(args.http_listen.or(node.http).unwrap_or(listen)),
        public_edges: cluster
            .edges()
            .filter_map(|e| e.quic)
            .map(|a| a.to_string())
            .collect(),
        drain_timeout: std::time::Duration::from_secs(args.drain_timeout_secs),
        ..EdgeConfig::default()
    };
    let edge = Edge::start(config, verifier, Router::with_placement(owners))
        .await
        .context("failed to start the edge")?;

    println!("edge {} started", node.id);
    println!(
        "quic listening on {} (ALPN tidings/1 and h3)",
        edge.local_addr()
    );
    if let Some(http) = edge.http_addr() {
        println!("http listening on {http}");
    }
    println!("development CA {}", ca_path.display());
    println!(
        "get a token: tidings token --user alice --cluster {}",
        args.cluster.display()
    );
    tracing::info!(node = %node.id, quic = %edge.local_addr(), "edge started");

    crate::shutdown_signal().await;
    tracing::info!(node = %node.id, "edge shutting down");
    edge.shutdown().await;
    Ok(())
}
