//! An owner's view of the cluster: which virtual shards it holds, and how it reaches the
//! owners of the others.
//!
//! Placement is computed by the mesh (`tidings-relay`), which depends on this crate, so
//! the owner receives the result as a [`ShardMap`] and reaches its peers through the
//! [`OwnerPeers`] trait that the mesh implements.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tidings_schema::frame::ConversationInfo;
use tidings_schema::ids::VIRTUAL_SHARDS;
use tidings_schema::mesh::InboxUpdate;
use tidings_schema::{ErrorCode, Rejection};

/// A boxed future returned by [`OwnerPeers`] calls.
pub type PeerFuture<T> = Pin<Box<dyn Future<Output = Result<T, Rejection>> + Send>>;

/// Calls from one owner to another, implemented over the mesh.
pub trait OwnerPeers: Send + Sync + 'static {
    /// Applies inbox changes on owner `peer`, for users whose home shard it holds. The
    /// future completes once the changes are durable there.
    fn update_inbox(&self, peer: usize, updates: Vec<InboxUpdate>) -> PeerFuture<()>;

    /// Reads the rows of conversations held by owner `peer` that `user` is a member of.
    fn conversations(
        &self,
        peer: usize,
        user: String,
        conversation_ids: Vec<u64>,
    ) -> PeerFuture<Vec<ConversationInfo>>;
}

/// Where a virtual shard lives, seen from this owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardHolder {
    Local,
    /// Another owner, by its index in the cluster's owner list.
    Peer(usize),
}

/// The owner index of every virtual shard and the index of this owner.
#[derive(Clone, PartialEq, Eq)]
pub struct ShardMap {
    local: usize,
    owners: Arc<[usize]>,
    names: Arc<[String]>,
}

impl ShardMap {
    /// Creates a map in which this owner holds every shard.
    pub fn single(name: &str) -> ShardMap {
        ShardMap {
            local: 0,
            owners: vec![0; usize::from(VIRTUAL_SHARDS)].into(),
            names: vec![name.to_owned()].into(),
        }
    }

    /// Creates a map from the owner index of every virtual shard, in shard order.
    ///
    /// `names` lists the owners by index and `local` is this owner's index. Fails when
    /// the list does not cover every virtual shard or names an unknown owner.
    pub fn new(local: usize, names: Vec<String>, owners: Vec<usize>) -> Result<ShardMap, String> {
        if owners.len() != usize::from(VIRTUAL_SHARDS) {
            return Err(format!(
                "shard map has {} entries, expected one per virtual shard ({VIRTUAL_SHARDS})",
                owners.len()
            ));
        }
        if local >= names.len() || owners.iter().any(|&owner| owner >= names.len()) {
            return Err(format!(
                "shard map refers to an owner index outside the {} listed owners",
                names.len()
            ));
        }
        Ok(ShardMap {
            local,
            owners: owners.into(),
            names: names.into(),
        })
    }

    /// Returns where `vshard` lives.
    pub fn holder(&self, vshard: u16) -> ShardHolder {
        let owner = self.owners[usize::from(vshard % VIRTUAL_SHARDS)];
        if owner == self.local {
            ShardHolder::Local
        } else {
            ShardHolder::Peer(owner)
        }
    }

    /// Returns the name of owner `index`.
    pub fn owner_name(&self, index: usize) -> &str {
        &self.names[index]
    }

    /// Returns this owner's name.
    pub fn local_name(&self) -> &str {
        &self.names[self.local]
    }

    /// Returns the number of virtual shards this owner holds.
    pub fn local_count(&self) -> usize {
        self.owners
            .iter()
            .filter(|&&owner| owner == self.local)
            .count()
    }

    /// Rejects a request for `vshard` unless this owner holds it.
    pub(crate) fn check_local(&self, vshard: u16, what: &str) -> Result<(), Rejection> {
        match self.holder(vshard) {
            ShardHolder::Local => Ok(()),
            ShardHolder::Peer(owner) => Err(Rejection::new(
                ErrorCode::NotShardOwner,
                format!(
                    "{what} is in virtual shard {vshard}, which owner {} holds, not {}; check \
                     that every node runs with the same cluster file",
                    self.owner_name(owner),
                    self.local_name()
                ),
            )),
        }
    }
}

impl fmt::Debug for ShardMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardMap")
            .field("local", &self.local_name())
            .field("local_shards", &self.local_count())
            .field("owners", &self.names)
            .finish()
    }
}

/// The shard map and peer connections of an owner in a multi-owner cluster.
#[derive(Clone)]
pub struct ClusterView {
    pub shards: ShardMap,
    pub peers: Arc<dyn OwnerPeers>,
}

impl fmt::Debug for ClusterView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterView")
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}
