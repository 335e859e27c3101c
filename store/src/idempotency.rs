//! Idempotency keys of sends: lookup, insert and the expiry sweep.

use redb::ReadableTable;
use sha2::{Digest, Sha256};

use crate::batch::{Batch, StoreResult};
use crate::record::IdempotencyRecord;

/// Maximum number of expired keys one batch removes, so a backlog of expired keys never
/// makes one commit slow.
pub(crate) const SWEEP_CHUNK: usize = 256;

/// Identifies one send for idempotency.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdempotencyKey<'r> {
    pub vshard: u16,
    pub conversation_id: u64,
    pub sender: &'r str,
    pub client_msg_id: &'r str,
}

pub(crate) fn body_digest(body: &str) -> [u8; 32] {
    Sha256::digest(body.as_bytes()).into()
}

impl Batch<'_, '_> {
    pub(crate) fn idempotency_record(
        &self,
        key: IdempotencyKey<'_>,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        let row = self.tables.idempotency.get((
            key.vshard,
            key.conversation_id,
            key.sender,
            key.client_msg_id,
        ))?;
        match row {
            Some(bytes) => Ok(Some(IdempotencyRecord::decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    pub(crate) fn insert_idempotency(
        &mut self,
        key: IdempotencyKey<'_>,
        record: &IdempotencyRecord,
    ) -> StoreResult<()> {
        let expires_ms = record
            .created_ms
            .saturating_add(self.ctx.idempotency_window_ms);
        self.tables.idempotency.insert(
            (
                key.vshard,
                key.conversation_id,
                key.sender,
                key.client_msg_id,
            ),
            record.encode().as_slice(),
        )?;
        self.tables.expiry.insert(
            (
                expires_ms,
                key.vshard,
                key.conversation_id,
                key.sender,
                key.client_msg_id,
            ),
            (),
        )?;
        Ok(())
    }

    /// Removes up to [`SWEEP_CHUNK`] keys whose window ended before `now_ms`; returns how
    /// many it removed.
    pub(crate) fn sweep_idempotency(&mut self) -> StoreResult<usize> {
        let mut expired = Vec::new();
        for entry in self
            .tables
            .expiry
            .range(..(self.now_ms, 0u16, 0u64, "", ""))?
        {
            if expired.len() == SWEEP_CHUNK {
                break;
            }
            let (key, _) = entry?;
            let (expires_ms, vshard, conversation_id, sender, client_msg_id) = key.value();
            expired.push((
                expires_ms,
                vshard,
                conversation_id,
                sender.to_owned(),
                client_msg_id.to_owned(),
            ));
        }

        for (expires_ms, vshard, conversation_id, sender, client_msg_id) in &expired {
            let (sender, client_msg_id) = (sender.as_str(), client_msg_id.as_str());
            self.tables.expiry.remove((
                *expires_ms,
                *vshard,
                *conversation_id,
                sender,
                client_msg_id,
            ))?;
            self.tables
                .idempotency
                .remove((*vshard, *conversation_id, sender, client_msg_id))?;
        }
        if !expired.is_empty() {
            tracing::debug!(removed = expired.len(), "swept expired idempotency keys");
        }
        Ok(expired.len())
    }
}
