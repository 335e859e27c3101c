//! The client library against a real in-process edge and owner store on 127.0.0.1:0:
//! sends, deliveries, history, groups, rejections and reconnects.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use tempfile::TempDir;
use tidings_clients::cli::{ClientArgs, run};
use tidings_clients::{Client, ClientConfig, ClientError, Message};
use tidings_edge::{
    Edge, EdgeConfig, EdgeHandle, KeySource, RateConfig, TlsSource, TokenSigner, TokenVerifier,
};
use tidings_relay::{OwnerHandle, Router};
use tidings_schema::ErrorCode;
use tidings_schema::ids::direct_conversation_id;
use tidings_store::{Owner, OwnerConfig};
use tokio::sync::mpsc;

/// Upper bound on any single wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

struct Server {
    edge: EdgeHandle,
    owner: Arc<Owner>,
    keys: KeySource,
    pki_dir: PathBuf,
    _dir: TempDir,
}

async fn start_edge(
    listen: SocketAddr,
    owner: &Arc<Owner>,
    keys: &KeySource,
    pki_dir: &std::path::Path,
) -> Result<EdgeHandle> {
    start_named_edge(listen, 1, owner, keys, pki_dir).await
}

async fn start_named_edge(
    listen: SocketAddr,
    node_id: u16,
    owner: &Arc<Owner>,
    keys: &KeySource,
    pki_dir: &std::path::Path,
) -> Result<EdgeHandle> {
    let config = edge_config(listen, node_id, pki_dir);
    start_edge_with(config, owner, keys).await
}

fn edge_config(listen: SocketAddr, node_id: u16, pki_dir: &std::path::Path) -> EdgeConfig {
    EdgeConfig {
        listen,
        node_id,
        edge_id: format!("edge-{node_id}"),
        tls: TlsSource::DevPki {
            dir: pki_dir.to_owned(),
        },
        ..EdgeConfig::default()
    }
}

async fn start_edge_with(
    config: EdgeConfig,
    owner: &Arc<Owner>,
    keys: &KeySource,
) -> Result<EdgeHandle> {
    let router = Router::single(OwnerHandle::Local(Arc::clone(owner)));
    Ok(Edge::start(config, TokenVerifier::new(keys)?, router).await?)
}

impl Server {
    async fn start() -> Result<Server> {
        let dir = tempfile::tempdir()?;
        let owner = Owner::open(OwnerConfig::new(dir.path().join("store")))?;
        let keys = KeySource::Hs256 {
            secret: b"client-test-secret-of-32-bytes!!".to_vec(),
        };
        let pki_dir = dir.path().join("pki");
        let edge = start_edge("127.0.0.1:0".parse()?, &owner, &keys, &pki_dir).await?;
        Ok(Server {
            edge,
            owner,
            keys,
            pki_dir,
            _dir: dir,
        })
    }

    fn config(&self, user: &str) -> Result<ClientConfig> {
        let token = TokenSigner::new(&self.keys)?.sign(user, Duration::from_secs(600))?;
        let mut config = ClientConfig::new(
            self.edge.local_addr().to_string(),
            token,
            format!("{user}-device"),
            self.pki_dir.join("ca.pem"),
        );
        config.request_timeout = WAIT;
        Ok(config)
    }

    async fn connect(&self, user: &str) -> Result<Client> {
        let client = Client::connect(self.config(user)?)
            .await
            .with_context(|| format!("connecting as {user}"))?;
        Ok(client)
    }
}

async fn next_delivery(deliveries: &mut mpsc::Receiver<Message>) -> Result<Message> {
    tokio::time::timeout(WAIT, deliveries.recv())
        .await
        .context("timed out waiting for a delivery")?
        .context("delivery channel closed")
}

#[tokio::test]
async fn direct_send_is_delivered_and_stored() -> Result<()> {
    let server = Server::start().await?;
    let alice = server.connect("alice").await?;
    let bob = server.connect("bob").await?;
    let mut bob_inbox = bob.deliveries().context("deliveries taken twice")?;
    assert_eq!(alice.user_id(), "alice");

    let first = alice.send_direct("bob", "hello bob").await?;
    let second = alice.send_direct("bob", "second").await?;
    let conversation_id = direct_conversation_id("alice", "bob");
    assert_eq!(first.conversation_id, conversation_id);
    assert!(second.seq > first.seq);
    assert!(second.message_id > first.message_id);

    let delivered = next_delivery(&mut bob_inbox).await?;
    assert_eq!(delivered.conversation_id, conversation_id);
    assert_eq!(delivered.seq, first.seq);
    assert_eq!(delivered.message_id, first.message_id);
    assert_eq!(delivered.sender, "alice");
    assert_eq!(delivered.body, "hello bob");
    let delivered = next_delivery(&mut bob_inbox).await?;
    assert_eq!(delivered.seq, second.seq);
    assert_eq!(delivered.body, "second");
    assert_eq!(bob.delivered_seq(conversation_id), second.seq);

    let page = bob.history(conversation_id, 0, 10).await?;
    let seqs: Vec<u64> = page.messages.iter().map(|message| message.seq).collect();
    assert_eq!(seqs, [second.seq, first.seq]);
    assert_eq!(page.messages[1].body, "hello bob");

    let older = bob.history(conversation_id, second.seq, 10).await?;
    assert_eq!(older.messages.len(), 1);
    assert_eq!(older.messages[0].seq, first.seq);
    Ok(())
}

#[tokio::test]
async fn same_key_send_is_stored_once() -> Result<()> {
    let server = Server::start().await?;
    let alice = server.connect("alice").await?;
    let conversation_id = direct_conversation_id("alice", "bob");
    let key = tidings_clients::new_client_msg_id();
    let peer = Some("bob".to_owned());

    let first = alice
        .send_with_key(
            conversation_id,
            peer.clone(),
            key.clone(),
            "once".to_owned(),
        )
        .await?;
    let repeat = alice
        .send_with_key(
            conversation_id,
            peer.clone(),
            key.clone(),
            "once".to_owned(),
        )
        .await?;
    assert_eq!(repeat.seq, first.seq);
    assert_eq!(repeat.message_id, first.message_id);

    let conflict = alice
        .send_with_key(conversation_id, peer, key, "different body".to_owned())
        .await
        .expect_err("the same key with another body must be rejected");
    assert_eq!(conflict.code(), Some(ErrorCode::IdempotencyConflict));

    let page = alice.history(conversation_id, 0, 10).await?;
    assert_eq!(page.messages.len(), 1);
    Ok(())
}

#[tokio::test]
async fn group_lifecycle_and_rejections() -> Result<()> {
    let server = Server::start().await?;
    let alice = server.connect("alice").await?;
    let carol = server.connect("carol").await?;
    let mut carol_inbox = carol.deliveries().context("deliveries taken twice")?;

    let group = alice.create_group("team", &["bob".to_owned()]).await?;
    let members: Vec<&str> = group.members.iter().map(|m| m.user_id.as_str()).collect();
    assert!(members.contains(&"alice"), "{members:?}");
    assert!(members.contains(&"bob"), "{members:?}");

    // carol is not a member yet, so the send fails at once.
    let rejected = carol
        .send(group.conversation_id, "let me in")
        .await
        .unwrap_err();
    assert_eq!(rejected.code(), Some(ErrorCode::NotMember));
    assert!(matches!(rejected, ClientError::Rejected(_)), "{rejected:?}");

    let updated = alice
        .add_members(group.conversation_id, &["carol".to_owned()])
        .await?;
    assert!(updated.members.iter().any(|m| m.user_id == "carol"));

    let ack = alice.send(group.conversation_id, "welcome carol").await?;
    let mut delivered = next_delivery(&mut carol_inbox).await?;
    // The membership change may arrive first as a system message.
    for _ in 0..4 {
        if delivered.seq == ack.seq {
            break;
        }
        delivered = next_delivery(&mut carol_inbox).await?;
    }
    assert_eq!(delivered.seq, ack.seq);
    assert_eq!(delivered.body, "welcome carol");

    let listed = carol.conversations().await?;
    assert!(
        listed
            .iter()
            .any(|c| c.conversation_id == group.conversation_id)
    );

    carol.leave(group.conversation_id).await?;
    let after_leave = carol.send(group.conversation_id, "bye").await.unwrap_err();
    assert_eq!(after_leave.code(), Some(ErrorCode::NotMember));
    Ok(())
}

#[tokio::test]
async fn oversized_body_is_rejected() -> Result<()> {
    let server = Server::start().await?;
    let alice = server.connect("alice").await?;
    let limit = alice.welcome().limits.max_message_bytes as usize;

    let error = alice
        .send_direct("bob", "x".repeat(limit + 1))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::MessageTooLarge));
    Ok(())
}

#[tokio::test]
async fn bad_token_fails_connect() -> Result<()> {
    let server = Server::start().await?;
    let mut config = server.config("alice")?;
    config.token = "not-a-jwt".to_owned();

    let error = match Client::connect(config).await {
        Ok(_) => anyhow::bail!("connect with a bad token succeeded"),
        Err(error) => error,
    };
    assert!(!error.is_transient(), "{error}");
    Ok(())
}

/// Starts an edge on `addr` that a stopped edge used. The old endpoint releases its UDP
/// socket from a background task shortly after shutdown and reports no event for it, so
/// binding is retried a bounded number of times.
async fn restart_edge_on(addr: SocketAddr, node_id: u16, server: &Server) -> Result<EdgeHandle> {
    let mut last_error = None;
    for _ in 0..100 {
        match start_named_edge(addr, node_id, &server.owner, &server.keys, &server.pki_dir).await {
            Ok(edge) => return Ok(edge),
            Err(error) => last_error = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(last_error.expect("at least one attempt ran"))
}

#[tokio::test]
async fn client_reconnects_after_edge_restart() -> Result<()> {
    let mut server = Server::start().await?;
    let alice = server.connect("alice").await?;
    let bob = server.connect("bob").await?;
    let mut bob_inbox = bob.deliveries().context("deliveries taken twice")?;
    let before = alice.send_direct("bob", "before").await?;
    assert_eq!(next_delivery(&mut bob_inbox).await?.seq, before.seq);

    // Both clients only know this address, so the new edge must take it over.
    let addr = server.edge.local_addr();
    let placeholder = start_edge(
        "127.0.0.1:0".parse()?,
        &server.owner,
        &server.keys,
        &server.pki_dir,
    )
    .await?;
    std::mem::replace(&mut server.edge, placeholder)
        .shutdown()
        .await;
    let restarted = restart_edge_on(addr, 1, &server).await?;
    std::mem::replace(&mut server.edge, restarted)
        .shutdown()
        .await;

    // The send waits for the reconnect instead of failing.
    let after = alice.send_direct("bob", "after").await?;
    assert!(after.seq > before.seq);
    let page = alice.history(after.conversation_id, 0, 10).await?;
    let bodies: Vec<&str> = page.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["after", "before"]);

    // bob reconnected too and receives live deliveries again.
    let delivered = next_delivery(&mut bob_inbox).await?;
    assert_eq!(delivered.seq, after.seq);
    assert_eq!(delivered.body, "after");
    Ok(())
}

#[tokio::test]
async fn reconnect_fills_missed_messages() -> Result<()> {
    let server = Server::start().await?;
    let second = start_named_edge(
        "127.0.0.1:0".parse()?,
        2,
        &server.owner,
        &server.keys,
        &server.pki_dir,
    )
    .await?;
    let second_addr = second.local_addr();
    let alice = server.connect("alice").await?;
    let mut bob_config = server.config("bob")?;
    bob_config.server = second_addr.to_string();
    let bob = Client::connect(bob_config).await?;
    let mut bob_inbox = bob.deliveries().context("deliveries taken twice")?;

    let first = alice.send_direct("bob", "one").await?;
    assert_eq!(next_delivery(&mut bob_inbox).await?.seq, first.seq);

    // bob's edge is down while alice sends, so only history has these messages.
    second.shutdown().await;
    let missed_a = alice.send_direct("bob", "two").await?;
    let missed_b = alice.send_direct("bob", "three").await?;
    let restarted = restart_edge_on(second_addr, 2, &server).await?;

    let delivered = next_delivery(&mut bob_inbox).await?;
    assert_eq!(delivered.seq, missed_a.seq);
    assert_eq!(delivered.body, "two");
    let delivered = next_delivery(&mut bob_inbox).await?;
    assert_eq!(delivered.seq, missed_b.seq);
    assert_eq!(delivered.body, "three");

    // Live deliveries continue after the filled gap, without repeats.
    let live = alice.send_direct("bob", "four").await?;
    let delivered = next_delivery(&mut bob_inbox).await?;
    assert_eq!(delivered.seq, live.seq);
    assert_eq!(bob.delivered_seq(live.conversation_id), live.seq);
    restarted.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn rate_limited_sends_are_retried() -> Result<()> {
    let mut server = Server::start().await?;
    let mut config = edge_config("127.0.0.1:0".parse()?, 3, &server.pki_dir);
    // One send may go through at once and the next one only after 50 ms, so three quick
    // sends meet RateLimited and must wait out retry_after_ms.
    config.send_rate = RateConfig {
        per_second: 20.0,
        burst: 1,
    };
    let limited = start_edge_with(config, &server.owner, &server.keys).await?;
    std::mem::replace(&mut server.edge, limited)
        .shutdown()
        .await;
    let alice = server.connect("alice").await?;

    let started = std::time::Instant::now();
    let (a, b, c) = tokio::join!(
        alice.send_direct("bob", "a"),
        alice.send_direct("bob", "b"),
        alice.send_direct("bob", "c"),
    );
    let elapsed = started.elapsed();
    let mut seqs = vec![a?.seq, b?.seq, c?.seq];
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 3, "each send stored once: {seqs:?}");
    assert!(
        elapsed >= Duration::from_millis(100),
        "sends finished after {elapsed:?}"
    );

    let conversation_id = direct_conversation_id("alice", "bob");
    let page = alice.history(conversation_id, 0, 10).await?;
    assert_eq!(page.messages.len(), 3);
    Ok(())
}

/// Runs the command-line client in-process with `args` after the global options.
async fn run_cli(server: &Server, user: &str, args: &[&str]) -> Result<ExitCode> {
    let token = TokenSigner::new(&server.keys)?.sign(user, Duration::from_secs(600))?;
    let addr = server.edge.local_addr().to_string();
    let cert = server.pki_dir.join("ca.pem");
    let cert = cert.to_str().context("temporary path is not UTF-8")?;
    let global = [
        "client", "--server", &addr, "--token", &token, "--cert", cert, "--device", "cli-test",
    ];
    let parsed = ClientArgs::try_parse_from(global.iter().chain(args))?;
    Ok(tokio::time::timeout(WAIT, run(parsed)).await?)
}

#[tokio::test]
async fn cli_exit_codes_follow_outcome() -> Result<()> {
    let server = Server::start().await?;
    let alice = server.connect("alice").await?;

    let sent = run_cli(&server, "alice", &["send", "--to", "bob", "from the cli"]).await?;
    assert_eq!(sent, ExitCode::SUCCESS);
    let conversation_id = direct_conversation_id("alice", "bob");
    let page = alice.history(conversation_id, 0, 10).await?;
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].body, "from the cli");

    let conversation = conversation_id.to_string();
    let listed = [
        "history",
        "--conversation",
        &conversation,
        "--all",
        "--limit",
        "1",
    ];
    assert_eq!(run_cli(&server, "bob", &listed).await?, ExitCode::SUCCESS);

    // carol is no member of the direct conversation, so the server rejects her send.
    let foreign = ["send", "--conversation", &conversation, "x"];
    assert_eq!(
        run_cli(&server, "carol", &foreign).await?,
        ExitCode::FAILURE
    );

    let create = ["group", "create", "--name", "g", "--members", "b"];
    assert_eq!(run_cli(&server, "alice", &create).await?, ExitCode::SUCCESS);
    let groups = alice.conversations().await?;
    assert!(groups.iter().any(|info| info.name == "g"), "{groups:?}");

    let quiet = ["listen", "--count", "1", "--timeout", "200ms"];
    assert_eq!(run_cli(&server, "dave", &quiet).await?, ExitCode::FAILURE);
    Ok(())
}
