//! Replays a workload plan with real Tidings clients and records every delivery.
//!
//! Runs inside the client namespace: every socket the clients open belongs to the
//! namespace of the thread that runs the tokio runtime (see [`crate::run`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidings_clients::{Client, ClientConfig, ClientError, ConnectError, Transport, TransportStats};
use tidings_schema::ids::direct_conversation_id;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::stats::{Delivery, DeliveryLedger};
use crate::workload::{BodyHeader, PlannedConversation, PlannedSend, WorkloadConfig};

/// Everything one transport's run needs.
#[derive(Debug, Clone)]
pub struct DriveConfig {
    /// Transport every client uses.
    pub transport: Transport,
    /// QUIC address of the node, `host:port`.
    pub server: String,
    /// WebSocket URL of the node.
    pub ws_url: String,
    /// CA certificate (PEM) the node's certificate chains to.
    pub ca_pem: PathBuf,
    /// User id and token of each client, in client index order.
    pub users: Vec<(String, String)>,
    /// The workload.
    pub workload: WorkloadConfig,
    /// The sends to replay, ordered by time.
    pub plan: Vec<PlannedSend>,
    /// Maximum time to wait for missing deliveries after the last send.
    pub drain: Duration,
    /// Prefix of group names, unique per run.
    pub group_prefix: String,
    /// File that receives the TLS secrets of every client, when set.
    pub key_log_file: Option<PathBuf>,
}

/// Measurements of one run.
#[derive(Debug)]
pub struct DriveOutcome {
    /// Sends and deliveries.
    pub ledger: DeliveryLedger,
    /// Time to connect and receive `Welcome`, per client, in milliseconds.
    pub handshakes_ms: Vec<f64>,
    /// Sessions lost during the run, over all clients.
    pub disconnects: u64,
    /// Length of each outage that ended before the run did, in milliseconds.
    pub outages_ms: Vec<f64>,
    /// Time origin of the latency samples' send times.
    pub origin: Instant,
    /// Transport statistics of each client, read just before it closed.
    pub transport_stats: Vec<TransportStats>,
}

/// Interval of the progress lines on stderr.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// Interval at which each client's connection state is sampled.
///
/// NOTE: an outage shorter than this can go unseen, so `disconnects` is a lower bound.
const CONNECTION_SAMPLE_INTERVAL: Duration = Duration::from_millis(20);

/// Disconnects and outage lengths of all clients.
#[derive(Debug, Default)]
struct OutageLog {
    disconnects: u64,
    outages_ms: Vec<f64>,
}

/// A failure that stops a run before its measurements mean anything.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriveError {
    /// A client could not connect.
    #[error("client {user} failed to connect over {transport}")]
    Connect {
        /// User id of the client.
        user: String,
        /// Transport it used.
        transport: Transport,
        /// The connection error.
        #[source]
        source: ConnectError,
    },
    /// A group could not be created.
    #[error("failed to create group {name}")]
    CreateGroup {
        /// Group name.
        name: String,
        /// The request error.
        #[source]
        source: ClientError,
    },
}

/// Destination of a conversation's messages.
#[derive(Debug, Clone)]
struct Target {
    conversation_id: u64,
    /// Set for direct conversations, which the first send creates.
    direct: bool,
    recipients: usize,
}

type SharedLedger = Arc<Mutex<DeliveryLedger>>;

/// Connects every client, sets up the conversations, replays the plan and waits for the
/// deliveries until they are all in or `config.drain` passes.
pub async fn drive(config: DriveConfig) -> Result<DriveOutcome, DriveError> {
    let origin = Instant::now();
    let (clients, handshakes_ms) = connect_all(&config).await?;
    let conversations = config.workload.conversations();
    let targets = create_conversations(&config, &clients, &conversations).await?;

    let ledger: SharedLedger = Arc::default();
    let progress = Arc::new(Notify::new());
    let mut background = JoinSet::new();
    let outages: Arc<Mutex<OutageLog>> = Arc::default();
    for (index, client) in clients.iter().enumerate() {
        background.spawn(watch_connection(client.clone(), outages.clone()));
        let receiver = receive(
            index,
            client.clone(),
            origin,
            ledger.clone(),
            progress.clone(),
        );
        background.spawn(receiver);
        if config.workload.heartbeat_ms > 0 {
            let heartbeats =
                client.keep_present(Duration::from_millis(config.workload.heartbeat_ms));
            background.spawn(async move {
                let _ = heartbeats.await;
            });
        }
    }

    let total = config.plan.len();
    background.spawn(show_progress(config.transport, total, ledger.clone()));

    let mut sends = JoinSet::new();
    let start = tokio::time::Instant::now();
    for (send_index, planned) in config.plan.iter().enumerate() {
        tokio::time::sleep_until(start + planned.at).await;
        let target = targets[planned.conversation].clone();
        let kind = conversations[planned.conversation].kind;
        let send_index = send_index as u64;
        lock(&ledger).record_send(send_index, kind, target.recipients);

        let sender = planned.sender;
        let peer = direct_peer(
            &config,
            &conversations[planned.conversation],
            sender,
            &target,
        );
        let header = BodyHeader {
            send_index,
            sent_at_micros: micros_since(origin),
        };
        let body = header.encode(planned.size);
        let client = clients[sender].clone();
        let ledger = ledger.clone();
        sends.spawn(async move {
            let key = tidings_clients::new_client_msg_id();
            let outcome = client
                .send_with_key(target.conversation_id, peer, key, body)
                .await;
            if let Err(error) = &outcome {
                tracing::warn!(send_index, %error, "workload send failed");
            }
            lock(&ledger).record_send_outcome(outcome.is_ok());
        });
    }

    let deadline = tokio::time::Instant::now() + config.drain;
    let _ = tokio::time::timeout_at(deadline, async {
        while sends.join_next().await.is_some() {}
    })
    .await;
    while !lock(&ledger).is_complete() {
        if tokio::time::timeout_at(deadline, progress.notified())
            .await
            .is_err()
        {
            break;
        }
    }

    sends.abort_all();
    background.abort_all();
    // NOTE: read before closing, because a WebSocket's TCP counters are gone once its
    // socket is.
    let transport_stats = clients.iter().map(Client::transport_stats).collect();
    for client in &clients {
        client.close().await;
    }
    let ledger = std::mem::take(&mut *lock(&ledger));
    let outages = std::mem::take(&mut *outages.lock().expect("outage log mutex poisoned"));
    Ok(DriveOutcome {
        ledger,
        handshakes_ms,
        disconnects: outages.disconnects,
        outages_ms: outages.outages_ms,
        origin,
        transport_stats,
    })
}

async fn connect_all(config: &DriveConfig) -> Result<(Vec<Client>, Vec<f64>), DriveError> {
    let mut connects = JoinSet::new();
    for (index, (user, token)) in config.users.iter().enumerate() {
        let mut client_config = ClientConfig::new(
            &config.server,
            token,
            format!("netsim-{index}"),
            &config.ca_pem,
        );
        client_config.transport = config.transport;
        client_config.ws_url = Some(config.ws_url.clone());
        // Enough for the whole plan, so a slow reader never throttles the node.
        client_config.delivery_buffer = config.plan.len().max(1024);
        client_config.key_log_file = config.key_log_file.clone();
        let user = user.clone();
        let transport = config.transport;
        connects.spawn(async move {
            let started = Instant::now();
            let client =
                Client::connect(client_config)
                    .await
                    .map_err(|source| DriveError::Connect {
                        user,
                        transport,
                        source,
                    })?;
            Ok::<_, DriveError>((index, client, started.elapsed().as_secs_f64() * 1000.0))
        });
    }

    let mut connected = Vec::new();
    while let Some(joined) = connects.join_next().await {
        let outcome = joined.expect("connect task panicked");
        connected.push(outcome?);
    }
    connected.sort_by_key(|(index, _, _)| *index);
    let handshakes = connected.iter().map(|(_, _, millis)| *millis).collect();
    let clients = connected.into_iter().map(|(_, client, _)| client).collect();
    Ok((clients, handshakes))
}

async fn create_conversations(
    config: &DriveConfig,
    clients: &[Client],
    conversations: &[PlannedConversation],
) -> Result<Vec<Target>, DriveError> {
    let mut targets = Vec::new();
    for conversation in conversations {
        let user = |index: usize| config.users[index].0.clone();
        let recipients = conversation.members.len() - 1;
        if conversation.members.len() == 2 {
            let first = user(conversation.members[0]);
            let second = user(conversation.members[1]);
            targets.push(Target {
                conversation_id: direct_conversation_id(&first, &second),
                direct: true,
                recipients,
            });
            continue;
        }

        let name = format!(
            "{}-{}-{}",
            config.group_prefix,
            conversation.kind.as_str(),
            conversation.index
        );
        let others: Vec<String> = conversation.members[1..]
            .iter()
            .map(|&index| user(index))
            .collect();
        let info = clients[conversation.members[0]]
            .create_group(&name, &others)
            .await
            .map_err(|source| DriveError::CreateGroup {
                name: name.clone(),
                source,
            })?;
        targets.push(Target {
            conversation_id: info.conversation_id,
            direct: false,
            recipients,
        });
    }
    Ok(targets)
}

/// Returns the other member of a direct conversation, which a send names so the node
/// creates the conversation on first use.
fn direct_peer(
    config: &DriveConfig,
    conversation: &PlannedConversation,
    sender: usize,
    target: &Target,
) -> Option<String> {
    if !target.direct {
        return None;
    }
    let peer = conversation
        .members
        .iter()
        .copied()
        .find(|&member| member != sender)?;
    Some(config.users[peer].0.clone())
}

/// Records each workload delivery of one client until the client closes.
async fn receive(
    recipient: usize,
    client: Client,
    origin: Instant,
    ledger: SharedLedger,
    progress: Arc<Notify>,
) {
    let Some(mut deliveries) = client.deliveries() else {
        return;
    };
    let user = client.user_id();
    while let Some(message) = deliveries.recv().await {
        let received_at_micros = micros_since(origin);
        if message.sender == user {
            continue;
        }
        let Some(header) = BodyHeader::decode(&message.body) else {
            continue;
        };
        lock(&ledger).record_delivery(Delivery {
            recipient,
            send_index: header.send_index,
            conversation_id: message.conversation_id,
            seq: message.seq,
            sent_at_micros: header.sent_at_micros,
            received_at_micros,
        });
        progress.notify_one();
    }
}

/// Prints a progress line to stderr every few seconds until aborted.
async fn show_progress(transport: Transport, total: usize, ledger: SharedLedger) {
    let started = Instant::now();
    let mut ticks = tokio::time::interval(PROGRESS_INTERVAL);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let counts = lock(&ledger).counts();
        eprintln!(
            "netsim: {transport} {:>4.0} s: sent {}/{total}, delivered {}/{}",
            started.elapsed().as_secs_f64(),
            counts.sent,
            counts.delivered,
            counts.expected
        );
    }
}

/// Samples whether `client` has a live session and logs each outage until aborted.
async fn watch_connection(client: Client, log: Arc<Mutex<OutageLog>>) {
    let mut down_since: Option<Instant> = None;
    let mut ticks = tokio::time::interval(CONNECTION_SAMPLE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        let connected = client.is_connected();
        match (connected, down_since) {
            (false, None) => {
                down_since = Some(Instant::now());
                log.lock().expect("outage log mutex poisoned").disconnects += 1;
            }
            (true, Some(since)) => {
                let millis = since.elapsed().as_secs_f64() * 1000.0;
                tracing::debug!(user = %client.user_id(), outage_ms = millis, "reconnected");
                log.lock()
                    .expect("outage log mutex poisoned")
                    .outages_ms
                    .push(millis);
                down_since = None;
            }
            _ => {}
        }
    }
}

fn micros_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn lock(ledger: &SharedLedger) -> std::sync::MutexGuard<'_, DeliveryLedger> {
    ledger.lock().expect("delivery ledger mutex poisoned")
}
