//! Read-only requests of receipts and sync: every member's receipts, gap pages by seq,
//! and inbox pages by cursor. They run in read transactions, like `read`.

use redb::{Database, ReadableDatabase, ReadableTable};
use tidings_schema::Rejection;
use tidings_schema::receipt::{GapPage, GapRequest, InboxPage, InboxSync, ReceiptList};

use crate::batch::StoreResult;
use crate::read::{PageBudget, read_as_member};
use crate::receipts::{inbox_entry, member_receipt, not_in_inbox};
use crate::record::{InboxMeta, InboxRecord, MessageRecord, ReceiptRecord};
use crate::tables::{INBOX_LOG, INBOX_META, MESSAGES, Placement, RECEIPTS, USER_CONVERSATIONS};

/// Number of messages in a gap page when the request gives 0.
pub const DEFAULT_GAP_LIMIT: u32 = 100;
/// Maximum number of messages in one gap page.
pub const MAX_GAP_LIMIT: u32 = 500;
/// Number of entries in an inbox page when the request gives 0.
pub const DEFAULT_INBOX_LIMIT: u32 = 200;
/// Maximum number of entries in one inbox page.
pub const MAX_INBOX_LIMIT: u32 = 1_000;

/// Reads every member's receipts; members with no stored row have 0 for both.
pub(crate) fn receipt_list(
    db: &Database,
    placement: Placement,
    user: &str,
    conversation_id: u64,
) -> StoreResult<Result<ReceiptList, Rejection>> {
    let txn = db.begin_read()?;
    let (record, _) = match read_as_member(&txn, placement, user, conversation_id)? {
        Ok(found) => found,
        Err(rejection) => return Ok(Err(rejection)),
    };

    let (vshard, _) = placement.conversation(conversation_id);
    let table = txn.open_table(RECEIPTS)?;
    let mut receipts = Vec::with_capacity(record.members.len());
    for member in &record.members {
        let row = match table.get((vshard, conversation_id, member.user_id.as_str()))? {
            Some(bytes) => ReceiptRecord::decode(bytes.value())?,
            None => ReceiptRecord::default(),
        };
        receipts.push(member_receipt(&member.user_id, row));
    }
    Ok(Ok(ReceiptList {
        request_id: 0,
        conversation_id,
        last_seq: record.last_seq,
        receipts,
    }))
}

/// Reads the messages after `request.after_seq`, oldest first, never below the member's
/// `joined_seq`. A page that stops before the last seq has `complete = false`.
pub(crate) fn gap(
    db: &Database,
    placement: Placement,
    user: &str,
    request: &GapRequest,
) -> StoreResult<Result<GapPage, Rejection>> {
    let conversation_id = request.conversation_id;
    let txn = db.begin_read()?;
    let (record, floor) = match read_as_member(&txn, placement, user, conversation_id)? {
        Ok(found) => found,
        Err(rejection) => return Ok(Err(rejection)),
    };

    let limit = match request.limit {
        0 => DEFAULT_GAP_LIMIT,
        limit => limit.min(MAX_GAP_LIMIT),
    } as usize;
    let first = request.after_seq.saturating_add(1).max(floor);
    let last_seq = record.last_seq;

    let (vshard, _) = placement.conversation(conversation_id);
    let table = txn.open_table(MESSAGES)?;
    let mut messages = Vec::new();
    if first <= last_seq {
        let range = (vshard, conversation_id, first)..=(vshard, conversation_id, last_seq);
        let mut budget = PageBudget::default();
        for entry in table.range(range)?.take(limit) {
            let (key, value) = entry?;
            let record = MessageRecord::decode(value.value())?;
            if !budget.admit(record.body.len()) {
                break;
            }
            messages.push(record.into_message(conversation_id, key.value().2));
        }
    }

    let next_after_seq = messages
        .last()
        .map_or(request.after_seq.max(first - 1), |message| message.seq);
    Ok(Ok(GapPage {
        request_id: request.request_id,
        conversation_id,
        messages,
        complete: next_after_seq >= last_seq,
        next_after_seq,
        last_seq,
    }))
}

/// Reads the user's inbox entries that changed after `request.after_cursor`, oldest
/// change first, or the one entry `request.conversation_id` names.
pub(crate) fn inbox_page(
    db: &Database,
    placement: Placement,
    user: &str,
    request: &InboxSync,
) -> StoreResult<Result<InboxPage, Rejection>> {
    let (vshard, _) = placement.user(user);
    let txn = db.begin_read()?;
    let rows = txn.open_table(USER_CONVERSATIONS)?;
    let metas = txn.open_table(INBOX_META)?;
    let log = txn.open_table(INBOX_LOG)?;
    let entry = |conversation_id: u64| -> StoreResult<_> {
        let key = (vshard, user, conversation_id);
        let row = match rows.get(key)? {
            Some(bytes) => Some(InboxRecord::decode(bytes.value())?),
            None => None,
        };
        let meta = match metas.get(key)? {
            Some(bytes) => Some(InboxMeta::decode(bytes.value())?),
            None => None,
        };
        Ok((row, meta))
    };

    if request.conversation_id != 0 {
        let (row, meta) = entry(request.conversation_id)?;
        if row.is_none() {
            return Ok(Err(not_in_inbox(user, request.conversation_id)));
        }
        let meta = meta.unwrap_or_default();
        return Ok(Ok(InboxPage {
            request_id: request.request_id,
            entries: vec![inbox_entry(request.conversation_id, row, meta)],
            cursor: meta.cursor,
            complete: true,
        }));
    }

    let limit = match request.limit {
        0 => DEFAULT_INBOX_LIMIT,
        limit => limit.min(MAX_INBOX_LIMIT),
    } as usize;
    let after = request.after_cursor;
    let range = (vshard, user, after.saturating_add(1))..=(vshard, user, u64::MAX);
    let mut entries = Vec::new();
    let mut complete = true;
    for logged in log.range(range)? {
        let (key, conversation_id) = logged?;
        if entries.len() == limit {
            complete = false;
            break;
        }
        let conversation_id = conversation_id.value();
        let (row, meta) = entry(conversation_id)?;
        let mut meta = meta.unwrap_or_default();
        meta.cursor = key.value().2;
        entries.push(inbox_entry(conversation_id, row, meta));
    }
    let cursor = entries.last().map_or(after, |entry| entry.cursor);
    Ok(Ok(InboxPage {
        request_id: request.request_id,
        entries,
        cursor,
        complete,
    }))
}
