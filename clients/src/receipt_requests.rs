//! The receipt, inbox and sync calls a [`Client`] offers.

use tidings_schema::Frame;
use tidings_schema::receipt::{
    GapPage, GapRequest, InboxEntry, InboxPage, InboxSync, MarkRead, MarkUnread, MemberReceipt,
    ReceiptList, ReceiptsRequest,
};
use tokio::sync::mpsc;

use crate::client::{Client, OnLoss};
use crate::error::ClientError;
use crate::receipts::ReceiptEvent;
use crate::requests::unexpected_reply;
use crate::sync::SyncCursors;

impl Client {
    /// Marks every message up to `seq` in `conversation_id` as read and returns the
    /// stored receipt. The owner clamps `seq` to the last seq and never moves a receipt
    /// back, so the result can be higher or lower than `seq`. Reading also clears the
    /// conversation's mark-unread flag.
    pub async fn mark_read(
        &self,
        conversation_id: u64,
        seq: u64,
    ) -> Result<MemberReceipt, ClientError> {
        let reply = self
            .control_request("mark_read", OnLoss::Retry, |request_id| {
                Frame::MarkRead(MarkRead {
                    request_id,
                    conversation_id,
                    seq,
                })
            })
            .await?;
        let list = receipt_list(reply)?;
        list.receipts
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Protocol("MarkRead reply holds no receipt".to_owned()))
    }

    /// Returns every member's delivered and read receipt in `conversation_id`.
    pub async fn receipts(&self, conversation_id: u64) -> Result<ReceiptList, ClientError> {
        let reply = self
            .control_request("receipts", OnLoss::Retry, |request_id| {
                Frame::ReceiptsRequest(ReceiptsRequest {
                    request_id,
                    conversation_id,
                })
            })
            .await?;
        receipt_list(reply)
    }

    /// Returns one page of inbox entries that changed after `after_cursor` (0 for all),
    /// oldest change first. Continue from the page's `cursor` while `complete` is false.
    pub async fn inbox(&self, after_cursor: u64, limit: u32) -> Result<InboxPage, ClientError> {
        let reply = self
            .control_request("inbox", OnLoss::Retry, |request_id| {
                Frame::InboxSync(InboxSync {
                    request_id,
                    after_cursor,
                    limit,
                    conversation_id: 0,
                })
            })
            .await?;
        inbox_page(reply)
    }

    /// Returns the inbox entry of `conversation_id`: last seq, read seq, unread count and
    /// the mark-unread flag.
    pub async fn unread(&self, conversation_id: u64) -> Result<InboxEntry, ClientError> {
        let reply = self
            .control_request("unread", OnLoss::Retry, |request_id| {
                Frame::InboxSync(InboxSync {
                    request_id,
                    after_cursor: 0,
                    limit: 1,
                    conversation_id,
                })
            })
            .await?;
        single_entry(inbox_page(reply)?)
    }

    /// Sets or clears the mark-unread flag of `conversation_id` and returns its entry.
    /// The flag is separate from receipts, which never move back.
    pub async fn mark_unread(
        &self,
        conversation_id: u64,
        unread: bool,
    ) -> Result<InboxEntry, ClientError> {
        let reply = self
            .control_request("mark_unread", OnLoss::Retry, |request_id| {
                Frame::MarkUnread(MarkUnread {
                    request_id,
                    conversation_id,
                    unread,
                })
            })
            .await?;
        single_entry(inbox_page(reply)?)
    }

    /// Returns the messages after `after_seq`, oldest first. A page that holds only part
    /// of the gap has `complete` false; continue from `next_after_seq`.
    pub async fn gap(
        &self,
        conversation_id: u64,
        after_seq: u64,
        limit: u32,
    ) -> Result<GapPage, ClientError> {
        let reply = self
            .control_request("gap", OnLoss::Retry, |request_id| {
                Frame::GapRequest(GapRequest {
                    request_id,
                    conversation_id,
                    after_seq,
                    limit,
                })
            })
            .await?;
        match reply {
            Frame::GapPage(page) => Ok(page),
            other => Err(unexpected_reply("GapPage", &other)),
        }
    }

    /// Takes the receiver of live receipt changes. Returns `None` after the first call.
    ///
    /// A receipt that arrives before the messages it covers is held and released when
    /// they arrive. Events are dropped while the receiver is full; [`Client::receipts`]
    /// reads the current state.
    pub fn receipt_events(&self) -> Option<mpsc::Receiver<ReceiptEvent>> {
        self.shared.sink.take_receipt_events()
    }

    /// Returns this device's positions, to save and pass to
    /// [`Client::connect_resuming`] in a later run.
    pub fn sync_cursors(&self) -> SyncCursors {
        self.shared.sink.snapshot()
    }
}

fn receipt_list(reply: Frame) -> Result<ReceiptList, ClientError> {
    match reply {
        Frame::ReceiptList(list) => Ok(list),
        other => Err(unexpected_reply("ReceiptList", &other)),
    }
}

fn inbox_page(reply: Frame) -> Result<InboxPage, ClientError> {
    match reply {
        Frame::InboxPage(page) => Ok(page),
        other => Err(unexpected_reply("InboxPage", &other)),
    }
}

fn single_entry(page: InboxPage) -> Result<InboxEntry, ClientError> {
    page.entries
        .into_iter()
        .next()
        .ok_or_else(|| ClientError::Protocol("InboxPage reply holds no entry".to_owned()))
}
