//! Tests of the frame codec: round trips of every variant, rejection of bad input, and a
//! seeded search for inputs that make the decoder panic.

use super::*;
use crate::error::Rejection;
use crate::presence::{
    Heartbeat, PresenceEntry, PresenceSettings, PresenceState, PresenceSubscribe, PresenceUpdate,
    Typing,
};

/// Byte offsets inside an encoded single-segment frame: 8 bytes of segment table, 8 of
/// root pointer, then the root struct's data section with `version` first and the union
/// tag second.
const VERSION_OFFSET: usize = 16;
const UNION_TAG_OFFSET: usize = 18;

fn message(seq: u64, kind: MessageKind) -> Message {
    Message {
        conversation_id: 42,
        seq,
        message_id: 7_000 + seq,
        sender: "alice".into(),
        body: format!("body {seq} with ünïcode"),
        hlc: 1 << 20,
        server_time_ms: 1_767_225_600_123,
        kind,
    }
}

fn conversation() -> ConversationInfo {
    ConversationInfo {
        conversation_id: 9,
        kind: ConversationKind::Group,
        name: "climbers".into(),
        members: vec![
            Member {
                user_id: "alice".into(),
                role: Role::Admin,
                joined_seq: 1,
            },
            Member {
                user_id: "bob".into(),
                role: Role::Member,
                joined_seq: 3,
            },
        ],
        created_ms: 1_767_225_600_000,
        last_seq: 12,
    }
}

/// Builds one frame of every variant, with fields set away from their defaults.
pub(crate) fn sample_frames() -> Vec<Frame> {
    let mut direct = ConversationInfo::default();
    direct.members.push(Member::default());
    vec![
        Frame::Hello(Hello {
            token: "eyJ.token".into(),
            device_id: "phone-1".into(),
            client_version: "cli/0.1".into(),
        }),
        Frame::Welcome(Welcome {
            session_id: u64::MAX,
            user_id: "alice".into(),
            server_time_ms: 5,
            limits: Limits {
                max_message_bytes: 1,
                max_frame_bytes: 2,
                max_conversation_streams: 3,
                max_group_members: 4,
            },
            edges: vec!["127.0.0.1:4433".into(), "[::1]:4433".into()],
        }),
        Frame::Send(Send {
            conversation_id: 1,
            client_msg_id: "c-1".into(),
            body: "hi".into(),
            direct_peer: Some("bob".into()),
        }),
        Frame::Send(Send {
            conversation_id: 2,
            client_msg_id: "c-2".into(),
            body: String::new(),
            direct_peer: None,
        }),
        Frame::Send(Send {
            direct_peer: Some(String::new()),
            ..Send::default()
        }),
        Frame::SendAck(SendAck {
            conversation_id: 1,
            client_msg_id: "c-1".into(),
            message_id: 2,
            seq: 3,
            hlc: 4,
            server_time_ms: 5,
        }),
        Frame::Deliver(Deliver {
            message: message(4, MessageKind::System),
        }),
        Frame::DeliveryAck(DeliveryAck {
            conversation_id: 3,
            seq: 99,
        }),
        Frame::HistoryRequest(HistoryRequest {
            request_id: 1,
            conversation_id: 2,
            before_seq: 3,
            limit: 50,
        }),
        Frame::HistoryPage(HistoryPage {
            request_id: 8,
            conversation_id: 42,
            messages: vec![
                message(2, MessageKind::User),
                message(1, MessageKind::System),
            ],
            next_before_seq: 1,
        }),
        Frame::CreateGroup(CreateGroup {
            request_id: 3,
            name: "climbers".into(),
            members: vec!["bob".into(), "carol".into()],
        }),
        Frame::AddMembers(MembersChange {
            request_id: 4,
            conversation_id: 9,
            users: vec!["dave".into()],
        }),
        Frame::RemoveMembers(MembersChange {
            request_id: 5,
            conversation_id: 9,
            users: vec!["bob".into(), "carol".into()],
        }),
        Frame::Leave(Leave {
            request_id: 6,
            conversation_id: 9,
        }),
        Frame::ConversationReply(ConversationReply {
            request_id: 7,
            conversation: conversation(),
        }),
        Frame::ListConversations(ListConversations { request_id: 10 }),
        Frame::ConversationList(ConversationList {
            request_id: 11,
            conversations: vec![conversation(), direct],
        }),
        Frame::Error(ErrorFrame {
            request_id: 12,
            conversation_id: 13,
            client_msg_id: "c-9".into(),
            code: ErrorCode::RateLimited,
            message: "slow down".into(),
            retry_after_ms: 250,
        }),
        Frame::Error(ErrorFrame::from_rejection(&Rejection::new(
            ErrorCode::NotMember,
            "not a member",
        ))),
        Frame::Close(Close {
            code: 0x104,
            message: "draining".into(),
            retry_after_ms: 1_000,
            redirect: "edge-2:4433".into(),
        }),
        Frame::Heartbeat(Heartbeat {
            state: PresenceState::Away,
        }),
        Frame::PresenceSubscribe(PresenceSubscribe {
            request_id: 12,
            users: vec!["alice".into(), "bob".into()],
            open_conversations: vec![77, u64::MAX],
        }),
        Frame::PresenceUpdate(PresenceUpdate {
            request_id: 0,
            snapshot: true,
            entries: vec![
                PresenceEntry {
                    user: "alice".into(),
                    state: PresenceState::Online,
                    last_seen_ms: 1_700_000_000_000,
                },
                PresenceEntry {
                    user: "bob".into(),
                    state: PresenceState::Offline,
                    last_seen_ms: 0,
                },
            ],
        }),
        Frame::Typing(Typing {
            conversation_id: 77,
            user: "alice".into(),
            active: true,
        }),
        Frame::PresenceSettings(PresenceSettings {
            request_id: 13,
            hide_last_seen: true,
        }),
    ]
}

#[test]
fn every_variant_round_trips() {
    let frames = sample_frames();
    let mut kinds: Vec<&str> = frames.iter().map(Frame::kind).collect();
    kinds.dedup();
    assert_eq!(
        kinds.len(),
        22,
        "sample_frames must cover every Frame variant"
    );

    for frame in frames {
        let bytes = encode(&frame);
        let decoded = decode(&bytes).unwrap_or_else(|e| panic!("{} failed: {e}", frame.kind()));
        assert_eq!(decoded, frame);
    }
}

#[test]
fn wrong_version_is_rejected() {
    let mut bytes = encode(&Frame::ListConversations(ListConversations {
        request_id: 1,
    }));
    assert_eq!(
        bytes[VERSION_OFFSET..VERSION_OFFSET + 2],
        PROTOCOL_VERSION.to_le_bytes()
    );
    bytes[VERSION_OFFSET..VERSION_OFFSET + 2].copy_from_slice(&7u16.to_le_bytes());

    let error = decode(&bytes).unwrap_err();
    assert!(
        matches!(error, DecodeError::UnsupportedVersion(7)),
        "{error:?}"
    );
    assert_eq!(error.code(), ErrorCode::UnsupportedVersion);
}

#[test]
fn unknown_union_tag_is_unknown_frame() {
    let mut bytes = encode(&Frame::ListConversations(ListConversations {
        request_id: 1,
    }));
    bytes[UNION_TAG_OFFSET..UNION_TAG_OFFSET + 2].copy_from_slice(&99u16.to_le_bytes());

    let error = decode(&bytes).unwrap_err();
    assert!(matches!(error, DecodeError::UnknownFrame(99)), "{error:?}");
    assert_eq!(error.code(), ErrorCode::UnknownFrame);
}

#[test]
fn trailing_bytes_are_malformed() {
    let mut bytes = encode(&Frame::ListConversations(ListConversations {
        request_id: 1,
    }));
    bytes.extend_from_slice(&[0; 8]);
    assert!(matches!(decode(&bytes), Err(DecodeError::Malformed(_))));
}

#[test]
fn empty_input_is_malformed() {
    let error = decode(&[]).unwrap_err();
    assert!(matches!(error, DecodeError::Malformed(_)), "{error:?}");
    assert_eq!(error.code(), ErrorCode::MalformedFrame);
}

#[test]
fn huge_segment_claim_is_rejected() {
    // One segment that claims 2^31 words: the reader must reject it before allocating.
    let mut bytes = vec![0u8; 16];
    bytes[4..8].copy_from_slice(&(1u32 << 31).to_le_bytes());
    assert!(matches!(decode(&bytes), Err(DecodeError::Malformed(_))));
}

/// SplitMix64: a small seeded generator, so a failing case can be replayed by its index.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// Builds one hostile input: random bytes, a valid frame with random bytes overwritten,
/// or a valid frame cut short.
fn hostile_input(rng: &mut SplitMix, valid: &[Vec<u8>]) -> Vec<u8> {
    let base = &valid[rng.below(valid.len())];
    match rng.below(3) {
        0 => (0..rng.below(256)).map(|_| rng.next() as u8).collect(),
        1 => {
            let mut bytes = base.clone();
            for _ in 0..=rng.below(8) {
                let index = rng.below(bytes.len());
                bytes[index] = rng.next() as u8;
            }
            bytes
        }
        _ => base[..rng.below(base.len())].to_vec(),
    }
}

#[test]
fn hostile_inputs_never_panic() {
    let valid: Vec<Vec<u8>> = sample_frames().iter().map(encode).collect();
    let mut rng = SplitMix(0x7469_6469_6e67_7321);
    let mut rejected = 0;
    for case in 0..20_000 {
        let input = hostile_input(&mut rng, &valid);
        let outcome = std::panic::catch_unwind(|| decode(&input));
        let result = outcome.unwrap_or_else(|_| panic!("decode panicked on case {case}"));
        if result.is_err() {
            rejected += 1;
        }
    }
    // Random and truncated inputs are almost all invalid, so a decoder that accepted
    // everything would fail here.
    assert!(
        rejected > 10_000,
        "only {rejected} of 20000 hostile inputs were rejected"
    );
}

#[test]
fn truncations_are_rejected() {
    for frame in sample_frames() {
        let bytes = encode(&frame);
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len]).is_err(),
                "{} cut to {len} bytes",
                frame.kind()
            );
        }
    }
}

#[tokio::test]
async fn read_frame_reads_a_stream() {
    let frames = sample_frames();
    let mut stream = Vec::new();
    for frame in &frames {
        encode_framed(frame, &mut stream);
    }

    let mut reader = stream.as_slice();
    for frame in &frames {
        let read = read_frame(&mut reader, 1 << 20).await.unwrap();
        assert_eq!(read.as_ref(), Some(frame));
    }
    assert!(read_frame(&mut reader, 1 << 20).await.unwrap().is_none());
}

#[tokio::test]
async fn read_frame_rejects_oversized_length_before_body() {
    // The prefix claims 1 MiB and no body follows: the reader must fail on the length
    // alone instead of waiting for or buffering the body.
    let prefix = (1u32 << 20).to_be_bytes();
    let mut reader = &prefix[..];
    let error = read_frame(&mut reader, 1024).await.unwrap_err();
    assert!(
        matches!(
            error,
            ReadError::Decode(DecodeError::TooLarge {
                len: 1_048_576,
                max: 1024
            })
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn read_frame_reports_truncation() {
    let mut stream = Vec::new();
    encode_framed(&sample_frames()[0], &mut stream);

    for len in [
        1,
        LENGTH_PREFIX_BYTES - 1,
        LENGTH_PREFIX_BYTES,
        stream.len() - 1,
    ] {
        let mut reader = &stream[..len];
        let error = read_frame(&mut reader, 1 << 20).await.unwrap_err();
        assert!(
            matches!(error, ReadError::Truncated),
            "cut at {len}: {error:?}"
        );
    }
}

#[tokio::test]
async fn read_frame_passes_decode_errors() {
    let mut stream = Vec::new();
    stream.extend_from_slice(&8u32.to_be_bytes());
    stream.extend_from_slice(&[0xff; 8]);
    let mut reader = stream.as_slice();
    let error = read_frame(&mut reader, 1024).await.unwrap_err();
    assert!(
        matches!(error, ReadError::Decode(DecodeError::Malformed(_))),
        "{error:?}"
    );
}

#[test]
fn receipt_frames_round_trip() {
    use crate::receipt::*;

    let receipt = MemberReceipt {
        user_id: "bob".into(),
        delivered_seq: 9,
        read_seq: 7,
    };
    let frames = vec![
        Frame::MarkRead(MarkRead {
            request_id: 1,
            conversation_id: u64::MAX,
            seq: 7,
        }),
        Frame::ReceiptsRequest(ReceiptsRequest {
            request_id: 2,
            conversation_id: 5,
        }),
        Frame::ReceiptList(ReceiptList {
            request_id: 2,
            conversation_id: 5,
            last_seq: 9,
            receipts: vec![receipt.clone()],
        }),
        Frame::ReceiptUpdate(ReceiptUpdate {
            conversation_id: 5,
            receipt,
            member_count: 499,
            counts: vec![SeqReceiptCount {
                seq: 9,
                delivered: 300,
                read: 12,
            }],
        }),
        Frame::InboxSync(InboxSync {
            request_id: 3,
            after_cursor: 40,
            limit: 10,
            conversation_id: 0,
        }),
        Frame::InboxPage(InboxPage {
            request_id: 3,
            entries: vec![InboxEntry {
                conversation_id: 5,
                last_seq: 9,
                read_seq: 7,
                unread_count: 2,
                marked_unread: true,
                cursor: 41,
                member: true,
            }],
            cursor: 41,
            complete: false,
        }),
        Frame::MarkUnread(MarkUnread {
            request_id: 4,
            conversation_id: 5,
            unread: true,
        }),
        Frame::GapRequest(GapRequest {
            request_id: 5,
            conversation_id: 5,
            after_seq: 3,
            limit: 2,
        }),
        Frame::GapPage(GapPage {
            request_id: 5,
            conversation_id: 5,
            messages: vec![
                message(4, MessageKind::User),
                message(5, MessageKind::System),
            ],
            complete: false,
            next_after_seq: 5,
            last_seq: 9,
        }),
    ];
    for frame in frames {
        let decoded = decode(&encode(&frame)).unwrap_or_else(|e| panic!("{}: {e}", frame.kind()));
        assert_eq!(decoded, frame);
    }
}
