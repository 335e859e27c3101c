//! Presence over real sockets: several devices per user on native QUIC (datagrams),
//! WebTransport (datagrams) and WebSocket (frames), watched by other users.
//!
//! The edge runs with shortened presence timings (see `fast_presence`), so the rules
//! that take 25 s or 30 s in production take a second or two here.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use common::web::{WsClient, ws_login};
use common::{TestEdge, WAIT, login, read_frame, start_edge, write_frame};
use quinn::crypto::rustls::QuicClientConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tidings_edge::presence::PresenceConfig;
use tidings_schema::codec;
use tidings_schema::error::ErrorCode;
use tidings_schema::frame::{CreateGroup, Frame, Hello};
use tidings_schema::mesh::{OwnerReply, OwnerRequest, Stamp};
use tidings_schema::presence::{
    Heartbeat, PresenceEntry, PresenceSettings, PresenceState, PresenceSubscribe, PresenceUpdate,
    Typing,
};
use tokio::net::UdpSocket;
use tokio::time::Instant;

const OFFLINE_AFTER: Duration = Duration::from_millis(1500);
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(2);
const TYPING_EXPIRY: Duration = Duration::from_millis(800);

/// Production rules with short timings; the debounce keeps its production value.
fn fast_presence() -> PresenceConfig {
    PresenceConfig {
        heartbeat_interval: Duration::from_millis(300),
        offline_after: OFFLINE_AFTER,
        debounce: Duration::from_secs(1),
        snapshot_interval: SNAPSHOT_INTERVAL,
        typing_expiry: TYPING_EXPIRY,
        tick: Duration::from_millis(20),
        persist_interval: Duration::from_secs(60),
    }
}

async fn presence_edge() -> Result<TestEdge> {
    start_edge(|config| config.presence = fast_presence()).await
}

/// Creates a group of `creator` and `members` directly on the owner.
async fn create_group(edge: &TestEdge, creator: &str, members: &[&str]) -> Result<u64> {
    let conversation_id = rand::random::<u64>() | 1;
    let request = OwnerRequest::CreateGroup {
        user: creator.to_owned(),
        request: CreateGroup {
            request_id: 1,
            name: "presence".to_owned(),
            members: members.iter().map(|member| (*member).to_owned()).collect(),
        },
        conversation_id,
        stamp: Stamp {
            message_id: conversation_id,
            hlc: 1,
            server_time_ms: now_ms(),
        },
    };
    match edge.owner.call(request).await {
        Ok(OwnerReply::Conversation(info)) => Ok(info.conversation_id),
        other => bail!("group not created: {other:?}"),
    }
}

fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.expect("clock after 1970").as_millis() as u64
}

/// A native client that sends heartbeats and typing as datagrams and reads presence
/// datagrams through a shim that can drop them.
struct QuicDevice {
    client: common::Client,
    /// When set, presence changes (not snapshots) are dropped as if lost on the way.
    drop_changes: Arc<AtomicBool>,
}

impl QuicDevice {
    async fn login(edge: &TestEdge, user: &str, device: &str) -> Result<QuicDevice> {
        Ok(QuicDevice {
            client: login(edge, user, device).await?,
            drop_changes: Arc::new(AtomicBool::new(false)),
        })
    }

    fn send_datagram(&self, frame: &Frame) -> Result<()> {
        let bytes = Bytes::from(codec::encode(frame));
        self.client.connection.send_datagram(bytes)?;
        Ok(())
    }

    fn heartbeat(&self, state: PresenceState) -> Result<()> {
        self.send_datagram(&Frame::Heartbeat(Heartbeat { state }))
    }

    async fn subscribe(&mut self, users: &[&str], conversations: &[u64]) -> Result<Frame> {
        let request = subscribe_frame(users, conversations);
        write_frame(&mut self.client.control_send, &request).await?;
        read_frame(&mut self.client.control_recv, self.client.max_frame_bytes).await
    }

    /// Returns the next presence or typing frame that passes the shim, or `None` after
    /// `within`.
    async fn next(&self, within: Duration) -> Result<Option<Frame>> {
        let deadline = Instant::now() + within;
        loop {
            let read = self.client.connection.read_datagram();
            let Ok(datagram) = tokio::time::timeout_at(deadline, read).await else {
                return Ok(None);
            };
            let datagram = datagram?;
            assert!(datagram.len() <= 1_000, "{}-byte datagram", datagram.len());
            let frame = codec::decode(&datagram)?;
            let is_change = matches!(&frame, Frame::PresenceUpdate(update) if !update.snapshot);
            if is_change && self.drop_changes.load(Ordering::Relaxed) {
                continue;
            }
            return Ok(Some(frame));
        }
    }

    /// Waits until an update reports `user` is in `state` and returns that entry.
    async fn wait_for(&self, user: &str, state: PresenceState, within: Duration) -> Result<Entry> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(frame) = self.next(left).await? else {
                bail!("{user} did not become {state:?} within {within:?}");
            };
            if let Frame::PresenceUpdate(update) = frame
                && let Some(entry) = find(&update, user)
                && entry.state == state
            {
                return Ok(Entry {
                    entry,
                    snapshot: update.snapshot,
                    at: Instant::now(),
                });
            }
        }
    }
}

struct Entry {
    entry: PresenceEntry,
    snapshot: bool,
    at: Instant,
}

fn find(update: &PresenceUpdate, user: &str) -> Option<PresenceEntry> {
    update
        .entries
        .iter()
        .find(|entry| entry.user == user)
        .cloned()
}

fn subscribe_frame(users: &[&str], conversations: &[u64]) -> Frame {
    Frame::PresenceSubscribe(PresenceSubscribe {
        request_id: 7,
        users: users.iter().map(|user| (*user).to_owned()).collect(),
        open_conversations: conversations.to_vec(),
    })
}

fn reply_entries(reply: Frame) -> Result<Vec<PresenceEntry>> {
    match reply {
        Frame::PresenceUpdate(update) if update.request_id == 7 => Ok(update.entries),
        other => bail!("expected the subscription reply, got {other:?}"),
    }
}

/// Waits on a WebSocket until an update reports `user` is in `state`.
async fn ws_wait_for(ws: &mut WsClient, user: &str, state: PresenceState) -> Result<PresenceEntry> {
    let deadline = Instant::now() + WAIT;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.recv())
            .await
            .with_context(|| format!("{user} did not become {state:?}"))??;
        if let Frame::PresenceUpdate(update) = frame
            && let Some(entry) = find(&update, user)
            && entry.state == state
        {
            return Ok(entry);
        }
    }
}

#[tokio::test]
async fn devices_converge_to_most_present_state() -> Result<()> {
    let edge = presence_edge().await?;
    create_group(&edge, "alice", &["bob"]).await?;
    let phone = QuicDevice::login(&edge, "alice", "phone").await?;
    let (mut laptop, _) = ws_login(&edge, "alice", "laptop").await?;
    let mut bob = QuicDevice::login(&edge, "bob", "phone").await?;

    let initial = reply_entries(bob.subscribe(&["alice"], &[]).await?)?;
    assert_eq!(initial[0].state, PresenceState::Offline);

    // The phone keeps beating with state away for the whole test.
    let connection = phone.client.connection.clone();
    let beating = tokio::spawn(async move {
        let away = Bytes::from(codec::encode(&Frame::Heartbeat(Heartbeat {
            state: PresenceState::Away,
        })));
        for _ in 0..200 {
            if connection.send_datagram(away.clone()).is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    bob.wait_for("alice", PresenceState::Away, WAIT).await?;

    laptop
        .send(&Frame::Heartbeat(Heartbeat {
            state: PresenceState::Online,
        }))
        .await?;
    bob.wait_for("alice", PresenceState::Online, WAIT).await?;

    // The laptop leaves; the phone still counts, so alice is away, not offline.
    drop(laptop);
    bob.wait_for("alice", PresenceState::Away, WAIT).await?;

    phone.client.connection.close(0u32.into(), b"bye");
    bob.wait_for("alice", PresenceState::Offline, WAIT).await?;
    beating.abort();
    Ok(())
}

/// A UDP relay between a client and the edge that can stop forwarding, like a device
/// that loses its network without closing anything.
struct Blackhole {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
}

async fn blackhole(edge_addr: SocketAddr) -> Result<Blackhole> {
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let upstream = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    upstream.connect(edge_addr).await?;
    let addr = socket.local_addr()?;
    let cut = Arc::new(AtomicBool::new(false));
    let client_addr = Arc::new(std::sync::Mutex::new(None));

    let (down, up, flag, peer) = (
        socket.clone(),
        upstream.clone(),
        cut.clone(),
        client_addr.clone(),
    );
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 65_536];
        while let Ok((len, from)) = down.recv_from(&mut buffer).await {
            *peer.lock().expect("peer mutex") = Some(from);
            if !flag.load(Ordering::Relaxed) {
                let _ = up.send(&buffer[..len]).await;
            }
        }
    });
    let (down, flag) = (socket, cut.clone());
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 65_536];
        while let Ok(len) = upstream.recv(&mut buffer).await {
            let to = *client_addr.lock().expect("peer mutex");
            if let (Some(to), false) = (to, flag.load(Ordering::Relaxed)) {
                let _ = down.send_to(&buffer[..len], to).await;
            }
        }
    });
    Ok(Blackhole { addr, cut })
}

/// Connects to `addr` (a relay in front of the edge) and logs in.
async fn login_via(edge: &TestEdge, addr: SocketAddr, user: &str) -> Result<quinn::Connection> {
    let ca = CertificateDer::from_pem_file(&edge.ca_cert)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![tidings_edge::ALPN_TIDINGS.to_vec()];
    let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    endpoint.set_default_client_config(config);
    let connection = tokio::time::timeout(WAIT, endpoint.connect(addr, "localhost")?).await??;

    let (mut send, mut recv) = connection.open_bi().await?;
    let hello = Frame::Hello(Hello {
        token: edge.token(user),
        device_id: "vanishing".to_owned(),
        client_version: "test".to_owned(),
    });
    write_frame(&mut send, &hello).await?;
    match read_frame(&mut recv, edge.config.limits.max_frame_bytes).await? {
        Frame::Welcome(_) => {}
        other => bail!("expected Welcome, got {other:?}"),
    }
    // NOTE: the streams must outlive this function, or their drop would tell the edge.
    std::mem::forget((send, recv, endpoint));
    Ok(connection)
}

#[tokio::test]
async fn silent_drop_goes_offline_within_expiry() -> Result<()> {
    let edge = presence_edge().await?;
    create_group(&edge, "alice", &["bob"]).await?;
    let relay = blackhole(edge.addr()).await?;
    let alice = login_via(&edge, relay.addr, "alice").await?;
    let mut bob = QuicDevice::login(&edge, "bob", "phone").await?;
    reply_entries(bob.subscribe(&["alice"], &[]).await?)?;

    let heartbeat = Frame::Heartbeat(Heartbeat {
        state: PresenceState::Online,
    });
    alice.send_datagram(Bytes::from(codec::encode(&heartbeat)))?;
    bob.wait_for("alice", PresenceState::Online, WAIT).await?;

    // The device's network disappears: no close, no FIN, no further packets.
    relay.cut.store(true, Ordering::Relaxed);
    let cut_at = Instant::now();
    let offline = bob.wait_for("alice", PresenceState::Offline, WAIT).await?;
    let took = offline.at - cut_at;
    assert!(
        took <= OFFLINE_AFTER + Duration::from_millis(500),
        "offline after {took:?}"
    );
    assert!(
        alice.close_reason().is_none(),
        "presence expired on its own, before the connection timed out"
    );
    std::mem::forget(alice);
    Ok(())
}

#[tokio::test]
async fn flapping_device_sends_one_update_per_second() -> Result<()> {
    let edge = presence_edge().await?;
    create_group(&edge, "alice", &["bob"]).await?;
    let alice = QuicDevice::login(&edge, "alice", "phone").await?;
    let mut bob = QuicDevice::login(&edge, "bob", "phone").await?;
    reply_entries(bob.subscribe(&["alice"], &[]).await?)?;

    // Flap every 50 ms for 3 s while collecting what bob receives.
    let flapping = async {
        for step in 0..60u32 {
            let state = if step % 2 == 0 {
                PresenceState::Online
            } else {
                PresenceState::Away
            };
            alice.heartbeat(state)?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::Ok(())
    };
    let collecting = async {
        let mut arrivals = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(3_500);
        while let Some(frame) = bob
            .next(deadline.saturating_duration_since(Instant::now()))
            .await?
        {
            if let Frame::PresenceUpdate(update) = frame
                && !update.snapshot
                && find(&update, "alice").is_some()
            {
                arrivals.push(Instant::now());
            }
        }
        anyhow::Ok(arrivals)
    };
    let (flapped, arrivals) = tokio::join!(flapping, collecting);
    flapped?;
    let arrivals = arrivals?;

    assert!(!arrivals.is_empty(), "bob saw no change at all");
    assert!(arrivals.len() <= 5, "{} updates in 3.5 s", arrivals.len());
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        // The edge spaces them by 1 s; the margin covers scheduling on a loaded machine.
        assert!(
            gap >= Duration::from_millis(900),
            "two updates {gap:?} apart"
        );
    }
    Ok(())
}

#[tokio::test]
async fn snapshot_repairs_a_lost_change() -> Result<()> {
    let edge = presence_edge().await?;
    create_group(&edge, "alice", &["bob"]).await?;
    let alice = QuicDevice::login(&edge, "alice", "phone").await?;
    let mut bob = QuicDevice::login(&edge, "bob", "phone").await?;
    reply_entries(bob.subscribe(&["alice"], &[]).await?)?;
    bob.drop_changes.store(true, Ordering::Relaxed);

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    alice.heartbeat(PresenceState::Online)?;
    let repaired = bob
        .wait_for("alice", PresenceState::Online, SNAPSHOT_INTERVAL * 2)
        .await?;
    assert!(
        repaired.snapshot,
        "only a snapshot can carry it past the shim"
    );
    Ok(())
}

#[tokio::test]
async fn last_seen_is_stable_and_hideable() -> Result<()> {
    let edge = presence_edge().await?;
    create_group(&edge, "alice", &["bob"]).await?;
    let mut alice = QuicDevice::login(&edge, "alice", "phone").await?;
    let mut bob = QuicDevice::login(&edge, "bob", "phone").await?;
    reply_entries(bob.subscribe(&["alice"], &[]).await?)?;

    let before = now_ms();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    alice.heartbeat(PresenceState::Online)?;
    bob.wait_for("alice", PresenceState::Online, WAIT).await?;
    alice.client.connection.close(0u32.into(), b"bye");
    let offline = bob.wait_for("alice", PresenceState::Offline, WAIT).await?;
    let last_seen = offline.entry.last_seen_ms;
    assert!(last_seen >= before, "last seen {last_seen} before {before}");
    assert!(
        last_seen <= now_ms(),
        "last seen {last_seen} is in the future"
    );

    // Repeated queries, through a new subscription and the owner, return the same time.
    let mut views = Vec::new();
    for _ in 0..3 {
        let entries = reply_entries(bob.subscribe(&["alice"], &[]).await?)?;
        views.push(entries[0].last_seen_ms);
    }
    assert_eq!(views, vec![last_seen; 3]);
    let stored = edge
        .owner
        .call(OwnerRequest::LastSeen {
            user: "alice".to_owned(),
        })
        .await;
    let Ok(OwnerReply::LastSeen(row)) = stored else {
        bail!("no last seen row: {stored:?}");
    };
    assert_eq!(row.last_seen_ms, last_seen);

    // Alice hides it: bob stops receiving it, alice still receives her own.
    alice = QuicDevice::login(&edge, "alice", "laptop").await?;
    let settings = Frame::PresenceSettings(PresenceSettings {
        request_id: 9,
        hide_last_seen: true,
    });
    write_frame(&mut alice.client.control_send, &settings).await?;
    let reply = read_frame(&mut alice.client.control_recv, alice.client.max_frame_bytes).await?;
    assert_eq!(
        reply,
        Frame::PresenceSettings(PresenceSettings {
            request_id: 9,
            hide_last_seen: true
        })
    );
    let hidden = reply_entries(bob.subscribe(&["alice"], &[]).await?)?;
    assert_eq!(hidden[0].last_seen_ms, 0, "hidden from others");
    let own = reply_entries(alice.subscribe(&["alice"], &[]).await?)?;
    assert_eq!(own[0].last_seen_ms, last_seen, "visible to herself");
    Ok(())
}

#[tokio::test]
async fn non_member_cannot_watch() -> Result<()> {
    let edge = presence_edge().await?;
    let group = create_group(&edge, "alice", &["bob"]).await?;
    let alice = QuicDevice::login(&edge, "alice", "phone").await?;
    let mut mallory = QuicDevice::login(&edge, "mallory", "phone").await?;

    for (users, conversations) in [(&["alice"][..], &[][..]), (&[][..], &[group][..])] {
        match mallory.subscribe(users, conversations).await? {
            Frame::Error(error) => {
                assert_eq!(error.code, ErrorCode::NotMember);
                assert_eq!(error.request_id, 7);
            }
            other => bail!("expected NOT_MEMBER, got {other:?}"),
        }
    }

    alice.heartbeat(PresenceState::Online)?;
    let typing = Frame::Typing(Typing {
        conversation_id: group,
        user: String::new(),
        active: true,
    });
    alice.send_datagram(&typing)?;
    let leaked = mallory
        .next(SNAPSHOT_INTERVAL + Duration::from_millis(500))
        .await?;
    assert!(leaked.is_none(), "mallory received {leaked:?}");
    Ok(())
}

#[tokio::test]
async fn typing_reaches_open_conversation_and_expires() -> Result<()> {
    let edge = presence_edge().await?;
    let group = create_group(&edge, "alice", &["bob"]).await?;
    let alice = QuicDevice::login(&edge, "alice", "phone").await?;
    let mut bob = QuicDevice::login(&edge, "bob", "phone").await?;
    let (mut bob_web, _) = ws_login(&edge, "bob", "browser").await?;
    reply_entries(bob.subscribe(&[], &[group]).await?)?;
    bob_web.send(&subscribe_frame(&[], &[group])).await?;
    reply_entries(bob_web.recv().await?)?;

    let start = Frame::Typing(Typing {
        conversation_id: group,
        user: String::new(),
        active: true,
    });
    alice.send_datagram(&start)?;
    let expected = Frame::Typing(Typing {
        conversation_id: group,
        user: "alice".to_owned(),
        active: true,
    });
    assert_eq!(next_typing(&bob).await?, expected);
    assert_eq!(bob_web.recv().await?, expected);

    // Not renewed: cleared by the edge after the expiry.
    let started = Instant::now();
    let Frame::Typing(cleared) = next_typing(&bob).await? else {
        unreachable!("next_typing returns Typing frames");
    };
    assert!(!cleared.active);
    assert!(started.elapsed() >= TYPING_EXPIRY - Duration::from_millis(200));

    // Stopping clears at once.
    alice.send_datagram(&start)?;
    assert_eq!(next_typing(&bob).await?, expected);
    let stop = Frame::Typing(Typing {
        conversation_id: group,
        user: String::new(),
        active: false,
    });
    let stopped_at = Instant::now();
    alice.send_datagram(&stop)?;
    let Frame::Typing(cleared) = next_typing(&bob).await? else {
        unreachable!("next_typing returns Typing frames");
    };
    assert!(!cleared.active);
    assert!(
        stopped_at.elapsed() < TYPING_EXPIRY / 2,
        "cleared by the stop, not the expiry"
    );
    Ok(())
}

async fn next_typing(device: &QuicDevice) -> Result<Frame> {
    loop {
        match device.next(WAIT).await? {
            Some(frame @ Frame::Typing(_)) => return Ok(frame),
            Some(_) => {}
            None => bail!("no typing indicator within {WAIT:?}"),
        }
    }
}

#[tokio::test]
async fn websocket_watcher_gets_frames_and_snapshots() -> Result<()> {
    let edge = presence_edge().await?;
    create_group(&edge, "alice", &["bob"]).await?;
    let alice = QuicDevice::login(&edge, "alice", "phone").await?;
    let (mut bob, _) = ws_login(&edge, "bob", "browser").await?;
    bob.send(&subscribe_frame(&["alice"], &[])).await?;
    reply_entries(bob.recv().await?)?;

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    alice.heartbeat(PresenceState::Online)?;
    let online = ws_wait_for(&mut bob, "alice", PresenceState::Online).await?;
    assert!(online.last_seen_ms > 0);

    // Without further heartbeats the device expires.
    ws_wait_for(&mut bob, "alice", PresenceState::Offline).await?;
    Ok(())
}

#[tokio::test]
async fn webtransport_device_uses_datagrams() -> Result<()> {
    let edge = presence_edge().await?;
    create_group(&edge, "alice", &["bob"]).await?;
    let alice = common::web::wt_login(&edge, "alice", "browser").await?;
    let mut bob = common::web::wt_login(&edge, "bob", "browser").await?;
    common::web::wt_write(&mut bob.control_send, &subscribe_frame(&["alice"], &[])).await?;
    let reply = common::web::wt_read(&mut bob.control_recv, 1 << 20).await?;
    reply_entries(reply)?;

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let heartbeat = codec::encode(&Frame::Heartbeat(Heartbeat {
        state: PresenceState::Online,
    }));
    alice.connection.send_datagram(heartbeat)?;

    let deadline = Instant::now() + WAIT;
    loop {
        let datagram = tokio::time::timeout_at(deadline, bob.connection.receive_datagram())
            .await
            .context("no presence datagram over WebTransport")??;
        if let Frame::PresenceUpdate(update) = codec::decode(&datagram.payload())?
            && find(&update, "alice").is_some_and(|entry| entry.state == PresenceState::Online)
        {
            return Ok(());
        }
    }
}
