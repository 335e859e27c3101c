//! Mesh types: what an edge asks of an owner, and what an owner delivers back.
//!
//! These are the Rust views of the structs in `capnp/mesh.capnp`. The edge has already
//! authenticated the user, so every request names the acting user.

use crate::frame::{
    ConversationInfo, CreateGroup, HistoryPage, HistoryRequest, Leave, MembersChange, Message,
    SendAck,
};
use crate::presence::PresenceEntry;
use crate::receipt::{
    GapPage, GapRequest, InboxPage, InboxSync, MarkUnread, ReceiptList, ReceiptUpdate,
};

/// A send as the edge forwards it to the conversation's owner.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendRequest {
    /// The authenticated sender.
    pub sender: String,
    pub device_id: String,
    pub conversation_id: u64,
    pub client_msg_id: String,
    pub body: String,
    pub direct_peer: Option<String>,
    /// Snowflake id stamped by the edge.
    pub message_id: u64,
    /// Hybrid logical clock timestamp stamped by the edge.
    pub hlc: u64,
    /// Edge wall-clock time at arrival, milliseconds since the Unix epoch.
    pub server_time_ms: u64,
}

/// One request from an edge to an owner, on behalf of an authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerRequest {
    Send(SendRequest),
    History {
        user: String,
        request: HistoryRequest,
    },
    CreateGroup {
        user: String,
        request: CreateGroup,
        /// Random id chosen by the edge for the new group.
        conversation_id: u64,
        /// Stamps for the system message that records the creation.
        stamp: Stamp,
    },
    AddMembers {
        user: String,
        request: MembersChange,
        stamp: Stamp,
    },
    RemoveMembers {
        user: String,
        request: MembersChange,
        stamp: Stamp,
    },
    Leave {
        user: String,
        request: Leave,
        stamp: Stamp,
    },
    ListConversations {
        user: String,
    },
    /// Reads the user's last seen row from their home shard.
    LastSeen {
        user: String,
    },
    /// Raises the user's last seen time to `at_ms` (milliseconds since the Unix epoch).
    /// The owner clamps it to its own clock and never lowers it.
    RecordLastSeen {
        user: String,
        at_ms: u64,
    },
    /// Stores the user's presence settings.
    PresenceSettings {
        user: String,
        hide_last_seen: bool,
    },
    /// Moves the user's receipts forward; the owner clamps both seqs to the last seq and
    /// ignores a seq below the stored one. Replies with a `ReceiptList` of the user's row.
    Receipt {
        user: String,
        conversation_id: u64,
        delivered_seq: u64,
        read_seq: u64,
    },
    /// Reads every member's receipts in a conversation.
    Receipts {
        user: String,
        conversation_id: u64,
    },
    /// Reads inbox entries from the user's home shard.
    InboxSync {
        user: String,
        request: InboxSync,
    },
    /// Sets or clears the mark-unread flag in the user's home shard.
    MarkUnread {
        user: String,
        request: MarkUnread,
    },
    /// Reads the messages after a seq, oldest first.
    Gap {
        user: String,
        request: GapRequest,
    },
    /// An edge's presence of users whose home shard the owner holds; replies `Accepted`.
    PresenceReport(PresenceReport),
}

/// The presence of users on one edge, as the edge reports it to their home shard's owner.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PresenceReport {
    pub edge_id: String,
    /// Each user's most present state across their devices on this edge, with the last
    /// activity this edge saw. An offline entry removes the edge's contribution at once.
    pub entries: Vec<PresenceEntry>,
    /// How long each listed entry stays valid without another report, in milliseconds.
    pub lease_ms: u32,
}

/// The ids an edge stamps on a message the owner writes for it (system messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    pub message_id: u64,
    pub hlc: u64,
    pub server_time_ms: u64,
}

/// The successful reply to an [`OwnerRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerReply {
    SendAck(SendAck),
    HistoryPage(HistoryPage),
    Conversation(ConversationInfo),
    Conversations(Vec<ConversationInfo>),
    /// Reply to `LastSeen`, `RecordLastSeen` and `PresenceSettings`: the stored row.
    LastSeen(LastSeenRow),
    ReceiptList(ReceiptList),
    InboxPage(InboxPage),
    GapPage(GapPage),
    /// Reply to a request that returns no data, such as `PresenceReport`.
    Accepted,
}

/// A user's last activity and whether they hide it, as stored in their home shard.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LastSeenRow {
    pub user: String,
    /// Milliseconds since the Unix epoch; 0 when the user was never seen.
    pub last_seen_ms: u64,
    pub hide_last_seen: bool,
}

/// One committed message, fanned out from the owner to every edge.
///
/// The edge delivers it to each connected device of each recipient, except the device
/// that sent it (which got a `SendAck`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message: Message,
    /// Users who receive the message: the members after the commit, plus members removed
    /// by this very message so that they see their own removal.
    pub recipients: Vec<String>,
    /// The device that sent the message; empty for system messages.
    pub origin_device: String,
    /// A receipt change to push instead of a message; `message` is then empty.
    pub receipt: Option<ReceiptUpdate>,
    /// Presence changes to push instead of a message; `message` and `recipients` are then
    /// empty. Each entry is the user's presence on every edge except the receiving one.
    pub presence: Vec<PresenceEntry>,
    /// Whether `presence` replaces all presence the edge keeps for users whose home shard
    /// is on this owner. Set on the first delivery after the edge attaches.
    pub presence_snapshot: bool,
    /// The message's position in the owner's delivery log. `None` for receipt and
    /// presence deliveries, and for messages from an owner without a delivery log.
    pub position: Option<LogPosition>,
}

/// An entry of the delivery log of one storage file of an owner.
///
/// Each storage file numbers the messages it commits with dense offsets from 1. An edge
/// keeps the highest position it received per file and hands the positions back when it
/// attaches again, so the owner can replay what the edge missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogPosition {
    /// Index of the storage file on the owner.
    pub file: u16,
    /// Random id of the file's log, written when the file was created. Offsets of another
    /// epoch belong to a different log, for example after the data was wiped.
    pub epoch: u64,
    /// Offset of the entry; 0 stands for "before the first entry".
    pub offset: u64,
}

/// What an [`InboxUpdate`] does to the inbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxChange {
    /// The user joined: create the row, or keep its read position if it exists.
    Join,
    /// A message was committed: raise `last_seq` of an existing row, never create one.
    Advance,
    /// The user left or was removed: delete the row.
    Remove,
    /// The user's read receipt moved: raise `last_read_seq` of an existing row to
    /// `last_seq`, and clear its mark-unread flag.
    Read,
}

/// A change to one inbox row, sent by a conversation's owner to the owner of the user's
/// home shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxUpdate {
    pub user: String,
    pub conversation_id: u64,
    /// The conversation's seq the row moves to; unused by `Remove`.
    pub last_seq: u64,
    pub change: InboxChange,
}

/// The users an edge serves, as it registers them with an owner for fan-out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Registration {
    pub edge_id: String,
    /// Whether `added` is the whole set, replacing what the owner holds for this edge.
    pub replace: bool,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// How long the registration stays valid without another call, in milliseconds.
    pub lease_ms: u32,
}

/// Returns the order in which a client of `user_id` tries the edges of a `Welcome` list:
/// edge indexes sorted by the score `SHA-256("tidings/edge/v1" || 0x00 || user id || 0x00
/// || edge address)` (first 8 bytes, big-endian), highest first, ties going to the lower
/// index.
///
/// Every client of one user computes the same order, so a user's devices meet on one
/// edge and that edge's single mesh delivery serves all of them. When an edge leaves the
/// list, only its users move, each to the next edge in their own order.
pub fn edge_order(user_id: &str, edges: &[String]) -> Vec<usize> {
    use sha2::{Digest, Sha256};

    let score = |edge: &str| {
        let mut hasher = Sha256::new();
        hasher.update(b"tidings/edge/v1\0");
        hasher.update(user_id.as_bytes());
        hasher.update(b"\0");
        hasher.update(edge.as_bytes());
        let digest = hasher.finalize();
        u64::from_be_bytes(digest[..8].try_into().expect("SHA-256 digest has 32 bytes"))
    };
    let mut order: Vec<(u64, usize)> = edges
        .iter()
        .enumerate()
        .map(|(index, edge)| (score(edge), index))
        .collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    order.into_iter().map(|(_, index)| index).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edges(list: &[&str]) -> Vec<String> {
        list.iter().map(|edge| (*edge).to_owned()).collect()
    }

    #[test]
    fn edge_order_is_a_stable_permutation() {
        let list = edges(&["10.0.0.1:4433", "10.0.0.2:4433", "10.0.0.3:4433"]);
        let order = edge_order("alice", &list);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2]);
        assert_eq!(edge_order("alice", &list), order, "same user, same order");
        assert!(edge_order("alice", &[]).is_empty());
    }

    #[test]
    fn removed_edge_moves_only_its_users() {
        let list = edges(&["a:1", "b:1", "c:1"]);
        let without_c = edges(&["a:1", "b:1"]);
        for n in 0..200 {
            let user = format!("user-{n}");
            let before = edge_order(&user, &list);
            let after = edge_order(&user, &without_c);
            // The relative order of the remaining edges does not change.
            let kept: Vec<usize> = before.into_iter().filter(|&index| index != 2).collect();
            assert_eq!(kept, after, "{user}");
        }
    }

    #[test]
    fn users_spread_over_edges() {
        let list = edges(&["a:1", "b:1"]);
        let first_on_a = (0..1000)
            .filter(|n| edge_order(&format!("user-{n}"), &list)[0] == 0)
            .count();
        assert!(
            (400..600).contains(&first_on_a),
            "{first_on_a} of 1000 prefer a"
        );
    }

    /// Published test vectors: clients in other languages must order edges alike.
    #[test]
    fn edge_order_test_vectors() {
        let list = edges(&["127.0.0.1:4433", "127.0.0.1:4434", "127.0.0.1:4435"]);
        assert_eq!(edge_order("alice", &list), VECTOR_ALICE);
        assert_eq!(edge_order("carol", &list), VECTOR_CAROL);
    }

    const VECTOR_ALICE: [usize; 3] = [0, 1, 2];
    const VECTOR_CAROL: [usize; 3] = [2, 1, 0];
}
