//! The Tidings client library and command-line client.
//!
//! [`Client`] speaks the native protocol over QUIC (ALPN `tidings/1`): a control stream
//! for `Hello` and requests, one client-opened stream per conversation it sends in, and
//! server-opened streams that carry deliveries. It reconnects by itself with exponential
//! backoff and full jitter, and retries sends with their idempotency key, so the server
//! stores a message at most once however often it is retried within its idempotency window.
//!
//! When QUIC cannot reach the edge (UDP blocked, port closed), the same API runs over the
//! WebSocket fallback on the edge's HTTP port: one frame per binary message. [`Transport`]
//! in [`ClientConfig`] chooses QUIC, WebSocket, or QUIC first with automatic fallback.
//!
//! This crate is not the edge: it depends on `tidings-schema` only.
//!
//! Key types: [`Client`], [`ClientConfig`], [`Transport`], [`ClientError`],
//! [`ConnectError`], [`Backoff`]. The command-line client lives in [`cli`].

mod backoff;
pub mod cli;
mod client;
mod config;
mod connect;
mod deliveries;
mod error;
mod keylog;
mod presence;
mod receipt_requests;
mod receipts;
mod reconnect;
mod requests;
mod sends;
mod session;
mod stats;
mod sync;
#[allow(
    unsafe_code,
    reason = "getsockopt(TCP_INFO) has no safe wrapper in std"
)]
mod tcp_info;
mod transport;
mod websocket;

pub use backoff::Backoff;
pub use client::Client;
pub use config::{
    ClientConfig, DEFAULT_HTTP_PORT, DEFAULT_SERVER, DEFAULT_SERVER_NAME, Transport, TrustRoots,
    WEBSOCKET_PATH,
};
pub use error::{ClientError, ConnectError};
pub use presence::{DEFAULT_HEARTBEAT_INTERVAL, PresenceEvent};
pub use receipts::ReceiptEvent;
pub use requests::new_client_msg_id;
pub use stats::{QuicStats, TcpStats, TransportStats};
pub use sync::SyncCursors;
pub use tidings_schema::frame::{ConversationInfo, HistoryPage, Message, SendAck, Welcome};
pub use tidings_schema::presence::{PresenceEntry, PresenceState, PresenceUpdate, Typing};
pub use tidings_schema::receipt::{
    GapPage, InboxEntry, InboxPage, MemberReceipt, ReceiptList, SeqReceiptCount,
};
pub use tidings_schema::{ErrorCode, Rejection};
pub use transport::ALPN;
