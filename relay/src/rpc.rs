//! Cap'n Proto RPC between edges and owners over TCP (`schema/capnp/mesh.capnp`).
//!
//! capnp-rpc objects are not `Send`, so each [`OwnerServer`] and each [`RemoteOwner`]
//! runs its RPC system on a dedicated thread with a current-thread runtime and a
//! `LocalSet`. Tokio channels bridge that thread and the multi-threaded runtime of the
//! rest of the process.
//!
//! Versioning: an edge calls `Owner.open(version)` on the bootstrap capability and gets
//! the `OwnerV1` capability back. An owner that speaks another version fails `open` with
//! a message naming both versions, and the edge keeps retrying with backoff.
//!
//! Security: with a [`crate::mesh_tls::MeshTls`] every connection runs mutual TLS, and a
//! peer without a certificate from the mesh CA is disconnected during the handshake.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::twoparty::VatNetwork;
use futures::io::{BufReader, BufWriter};
use tidings_schema::ErrorCode;
use tidings_schema::Rejection;
use tidings_schema::frame::ConversationInfo;
use tidings_schema::mesh::{
    Delivery, InboxUpdate, LogPosition, OwnerReply, OwnerRequest, Registration,
};
use tidings_store::{EdgeAttachment, Owner};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

pub use crate::rpc_client::{RemoteOwner, RemoteOwnerConfig, UserSource};
pub use crate::rpc_server::{OwnerServer, serve_owner, serve_service, serve_service_with};

/// Maximum number of deliveries the owner packs into one `EdgeSink.deliver` call.
pub const MAX_DELIVERY_BATCH: usize = 256;

/// Maximum number of `EdgeSink.deliver` calls in flight per attached edge. Together with
/// [`MAX_DELIVERY_BATCH`] this bounds how far an owner runs ahead of a slow edge.
pub const MAX_DELIVER_CALLS_IN_FLIGHT: usize = 8;

/// A boxed future that replies to one owner request.
pub type CallFuture = Pin<Box<dyn Future<Output = Result<OwnerReply, Rejection>> + Send>>;

/// A boxed future of an owner-to-owner request.
pub type PeerCallFuture<T> = Pin<Box<dyn Future<Output = Result<T, Rejection>> + Send>>;

/// The owner operations an RPC server calls, implemented by the store's [`Owner`].
///
/// The trait exists so the mesh can be tested and benchmarked against any owner that
/// produces replies and deliveries, independent of storage.
pub trait OwnerService: Send + Sync + 'static {
    /// Carries out one request, as [`Owner::call`] does.
    fn call(self: Arc<Self>, request: OwnerRequest) -> CallFuture;

    /// Registers an edge for fan-out, as [`Owner::attach_edge`] does.
    fn attach_edge(&self, edge_id: &str) -> mpsc::Receiver<Arc<Delivery>>;

    /// Registers an edge for fan-out and replays what it missed after `positions`, as
    /// [`Owner::attach_edge_at`] does. An owner without a delivery log attaches live only.
    fn attach_edge_at(&self, edge_id: &str, positions: &[LogPosition]) -> EdgeAttachment {
        let _ = positions;
        EdgeAttachment {
            deliveries: self.attach_edge(edge_id),
            start: Vec::new(),
            lost: Vec::new(),
        }
    }

    /// Records which users an edge serves, as [`Owner::register_edge_users`] does. It runs
    /// before the RPC method returns, so registrations apply in the order they were sent.
    fn register_users(&self, registration: &Registration);

    /// Applies inbox changes from another owner, as [`Owner::update_inbox`] does.
    fn update_inbox(self: Arc<Self>, updates: Vec<InboxUpdate>) -> PeerCallFuture<()> {
        let _ = updates;
        Box::pin(async { Err(unsupported("updateInbox")) })
    }

    /// Reads conversation rows for another owner, as [`Owner::conversations_by_id`] does.
    fn conversations_by_id(
        self: Arc<Self>,
        user: String,
        conversation_ids: Vec<u64>,
    ) -> PeerCallFuture<Vec<ConversationInfo>> {
        let _ = (user, conversation_ids);
        Box::pin(async { Err(unsupported("conversationsById")) })
    }
}

fn unsupported(method: &str) -> Rejection {
    Rejection::new(
        ErrorCode::Internal,
        format!("this owner service does not implement {method}"),
    )
}

impl OwnerService for Owner {
    fn call(self: Arc<Self>, request: OwnerRequest) -> CallFuture {
        Box::pin(async move { Owner::call(&self, request).await })
    }

    fn attach_edge(&self, edge_id: &str) -> mpsc::Receiver<Arc<Delivery>> {
        Owner::attach_edge(self, edge_id)
    }

    fn attach_edge_at(&self, edge_id: &str, positions: &[LogPosition]) -> EdgeAttachment {
        Owner::attach_edge_at(self, edge_id, positions)
    }

    fn register_users(&self, registration: &Registration) {
        Owner::register_edge_users(self, registration);
    }

    fn update_inbox(self: Arc<Self>, updates: Vec<InboxUpdate>) -> PeerCallFuture<()> {
        Box::pin(async move { Owner::update_inbox(&self, updates).await })
    }

    fn conversations_by_id(
        self: Arc<Self>,
        user: String,
        conversation_ids: Vec<u64>,
    ) -> PeerCallFuture<Vec<ConversationInfo>> {
        Box::pin(async move { Owner::conversations_by_id(&self, user, conversation_ids).await })
    }
}

/// Wraps a stream (plain TCP or TLS over TCP) in a two-party vat network for one side of
/// the mesh.
pub(crate) fn vat_network<S>(stream: S, side: Side) -> VatNetwork<impl futures::AsyncRead + Unpin>
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (reader, writer) = tokio::io::split(stream);
    VatNetwork::new(
        BufReader::new(reader.compat()),
        BufWriter::new(writer.compat_write()),
        side,
        Default::default(),
    )
}

/// Starts a thread that runs `main` to completion on a current-thread runtime inside a
/// `LocalSet`, so it may spawn tasks that are not `Send`.
pub(crate) fn spawn_rpc_thread<F, Fut>(
    name: &str,
    main: F,
) -> io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, main());
        })
}
