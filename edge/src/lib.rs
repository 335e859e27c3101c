//! The Tidings edge node: one QUIC endpoint (ALPN `tidings/1`), token authentication,
//! the session registry, and the streams that carry sends and deliveries.
//!
//! The edge stores nothing. It reaches the owner of each conversation through
//! [`tidings_relay::Router`] and fans the owners' deliveries out to local sessions.
//!
//! Key types: [`Edge::start`] with an [`EdgeConfig`] returns an [`EdgeHandle`];
//! [`auth::TokenVerifier`] checks `Hello` tokens; [`tls::DevPki`] creates the development
//! certificates that clients trust through `ca.pem`.
//!
//! Stream model: the client's first bidirectional stream is the control stream
//! (`connection`, `control`). Later client-opened streams are conversation streams
//! (`conversation`). The edge opens one delivery stream per conversation it delivers in
//! (`delivery`, fed by `fanout`). Every stream has one writer task (`writer`).

pub mod admin;
pub mod auth;
pub mod certs;
pub mod config;
mod connection;
mod control;
mod conversation;
mod datagram;
mod delivery;
mod endpoint;
mod fanout;
mod hello;
pub mod http;
mod http3;
mod https;
pub mod metrics;
pub mod origin;
pub mod presence;
pub mod presence_hub;
mod presence_mesh;
mod presence_session;
pub mod rate;
mod receipts;
mod registry;
mod session;
mod stamp;
pub mod static_files;
mod streams;
pub mod tls;
pub mod typing;
pub mod websocket;
mod webtransport;
mod writer;

pub use auth::{Claims, KeyError, KeySource, TokenSigner, TokenVerifier};
pub use certs::{CertHashes, CertStore, RotationSchedule};
pub use config::{EdgeConfig, RateConfig, TlsSource};
pub use endpoint::{Edge, EdgeHandle, StartError};
pub use http::WEBSOCKET_PATH;
pub use http3::WEBTRANSPORT_PATH;
pub use metrics::{EdgeMetrics, Transport};
pub use tls::{ALPN_H3, ALPN_TIDINGS, DevPki, TlsError};
