//! The transport-neutral session core: one authenticated session, its registration, the
//! events that end it, and the `Close` frame that tells the client why.
//!
//! Native QUIC, WebTransport and WebSocket sessions all start with [`open_session`], run
//! until [`watch_session`] returns a [`SessionEnd`], and end with [`close_frame`] followed
//! by the transport's own close.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;
use tidings_schema::error::{CloseCode, ErrorCode, Rejection};
use tidings_schema::frame::{Close, ErrorFrame, Hello, Welcome};
use tidings_schema::mesh::edge_order;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::auth::Claims;
use crate::delivery::AckCursors;
use crate::endpoint::EdgeShared;
use crate::metrics::{EdgeMetrics, Transport};
use crate::rate::TokenBucket;
use crate::registry::{EncodedDelivery, SessionEntry};
use crate::stamp::now_ms;

/// Milliseconds a client waits before reconnecting after a shutdown `Close`.
const SHUTDOWN_RETRY_AFTER_MS: u32 = 1_000;

/// One authenticated session: a user's device on one connection of any transport.
pub struct Session {
    pub conn_id: u64,
    pub session_id: u64,
    pub user: String,
    pub device_id: String,
    pub transport: Transport,
    pub edge: Arc<EdgeShared>,
    /// `Send` rate limit shared by every conversation of the session.
    pub send_rate: Mutex<TokenBucket>,
    pub cursors: AckCursors,
}

impl Session {
    pub fn max_frame_bytes(&self) -> u32 {
        self.edge.config.limits.max_frame_bytes
    }

    pub fn metrics(&self) -> &EdgeMetrics {
        &self.edge.metrics
    }
}

/// Builds an `Error` frame not tied to a request, conversation or message.
pub fn error_frame(code: ErrorCode, message: impl Into<String>) -> ErrorFrame {
    ErrorFrame::from_rejection(&Rejection::new(code, message))
}

/// A request from outside the session's tasks to end it: a kick, or a delivery queue
/// that overflowed. The first request wins; later ones are ignored.
#[derive(Clone, Default)]
pub struct EndSignal {
    reason: Arc<Mutex<Option<(CloseCode, String)>>>,
    fired: CancellationToken,
}

impl EndSignal {
    /// Asks the session to close with `code` and `reason`.
    pub fn end(&self, code: CloseCode, reason: &str) {
        let mut slot = self
            .reason
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if slot.is_none() {
            *slot = Some((code, reason.to_owned()));
            self.fired.cancel();
        }
    }

    /// Waits for [`EndSignal::end`] and returns its code and reason.
    pub async fn wait(&self) -> (CloseCode, String) {
        self.fired.cancelled().await;
        let slot = self
            .reason
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        slot.clone()
            .unwrap_or((CloseCode::InternalError, String::new()))
    }
}

/// Why a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    Shutdown,
    TokenExpired,
    /// Ended through its [`EndSignal`], by a kick or a delivery queue overflow.
    Ended {
        code: CloseCode,
        reason: String,
    },
    /// The client broke the protocol; the `Error` frame is already queued.
    Violation,
    /// The connection or socket went away.
    Lost,
}

/// A session that passed `Hello`: registered, with its delivery queue and end signal.
pub struct OpenSession {
    pub session: Arc<Session>,
    pub welcome: Welcome,
    pub deliveries: mpsc::Receiver<Arc<EncodedDelivery>>,
    pub end_signal: EndSignal,
    /// Token expiry, Unix seconds.
    pub expires: u64,
}

/// Creates the session for a valid `Hello`, registers it for fan-out and builds its
/// `Welcome`. The caller must call [`close_session`] when it ends.
pub fn open_session(
    edge: &Arc<EdgeShared>,
    conn_id: u64,
    transport: Transport,
    hello: &Hello,
    claims: &Claims,
) -> OpenSession {
    let session = Arc::new(Session {
        conn_id,
        session_id: rand::rng().random_range(1..=u64::MAX),
        user: claims.sub.clone(),
        device_id: hello.device_id.clone(),
        transport,
        send_rate: Mutex::new(TokenBucket::new(edge.config.send_rate, Instant::now())),
        cursors: crate::receipts::AckRecorder::start(claims.sub.clone(), Arc::clone(edge)),
        edge: Arc::clone(edge),
    });
    let welcome = Welcome {
        session_id: session.session_id,
        user_id: session.user.clone(),
        server_time_ms: now_ms(),
        limits: edge.config.limits,
        edges: edge.config.public_edges.clone(),
    };

    let end_signal = EndSignal::default();
    let (queue, deliveries) = mpsc::channel(edge.config.session_queue.max(1));
    let entry = SessionEntry::new(
        conn_id,
        session.session_id,
        session.user.clone(),
        session.device_id.clone(),
        queue,
        end_signal.clone(),
    );
    edge.registry.insert(Arc::new(entry));
    EdgeMetrics::inc(&edge.metrics.sessions_started);
    debug!(
        session_id = session.session_id,
        device_id = %session.device_id,
        transport = transport.as_str(),
        "session started"
    );
    OpenSession {
        session,
        welcome,
        deliveries,
        end_signal,
        expires: claims.exp,
    }
}

/// Waits for whatever ends the session first: edge shutdown, token expiry, the end
/// signal, or `transport` (the transport's own end: connection loss or a violation).
pub async fn watch_session(
    session: &Session,
    expires: u64,
    end_signal: &EndSignal,
    transport: impl Future<Output = SessionEnd>,
) -> SessionEnd {
    tokio::select! {
        _ = session.edge.shutdown.cancelled() => SessionEnd::Shutdown,
        _ = tokio::time::sleep(until_unix_secs(expires)) => SessionEnd::TokenExpired,
        (code, reason) = end_signal.wait() => SessionEnd::Ended { code, reason },
        end = transport => end,
    }
}

/// Unregisters the session so no more deliveries are queued for it.
pub fn close_session(session: &Session) {
    session
        .edge
        .registry
        .remove(&session.user, session.session_id);
    session
        .edge
        .presence
        .detach(session.session_id, &session.user);
}

/// Returns the close code, and the `Close` frame to send first, for a session the edge
/// ends on purpose. Returns `None` when the transport is gone or the end was a violation,
/// which the transport closes without a `Close` frame. A shutdown `Close` names another
/// edge of the cluster as its redirect when the cluster lists one.
pub fn close_frame(session: &Session, end: &SessionEnd) -> Option<(CloseCode, Close)> {
    let (code, message, retry_after_ms) = match end {
        SessionEnd::Lost | SessionEnd::Violation => return None,
        SessionEnd::Shutdown => (
            CloseCode::ServerShutdown,
            "the edge is shutting down; reconnect".to_owned(),
            SHUTDOWN_RETRY_AFTER_MS,
        ),
        SessionEnd::TokenExpired => (
            CloseCode::TokenExpired,
            "the token expired; reconnect with a new one".to_owned(),
            0,
        ),
        SessionEnd::Ended { code, reason } => (*code, reason.clone(), 0),
    };
    let redirect = match end {
        SessionEnd::Shutdown => {
            drain_redirect(&session.user, &session.edge.other_edges).unwrap_or_default()
        }
        _ => String::new(),
    };
    let frame = Close {
        code: code.as_u32(),
        message,
        retry_after_ms,
        redirect,
    };
    Some((code, frame))
}

/// Picks the edge that `user` moves to when this edge drains: the first of `other_edges`
/// in the user's `edge_order`, the same order clients follow, so every device of the
/// user lands on one edge. Returns `None` when this edge is the only one.
pub fn drain_redirect(user: &str, other_edges: &[String]) -> Option<String> {
    let first = *edge_order(user, other_edges).first()?;
    Some(other_edges[first].clone())
}

/// Maps a rejected `Hello` to the code that closes the connection.
pub fn hello_close_code(rejection: &Rejection) -> CloseCode {
    match rejection.code {
        ErrorCode::TokenExpired => CloseCode::TokenExpired,
        ErrorCode::InvalidToken | ErrorCode::Unauthenticated => CloseCode::AuthFailed,
        _ => CloseCode::ProtocolViolation,
    }
}

/// Returns the time from now until `exp` (Unix seconds), zero when it has passed.
fn until_unix_secs(exp: u64) -> Duration {
    let deadline = UNIX_EPOCH + Duration::from_secs(exp);
    deadline
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_redirect_follows_user_edge_order() {
        let edges: Vec<String> = ["127.0.0.1:4001", "127.0.0.1:4002", "127.0.0.1:4003"]
            .iter()
            .map(|edge| (*edge).to_owned())
            .collect();
        for user in ["alice", "bob", "carol"] {
            let first = edge_order(user, &edges)[0];
            assert_eq!(drain_redirect(user, &edges), Some(edges[first].clone()));
        }
    }

    #[test]
    fn drain_redirect_none_without_other_edge() {
        assert_eq!(drain_redirect("alice", &[]), None);
    }
}
