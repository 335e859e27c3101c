//! Client frames: the messages a client and an edge exchange on QUIC streams,
//! WebTransport streams or WebSocket messages.
//!
//! These are the Rust views of the `Frame` struct in `capnp/frames.capnp`; [`crate::codec`]
//! maps between them. Every frame on the wire carries [`PROTOCOL_VERSION`].
//!
//! Streams: the control stream (opened by the client first) carries `Hello`, `Welcome`,
//! requests with a `request_id` and their replies, and errors not tied to a conversation.
//! A client-opened conversation stream carries `Send` and the matching `SendAck` or
//! `Error`. A server-opened conversation stream carries `Deliver` frames in `seq` order
//! and the client's `DeliveryAck` frames back.

use crate::error::{ErrorCode, Rejection};
pub use crate::presence::{
    Heartbeat, PresenceEntry, PresenceSettings, PresenceState, PresenceSubscribe, PresenceUpdate,
    Typing,
};
pub use crate::receipt::{
    GapPage, GapRequest, InboxEntry, InboxPage, InboxSync, MarkRead, MarkUnread, MemberReceipt,
    ReceiptList, ReceiptUpdate, ReceiptsRequest, SeqReceiptCount,
};

/// The protocol version this build speaks. A frame with another version is rejected with
/// [`ErrorCode::UnsupportedVersion`].
pub const PROTOCOL_VERSION: u16 = 1;

/// One frame of the client protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello(Hello),
    Welcome(Welcome),
    Send(Send),
    SendAck(SendAck),
    Deliver(Deliver),
    DeliveryAck(DeliveryAck),
    HistoryRequest(HistoryRequest),
    HistoryPage(HistoryPage),
    CreateGroup(CreateGroup),
    AddMembers(MembersChange),
    RemoveMembers(MembersChange),
    Leave(Leave),
    /// Reply to `CreateGroup`, `AddMembers`, `RemoveMembers` and `Leave`.
    ConversationReply(ConversationReply),
    ListConversations(ListConversations),
    ConversationList(ConversationList),
    Error(ErrorFrame),
    Close(Close),
    Heartbeat(Heartbeat),
    PresenceSubscribe(PresenceSubscribe),
    PresenceUpdate(PresenceUpdate),
    Typing(Typing),
    PresenceSettings(PresenceSettings),
    MarkRead(MarkRead),
    ReceiptsRequest(ReceiptsRequest),
    /// Reply to `MarkRead` and `ReceiptsRequest`.
    ReceiptList(ReceiptList),
    ReceiptUpdate(ReceiptUpdate),
    InboxSync(InboxSync),
    /// Reply to `InboxSync` and `MarkUnread`.
    InboxPage(InboxPage),
    MarkUnread(MarkUnread),
    GapRequest(GapRequest),
    GapPage(GapPage),
}

impl Frame {
    /// Returns the frame's type name, for logs and error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "Hello",
            Frame::Welcome(_) => "Welcome",
            Frame::Send(_) => "Send",
            Frame::SendAck(_) => "SendAck",
            Frame::Deliver(_) => "Deliver",
            Frame::DeliveryAck(_) => "DeliveryAck",
            Frame::HistoryRequest(_) => "HistoryRequest",
            Frame::HistoryPage(_) => "HistoryPage",
            Frame::CreateGroup(_) => "CreateGroup",
            Frame::AddMembers(_) => "AddMembers",
            Frame::RemoveMembers(_) => "RemoveMembers",
            Frame::Leave(_) => "Leave",
            Frame::ConversationReply(_) => "ConversationReply",
            Frame::ListConversations(_) => "ListConversations",
            Frame::ConversationList(_) => "ConversationList",
            Frame::Error(_) => "Error",
            Frame::Close(_) => "Close",
            Frame::Heartbeat(_) => "Heartbeat",
            Frame::PresenceSubscribe(_) => "PresenceSubscribe",
            Frame::PresenceUpdate(_) => "PresenceUpdate",
            Frame::Typing(_) => "Typing",
            Frame::PresenceSettings(_) => "PresenceSettings",
            Frame::MarkRead(_) => "MarkRead",
            Frame::ReceiptsRequest(_) => "ReceiptsRequest",
            Frame::ReceiptList(_) => "ReceiptList",
            Frame::ReceiptUpdate(_) => "ReceiptUpdate",
            Frame::InboxSync(_) => "InboxSync",
            Frame::InboxPage(_) => "InboxPage",
            Frame::MarkUnread(_) => "MarkUnread",
            Frame::GapRequest(_) => "GapRequest",
            Frame::GapPage(_) => "GapPage",
        }
    }
}

/// First frame of a connection, on the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hello {
    /// Bearer token (a JWT whose `sub` is the user id).
    pub token: String,
    /// Client-chosen id of this device, stable across reconnects.
    pub device_id: String,
    pub client_version: String,
}

/// Limits the server enforces on this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum size of a message body in bytes.
    pub max_message_bytes: u32,
    /// Maximum size of one encoded frame in bytes.
    pub max_frame_bytes: u32,
    /// Maximum number of conversation streams the client may have open at once.
    pub max_conversation_streams: u32,
    /// Maximum number of members in a group, creator included.
    pub max_group_members: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 * 1024,
            max_frame_bytes: 256 * 1024,
            max_conversation_streams: 64,
            max_group_members: 500,
        }
    }
}

/// The server's reply to a valid `Hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub session_id: u64,
    /// The authenticated user id (the token's `sub`).
    pub user_id: String,
    /// Server wall-clock time in milliseconds since the Unix epoch.
    pub server_time_ms: u64,
    pub limits: Limits,
    /// Client addresses (`host:port`) of the edges a client may reconnect to.
    pub edges: Vec<String>,
}

/// A message sent by a client on its conversation stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Send {
    pub conversation_id: u64,
    /// Idempotency key chosen by the client: a retry with the same key returns the
    /// original `SendAck` and stores nothing new.
    pub client_msg_id: String,
    pub body: String,
    /// For a direct conversation: the other user. The conversation id must then equal
    /// [`crate::ids::direct_conversation_id`] of the two users, and the conversation is
    /// created on first use.
    pub direct_peer: Option<String>,
}

/// The acknowledgement of a durable send: the message is committed with fsync.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendAck {
    pub conversation_id: u64,
    pub client_msg_id: String,
    /// Snowflake id stamped by the edge that first received the send.
    pub message_id: u64,
    /// Position in the conversation, assigned by the owner at commit.
    pub seq: u64,
    /// Hybrid logical clock timestamp stamped by the edge.
    pub hlc: u64,
    /// Edge wall-clock time at arrival, milliseconds since the Unix epoch.
    pub server_time_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageKind {
    /// A message written by a user.
    #[default]
    User,
    /// A message written by the server, such as a membership change.
    System,
}

/// A committed message as stored and delivered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub conversation_id: u64,
    pub seq: u64,
    pub message_id: u64,
    pub sender: String,
    pub body: String,
    pub hlc: u64,
    pub server_time_ms: u64,
    pub kind: MessageKind,
}

/// A live delivery of one committed message to a member's device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliver {
    pub message: Message,
}

/// The device's cursor in a conversation: it has received every message up to `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryAck {
    pub conversation_id: u64,
    pub seq: u64,
}

/// A request for one page of a conversation's history, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistoryRequest {
    pub request_id: u64,
    pub conversation_id: u64,
    /// Return messages with `seq` below this; 0 means start from the newest.
    pub before_seq: u64,
    /// Maximum number of messages; the server caps it.
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryPage {
    pub request_id: u64,
    pub conversation_id: u64,
    /// Messages in descending `seq` order.
    pub messages: Vec<Message>,
    /// Pass as `before_seq` to read the next page; 0 when there is none.
    pub next_before_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateGroup {
    pub request_id: u64,
    pub name: String,
    /// Members besides the creator, who is always added as an admin.
    pub members: Vec<String>,
}

/// `AddMembers` or `RemoveMembers`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MembersChange {
    pub request_id: u64,
    pub conversation_id: u64,
    pub users: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Leave {
    pub request_id: u64,
    pub conversation_id: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConversationKind {
    #[default]
    Direct,
    Group,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Member,
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Member {
    pub user_id: String,
    pub role: Role,
    /// The seq of the message that recorded the join, so the first one the member may read.
    pub joined_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConversationInfo {
    pub conversation_id: u64,
    pub kind: ConversationKind,
    /// Group name; empty for direct conversations.
    pub name: String,
    pub members: Vec<Member>,
    pub created_ms: u64,
    pub last_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConversationReply {
    pub request_id: u64,
    pub conversation: ConversationInfo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListConversations {
    pub request_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConversationList {
    pub request_id: u64,
    pub conversations: Vec<ConversationInfo>,
}

/// An error reply. `request_id`, `conversation_id` and `client_msg_id` identify what it
/// answers (0 or empty when it answers nothing in particular).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    pub request_id: u64,
    pub conversation_id: u64,
    pub client_msg_id: String,
    pub code: ErrorCode,
    pub message: String,
    /// Milliseconds to wait before a retry; 0 when the error is not retryable.
    pub retry_after_ms: u32,
}

impl ErrorFrame {
    /// Builds an error frame from a rejection, for the request it answers.
    pub fn from_rejection(rejection: &Rejection) -> Self {
        ErrorFrame {
            request_id: 0,
            conversation_id: 0,
            client_msg_id: String::new(),
            code: rejection.code,
            message: rejection.message.clone(),
            retry_after_ms: rejection.retry_after_ms,
        }
    }

    pub fn rejection(&self) -> Rejection {
        Rejection {
            code: self.code,
            message: self.message.clone(),
            retry_after_ms: self.retry_after_ms,
        }
    }
}

/// Sent by the server before it closes a session on purpose (drain, token expiry).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Close {
    /// A [`crate::error::CloseCode`] number.
    pub code: u32,
    pub message: String,
    /// Milliseconds to wait before reconnecting.
    pub retry_after_ms: u32,
    /// Client address of another edge to reconnect to; empty when there is none.
    pub redirect: String,
}
