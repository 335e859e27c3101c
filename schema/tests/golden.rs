//! Golden vectors shared with the browser codec (`web/static/codec/frames.js`).
//!
//! Each case is a frame built in Rust. Its encoding and a JSON description in the browser
//! codec's object shape (64-bit integers as decimal strings) are committed under
//! `web/tests/vectors/rust/`. `node --test web/tests/codec/` decodes those bytes in
//! JavaScript and compares them to the JSON. In the other direction,
//! `npm --prefix web run vectors` encodes the same JSON objects in JavaScript into
//! `web/tests/vectors/js/`, and this test decodes them with the Rust codec.
//!
//! Run with `TIDINGS_UPDATE_VECTORS=1` to rewrite the Rust vectors after a deliberate
//! change to the cases or the schema, then run `npm --prefix web run vectors`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tidings_schema::codec;
use tidings_schema::error::ErrorCode;
use tidings_schema::frame::*;

/// Above 2^53, so a JavaScript Number would round it.
const BIG: u64 = 0xfedc_ba98_7654_3210;
/// 2^53 + 1, the first integer a JavaScript Number cannot hold.
const JUST_ABOVE_DOUBLE: u64 = (1 << 53) + 1;
const UNICODE: &str = "héllo wörld — 你好 👋🏽 \u{1f389}";

const UPDATE_ENV: &str = "TIDINGS_UPDATE_VECTORS";
const JS_REGENERATE: &str = "npm --prefix web run vectors";

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/tests/vectors")
}

fn message(seq: u64, kind: MessageKind, body: &str) -> Message {
    Message {
        conversation_id: BIG,
        seq,
        message_id: u64::MAX - seq,
        sender: "ünïcødé-user".to_string(),
        body: body.to_string(),
        hlc: JUST_ABOVE_DOUBLE + seq,
        server_time_ms: 1_767_225_600_123,
        kind,
    }
}

fn conversation(kind: ConversationKind, members: Vec<Member>) -> ConversationInfo {
    ConversationInfo {
        conversation_id: BIG - 7,
        kind,
        name: "Café ☕ group".to_string(),
        members,
        created_ms: 1_767_225_600_000,
        last_seq: JUST_ABOVE_DOUBLE,
    }
}

fn members() -> Vec<Member> {
    vec![
        Member {
            user_id: "alice".to_string(),
            role: Role::Admin,
            joined_seq: 0,
        },
        Member {
            user_id: "bøb".to_string(),
            role: Role::Member,
            joined_seq: BIG,
        },
    ]
}

fn receipt(user: &str) -> MemberReceipt {
    MemberReceipt {
        user_id: user.to_string(),
        delivered_seq: BIG,
        read_seq: JUST_ABOVE_DOUBLE,
    }
}

/// Returns the named cases: every `Frame` variant at least once, with 64-bit values above
/// 2^53, non-ASCII text, and both empty and non-empty lists.
fn cases() -> Vec<(&'static str, Frame)> {
    let mut cases = session_cases();
    cases.extend(conversation_cases());
    cases.extend(presence_cases());
    cases.extend(receipt_cases());
    cases
}

fn session_cases() -> Vec<(&'static str, Frame)> {
    vec![
        (
            "hello",
            Frame::Hello(Hello {
                token: "tok.en-ü".to_string(),
                device_id: "device 📱".to_string(),
                client_version: "web/0.1.0".to_string(),
            }),
        ),
        (
            "welcome",
            Frame::Welcome(Welcome {
                session_id: u64::MAX,
                user_id: "alice".to_string(),
                server_time_ms: BIG,
                limits: Limits {
                    max_message_bytes: 65_536,
                    max_frame_bytes: u32::MAX,
                    max_conversation_streams: 64,
                    max_group_members: 500,
                },
                edges: vec!["127.0.0.1:4433".to_string(), "[::1]:4433".to_string()],
            }),
        ),
        (
            "welcome_no_edges",
            Frame::Welcome(Welcome {
                session_id: 1,
                user_id: String::new(),
                server_time_ms: 0,
                limits: Limits::default(),
                edges: Vec::new(),
            }),
        ),
        (
            "error",
            Frame::Error(ErrorFrame {
                request_id: BIG,
                conversation_id: JUST_ABOVE_DOUBLE,
                client_msg_id: "msg-ü-1".to_string(),
                code: ErrorCode::RateLimited,
                message: UNICODE.to_string(),
                retry_after_ms: u32::MAX,
            }),
        ),
        (
            "close",
            Frame::Close(Close {
                code: 0x104,
                message: "server shutting down — bye".to_string(),
                retry_after_ms: 1_000,
                redirect: "edge-2.example:4433".to_string(),
            }),
        ),
    ]
}

fn conversation_cases() -> Vec<(&'static str, Frame)> {
    vec![
        (
            "send_group",
            Frame::Send(Send {
                conversation_id: BIG,
                client_msg_id: "c-1".to_string(),
                body: UNICODE.to_string(),
                direct_peer: None,
            }),
        ),
        (
            "send_direct",
            Frame::Send(Send {
                conversation_id: u64::MAX,
                client_msg_id: "c-2".to_string(),
                body: String::new(),
                direct_peer: Some("bøb".to_string()),
            }),
        ),
        (
            "send_ack",
            Frame::SendAck(SendAck {
                conversation_id: BIG,
                client_msg_id: "c-1".to_string(),
                message_id: u64::MAX,
                seq: JUST_ABOVE_DOUBLE,
                hlc: BIG - 1,
                server_time_ms: 1_767_225_600_123,
            }),
        ),
        (
            "deliver",
            Frame::Deliver(Deliver {
                message: message(JUST_ABOVE_DOUBLE, MessageKind::User, UNICODE),
            }),
        ),
        (
            "delivery_ack",
            Frame::DeliveryAck(DeliveryAck {
                conversation_id: BIG,
                seq: u64::MAX,
            }),
        ),
        (
            "history_request",
            Frame::HistoryRequest(HistoryRequest {
                request_id: 7,
                conversation_id: BIG,
                before_seq: u64::MAX,
                limit: 50,
            }),
        ),
        (
            "history_page",
            Frame::HistoryPage(HistoryPage {
                request_id: 7,
                conversation_id: BIG,
                messages: vec![
                    message(41, MessageKind::System, "alice created the group"),
                    message(42, MessageKind::User, UNICODE),
                ],
                next_before_seq: 41,
            }),
        ),
        (
            "history_page_empty",
            Frame::HistoryPage(HistoryPage {
                request_id: BIG,
                conversation_id: BIG,
                messages: Vec::new(),
                next_before_seq: 0,
            }),
        ),
        (
            "create_group",
            Frame::CreateGroup(CreateGroup {
                request_id: BIG,
                name: "Café ☕ group".to_string(),
                members: vec!["alice".to_string(), "bøb".to_string(), "卡罗尔".to_string()],
            }),
        ),
        (
            "add_members",
            Frame::AddMembers(MembersChange {
                request_id: 9,
                conversation_id: BIG,
                users: vec!["dave".to_string()],
            }),
        ),
        (
            "remove_members",
            Frame::RemoveMembers(MembersChange {
                request_id: u64::MAX,
                conversation_id: JUST_ABOVE_DOUBLE,
                users: Vec::new(),
            }),
        ),
        (
            "leave",
            Frame::Leave(Leave {
                request_id: 11,
                conversation_id: BIG,
            }),
        ),
        (
            "conversation_reply",
            Frame::ConversationReply(ConversationReply {
                request_id: 12,
                conversation: conversation(ConversationKind::Group, members()),
            }),
        ),
        (
            "list_conversations",
            Frame::ListConversations(ListConversations { request_id: BIG }),
        ),
        (
            "conversation_list",
            Frame::ConversationList(ConversationList {
                request_id: 13,
                conversations: vec![
                    conversation(ConversationKind::Direct, Vec::new()),
                    conversation(ConversationKind::Group, members()),
                ],
            }),
        ),
    ]
}

fn presence_cases() -> Vec<(&'static str, Frame)> {
    vec![
        (
            "heartbeat",
            Frame::Heartbeat(Heartbeat {
                state: PresenceState::Away,
            }),
        ),
        (
            "presence_subscribe",
            Frame::PresenceSubscribe(PresenceSubscribe {
                request_id: 14,
                users: vec!["alice".to_string(), "bøb".to_string()],
                open_conversations: vec![BIG, u64::MAX, 0],
            }),
        ),
        (
            "presence_subscribe_empty",
            Frame::PresenceSubscribe(PresenceSubscribe {
                request_id: 15,
                users: Vec::new(),
                open_conversations: Vec::new(),
            }),
        ),
        (
            "presence_update",
            Frame::PresenceUpdate(PresenceUpdate {
                request_id: 0,
                snapshot: true,
                entries: vec![
                    PresenceEntry {
                        user: "alice".to_string(),
                        state: PresenceState::Online,
                        last_seen_ms: BIG,
                    },
                    PresenceEntry {
                        user: "bøb".to_string(),
                        state: PresenceState::Offline,
                        last_seen_ms: 0,
                    },
                ],
            }),
        ),
        (
            "typing",
            Frame::Typing(Typing {
                conversation_id: BIG,
                user: "卡罗尔".to_string(),
                active: true,
            }),
        ),
        (
            "presence_settings",
            Frame::PresenceSettings(PresenceSettings {
                request_id: JUST_ABOVE_DOUBLE,
                hide_last_seen: true,
            }),
        ),
    ]
}

fn receipt_cases() -> Vec<(&'static str, Frame)> {
    vec![
        (
            "mark_read",
            Frame::MarkRead(MarkRead {
                request_id: 16,
                conversation_id: BIG,
                seq: JUST_ABOVE_DOUBLE,
            }),
        ),
        (
            "receipts_request",
            Frame::ReceiptsRequest(ReceiptsRequest {
                request_id: 17,
                conversation_id: u64::MAX,
            }),
        ),
        (
            "receipt_list",
            Frame::ReceiptList(ReceiptList {
                request_id: 18,
                conversation_id: BIG,
                last_seq: u64::MAX,
                receipts: vec![receipt("alice"), receipt("bøb")],
            }),
        ),
        (
            "receipt_update",
            Frame::ReceiptUpdate(ReceiptUpdate {
                conversation_id: BIG,
                receipt: receipt("卡罗尔"),
                member_count: 499,
                counts: vec![
                    SeqReceiptCount {
                        seq: BIG,
                        delivered: 3,
                        read: 1,
                    },
                    SeqReceiptCount {
                        seq: JUST_ABOVE_DOUBLE,
                        delivered: u32::MAX,
                        read: 0,
                    },
                ],
            }),
        ),
        (
            "inbox_sync",
            Frame::InboxSync(InboxSync {
                request_id: 19,
                after_cursor: BIG,
                limit: 200,
                conversation_id: 0,
            }),
        ),
        (
            "inbox_page",
            Frame::InboxPage(InboxPage {
                request_id: 20,
                entries: vec![InboxEntry {
                    conversation_id: BIG,
                    last_seq: u64::MAX,
                    read_seq: JUST_ABOVE_DOUBLE,
                    unread_count: BIG,
                    marked_unread: true,
                    cursor: BIG + 1,
                    member: false,
                }],
                cursor: BIG + 1,
                complete: false,
            }),
        ),
        (
            "mark_unread",
            Frame::MarkUnread(MarkUnread {
                request_id: 21,
                conversation_id: BIG,
                unread: true,
            }),
        ),
        (
            "gap_request",
            Frame::GapRequest(GapRequest {
                request_id: 22,
                conversation_id: BIG,
                after_seq: JUST_ABOVE_DOUBLE,
                limit: u32::MAX,
            }),
        ),
        (
            "gap_page",
            Frame::GapPage(GapPage {
                request_id: 23,
                conversation_id: BIG,
                messages: vec![message(BIG, MessageKind::User, UNICODE)],
                complete: false,
                next_after_seq: BIG,
                last_seq: u64::MAX,
            }),
        ),
    ]
}

// ---------------------------------------------------------------------------------------
// The browser codec's object shape, written out for each Rust type.

fn n(value: u64) -> Value {
    Value::String(value.to_string())
}

fn message_kind(kind: MessageKind) -> &'static str {
    match kind {
        MessageKind::User => "user",
        MessageKind::System => "system",
    }
}

fn message_json(message: &Message) -> Value {
    json!({
        "conversationId": n(message.conversation_id),
        "seq": n(message.seq),
        "messageId": n(message.message_id),
        "sender": message.sender,
        "body": message.body,
        "hlc": n(message.hlc),
        "serverTimeMs": n(message.server_time_ms),
        "kind": message_kind(message.kind),
    })
}

fn conversation_json(info: &ConversationInfo) -> Value {
    let members: Vec<Value> = info
        .members
        .iter()
        .map(|member| {
            let role = match member.role {
                Role::Member => "member",
                Role::Admin => "admin",
            };
            json!({ "userId": member.user_id, "role": role, "joinedSeq": n(member.joined_seq) })
        })
        .collect();
    let kind = match info.kind {
        ConversationKind::Direct => "direct",
        ConversationKind::Group => "group",
    };
    json!({
        "conversationId": n(info.conversation_id),
        "kind": kind,
        "name": info.name,
        "members": members,
        "createdMs": n(info.created_ms),
        "lastSeq": n(info.last_seq),
    })
}

fn receipt_json(receipt: &MemberReceipt) -> Value {
    json!({
        "userId": receipt.user_id,
        "deliveredSeq": n(receipt.delivered_seq),
        "readSeq": n(receipt.read_seq),
    })
}

fn inbox_entry_json(entry: &InboxEntry) -> Value {
    json!({
        "conversationId": n(entry.conversation_id),
        "lastSeq": n(entry.last_seq),
        "readSeq": n(entry.read_seq),
        "unreadCount": n(entry.unread_count),
        "markedUnread": entry.marked_unread,
        "cursor": n(entry.cursor),
        "member": entry.member,
    })
}

fn messages_json(messages: &[Message]) -> Vec<Value> {
    messages.iter().map(message_json).collect()
}

fn ids_json(ids: &[u64]) -> Vec<Value> {
    ids.iter().copied().map(n).collect()
}

/// Returns the union member name and its value in the browser codec's shape.
fn body_json(frame: &Frame) -> (&'static str, Value) {
    match frame {
        Frame::Hello(hello) => (
            "hello",
            json!({
                "token": hello.token,
                "deviceId": hello.device_id,
                "clientVersion": hello.client_version,
            }),
        ),
        Frame::Welcome(welcome) => (
            "welcome",
            json!({
                "sessionId": n(welcome.session_id),
                "userId": welcome.user_id,
                "serverTimeMs": n(welcome.server_time_ms),
                "limits": {
                    "maxMessageBytes": welcome.limits.max_message_bytes,
                    "maxFrameBytes": welcome.limits.max_frame_bytes,
                    "maxConversationStreams": welcome.limits.max_conversation_streams,
                    "maxGroupMembers": welcome.limits.max_group_members,
                },
                "edges": welcome.edges,
            }),
        ),
        Frame::Send(send) => {
            let direct_peer = match &send.direct_peer {
                None => json!({ "which": "none" }),
                Some(user) => json!({ "which": "user", "user": user }),
            };
            let value = json!({
                "conversationId": n(send.conversation_id),
                "clientMsgId": send.client_msg_id,
                "body": send.body,
                "directPeer": direct_peer,
            });
            ("send", value)
        }
        Frame::SendAck(ack) => (
            "sendAck",
            json!({
                "conversationId": n(ack.conversation_id),
                "clientMsgId": ack.client_msg_id,
                "messageId": n(ack.message_id),
                "seq": n(ack.seq),
                "hlc": n(ack.hlc),
                "serverTimeMs": n(ack.server_time_ms),
            }),
        ),
        Frame::Deliver(deliver) => (
            "deliver",
            json!({ "message": message_json(&deliver.message) }),
        ),
        Frame::DeliveryAck(ack) => (
            "deliveryAck",
            json!({ "conversationId": n(ack.conversation_id), "seq": n(ack.seq) }),
        ),
        Frame::HistoryRequest(request) => (
            "historyRequest",
            json!({
                "requestId": n(request.request_id),
                "conversationId": n(request.conversation_id),
                "beforeSeq": n(request.before_seq),
                "limit": request.limit,
            }),
        ),
        Frame::HistoryPage(page) => (
            "historyPage",
            json!({
                "requestId": n(page.request_id),
                "conversationId": n(page.conversation_id),
                "messages": messages_json(&page.messages),
                "nextBeforeSeq": n(page.next_before_seq),
            }),
        ),
        Frame::CreateGroup(create) => (
            "createGroup",
            json!({
                "requestId": n(create.request_id),
                "name": create.name,
                "members": create.members,
            }),
        ),
        Frame::AddMembers(change) => ("addMembers", members_change_json(change)),
        Frame::RemoveMembers(change) => ("removeMembers", members_change_json(change)),
        Frame::Leave(leave) => (
            "leave",
            json!({
                "requestId": n(leave.request_id),
                "conversationId": n(leave.conversation_id),
            }),
        ),
        Frame::ConversationReply(reply) => (
            "conversationReply",
            json!({
                "requestId": n(reply.request_id),
                "conversation": conversation_json(&reply.conversation),
            }),
        ),
        Frame::ListConversations(list) => (
            "listConversations",
            json!({ "requestId": n(list.request_id) }),
        ),
        Frame::ConversationList(list) => {
            let conversations: Vec<Value> =
                list.conversations.iter().map(conversation_json).collect();
            let value = json!({
                "requestId": n(list.request_id),
                "conversations": conversations,
            });
            ("conversationList", value)
        }
        Frame::Error(error) => (
            "error",
            json!({
                "requestId": n(error.request_id),
                "conversationId": n(error.conversation_id),
                "clientMsgId": error.client_msg_id,
                "code": error.code.as_u16(),
                "message": error.message,
                "retryAfterMs": error.retry_after_ms,
            }),
        ),
        Frame::Close(close) => (
            "close",
            json!({
                "code": close.code,
                "message": close.message,
                "retryAfterMs": close.retry_after_ms,
                "redirect": close.redirect,
            }),
        ),
        other => presence_or_receipt_json(other),
    }
}

fn members_change_json(change: &MembersChange) -> Value {
    json!({
        "requestId": n(change.request_id),
        "conversationId": n(change.conversation_id),
        "users": change.users,
    })
}

fn presence_or_receipt_json(frame: &Frame) -> (&'static str, Value) {
    match frame {
        Frame::Heartbeat(heartbeat) => ("heartbeat", json!({ "state": heartbeat.state.as_str() })),
        Frame::PresenceSubscribe(subscribe) => (
            "presenceSubscribe",
            json!({
                "requestId": n(subscribe.request_id),
                "users": subscribe.users,
                "openConversations": ids_json(&subscribe.open_conversations),
            }),
        ),
        Frame::PresenceUpdate(update) => {
            let entries: Vec<Value> = update
                .entries
                .iter()
                .map(|entry| {
                    json!({
                        "user": entry.user,
                        "state": entry.state.as_str(),
                        "lastSeenMs": n(entry.last_seen_ms),
                    })
                })
                .collect();
            let value = json!({
                "requestId": n(update.request_id),
                "snapshot": update.snapshot,
                "entries": entries,
            });
            ("presenceUpdate", value)
        }
        Frame::Typing(typing) => (
            "typing",
            json!({
                "conversationId": n(typing.conversation_id),
                "user": typing.user,
                "active": typing.active,
            }),
        ),
        Frame::PresenceSettings(settings) => (
            "presenceSettings",
            json!({
                "requestId": n(settings.request_id),
                "hideLastSeen": settings.hide_last_seen,
            }),
        ),
        other => receipt_body_json(other),
    }
}

fn receipt_body_json(frame: &Frame) -> (&'static str, Value) {
    match frame {
        Frame::MarkRead(mark) => (
            "markRead",
            json!({
                "requestId": n(mark.request_id),
                "conversationId": n(mark.conversation_id),
                "seq": n(mark.seq),
            }),
        ),
        Frame::ReceiptsRequest(request) => (
            "receiptsRequest",
            json!({
                "requestId": n(request.request_id),
                "conversationId": n(request.conversation_id),
            }),
        ),
        Frame::ReceiptList(list) => {
            let receipts: Vec<Value> = list.receipts.iter().map(receipt_json).collect();
            let value = json!({
                "requestId": n(list.request_id),
                "conversationId": n(list.conversation_id),
                "lastSeq": n(list.last_seq),
                "receipts": receipts,
            });
            ("receiptList", value)
        }
        Frame::ReceiptUpdate(update) => {
            let counts: Vec<Value> = update
                .counts
                .iter()
                .map(|count| {
                    json!({ "seq": n(count.seq), "delivered": count.delivered, "read": count.read })
                })
                .collect();
            let value = json!({
                "conversationId": n(update.conversation_id),
                "receipt": receipt_json(&update.receipt),
                "memberCount": update.member_count,
                "counts": counts,
            });
            ("receiptUpdate", value)
        }
        Frame::InboxSync(sync) => (
            "inboxSync",
            json!({
                "requestId": n(sync.request_id),
                "afterCursor": n(sync.after_cursor),
                "limit": sync.limit,
                "conversationId": n(sync.conversation_id),
            }),
        ),
        Frame::InboxPage(page) => {
            let entries: Vec<Value> = page.entries.iter().map(inbox_entry_json).collect();
            let value = json!({
                "requestId": n(page.request_id),
                "entries": entries,
                "cursor": n(page.cursor),
                "complete": page.complete,
            });
            ("inboxPage", value)
        }
        Frame::MarkUnread(mark) => (
            "markUnread",
            json!({
                "requestId": n(mark.request_id),
                "conversationId": n(mark.conversation_id),
                "unread": mark.unread,
            }),
        ),
        Frame::GapRequest(request) => (
            "gapRequest",
            json!({
                "requestId": n(request.request_id),
                "conversationId": n(request.conversation_id),
                "afterSeq": n(request.after_seq),
                "limit": request.limit,
            }),
        ),
        Frame::GapPage(page) => (
            "gapPage",
            json!({
                "requestId": n(page.request_id),
                "conversationId": n(page.conversation_id),
                "messages": messages_json(&page.messages),
                "complete": page.complete,
                "nextAfterSeq": n(page.next_after_seq),
                "lastSeq": n(page.last_seq),
            }),
        ),
        other => panic!("frame {} has no JSON mapping in golden.rs", other.kind()),
    }
}

fn frame_json(frame: &Frame) -> Value {
    let (which, value) = body_json(frame);
    let mut body = serde_json::Map::new();
    body.insert("which".to_string(), Value::from(which));
    body.insert(which.to_string(), value);
    json!({ "version": PROTOCOL_VERSION, "body": body })
}

// ---------------------------------------------------------------------------------------
// Checks

/// Returns the path of the first difference between two JSON values, or None when equal.
fn first_difference(expected: &Value, actual: &Value, path: &str) -> Option<String> {
    match (expected, actual) {
        (Value::Object(expected), Value::Object(actual)) => {
            let keys: BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
            keys.into_iter()
                .find_map(|key| match (expected.get(key), actual.get(key)) {
                    (Some(left), Some(right)) => {
                        first_difference(left, right, &format!("{path}.{key}"))
                    }
                    (left, right) => {
                        Some(format!("{path}.{key}: expected {left:?}, got {right:?}"))
                    }
                })
        }
        (Value::Array(left), Value::Array(right)) if left.len() == right.len() => left
            .iter()
            .zip(right)
            .enumerate()
            .find_map(|(index, (left, right))| {
                first_difference(left, right, &format!("{path}[{index}]"))
            }),
        _ if expected == actual => None,
        _ => Some(format!("{path}: expected {expected}, got {actual}")),
    }
}

fn read_file(path: &Path, fix: &str) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|error| {
        panic!(
            "failed to read golden vector {}: {error}; {fix}",
            path.display()
        )
    })
}

fn update_requested() -> bool {
    std::env::var(UPDATE_ENV).is_ok_and(|value| value == "1")
}

/// Lists the case names that have a `.bin` or `.json` file in `dir`.
fn names_on_disk(dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .map(|entry| entry.expect("read vector directory entry").path())
        .filter(|path| {
            matches!(
                path.extension().and_then(|ext| ext.to_str()),
                Some("bin" | "json")
            )
        })
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn cases_cover_every_frame_variant() {
    let kinds: BTreeSet<&str> = cases().iter().map(|(_, frame)| frame.kind()).collect();
    // One entry per member of the union in `capnp/frames.capnp`.
    assert_eq!(
        kinds.len(),
        31,
        "cases cover only these frame kinds: {kinds:?}"
    );

    let names: BTreeSet<&str> = cases().iter().map(|(name, _)| *name).collect();
    assert_eq!(names.len(), cases().len(), "case names must be unique");
}

#[test]
fn rust_vectors_match_committed_files() {
    let dir = vectors_dir().join("rust");
    let fix = format!("rerun with {UPDATE_ENV}=1 to rewrite the Rust vectors");
    if update_requested() {
        fs::create_dir_all(&dir).expect("create the Rust vector directory");
        for stale in names_on_disk(&dir) {
            let _ = fs::remove_file(dir.join(format!("{stale}.bin")));
            let _ = fs::remove_file(dir.join(format!("{stale}.json")));
        }
    }

    for (name, frame) in cases() {
        let bytes = codec::encode(&frame);
        let mut json = serde_json::to_string_pretty(&frame_json(&frame)).unwrap();
        json.push('\n');
        let bin_path = dir.join(format!("{name}.bin"));
        let json_path = dir.join(format!("{name}.json"));

        if update_requested() {
            fs::write(&bin_path, &bytes).expect("write .bin vector");
            fs::write(&json_path, &json).expect("write .json vector");
            continue;
        }
        let committed_bin = read_file(&bin_path, &fix);
        assert!(
            committed_bin == bytes,
            "{} differs from the Rust encoding; {fix}",
            bin_path.display()
        );
        let committed_json = String::from_utf8(read_file(&json_path, &fix)).unwrap();
        assert_eq!(
            committed_json,
            json,
            "{} is stale; {fix}",
            json_path.display()
        );
    }

    let expected: BTreeSet<String> = cases().iter().map(|(name, _)| name.to_string()).collect();
    let on_disk = names_on_disk(&dir);
    let extra: Vec<&String> = on_disk.difference(&expected).collect();
    assert!(
        extra.is_empty(),
        "{} has vectors of no case: {extra:?}; {fix}",
        dir.display()
    );
}

#[test]
fn js_vectors_decode_to_the_same_frames() {
    let dir = vectors_dir().join("js");
    let fix = format!("run `{JS_REGENERATE}` to rewrite the JavaScript vectors");

    for (name, frame) in cases() {
        let path = dir.join(format!("{name}.bin"));
        let bytes = read_file(&path, &fix);
        let decoded = codec::decode(&bytes)
            .unwrap_or_else(|error| panic!("Rust cannot decode {}: {error}", path.display()));

        // Field by field against the committed JSON that the JavaScript side encoded from,
        // so a failure names the field.
        let json_path = vectors_dir().join("rust").join(format!("{name}.json"));
        let expected: Value = serde_json::from_slice(&read_file(&json_path, &fix))
            .unwrap_or_else(|error| panic!("{} is not JSON: {error}", json_path.display()));
        let difference = first_difference(&expected, &frame_json(&decoded), "Frame");
        assert!(
            difference.is_none(),
            "{}: {}",
            path.display(),
            difference.unwrap()
        );
        assert_eq!(
            decoded,
            frame,
            "{} decodes to another frame",
            path.display()
        );
    }

    let expected: BTreeSet<String> = cases().iter().map(|(name, _)| name.to_string()).collect();
    let extra: Vec<String> = names_on_disk(&dir).difference(&expected).cloned().collect();
    assert!(
        extra.is_empty(),
        "{} has vectors of no case: {extra:?}; {fix}",
        dir.display()
    );
}
