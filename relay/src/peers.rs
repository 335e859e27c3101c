//! Owner-to-owner calls over the mesh: inbox rows for users homed on another owner, and
//! conversation rows for their inbox listings.

use std::future::Future;
use std::time::{Duration, Instant};

use tidings_schema::frame::ConversationInfo;
use tidings_schema::mesh::InboxUpdate;
use tidings_schema::{ErrorCode, Rejection};
use tidings_store::{OwnerPeers, PeerFuture};

use crate::rpc::RemoteOwner;

/// How long a peer call keeps retrying while the other owner is unreachable.
const PEER_RETRY_WINDOW: Duration = Duration::from_secs(10);

/// Connections from one owner to every other owner, indexed like the cluster's owner list.
pub struct MeshPeers {
    /// `None` at this owner's own index.
    owners: Vec<Option<RemoteOwner>>,
}

impl MeshPeers {
    /// Creates the peer set from connections indexed like the cluster's owner list, with
    /// `None` at this owner's index.
    pub fn new(owners: Vec<Option<RemoteOwner>>) -> MeshPeers {
        MeshPeers { owners }
    }

    /// Returns the connections to the other owners.
    pub fn connections(&self) -> Vec<RemoteOwner> {
        self.owners.iter().flatten().cloned().collect()
    }

    fn owner(&self, peer: usize) -> Result<RemoteOwner, Rejection> {
        match self.owners.get(peer) {
            Some(Some(owner)) => Ok(owner.clone()),
            _ => Err(Rejection::internal(format!(
                "no mesh connection to owner index {peer}"
            ))),
        }
    }
}

impl OwnerPeers for MeshPeers {
    fn update_inbox(&self, peer: usize, updates: Vec<InboxUpdate>) -> PeerFuture<()> {
        let owner = self.owner(peer);
        Box::pin(async move {
            let owner = owner?;
            with_retries(|| owner.update_inbox(updates.clone())).await
        })
    }

    fn conversations(
        &self,
        peer: usize,
        user: String,
        conversation_ids: Vec<u64>,
    ) -> PeerFuture<Vec<ConversationInfo>> {
        let owner = self.owner(peer);
        Box::pin(async move {
            let owner = owner?;
            with_retries(|| owner.conversations_by_id(user.clone(), conversation_ids.clone())).await
        })
    }
}

/// Runs `call` again after each `OwnerUnavailable` rejection, waiting its `retry_after_ms`,
/// until [`PEER_RETRY_WINDOW`] has passed. Inbox changes are idempotent, so a repeat of a
/// call that did arrive changes nothing.
async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, Rejection>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Rejection>>,
{
    let deadline = Instant::now() + PEER_RETRY_WINDOW;
    loop {
        match call().await {
            Err(rejection)
                if rejection.code == ErrorCode::OwnerUnavailable && Instant::now() < deadline =>
            {
                let pause = Duration::from_millis(u64::from(rejection.retry_after_ms.max(10)));
                tracing::debug!(%rejection, ?pause, "owner peer unavailable; retrying");
                tokio::time::sleep(pause.min(deadline - Instant::now())).await;
            }
            outcome => return outcome,
        }
    }
}
