//! Text and JSON output of the command-line client.
//!
//! In JSON, 64-bit ids (conversation, message and HLC stamps) are decimal strings
//! because JavaScript numbers lose precision past 2^53. Counters that stay small (`seq`,
//! milliseconds) are numbers.

use serde_json::{Value, json};
use tidings_schema::frame::{
    ConversationInfo, ConversationKind, Message, MessageKind, Role, SendAck,
};

/// Formats a message as `[HH:MM:SS] #seq sender: body`, with the server's arrival time
/// in UTC.
pub fn message_line(message: &Message) -> String {
    format!(
        "[{}] #{} {}: {}",
        clock_utc(message.server_time_ms),
        message.seq,
        message.sender,
        message.body
    )
}

/// Formats milliseconds since the Unix epoch as `HH:MM:SS` in UTC.
pub(crate) fn clock_utc(unix_ms: u64) -> String {
    let seconds_of_day = (unix_ms / 1000) % 86_400;
    format!(
        "{:02}:{:02}:{:02}",
        seconds_of_day / 3600,
        (seconds_of_day / 60) % 60,
        seconds_of_day % 60
    )
}

/// Returns the JSON object of a delivered or stored message.
pub fn message_json(message: &Message) -> Value {
    json!({
        "conversation": message.conversation_id.to_string(),
        "seq": message.seq,
        "message_id": message.message_id.to_string(),
        "sender": message.sender,
        "body": message.body,
        "kind": match message.kind {
            MessageKind::User => "user",
            MessageKind::System => "system",
        },
        "hlc": message.hlc.to_string(),
        "server_time_ms": message.server_time_ms,
    })
}

/// Returns the JSON object of a send acknowledgement.
pub fn ack_json(ack: &SendAck) -> Value {
    json!({
        "conversation": ack.conversation_id.to_string(),
        "client_msg_id": ack.client_msg_id,
        "message_id": ack.message_id.to_string(),
        "seq": ack.seq,
        "hlc": ack.hlc.to_string(),
        "server_time_ms": ack.server_time_ms,
    })
}

/// Returns the JSON object of a conversation and its members.
pub fn conversation_json(info: &ConversationInfo) -> Value {
    let members: Vec<Value> = info
        .members
        .iter()
        .map(|member| {
            json!({
                "user": member.user_id,
                "role": role_name(member.role),
                "joined_seq": member.joined_seq,
            })
        })
        .collect();
    json!({
        "conversation": info.conversation_id.to_string(),
        "kind": kind_name(info.kind),
        "name": info.name,
        "members": members,
        "created_ms": info.created_ms,
        "last_seq": info.last_seq,
    })
}

/// Formats a conversation as one line: id, kind, name, members and last seq.
pub(crate) fn conversation_line(info: &ConversationInfo) -> String {
    let members: Vec<&str> = info.members.iter().map(|m| m.user_id.as_str()).collect();
    let name = if info.name.is_empty() {
        "-"
    } else {
        &info.name
    };
    format!(
        "{}  {}  {}  members={}  last_seq={}",
        info.conversation_id,
        kind_name(info.kind),
        name,
        members.join(","),
        info.last_seq
    )
}

/// Formats a send acknowledgement for people.
pub(crate) fn ack_line(ack: &SendAck) -> String {
    format!(
        "sent: conversation {} seq {} message_id {}",
        ack.conversation_id, ack.seq, ack.message_id
    )
}

fn kind_name(kind: ConversationKind) -> &'static str {
    match kind {
        ConversationKind::Direct => "direct",
        ConversationKind::Group => "group",
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Member => "member",
        Role::Admin => "admin",
    }
}
