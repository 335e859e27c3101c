//! NAT rebinding for IPv4 packets on the client side of the link.
//!
//! Until the first rebinding the NAT is transparent. From then on it rewrites the client's
//! source address and port to a public mapping on the way up and back on the way down. At
//! each rebinding every mapping is forgotten: packets to an old mapping are dropped, and the
//! client's next packet gets a new one, so the server sees a new source.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Instant;

use super::schedule::rebind_epoch;
use crate::config::{NatConfig, RebindKind};
use crate::ipv4;

/// First public port handed out by port rebinding. The range stays below Linux's default
/// ephemeral range (32768 and up), so a public port never equals a client's real port.
const FIRST_PUBLIC_PORT: u16 = 20_000;
const PUBLIC_PORT_COUNT: u16 = 12_000;

type Endpoint = (u8, Ipv4Addr, u16);

/// NAT settings resolved for one link.
#[derive(Debug, Clone)]
pub struct NatSpec {
    /// The schedule and what changes.
    pub config: NatConfig,
    /// Public addresses for address rebinding, used in turn; each must route to the client
    /// side of the link. Unused for port rebinding.
    pub address_pool: Vec<Ipv4Addr>,
}

#[derive(Debug)]
pub(crate) struct Nat {
    spec: NatSpec,
    start: Instant,
    epoch: u64,
    outbound: HashMap<Endpoint, (Ipv4Addr, u16)>,
    inbound: HashMap<Endpoint, (Ipv4Addr, u16)>,
    next_port: u16,
}

impl Nat {
    pub(crate) fn new(spec: NatSpec, start: Instant) -> Self {
        Self {
            spec,
            start,
            epoch: 0,
            outbound: HashMap::new(),
            inbound: HashMap::new(),
            next_port: 0,
        }
    }

    fn refresh(&mut self, now: Instant) {
        let epoch = rebind_epoch(&self.spec.config, now.saturating_duration_since(self.start));
        if epoch != self.epoch {
            tracing::debug!(epoch, mappings = self.outbound.len(), "NAT rebinding");
            self.epoch = epoch;
            self.outbound.clear();
            self.inbound.clear();
        }
    }

    /// Translates a client-to-server packet; always keeps it.
    pub(crate) fn outbound(&mut self, now: Instant, packet: &mut [u8]) {
        self.refresh(now);
        if self.epoch == 0 {
            return;
        }
        let Some(layout) = ipv4::transport_layout(packet) else {
            return;
        };
        let private: Endpoint = (
            layout.protocol,
            ipv4::source(packet),
            ipv4::source_port(packet, &layout),
        );
        let public = match self.outbound.get(&private) {
            Some(public) => *public,
            None => {
                let public = self.allocate(private);
                self.outbound.insert(private, public);
                self.inbound.insert(
                    (layout.protocol, public.0, public.1),
                    (private.1, private.2),
                );
                public
            }
        };
        ipv4::set_source(packet, public.0);
        ipv4::set_source_port(packet, &layout, public.1);
        ipv4::recompute_checksums(packet, &layout);
    }

    /// Translates a server-to-client packet; returns false when it hits no current mapping.
    pub(crate) fn inbound(&mut self, now: Instant, packet: &mut [u8]) -> bool {
        self.refresh(now);
        if self.epoch == 0 {
            return true;
        }
        let Some(layout) = ipv4::transport_layout(packet) else {
            return true;
        };
        let public: Endpoint = (
            layout.protocol,
            ipv4::destination(packet),
            ipv4::destination_port(packet, &layout),
        );
        let Some(&(address, port)) = self.inbound.get(&public) else {
            return false;
        };
        ipv4::set_destination(packet, address);
        ipv4::set_destination_port(packet, &layout, port);
        ipv4::recompute_checksums(packet, &layout);
        true
    }

    fn allocate(&mut self, private: Endpoint) -> (Ipv4Addr, u16) {
        match self.spec.config.rebind {
            RebindKind::Port => {
                let port = FIRST_PUBLIC_PORT + self.next_port;
                self.next_port = (self.next_port + 1) % PUBLIC_PORT_COUNT;
                (private.1, port)
            }
            RebindKind::Address => {
                let pool = &self.spec.address_pool;
                let index =
                    usize::try_from((self.epoch - 1) % pool.len().max(1) as u64).unwrap_or(0);
                (pool.get(index).copied().unwrap_or(private.1), private.2)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ipv4::tests::udp_packet;

    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);

    fn nat(rebind: RebindKind, start: Instant) -> Nat {
        let config = NatConfig {
            rebind,
            first: Duration::from_secs(1),
            every: Some(Duration::from_secs(5)),
        };
        let pool = vec![Ipv4Addr::new(10, 77, 0, 101), Ipv4Addr::new(10, 77, 0, 102)];
        Nat::new(
            NatSpec {
                config,
                address_pool: pool,
            },
            start,
        )
    }

    fn seen_source(nat: &mut Nat, now: Instant) -> (Ipv4Addr, u16) {
        let mut packet = udp_packet(CLIENT, 40000, SERVER, 5000, b"up");
        nat.outbound(now, &mut packet);
        let layout = ipv4::transport_layout(&packet).unwrap();
        assert!(ipv4::checksums_valid(&packet, &layout));
        (ipv4::source(&packet), ipv4::source_port(&packet, &layout))
    }

    fn reply_reaches_client(nat: &mut Nat, now: Instant, to: (Ipv4Addr, u16)) -> bool {
        let mut packet = udp_packet(SERVER, 5000, to.0, to.1, b"down");
        let kept = nat.inbound(now, &mut packet);
        if kept {
            let layout = ipv4::transport_layout(&packet).unwrap();
            assert_eq!(ipv4::destination(&packet), CLIENT);
            assert_eq!(ipv4::destination_port(&packet, &layout), 40000);
            assert!(ipv4::checksums_valid(&packet, &layout));
        }
        kept
    }

    #[test]
    fn port_rebind_changes_port_and_drops_old() {
        let start = Instant::now();
        let mut nat = nat(RebindKind::Port, start);
        let before = seen_source(&mut nat, start);
        assert_eq!(before, (CLIENT, 40000));

        let t1 = start + Duration::from_millis(1500);
        let first = seen_source(&mut nat, t1);
        assert_eq!(first.0, CLIENT);
        assert_ne!(first.1, 40000);
        assert!(reply_reaches_client(&mut nat, t1, first));
        assert!(!reply_reaches_client(&mut nat, t1, before));

        let t2 = start + Duration::from_millis(6500);
        let second = seen_source(&mut nat, t2);
        assert_ne!(second.1, first.1);
        assert!(!reply_reaches_client(&mut nat, t2, first));
        assert!(reply_reaches_client(&mut nat, t2, second));
    }

    #[test]
    fn address_rebind_changes_address() {
        let start = Instant::now();
        let mut nat = nat(RebindKind::Address, start);
        let t1 = start + Duration::from_millis(1500);
        let first = seen_source(&mut nat, t1);
        assert_eq!(first, (Ipv4Addr::new(10, 77, 0, 101), 40000));
        let t2 = start + Duration::from_millis(6500);
        let second = seen_source(&mut nat, t2);
        assert_eq!(second, (Ipv4Addr::new(10, 77, 0, 102), 40000));
        assert!(!reply_reaches_client(&mut nat, t2, first));
        assert!(reply_reaches_client(&mut nat, t2, second));
    }
}
