//! Table definitions, key layout and the placement of virtual shards on storage files.
//!
//! NOTE: the virtual shard id leads every key, so all rows of one virtual shard form
//! contiguous ranges and the shard can be copied to another owner by range scans.

use redb::TableDefinition;

/// `(vshard, conversation_id, seq)` → encoded [`crate::record::MessageRecord`].
pub(crate) const MESSAGES: TableDefinition<'static, (u16, u64, u64), &[u8]> =
    TableDefinition::new("messages");

/// `(vshard, conversation_id, sender, client_msg_id)` → encoded
/// [`crate::record::IdempotencyRecord`].
pub(crate) const IDEMPOTENCY: TableDefinition<'static, (u16, u64, &str, &str), &[u8]> =
    TableDefinition::new("idempotency");

/// `(expires_at_ms, vshard, conversation_id, sender, client_msg_id)` → nothing: the
/// idempotency keys in expiry order, so a sweep reads only expired keys.
pub(crate) const IDEMPOTENCY_EXPIRY: TableDefinition<'static, (u64, u16, u64, &str, &str), ()> =
    TableDefinition::new("idempotency_expiry");

/// `(vshard, conversation_id)` → encoded [`crate::record::ConversationRecord`].
pub(crate) const CONVERSATIONS: TableDefinition<'static, (u16, u64), &[u8]> =
    TableDefinition::new("conversations");

/// `(user home vshard, user_id, conversation_id)` → encoded [`crate::record::InboxRecord`].
pub(crate) const USER_CONVERSATIONS: TableDefinition<'static, (u16, &str, u64), &[u8]> =
    TableDefinition::new("user_conversations");

/// `(vshard, conversation_id, user_id)` → encoded [`crate::record::ReceiptRecord`].
pub(crate) const RECEIPTS: TableDefinition<'static, (u16, u64, &str), &[u8]> =
    TableDefinition::new("receipts");

/// `(user home vshard, user_id, inbox cursor)` → conversation id: each inbox row's latest
/// change, in change order, so a sync reads only what moved after a cursor.
pub(crate) const INBOX_LOG: TableDefinition<'static, (u16, &str, u64), u64> =
    TableDefinition::new("inbox_log");

/// `(user home vshard, user_id, conversation_id)` → encoded [`crate::record::InboxMeta`]:
/// the cursor of the row's latest change and its mark-unread flag. It outlives a removed
/// inbox row, so a sync can report the removal.
pub(crate) const INBOX_META: TableDefinition<'static, (u16, &str, u64), &[u8]> =
    TableDefinition::new("inbox_meta");

/// Placement of virtual shards on the storage files of one owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    storage_shards: u16,
}

impl Placement {
    pub(crate) fn new(storage_shards: u16) -> Self {
        assert!(storage_shards > 0, "storage_shards must be at least 1");
        Placement { storage_shards }
    }

    /// Returns the index of the storage file that holds virtual shard `vshard`.
    pub(crate) fn file_of(self, vshard: u16) -> usize {
        usize::from(vshard % self.storage_shards)
    }

    pub(crate) fn conversation(self, conversation_id: u64) -> (u16, usize) {
        let vshard = tidings_schema::ids::conversation_shard(conversation_id);
        (vshard, self.file_of(vshard))
    }

    pub(crate) fn user(self, user_id: &str) -> (u16, usize) {
        let vshard = tidings_schema::ids::user_shard(user_id);
        (vshard, self.file_of(vshard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_uses_vshard_modulo_files() {
        let placement = Placement::new(4);
        assert_eq!(placement.file_of(0), 0);
        assert_eq!(placement.file_of(5), 1);
        assert_eq!(placement.file_of(1023), 3);

        let (vshard, file) = placement.conversation(1);
        assert_eq!(vshard, tidings_schema::ids::conversation_shard(1));
        assert_eq!(file, usize::from(vshard % 4));
    }
}
