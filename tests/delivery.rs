//! One-to-one and group delivery through the real `tidings` binary, in both layouts: one
//! `serve` process, and separate `owner` and `edge` processes talking Cap'n Proto RPC.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tidings_clients::{Client, ClientConfig, Message};
use tidings_schema::frame::MessageKind;
use tokio::sync::mpsc;

use support::{ServeNode, TwoProcessCluster};

const WAIT: Duration = Duration::from_secs(20);

async fn connect(addr: SocketAddr, token: String, device: &str, ca: &Path) -> Result<Client> {
    let config = ClientConfig::new(addr.to_string(), token, device, ca);
    Client::connect(config)
        .await
        .with_context(|| format!("{device} failed to connect to {addr}"))
}

/// Receives the next `count` deliveries, failing if any wait exceeds [`WAIT`].
async fn receive(deliveries: &mut mpsc::Receiver<Message>, count: usize) -> Result<Vec<Message>> {
    let mut messages = Vec::with_capacity(count);
    while messages.len() < count {
        match tokio::time::timeout(WAIT, deliveries.recv()).await {
            Ok(Some(message)) => messages.push(message),
            Ok(None) => bail!("delivery stream ended after {} messages", messages.len()),
            Err(_) => bail!("timed out after {} of {count} deliveries", messages.len()),
        }
    }
    Ok(messages)
}

/// Alice and Bob chat one to one, then Alice, Bob and Carol chat in a group; every member
/// receives every message in seq order, and history returns them newest first.
async fn chat_scenario(
    addr: SocketAddr,
    ca: &Path,
    token: impl Fn(&str) -> Result<String>,
) -> Result<()> {
    let alice = connect(addr, token("alice")?, "alice-phone", ca).await?;
    let bob = connect(addr, token("bob")?, "bob-phone", ca).await?;
    let carol = connect(addr, token("carol")?, "carol-phone", ca).await?;
    let mut bob_inbox = bob.deliveries().context("bob's deliveries were taken")?;
    let mut carol_inbox = carol
        .deliveries()
        .context("carol's deliveries were taken")?;

    // One to one.
    let mut acks = Vec::new();
    for i in 0..20 {
        acks.push(alice.send_direct("bob", format!("direct {i}")).await?);
    }
    let direct = receive(&mut bob_inbox, 20).await?;
    for (i, (message, ack)) in direct.iter().zip(&acks).enumerate() {
        ensure!(
            message.body == format!("direct {i}"),
            "bob got {:?} at {i}",
            message.body
        );
        ensure!(message.seq == ack.seq && message.message_id == ack.message_id);
        ensure!(message.sender == "alice");
    }
    let seqs: Vec<u64> = direct.iter().map(|m| m.seq).collect();
    ensure!(seqs == (1..=20).collect::<Vec<_>>(), "direct seqs {seqs:?}");

    // Group: the creation message, then alternating senders.
    let group = alice
        .create_group("friends", &["bob".to_owned(), "carol".to_owned()])
        .await?;
    let group_id = group.conversation_id;
    let created = receive(&mut carol_inbox, 1).await?;
    ensure!(created[0].kind == MessageKind::System && created[0].seq == 1);
    ensure!(receive(&mut bob_inbox, 1).await?[0].conversation_id == group_id);

    for i in 0..10 {
        alice.send(group_id, format!("alice {i}")).await?;
        bob.send(group_id, format!("bob {i}")).await?;
    }
    let at_carol = receive(&mut carol_inbox, 20).await?;
    let carol_seqs: Vec<u64> = at_carol.iter().map(|m| m.seq).collect();
    ensure!(
        carol_seqs == (2..=21).collect::<Vec<_>>(),
        "carol's seqs {carol_seqs:?}"
    );
    for (i, pair) in at_carol.chunks(2).enumerate() {
        ensure!(pair[0].body == format!("alice {i}") && pair[1].body == format!("bob {i}"));
    }
    // Bob's own messages go to his other devices only, so his phone sees Alice's ten.
    let at_bob = receive(&mut bob_inbox, 10).await?;
    ensure!(
        at_bob.iter().all(|m| m.sender == "alice"),
        "bob received his own message"
    );
    let carol_reply = carol.send(group_id, "carol here").await?;
    ensure!(carol_reply.seq == 22);
    ensure!(receive(&mut bob_inbox, 1).await?[0].body == "carol here");

    // History, newest first, in pages.
    let mut seen = Vec::new();
    let mut before = 0;
    loop {
        let page = carol.history(group_id, before, 5).await?;
        seen.extend(page.messages.iter().map(|m| m.seq));
        if page.next_before_seq == 0 {
            break;
        }
        before = page.next_before_seq;
    }
    ensure!(
        seen == (1..=22).rev().collect::<Vec<_>>(),
        "history seqs {seen:?}"
    );

    for client in [alice, bob, carol] {
        client.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_delivers_direct_and_group() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = ServeNode::start(dir.path())?;
    let data_dir = dir.path().to_owned();
    chat_scenario(node.quic, &node.ca_path(), |user| {
        support::token(&data_dir, user)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_and_edge_processes_deliver() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cluster = TwoProcessCluster::start(dir.path())?;
    chat_scenario(cluster.quic, &cluster.ca_path(), |user| cluster.token(user)).await
}
