//! Two real owners in one process that split the virtual shards between them and reach
//! each other through an in-process `OwnerPeers`, as the mesh does between processes.

mod common;

use std::sync::{Arc, OnceLock};

use common::{WAIT, create_group, list, remove_members, send, send_direct};
use tidings_schema::ErrorCode;
use tidings_schema::frame::{ConversationInfo, HistoryRequest};
use tidings_schema::ids::{self, VIRTUAL_SHARDS};
use tidings_schema::mesh::{InboxUpdate, OwnerRequest};
use tidings_store::{ClusterView, Owner, OwnerPeers, PeerFuture, ShardMap};

/// Calls the other owner directly, where the mesh would call it over RPC.
struct InProcessPeers {
    owners: Arc<OnceLock<Vec<Arc<Owner>>>>,
}

impl InProcessPeers {
    fn owner(&self, peer: usize) -> Arc<Owner> {
        Arc::clone(&self.owners.get().expect("both owners are open")[peer])
    }
}

impl OwnerPeers for InProcessPeers {
    fn update_inbox(&self, peer: usize, updates: Vec<InboxUpdate>) -> PeerFuture<()> {
        let owner = self.owner(peer);
        Box::pin(async move { owner.update_inbox(updates).await })
    }

    fn conversations(
        &self,
        peer: usize,
        user: String,
        conversation_ids: Vec<u64>,
    ) -> PeerFuture<Vec<ConversationInfo>> {
        let owner = self.owner(peer);
        Box::pin(async move { owner.conversations_by_id(user, conversation_ids).await })
    }
}

/// Index of the owner of `shard`: even shards on owner 0, odd shards on owner 1.
fn owner_of(shard: u16) -> usize {
    usize::from(shard % 2)
}

/// Opens owners "east" (even shards) and "west" (odd shards).
fn open_pair(dir: &std::path::Path) -> Vec<Arc<Owner>> {
    let slot = Arc::new(OnceLock::new());
    let names = vec!["east".to_owned(), "west".to_owned()];
    let map: Vec<usize> = (0..VIRTUAL_SHARDS).map(owner_of).collect();
    let owners: Vec<Arc<Owner>> = (0..2)
        .map(|local| {
            let view = ClusterView {
                shards: ShardMap::new(local, names.clone(), map.clone()).unwrap(),
                peers: Arc::new(InProcessPeers {
                    owners: Arc::clone(&slot),
                }),
            };
            let config = common::config(&dir.join(&names[local]));
            Owner::open_in_cluster(config, Some(view)).unwrap()
        })
        .collect();
    slot.set(owners.clone()).unwrap_or_else(|_| unreachable!());
    owners
}

/// Returns the first name `prefix-N` whose home shard is on owner `owner`.
fn user_on(prefix: &str, owner: usize) -> String {
    (0..1000)
        .map(|n| format!("{prefix}-{n}"))
        .find(|user| owner_of(ids::user_shard(user)) == owner)
        .expect("some name lands on each owner")
}

/// Returns the first group id from 1 whose shard is on owner `owner`.
fn group_on(owner: usize) -> u64 {
    (1..1000)
        .find(|&id| owner_of(ids::conversation_shard(id)) == owner)
        .expect("some id lands on each owner")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_lists_groups_held_by_other_owner() {
    let dir = tempfile::tempdir().unwrap();
    let owners = open_pair(dir.path());
    let group = group_on(0);
    let creator = user_on("ann", 0);
    let remote_member = user_on("bo", 1);

    create_group(&owners[0], &creator, group, &[&remote_member])
        .await
        .unwrap();
    send(&owners[0], &remote_member, group, "k1", "hello")
        .await
        .unwrap();

    // bo's inbox row was written on west through the peer call, and west reads the
    // conversation row back from east.
    let listed = list(&owners[1], &remote_member).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].conversation_id, group);
    assert_eq!(listed[0].last_seq, 2, "creation and one message");
    assert_eq!(list(&owners[0], &creator).await.len(), 1);

    remove_members(&owners[0], &creator, group, &[&remote_member])
        .await
        .unwrap();
    assert!(list(&owners[1], &remote_member).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_chat_across_owners_reaches_both_inboxes() {
    let dir = tempfile::tempdir().unwrap();
    let owners = open_pair(dir.path());
    let east_user = user_on("cy", 0);
    let west_user = user_on("dee", 1);
    let conversation = ids::direct_conversation_id(&east_user, &west_user);
    let holder = &owners[owner_of(ids::conversation_shard(conversation))];

    send_direct(holder, &east_user, &west_user, "k1", "hi")
        .await
        .unwrap();

    for (user, home) in [(&east_user, 0), (&west_user, 1)] {
        let listed = list(&owners[home], user).await;
        let ids: Vec<u64> = listed.iter().map(|info| info.conversation_id).collect();
        assert_eq!(ids, vec![conversation], "inbox of {user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_other_shards_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let owners = open_pair(dir.path());
    let west_group = group_on(1);

    let rejection = create_group(&owners[0], "ann", west_group, &["bo"])
        .await
        .unwrap_err();
    assert_eq!(rejection.code, ErrorCode::NotShardOwner);
    assert!(rejection.message.contains("west"), "{rejection}");

    let history = OwnerRequest::History {
        user: "ann".into(),
        request: HistoryRequest {
            request_id: 1,
            conversation_id: west_group,
            before_seq: 0,
            limit: 10,
        },
    };
    let rejection = common::call(&owners[0], history).await.unwrap_err();
    assert_eq!(rejection.code, ErrorCode::NotShardOwner);

    let west_user = user_on("eve", 1);
    let listing = OwnerRequest::ListConversations {
        user: west_user.clone(),
    };
    let rejection = common::call(&owners[0], listing).await.unwrap_err();
    assert_eq!(rejection.code, ErrorCode::NotShardOwner);
    assert!(rejection.message.contains(&west_user), "{rejection}");

    let update = InboxUpdate {
        user: west_user,
        conversation_id: 5,
        last_seq: 1,
        change: tidings_schema::mesh::InboxChange::Join,
    };
    let rejection = tokio::time::timeout(WAIT, owners[0].update_inbox(vec![update]))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(rejection.code, ErrorCode::NotShardOwner);
}
