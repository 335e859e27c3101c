//! Storage encoding of delivery log entries. A child module of `record`, so it shares that
//! module's varint encoder and its format rules.

use super::{DecodeError, Decoder, Encoder};

/// One committed message as the delivery log keeps it: enough to rebuild its delivery
/// from the message row and the conversation row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct LogRecord {
    pub conversation_id: u64,
    pub seq: u64,
    /// The device that sent the message; empty for system messages.
    pub origin_device: String,
    /// Recipients that were no longer members once the batch committed, such as users
    /// removed by this very message. The other recipients are the members whose
    /// `joined_seq` is at most `seq`.
    pub departed: Vec<String>,
}

impl LogRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Encoder::new();
        out.varint(self.conversation_id);
        out.varint(self.seq);
        out.str(&self.origin_device);
        out.varint(self.departed.len() as u64);
        for user in &self.departed {
            out.str(user);
        }
        out.finish()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut input = Decoder::new(bytes)?;
        let conversation_id = input.varint("conversation_id")?;
        let seq = input.varint("seq")?;
        let origin_device = input.string("origin_device")?;
        let count = input.varint("departed count")?;
        // Each user id takes at least one byte, which bounds a damaged count.
        let mut departed = Vec::with_capacity(count.min(input.remaining() as u64) as usize);
        for _ in 0..count {
            departed.push(input.string("departed user")?);
        }
        input.finish()?;
        Ok(LogRecord {
            conversation_id,
            seq,
            origin_device,
            departed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_record_round_trips() {
        let record = LogRecord {
            conversation_id: u64::MAX,
            seq: 300,
            origin_device: "phone".into(),
            departed: vec!["bob".into(), "carol".into()],
        };
        assert_eq!(LogRecord::decode(&record.encode()).unwrap(), record);
    }

    #[test]
    fn damaged_departed_count_is_rejected() {
        let mut bytes = LogRecord::default().encode();
        // The last byte is the departed count; claim a million users with no bytes left.
        bytes.pop();
        bytes.extend_from_slice(&[0xc0, 0x84, 0x3d]);
        assert!(matches!(
            LogRecord::decode(&bytes),
            Err(DecodeError::Truncated { .. })
        ));
    }
}
