//! `tidings cluster up`: a local multi-process cluster on loopback, and the mesh wiring
//! (placement, mutual TLS, owner peers) that `tidings owner` and `tidings edge` share.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use tidings_edge::KeySource;
use tidings_relay::cluster::{ClusterFile, NodeConfig};
use tidings_relay::mesh_tls::{self, MeshTls};
use tidings_relay::peers::MeshPeers;
use tidings_relay::placement::{self, OwnerWeight};
use tidings_relay::placement_record;
use tidings_relay::rpc::{RemoteOwner, RemoteOwnerConfig};
use tidings_store::{ClusterView, Owner, OwnerConfig, ShardMap};
use tokio::signal::unix::{SignalKind, signal};

/// How long `cluster up` waits for each process to report its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `cluster up` waits for its children to stop after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Start owners and edges as separate processes on loopback until Ctrl-C or SIGTERM.
    Up(UpArgs),
}

#[derive(Debug, Args)]
struct UpArgs {
    /// Number of owner processes.
    #[arg(long, default_value_t = 3)]
    owners: u16,
    /// Number of edge processes.
    #[arg(long, default_value_t = 2)]
    edges: u16,
    /// Folder for cluster.toml, the keys, each node's data, PID file and log.
    #[arg(long)]
    data_dir: PathBuf,
}

pub async fn run(args: ClusterArgs) -> Result<()> {
    match args.command {
        ClusterCommand::Up(args) => up(args).await,
    }
}

/// Returns the owners of the cluster with their weights, in file order.
pub(crate) fn owner_weights(cluster: &ClusterFile) -> Vec<OwnerWeight> {
    cluster
        .owners()
        .map(|owner| OwnerWeight {
            id: owner.id.clone(),
            weight: owner.weight,
        })
        .collect()
}

/// Loads the node's mesh TLS settings; `None` when the cluster file names no mesh CA.
pub(crate) fn load_mesh_tls(cluster: &ClusterFile, node: &NodeConfig) -> Result<Option<MeshTls>> {
    let Some(paths) = cluster.mesh_tls_paths(node) else {
        tracing::warn!(
            node = %node.id,
            "the cluster file names no mesh_ca, so the mesh runs over plain TCP"
        );
        return Ok(None);
    };
    let tls = MeshTls::load(&paths)
        .with_context(|| format!("failed to load the mesh certificate of node {}", node.id))?;
    Ok(Some(tls))
}

/// Starts a connection from node `from` to `owner`; `fan_out` attaches it for deliveries.
pub(crate) fn connect_owner(
    tls: &Option<MeshTls>,
    from: &str,
    owner: &NodeConfig,
    fan_out: bool,
) -> Result<RemoteOwner> {
    let mesh = owner.mesh.expect("validated: owners have a mesh address");
    let config = RemoteOwnerConfig {
        fan_out,
        tls: tls.clone(),
        server_name: Some(owner.id.clone()),
        ..RemoteOwnerConfig::default()
    };
    RemoteOwner::connect_with(mesh, from.to_owned(), config)
        .with_context(|| format!("failed to start the mesh client for {}", owner.id))
}

/// How long an owner waits at start for its mesh connections to the other owners.
const PEER_WAIT: Duration = Duration::from_secs(15);

/// Checks the placement record, connects to the other owners and opens the store for the
/// virtual shards that placement gives `node`. Returns the store and the connections to
/// the other owners.
pub(crate) fn open_owner(
    cluster: &ClusterFile,
    node: &NodeConfig,
    tls: &Option<MeshTls>,
) -> Result<(Arc<Owner>, Vec<RemoteOwner>)> {
    let data_dir = node
        .data_dir
        .clone()
        .expect("validated: owners have a data_dir");
    let weights = owner_weights(cluster);
    placement_record::check_and_record(&data_dir, &node.id, &weights)
        .with_context(|| format!("owner {} cannot start", node.id))?;

    let mut peers = Vec::new();
    let mut local = 0;
    for (index, owner) in cluster.owners().enumerate() {
        if owner.id == node.id {
            local = index;
            peers.push(None);
        } else {
            peers.push(Some(connect_owner(tls, &node.id, owner, false)?));
        }
    }
    let names = weights.iter().map(|owner| owner.id.clone()).collect();
    let shards =
        ShardMap::new(local, names, placement::place_all(&weights)).map_err(anyhow::Error::msg)?;
    let local_shards: Vec<u16> = (0..tidings_schema::ids::VIRTUAL_SHARDS)
        .filter(|&shard| shards.holder(shard) == tidings_store::ShardHolder::Local)
        .collect();
    let peer_names: Vec<&str> = cluster
        .owners()
        .filter(|owner| owner.id != node.id)
        .map(|owner| owner.id.as_str())
        .collect();
    tracing::info!(
        node = %node.id,
        role = "owner",
        shard_count = local_shards.len(),
        shards = %shard_ranges(&local_shards),
        peers = ?peer_names,
        "owner placement"
    );

    let peers = Arc::new(MeshPeers::new(peers));
    let connections = peers.connections();
    let view = ClusterView { shards, peers };
    let owner = Owner::open_in_cluster(OwnerConfig::new(data_dir.clone()), Some(view))
        .with_context(|| format!("failed to open the store in {}", data_dir.display()))?;
    Ok((owner, connections))
}

/// Waits until every connection to another owner is up, or [`PEER_WAIT`] has passed.
pub(crate) async fn wait_for_peers(node: &str, peers: &[RemoteOwner]) {
    let all = wait_all_connected(peers);
    if tokio::time::timeout(PEER_WAIT, all).await.is_err() {
        let missing: Vec<String> = peers
            .iter()
            .filter(|peer| !peer.is_connected())
            .map(|peer| peer.addr().to_string())
            .collect();
        tracing::warn!(
            node,
            ?missing,
            "some owner peers are not reachable yet; inbox rows for their users wait for them"
        );
    }
}

async fn wait_all_connected(peers: &[RemoteOwner]) {
    for peer in peers {
        peer.wait_connected().await;
    }
}

/// Formats sorted shard ids as ranges, such as `0-3, 7, 9-10`.
fn shard_ranges(shards: &[u16]) -> String {
    let mut parts = Vec::new();
    let mut index = 0;
    while index < shards.len() {
        let start = shards[index];
        let mut end = start;
        while index + 1 < shards.len() && shards[index + 1] == end + 1 {
            index += 1;
            end = shards[index];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        index += 1;
    }
    parts.join(", ")
}

/// A node process started by `cluster up`.
struct NodeProcess {
    id: String,
    child: Child,
    pid_file: PathBuf,
    lines: mpsc::Receiver<String>,
}

async fn up(args: UpArgs) -> Result<()> {
    if args.owners == 0 || args.edges == 0 {
        bail!("--owners and --edges must each be at least 1");
    }
    let dir = &args.data_dir;
    fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("failed to resolve {}", dir.display()))?;

    // The key is created here, because edges starting at once would race to create it.
    let token_key = dir.join("token.key");
    KeySource::load_or_create_hs256(&token_key)
        .with_context(|| format!("failed to create the token key {}", token_key.display()))?;

    let owners: Vec<String> = (1..=args.owners).map(|i| format!("owner-{i}")).collect();
    let edges: Vec<String> = (1..=args.edges).map(|i| format!("edge-{i}")).collect();
    let mesh_dir = dir.join("mesh");
    let nodes: Vec<&str> = owners.iter().chain(&edges).map(String::as_str).collect();
    if !nodes
        .iter()
        .all(|node| mesh_tls::dev_paths(&mesh_dir, node).key.exists())
    {
        mesh_tls::create_dev_pki(&mesh_dir, &nodes).context("failed to create the mesh CA")?;
    }

    // NOTE: the handlers are installed before any node starts, so a signal that arrives
    // during startup still stops the nodes instead of ending this process alone.
    let mut terminate = signal(SignalKind::terminate()).context("failed to handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("failed to handle SIGINT")?;

    let cluster_file = dir.join("cluster.toml");
    let text = cluster_text(&owners, &edges)?;
    fs::write(&cluster_file, text)
        .with_context(|| format!("failed to write {}", cluster_file.display()))?;
    ClusterFile::load(&cluster_file)?;
    println!("cluster file {}", cluster_file.display());

    let mut children = Vec::new();
    // A signal during startup stays pending and is taken by the wait below.
    let started = start_all(&dir, &cluster_file, &owners, &edges, &mut children);
    if let Err(error) = started {
        stop_all(children);
        return Err(error);
    }
    println!("cluster up: stop with Ctrl-C");

    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    println!("stopping the cluster");
    stop_all(children);
    Ok(())
}

fn start_all(
    dir: &Path,
    cluster_file: &Path,
    owners: &[String],
    edges: &[String],
    children: &mut Vec<NodeProcess>,
) -> Result<()> {
    // Owners start together, because each waits for its connections to the others.
    for owner in owners {
        children.push(spawn_node(dir, cluster_file, "owner", owner)?);
    }
    for child in children.iter_mut() {
        let addr = wait_for_line(child, "mesh listening on")?;
        println!("owner {} mesh {addr}", child.id);
    }
    for edge in edges {
        let mut child = spawn_node(dir, cluster_file, "edge", edge)?;
        let quic = wait_for_line(&mut child, "quic listening on");
        let http =
            quic.and_then(|quic| Ok((quic, wait_for_line(&mut child, "http listening on")?)));
        children.push(child);
        let (quic, http) = http?;
        println!("edge {edge} client address {quic} http {http}");
    }
    Ok(())
}

/// Returns the text of `cluster.toml` for these nodes, with free loopback ports.
fn cluster_text(owners: &[String], edges: &[String]) -> Result<String> {
    let mut text = String::from(
        "# Written by `tidings cluster up`; every node of the local cluster reads it.\n\
         [cluster]\ntoken_key = \"token.key\"\nmesh_ca = \"mesh/ca.pem\"\ntls_dir = \"tls\"\n",
    );
    for owner in owners {
        let mesh = free_tcp_port()?;
        text.push_str(&format!(
            "\n[[node]]\nid = \"{owner}\"\nroles = [\"owner\"]\nmesh = \"127.0.0.1:{mesh}\"\n\
             data_dir = \"{owner}\"\n"
        ));
    }
    for (index, edge) in edges.iter().enumerate() {
        let quic = free_udp_port()?;
        let http = free_tcp_port()?;
        text.push_str(&format!(
            "\n[[node]]\nid = \"{edge}\"\nroles = [\"edge\"]\nquic = \"127.0.0.1:{quic}\"\n\
             http = \"127.0.0.1:{http}\"\nsnowflake_node = {}\n",
            index + 1
        ));
    }
    Ok(text)
}

// NOTE: a reserved port is released before the node binds it, so another process can
// take it in between. The node then fails with a bind error and `cluster up` stops.
fn free_tcp_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn free_udp_port() -> Result<u16> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(socket.local_addr()?.port())
}

/// Starts `tidings ROLE --cluster FILE --node ID` with its output copied to `ID.log`.
fn spawn_node(dir: &Path, cluster_file: &Path, role: &str, id: &str) -> Result<NodeProcess> {
    let log_path = dir.join(format!("{id}.log"));
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("failed to open {}", log_path.display()))?;
    let exe = std::env::current_exe().context("failed to find the tidings binary")?;
    let mut child = Command::new(exe)
        .arg(role)
        .arg("--cluster")
        .arg(cluster_file)
        .arg("--node")
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start {role} {id}"))?;

    let pid_file = dir.join(format!("{id}.pid"));
    fs::write(&pid_file, format!("{}\n", child.id()))
        .with_context(|| format!("failed to write {}", pid_file.display()))?;

    let (sender, lines) = mpsc::channel();
    let log = Arc::new(std::sync::Mutex::new(log));
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    copy_lines(stdout, Arc::clone(&log), Some(sender));
    copy_lines(stderr, log, None);
    Ok(NodeProcess {
        id: id.to_owned(),
        child,
        pid_file,
        lines,
    })
}

/// Copies each line of `source` to the log, and to `lines` when given.
fn copy_lines(
    source: impl std::io::Read + Send + 'static,
    log: Arc<std::sync::Mutex<fs::File>>,
    lines: Option<mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(source).lines().map_while(|line| line.ok()) {
            if let Ok(mut log) = log.lock() {
                let _ = writeln!(log, "{line}");
            }
            if let Some(lines) = &lines {
                // The reader is gone once the node reported its address.
                let _ = lines.send(line);
            }
        }
    });
}

/// Waits for a line starting with `prefix` and returns the word after it.
fn wait_for_line(child: &mut NodeProcess, prefix: &str) -> Result<String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match child.lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix(prefix) {
                    let word = rest.split_whitespace().next().unwrap_or_default();
                    return Ok(word.to_owned());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                "node {} printed no {prefix:?} line within {START_TIMEOUT:?}; see its log",
                child.id
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // The node closed its output, so it is exiting; collect its status.
                let status = child.child.wait()?;
                bail!(
                    "node {} exited ({status}) before printing {prefix:?}; see its log",
                    child.id
                )
            }
        }
    }
}

/// Stops every child: SIGTERM first (edges before owners), SIGKILL after a timeout.
fn stop_all(mut children: Vec<NodeProcess>) {
    children.reverse();
    for child in &children {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.child.id().to_string())
            .status();
        if let Err(error) = status {
            eprintln!("failed to send SIGTERM to {}: {error}", child.id);
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for child in &mut children {
        loop {
            match child.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    eprintln!("{} did not stop in time; killing it", child.id);
                    let _ = child.child.kill();
                    let _ = child.child.wait();
                    break;
                }
            }
        }
        let _ = fs::remove_file(&child.pid_file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_ranges_join_runs() {
        assert_eq!(shard_ranges(&[0, 1, 2, 5, 7, 8]), "0-2, 5, 7-8");
        assert_eq!(shard_ranges(&[]), "");
    }
}
