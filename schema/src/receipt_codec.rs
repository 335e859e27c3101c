//! Cap'n Proto mapping of the receipt, inbox and gap frames in [`crate::receipt`].

use capnp::struct_list;

use crate::codec::{list_len, read_message, read_text, write_message};
use crate::frame::Message;
use crate::generated::frames_capnp as wire;
use crate::receipt::{
    GapPage, GapRequest, InboxEntry, InboxPage, InboxSync, MarkRead, MarkUnread, MemberReceipt,
    ReceiptList, ReceiptUpdate, ReceiptsRequest, SeqReceiptCount,
};

pub(crate) fn write_mark_read(mut out: wire::mark_read::Builder<'_>, request: &MarkRead) {
    out.set_request_id(request.request_id);
    out.set_conversation_id(request.conversation_id);
    out.set_seq(request.seq);
}

pub(crate) fn read_mark_read(request: wire::mark_read::Reader<'_>) -> MarkRead {
    MarkRead {
        request_id: request.get_request_id(),
        conversation_id: request.get_conversation_id(),
        seq: request.get_seq(),
    }
}

pub(crate) fn write_receipts_request(
    mut out: wire::receipts_request::Builder<'_>,
    request: &ReceiptsRequest,
) {
    out.set_request_id(request.request_id);
    out.set_conversation_id(request.conversation_id);
}

pub(crate) fn read_receipts_request(
    request: wire::receipts_request::Reader<'_>,
) -> ReceiptsRequest {
    ReceiptsRequest {
        request_id: request.get_request_id(),
        conversation_id: request.get_conversation_id(),
    }
}

fn write_member_receipt(mut out: wire::member_receipt::Builder<'_>, receipt: &MemberReceipt) {
    out.set_user_id(receipt.user_id.as_str());
    out.set_delivered_seq(receipt.delivered_seq);
    out.set_read_seq(receipt.read_seq);
}

fn read_member_receipt(receipt: wire::member_receipt::Reader<'_>) -> capnp::Result<MemberReceipt> {
    Ok(MemberReceipt {
        user_id: read_text(receipt.get_user_id())?,
        delivered_seq: receipt.get_delivered_seq(),
        read_seq: receipt.get_read_seq(),
    })
}

pub(crate) fn write_receipt_list(mut out: wire::receipt_list::Builder<'_>, list: &ReceiptList) {
    out.set_request_id(list.request_id);
    out.set_conversation_id(list.conversation_id);
    out.set_last_seq(list.last_seq);
    let mut rows = out.init_receipts(list_len(list.receipts.len()));
    for (index, receipt) in list.receipts.iter().enumerate() {
        write_member_receipt(rows.reborrow().get(list_len(index)), receipt);
    }
}

pub(crate) fn read_receipt_list(
    list: wire::receipt_list::Reader<'_>,
) -> capnp::Result<ReceiptList> {
    let receipts = list
        .get_receipts()?
        .iter()
        .map(read_member_receipt)
        .collect::<capnp::Result<_>>()?;
    Ok(ReceiptList {
        request_id: list.get_request_id(),
        conversation_id: list.get_conversation_id(),
        last_seq: list.get_last_seq(),
        receipts,
    })
}

pub(crate) fn write_receipt_update(
    mut out: wire::receipt_update::Builder<'_>,
    update: &ReceiptUpdate,
) {
    out.set_conversation_id(update.conversation_id);
    out.set_member_count(update.member_count);
    write_member_receipt(out.reborrow().init_receipt(), &update.receipt);
    let mut counts = out.init_counts(list_len(update.counts.len()));
    for (index, count) in update.counts.iter().enumerate() {
        let mut row = counts.reborrow().get(list_len(index));
        row.set_seq(count.seq);
        row.set_delivered(count.delivered);
        row.set_read(count.read);
    }
}

pub(crate) fn read_receipt_update(
    update: wire::receipt_update::Reader<'_>,
) -> capnp::Result<ReceiptUpdate> {
    let counts = update
        .get_counts()?
        .iter()
        .map(|row| SeqReceiptCount {
            seq: row.get_seq(),
            delivered: row.get_delivered(),
            read: row.get_read(),
        })
        .collect();
    Ok(ReceiptUpdate {
        conversation_id: update.get_conversation_id(),
        receipt: read_member_receipt(update.get_receipt()?)?,
        member_count: update.get_member_count(),
        counts,
    })
}

pub(crate) fn write_inbox_sync(mut out: wire::inbox_sync::Builder<'_>, request: &InboxSync) {
    out.set_request_id(request.request_id);
    out.set_after_cursor(request.after_cursor);
    out.set_limit(request.limit);
    out.set_conversation_id(request.conversation_id);
}

pub(crate) fn read_inbox_sync(request: wire::inbox_sync::Reader<'_>) -> InboxSync {
    InboxSync {
        request_id: request.get_request_id(),
        after_cursor: request.get_after_cursor(),
        limit: request.get_limit(),
        conversation_id: request.get_conversation_id(),
    }
}

pub(crate) fn write_inbox_page(mut out: wire::inbox_page::Builder<'_>, page: &InboxPage) {
    out.set_request_id(page.request_id);
    out.set_cursor(page.cursor);
    out.set_complete(page.complete);
    let mut entries = out.init_entries(list_len(page.entries.len()));
    for (index, entry) in page.entries.iter().enumerate() {
        let mut row = entries.reborrow().get(list_len(index));
        row.set_conversation_id(entry.conversation_id);
        row.set_last_seq(entry.last_seq);
        row.set_read_seq(entry.read_seq);
        row.set_unread_count(entry.unread_count);
        row.set_marked_unread(entry.marked_unread);
        row.set_cursor(entry.cursor);
        row.set_member(entry.member);
    }
}

pub(crate) fn read_inbox_page(page: wire::inbox_page::Reader<'_>) -> capnp::Result<InboxPage> {
    let entries = page
        .get_entries()?
        .iter()
        .map(|row| InboxEntry {
            conversation_id: row.get_conversation_id(),
            last_seq: row.get_last_seq(),
            read_seq: row.get_read_seq(),
            unread_count: row.get_unread_count(),
            marked_unread: row.get_marked_unread(),
            cursor: row.get_cursor(),
            member: row.get_member(),
        })
        .collect();
    Ok(InboxPage {
        request_id: page.get_request_id(),
        entries,
        cursor: page.get_cursor(),
        complete: page.get_complete(),
    })
}

pub(crate) fn write_mark_unread(mut out: wire::mark_unread::Builder<'_>, request: &MarkUnread) {
    out.set_request_id(request.request_id);
    out.set_conversation_id(request.conversation_id);
    out.set_unread(request.unread);
}

pub(crate) fn read_mark_unread(request: wire::mark_unread::Reader<'_>) -> MarkUnread {
    MarkUnread {
        request_id: request.get_request_id(),
        conversation_id: request.get_conversation_id(),
        unread: request.get_unread(),
    }
}

pub(crate) fn write_gap_request(mut out: wire::gap_request::Builder<'_>, request: &GapRequest) {
    out.set_request_id(request.request_id);
    out.set_conversation_id(request.conversation_id);
    out.set_after_seq(request.after_seq);
    out.set_limit(request.limit);
}

pub(crate) fn read_gap_request(request: wire::gap_request::Reader<'_>) -> GapRequest {
    GapRequest {
        request_id: request.get_request_id(),
        conversation_id: request.get_conversation_id(),
        after_seq: request.get_after_seq(),
        limit: request.get_limit(),
    }
}

pub(crate) fn write_gap_page(mut out: wire::gap_page::Builder<'_>, page: &GapPage) {
    out.set_request_id(page.request_id);
    out.set_conversation_id(page.conversation_id);
    out.set_complete(page.complete);
    out.set_next_after_seq(page.next_after_seq);
    out.set_last_seq(page.last_seq);
    write_messages(
        out.init_messages(list_len(page.messages.len())),
        &page.messages,
    );
}

pub(crate) fn read_gap_page(page: wire::gap_page::Reader<'_>) -> capnp::Result<GapPage> {
    let messages = page
        .get_messages()?
        .iter()
        .map(read_message)
        .collect::<capnp::Result<_>>()?;
    Ok(GapPage {
        request_id: page.get_request_id(),
        conversation_id: page.get_conversation_id(),
        messages,
        complete: page.get_complete(),
        next_after_seq: page.get_next_after_seq(),
        last_seq: page.get_last_seq(),
    })
}

fn write_messages(mut list: struct_list::Builder<'_, wire::message::Owned>, messages: &[Message]) {
    for (index, message) in messages.iter().enumerate() {
        write_message(list.reborrow().get(list_len(index)), message);
    }
}
