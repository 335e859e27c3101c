//! Receipts and the inbox cursor, on the write path.
//!
//! A member's receipts (`delivered_seq`, `read_seq`) live with the conversation and only
//! move forward: a request below the stored value changes nothing, and one beyond the
//! conversation's last seq is clamped to it. A move is pushed to the members who need it
//! as a receipt delivery: both members of a direct conversation, and in a group the reader
//! and the senders of the messages the move covered, with read-by-N-of-M counts.
//!
//! Every change to an inbox row takes the user's next inbox cursor, so a sync after a
//! reconnect reads only the rows that moved after the cursor it last saw.

use redb::ReadableTable;
use tidings_schema::frame::{ConversationKind, Message};
use tidings_schema::mesh::{Delivery, OwnerReply};
use tidings_schema::receipt::{InboxEntry, InboxPage, MemberReceipt, ReceiptList, ReceiptUpdate};
use tidings_schema::receipt::{MarkUnread, SeqReceiptCount};
use tidings_schema::{ErrorCode, Rejection};

use crate::batch::{Batch, OpOutcome, OpResult, StoreResult, not_member, unknown_conversation};
use crate::inbox::InboxOp;
use crate::record::{ConversationRecord, InboxMeta, InboxRecord, MessageRecord, ReceiptRecord};

/// Maximum number of messages whose counts one group receipt push carries, newest first.
pub(crate) const MAX_COUNTED_SEQS: u64 = 100;

impl Batch<'_, '_> {
    /// Moves `user`'s receipts in `conversation_id` forward, clamped to the last seq.
    /// Replies with the stored row; a read that moved also updates the user's inbox row.
    pub(crate) fn receipt(
        &mut self,
        user: &str,
        conversation_id: u64,
        delivered_seq: u64,
        read_seq: u64,
    ) -> OpResult {
        let Some(record) = self.conversation(conversation_id)? else {
            return Ok(Err(unknown_conversation(conversation_id)));
        };
        let record = record.clone();
        if record.member(user).is_none() {
            return Ok(Err(not_member(user, conversation_id)));
        }

        let last_seq = record.last_seq;
        let (vshard, _) = self.ctx.placement.conversation(conversation_id);
        let old = self.receipt_row(vshard, conversation_id, user)?;
        let new_read = old.read_seq.max(read_seq.min(last_seq));
        let new = ReceiptRecord {
            delivered_seq: old
                .delivered_seq
                .max(delivered_seq.min(last_seq))
                .max(new_read),
            read_seq: new_read,
        };

        if new != old {
            self.tables
                .receipts
                .insert((vshard, conversation_id, user), new.encode().as_slice())?;
            self.push_receipt(conversation_id, &record, user, old, new)?;
        }
        // A read request also clears the mark-unread flag, even when the seq stays put.
        let mut remote_inbox = Vec::new();
        if read_seq > 0 {
            remote_inbox = self.route_inbox(vec![InboxOp::Read {
                user: user.to_owned(),
                conversation_id,
                read_seq: new.read_seq,
            }])?;
        }

        let list = ReceiptList {
            request_id: 0,
            conversation_id,
            last_seq,
            receipts: vec![member_receipt(user, new)],
        };
        Ok(Ok(OpOutcome {
            reply: OwnerReply::ReceiptList(list),
            remote_inbox,
        }))
    }

    /// Records that the sender of message `seq` holds and has read it, without a push:
    /// the other members know that a sender has read their own message.
    pub(crate) fn note_sender_read(
        &mut self,
        conversation_id: u64,
        sender: &str,
        seq: u64,
    ) -> StoreResult<()> {
        let (vshard, _) = self.ctx.placement.conversation(conversation_id);
        let old = self.receipt_row(vshard, conversation_id, sender)?;
        if old.read_seq < seq {
            let new = ReceiptRecord {
                delivered_seq: old.delivered_seq.max(seq),
                read_seq: seq,
            };
            self.tables
                .receipts
                .insert((vshard, conversation_id, sender), new.encode().as_slice())?;
            self.inbox_reads.push(InboxOp::Read {
                user: sender.to_owned(),
                conversation_id,
                read_seq: seq,
            });
        }
        Ok(())
    }

    /// Sets or clears the mark-unread flag of an inbox row homed in this writer's file.
    pub(crate) fn mark_unread(&mut self, user: &str, request: &MarkUnread) -> OpResult {
        let (vshard, _) = self.ctx.placement.user(user);
        let key = (vshard, user, request.conversation_id);
        let Some(row) = self.inbox_row(key)? else {
            return Ok(Err(not_in_inbox(user, request.conversation_id)));
        };
        if self.inbox_meta(key)?.marked_unread != request.unread {
            self.touch_inbox(key, Some(request.unread))?;
        }
        let meta = self.inbox_meta(key)?;
        let page = InboxPage {
            request_id: request.request_id,
            entries: vec![inbox_entry(request.conversation_id, Some(row), meta)],
            cursor: meta.cursor,
            complete: true,
        };
        Ok(Ok(OpOutcome::reply(OwnerReply::InboxPage(page))))
    }

    /// Gives an inbox row the user's next inbox cursor and, with `marked_unread`, sets
    /// its flag. Called for every change to the row, removal included.
    pub(crate) fn touch_inbox(
        &mut self,
        key: (u16, &str, u64),
        marked_unread: Option<bool>,
    ) -> StoreResult<()> {
        let (vshard, user, conversation_id) = key;
        let mut meta = self.inbox_meta(key)?;
        // NOTE: the next cursor is computed before the row's old log entry is removed, so
        // a cursor is never handed out twice even when that entry held the highest one.
        let next = self.last_inbox_cursor(vshard, user)? + 1;
        if meta.cursor != 0 {
            self.tables.inbox_log.remove((vshard, user, meta.cursor))?;
        }
        self.tables
            .inbox_log
            .insert((vshard, user, next), conversation_id)?;
        meta.cursor = next;
        if let Some(flag) = marked_unread {
            meta.marked_unread = flag;
        }
        self.tables
            .inbox_meta
            .insert(key, meta.encode().as_slice())?;
        Ok(())
    }

    pub(crate) fn inbox_meta(&self, key: (u16, &str, u64)) -> StoreResult<InboxMeta> {
        match self.tables.inbox_meta.get(key)? {
            Some(bytes) => Ok(InboxMeta::decode(bytes.value())?),
            None => Ok(InboxMeta::default()),
        }
    }

    fn last_inbox_cursor(&self, vshard: u16, user: &str) -> StoreResult<u64> {
        let mut range = self
            .tables
            .inbox_log
            .range((vshard, user, 0)..=(vshard, user, u64::MAX))?;
        match range.next_back() {
            Some(entry) => Ok(entry?.0.value().2),
            None => Ok(0),
        }
    }

    fn receipt_row(
        &self,
        vshard: u16,
        conversation_id: u64,
        user: &str,
    ) -> StoreResult<ReceiptRecord> {
        match self.tables.receipts.get((vshard, conversation_id, user))? {
            Some(bytes) => Ok(ReceiptRecord::decode(bytes.value())?),
            None => Ok(ReceiptRecord::default()),
        }
    }

    /// Queues the push of a receipt move, released after the commit.
    fn push_receipt(
        &mut self,
        conversation_id: u64,
        record: &ConversationRecord,
        user: &str,
        old: ReceiptRecord,
        new: ReceiptRecord,
    ) -> StoreResult<()> {
        let mut update = ReceiptUpdate {
            conversation_id,
            receipt: member_receipt(user, new),
            member_count: 0,
            counts: Vec::new(),
        };
        let recipients = match record.kind {
            ConversationKind::Direct => record.member_ids(),
            ConversationKind::Group => {
                update.member_count =
                    u32::try_from(record.members.len().saturating_sub(1)).unwrap_or(u32::MAX);
                self.group_counts(conversation_id, record, user, old, new, &mut update)?
            }
        };
        self.deliveries.push(Delivery {
            message: Message {
                conversation_id,
                ..Message::default()
            },
            recipients,
            origin_device: String::new(),
            receipt: Some(update),
            presence: Vec::new(),
            presence_snapshot: false,
            position: None,
        });
        Ok(())
    }

    /// Fills the counts of the messages a group receipt move covered and returns the
    /// users to push it to: the reader and the senders of those messages.
    fn group_counts(
        &mut self,
        conversation_id: u64,
        record: &ConversationRecord,
        user: &str,
        old: ReceiptRecord,
        new: ReceiptRecord,
        update: &mut ReceiptUpdate,
    ) -> StoreResult<Vec<String>> {
        let (vshard, _) = self.ctx.placement.conversation(conversation_id);
        let mut delivered = Vec::with_capacity(record.members.len());
        let mut read = Vec::with_capacity(record.members.len());
        for member in &record.members {
            let row = self.receipt_row(vshard, conversation_id, &member.user_id)?;
            delivered.push(row.delivered_seq);
            read.push(row.read_seq);
        }
        delivered.sort_unstable();
        read.sort_unstable();
        let at_least = |sorted: &[u64], seq: u64| {
            let count = sorted.len() - sorted.partition_point(|&value| value < seq);
            u32::try_from(count).unwrap_or(u32::MAX)
        };

        let mut recipients = vec![user.to_owned()];
        let changed = |seq: u64| {
            (old.read_seq < seq && seq <= new.read_seq)
                || (old.delivered_seq < seq && seq <= new.delivered_seq)
        };
        let lowest = new.delivered_seq.saturating_sub(MAX_COUNTED_SEQS) + 1;
        for seq in (lowest.max(old.read_seq + 1)..=new.delivered_seq).rev() {
            if !changed(seq) {
                continue;
            }
            let Some(bytes) = self.tables.messages.get((vshard, conversation_id, seq))? else {
                continue;
            };
            let sender = MessageRecord::decode(bytes.value())?.sender;
            if sender == user {
                continue;
            }
            // The sender's own receipt covers its message, so it is left out of the count.
            let own = self.receipt_row(vshard, conversation_id, &sender)?;
            let sender_is_member = record.member(&sender).is_some();
            let own_delivered = u32::from(sender_is_member && own.delivered_seq >= seq);
            let own_read = u32::from(sender_is_member && own.read_seq >= seq);
            update.counts.push(SeqReceiptCount {
                seq,
                delivered: at_least(&delivered, seq).saturating_sub(own_delivered),
                read: at_least(&read, seq).saturating_sub(own_read),
            });
            if sender_is_member && !recipients.contains(&sender) {
                recipients.push(sender);
            }
        }
        Ok(recipients)
    }
}

pub(crate) fn member_receipt(user: &str, record: ReceiptRecord) -> MemberReceipt {
    MemberReceipt {
        user_id: user.to_owned(),
        delivered_seq: record.delivered_seq,
        read_seq: record.read_seq,
    }
}

/// Builds the inbox entry of a row; `row` is `None` once the user left.
pub(crate) fn inbox_entry(
    conversation_id: u64,
    row: Option<InboxRecord>,
    meta: InboxMeta,
) -> InboxEntry {
    let member = row.is_some();
    let row = row.unwrap_or_default();
    InboxEntry {
        conversation_id,
        last_seq: row.last_seq,
        read_seq: row.last_read_seq,
        unread_count: row.last_seq.saturating_sub(row.last_read_seq),
        marked_unread: meta.marked_unread,
        cursor: meta.cursor,
        member,
    }
}

pub(crate) fn not_in_inbox(user: &str, conversation_id: u64) -> Rejection {
    Rejection::new(
        ErrorCode::NotMember,
        format!("conversation {conversation_id} is not in the inbox of user {user}"),
    )
}
