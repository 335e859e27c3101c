//! Mesh types: what an edge asks of an owner, and what an owner delivers back.
//!
//! These are the Rust views of the structs in `capnp/mesh.capnp`. The edge has already
//! authenticated the user, so every request names the acting user.

use crate::frame::{
    ConversationInfo, CreateGroup, HistoryPage, HistoryRequest, Leave, MembersChange, Message,
    SendAck,
};

/// A send as the edge forwards it to the conversation's owner.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendRequest {
    /// The authenticated sender.
    pub sender: String,
    pub device_id: String,
    pub conversation_id: u64,
    pub client_msg_id: String,
    pub body: String,
    pub direct_peer: Option<String>,
    /// Snowflake id stamped by the edge.
    pub message_id: u64,
    /// Hybrid logical clock timestamp stamped by the edge.
    pub hlc: u64,
    /// Edge wall-clock time at arrival, milliseconds since the Unix epoch.
    pub server_time_ms: u64,
}

/// One request from an edge to an owner, on behalf of an authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerRequest {
    Send(SendRequest),
    History {
        user: String,
        request: HistoryRequest,
    },
    CreateGroup {
        user: String,
        request: CreateGroup,
        /// Random id chosen by the edge for the new group.
        conversation_id: u64,
        /// Stamps for the system message that records the creation.
        stamp: Stamp,
    },
    AddMembers {
        user: String,
        request: MembersChange,
        stamp: Stamp,
    },
    RemoveMembers {
        user: String,
        request: MembersChange,
        stamp: Stamp,
    },
    Leave {
        user: String,
        request: Leave,
        stamp: Stamp,
    },
    ListConversations {
        user: String,
    },
}

/// The ids an edge stamps on a message the owner writes for it (system messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    pub message_id: u64,
    pub hlc: u64,
    pub server_time_ms: u64,
}

/// The successful reply to an [`OwnerRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerReply {
    SendAck(SendAck),
    HistoryPage(HistoryPage),
    Conversation(ConversationInfo),
    Conversations(Vec<ConversationInfo>),
}

/// One committed message, fanned out from the owner to every edge.
///
/// The edge delivers it to each connected device of each recipient, except the device
/// that sent it (which got a `SendAck`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message: Message,
    /// Users who receive the message: the members after the commit, plus members removed
    /// by this very message so that they see their own removal.
    pub recipients: Vec<String>,
    /// The device that sent the message; empty for system messages.
    pub origin_device: String,
}
