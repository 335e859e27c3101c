//! The edge's view of one owner node.

use std::sync::Arc;

use tidings_schema::Rejection;
use tidings_schema::mesh::{Delivery, OwnerReply, OwnerRequest};
use tidings_store::Owner;
use tokio::sync::mpsc;

pub use crate::rpc::RemoteOwner;

/// One owner node, local or remote, from an edge's point of view.
#[derive(Clone)]
pub enum OwnerHandle {
    /// The owner runs in this process; calls are direct.
    Local(Arc<Owner>),
    /// The owner runs in another process; calls go over Cap'n Proto RPC on TCP.
    Remote(RemoteOwner),
}

impl OwnerHandle {
    /// Carries out one request on the owner.
    ///
    /// Fails with a retryable `OwnerUnavailable` rejection when the owner cannot be
    /// reached. Cancel safety: dropping the future may still let the owner commit.
    pub async fn call(&self, request: OwnerRequest) -> Result<OwnerReply, Rejection> {
        match self {
            OwnerHandle::Local(owner) => owner.call(request).await,
            OwnerHandle::Remote(owner) => owner.call(request).await,
        }
    }

    /// Registers this edge for fan-out and returns its deliveries.
    ///
    /// For a remote owner the connection itself registers the edge and renews the
    /// registration on every reconnect, as [`RemoteOwner::attach_edge`] describes.
    pub fn attach_edge(&self, edge_id: &str) -> mpsc::Receiver<Arc<Delivery>> {
        match self {
            OwnerHandle::Local(owner) => owner.attach_edge(edge_id),
            OwnerHandle::Remote(owner) => owner.attach_edge(edge_id),
        }
    }
}
