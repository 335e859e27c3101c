//! `netsim`: a packet-level link emulator for Tidings.
//!
//! It impairs real kernel TCP and real QUIC alike. In link mode it creates two network
//! namespaces joined by TUN devices that this process owns, reads every IP packet, applies
//! the impairments of a scenario in user space and writes the packet out on the other side
//! (the design of the Mahimahi emulator). In proxy mode it relays UDP datagrams between a
//! local port and a target through the same engine, without root.
//!
//! `netsim run` drives real Tidings clients through the link, QUIC and the WebSocket
//! fallback one after the other with the same seed, and writes a report of message counts
//! and delivery latency ([`workload`], [`stats`], [`drive`], [`run`], [`report`]).
//!
//! Key types: [`engine::Link`] (the I/O-free impairment engine), [`config::Scenario`] (the
//! TOML schema), [`link::NetnsLink`] (namespaces and forwarding), [`proxy::UdpProxy`] and
//! [`cli::NetsimArgs`].

pub mod cli;
pub mod compare;
pub mod config;
pub mod drive;
pub mod engine;
pub mod faults;
mod forward;
pub mod ipv4;
pub mod link;
pub mod netns;
pub mod pcap;
pub mod plot;
pub mod proxy;
pub mod relay;
pub mod report;
pub mod run;
pub mod scenarios;
pub mod stats;
#[allow(
    unsafe_code,
    reason = "setns, the TUN ioctl and poll have no safe wrapper in std"
)]
mod sys;
pub mod workload;
