//! Stable error codes carried in `Error` frames, and the QUIC application close codes.
//!
//! Each code is defined once here with its number and meaning. The numbers are part of
//! the protocol: never reuse or renumber one. `docs/protocol.md` lists the same table.

use std::fmt;

/// Defines [`ErrorCode`] from one table of name, number, retryable flag and meaning.
macro_rules! error_codes {
    ($($name:ident = $num:literal, $text:literal, $retry:literal, $meaning:literal;)*) => {
        /// A stable error code sent in an `Error` frame.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        #[repr(u16)]
        pub enum ErrorCode {
            $(#[doc = $meaning] $name = $num,)*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// Maps a wire number to its code; unknown numbers become `Internal`.
            pub fn from_u16(value: u16) -> ErrorCode {
                match value {
                    $($num => ErrorCode::$name,)*
                    _ => ErrorCode::Internal,
                }
            }

            /// Returns the wire number.
            pub fn as_u16(self) -> u16 {
                self as u16
            }

            /// Returns the upper-case name used in logs, docs and command-line output.
            pub fn name(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => $text,)*
                }
            }

            /// Reports whether a client may retry the same request after `retry_after_ms`.
            pub fn is_retryable(self) -> bool {
                match self {
                    $(ErrorCode::$name => $retry,)*
                }
            }

            /// Returns one sentence describing the code.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => $meaning,)*
                }
            }
        }
    };
}

error_codes! {
    MalformedFrame = 1, "MALFORMED_FRAME", false, "The frame could not be decoded as a Cap'n Proto message of the expected shape.";
    UnknownFrame = 2, "UNKNOWN_FRAME", false, "The frame type is not known to this server or is not allowed where it was sent.";
    UnsupportedVersion = 3, "UNSUPPORTED_VERSION", false, "The frame's protocol version is not supported by this server.";
    FrameTooLarge = 4, "FRAME_TOO_LARGE", false, "The frame is larger than the negotiated frame limit; it was not read.";
    MessageTooLarge = 5, "MESSAGE_TOO_LARGE", false, "The message body is larger than the negotiated message limit.";
    Unauthenticated = 10, "UNAUTHENTICATED", false, "The connection sent a request before a valid Hello.";
    InvalidToken = 11, "INVALID_TOKEN", false, "The bearer token is missing, malformed or has a bad signature.";
    TokenExpired = 12, "TOKEN_EXPIRED", false, "The bearer token has expired.";
    NotMember = 20, "NOT_MEMBER", false, "The user is not a member of the conversation.";
    UnknownConversation = 21, "UNKNOWN_CONVERSATION", false, "No conversation with this id exists.";
    GroupTooLarge = 22, "GROUP_TOO_LARGE", false, "The group would exceed the maximum number of members.";
    NotAdmin = 23, "NOT_ADMIN", false, "Only an admin of the group may do this.";
    IdempotencyConflict = 24, "IDEMPOTENCY_CONFLICT", false, "The client_msg_id was already used in this conversation with a different body.";
    InvalidRequest = 25, "INVALID_REQUEST", false, "A field of the request is invalid; the message names it.";
    StreamMismatch = 26, "STREAM_MISMATCH", false, "A frame on a conversation stream names a different conversation than the stream.";
    TooManyStreams = 27, "TOO_MANY_STREAMS", false, "The connection has more open conversation streams than allowed.";
    RateLimited = 30, "RATE_LIMITED", true, "The connection sends faster than its configured rate; retry after retry_after_ms.";
    OwnerUnavailable = 31, "OWNER_UNAVAILABLE", true, "The owner of the conversation's shard cannot be reached; retry after retry_after_ms.";
    Overloaded = 32, "OVERLOADED", true, "The server has too much work in flight; retry after retry_after_ms.";
    StorageFailed = 33, "STORAGE_FAILED", true, "The owner could not commit to storage (for example a full disk); nothing was stored.";
    ShuttingDown = 34, "SHUTTING_DOWN", true, "The node is shutting down; reconnect to another edge.";
    NotShardOwner = 35, "NOT_SHARD_OWNER", false, "The owner that received the request does not hold the virtual shard, because the nodes' cluster files disagree.";
    Internal = 40, "INTERNAL", false, "An unexpected server error; the server log has the details.";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.as_u16())
    }
}

/// A request that the server did not carry out: the error code, a human-readable message
/// and, for retryable codes, how long to wait before retrying.
///
/// The message is for people and logs; programs must match on `code` only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
    /// Milliseconds to wait before a retry; 0 when the code is not retryable.
    pub retry_after_ms: u32,
}

impl Rejection {
    /// Creates a rejection that is not retryable.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
            retry_after_ms: 0,
        }
    }

    /// Creates a retryable rejection that tells the client to wait `retry_after_ms`.
    pub fn retry(code: ErrorCode, message: impl Into<String>, retry_after_ms: u32) -> Self {
        Rejection {
            code,
            message: message.into(),
            retry_after_ms,
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Rejection::new(ErrorCode::Internal, message)
    }
}

/// Defines [`CloseCode`] from one table of name, number and meaning.
macro_rules! close_codes {
    ($($name:ident = $num:literal, $text:literal, $meaning:literal;)*) => {
        /// QUIC application error codes used to close a connection or reset a stream.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        #[repr(u32)]
        pub enum CloseCode {
            $(#[doc = $meaning] $name = $num,)*
        }

        impl CloseCode {
            pub const ALL: &'static [CloseCode] = &[$(CloseCode::$name,)*];

            pub fn from_u32(value: u32) -> Option<CloseCode> {
                match value {
                    $($num => Some(CloseCode::$name),)*
                    _ => None,
                }
            }

            pub fn as_u32(self) -> u32 {
                self as u32
            }

            pub fn name(self) -> &'static str {
                match self {
                    $(CloseCode::$name => $text,)*
                }
            }

            pub fn meaning(self) -> &'static str {
                match self {
                    $(CloseCode::$name => $meaning,)*
                }
            }
        }
    };
}

close_codes! {
    Normal = 0, "NORMAL", "The peer closed the connection or stream on purpose; nothing is wrong.";
    ProtocolViolation = 0x101, "PROTOCOL_VIOLATION", "A frame was malformed, unknown, too large or sent on the wrong stream.";
    AuthFailed = 0x102, "AUTH_FAILED", "The Hello carried a missing or invalid token, or no Hello arrived in time.";
    TokenExpired = 0x103, "TOKEN_EXPIRED", "The session's token expired; reconnect with a fresh token.";
    ServerShutdown = 0x104, "SERVER_SHUTDOWN", "The node is shutting down or draining; reconnect to another edge.";
    StreamLimit = 0x105, "STREAM_LIMIT", "A conversation stream was closed because the connection reached its stream limit.";
    StreamIdle = 0x106, "STREAM_IDLE", "A conversation stream was closed because it was idle.";
    InternalError = 0x107, "INTERNAL_ERROR", "The server hit an unexpected error on this connection.";
    Kicked = 0x108, "KICKED", "An operator ended the user's sessions; do not reconnect without the user's say.";
}

impl CloseCode {
    /// Reports whether a client must not reconnect on its own after this close: the token
    /// is no good any more, or an operator ended the session.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            CloseCode::AuthFailed | CloseCode::TokenExpired | CloseCode::Kicked
        )
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:x})", self.name(), self.as_u32())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u16(code.as_u16()), *code);
        }
    }

    #[test]
    fn close_codes_round_trip() {
        for code in CloseCode::ALL {
            assert_eq!(CloseCode::from_u32(code.as_u32()), Some(*code));
        }
    }

    #[test]
    fn only_transient_codes_are_retryable() {
        assert!(ErrorCode::RateLimited.is_retryable());
        assert!(ErrorCode::OwnerUnavailable.is_retryable());
        assert!(!ErrorCode::NotMember.is_retryable());
        assert!(!ErrorCode::IdempotencyConflict.is_retryable());
    }

    /// `docs/protocol.md` repeats both tables for client authors; this keeps it current.
    #[test]
    fn protocol_doc_lists_every_code() {
        let doc = include_str!("../../docs/protocol.md");
        for code in ErrorCode::ALL {
            let retryable = if code.is_retryable() { "yes" } else { "no" };
            let row = format!("| {} | {} | {retryable} |", code.as_u16(), code.name());
            assert!(doc.contains(&row), "docs/protocol.md lacks the row {row:?}");
        }
        for code in CloseCode::ALL {
            let row = format!("| 0x{:x} | {} |", code.as_u32(), code.name());
            assert!(doc.contains(&row), "docs/protocol.md lacks the row {row:?}");
        }
    }
}
