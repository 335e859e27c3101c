//! Encoding and decoding of client frames as Cap'n Proto messages.
//!
//! On a QUIC or WebTransport stream each frame is a 4-byte big-endian length followed by
//! that many bytes of an unpacked Cap'n Proto message (`capnp/frames.capnp`, struct
//! `Frame`). On a WebSocket each binary message is one frame without the length prefix.
//! The length is checked against the limit before any of the frame is buffered.
//!
//! The `read_*` and `write_*` helpers map one schema struct each. [`crate::mesh_codec`]
//! reuses them for the structs that the mesh shares with the client protocol.

use std::io;

use capnp::message::{self, ReaderOptions};
use capnp::{serialize, text_list};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::ErrorCode;
use crate::frame::{
    Close, ConversationInfo, ConversationKind, ConversationList, ConversationReply, CreateGroup,
    Deliver, DeliveryAck, ErrorFrame, Frame, Hello, HistoryPage, HistoryRequest, Leave, Limits,
    ListConversations, Member, MembersChange, Message, MessageKind, PROTOCOL_VERSION, Role, Send,
    SendAck, Welcome,
};
use crate::generated::frames_capnp as wire;
use crate::presence_codec as presence;
use crate::receipt_codec as receipt;

/// Size of the length prefix in front of each frame on a stream.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Maximum depth of nested structs and lists in a decoded message. The deepest legitimate
/// path (`Frame` → `ConversationList` → `ConversationInfo` → `Member`) is 4 levels.
const NESTING_LIMIT: i32 = 16;

/// Failure to decode bytes into a [`Frame`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("unknown frame type {0}")]
    UnknownFrame(u16),
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
}

impl DecodeError {
    /// Returns the error code sent back to the peer for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::Malformed(_) => ErrorCode::MalformedFrame,
            DecodeError::UnknownFrame(_) => ErrorCode::UnknownFrame,
            DecodeError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            DecodeError::TooLarge { .. } => ErrorCode::FrameTooLarge,
        }
    }
}

impl From<capnp::Error> for DecodeError {
    fn from(error: capnp::Error) -> Self {
        DecodeError::Malformed(error.to_string())
    }
}

/// Failure to read a frame from a stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error("stream read failed: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame")]
    Truncated,
}

/// Encodes a frame as one Cap'n Proto message, without a length prefix.
pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut message = message::Builder::new_default();
    write_frame(message.init_root(), frame);
    serialize::write_message_to_words(&message)
}

/// Appends the length prefix and the encoded frame to `out`, so several frames can be
/// written to a stream with one write.
pub fn encode_framed(frame: &Frame, out: &mut Vec<u8>) {
    let body = encode(frame);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
}

/// Decodes one frame from a whole Cap'n Proto message.
///
/// Bytes after the end of the message are rejected as malformed, so a frame has exactly
/// one encoding length.
pub fn decode(bytes: &[u8]) -> Result<Frame, DecodeError> {
    let mut rest = bytes;
    let message = serialize::read_message(&mut rest, reader_options(bytes.len()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed(format!(
            "{} bytes follow the end of the message",
            rest.len()
        )));
    }

    let root: wire::frame::Reader<'_> = message.get_root()?;
    let version = root.get_version();
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    read_frame_body(root)
}

/// Reads one length-prefixed frame. Returns `Ok(None)` when the stream ends cleanly
/// between frames.
///
/// A length above `max_frame_bytes` fails with [`DecodeError::TooLarge`] before the body
/// is read. Cancel safety: not cancel safe, because a cancelled read may leave part of a
/// frame consumed.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame_bytes: u32,
) -> Result<Option<Frame>, ReadError> {
    let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
    let mut filled = 0;
    while filled < prefix.len() {
        let read = reader.read(&mut prefix[filled..]).await?;
        if read == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(ReadError::Truncated)
            };
        }
        filled += read;
    }

    let len = u32::from_be_bytes(prefix);
    if len > max_frame_bytes {
        return Err(DecodeError::TooLarge {
            len: len as usize,
            max: max_frame_bytes as usize,
        }
        .into());
    }

    let mut body = vec![0u8; len as usize];
    match reader.read_exact(&mut body).await {
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(ReadError::Truncated);
        }
        Err(error) => return Err(error.into()),
    }
    Ok(Some(decode(&body)?))
}

/// Reader options for a message of `len` bytes.
///
/// NOTE: the traversal limit grows with the message, so a small message whose pointers
/// alias one another cannot make the reader walk more than a few times its own size.
pub(crate) fn reader_options(len: usize) -> ReaderOptions {
    let words = len / 8 + 1;
    *ReaderOptions::new()
        .traversal_limit_in_words(Some(words.saturating_mul(4).saturating_add(1024)))
        .nesting_limit(NESTING_LIMIT)
}

fn write_frame(mut root: wire::frame::Builder<'_>, frame: &Frame) {
    root.set_version(PROTOCOL_VERSION);
    match frame {
        Frame::Hello(hello) => write_hello(root.init_hello(), hello),
        Frame::Welcome(welcome) => write_welcome(root.init_welcome(), welcome),
        Frame::Send(send) => write_send(root.init_send(), send),
        Frame::SendAck(ack) => write_send_ack(root.init_send_ack(), ack),
        Frame::Deliver(deliver) => {
            write_message(root.init_deliver().init_message(), &deliver.message)
        }
        Frame::DeliveryAck(ack) => {
            let mut out = root.init_delivery_ack();
            out.set_conversation_id(ack.conversation_id);
            out.set_seq(ack.seq);
        }
        Frame::HistoryRequest(request) => {
            write_history_request(root.init_history_request(), request)
        }
        Frame::HistoryPage(page) => write_history_page(root.init_history_page(), page),
        Frame::CreateGroup(request) => write_create_group(root.init_create_group(), request),
        Frame::AddMembers(change) => write_members_change(root.init_add_members(), change),
        Frame::RemoveMembers(change) => write_members_change(root.init_remove_members(), change),
        Frame::Leave(leave) => write_leave(root.init_leave(), leave),
        Frame::ConversationReply(reply) => {
            let mut out = root.init_conversation_reply();
            out.set_request_id(reply.request_id);
            write_conversation(out.init_conversation(), &reply.conversation);
        }
        Frame::ListConversations(request) => {
            root.init_list_conversations()
                .set_request_id(request.request_id);
        }
        Frame::ConversationList(list) => {
            let mut out = root.init_conversation_list();
            out.set_request_id(list.request_id);
            let len = list_len(list.conversations.len());
            write_conversations(out.init_conversations(len), &list.conversations);
        }
        Frame::Error(error) => write_error(root.init_error(), error),
        Frame::Close(close) => write_close(root.init_close(), close),
        Frame::Heartbeat(heartbeat) => presence::write_heartbeat(root.init_heartbeat(), heartbeat),
        Frame::PresenceSubscribe(request) => {
            presence::write_subscribe(root.init_presence_subscribe(), request)
        }
        Frame::PresenceUpdate(update) => {
            presence::write_update(root.init_presence_update(), update)
        }
        Frame::Typing(typing) => presence::write_typing(root.init_typing(), typing),
        Frame::PresenceSettings(settings) => {
            presence::write_settings(root.init_presence_settings(), settings)
        }
        Frame::MarkRead(request) => receipt::write_mark_read(root.init_mark_read(), request),
        Frame::ReceiptsRequest(request) => {
            receipt::write_receipts_request(root.init_receipts_request(), request)
        }
        Frame::ReceiptList(list) => receipt::write_receipt_list(root.init_receipt_list(), list),
        Frame::ReceiptUpdate(update) => {
            receipt::write_receipt_update(root.init_receipt_update(), update)
        }
        Frame::InboxSync(request) => receipt::write_inbox_sync(root.init_inbox_sync(), request),
        Frame::InboxPage(page) => receipt::write_inbox_page(root.init_inbox_page(), page),
        Frame::MarkUnread(request) => receipt::write_mark_unread(root.init_mark_unread(), request),
        Frame::GapRequest(request) => receipt::write_gap_request(root.init_gap_request(), request),
        Frame::GapPage(page) => receipt::write_gap_page(root.init_gap_page(), page),
    }
}

fn read_frame_body(root: wire::frame::Reader<'_>) -> Result<Frame, DecodeError> {
    use wire::frame::Which;

    let which = root
        .which()
        .map_err(|capnp::NotInSchema(tag)| DecodeError::UnknownFrame(tag))?;
    let frame = match which {
        Which::Hello(hello) => Frame::Hello(read_hello(hello?)?),
        Which::Welcome(welcome) => Frame::Welcome(read_welcome(welcome?)?),
        Which::Send(send) => Frame::Send(read_send(send?)?),
        Which::SendAck(ack) => Frame::SendAck(read_send_ack(ack?)?),
        Which::Deliver(deliver) => Frame::Deliver(Deliver {
            message: read_message(deliver?.get_message()?)?,
        }),
        Which::DeliveryAck(ack) => {
            let ack = ack?;
            Frame::DeliveryAck(DeliveryAck {
                conversation_id: ack.get_conversation_id(),
                seq: ack.get_seq(),
            })
        }
        Which::HistoryRequest(request) => Frame::HistoryRequest(read_history_request(request?)),
        Which::HistoryPage(page) => Frame::HistoryPage(read_history_page(page?)?),
        Which::CreateGroup(request) => Frame::CreateGroup(read_create_group(request?)?),
        Which::AddMembers(change) => Frame::AddMembers(read_members_change(change?)?),
        Which::RemoveMembers(change) => Frame::RemoveMembers(read_members_change(change?)?),
        Which::Leave(leave) => Frame::Leave(read_leave(leave?)),
        Which::ConversationReply(reply) => {
            let reply = reply?;
            Frame::ConversationReply(ConversationReply {
                request_id: reply.get_request_id(),
                conversation: read_conversation(reply.get_conversation()?)?,
            })
        }
        Which::ListConversations(request) => Frame::ListConversations(ListConversations {
            request_id: request?.get_request_id(),
        }),
        Which::ConversationList(list) => {
            let list = list?;
            Frame::ConversationList(ConversationList {
                request_id: list.get_request_id(),
                conversations: read_conversations(list.get_conversations()?)?,
            })
        }
        Which::Error(error) => Frame::Error(read_error(error?)?),
        Which::Close(close) => Frame::Close(read_close(close?)?),
        Which::Heartbeat(heartbeat) => Frame::Heartbeat(presence::read_heartbeat(heartbeat?)?),
        Which::PresenceSubscribe(request) => {
            Frame::PresenceSubscribe(presence::read_subscribe(request?)?)
        }
        Which::PresenceUpdate(update) => Frame::PresenceUpdate(presence::read_update(update?)?),
        Which::Typing(typing) => Frame::Typing(presence::read_typing(typing?)?),
        Which::PresenceSettings(settings) => {
            Frame::PresenceSettings(presence::read_settings(settings?))
        }
        Which::MarkRead(request) => Frame::MarkRead(receipt::read_mark_read(request?)),
        Which::ReceiptsRequest(request) => {
            Frame::ReceiptsRequest(receipt::read_receipts_request(request?))
        }
        Which::ReceiptList(list) => Frame::ReceiptList(receipt::read_receipt_list(list?)?),
        Which::ReceiptUpdate(update) => {
            Frame::ReceiptUpdate(receipt::read_receipt_update(update?)?)
        }
        Which::InboxSync(request) => Frame::InboxSync(receipt::read_inbox_sync(request?)),
        Which::InboxPage(page) => Frame::InboxPage(receipt::read_inbox_page(page?)?),
        Which::MarkUnread(request) => Frame::MarkUnread(receipt::read_mark_unread(request?)),
        Which::GapRequest(request) => Frame::GapRequest(receipt::read_gap_request(request?)),
        Which::GapPage(page) => Frame::GapPage(receipt::read_gap_page(page?)?),
    };
    Ok(frame)
}

/// Converts a Rust length to a Cap'n Proto list length.
///
/// NOTE: a list longer than `u32::MAX` cannot be encoded. The frame size limit keeps
/// frames far below that, so reaching it is a bug in the caller.
pub(crate) fn list_len(len: usize) -> u32 {
    u32::try_from(len).expect("list longer than u32::MAX elements")
}

pub(crate) fn read_text(text: capnp::Result<capnp::text::Reader<'_>>) -> capnp::Result<String> {
    Ok(text?.to_str()?.to_owned())
}

pub(crate) fn write_texts(mut list: text_list::Builder<'_>, values: &[String]) {
    for (index, value) in values.iter().enumerate() {
        list.set(index as u32, value.as_str());
    }
}

pub(crate) fn read_texts(list: capnp::Result<text_list::Reader<'_>>) -> capnp::Result<Vec<String>> {
    list?.iter().map(read_text).collect()
}

fn write_hello(mut out: wire::hello::Builder<'_>, hello: &Hello) {
    out.set_token(hello.token.as_str());
    out.set_device_id(hello.device_id.as_str());
    out.set_client_version(hello.client_version.as_str());
}

fn read_hello(hello: wire::hello::Reader<'_>) -> capnp::Result<Hello> {
    Ok(Hello {
        token: read_text(hello.get_token())?,
        device_id: read_text(hello.get_device_id())?,
        client_version: read_text(hello.get_client_version())?,
    })
}

fn write_welcome(mut out: wire::welcome::Builder<'_>, welcome: &Welcome) {
    out.set_session_id(welcome.session_id);
    out.set_user_id(welcome.user_id.as_str());
    out.set_server_time_ms(welcome.server_time_ms);

    let limits = &welcome.limits;
    let mut wire_limits = out.reborrow().init_limits();
    wire_limits.set_max_message_bytes(limits.max_message_bytes);
    wire_limits.set_max_frame_bytes(limits.max_frame_bytes);
    wire_limits.set_max_conversation_streams(limits.max_conversation_streams);
    wire_limits.set_max_group_members(limits.max_group_members);

    write_texts(
        out.init_edges(list_len(welcome.edges.len())),
        &welcome.edges,
    );
}

fn read_welcome(welcome: wire::welcome::Reader<'_>) -> capnp::Result<Welcome> {
    let limits = welcome.get_limits()?;
    Ok(Welcome {
        session_id: welcome.get_session_id(),
        user_id: read_text(welcome.get_user_id())?,
        server_time_ms: welcome.get_server_time_ms(),
        limits: Limits {
            max_message_bytes: limits.get_max_message_bytes(),
            max_frame_bytes: limits.get_max_frame_bytes(),
            max_conversation_streams: limits.get_max_conversation_streams(),
            max_group_members: limits.get_max_group_members(),
        },
        edges: read_texts(welcome.get_edges())?,
    })
}

fn write_send(mut out: wire::send::Builder<'_>, send: &Send) {
    out.set_conversation_id(send.conversation_id);
    out.set_client_msg_id(send.client_msg_id.as_str());
    out.set_body(send.body.as_str());
    let mut peer = out.init_direct_peer();
    match &send.direct_peer {
        Some(user) => peer.set_user(user.as_str()),
        None => peer.set_none(()),
    }
}

fn read_send(send: wire::send::Reader<'_>) -> capnp::Result<Send> {
    use wire::send::direct_peer::Which;

    let direct_peer = match send.get_direct_peer().which()? {
        Which::None(()) => None,
        Which::User(user) => Some(read_text(user)?),
    };
    Ok(Send {
        conversation_id: send.get_conversation_id(),
        client_msg_id: read_text(send.get_client_msg_id())?,
        body: read_text(send.get_body())?,
        direct_peer,
    })
}

pub(crate) fn write_send_ack(mut out: wire::send_ack::Builder<'_>, ack: &SendAck) {
    out.set_conversation_id(ack.conversation_id);
    out.set_client_msg_id(ack.client_msg_id.as_str());
    out.set_message_id(ack.message_id);
    out.set_seq(ack.seq);
    out.set_hlc(ack.hlc);
    out.set_server_time_ms(ack.server_time_ms);
}

pub(crate) fn read_send_ack(ack: wire::send_ack::Reader<'_>) -> capnp::Result<SendAck> {
    Ok(SendAck {
        conversation_id: ack.get_conversation_id(),
        client_msg_id: read_text(ack.get_client_msg_id())?,
        message_id: ack.get_message_id(),
        seq: ack.get_seq(),
        hlc: ack.get_hlc(),
        server_time_ms: ack.get_server_time_ms(),
    })
}

pub(crate) fn write_message(mut out: wire::message::Builder<'_>, message: &Message) {
    out.set_conversation_id(message.conversation_id);
    out.set_seq(message.seq);
    out.set_message_id(message.message_id);
    out.set_sender(message.sender.as_str());
    out.set_body(message.body.as_str());
    out.set_hlc(message.hlc);
    out.set_server_time_ms(message.server_time_ms);
    out.set_kind(match message.kind {
        MessageKind::User => wire::MessageKind::User,
        MessageKind::System => wire::MessageKind::System,
    });
}

pub(crate) fn read_message(message: wire::message::Reader<'_>) -> capnp::Result<Message> {
    Ok(Message {
        conversation_id: message.get_conversation_id(),
        seq: message.get_seq(),
        message_id: message.get_message_id(),
        sender: read_text(message.get_sender())?,
        body: read_text(message.get_body())?,
        hlc: message.get_hlc(),
        server_time_ms: message.get_server_time_ms(),
        kind: match message.get_kind()? {
            wire::MessageKind::User => MessageKind::User,
            wire::MessageKind::System => MessageKind::System,
        },
    })
}

pub(crate) fn write_history_request(
    mut out: wire::history_request::Builder<'_>,
    request: &HistoryRequest,
) {
    out.set_request_id(request.request_id);
    out.set_conversation_id(request.conversation_id);
    out.set_before_seq(request.before_seq);
    out.set_limit(request.limit);
}

pub(crate) fn read_history_request(request: wire::history_request::Reader<'_>) -> HistoryRequest {
    HistoryRequest {
        request_id: request.get_request_id(),
        conversation_id: request.get_conversation_id(),
        before_seq: request.get_before_seq(),
        limit: request.get_limit(),
    }
}

pub(crate) fn write_history_page(mut out: wire::history_page::Builder<'_>, page: &HistoryPage) {
    out.set_request_id(page.request_id);
    out.set_conversation_id(page.conversation_id);
    out.set_next_before_seq(page.next_before_seq);
    let mut messages = out.init_messages(list_len(page.messages.len()));
    for (index, message) in page.messages.iter().enumerate() {
        write_message(messages.reborrow().get(index as u32), message);
    }
}

pub(crate) fn read_history_page(
    page: wire::history_page::Reader<'_>,
) -> capnp::Result<HistoryPage> {
    Ok(HistoryPage {
        request_id: page.get_request_id(),
        conversation_id: page.get_conversation_id(),
        messages: page
            .get_messages()?
            .iter()
            .map(read_message)
            .collect::<Result<_, _>>()?,
        next_before_seq: page.get_next_before_seq(),
    })
}

pub(crate) fn write_create_group(mut out: wire::create_group::Builder<'_>, request: &CreateGroup) {
    out.set_request_id(request.request_id);
    out.set_name(request.name.as_str());
    write_texts(
        out.init_members(list_len(request.members.len())),
        &request.members,
    );
}

pub(crate) fn read_create_group(
    request: wire::create_group::Reader<'_>,
) -> capnp::Result<CreateGroup> {
    Ok(CreateGroup {
        request_id: request.get_request_id(),
        name: read_text(request.get_name())?,
        members: read_texts(request.get_members())?,
    })
}

pub(crate) fn write_members_change(
    mut out: wire::members_change::Builder<'_>,
    change: &MembersChange,
) {
    out.set_request_id(change.request_id);
    out.set_conversation_id(change.conversation_id);
    write_texts(out.init_users(list_len(change.users.len())), &change.users);
}

pub(crate) fn read_members_change(
    change: wire::members_change::Reader<'_>,
) -> capnp::Result<MembersChange> {
    Ok(MembersChange {
        request_id: change.get_request_id(),
        conversation_id: change.get_conversation_id(),
        users: read_texts(change.get_users())?,
    })
}

pub(crate) fn write_leave(mut out: wire::leave::Builder<'_>, leave: &Leave) {
    out.set_request_id(leave.request_id);
    out.set_conversation_id(leave.conversation_id);
}

pub(crate) fn read_leave(leave: wire::leave::Reader<'_>) -> Leave {
    Leave {
        request_id: leave.get_request_id(),
        conversation_id: leave.get_conversation_id(),
    }
}

pub(crate) fn write_conversation(
    mut out: wire::conversation_info::Builder<'_>,
    info: &ConversationInfo,
) {
    out.set_conversation_id(info.conversation_id);
    out.set_kind(match info.kind {
        ConversationKind::Direct => wire::ConversationKind::Direct,
        ConversationKind::Group => wire::ConversationKind::Group,
    });
    out.set_name(info.name.as_str());
    out.set_created_ms(info.created_ms);
    out.set_last_seq(info.last_seq);

    let mut members = out.init_members(list_len(info.members.len()));
    for (index, member) in info.members.iter().enumerate() {
        let mut wire_member = members.reborrow().get(index as u32);
        wire_member.set_user_id(member.user_id.as_str());
        wire_member.set_role(match member.role {
            Role::Member => wire::Role::Member,
            Role::Admin => wire::Role::Admin,
        });
        wire_member.set_joined_seq(member.joined_seq);
    }
}

pub(crate) fn read_conversation(
    info: wire::conversation_info::Reader<'_>,
) -> capnp::Result<ConversationInfo> {
    let mut members = Vec::new();
    for member in info.get_members()? {
        members.push(Member {
            user_id: read_text(member.get_user_id())?,
            role: match member.get_role()? {
                wire::Role::Member => Role::Member,
                wire::Role::Admin => Role::Admin,
            },
            joined_seq: member.get_joined_seq(),
        });
    }
    Ok(ConversationInfo {
        conversation_id: info.get_conversation_id(),
        kind: match info.get_kind()? {
            wire::ConversationKind::Direct => ConversationKind::Direct,
            wire::ConversationKind::Group => ConversationKind::Group,
        },
        name: read_text(info.get_name())?,
        members,
        created_ms: info.get_created_ms(),
        last_seq: info.get_last_seq(),
    })
}

pub(crate) fn write_conversations(
    mut out: capnp::struct_list::Builder<'_, wire::conversation_info::Owned>,
    infos: &[ConversationInfo],
) {
    for (index, info) in infos.iter().enumerate() {
        write_conversation(out.reborrow().get(index as u32), info);
    }
}

pub(crate) fn read_conversations(
    infos: capnp::struct_list::Reader<'_, wire::conversation_info::Owned>,
) -> capnp::Result<Vec<ConversationInfo>> {
    infos.iter().map(read_conversation).collect()
}

fn write_error(mut out: wire::error_frame::Builder<'_>, error: &ErrorFrame) {
    out.set_request_id(error.request_id);
    out.set_conversation_id(error.conversation_id);
    out.set_client_msg_id(error.client_msg_id.as_str());
    out.set_code(error.code.as_u16());
    out.set_message(error.message.as_str());
    out.set_retry_after_ms(error.retry_after_ms);
}

fn read_error(error: wire::error_frame::Reader<'_>) -> capnp::Result<ErrorFrame> {
    Ok(ErrorFrame {
        request_id: error.get_request_id(),
        conversation_id: error.get_conversation_id(),
        client_msg_id: read_text(error.get_client_msg_id())?,
        code: ErrorCode::from_u16(error.get_code()),
        message: read_text(error.get_message())?,
        retry_after_ms: error.get_retry_after_ms(),
    })
}

fn write_close(mut out: wire::close::Builder<'_>, close: &Close) {
    out.set_code(close.code);
    out.set_message(close.message.as_str());
    out.set_retry_after_ms(close.retry_after_ms);
    out.set_redirect(close.redirect.as_str());
}

fn read_close(close: wire::close::Reader<'_>) -> capnp::Result<Close> {
    Ok(Close {
        code: close.get_code(),
        message: read_text(close.get_message())?,
        retry_after_ms: close.get_retry_after_ms(),
        redirect: read_text(close.get_redirect())?,
    })
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
