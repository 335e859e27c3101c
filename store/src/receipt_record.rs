//! Storage encoding of receipt rows and inbox metadata. A child module of `record`, so it
//! shares that module's varint encoder and its format rules.

use super::{DecodeError, Decoder, Encoder, invalid};

/// One member's receipts in one conversation. `read_seq` never exceeds `delivered_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ReceiptRecord {
    pub delivered_seq: u64,
    pub read_seq: u64,
}

impl ReceiptRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Encoder::new();
        out.varint(self.delivered_seq);
        out.varint(self.read_seq);
        out.finish()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut input = Decoder::new(bytes)?;
        let delivered_seq = input.varint("delivered_seq")?;
        let read_seq = input.varint("read_seq")?;
        input.finish()?;
        Ok(ReceiptRecord {
            delivered_seq,
            read_seq,
        })
    }
}

/// The change cursor and mark-unread flag of one inbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct InboxMeta {
    pub cursor: u64,
    pub marked_unread: bool,
}

impl InboxMeta {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Encoder::new();
        out.varint(self.cursor);
        out.u8(u8::from(self.marked_unread));
        out.finish()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut input = Decoder::new(bytes)?;
        let cursor = input.varint("cursor")?;
        let marked_unread = match input.u8("marked_unread")? {
            0 => false,
            1 => true,
            other => return Err(invalid("marked_unread", other)),
        };
        input.finish()?;
        Ok(InboxMeta {
            cursor,
            marked_unread,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_record_round_trips() {
        let record = ReceiptRecord {
            delivered_seq: 300,
            read_seq: 7,
        };
        assert_eq!(ReceiptRecord::decode(&record.encode()).unwrap(), record);
    }

    /// The exact bytes are part of the storage format: a change here needs a new version.
    #[test]
    fn inbox_meta_encoding_is_fixed() {
        let meta = InboxMeta {
            cursor: 300,
            marked_unread: true,
        };
        assert_eq!(meta.encode(), vec![1, 0xac, 0x02, 1]);
        assert_eq!(InboxMeta::decode(&meta.encode()).unwrap(), meta);
        assert!(
            InboxMeta::decode(&[1, 1, 2]).is_err(),
            "flag must be 0 or 1"
        );
    }
}
