//! Owner-side persistence for Tidings.
//!
//! An [`Owner`] keeps its virtual shards in a few redb files (storage shards). Each file
//! has one writer thread that commits batches of requests in one durable transaction
//! (group commit); a request's reply is released only after its commit returns. After
//! each commit the owner fans the committed messages out to the attached edges.
//!
//! This crate is not the mesh: it serves requests that already reached the owner of the
//! conversation's shard, on behalf of users that an edge has authenticated.
//!
//! Key types: [`Owner`] (open, call, attach an edge), [`OwnerConfig`], [`OpenError`],
//! and for a multi-owner cluster [`ClusterView`]: the [`ShardMap`] of the virtual shards
//! this owner holds and the [`OwnerPeers`] it reaches the other owners through.
//! Module map: `tables` (key layout and placement), `record` (binary encoding),
//! `writer` (group commit), `batch`, `send`, `membership`, `inbox`, `idempotency`
//! (the write path per concept), `read` (history and conversation list), `fanout`,
//! `delivery_log` (replay of fan-out after a restart or an overflow),
//! `layout` (data directory), [`bench`] (storage benchmarks).

mod batch;
pub mod bench;
pub mod cluster;
mod delivery_log;
mod error;
mod fanout;
mod idempotency;
mod inbox;
mod inbox_forward;
mod last_seen;
pub mod layout;
mod membership;
pub mod owner;
mod presence_board;
mod read;
mod receipts;
mod receipts_read;
mod record;
mod send;
mod tables;
mod validate;
mod writer;

pub use cluster::{ClusterView, OwnerPeers, PeerFuture, ShardHolder, ShardMap};
pub use delivery_log::LOG_RETENTION;
pub use fanout::EDGE_QUEUE_CAPACITY;
pub use owner::{
    EdgeAttachment, HOLD_FANOUT_PREFIX_ENV, MIN_IDEMPOTENCY_WINDOW, OpenError, Owner, OwnerConfig,
};
pub use read::{DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT, PAGE_BODY_BUDGET};
pub use receipts_read::{DEFAULT_GAP_LIMIT, DEFAULT_INBOX_LIMIT, MAX_GAP_LIMIT, MAX_INBOX_LIMIT};
pub use validate::{MAX_CLIENT_MSG_ID_BYTES, MAX_GROUP_NAME_BYTES};
