//! Round-trip tests of the mesh codec through real Cap'n Proto messages.

use capnp::message::{Builder, HeapAllocator, ReaderOptions};
use capnp::serialize;

use super::*;
use crate::frame::{
    ConversationInfo, ConversationKind, CreateGroup, HistoryPage, HistoryRequest, Leave, Member,
    MembersChange, Message, MessageKind, Role, SendAck,
};
use crate::presence::{PresenceEntry, PresenceState};

/// Serialises `message` to bytes and reads it back, as the RPC transport would.
fn through_wire(
    message: &Builder<HeapAllocator>,
) -> capnp::message::Reader<serialize::OwnedSegments> {
    let bytes = serialize::write_message_to_words(message);
    serialize::read_message(&mut bytes.as_slice(), ReaderOptions::new()).expect("valid message")
}

fn stamp(n: u64) -> Stamp {
    Stamp {
        message_id: n,
        hlc: n << 16,
        server_time_ms: 1_767_225_600_000 + n,
    }
}

fn message(seq: u64) -> Message {
    Message {
        conversation_id: 77,
        seq,
        message_id: 1_000 + seq,
        sender: "alice".into(),
        body: "hello".into(),
        hlc: 3,
        server_time_ms: 4,
        kind: MessageKind::User,
    }
}

fn conversation(id: u64) -> ConversationInfo {
    ConversationInfo {
        conversation_id: id,
        kind: ConversationKind::Group,
        name: "team".into(),
        members: vec![Member {
            user_id: "alice".into(),
            role: Role::Admin,
            joined_seq: 1,
        }],
        created_ms: 10,
        last_seq: 20,
    }
}

fn sample_requests() -> Vec<OwnerRequest> {
    let change = MembersChange {
        request_id: 4,
        conversation_id: 77,
        users: vec!["bob".into(), "carol".into()],
    };
    vec![
        OwnerRequest::Send(SendRequest {
            sender: "alice".into(),
            device_id: "phone".into(),
            conversation_id: 77,
            client_msg_id: "c-1".into(),
            body: "hi".into(),
            direct_peer: Some("bob".into()),
            message_id: 5,
            hlc: 6,
            server_time_ms: 7,
        }),
        OwnerRequest::Send(SendRequest::default()),
        OwnerRequest::History {
            user: "alice".into(),
            request: HistoryRequest {
                request_id: 1,
                conversation_id: 77,
                before_seq: 10,
                limit: 25,
            },
        },
        OwnerRequest::CreateGroup {
            user: "alice".into(),
            request: CreateGroup {
                request_id: 2,
                name: "team".into(),
                members: vec!["bob".into()],
            },
            conversation_id: 123,
            stamp: stamp(1),
        },
        OwnerRequest::AddMembers {
            user: "alice".into(),
            request: change.clone(),
            stamp: stamp(2),
        },
        OwnerRequest::RemoveMembers {
            user: "alice".into(),
            request: change,
            stamp: stamp(3),
        },
        OwnerRequest::Leave {
            user: "bob".into(),
            request: Leave {
                request_id: 5,
                conversation_id: 77,
            },
            stamp: stamp(4),
        },
        OwnerRequest::ListConversations {
            user: "carol".into(),
        },
        OwnerRequest::LastSeen {
            user: "carol".into(),
        },
        OwnerRequest::RecordLastSeen {
            user: "carol".into(),
            at_ms: 1_700_000_000_000,
        },
        OwnerRequest::PresenceSettings {
            user: "carol".into(),
            hide_last_seen: true,
        },
        OwnerRequest::PresenceReport(crate::mesh::PresenceReport {
            edge_id: "edge-1".into(),
            entries: vec![presence_entry("carol", PresenceState::Away)],
            lease_ms: 30_000,
        }),
    ]
}

fn presence_entry(user: &str, state: PresenceState) -> PresenceEntry {
    PresenceEntry {
        user: user.into(),
        state,
        last_seen_ms: 1_700_000_000_000,
    }
}

fn sample_results() -> Vec<Result<OwnerReply, Rejection>> {
    vec![
        Ok(OwnerReply::SendAck(SendAck {
            conversation_id: 77,
            client_msg_id: "c-1".into(),
            message_id: 5,
            seq: 9,
            hlc: 6,
            server_time_ms: 7,
        })),
        Ok(OwnerReply::HistoryPage(HistoryPage {
            request_id: 1,
            conversation_id: 77,
            messages: vec![message(2), message(1)],
            next_before_seq: 0,
        })),
        Ok(OwnerReply::Conversation(conversation(1))),
        Ok(OwnerReply::Conversations(vec![
            conversation(1),
            conversation(2),
        ])),
        Ok(OwnerReply::Conversations(Vec::new())),
        Ok(OwnerReply::Accepted),
        Ok(OwnerReply::LastSeen(crate::mesh::LastSeenRow {
            user: "carol".into(),
            last_seen_ms: 1_700_000_000_000,
            hide_last_seen: true,
        })),
        Err(Rejection::new(
            ErrorCode::NotMember,
            "alice is not a member of 77",
        )),
        Err(Rejection::retry(
            ErrorCode::StorageFailed,
            "disk full",
            1_500,
        )),
    ]
}

#[test]
fn owner_requests_round_trip() {
    for request in sample_requests() {
        let mut message = Builder::new_default();
        write_owner_request(message.init_root(), &request);

        let reader = through_wire(&message);
        let decoded = read_owner_request(reader.get_root().unwrap()).unwrap();
        assert_eq!(decoded, request);
    }
}

#[test]
fn call_results_round_trip() {
    for result in sample_results() {
        let mut message = Builder::new_default();
        write_call_result(message.init_root(), &result);

        let reader = through_wire(&message);
        let decoded = read_call_result(reader.get_root().unwrap()).unwrap();
        assert_eq!(decoded, result);
    }
}

#[test]
fn every_error_code_crosses_as_its_number() {
    for code in ErrorCode::ALL {
        let rejection = Rejection::retry(*code, code.meaning(), 42);
        let mut message = Builder::new_default();
        write_rejection(message.init_root(), &rejection);

        let reader = through_wire(&message);
        let root: wire::rejection::Reader<'_> = reader.get_root().unwrap();
        assert_eq!(root.get_code(), code.as_u16());
        assert_eq!(read_rejection(root).unwrap(), rejection);
    }
}

#[test]
fn unknown_rejection_code_becomes_internal() {
    let mut message = Builder::new_default();
    let mut root: wire::rejection::Builder<'_> = message.init_root();
    root.set_code(60_000);
    root.set_message("from a newer owner");

    let reader = through_wire(&message);
    let rejection = read_rejection(reader.get_root().unwrap()).unwrap();
    assert_eq!(rejection.code, ErrorCode::Internal);
    assert_eq!(rejection.message, "from a newer owner");
}

#[test]
fn deliveries_round_trip() {
    let deliveries = vec![
        Delivery {
            message: message(1),
            recipients: vec!["alice".into(), "bob".into()],
            origin_device: "phone".into(),
            receipt: None,
            presence: Vec::new(),
            presence_snapshot: false,
            position: Some(LogPosition {
                file: 3,
                epoch: u64::MAX - 5,
                offset: 70_000,
            }),
        },
        Delivery {
            message: message(2),
            recipients: Vec::new(),
            origin_device: String::new(),
            receipt: None,
            presence: Vec::new(),
            presence_snapshot: false,
            position: None,
        },
        Delivery {
            message: Message::default(),
            recipients: vec!["carol".into()],
            origin_device: String::new(),
            receipt: Some(crate::receipt::ReceiptUpdate {
                conversation_id: 7,
                receipt: crate::receipt::MemberReceipt {
                    user_id: "bob".into(),
                    delivered_seq: 4,
                    read_seq: 3,
                },
                member_count: 2,
                counts: Vec::new(),
            }),
            presence: Vec::new(),
            presence_snapshot: false,
            position: None,
        },
        Delivery {
            message: Message::default(),
            recipients: Vec::new(),
            origin_device: String::new(),
            receipt: None,
            presence: vec![
                presence_entry("dana", PresenceState::Online),
                presence_entry("erin", PresenceState::Offline),
            ],
            presence_snapshot: true,
            position: None,
        },
    ];
    let mut message = Builder::new_default();
    let list = message.initn_root(deliveries.len() as u32);
    write_deliveries(list, &deliveries);

    let reader = through_wire(&message);
    let decoded = read_deliveries(reader.get_root().unwrap()).unwrap();
    assert_eq!(decoded, deliveries);
}

#[test]
fn unknown_request_kind_is_an_error() {
    let mut message = Builder::new_default();
    write_owner_request(message.init_root(), &sample_requests()[0]);
    let mut bytes = serialize::write_message_to_words(&message);
    // The union tag of OwnerRequest is the first 16 bits of its data section, which
    // starts after 8 bytes of segment table and 8 of root pointer.
    bytes[16..18].copy_from_slice(&500u16.to_le_bytes());

    let reader = serialize::read_message(&mut bytes.as_slice(), ReaderOptions::new()).unwrap();
    let error = read_owner_request(reader.get_root().unwrap()).unwrap_err();
    assert!(
        error.to_string().contains("unknown owner request kind 500"),
        "{error}"
    );
}

#[test]
fn inbox_updates_round_trip() {
    let updates = vec![
        InboxUpdate {
            user: "alice".into(),
            conversation_id: 7,
            last_seq: 3,
            change: InboxChange::Join,
        },
        InboxUpdate {
            user: "bob".into(),
            conversation_id: u64::MAX,
            last_seq: 9,
            change: InboxChange::Advance,
        },
        InboxUpdate {
            user: "carol".into(),
            conversation_id: 1,
            last_seq: 0,
            change: InboxChange::Remove,
        },
    ];
    let mut message = Builder::new_default();
    let list = message.initn_root(updates.len() as u32);
    write_inbox_updates(list, &updates);

    let reader = through_wire(&message);
    let decoded = read_inbox_updates(reader.get_root().unwrap()).unwrap();
    assert_eq!(decoded, updates);
}

#[test]
fn registration_round_trip() {
    use crate::generated::mesh_capnp::owner_v1::register_users_params;

    let registration = Registration {
        edge_id: "edge-2".into(),
        replace: true,
        added: vec!["alice".into(), "bob".into()],
        removed: vec!["carol".into()],
        lease_ms: 30_000,
    };
    let mut message = Builder::new_default();
    write_registration(
        message.init_root::<register_users_params::Builder<'_>>(),
        &registration,
    );

    let reader = through_wire(&message);
    let decoded = read_registration(reader.get_root().unwrap()).unwrap();
    assert_eq!(decoded, registration);
}

#[test]
fn log_positions_round_trip() {
    let positions = vec![
        LogPosition {
            file: 0,
            epoch: 1,
            offset: 0,
        },
        LogPosition {
            file: u16::MAX,
            epoch: u64::MAX,
            offset: u64::MAX,
        },
    ];
    let mut message = Builder::new_default();
    let list = message.initn_root(positions.len() as u32);
    write_log_positions(list, &positions);

    let reader = through_wire(&message);
    assert_eq!(read_log_positions(reader.get_root().unwrap()), positions);
}
