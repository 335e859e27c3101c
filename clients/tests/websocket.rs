//! The client library over the WebSocket fallback, against a real in-process edge (QUIC
//! and HTTP ports on 127.0.0.1:0) and owner store: chat between a QUIC and a WebSocket
//! client, automatic fallback when QUIC is unreachable, oversize sends and reconnects.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tempfile::TempDir;
use tidings_clients::{Client, ClientConfig, ClientError, Message, Transport};
use tidings_edge::{
    Edge, EdgeConfig, EdgeHandle, KeySource, TlsSource, TokenSigner, TokenVerifier,
};
use tidings_relay::{OwnerHandle, Router};
use tidings_schema::ids::direct_conversation_id;
use tidings_schema::{CloseCode, ErrorCode};
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
        Self::start_with(|_| {}).await
    }

    async fn start_with(adjust: impl FnOnce(&mut EdgeConfig)) -> Result<Server> {
        let dir = tempfile::tempdir()?;
        let owner = Owner::open(OwnerConfig::new(dir.path().join("store")))?;
        let keys = KeySource::Hs256 {
            secret: b"websocket-test-secret-32-bytes!!".to_vec(),
        };
        let mut config = EdgeConfig {
            listen: "127.0.0.1:0".parse()?,
            http_listen: Some("127.0.0.1:0".parse()?),
            tls: TlsSource::DevPki {
                dir: dir.path().join("pki"),
            },
            ..EdgeConfig::default()
        };
        adjust(&mut config);
        let router = Router::single(OwnerHandle::Local(Arc::clone(&owner)));
        let edge = Edge::start(config, TokenVerifier::new(&keys)?, router).await?;
        Ok(Server {
            edge,
            keys,
            dir,
            _owner: owner,
        })
    }

    fn ws_url(&self) -> Result<String> {
        let http = self.edge.http_addr().context("the edge has no HTTP port")?;
        Ok(format!("ws://{http}/v1/ws"))
    }

    /// Returns a configuration for `user` with `transport`, pointing at both ports.
    fn config(&self, user: &str, transport: Transport) -> Result<ClientConfig> {
        let token = TokenSigner::new(&self.keys)?.sign(user, Duration::from_secs(600))?;
        let mut config = ClientConfig::new(
            self.edge.local_addr().to_string(),
            token,
            format!("{user}-device"),
            self.dir.path().join("pki").join("ca.pem"),
        );
        config.transport = transport;
        config.ws_url = Some(self.ws_url()?);
        config.request_timeout = WAIT;
        Ok(config)
    }

    async fn connect(&self, user: &str, transport: Transport) -> Result<Client> {
        let client = Client::connect(self.config(user, transport)?)
            .await
            .with_context(|| format!("connecting as {user} over {transport}"))?;
        Ok(client)
    }

    fn websocket_connections(&self) -> u64 {
        let metrics = self.edge.metrics();
        metrics.websocket_connections.load(Ordering::Relaxed)
    }
}

async fn next_delivery(deliveries: &mut mpsc::Receiver<Message>) -> Result<Message> {
    tokio::time::timeout(WAIT, deliveries.recv())
        .await
        .context("timed out waiting for a delivery")?
        .context("delivery channel closed")
}

#[tokio::test]
async fn quic_and_websocket_clients_chat() -> Result<()> {
    let server = Server::start().await?;
    let alice = server.connect("alice", Transport::Quic).await?;
    let bob = server.connect("bob", Transport::WebSocket).await?;
    assert_eq!(alice.transport(), Some(Transport::Quic));
    assert_eq!(bob.transport(), Some(Transport::WebSocket));
    assert_eq!(bob.user_id(), "bob");
    let mut alice_inbox = alice.deliveries().context("deliveries taken twice")?;
    let mut bob_inbox = bob.deliveries().context("deliveries taken twice")?;
    let conversation_id = direct_conversation_id("alice", "bob");

    let mut acks = Vec::new();
    for text in ["one", "two", "three"] {
        acks.push(alice.send_direct("bob", text).await?);
    }
    for (ack, text) in acks.iter().zip(["one", "two", "three"]) {
        let delivered = next_delivery(&mut bob_inbox).await?;
        assert_eq!(delivered.conversation_id, conversation_id);
        assert_eq!(delivered.seq, ack.seq);
        assert_eq!(delivered.sender, "alice");
        assert_eq!(delivered.body, text);
    }

    let reply = bob.send_direct("alice", "hi from ws").await?;
    assert_eq!(reply.conversation_id, conversation_id);
    assert_eq!(reply.seq, acks[2].seq + 1);
    let delivered = next_delivery(&mut alice_inbox).await?;
    assert_eq!(delivered.seq, reply.seq);
    assert_eq!(delivered.body, "hi from ws");

    let page = bob.history(conversation_id, 0, 10).await?;
    let bodies: Vec<&str> = page.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["hi from ws", "three", "two", "one"]);
    Ok(())
}

#[tokio::test]
async fn websocket_client_manages_groups() -> Result<()> {
    let server = Server::start().await?;
    let carol = server.connect("carol", Transport::WebSocket).await?;
    let dave = server.connect("dave", Transport::Quic).await?;
    let mut dave_inbox = dave.deliveries().context("deliveries taken twice")?;

    let group = carol.create_group("crew", &["dave".to_owned()]).await?;
    let members: Vec<&str> = group.members.iter().map(|m| m.user_id.as_str()).collect();
    assert!(members.contains(&"dave"), "members {members:?}");
    let ack = carol.send(group.conversation_id, "welcome").await?;
    // Membership changes are stored as messages too, so the text arrives last.
    let mut delivered = next_delivery(&mut dave_inbox).await?;
    for _ in 0..ack.seq {
        if delivered.seq == ack.seq {
            break;
        }
        delivered = next_delivery(&mut dave_inbox).await?;
    }
    assert_eq!(delivered.seq, ack.seq);
    assert_eq!(delivered.body, "welcome");

    let listed = carol.conversations().await?;
    assert!(
        listed
            .iter()
            .any(|c| c.conversation_id == group.conversation_id)
    );

    let left = dave.leave(group.conversation_id).await?;
    let members: Vec<&str> = left.members.iter().map(|m| m.user_id.as_str()).collect();
    assert!(!members.contains(&"dave"), "members {members:?}");
    let rejected = dave
        .send(group.conversation_id, "after leaving")
        .await
        .expect_err("a former member cannot send");
    assert_eq!(rejected.code(), Some(ErrorCode::NotMember));
    Ok(())
}

#[tokio::test]
async fn auto_falls_back_when_quic_unreachable() -> Result<()> {
    let server = Server::start().await?;
    // A bound UDP socket that never replies: QUIC handshakes to it time out, and no other
    // process can take the port while the test runs.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let silent_addr: SocketAddr = silent.local_addr()?;

    let mut config = server.config("erin", Transport::Auto)?;
    config.server = silent_addr.to_string();
    config.quic_fallback_timeout = Duration::from_millis(500);
    let started = tokio::time::Instant::now();
    let erin = Client::connect(config).await.context("fallback connect")?;
    assert_eq!(erin.transport(), Some(Transport::WebSocket));
    assert!(
        started.elapsed() < WAIT,
        "fallback took {:?}",
        started.elapsed()
    );

    let frank = server.connect("frank", Transport::Auto).await?;
    assert_eq!(frank.transport(), Some(Transport::Quic));
    let mut frank_inbox = frank.deliveries().context("deliveries taken twice")?;
    let ack = erin.send_direct("frank", "over the fallback").await?;
    let delivered = next_delivery(&mut frank_inbox).await?;
    assert_eq!(delivered.seq, ack.seq);
    assert_eq!(delivered.body, "over the fallback");
    Ok(())
}

#[tokio::test]
async fn auto_reports_both_failures() -> Result<()> {
    let server = Server::start().await?;
    let silent = std::net::UdpSocket::bind("127.0.0.1:0")?;
    // A TCP port with no listener: the connection is refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;

    let mut config = server.config("gina", Transport::Auto)?;
    config.server = silent.local_addr()?.to_string();
    config.ws_url = Some(format!("ws://{closed}/v1/ws"));
    config.quic_fallback_timeout = Duration::from_millis(300);
    let error = match Client::connect(config).await {
        Ok(_) => anyhow::bail!("connect succeeded with neither transport reachable"),
        Err(error) => error,
    };
    let text = error.to_string();
    assert!(text.contains("QUIC failed"), "{text}");
    assert!(text.contains("WebSocket fallback failed"), "{text}");
    assert!(error.is_transient(), "{text}");
    Ok(())
}

#[tokio::test]
async fn oversize_websocket_send_is_rejected_once() -> Result<()> {
    // The frame limit is below the message limit, so the client's own body check passes
    // and the edge refuses the frame with WebSocket close code 1009.
    let server = Server::start_with(|config| {
        config.limits.max_frame_bytes = 4096;
        config.limits.max_message_bytes = 64 * 1024;
    })
    .await?;
    let hank = server.connect("hank", Transport::WebSocket).await?;
    assert_eq!(server.websocket_connections(), 1);

    let error = hank
        .send_direct("ivan", "x".repeat(10_000))
        .await
        .expect_err("an oversize frame must be rejected");
    assert_eq!(error.code(), Some(ErrorCode::MessageTooLarge), "{error}");
    assert!(error.to_string().contains("1009"), "{error}");
    assert!(matches!(error, ClientError::Rejected(_)), "{error:?}");

    // The client reconnects once and does not send the oversize frame again.
    let ack = hank.send_direct("ivan", "small").await?;
    assert_eq!(ack.seq, 1, "the oversize message must not be stored");
    assert_eq!(server.websocket_connections(), 2);
    let page = hank.history(ack.conversation_id, 0, 10).await?;
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].body, "small");
    Ok(())
}

#[tokio::test]
async fn websocket_client_reconnects_after_kick() -> Result<()> {
    let server = Server::start().await?;
    let judy = server.connect("judy", Transport::WebSocket).await?;
    let kate = server.connect("kate", Transport::Quic).await?;
    let mut judy_inbox = judy.deliveries().context("deliveries taken twice")?;
    let first = kate.send_direct("judy", "before").await?;
    assert_eq!(next_delivery(&mut judy_inbox).await?.seq, first.seq);

    let kicked = server
        .edge
        .kick("judy", CloseCode::ServerShutdown, "test kick");
    assert_eq!(kicked, 1);
    // Sent while judy is away: the resync after the reconnect fills it in.
    let second = kate.send_direct("judy", "while away").await?;

    let delivered = next_delivery(&mut judy_inbox).await?;
    assert_eq!(delivered.seq, second.seq);
    assert_eq!(delivered.body, "while away");
    let ack = judy.send_direct("kate", "back").await?;
    assert_eq!(ack.seq, second.seq + 1);
    assert_eq!(judy.transport(), Some(Transport::WebSocket));
    ensure!(
        server.websocket_connections() >= 2,
        "no reconnect was counted"
    );
    Ok(())
}

#[tokio::test]
async fn client_stops_after_operator_kick() -> Result<()> {
    let server = Server::start().await?;
    let nina = server.connect("nina", Transport::WebSocket).await?;
    nina.send_direct("omar", "before").await?;

    let kicked = server
        .edge
        .kick("nina", CloseCode::Kicked, "account under review");
    assert_eq!(kicked, 1);
    // A send may still slip in before the Close frame arrives; the next one cannot.
    let mut error = None;
    for _ in 0..50 {
        match nina.send_direct("omar", "after").await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(failed) => {
                error = Some(failed);
                break;
            }
        }
    }
    let error = error.context("sends kept succeeding after the kick")?;
    let ClientError::Connect(connect) = &error else {
        anyhow::bail!("expected a connect error, got {error:?}");
    };
    let text = connect.to_string();
    assert!(text.contains("KICKED"), "{text}");
    assert!(text.contains("account under review"), "{text}");
    assert!(!connect.is_transient(), "{connect:?}");
    // The client did not come back on its own.
    assert_eq!(server.websocket_connections(), 1);
    Ok(())
}

#[tokio::test]
async fn websocket_over_https_when_tls_forced() -> Result<()> {
    // Off loopback the edge serves HTTPS by default; forcing it on 127.0.0.1 runs the same
    // path without leaving the machine.
    let server = Server::start_with(|config| config.http_tls = Some(true)).await?;
    assert!(server.edge.http_is_tls());
    let http = server
        .edge
        .http_addr()
        .context("the edge has no HTTP port")?;

    let mut config = server.config("lena", Transport::WebSocket)?;
    config.ws_url = Some(format!("wss://{http}/v1/ws"));
    let lena = Client::connect(config)
        .await
        .context("connecting over wss")?;
    assert_eq!(lena.transport(), Some(Transport::WebSocket));
    let ack = lena.send_direct("mia", "over tls").await?;
    let page = lena.history(ack.conversation_id, 0, 10).await?;
    assert_eq!(page.messages[0].body, "over tls");

    let mut plain = server.config("lena", Transport::WebSocket)?;
    plain.ws_url = Some(format!("ws://{http}/v1/ws"));
    plain.connect_timeout = Duration::from_secs(3);
    let error = match Client::connect(plain).await {
        Ok(_) => anyhow::bail!("plain ws:// reached an HTTPS port"),
        Err(error) => error,
    };
    assert!(
        error.to_string().contains("WebSocket connection"),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn loopback_http_also_listens_on_ipv6() -> Result<()> {
    let server = Server::start().await?;
    assert!(!server.edge.http_is_tls());
    let port = server
        .edge
        .http_addr()
        .context("the edge has no HTTP port")?
        .port();

    let mut config = server.config("nina", Transport::WebSocket)?;
    config.ws_url = Some(format!("ws://[::1]:{port}/v1/ws"));
    let nina = Client::connect(config)
        .await
        .context("connecting to [::1]")?;
    let ack = nina.send_direct("omar", "over ipv6").await?;
    assert_eq!(ack.seq, 1);
    Ok(())
}
