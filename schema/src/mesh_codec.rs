//! Mapping between the mesh types of [`crate::mesh`] and the structs of `capnp/mesh.capnp`.
//!
//! The relay uses these to fill and read RPC parameters and results. Readers return
//! `capnp::Error`, so an RPC method can pass a malformed message straight back to its
//! caller. Nothing here panics on bad input.

use capnp::struct_list;

use crate::codec::{
    list_len, read_conversation, read_conversations, read_create_group, read_history_page,
    read_history_request, read_leave, read_members_change, read_message, read_send_ack, read_text,
    read_texts, write_conversation, write_conversations, write_create_group, write_history_page,
    write_history_request, write_leave, write_members_change, write_message, write_send_ack,
    write_texts,
};
use crate::error::{ErrorCode, Rejection};
use crate::generated::mesh_capnp as wire;
use crate::mesh::{
    Delivery, InboxChange, InboxUpdate, LastSeenRow, LogPosition, OwnerReply, OwnerRequest,
    PresenceReport, Registration, SendRequest, Stamp,
};
use crate::presence_codec;
use crate::receipt_codec as receipt;

/// The mesh protocol version this build speaks, passed to `Owner.open`.
pub const MESH_PROTOCOL_VERSION: u16 = wire::MESH_PROTOCOL_VERSION;

/// Writes a request into a `mesh.capnp` `OwnerRequest`.
pub fn write_owner_request(out: wire::owner_request::Builder<'_>, request: &OwnerRequest) {
    match request {
        OwnerRequest::Send(send) => write_send_request(out.init_send(), send),
        OwnerRequest::History { user, request } => {
            let mut group = out.init_history();
            group.set_user(user.as_str());
            write_history_request(group.init_request(), request);
        }
        OwnerRequest::CreateGroup {
            user,
            request,
            conversation_id,
            stamp,
        } => {
            let mut group = out.init_create_group();
            group.set_user(user.as_str());
            group.set_conversation_id(*conversation_id);
            write_stamp(group.reborrow().init_stamp(), stamp);
            write_create_group(group.init_request(), request);
        }
        OwnerRequest::AddMembers {
            user,
            request,
            stamp,
        } => {
            let mut group = out.init_add_members();
            group.set_user(user.as_str());
            write_stamp(group.reborrow().init_stamp(), stamp);
            write_members_change(group.init_request(), request);
        }
        OwnerRequest::RemoveMembers {
            user,
            request,
            stamp,
        } => {
            let mut group = out.init_remove_members();
            group.set_user(user.as_str());
            write_stamp(group.reborrow().init_stamp(), stamp);
            write_members_change(group.init_request(), request);
        }
        OwnerRequest::Leave {
            user,
            request,
            stamp,
        } => {
            let mut group = out.init_leave();
            group.set_user(user.as_str());
            write_stamp(group.reborrow().init_stamp(), stamp);
            write_leave(group.init_request(), request);
        }
        OwnerRequest::ListConversations { user } => {
            out.init_list_conversations().set_user(user.as_str());
        }
        OwnerRequest::LastSeen { user } => out.init_last_seen().set_user(user.as_str()),
        OwnerRequest::RecordLastSeen { user, at_ms } => {
            let mut group = out.init_record_last_seen();
            group.set_user(user.as_str());
            group.set_at_ms(*at_ms);
        }
        OwnerRequest::PresenceSettings {
            user,
            hide_last_seen,
        } => {
            let mut group = out.init_presence_settings();
            group.set_user(user.as_str());
            group.set_hide_last_seen(*hide_last_seen);
        }
        OwnerRequest::Receipt {
            user,
            conversation_id,
            delivered_seq,
            read_seq,
        } => {
            let mut group = out.init_receipt();
            group.set_user(user.as_str());
            group.set_conversation_id(*conversation_id);
            group.set_delivered_seq(*delivered_seq);
            group.set_read_seq(*read_seq);
        }
        OwnerRequest::Receipts {
            user,
            conversation_id,
        } => {
            let mut group = out.init_receipts();
            group.set_user(user.as_str());
            group.set_conversation_id(*conversation_id);
        }
        OwnerRequest::InboxSync { user, request } => {
            let mut group = out.init_inbox_sync();
            group.set_user(user.as_str());
            receipt::write_inbox_sync(group.init_request(), request);
        }
        OwnerRequest::MarkUnread { user, request } => {
            let mut group = out.init_mark_unread();
            group.set_user(user.as_str());
            receipt::write_mark_unread(group.init_request(), request);
        }
        OwnerRequest::Gap { user, request } => {
            let mut group = out.init_gap();
            group.set_user(user.as_str());
            receipt::write_gap_request(group.init_request(), request);
        }
        OwnerRequest::PresenceReport(report) => {
            let mut group = out.init_presence_report();
            group.set_edge_id(report.edge_id.as_str());
            group.set_lease_ms(report.lease_ms);
            let entries = group.init_entries(list_len(report.entries.len()));
            presence_codec::write_entries(entries, &report.entries);
        }
    }
}

/// Reads a `mesh.capnp` `OwnerRequest`. An unknown request kind fails with an error
/// that names its union tag.
pub fn read_owner_request(request: wire::owner_request::Reader<'_>) -> capnp::Result<OwnerRequest> {
    use wire::owner_request::Which;

    let which = request.which().map_err(|capnp::NotInSchema(tag)| {
        capnp::Error::failed(format!("unknown owner request kind {tag}"))
    })?;
    let request = match which {
        Which::Send(send) => OwnerRequest::Send(read_send_request(send?)?),
        Which::History(group) => OwnerRequest::History {
            user: read_text(group.get_user())?,
            request: read_history_request(group.get_request()?),
        },
        Which::CreateGroup(group) => OwnerRequest::CreateGroup {
            user: read_text(group.get_user())?,
            request: read_create_group(group.get_request()?)?,
            conversation_id: group.get_conversation_id(),
            stamp: read_stamp(group.get_stamp()?),
        },
        Which::AddMembers(group) => OwnerRequest::AddMembers {
            user: read_text(group.get_user())?,
            request: read_members_change(group.get_request()?)?,
            stamp: read_stamp(group.get_stamp()?),
        },
        Which::RemoveMembers(group) => OwnerRequest::RemoveMembers {
            user: read_text(group.get_user())?,
            request: read_members_change(group.get_request()?)?,
            stamp: read_stamp(group.get_stamp()?),
        },
        Which::Leave(group) => OwnerRequest::Leave {
            user: read_text(group.get_user())?,
            request: read_leave(group.get_request()?),
            stamp: read_stamp(group.get_stamp()?),
        },
        Which::ListConversations(group) => OwnerRequest::ListConversations {
            user: read_text(group.get_user())?,
        },
        Which::LastSeen(group) => OwnerRequest::LastSeen {
            user: read_text(group.get_user())?,
        },
        Which::RecordLastSeen(group) => OwnerRequest::RecordLastSeen {
            user: read_text(group.get_user())?,
            at_ms: group.get_at_ms(),
        },
        Which::PresenceSettings(group) => OwnerRequest::PresenceSettings {
            user: read_text(group.get_user())?,
            hide_last_seen: group.get_hide_last_seen(),
        },
        Which::Receipt(group) => OwnerRequest::Receipt {
            user: read_text(group.get_user())?,
            conversation_id: group.get_conversation_id(),
            delivered_seq: group.get_delivered_seq(),
            read_seq: group.get_read_seq(),
        },
        Which::Receipts(group) => OwnerRequest::Receipts {
            user: read_text(group.get_user())?,
            conversation_id: group.get_conversation_id(),
        },
        Which::InboxSync(group) => OwnerRequest::InboxSync {
            user: read_text(group.get_user())?,
            request: receipt::read_inbox_sync(group.get_request()?),
        },
        Which::MarkUnread(group) => OwnerRequest::MarkUnread {
            user: read_text(group.get_user())?,
            request: receipt::read_mark_unread(group.get_request()?),
        },
        Which::Gap(group) => OwnerRequest::Gap {
            user: read_text(group.get_user())?,
            request: receipt::read_gap_request(group.get_request()?),
        },
        Which::PresenceReport(group) => OwnerRequest::PresenceReport(PresenceReport {
            edge_id: read_text(group.get_edge_id())?,
            entries: presence_codec::read_entries(group.get_entries()?)?,
            lease_ms: group.get_lease_ms(),
        }),
    };
    Ok(request)
}

fn write_send_request(mut out: wire::send_request::Builder<'_>, send: &SendRequest) {
    out.set_sender(send.sender.as_str());
    out.set_device_id(send.device_id.as_str());
    out.set_conversation_id(send.conversation_id);
    out.set_client_msg_id(send.client_msg_id.as_str());
    out.set_body(send.body.as_str());
    out.set_message_id(send.message_id);
    out.set_hlc(send.hlc);
    out.set_server_time_ms(send.server_time_ms);
    let mut peer = out.init_direct_peer();
    match &send.direct_peer {
        Some(user) => peer.set_user(user.as_str()),
        None => peer.set_none(()),
    }
}

fn read_send_request(send: wire::send_request::Reader<'_>) -> capnp::Result<SendRequest> {
    use wire::send_request::direct_peer::Which;

    let direct_peer = match send.get_direct_peer().which()? {
        Which::None(()) => None,
        Which::User(user) => Some(read_text(user)?),
    };
    Ok(SendRequest {
        sender: read_text(send.get_sender())?,
        device_id: read_text(send.get_device_id())?,
        conversation_id: send.get_conversation_id(),
        client_msg_id: read_text(send.get_client_msg_id())?,
        body: read_text(send.get_body())?,
        direct_peer,
        message_id: send.get_message_id(),
        hlc: send.get_hlc(),
        server_time_ms: send.get_server_time_ms(),
    })
}

fn write_stamp(mut out: wire::stamp::Builder<'_>, stamp: &Stamp) {
    out.set_message_id(stamp.message_id);
    out.set_hlc(stamp.hlc);
    out.set_server_time_ms(stamp.server_time_ms);
}

fn read_stamp(stamp: wire::stamp::Reader<'_>) -> Stamp {
    Stamp {
        message_id: stamp.get_message_id(),
        hlc: stamp.get_hlc(),
        server_time_ms: stamp.get_server_time_ms(),
    }
}

/// Writes a reply into a `mesh.capnp` `OwnerReply`.
pub fn write_owner_reply(mut out: wire::owner_reply::Builder<'_>, reply: &OwnerReply) {
    match reply {
        OwnerReply::SendAck(ack) => write_send_ack(out.init_send_ack(), ack),
        OwnerReply::HistoryPage(page) => write_history_page(out.init_history_page(), page),
        OwnerReply::Conversation(info) => write_conversation(out.init_conversation(), info),
        OwnerReply::Conversations(infos) => {
            write_conversations(out.init_conversations(list_len(infos.len())), infos)
        }
        OwnerReply::LastSeen(row) => {
            let mut out = out.init_last_seen();
            out.set_user(row.user.as_str());
            out.set_last_seen_ms(row.last_seen_ms);
            out.set_hide_last_seen(row.hide_last_seen);
        }
        OwnerReply::ReceiptList(list) => receipt::write_receipt_list(out.init_receipt_list(), list),
        OwnerReply::InboxPage(page) => receipt::write_inbox_page(out.init_inbox_page(), page),
        OwnerReply::GapPage(page) => receipt::write_gap_page(out.init_gap_page(), page),
        OwnerReply::Accepted => out.set_accepted(()),
    }
}

/// Reads a `mesh.capnp` `OwnerReply`.
pub fn read_owner_reply(reply: wire::owner_reply::Reader<'_>) -> capnp::Result<OwnerReply> {
    use wire::owner_reply::Which;

    let which = reply.which().map_err(|capnp::NotInSchema(tag)| {
        capnp::Error::failed(format!("unknown owner reply kind {tag}"))
    })?;
    let reply = match which {
        Which::SendAck(ack) => OwnerReply::SendAck(read_send_ack(ack?)?),
        Which::HistoryPage(page) => OwnerReply::HistoryPage(read_history_page(page?)?),
        Which::Conversation(info) => OwnerReply::Conversation(read_conversation(info?)?),
        Which::Conversations(infos) => OwnerReply::Conversations(read_conversations(infos?)?),
        Which::LastSeen(row) => {
            let row = row?;
            OwnerReply::LastSeen(LastSeenRow {
                user: read_text(row.get_user())?,
                last_seen_ms: row.get_last_seen_ms(),
                hide_last_seen: row.get_hide_last_seen(),
            })
        }
        Which::ReceiptList(list) => OwnerReply::ReceiptList(receipt::read_receipt_list(list?)?),
        Which::InboxPage(page) => OwnerReply::InboxPage(receipt::read_inbox_page(page?)?),
        Which::GapPage(page) => OwnerReply::GapPage(receipt::read_gap_page(page?)?),
        Which::Accepted(()) => OwnerReply::Accepted,
    };
    Ok(reply)
}

/// Writes a rejection as (code, message, retryAfterMs), the code as its error table number.
pub fn write_rejection(mut out: wire::rejection::Builder<'_>, rejection: &Rejection) {
    out.set_code(rejection.code.as_u16());
    out.set_message(rejection.message.as_str());
    out.set_retry_after_ms(rejection.retry_after_ms);
}

/// Reads a rejection. A code number this build does not know becomes `Internal`.
pub fn read_rejection(rejection: wire::rejection::Reader<'_>) -> capnp::Result<Rejection> {
    Ok(Rejection {
        code: ErrorCode::from_u16(rejection.get_code()),
        message: read_text(rejection.get_message())?,
        retry_after_ms: rejection.get_retry_after_ms(),
    })
}

/// Writes the outcome of an owner call: the reply or the rejection.
pub fn write_call_result(
    out: wire::call_result::Builder<'_>,
    result: &Result<OwnerReply, Rejection>,
) {
    match result {
        Ok(reply) => write_owner_reply(out.init_reply(), reply),
        Err(rejection) => write_rejection(out.init_rejection(), rejection),
    }
}

/// Reads the outcome of an owner call. The outer error means the message itself is
/// malformed, and the inner one is the owner's rejection.
pub fn read_call_result(
    result: wire::call_result::Reader<'_>,
) -> capnp::Result<Result<OwnerReply, Rejection>> {
    use wire::call_result::Which;

    let which = result.which().map_err(|capnp::NotInSchema(tag)| {
        capnp::Error::failed(format!("unknown call result kind {tag}"))
    })?;
    match which {
        Which::Reply(reply) => Ok(Ok(read_owner_reply(reply?)?)),
        Which::Rejection(rejection) => Ok(Err(read_rejection(rejection?)?)),
    }
}

/// Writes one delivery into a `mesh.capnp` `Delivery`.
pub fn write_delivery(mut out: wire::delivery::Builder<'_>, delivery: &Delivery) {
    out.set_origin_device(delivery.origin_device.as_str());
    write_message(out.reborrow().init_message(), &delivery.message);
    if let Some(update) = &delivery.receipt {
        receipt::write_receipt_update(out.reborrow().init_receipt(), update);
    }
    out.set_presence_snapshot(delivery.presence_snapshot);
    if !delivery.presence.is_empty() {
        let entries = out
            .reborrow()
            .init_presence(list_len(delivery.presence.len()));
        presence_codec::write_entries(entries, &delivery.presence);
    }
    if let Some(position) = &delivery.position {
        write_log_position(out.reborrow().init_position(), position);
    }
    let recipients = out.init_recipients(list_len(delivery.recipients.len()));
    write_texts(recipients, &delivery.recipients);
}

/// Writes one delivery log position.
pub fn write_log_position(mut out: wire::log_position::Builder<'_>, position: &LogPosition) {
    out.set_file(position.file);
    out.set_epoch(position.epoch);
    out.set_offset(position.offset);
}

/// Reads one delivery log position.
pub fn read_log_position(position: wire::log_position::Reader<'_>) -> LogPosition {
    LogPosition {
        file: position.get_file(),
        epoch: position.get_epoch(),
        offset: position.get_offset(),
    }
}

/// Writes delivery log positions into a list that has room for exactly `positions.len()`.
pub fn write_log_positions(
    mut out: struct_list::Builder<'_, wire::log_position::Owned>,
    positions: &[LogPosition],
) {
    for (index, position) in positions.iter().enumerate() {
        write_log_position(out.reborrow().get(index as u32), position);
    }
}

/// Reads a list of delivery log positions.
pub fn read_log_positions(
    positions: struct_list::Reader<'_, wire::log_position::Owned>,
) -> Vec<LogPosition> {
    positions.iter().map(read_log_position).collect()
}

/// Reads one `mesh.capnp` `Delivery`.
pub fn read_delivery(delivery: wire::delivery::Reader<'_>) -> capnp::Result<Delivery> {
    Ok(Delivery {
        message: read_message(delivery.get_message()?)?,
        recipients: read_texts(delivery.get_recipients())?,
        origin_device: read_text(delivery.get_origin_device())?,
        receipt: match delivery.has_receipt() {
            true => Some(receipt::read_receipt_update(delivery.get_receipt()?)?),
            false => None,
        },
        presence: presence_codec::read_entries(delivery.get_presence()?)?,
        presence_snapshot: delivery.get_presence_snapshot(),
        position: match delivery.has_position() {
            true => Some(read_log_position(delivery.get_position()?)),
            false => None,
        },
    })
}

/// Writes a batch of deliveries into a list that has room for exactly `deliveries.len()`.
pub fn write_deliveries<'a, I>(
    mut out: struct_list::Builder<'_, wire::delivery::Owned>,
    deliveries: I,
) where
    I: IntoIterator<Item = &'a Delivery>,
{
    for (index, delivery) in deliveries.into_iter().enumerate() {
        write_delivery(out.reborrow().get(index as u32), delivery);
    }
}

/// Reads a batch of deliveries.
pub fn read_deliveries(
    deliveries: struct_list::Reader<'_, wire::delivery::Owned>,
) -> capnp::Result<Vec<Delivery>> {
    deliveries.iter().map(read_delivery).collect()
}

/// Writes inbox updates into a list that has room for exactly `updates.len()`.
pub fn write_inbox_updates(
    mut out: struct_list::Builder<'_, wire::inbox_update::Owned>,
    updates: &[InboxUpdate],
) {
    for (index, update) in updates.iter().enumerate() {
        let mut row = out.reborrow().get(index as u32);
        row.set_user(update.user.as_str());
        row.set_conversation_id(update.conversation_id);
        row.set_last_seq(update.last_seq);
        row.set_change(match update.change {
            InboxChange::Join => wire::InboxChange::Join,
            InboxChange::Advance => wire::InboxChange::Advance,
            InboxChange::Remove => wire::InboxChange::Remove,
            InboxChange::Read => wire::InboxChange::Read,
        });
    }
}

/// Reads inbox updates. An unknown change kind fails the whole list.
pub fn read_inbox_updates(
    updates: struct_list::Reader<'_, wire::inbox_update::Owned>,
) -> capnp::Result<Vec<InboxUpdate>> {
    updates
        .iter()
        .map(|row| {
            let change = match row.get_change() {
                Ok(wire::InboxChange::Join) => InboxChange::Join,
                Ok(wire::InboxChange::Advance) => InboxChange::Advance,
                Ok(wire::InboxChange::Remove) => InboxChange::Remove,
                Ok(wire::InboxChange::Read) => InboxChange::Read,
                Err(capnp::NotInSchema(tag)) => {
                    return Err(capnp::Error::failed(format!("unknown inbox change {tag}")));
                }
            };
            Ok(InboxUpdate {
                user: read_text(row.get_user())?,
                conversation_id: row.get_conversation_id(),
                last_seq: row.get_last_seq(),
                change,
            })
        })
        .collect()
}

/// Writes a registration into the parameters of `OwnerV1.registerUsers`.
pub fn write_registration(
    mut out: wire::owner_v1::register_users_params::Builder<'_>,
    registration: &Registration,
) {
    out.set_edge_id(registration.edge_id.as_str());
    out.set_replace(registration.replace);
    out.set_lease_ms(registration.lease_ms);
    let added = out
        .reborrow()
        .init_added(list_len(registration.added.len()));
    write_texts(added, &registration.added);
    let removed = out.init_removed(list_len(registration.removed.len()));
    write_texts(removed, &registration.removed);
}

/// Reads the parameters of `OwnerV1.registerUsers`.
pub fn read_registration(
    params: wire::owner_v1::register_users_params::Reader<'_>,
) -> capnp::Result<Registration> {
    Ok(Registration {
        edge_id: read_text(params.get_edge_id())?,
        replace: params.get_replace(),
        added: read_texts(params.get_added())?,
        removed: read_texts(params.get_removed())?,
        lease_ms: params.get_lease_ms(),
    })
}

#[cfg(test)]
#[path = "mesh_codec_tests.rs"]
mod tests;
