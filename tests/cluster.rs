//! A local cluster of real processes started by `tidings cluster up`: three owners that
//! split the virtual shards, two edges, Cap'n Proto RPC over mutual TLS between them.
//! Messages cross edges and owners in seq order, each edge receives one mesh delivery
//! per group message (read from its `/metrics`), and inbox listings work for users whose
//! home shard is on another owner than the conversation.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tidings_clients::{Client, ClientConfig, Message, PresenceEvent, PresenceState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use support::Process;

/// Bound on each wait for a delivery or a reply.
const WAIT: Duration = Duration::from_secs(20);

/// Name of the edge counter of deliveries received from owners over the mesh.
const MESH_DELIVERIES: &str = "tidings_edge_owner_deliveries_total";

/// Group size: the creator, the connected members and offline members.
const GROUP_SIZE: usize = 500;

/// Connected devices, spread over both edges.
const CONNECTED: usize = 20;

/// Group messages sent after every device is known to receive live deliveries.
const GROUP_MESSAGES: usize = 10;

struct Edge {
    quic: SocketAddr,
    http: SocketAddr,
}

/// How long `cluster up` may take to stop its nodes after SIGTERM.
const STOP_LIMIT: Duration = Duration::from_secs(20);

/// A cluster started by `tidings cluster up`. Dropping it sends SIGTERM, so that
/// `cluster up` stops its nodes; a SIGKILL would leave them running.
struct LocalCluster {
    dir: PathBuf,
    process: Process,
    edges: Vec<Edge>,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if !self.process.terminate(STOP_LIMIT) {
            eprintln!("cluster up did not stop in time; its nodes may still run");
        }
    }
}

impl LocalCluster {
    fn start(dir: &Path, owners: u16, edge_count: u16) -> Result<LocalCluster> {
        let mut process = start_cluster_up(dir, owners, edge_count)?;
        let mut edges = Vec::new();
        for index in 1..=edge_count {
            let edge = format!("edge-{index}");
            let line = process.wait_for_line(&format!("edge {edge} client address"))?;
            // The rest of the line is `QUIC http HTTP`.
            let words: Vec<&str> = line.split_whitespace().collect();
            ensure!(words.len() == 3, "unexpected edge line {line:?}");
            edges.push(Edge {
                quic: words[0].parse()?,
                http: words[2].parse()?,
            });
        }
        process.wait_for_line("cluster up")?;
        Ok(LocalCluster {
            dir: dir.to_owned(),
            process,
            edges,
        })
    }

    fn token(&self, user: &str) -> Result<String> {
        support::cluster_token(&self.dir.join("cluster.toml"), user)
    }

    async fn connect(&self, user: &str, edge: usize) -> Result<Client> {
        let config = ClientConfig::new(
            self.edges[edge].quic.to_string(),
            self.token(user)?,
            format!("{user}-phone"),
            self.dir.join("tls").join("ca.pem"),
        );
        Client::connect(config)
            .await
            .with_context(|| format!("{user} failed to connect to edge {edge}"))
    }

    /// Reads the mesh delivery counter from an edge's `/metrics`.
    async fn mesh_deliveries(&self, edge: usize) -> Result<u64> {
        let text = http_get(self.edges[edge].http, "/metrics").await?;
        let line = text
            .lines()
            .find(|line| line.starts_with(&format!("{MESH_DELIVERIES} ")))
            .with_context(|| format!("edge {edge} /metrics lacks {MESH_DELIVERIES}"))?;
        let value = line.split_whitespace().nth(1).unwrap_or_default();
        value.parse().context("counter is not a number")
    }
}

fn start_cluster_up(dir: &Path, owners: u16, edges: u16) -> Result<Process> {
    let dir_text = dir.to_str().context("temporary path is not UTF-8")?;
    let (owners, edges) = (owners.to_string(), edges.to_string());
    let args = [
        "cluster",
        "up",
        "--owners",
        &owners,
        "--edges",
        &edges,
        "--data-dir",
        dir_text,
    ];
    Process::start("cluster", &args)
}

async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await?;
        anyhow::Ok(body)
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .with_context(|| format!("GET {path} on {addr} timed out"))?
}

/// Receives deliveries until `conversation_id` reaches `last_seq`, and returns that
/// conversation's messages in arrival order.
async fn receive_through(
    deliveries: &mut mpsc::Receiver<Message>,
    conversation_id: u64,
    last_seq: u64,
) -> Result<Vec<Message>> {
    let mut messages = Vec::new();
    while messages.last().map(|m: &Message| m.seq) < Some(last_seq) {
        match tokio::time::timeout(WAIT, deliveries.recv()).await {
            Ok(Some(message)) if message.conversation_id == conversation_id => {
                messages.push(message)
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("delivery stream ended after {} messages", messages.len()),
            Err(_) => bail!(
                "timed out at {:?} waiting for seq {last_seq}",
                messages.last()
            ),
        }
    }
    Ok(messages)
}

/// Checks that seqs strictly increase and include every seq in `required`. A device may
/// also see its own messages, fetched from history to fill a gap before a later one.
fn ensure_increasing(who: &str, messages: &[Message], required: &[u64]) -> Result<()> {
    let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
    ensure!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "{who} got seqs out of order or twice: {seqs:?}"
    );
    for seq in required {
        ensure!(seqs.contains(seq), "{who} lacks seq {seq}: {seqs:?}");
    }
    Ok(())
}

/// Checks that `messages` are exactly seqs `first..=last`, in order.
fn ensure_in_order(who: &str, messages: &[Message], first: u64, last: u64) -> Result<()> {
    let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
    let expected: Vec<u64> = (first..=last).collect();
    ensure!(
        seqs == expected,
        "{who} got seqs {seqs:?}, expected {expected:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_owners_two_edges() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = LocalCluster::start(dir.path(), 3, 2)?;

    direct_chat_crosses_edges(&cluster).await?;
    one_edge_chat_skips_other_edge(&cluster).await?;
    large_group_fans_out_once_per_edge(&cluster).await?;
    presence_crosses_edges(&cluster).await?;
    Ok(())
}

/// Alice on edge 1 and Bob on edge 2 chat one to one, in order, both ways.
async fn direct_chat_crosses_edges(cluster: &LocalCluster) -> Result<()> {
    let alice = cluster.connect("alice", 0).await?;
    let bob = cluster.connect("bob", 1).await?;
    let mut bob_inbox = bob.deliveries().context("bob's deliveries were taken")?;
    let mut alice_inbox = alice
        .deliveries()
        .context("alice's deliveries were taken")?;

    let mut conversation = 0;
    for i in 0..10 {
        conversation = alice
            .send_direct("bob", format!("a{i}"))
            .await?
            .conversation_id;
    }
    let got = receive_through(&mut bob_inbox, conversation, 10).await?;
    ensure_in_order("bob", &got, 1, 10)?;

    bob.send_direct("alice", "reply").await?;
    let got = receive_through(&mut alice_inbox, conversation, 11).await?;
    ensure_increasing("alice", &got, &[11])?;

    for (client, name) in [(&alice, "alice"), (&bob, "bob")] {
        let listed = client.conversations().await?;
        ensure!(
            listed
                .iter()
                .any(|info| info.conversation_id == conversation),
            "{name}'s conversation list lacks the direct chat: {listed:?}"
        );
    }
    Ok(())
}

/// Checks that a chat between two users on edge 1 costs edge 2 no mesh delivery.
async fn one_edge_chat_skips_other_edge(cluster: &LocalCluster) -> Result<()> {
    let carol = cluster.connect("carol", 0).await?;
    let dave = cluster.connect("dave", 0).await?;
    let mut dave_inbox = dave.deliveries().context("dave's deliveries were taken")?;

    // The first message proves dave's edge registered him before the counters are read.
    let first = carol.send_direct("dave", "warm-up").await?;
    receive_through(&mut dave_inbox, first.conversation_id, first.seq).await?;
    let before = [
        cluster.mesh_deliveries(0).await?,
        cluster.mesh_deliveries(1).await?,
    ];

    let mut last = first.clone();
    for i in 0..5 {
        last = carol.send_direct("dave", format!("c{i}")).await?;
    }
    let got = receive_through(&mut dave_inbox, last.conversation_id, last.seq).await?;
    ensure_in_order("dave", &got, first.seq + 1, last.seq)?;

    let after = [
        cluster.mesh_deliveries(0).await?,
        cluster.mesh_deliveries(1).await?,
    ];
    ensure!(
        after[0] - before[0] == 5,
        "edge 1 got {} deliveries",
        after[0] - before[0]
    );
    ensure!(
        after[1] == before[1],
        "edge 2 got {} deliveries",
        after[1] - before[1]
    );
    Ok(())
}

/// Checks a 500-member group with 20 connected members over both edges. Every connected
/// device receives every message in seq order, and each edge gets one mesh delivery per
/// message.
async fn large_group_fans_out_once_per_edge(cluster: &LocalCluster) -> Result<()> {
    let mut members = Vec::new();
    for index in 0..CONNECTED {
        let user = format!("member-{index:02}");
        let client = cluster.connect(&user, index % 2).await?;
        let inbox = client.deliveries().context("deliveries were taken")?;
        members.push((user, client, inbox));
    }
    let others: Vec<String> = members[1..]
        .iter()
        .map(|(user, _, _)| user.clone())
        .chain((CONNECTED..GROUP_SIZE).map(|index| format!("offline-{index:03}")))
        .collect();
    ensure!(others.len() == GROUP_SIZE - 1);

    let creator = &members[0].1;
    let group = creator.create_group("everyone", &others).await?;
    let group_id = group.conversation_id;

    // Every member's inbox lists the group, although most of them are homed on an owner
    // other than the group's.
    for (user, client, _) in &members {
        let listed = client.conversations().await?;
        ensure!(
            listed.iter().any(|info| info.conversation_id == group_id),
            "{user}'s conversation list lacks the group"
        );
    }

    // Warm-up: once a device has a live delivery, its edge registered it with the owner.
    let warm_up = creator.send(group_id, "warm-up").await?;
    for (user, _, inbox) in members.iter_mut().skip(1) {
        let got = receive_through(inbox, group_id, warm_up.seq).await?;
        ensure_in_order(user, &got, 1, warm_up.seq)?;
    }

    let before = [
        cluster.mesh_deliveries(0).await?,
        cluster.mesh_deliveries(1).await?,
    ];
    let mut sent_by = Vec::new();
    for index in 0..GROUP_MESSAGES {
        // Senders alternate between the edges.
        let sender = index % CONNECTED;
        let ack = members[sender]
            .1
            .send(group_id, format!("g{index}"))
            .await?;
        sent_by.push((sender, ack.seq));
    }
    for (index, (user, _, inbox)) in members.iter_mut().enumerate() {
        // A device gets no delivery of its own messages, so wait for the others' last.
        let others: Vec<u64> = sent_by
            .iter()
            .filter(|(sender, _)| *sender != index)
            .map(|(_, seq)| *seq)
            .collect();
        let last = others.last().copied().unwrap_or(warm_up.seq);
        let got = receive_through(inbox, group_id, last).await?;
        ensure_increasing(user, &got, &others)?;
    }

    let after = [
        cluster.mesh_deliveries(0).await?,
        cluster.mesh_deliveries(1).await?,
    ];
    for edge in 0..2 {
        let per_message = after[edge] - before[edge];
        ensure!(
            per_message == GROUP_MESSAGES as u64,
            "edge {edge} got {per_message} mesh deliveries for {GROUP_MESSAGES} group messages"
        );
    }
    Ok(())
}

/// Checks that a watcher on edge 2 receives the presence of a user on edge 1, through the
/// owner of the user's home shard: online after a heartbeat, offline after disconnecting.
async fn presence_crosses_edges(cluster: &LocalCluster) -> Result<()> {
    let erin = cluster.connect("erin", 0).await?;
    let frank = cluster.connect("frank", 1).await?;
    // Users may watch only people they share a conversation with.
    erin.send_direct("frank", "hello").await?;
    let mut events = frank
        .presence_events()
        .context("frank's presence events were taken")?;
    let initial = frank
        .watch_presence(vec!["erin".to_owned()], Vec::new())
        .await?;
    ensure!(
        initial.len() == 1 && initial[0].user == "erin",
        "unexpected subscription reply {initial:?}"
    );
    // A device counts only from its first heartbeat, so the online state below can reach
    // frank only through the mesh.
    ensure!(
        initial[0].state == PresenceState::Offline,
        "erin is present before any heartbeat: {initial:?}"
    );

    let heartbeats = erin.keep_present(Duration::from_secs(1));
    wait_for_presence(&mut events, "erin", PresenceState::Online).await?;

    heartbeats.abort();
    erin.close().await;
    wait_for_presence(&mut events, "erin", PresenceState::Offline).await?;
    Ok(())
}

/// Waits until a presence update reports `user` in `state`.
async fn wait_for_presence(
    events: &mut mpsc::Receiver<PresenceEvent>,
    user: &str,
    state: PresenceState,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv()).await;
        let update = match event {
            Ok(Some(PresenceEvent::Update(update))) => update,
            Ok(Some(PresenceEvent::Typing(_))) => continue,
            Ok(None) => bail!("presence events ended before {user} became {state:?}"),
            Err(_) => bail!("{user} did not become {state:?} within {WAIT:?}"),
        };
        let reached = update
            .entries
            .iter()
            .any(|entry| entry.user == user && entry.state == state);
        if reached {
            return Ok(());
        }
    }
}

/// Restarting a cluster with another owner set is refused, naming the virtual shards
/// that would move, because shard data cannot move between owners yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_owner_set_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    drop(LocalCluster::start(dir.path(), 2, 1)?);
    let record = std::fs::read_to_string(dir.path().join("owner-1").join("placement.toml"))?;
    ensure!(record.contains("owner-2"), "placement record: {record}");

    let mut again = start_cluster_up(dir.path(), 3, 1)?;
    let refused = again.wait_for_line("cluster up");
    again.terminate(STOP_LIMIT);
    ensure!(refused.is_err(), "a cluster with a third owner started");

    let log = std::fs::read_to_string(dir.path().join("owner-1.log"))?;
    let error = log
        .lines()
        .find(|line| line.contains("would move virtual shards"))
        .with_context(|| format!("owner-1 logged no refusal:\n{log}"))?;
    ensure!(
        error.contains("from owner-1 to other owners (shards "),
        "{error}"
    );
    ensure!(error.contains("owner-3 (weight 1)"), "{error}");
    Ok(())
}
