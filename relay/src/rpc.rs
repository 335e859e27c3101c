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

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::twoparty::VatNetwork;
use futures::io::{BufReader, BufWriter};
use tidings_schema::Rejection;
use tidings_schema::mesh::{Delivery, OwnerReply, OwnerRequest};
use tidings_store::Owner;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

pub use crate::rpc_client::{RemoteOwner, RemoteOwnerConfig};
pub use crate::rpc_server::{OwnerServer, serve_owner, serve_service};

/// Maximum number of deliveries the owner packs into one `EdgeSink.deliver` call.
pub const MAX_DELIVERY_BATCH: usize = 256;

/// Maximum number of `EdgeSink.deliver` calls in flight per attached edge. Together with
/// [`MAX_DELIVERY_BATCH`] this bounds how far an owner runs ahead of a slow edge.
pub const MAX_DELIVER_CALLS_IN_FLIGHT: usize = 8;

/// A boxed future that replies to one owner request.
pub type CallFuture = Pin<Box<dyn Future<Output = Result<OwnerReply, Rejection>> + Send>>;

/// The owner operations an RPC server calls, implemented by the store's [`Owner`].
///
/// The trait exists so the mesh can be tested and benchmarked against any owner that
/// produces replies and deliveries, independent of storage.
pub trait OwnerService: Send + Sync + 'static {
    /// Carries out one request, as [`Owner::call`] does.
    fn call(self: Arc<Self>, request: OwnerRequest) -> CallFuture;

    /// Registers an edge for fan-out, as [`Owner::attach_edge`] does.
    fn attach_edge(&self, edge_id: &str) -> mpsc::Receiver<Arc<Delivery>>;
}

impl OwnerService for Owner {
    fn call(self: Arc<Self>, request: OwnerRequest) -> CallFuture {
        Box::pin(async move { Owner::call(&self, request).await })
    }

    fn attach_edge(&self, edge_id: &str) -> mpsc::Receiver<Arc<Delivery>> {
        Owner::attach_edge(self, edge_id)
    }
}

/// Wraps a TCP stream in a two-party vat network for one side of the mesh.
pub(crate) fn vat_network(
    stream: TcpStream,
    side: Side,
) -> VatNetwork<impl futures::AsyncRead + Unpin> {
    let (reader, writer) = stream.into_split();
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
