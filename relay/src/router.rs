//! Routing from conversations and users to their owner node.

use tidings_schema::ids;

use crate::handle::OwnerHandle;
use crate::placement::{self, OwnerWeight};

/// Maps conversations and users to owner nodes through their virtual shards.
#[derive(Clone)]
pub struct Router {
    owners: Vec<OwnerHandle>,
    /// Owner index for every virtual shard.
    shard_owner: Vec<usize>,
}

impl Router {
    /// Creates a router over a single owner that holds every shard.
    pub fn single(owner: OwnerHandle) -> Self {
        Router {
            owners: vec![owner],
            shard_owner: vec![0; usize::from(ids::VIRTUAL_SHARDS)],
        }
    }

    /// Creates a router that places shards on `owners` by weighted rendezvous hashing.
    ///
    /// Panics if `owners` is empty or every weight is 0.
    pub fn with_placement(owners: Vec<(OwnerWeight, OwnerHandle)>) -> Self {
        let weights: Vec<OwnerWeight> = owners.iter().map(|(w, _)| w.clone()).collect();
        Router {
            shard_owner: placement::place_all(&weights),
            owners: owners.into_iter().map(|(_, handle)| handle).collect(),
        }
    }

    /// Returns the owner of the conversation's virtual shard.
    pub fn for_conversation(&self, conversation_id: u64) -> &OwnerHandle {
        self.for_shard(ids::conversation_shard(conversation_id))
    }

    /// Returns the owner of the user's home shard.
    pub fn for_user(&self, user_id: &str) -> &OwnerHandle {
        self.for_shard(ids::user_shard(user_id))
    }

    /// Returns the index in [`Router::owners`] of the owner of the user's home shard.
    pub fn owner_index_for_user(&self, user_id: &str) -> usize {
        self.shard_owner[usize::from(ids::user_shard(user_id))]
    }

    fn for_shard(&self, shard: u16) -> &OwnerHandle {
        &self.owners[self.shard_owner[usize::from(shard)]]
    }

    /// Every owner, for fan-out registration.
    pub fn owners(&self) -> &[OwnerHandle] {
        &self.owners
    }
}
