//! Link mode: two namespaces joined through TUN devices and the impairment engine.
//!
//! ```text
//!  client namespace                                   server namespace
//!  10.77.0.2/24 on tnlink0  <-- netsim process -->    10.77.1.2/24 on tnlink0
//!  default route via tnlink0    (engine, NAT)         default route via tnlink0
//! ```
//!
//! Both namespaces route everything through their TUN device, so the other side is the
//! whole world for them, and nothing reaches the host's own interfaces.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Instant;

use crate::engine::{Direction, DirectionStats, Link, LinkSpec, PacketFormat};
use crate::forward::Forwarder;
use crate::netns::{self, Namespace, NamespaceError};
use crate::pcap::PcapWriter;
use crate::sys;

/// Client address inside the client namespace.
pub const CLIENT_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// Server address inside the server namespace.
pub const SERVER_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);
/// Public addresses used in turn by address rebinding, as the server receives them.
pub const NAT_ADDRESS_POOL: [Ipv4Addr; 4] = [
    Ipv4Addr::new(10, 77, 2, 1),
    Ipv4Addr::new(10, 77, 2, 2),
    Ipv4Addr::new(10, 77, 2, 3),
    Ipv4Addr::new(10, 77, 2, 4),
];
/// Name of the TUN device in each namespace.
pub const TUN_NAME: &str = "tnlink0";
/// Transmit queue length of the TUN devices. The default of 500 drops packets silently
/// when a burst arrives faster than netsim reads.
const TXQUEUELEN: &str = "10000";

/// Names and addresses of a running link.
#[derive(Debug, Clone)]
pub struct LinkAddresses {
    /// Namespace of the client side.
    pub client_namespace: String,
    /// Namespace of the server side.
    pub server_namespace: String,
    /// Client address.
    pub client: Ipv4Addr,
    /// Server address.
    pub server: Ipv4Addr,
}

/// A running emulated link. Dropping it stops forwarding and deletes both namespaces.
pub struct NetnsLink {
    addresses: LinkAddresses,
    /// Time zero of the engine's schedules (blackholes, NAT rebindings, traces).
    started: Instant,
    // NOTE: field order is drop order: threads stop and close the TUN devices before the
    // namespaces are deleted.
    forwarder: Forwarder,
    server: Namespace,
    client: Namespace,
}

impl std::fmt::Debug for NetnsLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetnsLink")
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

/// Optional parts of a link.
#[derive(Debug, Clone, Default)]
pub struct LinkOptions {
    /// Pcap file that receives every packet leaving the link, both directions (see
    /// [`crate::pcap`]). Packets the link dropped are not in it.
    pub pcap: Option<PathBuf>,
}

impl NetnsLink {
    /// Creates the namespaces and devices and starts forwarding through the engine.
    ///
    /// Needs root. Removes namespaces left behind by crashed runs first.
    pub fn start(spec: &LinkSpec, seed: u64) -> Result<Self, NamespaceError> {
        Self::start_with(spec, seed, &LinkOptions::default())
    }

    /// Starts a link as [`NetnsLink::start`] does, with the optional parts set in `options`.
    pub fn start_with(
        spec: &LinkSpec,
        seed: u64,
        options: &LinkOptions,
    ) -> Result<Self, NamespaceError> {
        netns::require_root()?;
        let capture = match &options.pcap {
            Some(path) => Some(
                PcapWriter::create(path).map_err(|source| NamespaceError::Io {
                    action: format!("create the capture file {}", path.display()),
                    source,
                })?,
            ),
            None => None,
        };
        netns::remove_stale()?;

        let id = netns::next_link_id();
        let client = Namespace::create(&format!("{}cli-{id}", netns::PREFIX))?;
        let server = Namespace::create(&format!("{}srv-{id}", netns::PREFIX))?;
        let client_tun = open_configured_tun(&client, CLIENT_ADDRESS)?;
        let server_tun = open_configured_tun(&server, SERVER_ADDRESS)?;

        let started = Instant::now();
        let engine = Link::new(
            spec,
            PacketFormat::Ipv4,
            seed,
            started,
            NAT_ADDRESS_POOL.to_vec(),
        );
        let forwarder =
            Forwarder::start(engine, client_tun, server_tun, capture).map_err(|source| {
                NamespaceError::Io {
                    action: "start forwarding threads".into(),
                    source,
                }
            })?;
        let addresses = LinkAddresses {
            client_namespace: client.name().to_owned(),
            server_namespace: server.name().to_owned(),
            client: CLIENT_ADDRESS,
            server: SERVER_ADDRESS,
        };
        tracing::info!(
            client_namespace = %addresses.client_namespace,
            server_namespace = %addresses.server_namespace,
            seed,
            "link up"
        );
        Ok(Self {
            addresses,
            started,
            forwarder,
            server,
            client,
        })
    }

    /// Names and addresses.
    pub fn addresses(&self) -> &LinkAddresses {
        &self.addresses
    }

    /// Returns time zero of the engine's schedules.
    pub fn started_at(&self) -> Instant {
        self.started
    }

    /// Engine counters of one direction.
    pub fn stats(&self, direction: Direction) -> DirectionStats {
        self.forwarder.link().direction(direction).stats()
    }

    /// Runs `work` on a thread inside the client namespace.
    pub fn run_in_client<T: Send>(
        &self,
        work: impl FnOnce() -> T + Send,
    ) -> Result<T, NamespaceError> {
        self.client.run_in(work)
    }

    /// Runs `work` on a thread inside the server namespace.
    pub fn run_in_server<T: Send>(
        &self,
        work: impl FnOnce() -> T + Send,
    ) -> Result<T, NamespaceError> {
        self.server.run_in(work)
    }

    /// Stops forwarding and deletes the namespaces (the same as dropping).
    pub fn shutdown(mut self) {
        self.forwarder.stop();
    }
}

/// Creates the TUN device inside `namespace` with IPv6 off, then gives it `address` and a
/// default route.
fn open_configured_tun(namespace: &Namespace, address: Ipv4Addr) -> Result<File, NamespaceError> {
    let tun = namespace.run_in(|| {
        // IPv6 off before the device exists, so it never sends router or neighbour
        // solicitations across the link.
        for key in ["all", "default"] {
            let path = format!("/proc/sys/net/ipv6/conf/{key}/disable_ipv6");
            std::fs::write(&path, "1").map_err(|source| NamespaceError::Io {
                action: format!("write {path}"),
                source,
            })?;
        }
        sys::open_tun(TUN_NAME).map_err(|source| NamespaceError::Io {
            action: format!("open TUN device {TUN_NAME} (is /dev/net/tun present?)"),
            source,
        })
    })??;

    let name = namespace.name();
    netns::ip(&[
        "-n",
        name,
        "link",
        "set",
        TUN_NAME,
        "txqueuelen",
        TXQUEUELEN,
        "mtu",
        "1500",
        "up",
    ])?;
    let cidr = format!("{address}/24");
    netns::ip(&["-n", name, "addr", "add", &cidr, "dev", TUN_NAME])?;
    netns::ip(&["-n", name, "route", "add", "default", "dev", TUN_NAME])?;
    Ok(tun)
}
