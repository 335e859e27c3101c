//! Durability under SIGKILL: several clients send a few thousand messages, the process
//! that owns the data is killed mid-stream and restarted, and every message any client saw
//! acknowledged must be stored exactly once, in order, with its acknowledged seq and id.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tidings_clients::{Client, ClientConfig, SendAck};
use tidings_schema::frame::MessageKind;
use tokio::sync::watch;

use support::{ServeNode, TwoProcessCluster};

const SENDERS: [&str; 4] = ["alice", "bob", "carol", "dave"];
const PER_SENDER: usize = 750;
/// Acknowledged sends after which the owner is killed.
const KILL_AFTER: usize = 1_000;
const WAIT: Duration = Duration::from_secs(120);

struct Acked {
    body: String,
    ack: SendAck,
}

async fn connect(addr: SocketAddr, token: String, device: &str, ca: &Path) -> Result<Client> {
    let mut config = ClientConfig::new(addr.to_string(), token, device, ca);
    // Sends must outlast the owner's restart, which takes up to a few seconds.
    config.request_timeout = Duration::from_secs(60);
    config.max_attempts = 100;
    Client::connect(config)
        .await
        .with_context(|| format!("{device} failed to connect"))
}

/// Starts every sender, each sending `PER_SENDER` messages into one shared group, and
/// returns the group id, the spawned tasks and a client for reading history. `acked`
/// counts acknowledgements.
async fn start_senders(
    addr: SocketAddr,
    ca: &Path,
    token: &dyn Fn(&str) -> Result<String>,
    acked: Arc<watch::Sender<usize>>,
) -> Result<(
    u64,
    Vec<tokio::task::JoinHandle<Result<Vec<Acked>>>>,
    Client,
)> {
    let admin = connect(addr, token("alice")?, "alice-admin", ca).await?;
    let members: Vec<String> = SENDERS[1..].iter().map(|s| (*s).to_owned()).collect();
    let group = admin
        .create_group("durable", &members)
        .await?
        .conversation_id;

    let mut tasks = Vec::new();
    for sender in SENDERS {
        let client = connect(addr, token(sender)?, &format!("{sender}-load"), ca).await?;
        let acked = Arc::clone(&acked);
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::with_capacity(PER_SENDER);
            for i in 0..PER_SENDER {
                let body = format!("{sender} {i}");
                let ack = client
                    .send(group, body.clone())
                    .await
                    .with_context(|| format!("{sender} send {i} failed"))?;
                acked.send_modify(|count| *count += 1);
                sent.push(Acked { body, ack });
            }
            client.close().await;
            Ok(sent)
        }));
    }
    Ok((group, tasks, admin))
}

/// Waits until `acked` reaches `target`, bounded by [`WAIT`].
async fn wait_for_acks(acked: &watch::Sender<usize>, target: usize) -> Result<()> {
    let mut count = acked.subscribe();
    tokio::time::timeout(WAIT, count.wait_for(|&n| n >= target))
        .await
        .with_context(|| format!("senders stalled before {target} acks"))?
        .context("senders stopped")?;
    Ok(())
}

/// Reads the whole history of `group` and checks it against every acknowledgement.
async fn verify(reader: &Client, group: u64, acked: &[Acked]) -> Result<()> {
    let stored = support::read_history(reader, group).await?;

    // Gapless seqs from 1, and no body stored twice.
    let seqs: Vec<u64> = stored.keys().copied().collect();
    let expected: Vec<u64> = (1..=stored.len() as u64).collect();
    ensure!(
        seqs == expected,
        "seqs are not gapless: {} rows",
        seqs.len()
    );
    let mut bodies: HashMap<&str, u64> = HashMap::new();
    for message in stored.values().filter(|m| m.kind == MessageKind::User) {
        if let Some(first) = bodies.insert(&message.body, message.seq) {
            anyhow::bail!(
                "body {:?} stored at seq {first} and {}",
                message.body,
                message.seq
            );
        }
    }

    let acked_count = acked.len();
    for Acked { body, ack } in acked {
        let message = stored
            .get(&ack.seq)
            .with_context(|| format!("acknowledged seq {} ({body}) is missing", ack.seq))?;
        ensure!(
            &message.body == body,
            "seq {} holds {:?}, acked {body:?}",
            ack.seq,
            message.body
        );
        ensure!(
            message.message_id == ack.message_id,
            "seq {} changed its id",
            ack.seq
        );
    }
    ensure!(
        acked_count == SENDERS.len() * PER_SENDER,
        "only {acked_count} sends acked"
    );
    ensure!(
        bodies.len() == acked_count,
        "{} user messages for {acked_count} acks",
        bodies.len()
    );

    // Each sender's messages are in the order it sent them.
    for sender in SENDERS {
        let mine: Vec<u64> = acked
            .iter()
            .filter(|a| a.body.starts_with(&format!("{sender} ")))
            .map(|a| a.ack.seq)
            .collect();
        ensure!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "{sender}'s messages are out of order"
        );
    }
    Ok(())
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Result<Vec<Acked>>>>) -> Result<Vec<Acked>> {
    let mut all = Vec::new();
    for task in tasks {
        all.extend(
            tokio::time::timeout(WAIT, task)
                .await
                .context("senders timed out")???,
        );
    }
    Ok(all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_process_sigkill_loses_no_ack() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = TwoProcessCluster::start(dir.path())?;
    let ca: PathBuf = cluster.ca_path();
    let cluster_file = cluster.cluster_file.clone();
    let token = move |user: &str| -> Result<String> {
        let output = std::process::Command::new(support::tidings_bin())
            .args(["token", "--user", user, "--cluster"])
            .arg(&cluster_file)
            .output()?;
        ensure!(output.status.success(), "tidings token failed");
        Ok(String::from_utf8(output.stdout)?.trim().to_owned())
    };

    let acked = Arc::new(watch::Sender::new(0));
    let (group, tasks, reader) =
        start_senders(cluster.quic, &ca, &token, Arc::clone(&acked)).await?;
    wait_for_acks(&acked, KILL_AFTER).await?;
    cluster.restart_owner()?;
    eprintln!("owner killed after {} acks and restarted", *acked.borrow());

    let all = collect(tasks).await?;
    verify(&reader, group, &all).await?;

    // A retry of an early send on a new connection, after the restart, returns the
    // original acknowledgement and stores nothing.
    let first = &all[0];
    let retry_client = connect(cluster.quic, token("alice")?, "alice-retry", &ca).await?;
    let again = retry_client
        .send_with_key(
            group,
            None,
            first.ack.client_msg_id.clone(),
            first.body.clone(),
        )
        .await?;
    assert_eq!(again, first.ack);
    let newest = reader.history(group, 0, 1).await?;
    assert_eq!(
        newest.messages[0].seq,
        (SENDERS.len() * PER_SENDER) as u64 + 1
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_sigkill_loses_no_ack() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut node = ServeNode::start(dir.path())?;
    let ca = node.ca_path();
    let data_dir = dir.path().to_owned();
    let token = move |user: &str| support::token(&data_dir, user);

    let acked = Arc::new(watch::Sender::new(0));
    let (group, tasks, reader) = start_senders(node.quic, &ca, &token, Arc::clone(&acked)).await?;
    wait_for_acks(&acked, KILL_AFTER).await?;
    node.restart()?;
    eprintln!("serve killed after {} acks and restarted", *acked.borrow());

    let all = collect(tasks).await?;
    verify(&reader, group, &all).await
}

/// Inbox advances (each member's last seq, which unread counts come from) commit without
/// an fsync, and the storage writer syncs them within 200 ms. A SIGKILL after that keeps
/// every member's unread count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_counts_survive_sigkill() -> Result<()> {
    const MEMBERS: [&str; 6] = ["bob", "carol", "dave", "erin", "frank", "grace"];
    const SENT: u64 = 20;

    let dir = tempfile::tempdir()?;
    let mut node = ServeNode::start(dir.path())?;
    let ca = node.ca_path();
    let alice = connect(
        node.quic,
        support::token(dir.path(), "alice")?,
        "alice",
        &ca,
    )
    .await?;
    let members: Vec<String> = MEMBERS.iter().map(|m| (*m).to_owned()).collect();
    let group = alice
        .create_group("unread", &members)
        .await?
        .conversation_id;
    let mut last = 0;
    for n in 0..SENT {
        last = alice.send(group, format!("message {n}")).await?.seq;
    }
    alice.close().await;

    // Six members spread over the node's four storage files, so most of their inbox rows
    // live in another file than the group. The wait is longer than the writer's 200 ms
    // sync interval, the behaviour under test, which no client can observe.
    tokio::time::sleep(Duration::from_secs(1)).await;
    node.restart()?;

    for member in MEMBERS {
        let client = connect(node.quic, support::token(dir.path(), member)?, member, &ca).await?;
        let entry = client.unread(group).await?;
        assert_eq!(entry.last_seq, last, "{member}'s last seq after SIGKILL");
        // The group creation message is the first seq, and no member has read anything.
        assert_eq!(
            entry.unread_count, last,
            "{member}'s unread count after SIGKILL"
        );
        client.close().await;
    }
    Ok(())
}
