//! State shared by the tasks of one authenticated session.

use std::sync::{Arc, Mutex};

use tidings_schema::error::{ErrorCode, Rejection};
use tidings_schema::frame::ErrorFrame;

use crate::delivery::AckCursors;
use crate::endpoint::EdgeShared;
use crate::rate::TokenBucket;

/// One authenticated session: a user's device on one connection.
pub struct Session {
    pub conn_id: u64,
    pub session_id: u64,
    pub user: String,
    pub device_id: String,
    pub connection: quinn::Connection,
    pub edge: Arc<EdgeShared>,
    /// `Send` rate limit shared by every conversation stream of the connection.
    pub send_rate: Mutex<TokenBucket>,
    pub cursors: AckCursors,
}

impl Session {
    pub fn max_frame_bytes(&self) -> u32 {
        self.edge.config.limits.max_frame_bytes
    }
}

/// Builds an `Error` frame not tied to a request, conversation or message.
pub fn error_frame(code: ErrorCode, message: impl Into<String>) -> ErrorFrame {
    ErrorFrame::from_rejection(&Rejection::new(code, message))
}
