//! Versioned binary encoding of the stored records.
//!
//! Every record starts with a one-byte format version. Integers are unsigned LEB128
//! varints, strings and byte strings carry a varint length, enums are one byte. The
//! encoding has no maps or floats, so equal records always encode to equal bytes.

use tidings_schema::frame::{
    ConversationInfo, ConversationKind, Member, Message, MessageKind, Role,
};

/// Format version written at the start of every record.
const VERSION: u8 = 1;

#[path = "receipt_record.rs"]
mod receipt_record;
pub(crate) use receipt_record::{InboxMeta, ReceiptRecord};

#[path = "log_record.rs"]
mod log_record;
pub(crate) use log_record::LogRecord;

/// Error from decoding a stored record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("record ends early while reading {field}")]
    Truncated { field: &'static str },
    #[error("record has format version {0}, expected {VERSION}")]
    UnknownVersion(u8),
    #[error("record field {field} has invalid value {value}")]
    InvalidValue { field: &'static str, value: u64 },
    #[error("record field {field} is not valid UTF-8")]
    InvalidUtf8 { field: &'static str },
    #[error("record has {0} unexpected trailing bytes")]
    TrailingBytes(usize),
}

/// Appends fields to a record buffer.
struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    fn new() -> Self {
        Encoder { buf: vec![VERSION] }
    }

    fn u8(&mut self, value: u8) {
        self.buf.push(value);
    }

    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.buf.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.buf.push(value as u8);
    }

    fn bytes(&mut self, value: &[u8]) {
        self.varint(value.len() as u64);
        self.buf.extend_from_slice(value);
    }

    fn str(&mut self, value: &str) {
        self.bytes(value.as_bytes());
    }

    fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads fields from a record buffer in the order they were written.
struct Decoder<'a> {
    rest: &'a [u8],
}

impl<'a> Decoder<'a> {
    fn new(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let mut decoder = Decoder { rest: bytes };
        let version = decoder.u8("version")?;
        if version != VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        Ok(decoder)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        let (&first, rest) = self
            .rest
            .split_first()
            .ok_or(DecodeError::Truncated { field })?;
        self.rest = rest;
        Ok(first)
    }

    fn varint(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8(field)?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(DecodeError::InvalidValue { field, value: bits });
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::InvalidValue { field, value })
    }

    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.varint(field)?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated { field })?;
        if len > self.rest.len() {
            return Err(DecodeError::Truncated { field });
        }
        let (value, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(value)
    }

    fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let bytes = self.bytes(field)?;
        let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 { field })?;
        Ok(text.to_owned())
    }

    fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.rest.len()))
        }
    }
}

/// A stored message; the conversation id and seq are in its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MessageRecord {
    pub kind: MessageKind,
    pub message_id: u64,
    pub hlc: u64,
    pub server_time_ms: u64,
    pub sender: String,
    pub body: String,
}

impl MessageRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Encoder::new();
        out.u8(match self.kind {
            MessageKind::User => 0,
            MessageKind::System => 1,
        });
        out.varint(self.message_id);
        out.varint(self.hlc);
        out.varint(self.server_time_ms);
        out.str(&self.sender);
        out.str(&self.body);
        out.finish()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut input = Decoder::new(bytes)?;
        let kind = match input.u8("kind")? {
            0 => MessageKind::User,
            1 => MessageKind::System,
            other => {
                return Err(DecodeError::InvalidValue {
                    field: "kind",
                    value: u64::from(other),
                });
            }
        };
        let record = MessageRecord {
            kind,
            message_id: input.varint("message_id")?,
            hlc: input.varint("hlc")?,
            server_time_ms: input.varint("server_time_ms")?,
            sender: input.string("sender")?,
            body: input.string("body")?,
        };
        input.finish()?;
        Ok(record)
    }

    pub(crate) fn into_message(self, conversation_id: u64, seq: u64) -> Message {
        Message {
            conversation_id,
            seq,
            message_id: self.message_id,
            sender: self.sender,
            body: self.body,
            hlc: self.hlc,
            server_time_ms: self.server_time_ms,
            kind: self.kind,
        }
    }
}

/// What a committed send returned, kept so that a retry gets the same acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdempotencyRecord {
    pub seq: u64,
    pub message_id: u64,
    pub hlc: u64,
    pub server_time_ms: u64,
    /// SHA-256 of the body, to tell a retry from a different message under the same key.
    pub body_digest: [u8; 32],
    /// Owner wall-clock time of the commit, milliseconds since the Unix epoch.
    pub created_ms: u64,
}

impl IdempotencyRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Encoder::new();
        out.varint(self.seq);
        out.varint(self.message_id);
        out.varint(self.hlc);
        out.varint(self.server_time_ms);
        out.bytes(&self.body_digest);
        out.varint(self.created_ms);
        out.finish()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut input = Decoder::new(bytes)?;
        let seq = input.varint("seq")?;
        let message_id = input.varint("message_id")?;
        let hlc = input.varint("hlc")?;
        let server_time_ms = input.varint("server_time_ms")?;
        let digest = input.bytes("body_digest")?;
        let body_digest: [u8; 32] = digest.try_into().map_err(|_| DecodeError::InvalidValue {
            field: "body_digest length",
            value: digest.len() as u64,
        })?;
        let created_ms = input.varint("created_ms")?;
        input.finish()?;
        Ok(IdempotencyRecord {
            seq,
            message_id,
            hlc,
            server_time_ms,
            body_digest,
            created_ms,
        })
    }
}

/// A conversation's kind, name, members and position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConversationRecord {
    pub kind: ConversationKind,
    pub name: String,
    pub created_ms: u64,
    pub last_seq: u64,
    /// Members in the order they joined.
    pub members: Vec<Member>,
}

impl ConversationRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Encoder::new();
        out.u8(match self.kind {
            ConversationKind::Direct => 0,
            ConversationKind::Group => 1,
        });
        out.str(&self.name);
        out.varint(self.created_ms);
        out.varint(self.last_seq);
        out.varint(self.members.len() as u64);
        for member in &self.members {
            out.str(&member.user_id);
            out.u8(match member.role {
                Role::Member => 0,
                Role::Admin => 1,
            });
            out.varint(member.joined_seq);
        }
        out.finish()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut input = Decoder::new(bytes)?;
        let kind = match input.u8("kind")? {
            0 => ConversationKind::Direct,
            1 => ConversationKind::Group,
            other => return Err(invalid("kind", other)),
        };
        let name = input.string("name")?;
        let created_ms = input.varint("created_ms")?;
        let last_seq = input.varint("last_seq")?;
        let count = input.varint("member count")?;

        // NOTE: the count comes from disk, so the capacity is bounded by what the
        // remaining bytes could hold (each member takes at least three bytes).
        let capacity = usize::try_from(count)
            .unwrap_or(usize::MAX)
            .min(input.rest.len() / 3);
        let mut members = Vec::with_capacity(capacity);
        for _ in 0..count {
            let user_id = input.string("member user_id")?;
            let role = match input.u8("member role")? {
                0 => Role::Member,
                1 => Role::Admin,
                other => return Err(invalid("member role", other)),
            };
            let joined_seq = input.varint("member joined_seq")?;
            members.push(Member {
                user_id,
                role,
                joined_seq,
            });
        }
        input.finish()?;
        Ok(ConversationRecord {
            kind,
            name,
            created_ms,
            last_seq,
            members,
        })
    }

    pub(crate) fn member(&self, user_id: &str) -> Option<&Member> {
        self.members.iter().find(|member| member.user_id == user_id)
    }

    pub(crate) fn member_ids(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|member| member.user_id.clone())
            .collect()
    }

    pub(crate) fn info(&self, conversation_id: u64) -> ConversationInfo {
        ConversationInfo {
            conversation_id,
            kind: self.kind,
            name: self.name.clone(),
            members: self.members.clone(),
            created_ms: self.created_ms,
            last_seq: self.last_seq,
        }
    }
}

/// A user's entry for one conversation in their inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct InboxRecord {
    /// Last seq known here; it may lag the conversation row, which is authoritative.
    pub last_seq: u64,
    pub last_read_seq: u64,
    pub muted: bool,
}

impl InboxRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Encoder::new();
        out.varint(self.last_seq);
        out.varint(self.last_read_seq);
        out.u8(u8::from(self.muted));
        out.finish()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut input = Decoder::new(bytes)?;
        let last_seq = input.varint("last_seq")?;
        let last_read_seq = input.varint("last_read_seq")?;
        let muted = match input.u8("muted")? {
            0 => false,
            1 => true,
            other => return Err(invalid("muted", other)),
        };
        input.finish()?;
        Ok(InboxRecord {
            last_seq,
            last_read_seq,
            muted,
        })
    }
}

fn invalid(field: &'static str, value: u8) -> DecodeError {
    DecodeError::InvalidValue {
        field,
        value: u64::from(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_message() -> MessageRecord {
        MessageRecord {
            kind: MessageKind::User,
            message_id: u64::MAX,
            hlc: 1 << 40,
            server_time_ms: 1_767_225_600_123,
            sender: "alice".into(),
            body: "héllo 👋".into(),
        }
    }

    fn sample_conversation() -> ConversationRecord {
        ConversationRecord {
            kind: ConversationKind::Group,
            name: "team".into(),
            created_ms: 42,
            last_seq: 300,
            members: vec![
                Member {
                    user_id: "alice".into(),
                    role: Role::Admin,
                    joined_seq: 1,
                },
                Member {
                    user_id: "bob".into(),
                    role: Role::Member,
                    joined_seq: 7,
                },
            ],
        }
    }

    #[test]
    fn records_round_trip() {
        let message = sample_message();
        assert_eq!(MessageRecord::decode(&message.encode()).unwrap(), message);

        let key = IdempotencyRecord {
            seq: 9,
            message_id: 10,
            hlc: 11,
            server_time_ms: 12,
            body_digest: [7; 32],
            created_ms: 13,
        };
        assert_eq!(IdempotencyRecord::decode(&key.encode()).unwrap(), key);

        let conversation = sample_conversation();
        assert_eq!(
            ConversationRecord::decode(&conversation.encode()).unwrap(),
            conversation
        );

        let inbox = InboxRecord {
            last_seq: 5,
            last_read_seq: 3,
            muted: true,
        };
        assert_eq!(InboxRecord::decode(&inbox.encode()).unwrap(), inbox);
    }

    /// The exact bytes are part of the storage format: a change here needs a new version.
    #[test]
    fn inbox_encoding_is_fixed() {
        let inbox = InboxRecord {
            last_seq: 300,
            last_read_seq: 1,
            muted: false,
        };
        assert_eq!(inbox.encode(), vec![1, 0xac, 0x02, 1, 0]);
    }

    #[test]
    fn encoding_is_deterministic() {
        assert_eq!(
            sample_conversation().encode(),
            sample_conversation().encode()
        );
        assert_eq!(sample_message().encode(), sample_message().encode());
    }

    #[test]
    fn decode_rejects_damage() {
        let bytes = sample_conversation().encode();
        for len in 0..bytes.len() {
            assert!(
                ConversationRecord::decode(&bytes[..len]).is_err(),
                "prefix {len}"
            );
        }

        let mut wrong_version = bytes.clone();
        wrong_version[0] = 2;
        assert_eq!(
            ConversationRecord::decode(&wrong_version),
            Err(DecodeError::UnknownVersion(2))
        );

        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            ConversationRecord::decode(&trailing),
            Err(DecodeError::TrailingBytes(1))
        );

        let overlong = [
            VERSION, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ];
        assert!(InboxRecord::decode(&overlong).is_err());
    }

    #[test]
    fn decode_rejects_bad_utf8() {
        let mut message = sample_message();
        message.body = String::new();
        let mut bytes = message.encode();
        // Replace the empty body with one byte that is not UTF-8.
        let last = bytes.len() - 1;
        bytes[last] = 1;
        bytes.push(0xff);
        assert_eq!(
            MessageRecord::decode(&bytes),
            Err(DecodeError::InvalidUtf8 { field: "body" })
        );
    }
}
