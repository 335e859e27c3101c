//! Frames for receipts, the inbox and exact sync after a reconnect.
//!
//! Receipts are per (conversation, user): the highest `seq` the user holds on at least
//! one device (`delivered_seq`) and has read (`read_seq`). The conversation's owner stores
//! them, moves them only forward and clamps them to the conversation's last seq. The inbox
//! is per user: each conversation's last seq, read seq, unread count and mark-unread flag,
//! with a cursor that orders its changes so a client can ask what moved since it last
//! looked. Gaps are fetched by seq, oldest first, in pages that mark when they are partial.

use crate::frame::Message;

/// Moves the caller's read receipt forward; the reply is a [`ReceiptList`] with the
/// caller's row only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MarkRead {
    pub request_id: u64,
    pub conversation_id: u64,
    /// Every message up to this seq was read. The owner clamps it to the last seq.
    pub seq: u64,
}

/// Asks for every member's receipt in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReceiptsRequest {
    pub request_id: u64,
    pub conversation_id: u64,
}

/// One member's receipts in one conversation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberReceipt {
    pub user_id: String,
    /// The user has every message up to this seq on at least one device.
    pub delivered_seq: u64,
    /// The user read every message up to this seq; never above `delivered_seq`.
    pub read_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceiptList {
    pub request_id: u64,
    pub conversation_id: u64,
    pub last_seq: u64,
    pub receipts: Vec<MemberReceipt>,
}

/// How many members besides its sender hold and have read one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeqReceiptCount {
    pub seq: u64,
    pub delivered: u32,
    pub read: u32,
}

/// Server push: a member's receipt moved.
///
/// In a group, `counts` carries the aggregate state of the messages the move covered,
/// newest first and capped, and `member_count` is the number of members besides a
/// message's sender. In a direct conversation both are empty, because the peer's receipt
/// gives the state of every message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceiptUpdate {
    pub conversation_id: u64,
    pub receipt: MemberReceipt,
    pub member_count: u32,
    pub counts: Vec<SeqReceiptCount>,
}

/// Asks for the caller's inbox entries that changed after `after_cursor`, oldest change
/// first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InboxSync {
    pub request_id: u64,
    /// 0 for every entry.
    pub after_cursor: u64,
    /// Maximum number of entries; the server caps it, and 0 means its default.
    pub limit: u32,
    /// When non-zero, only this conversation's entry is returned, whatever its cursor.
    pub conversation_id: u64,
}

/// One conversation in a user's inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InboxEntry {
    pub conversation_id: u64,
    pub last_seq: u64,
    pub read_seq: u64,
    pub unread_count: u64,
    pub marked_unread: bool,
    /// The inbox cursor of the entry's latest change.
    pub cursor: u64,
    /// False when the user left or was removed.
    pub member: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InboxPage {
    pub request_id: u64,
    pub entries: Vec<InboxEntry>,
    /// Pass as `after_cursor` to continue; it covers every entry of this page.
    pub cursor: u64,
    /// False when more changes remain after `cursor`.
    pub complete: bool,
}

/// Sets or clears the mark-unread flag of the caller's inbox entry; the reply is an
/// [`InboxPage`] with that entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MarkUnread {
    pub request_id: u64,
    pub conversation_id: u64,
    pub unread: bool,
}

/// Asks for the messages after `after_seq`, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GapRequest {
    pub request_id: u64,
    pub conversation_id: u64,
    pub after_seq: u64,
    /// Maximum number of messages; the server caps it, and 0 means its default.
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GapPage {
    pub request_id: u64,
    pub conversation_id: u64,
    /// Ascending seq order, without gaps.
    pub messages: Vec<Message>,
    /// False when the page contains only part of the gap; continue from `next_after_seq`.
    pub complete: bool,
    pub next_after_seq: u64,
    pub last_seq: u64,
}
