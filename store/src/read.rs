//! Read-only requests: history pages and the conversation list. They run in read
//! transactions, which see every committed batch and never wait for a writer.

use std::collections::BTreeMap;

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable};
use tidings_schema::Rejection;
use tidings_schema::frame::{ConversationInfo, HistoryPage, HistoryRequest};

use crate::batch::{StoreResult, not_member, read_conversation, unknown_conversation};
use crate::cluster::{ShardHolder, ShardMap};
use crate::record::{ConversationRecord, MessageRecord};
use crate::tables::{CONVERSATIONS, MESSAGES, Placement, USER_CONVERSATIONS};

/// Number of messages in a history page when the request gives 0.
pub const DEFAULT_HISTORY_LIMIT: u32 = 50;

/// Maximum number of messages in one history page.
pub const MAX_HISTORY_LIMIT: u32 = 200;

/// Total body bytes one history or gap page carries at most (a page always carries at
/// least one message). It keeps a page of large messages well inside the default
/// 256 KiB frame limit, which a page of 200 messages of up to 64 KiB each would exceed.
pub const PAGE_BODY_BUDGET: usize = 128 * 1024;

/// Counts body bytes against [`PAGE_BODY_BUDGET`].
#[derive(Debug, Default)]
pub(crate) struct PageBudget {
    used: usize,
    admitted: usize,
}

impl PageBudget {
    /// Returns whether a message of `body_bytes` still fits on the page, and counts it.
    pub(crate) fn admit(&mut self, body_bytes: usize) -> bool {
        if self.admitted > 0 && self.used + body_bytes > PAGE_BODY_BUDGET {
            return false;
        }
        self.used += body_bytes;
        self.admitted += 1;
        true
    }
}

/// Reads a conversation row for `user` and returns it with the first seq the user may
/// read (their `joined_seq`, at least 1). Rejects an unknown conversation or a non-member.
pub(crate) fn read_as_member(
    txn: &ReadTransaction,
    placement: Placement,
    user: &str,
    conversation_id: u64,
) -> StoreResult<Result<(ConversationRecord, u64), Rejection>> {
    let conversations = txn.open_table(CONVERSATIONS)?;
    let Some(record) = read_conversation(&conversations, placement, conversation_id)? else {
        return Ok(Err(unknown_conversation(conversation_id)));
    };
    let Some(floor) = record.member(user).map(|member| member.joined_seq.max(1)) else {
        return Ok(Err(not_member(user, conversation_id)));
    };
    Ok(Ok((record, floor)))
}

/// Reads one page of history, newest first, never below the member's `joined_seq`.
pub(crate) fn history(
    db: &Database,
    placement: Placement,
    user: &str,
    request: &HistoryRequest,
) -> StoreResult<Result<HistoryPage, Rejection>> {
    let conversation_id = request.conversation_id;
    let txn = db.begin_read()?;
    let (_, floor) = match read_as_member(&txn, placement, user, conversation_id)? {
        Ok(found) => found,
        Err(rejection) => return Ok(Err(rejection)),
    };

    let limit = match request.limit {
        0 => DEFAULT_HISTORY_LIMIT,
        limit => limit.min(MAX_HISTORY_LIMIT),
    } as usize;
    let below = match request.before_seq {
        0 => u64::MAX,
        before => before,
    };

    let (vshard, _) = placement.conversation(conversation_id);
    let messages_table = txn.open_table(MESSAGES)?;
    let mut messages = Vec::with_capacity(limit);
    let mut budget = PageBudget::default();
    let mut full = false;
    if below > floor {
        let range = (vshard, conversation_id, floor)..(vshard, conversation_id, below);
        for entry in messages_table.range(range)?.rev() {
            if messages.len() == limit {
                full = true;
                break;
            }
            let (key, value) = entry?;
            let (_, _, seq) = key.value();
            let record = MessageRecord::decode(value.value())?;
            if !budget.admit(record.body.len()) {
                full = true;
                break;
            }
            messages.push(record.into_message(conversation_id, seq));
        }
    }

    // Seqs are gapless, so a page that ends above the floor has older messages.
    let next_before_seq = match messages.last() {
        Some(oldest) if full && oldest.seq > floor => oldest.seq,
        _ => 0,
    };
    Ok(Ok(HistoryPage {
        request_id: request.request_id,
        conversation_id,
        messages,
        next_before_seq,
    }))
}

/// Conversation ids held by other owners, by owner index.
pub(crate) type RemoteConversations = Vec<(usize, Vec<u64>)>;

/// Lists the user's conversations from their inbox, with each conversation's current row
/// where this owner holds it. Returns the ids of the others grouped by their owner.
pub(crate) fn list_conversations(
    databases: &[std::sync::Arc<Database>],
    placement: Placement,
    shards: &ShardMap,
    user: &str,
) -> StoreResult<(Vec<ConversationInfo>, RemoteConversations)> {
    let (home_vshard, home_file) = placement.user(user);
    let txn = databases[home_file].begin_read()?;
    let inbox = txn.open_table(USER_CONVERSATIONS)?;
    let mut local = Vec::new();
    let mut remote: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for entry in inbox.range((home_vshard, user, 0)..=(home_vshard, user, u64::MAX))? {
        let (key, _) = entry?;
        let conversation_id = key.value().2;
        let (vshard, _) = placement.conversation(conversation_id);
        match shards.holder(vshard) {
            ShardHolder::Local => local.push(conversation_id),
            ShardHolder::Peer(owner) => remote.entry(owner).or_default().push(conversation_id),
        }
    }
    let conversations = conversations_by_id(databases, placement, user, &local)?;
    Ok((conversations, remote.into_iter().collect()))
}

/// Reads the rows of the listed conversations that `user` is a member of, in list order.
pub(crate) fn conversations_by_id(
    databases: &[std::sync::Arc<Database>],
    placement: Placement,
    user: &str,
    conversation_ids: &[u64],
) -> StoreResult<Vec<ConversationInfo>> {
    let mut conversations = Vec::with_capacity(conversation_ids.len());
    for &conversation_id in conversation_ids {
        let (_, file) = placement.conversation(conversation_id);
        let txn = databases[file].begin_read()?;
        let table = txn.open_table(CONVERSATIONS)?;
        let Some(record) = read_conversation(&table, placement, conversation_id)? else {
            tracing::warn!(
                user,
                conversation_id,
                "inbox row names a missing conversation"
            );
            continue;
        };
        // NOTE: an inbox row can outlive a membership briefly when the commit that removed
        // the user succeeded but the inbox write in another file has not yet.
        if record.member(user).is_some() {
            conversations.push(record.info(conversation_id));
        }
    }
    Ok(conversations)
}
