//! Presence through the client library against a real in-process edge and owner: devices
//! kept present by heartbeats over QUIC datagrams and WebSocket frames, a watcher on the
//! other transport, last seen with its hide setting, and typing.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;
use tidings_clients::{
    Client, ClientConfig, ClientError, ErrorCode, PresenceEntry, PresenceEvent, PresenceState,
    Transport,
};
use tidings_edge::presence::PresenceConfig;
use tidings_edge::{
    Edge, EdgeConfig, EdgeHandle, KeySource, TlsSource, TokenSigner, TokenVerifier,
};
use tidings_relay::{OwnerHandle, Router};
use tidings_store::{Owner, OwnerConfig};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);
const HEARTBEAT: Duration = Duration::from_millis(200);

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
            secret: b"presence-test-secret-32-bytes!!!".to_vec(),
        };
        let config = EdgeConfig {
            listen: "127.0.0.1:0".parse()?,
            http_listen: Some("127.0.0.1:0".parse()?),
            tls: TlsSource::DevPki {
                dir: dir.path().join("pki"),
            },
            presence: PresenceConfig {
                heartbeat_interval: HEARTBEAT,
                offline_after: Duration::from_secs(1),
                snapshot_interval: Duration::from_secs(2),
                tick: Duration::from_millis(20),
                ..PresenceConfig::default()
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
        let config = self.config(user, device, transport)?;
        Client::connect(config)
            .await
            .with_context(|| format!("connecting {user}/{device} over {transport}"))
    }
}

/// Waits until an update reports `user` in `state` and returns the entry.
async fn wait_for(
    events: &mut mpsc::Receiver<PresenceEvent>,
    user: &str,
    state: PresenceState,
) -> Result<PresenceEntry> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .with_context(|| format!("{user} did not become {state:?}"))?
            .context("presence events ended")?;
        if let PresenceEvent::Update(update) = event
            && let Some(entry) = update.entries.iter().find(|entry| entry.user == user)
            && entry.state == state
        {
            return Ok(entry.clone());
        }
    }
}

#[tokio::test]
async fn devices_on_both_transports_keep_a_user_present() -> Result<()> {
    let server = Server::start().await?;
    let alice_phone = server.connect("alice", "phone", Transport::Quic).await?;
    let alice_web = server.connect("alice", "web", Transport::WebSocket).await?;
    let bob = server.connect("bob", "phone", Transport::WebSocket).await?;
    alice_phone.send_direct("bob", "hello").await?;
    let mut events = bob.presence_events().context("events taken twice")?;

    let initial = bob
        .watch_presence(vec!["alice".to_owned()], Vec::new())
        .await?;
    assert_eq!(initial[0].state, PresenceState::Offline);

    alice_phone.set_presence(PresenceState::Away);
    let phone_beats = alice_phone.keep_present(HEARTBEAT);
    wait_for(&mut events, "alice", PresenceState::Away).await?;

    let web_beats = alice_web.keep_present(HEARTBEAT);
    let online = wait_for(&mut events, "alice", PresenceState::Online).await?;
    assert!(online.last_seen_ms > 0);

    // The web device stops beating: after its expiry the phone's state remains.
    web_beats.abort();
    wait_for(&mut events, "alice", PresenceState::Away).await?;
    phone_beats.abort();
    wait_for(&mut events, "alice", PresenceState::Offline).await?;
    Ok(())
}

#[tokio::test]
async fn hidden_last_seen_reaches_nobody_else() -> Result<()> {
    let server = Server::start().await?;
    let alice = server.connect("alice", "phone", Transport::Quic).await?;
    let bob = server.connect("bob", "phone", Transport::Quic).await?;
    alice.send_direct("bob", "hello").await?;

    let beats = alice.keep_present(HEARTBEAT);
    let mut events = bob.presence_events().context("events taken twice")?;
    bob.watch_presence(vec!["alice".to_owned()], Vec::new())
        .await?;
    let online = wait_for(&mut events, "alice", PresenceState::Online).await?;
    assert!(online.last_seen_ms > 0);

    assert!(alice.set_hide_last_seen(true).await?);
    let hidden = bob
        .watch_presence(vec!["alice".to_owned()], Vec::new())
        .await?;
    assert_eq!(hidden[0].last_seen_ms, 0);
    let own = alice
        .watch_presence(vec!["alice".to_owned()], Vec::new())
        .await?;
    assert!(
        own[0].last_seen_ms > 0,
        "a user always sees their own last seen"
    );

    assert!(!alice.set_hide_last_seen(false).await?);
    let shown = bob
        .watch_presence(vec!["alice".to_owned()], Vec::new())
        .await?;
    assert!(shown[0].last_seen_ms > 0);
    beats.abort();
    Ok(())
}

#[tokio::test]
async fn strangers_are_rejected_and_typing_reaches_members() -> Result<()> {
    let server = Server::start().await?;
    let alice = server.connect("alice", "phone", Transport::Quic).await?;
    let bob = server.connect("bob", "web", Transport::WebSocket).await?;
    let mallory = server.connect("mallory", "phone", Transport::Quic).await?;
    let ack = alice.send_direct("bob", "hello").await?;

    match mallory
        .watch_presence(vec!["alice".to_owned()], Vec::new())
        .await
    {
        Err(ClientError::Rejected(rejection)) => assert_eq!(rejection.code, ErrorCode::NotMember),
        other => bail!("expected NOT_MEMBER, got {other:?}"),
    }

    let mut events = bob.presence_events().context("events taken twice")?;
    bob.watch_presence(Vec::new(), vec![ack.conversation_id])
        .await?;
    alice.typing(ack.conversation_id, true).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .context("no typing indicator")?
            .context("presence events ended")?;
        if let PresenceEvent::Typing(typing) = event {
            assert_eq!(typing.user, "alice");
            assert_eq!(typing.conversation_id, ack.conversation_id);
            assert!(typing.active);
            return Ok(());
        }
    }
}
