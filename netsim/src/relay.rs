//! Relay for `netsim run --server`: a node outside the link, reached through it.
//!
//! The relay listens on the server address inside the server namespace, so every packet
//! between the clients and the relay crosses the engine, and it forwards each TCP
//! connection and each UDP flow to the node from the host's namespace.
//!
//! ```text
//!  client ns                 server ns                      host ns
//!  client --(engine link)--> relay 10.77.1.2:PORT  --lo-->  node ADDR
//! ```
//!
//! TCP ends at the relay: the lossy part of each connection runs between the client's
//! kernel and the relay's socket (both with `TCP_NODELAY`), and the relay's own connection
//! to the node runs over loopback. UDP datagrams pass unchanged, one upstream socket per
//! client address, so a NAT rebinding on the link reaches the node as a QUIC migration.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::link::NetnsLink;
use crate::netns::NamespaceError;

/// Maximum time the relay waits for the node to accept a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A UDP flow with no datagram from its client for this long is closed. Far longer than
/// the Tidings client's 10 s QUIC keep-alive interval, so a live connection keeps its flow.
const UDP_IDLE: Duration = Duration::from_secs(120);
/// Maximum number of UDP flows at once; datagrams from further client addresses are
/// dropped.
const MAX_UDP_FLOWS: usize = 4096;
/// Largest UDP datagram relayed.
const DATAGRAM_BUFFER: usize = 65_535;

/// The traffic of one relay port: its protocol, port and target.
#[derive(Debug, Clone, Copy)]
pub enum RelayRoute {
    /// TCP connections to `listen_port` go to `target`.
    Tcp {
        /// Port on the server address.
        listen_port: u16,
        /// Node address in the host namespace.
        target: SocketAddr,
    },
    /// UDP datagrams to `listen_port` go to `target`, and replies come back.
    Udp {
        /// Port on the server address.
        listen_port: u16,
        /// Node address in the host namespace.
        target: SocketAddr,
    },
}

/// A running relay; dropping it stops every connection and flow.
#[derive(Debug)]
pub struct ServerRelay {
    runtime: Option<tokio::runtime::Runtime>,
}

impl ServerRelay {
    /// Binds every route on `listen` inside the server namespace of `link` and starts
    /// relaying to the targets from the calling thread's namespace.
    ///
    /// Blocking: call it outside an async context.
    pub fn start(
        link: &NetnsLink,
        listen: Ipv4Addr,
        routes: &[RelayRoute],
    ) -> Result<Self, NamespaceError> {
        let sockets = link.run_in_server(|| bind_all(listen, routes))??;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("netsim-relay")
            .enable_all()
            .build()
            .map_err(|source| NamespaceError::Io {
                action: "start the relay runtime".into(),
                source,
            })?;
        for (socket, route) in sockets.into_iter().zip(routes) {
            let _guard = runtime.enter();
            match (socket, *route) {
                (Bound::Tcp(listener), RelayRoute::Tcp { target, .. }) => {
                    let listener = TcpListener::from_std(listener).map_err(io_error)?;
                    runtime.spawn(relay_tcp(listener, target));
                }
                (Bound::Udp(socket), RelayRoute::Udp { target, .. }) => {
                    let socket = UdpSocket::from_std(socket).map_err(io_error)?;
                    runtime.spawn(relay_udp(Arc::new(socket), target));
                }
                _ => unreachable!("bind_all returns one socket of the route's kind per route"),
            }
        }
        Ok(Self {
            runtime: Some(runtime),
        })
    }
}

impl Drop for ServerRelay {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

enum Bound {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

fn io_error(source: std::io::Error) -> NamespaceError {
    NamespaceError::Io {
        action: "register a relay socket".into(),
        source,
    }
}

fn bind_all(listen: Ipv4Addr, routes: &[RelayRoute]) -> Result<Vec<Bound>, NamespaceError> {
    routes
        .iter()
        .map(|route| {
            let (port, kind) = match route {
                RelayRoute::Tcp { listen_port, .. } => (*listen_port, "TCP"),
                RelayRoute::Udp { listen_port, .. } => (*listen_port, "UDP"),
            };
            let address = SocketAddrV4::new(listen, port);
            let failed = |source| NamespaceError::Io {
                action: format!("bind the relay's {kind} socket on {address}"),
                source,
            };
            let bound = match route {
                RelayRoute::Tcp { .. } => {
                    Bound::Tcp(std::net::TcpListener::bind(address).map_err(failed)?)
                }
                RelayRoute::Udp { .. } => {
                    Bound::Udp(std::net::UdpSocket::bind(address).map_err(failed)?)
                }
            };
            match &bound {
                Bound::Tcp(socket) => socket.set_nonblocking(true),
                Bound::Udp(socket) => socket.set_nonblocking(true),
            }
            .map_err(failed)?;
            Ok(bound)
        })
        .collect()
}

async fn relay_tcp(listener: TcpListener, target: SocketAddr) {
    let mut connections = JoinSet::new();
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "relay failed to accept a TCP connection");
                continue;
            }
        };
        connections.spawn(async move {
            if let Err(error) = relay_connection(client, target).await {
                tracing::debug!(%peer, %target, %error, "relayed TCP connection ended");
            }
        });
        // Reaps finished connections so the set does not grow over a long run.
        while connections.try_join_next().is_some() {}
    }
}

async fn relay_connection(mut client: TcpStream, target: SocketAddr) -> std::io::Result<()> {
    let mut node = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    client.set_nodelay(true)?;
    node.set_nodelay(true)?;
    tokio::io::copy_bidirectional(&mut client, &mut node).await?;
    Ok(())
}

/// One client address and the upstream socket that speaks for it to the node.
struct UdpFlow {
    upstream: Arc<UdpSocket>,
    last_seen: Instant,
    replies: tokio::task::AbortHandle,
}

async fn relay_udp(listener: Arc<UdpSocket>, target: SocketAddr) {
    let mut flows: HashMap<SocketAddr, UdpFlow> = HashMap::new();
    let mut replies = JoinSet::new();
    let mut buffer = vec![0u8; DATAGRAM_BUFFER];
    let mut sweep = tokio::time::interval(UDP_IDLE / 4);
    loop {
        let (length, client) = tokio::select! {
            received = listener.recv_from(&mut buffer) => match received {
                Ok(received) => received,
                Err(error) => {
                    tracing::warn!(%error, "relay failed to receive a UDP datagram");
                    continue;
                }
            },
            _ = sweep.tick() => {
                flows.retain(|_, flow| {
                    let live = flow.last_seen.elapsed() < UDP_IDLE;
                    if !live {
                        flow.replies.abort();
                    }
                    live
                });
                while replies.try_join_next().is_some() {}
                continue;
            }
        };
        if !flows.contains_key(&client) {
            if flows.len() >= MAX_UDP_FLOWS {
                tracing::warn!(%client, flows = flows.len(), "relay has too many UDP flows; dropping a datagram");
                continue;
            }
            match open_flow(&listener, client, target, &mut replies).await {
                Ok(flow) => {
                    tracing::debug!(%client, %target, "relay opened a UDP flow");
                    flows.insert(client, flow);
                }
                Err(error) => {
                    tracing::warn!(%client, %target, %error, "relay failed to open a UDP flow");
                    continue;
                }
            }
        }
        let flow = flows.get_mut(&client).expect("flow inserted above");
        flow.last_seen = Instant::now();
        if let Err(error) = flow.upstream.send(&buffer[..length]).await {
            tracing::debug!(%client, %error, "relay failed to send a datagram to the node");
        }
    }
}

async fn open_flow(
    listener: &Arc<UdpSocket>,
    client: SocketAddr,
    target: SocketAddr,
    replies: &mut JoinSet<()>,
) -> std::io::Result<UdpFlow> {
    let bind: SocketAddr = if target.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let upstream = Arc::new(UdpSocket::bind(bind).await?);
    upstream.connect(target).await?;
    let reader = upstream.clone();
    let listener = listener.clone();
    let handle = replies.spawn(async move {
        let mut buffer = vec![0u8; DATAGRAM_BUFFER];
        loop {
            match reader.recv(&mut buffer).await {
                Ok(length) => {
                    if let Err(error) = listener.send_to(&buffer[..length], client).await {
                        tracing::debug!(%client, %error, "relay failed to return a datagram");
                    }
                }
                // A port-unreachable from the node surfaces here; the flow stays.
                Err(error) => tracing::debug!(%client, %error, "relay upstream receive failed"),
            }
        }
    });
    Ok(UdpFlow {
        upstream,
        last_seen: Instant::now(),
        replies: handle,
    })
}
