//! Proxy mode: a UDP relay through the impairment engine that needs no root.
//!
//! Clients send to the proxy's listening socket. Each client address gets a session with
//! its own upstream socket towards the target, so each client has its own source address at the target,
//! as behind a NAT. Datagrams cross the same engine as in link mode, with 28 bytes of IPv4
//! and UDP header counted against the rate. NAT rebinding replaces a session's upstream
//! socket when the client next sends after a rebinding time; the old socket is closed, so
//! the target's replies to the old source are lost. Address rebinding binds the new socket
//! to the next address of 127.0.0.2 to 127.0.0.5 when the target is on loopback.
//!
//! Only UDP can be relayed this way, so proxy mode is for QUIC; use link mode to compare
//! QUIC with TCP.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::{NatConfig, RebindKind};
use crate::engine::{
    Direction, DirectionStats, Link, LinkSpec, Packet, PacketFormat, rebind_epoch,
};

/// Largest UDP payload accepted.
const MAX_DATAGRAM: usize = 65_535;
/// Loopback addresses used in turn by address rebinding.
const LOOPBACK_POOL: [Ipv4Addr; 4] = [
    Ipv4Addr::new(127, 0, 0, 2),
    Ipv4Addr::new(127, 0, 0, 3),
    Ipv4Addr::new(127, 0, 0, 4),
    Ipv4Addr::new(127, 0, 0, 5),
];

struct Session {
    client: SocketAddr,
    upstream: Arc<UdpSocket>,
    reader: JoinHandle<()>,
    epoch: u64,
}

struct State {
    link: Link,
    sessions: HashMap<u64, Session>,
    by_client: HashMap<SocketAddr, u64>,
    next_session: u64,
}

struct Shared {
    state: Mutex<State>,
    wake: Notify,
    listen: Arc<UdpSocket>,
    target: SocketAddr,
    nat: Option<NatConfig>,
    start: Instant,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running UDP proxy. Dropping it stops every task and closes every socket.
pub struct UdpProxy {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for UdpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpProxy")
            .field("local_addr", &self.local_addr)
            .field("target", &self.shared.target)
            .finish_non_exhaustive()
    }
}

impl UdpProxy {
    /// Binds `listen` and starts relaying to `target` through the engine.
    pub async fn start(
        spec: &LinkSpec,
        listen: SocketAddr,
        target: SocketAddr,
        seed: u64,
    ) -> std::io::Result<Self> {
        let socket = Arc::new(UdpSocket::bind(listen).await?);
        let local_addr = socket.local_addr()?;
        let start = Instant::now();
        let link = Link::new(spec, PacketFormat::Datagram, seed, start, Vec::new());
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                link,
                sessions: HashMap::new(),
                by_client: HashMap::new(),
                next_session: 0,
            }),
            wake: Notify::new(),
            listen: socket,
            target,
            nat: spec.nat.clone(),
            start,
        });
        let tasks = vec![
            tokio::spawn(listen_loop(Arc::clone(&shared))),
            tokio::spawn(schedule_loop(Arc::clone(&shared))),
        ];
        tracing::info!(%local_addr, %target, seed, "UDP proxy up");
        Ok(Self {
            shared,
            local_addr,
            tasks,
        })
    }

    /// Returns the address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Engine counters of one direction.
    pub fn stats(&self, direction: Direction) -> DirectionStats {
        self.shared.lock().link.direction(direction).stats()
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for session in self.shared.lock().sessions.values() {
            session.reader.abort();
        }
    }
}

async fn listen_loop(shared: Arc<Shared>) {
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        let (length, client) = match shared.listen.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) => {
                // ICMP errors from earlier sends show up here on Linux; they are not fatal.
                tracing::debug!(%error, "receive on the proxy socket failed");
                continue;
            }
        };
        let session = match session_for(&shared, client).await {
            Ok(session) => session,
            Err(error) => {
                tracing::warn!(%client, %error, "failed to open an upstream socket");
                continue;
            }
        };
        let packet = Packet {
            bytes: buffer[..length].to_vec(),
            flow: session,
        };
        shared
            .lock()
            .link
            .push(Direction::Uplink, Instant::now(), packet);
        shared.wake.notify_one();
    }
}

async fn session_for(shared: &Arc<Shared>, client: SocketAddr) -> std::io::Result<u64> {
    if let Some(id) = shared.lock().by_client.get(&client) {
        return Ok(*id);
    }
    let upstream = bind_upstream(shared.target, None, 0, None).await?;
    let mut state = shared.lock();
    let id = state.next_session;
    state.next_session += 1;
    let reader = tokio::spawn(upstream_loop(Arc::clone(shared), Arc::clone(&upstream), id));
    state.sessions.insert(
        id,
        Session {
            client,
            upstream,
            reader,
            epoch: 0,
        },
    );
    state.by_client.insert(client, id);
    tracing::debug!(%client, session = id, "new proxy session");
    Ok(id)
}

async fn upstream_loop(shared: Arc<Shared>, socket: Arc<UdpSocket>, session: u64) {
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        let length = match socket.recv(&mut buffer).await {
            Ok(length) => length,
            Err(error) => {
                tracing::debug!(session, %error, "receive on an upstream socket failed");
                continue;
            }
        };
        let packet = Packet {
            bytes: buffer[..length].to_vec(),
            flow: session,
        };
        shared
            .lock()
            .link
            .push(Direction::Downlink, Instant::now(), packet);
        shared.wake.notify_one();
    }
}

/// Binds a socket connected to `target`. With address rebinding on a loopback target the
/// source address comes from the pool, and the previous port is kept when it is free.
async fn bind_upstream(
    target: SocketAddr,
    rebind: Option<RebindKind>,
    epoch: u64,
    previous: Option<SocketAddr>,
) -> std::io::Result<Arc<UdpSocket>> {
    let unspecified: IpAddr = match target {
        SocketAddr::V4(v4) if v4.ip().is_loopback() => Ipv4Addr::LOCALHOST.into(),
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = match (rebind, target.ip().is_loopback() && target.is_ipv4()) {
        (Some(RebindKind::Address), true) => {
            let index = usize::try_from((epoch - 1) % LOOPBACK_POOL.len() as u64).unwrap_or(0);
            let address = IpAddr::from(LOOPBACK_POOL[index]);
            let port = previous.map_or(0, |previous| previous.port());
            match UdpSocket::bind((address, port)).await {
                Ok(socket) => socket,
                Err(_) => UdpSocket::bind((address, 0)).await?,
            }
        }
        _ => UdpSocket::bind((unspecified, 0)).await?,
    };
    socket.connect(target).await?;
    Ok(Arc::new(socket))
}

/// Replaces the session's upstream socket if a rebinding happened since it was made.
async fn rebind_if_due(shared: &Arc<Shared>, session: u64) -> Option<Arc<UdpSocket>> {
    let (current, epoch) = {
        let state = shared.lock();
        let entry = state.sessions.get(&session)?;
        let epoch = shared
            .nat
            .as_ref()
            .map_or(0, |nat| rebind_epoch(nat, shared.start.elapsed()));
        if entry.epoch == epoch {
            return Some(Arc::clone(&entry.upstream));
        }
        (Arc::clone(&entry.upstream), epoch)
    };

    let kind = shared.nat.as_ref().map(|nat| nat.rebind);
    let replacement = match bind_upstream(shared.target, kind, epoch, current.local_addr().ok())
        .await
    {
        Ok(socket) => socket,
        Err(error) => {
            tracing::warn!(session, %error, "failed to rebind; keeping the old upstream socket");
            return Some(current);
        }
    };
    let mut state = shared.lock();
    let reader = tokio::spawn(upstream_loop(
        Arc::clone(shared),
        Arc::clone(&replacement),
        session,
    ));
    let entry = state.sessions.get_mut(&session)?;
    entry.reader.abort();
    entry.reader = reader;
    entry.upstream = Arc::clone(&replacement);
    entry.epoch = epoch;
    tracing::debug!(session, epoch, source = ?replacement.local_addr().ok(), "proxy rebinding");
    Some(replacement)
}

async fn schedule_loop(shared: Arc<Shared>) {
    let mut due = Vec::new();
    loop {
        let next = {
            let mut state = shared.lock();
            let now = Instant::now();
            for direction in [Direction::Uplink, Direction::Downlink] {
                while let Some(packet) = state.link.pop_due(direction, now) {
                    due.push((direction, packet));
                }
            }
            state.link.next_event()
        };
        for (direction, packet) in due.drain(..) {
            deliver(&shared, direction, packet).await;
        }
        let wait = next.map_or(Duration::from_secs(1), |at| {
            at.saturating_duration_since(Instant::now())
        });
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.wake.notified() => {}
        }
    }
}

async fn deliver(shared: &Arc<Shared>, direction: Direction, packet: Packet) {
    match direction {
        Direction::Uplink => {
            let Some(upstream) = rebind_if_due(shared, packet.flow).await else {
                return;
            };
            if let Err(error) = upstream.send(&packet.bytes).await {
                tracing::debug!(session = packet.flow, %error, "send to the target failed");
            }
        }
        Direction::Downlink => {
            let client = shared
                .lock()
                .sessions
                .get(&packet.flow)
                .map(|session| session.client);
            let Some(client) = client else { return };
            if let Err(error) = shared.listen.send_to(&packet.bytes, client).await {
                tracing::debug!(%client, %error, "send to the client failed");
            }
        }
    }
}
