//! The edge's view of one owner node.

use std::sync::Arc;
use std::time::Duration;

use tidings_schema::Rejection;
use tidings_schema::mesh::{Delivery, OwnerReply, OwnerRequest, Registration};
use tidings_store::Owner;
use tokio::sync::mpsc;

pub use crate::rpc::{RemoteOwner, UserSource};

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

    /// Sends the owner the full set of users this edge serves, read from `users`; a
    /// remote owner gets it again after every reconnect. The registration lasts `lease`
    /// unless renewed by [`OwnerHandle::update_registration`].
    pub fn register_users(&self, edge_id: &str, users: Arc<dyn UserSource>, lease: Duration) {
        match self {
            OwnerHandle::Local(owner) => owner.register_edge_users(&Registration {
                edge_id: edge_id.to_owned(),
                replace: true,
                added: users.users(),
                removed: Vec::new(),
                lease_ms: lease_ms(lease),
            }),
            OwnerHandle::Remote(owner) => owner.register_users(users, lease),
        }
    }

    /// Sends a change to the registered users, or renews the registration when both
    /// lists are empty.
    pub fn update_registration(
        &self,
        edge_id: &str,
        added: Vec<String>,
        removed: Vec<String>,
        lease: Duration,
    ) {
        match self {
            OwnerHandle::Local(owner) => owner.register_edge_users(&Registration {
                edge_id: edge_id.to_owned(),
                replace: false,
                added,
                removed,
                lease_ms: lease_ms(lease),
            }),
            OwnerHandle::Remote(owner) => owner.update_registration(added, removed, lease),
        }
    }
}

fn lease_ms(lease: Duration) -> u32 {
    u32::try_from(lease.as_millis()).unwrap_or(u32::MAX)
}
