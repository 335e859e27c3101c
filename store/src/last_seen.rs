//! Last seen rows: each user's last activity and whether they hide it, in the user's home
//! shard.
//!
//! NOTE: a stored time only moves forward and is clamped to the owner's clock at commit,
//! so it is never later than the owner's now and repeated reads return the same value
//! until a later activity is recorded.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tidings_schema::mesh::{LastSeenRow, OwnerReply};

use crate::batch::{Batch, OpOutcome, OpResult, StoreResult};
use crate::tables::Placement;

/// `(user home vshard, user_id)` → `(last seen ms since the Unix epoch, hide last seen)`.
pub(crate) const LAST_SEEN: TableDefinition<'static, (u16, &str), (u64, bool)> =
    TableDefinition::new("last_seen");

/// A change to one last seen row, carried out by the writer of the user's home file.
#[derive(Debug)]
pub(crate) enum LastSeenOp {
    /// Raises the time to `at_ms`, clamped to the batch's clock.
    Record { user: String, at_ms: u64 },
    /// Stores whether the user hides their last seen time.
    Settings { user: String, hide_last_seen: bool },
}

impl LastSeenOp {
    pub(crate) fn user(&self) -> &str {
        match self {
            LastSeenOp::Record { user, .. } | LastSeenOp::Settings { user, .. } => user,
        }
    }
}

impl Batch<'_, '_> {
    /// Applies one last seen change and replies with the stored row.
    pub(crate) fn apply_last_seen(&mut self, op: &LastSeenOp) -> OpResult {
        let user = op.user();
        let (vshard, _) = self.ctx.placement.user(user);
        let (mut last_seen_ms, mut hide_last_seen) = self
            .tables
            .last_seen
            .get((vshard, user))?
            .map(|row| row.value())
            .unwrap_or((0, false));
        match op {
            LastSeenOp::Record { at_ms, .. } => {
                last_seen_ms = last_seen_ms.max((*at_ms).min(self.now_ms));
            }
            LastSeenOp::Settings {
                hide_last_seen: hide,
                ..
            } => hide_last_seen = *hide,
        }
        self.tables
            .last_seen
            .insert((vshard, user), (last_seen_ms, hide_last_seen))?;
        let row = LastSeenRow {
            user: user.to_owned(),
            last_seen_ms,
            hide_last_seen,
        };
        Ok(Ok(OpOutcome::reply(OwnerReply::LastSeen(row))))
    }
}

/// Reads the user's row; a user never recorded gets time 0 and visible settings.
pub(crate) fn read_last_seen(
    db: &Database,
    placement: Placement,
    user: &str,
) -> StoreResult<LastSeenRow> {
    let (vshard, _) = placement.user(user);
    let txn = db.begin_read()?;
    let table = txn.open_table(LAST_SEEN)?;
    let (last_seen_ms, hide_last_seen) = table
        .get((vshard, user))?
        .map(|row| row.value())
        .unwrap_or((0, false));
    Ok(LastSeenRow {
        user: user.to_owned(),
        last_seen_ms,
        hide_last_seen,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use tidings_schema::mesh::OwnerRequest;

    use super::*;
    use crate::{Owner, OwnerConfig};

    fn now_ms() -> u64 {
        let since = SystemTime::now().duration_since(UNIX_EPOCH);
        since.expect("clock after 1970").as_millis() as u64
    }

    async fn call(owner: &Owner, request: OwnerRequest) -> LastSeenRow {
        match owner.call(request).await {
            Ok(OwnerReply::LastSeen(row)) => row,
            other => panic!("expected a last seen row, got {other:?}"),
        }
    }

    fn record(user: &str, at_ms: u64) -> OwnerRequest {
        OwnerRequest::RecordLastSeen {
            user: user.to_owned(),
            at_ms,
        }
    }

    fn read(user: &str) -> OwnerRequest {
        OwnerRequest::LastSeen {
            user: user.to_owned(),
        }
    }

    #[tokio::test]
    async fn last_seen_moves_forward_and_never_past_now() {
        let dir = tempfile::tempdir().unwrap();
        let owner = Owner::open(OwnerConfig::new(dir.path().to_path_buf())).unwrap();

        let unknown = call(&owner, read("alice")).await;
        assert_eq!(unknown.last_seen_ms, 0);
        assert!(!unknown.hide_last_seen);

        let at = now_ms() - 5_000;
        assert_eq!(call(&owner, record("alice", at)).await.last_seen_ms, at);
        let older = call(&owner, record("alice", at - 1_000)).await;
        assert_eq!(older.last_seen_ms, at, "an older time never lowers it");

        let before = now_ms();
        let future = call(&owner, record("alice", u64::MAX)).await;
        let after = now_ms();
        assert!(future.last_seen_ms >= before);
        assert!(future.last_seen_ms <= after, "clamped to the owner's clock");

        let first = call(&owner, read("alice")).await;
        let second = call(&owner, read("alice")).await;
        assert_eq!(first, second, "repeated reads agree");
        assert_eq!(first.last_seen_ms, future.last_seen_ms);
    }

    #[tokio::test]
    async fn hide_setting_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let config = OwnerConfig::new(dir.path().to_path_buf());
        {
            let owner = Owner::open(config.clone()).unwrap();
            let settings = OwnerRequest::PresenceSettings {
                user: "bob".to_owned(),
                hide_last_seen: true,
            };
            assert!(call(&owner, settings).await.hide_last_seen);
            call(&owner, record("bob", 1_000)).await;
            owner.shutdown();
        }
        let owner = Owner::open(config).unwrap();
        let row = call(&owner, read("bob")).await;
        assert!(row.hide_last_seen);
        assert_eq!(row.last_seen_ms, 1_000);
    }
}
