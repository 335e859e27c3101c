//! The session registry: which sessions of which users are connected to this edge.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tidings_relay::handle::UserSource;
use tidings_schema::error::CloseCode;
use tokio::sync::mpsc;
use tracing::warn;

use crate::session::EndSignal;

/// One committed message encoded once as a `Deliver` frame, shared by every session
/// that receives it.
#[derive(Debug)]
pub struct EncodedDelivery {
    pub conversation_id: u64,
    pub seq: u64,
    /// The length-prefixed `Deliver` frame.
    pub frame: Bytes,
}

/// A connected session, as the fan-out uses it.
pub struct SessionEntry {
    pub conn_id: u64,
    pub session_id: u64,
    pub user: String,
    pub device_id: String,
    queue: mpsc::Sender<Arc<EncodedDelivery>>,
    end_signal: EndSignal,
    overflowed: AtomicBool,
}

impl SessionEntry {
    pub fn new(
        conn_id: u64,
        session_id: u64,
        user: String,
        device_id: String,
        queue: mpsc::Sender<Arc<EncodedDelivery>>,
        end_signal: EndSignal,
    ) -> SessionEntry {
        SessionEntry {
            conn_id,
            session_id,
            user,
            device_id,
            queue,
            end_signal,
            overflowed: AtomicBool::new(false),
        }
    }

    /// Queues a delivery without waiting. A full queue means the client reads slower than
    /// its conversations move, so the session is closed with `InternalError`: the client
    /// reconnects and syncs from its cursors instead of silently missing messages.
    pub fn offer(&self, delivery: &Arc<EncodedDelivery>) {
        match self.queue.try_send(Arc::clone(delivery)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.overflowed.swap(true, Ordering::Relaxed) {
                    warn!(
                        conn_id = self.conn_id,
                        user = %self.user,
                        session_id = self.session_id,
                        conversation_id = delivery.conversation_id,
                        "delivery queue full; closing the slow connection"
                    );
                    self.end(
                        CloseCode::InternalError,
                        "delivery queue overflow; reconnect and sync",
                    );
                }
            }
            // The session is ending; its client will sync after reconnecting.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

impl SessionEntry {
    /// Ends the session: it gets a `Close` frame with `code` and `reason`, then its
    /// transport is closed.
    pub fn end(&self, code: CloseCode, reason: &str) {
        self.end_signal.end(code, reason);
    }
}

/// A user who got a first session on this edge or lost the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChange {
    Online(String),
    Offline(String),
}

/// Maps user ids to their sessions on this edge, and tells subscribers when a user
/// arrives or leaves, so owners learn which users this edge serves.
#[derive(Default)]
pub struct SessionRegistry {
    by_user: RwLock<HashMap<String, Vec<Arc<SessionEntry>>>>,
    watchers: Mutex<Vec<mpsc::UnboundedSender<UserChange>>>,
}

impl SessionRegistry {
    pub fn insert(&self, entry: Arc<SessionEntry>) {
        let mut by_user = self
            .by_user
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        let user = entry.user.clone();
        let sessions = by_user.entry(user.clone()).or_default();
        sessions.push(entry);
        if sessions.len() == 1 {
            // NOTE: sent under the write lock, so changes reach subscribers in the
            // order the registry made them.
            self.notify(UserChange::Online(user));
        }
    }

    pub fn remove(&self, user: &str, session_id: u64) {
        let mut by_user = self
            .by_user
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(sessions) = by_user.get_mut(user) {
            sessions.retain(|entry| entry.session_id != session_id);
            if sessions.is_empty() {
                by_user.remove(user);
                self.notify(UserChange::Offline(user.to_owned()));
            }
        }
    }

    /// Returns a receiver of every later arrival and departure of a user.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<UserChange> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.lock_watchers().push(sender);
        receiver
    }

    fn notify(&self, change: UserChange) {
        self.lock_watchers()
            .retain(|watcher| watcher.send(change.clone()).is_ok());
    }

    fn lock_watchers(&self) -> std::sync::MutexGuard<'_, Vec<mpsc::UnboundedSender<UserChange>>> {
        self.watchers
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Returns the sessions of `user`, a snapshot that stays valid without the lock.
    pub fn sessions(&self, user: &str) -> Vec<Arc<SessionEntry>> {
        let by_user = self
            .by_user
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        by_user.get(user).cloned().unwrap_or_default()
    }

    /// Returns the number of connected sessions.
    pub fn len(&self) -> usize {
        let by_user = self
            .by_user
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        by_user.values().map(Vec::len).sum()
    }
}

impl UserSource for SessionRegistry {
    fn users(&self) -> Vec<String> {
        let by_user = self
            .by_user
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        by_user.keys().cloned().collect()
    }
}
