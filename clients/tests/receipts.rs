//! Receipts, the inbox and exact sync against a real in-process edge and owner on
//! 127.0.0.1:0, over QUIC and over the WebSocket fallback.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tempfile::TempDir;
use tidings_clients::{Client, ClientConfig, Message, ReceiptEvent, SyncCursors, Transport};
use tidings_edge::{
    Edge, EdgeConfig, EdgeHandle, KeySource, TlsSource, TokenSigner, TokenVerifier,
};
use tidings_relay::{OwnerHandle, Router};
use tidings_schema::ids::direct_conversation_id;
use tidings_store::{Owner, OwnerConfig};
use tokio::sync::mpsc;

/// Upper bound on any single wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

struct Server {
    edge: EdgeHandle,
    keys: KeySource,
    dir: TempDir,
    _owner: Arc<Owner>,
}

impl Server {
    async fn start() -> Result<Server> {
        let dir = tempfile::tempdir()?;
        let owner = Owner::open(OwnerConfig::new(dir.path().join("store")))?;
        let keys = KeySource::Hs256 {
            secret: b"receipts-test-secret-of-32-bytes".to_vec(),
        };
        let config = EdgeConfig {
            listen: "127.0.0.1:0".parse()?,
            http_listen: Some("127.0.0.1:0".parse()?),
            tls: TlsSource::DevPki {
                dir: dir.path().join("pki"),
            },
            ..EdgeConfig::default()
        };
        let router = Router::single(OwnerHandle::Local(Arc::clone(&owner)));
        let edge = Edge::start(config, TokenVerifier::new(&keys)?, router).await?;
        Ok(Server {
            edge,
            keys,
            dir,
            _owner: owner,
        })
    }

    fn config(&self, user: &str, device: &str, transport: Transport) -> Result<ClientConfig> {
        let token = TokenSigner::new(&self.keys)?.sign(user, Duration::from_secs(600))?;
        let mut config = ClientConfig::new(
            self.edge.local_addr().to_string(),
            token,
            device.to_owned(),
            self.dir.path().join("pki").join("ca.pem"),
        );
        let http = self.edge.http_addr().context("the edge has no HTTP port")?;
        config.transport = transport;
        config.ws_url = Some(format!("ws://{http}/v1/ws"));
        config.request_timeout = WAIT;
        Ok(config)
    }

    async fn connect(&self, user: &str, device: &str, transport: Transport) -> Result<Client> {
        Client::connect(self.config(user, device, transport)?)
            .await
            .with_context(|| format!("connecting as {user} on {device} over {transport}"))
    }
}

async fn next_delivery(deliveries: &mut mpsc::Receiver<Message>) -> Result<Message> {
    tokio::time::timeout(WAIT, deliveries.recv())
        .await
        .context("timed out waiting for a delivery")?
        .context("delivery channel closed")
}

/// Waits for the first receipt event that `matches`, skipping others.
async fn wait_receipt(
    events: &mut mpsc::Receiver<ReceiptEvent>,
    matches: impl Fn(&ReceiptEvent) -> bool,
) -> Result<ReceiptEvent> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .context("timed out waiting for a receipt event")?
            .context("receipt event channel closed")?;
        if matches(&event) {
            return Ok(event);
        }
    }
}

fn member_event(user: &str, delivered: u64, read: u64) -> impl Fn(&ReceiptEvent) -> bool {
    move |event| {
        matches!(event, ReceiptEvent::Member { receipt, .. }
            if receipt.user_id == user
                && receipt.delivered_seq >= delivered
                && receipt.read_seq >= read)
    }
}

const TRANSPORTS: [Transport; 2] = [Transport::Quic, Transport::WebSocket];

#[tokio::test]
async fn receipts_clamp_and_never_move_back() -> Result<()> {
    for transport in TRANSPORTS {
        let server = Server::start().await?;
        let alice = server.connect("alice", "alice-phone", transport).await?;
        let bob = server.connect("bob", "bob-phone", transport).await?;
        let mut alice_events = alice.receipt_events().context("events taken twice")?;
        let mut bob_inbox = bob.deliveries().context("deliveries taken twice")?;
        let conversation_id = direct_conversation_id("alice", "bob");

        for body in ["one", "two", "three"] {
            alice.send_direct("bob", body).await?;
        }
        for _ in 0..3 {
            next_delivery(&mut bob_inbox).await?;
        }
        // Delivered moves only with bob's DeliveryAck, and reaches alice live.
        wait_receipt(&mut alice_events, member_event("bob", 3, 0)).await?;

        let clamped = bob.mark_read(conversation_id, 1_000).await?;
        assert_eq!(clamped.read_seq, 3, "{transport}: clamped to the last seq");
        wait_receipt(&mut alice_events, member_event("bob", 3, 3)).await?;

        let stale = bob.mark_read(conversation_id, 1).await?;
        assert_eq!(
            stale.read_seq, 3,
            "{transport}: a stale read moves nothing back"
        );

        let list = alice.receipts(conversation_id).await?;
        assert_eq!(list.last_seq, 3);
        let row = |user: &str| {
            list.receipts
                .iter()
                .find(|row| row.user_id == user)
                .cloned()
        };
        let bob_row = row("bob").context("bob has a receipt row")?;
        assert_eq!(
            (bob_row.delivered_seq, bob_row.read_seq),
            (3, 3),
            "{transport}"
        );
        let alice_row = row("alice").context("alice has a receipt row")?;
        assert_eq!(
            alice_row.read_seq, 3,
            "{transport}: a sender has read its messages"
        );
        alice.close().await;
        bob.close().await;
    }
    Ok(())
}

#[tokio::test]
async fn unread_converges_across_devices() -> Result<()> {
    for transport in TRANSPORTS {
        let server = Server::start().await?;
        let alice = server.connect("alice", "alice-phone", transport).await?;
        let phone = server.connect("bob", "bob-phone", transport).await?;
        let laptop = server.connect("bob", "bob-laptop", transport).await?;
        let mut phone_events = phone.receipt_events().context("events taken twice")?;
        let mut phone_inbox = phone.deliveries().context("deliveries taken twice")?;
        let mut laptop_inbox = laptop.deliveries().context("deliveries taken twice")?;
        let conversation_id = direct_conversation_id("alice", "bob");

        for body in ["a", "b", "c", "d"] {
            alice.send_direct("bob", body).await?;
        }
        for _ in 0..4 {
            next_delivery(&mut phone_inbox).await?;
            next_delivery(&mut laptop_inbox).await?;
        }
        let before = phone.unread(conversation_id).await?;
        assert_eq!(before.unread_count, 4, "{transport}");

        laptop.mark_read(conversation_id, 4).await?;
        // The phone learns of the laptop's read live, then the inbox agrees.
        wait_receipt(&mut phone_events, member_event("bob", 4, 4)).await?;
        let after = phone.unread(conversation_id).await?;
        assert_eq!((after.unread_count, after.read_seq), (0, 4), "{transport}");

        let flagged = laptop.mark_unread(conversation_id, true).await?;
        assert!(flagged.marked_unread);
        let seen = phone.unread(conversation_id).await?;
        assert!(seen.marked_unread, "{transport}: the flag converges");
        assert_eq!(
            seen.read_seq, 4,
            "{transport}: marking unread moves no receipt"
        );

        phone.mark_read(conversation_id, 4).await?;
        let cleared = laptop.unread(conversation_id).await?;
        assert!(
            !cleared.marked_unread,
            "{transport}: reading clears the flag"
        );
        for client in [alice, phone, laptop] {
            client.close().await;
        }
    }
    Ok(())
}

#[tokio::test]
async fn resume_delivers_backlog_exactly_once() -> Result<()> {
    for transport in TRANSPORTS {
        let server = Server::start().await?;
        let alice = server.connect("alice", "alice-phone", transport).await?;
        let conversation_id = direct_conversation_id("alice", "bob");
        let first = server.connect("bob", "bob-phone", transport).await?;
        let mut first_inbox = first.deliveries().context("deliveries taken twice")?;
        alice.send_direct("bob", "before").await?;
        assert_eq!(next_delivery(&mut first_inbox).await?.seq, 1);
        let saved: SyncCursors = first.sync_cursors();
        assert_eq!(
            saved.conversations.get(&conversation_id.to_string()),
            Some(&1)
        );
        first.close().await;

        // More than one gap page (200 messages) while bob is away.
        const AWAY: u64 = 450;
        for n in 0..AWAY {
            alice.send_direct("bob", format!("away {n}")).await?;
        }

        let config = server.config("bob", "bob-phone", transport)?;
        let bob = Client::connect_resuming(config, &saved).await?;
        let mut inbox = bob.deliveries().context("deliveries taken twice")?;
        // Live sends while bob catches up.
        const LIVE: u64 = 5;
        for n in 0..LIVE {
            alice.send_direct("bob", format!("live {n}")).await?;
        }

        let mut seqs = Vec::new();
        while seqs.len() < (AWAY + LIVE) as usize {
            let message = next_delivery(&mut inbox).await?;
            ensure!(message.conversation_id == conversation_id);
            seqs.push(message.seq);
        }
        let expected: Vec<u64> = (2..=1 + AWAY + LIVE).collect();
        assert_eq!(
            seqs, expected,
            "{transport}: every message once, in seq order"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(300), inbox.recv())
                .await
                .is_err(),
            "{transport}: no repeat after the last message"
        );
        alice.close().await;
        bob.close().await;
    }
    Ok(())
}

#[tokio::test]
async fn group_of_500_reports_read_counts() -> Result<()> {
    let server = Server::start().await?;
    let alice = server
        .connect("alice", "alice-phone", Transport::Quic)
        .await?;
    let bob = server
        .connect("bob", "bob-phone", Transport::WebSocket)
        .await?;
    let mut alice_events = alice.receipt_events().context("events taken twice")?;
    let mut members: Vec<String> = (0..498).map(|n| format!("member-{n}")).collect();
    members.push("bob".to_owned());
    let group = alice.create_group("big", &members).await?;
    assert_eq!(group.members.len(), 500);

    let ack = alice.send(group.conversation_id, "hello all").await?;
    bob.mark_read(group.conversation_id, ack.seq).await?;

    let event = wait_receipt(&mut alice_events, |event| {
        matches!(event, ReceiptEvent::Counts { count, .. } if count.seq == ack.seq && count.read >= 1)
    })
    .await?;
    let ReceiptEvent::Counts {
        member_count,
        count,
        ..
    } = event
    else {
        unreachable!("matched a Counts event above");
    };
    assert_eq!(member_count, 499, "members besides the sender");
    assert_eq!(count.read, 1, "only bob read it");

    let list = alice.receipts(group.conversation_id).await?;
    assert_eq!(list.receipts.len(), 500);
    let read = list
        .receipts
        .iter()
        .filter(|row| row.read_seq >= ack.seq)
        .count();
    assert_eq!(read, 2, "the sender and bob");
    Ok(())
}
