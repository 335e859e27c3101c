//! Errors of the storage layer below the request level.

use tidings_schema::{ErrorCode, Rejection};

use crate::record::DecodeError;

/// How long a client should wait before retrying after a failed commit.
const STORAGE_RETRY_AFTER_MS: u32 = 500;

/// A failure of redb or of a stored record. It aborts the whole batch it happened in.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StorageError {
    #[error("redb failed: {0}")]
    Redb(#[from] redb::Error),
    #[error("stored record is damaged: {0}")]
    Corrupt(#[from] DecodeError),
}

impl StorageError {
    /// Builds the rejection every request of a failed batch receives.
    pub(crate) fn rejection(&self) -> Rejection {
        Rejection::retry(
            ErrorCode::StorageFailed,
            format!("commit failed, nothing was stored: {self}"),
            STORAGE_RETRY_AFTER_MS,
        )
    }
}

macro_rules! storage_error_from {
    ($($source:ty),*) => {
        $(impl From<$source> for StorageError {
            fn from(error: $source) -> Self {
                StorageError::Redb(error.into())
            }
        })*
    };
}

storage_error_from!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::SetDurabilityError
);
