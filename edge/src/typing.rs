//! Typing indicators: who types in which conversation, which sessions show that
//! conversation, and when an indicator that was not renewed expires.
//!
//! Like `presence`, this does no I/O and takes `now` as an argument.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::presence::SessionId;

/// A typing indicator to forward to `viewers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypingNotice {
    pub conversation_id: u64,
    pub user: String,
    pub active: bool,
    pub viewers: Vec<SessionId>,
}

/// Typing state of the conversations shown by sessions on one edge.
pub struct TypingTracker {
    expiry: Duration,
    /// Sessions that show each conversation.
    viewers: HashMap<u64, HashSet<SessionId>>,
    open: HashMap<SessionId, Vec<u64>>,
    /// Expiry of each active indicator, by (conversation, user).
    active: HashMap<(u64, String), Instant>,
    deadlines: BinaryHeap<Reverse<(Instant, u64, String)>>,
}

impl TypingTracker {
    pub fn new(expiry: Duration) -> Self {
        TypingTracker {
            expiry,
            viewers: HashMap::new(),
            open: HashMap::new(),
            active: HashMap::new(),
            deadlines: BinaryHeap::new(),
        }
    }

    /// Replaces the conversations `session` shows.
    pub fn set_open(&mut self, session: SessionId, conversations: &[u64]) {
        self.close_session(session);
        if conversations.is_empty() {
            return;
        }
        for conversation_id in conversations {
            self.viewers
                .entry(*conversation_id)
                .or_default()
                .insert(session);
        }
        self.open.insert(session, conversations.to_vec());
    }

    /// Forgets the conversations a closed session showed.
    pub fn close_session(&mut self, session: SessionId) {
        for conversation_id in self.open.remove(&session).unwrap_or_default() {
            if let Some(viewers) = self.viewers.get_mut(&conversation_id) {
                viewers.remove(&session);
                if viewers.is_empty() {
                    self.viewers.remove(&conversation_id);
                }
            }
        }
    }

    /// Records that `user` (typing on `from`) started or stopped typing. Returns the
    /// notice to forward, or `None` when a stop follows no start or nobody watches.
    pub fn typing(
        &mut self,
        conversation_id: u64,
        user: &str,
        from: SessionId,
        active: bool,
        now: Instant,
    ) -> Option<TypingNotice> {
        let key = (conversation_id, user.to_owned());
        if active {
            let expires = now + self.expiry;
            self.active.insert(key, expires);
            self.deadlines
                .push(Reverse((expires, conversation_id, user.to_owned())));
        } else if self.active.remove(&key).is_none() {
            return None;
        }
        self.notice(conversation_id, user, active, Some(from))
    }

    /// Clears the indicators that expired by `now` and returns the clears to forward.
    pub fn tick(&mut self, now: Instant) -> Vec<TypingNotice> {
        let mut notices = Vec::new();
        while let Some(Reverse((deadline, _, _))) = self.deadlines.peek() {
            if *deadline > now {
                break;
            }
            let Some(Reverse((deadline, conversation_id, user))) = self.deadlines.pop() else {
                break;
            };
            let key = (conversation_id, user);
            // A renewal moved the deadline; this heap entry is stale.
            if self.active.get(&key) != Some(&deadline) {
                continue;
            }
            self.active.remove(&key);
            if let Some(notice) = self.notice(conversation_id, &key.1, false, None) {
                notices.push(notice);
            }
        }
        notices
    }

    fn notice(
        &self,
        conversation_id: u64,
        user: &str,
        active: bool,
        from: Option<SessionId>,
    ) -> Option<TypingNotice> {
        let viewers: Vec<SessionId> = self
            .viewers
            .get(&conversation_id)?
            .iter()
            .copied()
            .filter(|session| Some(*session) != from)
            .collect();
        if viewers.is_empty() {
            return None;
        }
        Some(TypingNotice {
            conversation_id,
            user: user.to_owned(),
            active,
            viewers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(value: f64) -> Duration {
        Duration::from_secs_f64(value)
    }

    #[test]
    fn typing_reaches_viewers_but_not_sender() {
        let mut typing = TypingTracker::new(secs(5.0));
        typing.set_open(1, &[7]);
        typing.set_open(2, &[7, 8]);
        typing.set_open(3, &[8]);
        let notice = typing.typing(7, "alice", 1, true, Instant::now()).unwrap();
        assert_eq!(notice.viewers, vec![2]);
        assert!(notice.active);
    }

    #[test]
    fn typing_expires_without_renewal() {
        let mut typing = TypingTracker::new(secs(5.0));
        let t0 = Instant::now();
        typing.set_open(2, &[7]);
        typing.typing(7, "alice", 1, true, t0);

        assert!(typing.tick(t0 + secs(4.9)).is_empty());
        let cleared = typing.tick(t0 + secs(5.0));
        assert_eq!(cleared.len(), 1);
        assert!(!cleared[0].active);
        assert_eq!(cleared[0].user, "alice");
    }

    #[test]
    fn renewal_postpones_expiry() {
        let mut typing = TypingTracker::new(secs(5.0));
        let t0 = Instant::now();
        typing.set_open(2, &[7]);
        typing.typing(7, "alice", 1, true, t0);
        typing.typing(7, "alice", 1, true, t0 + secs(3.0));

        assert!(typing.tick(t0 + secs(5.0)).is_empty());
        assert_eq!(typing.tick(t0 + secs(8.0)).len(), 1);
    }

    #[test]
    fn stop_clears_at_once_and_only_once() {
        let mut typing = TypingTracker::new(secs(5.0));
        let t0 = Instant::now();
        typing.set_open(2, &[7]);
        typing.typing(7, "alice", 1, true, t0);

        let stop = typing.typing(7, "alice", 1, false, t0 + secs(1.0)).unwrap();
        assert!(!stop.active);
        assert!(
            typing
                .typing(7, "alice", 1, false, t0 + secs(1.5))
                .is_none()
        );
        assert!(
            typing.tick(t0 + secs(6.0)).is_empty(),
            "no second clear on expiry"
        );
    }

    #[test]
    fn closed_session_stops_viewing() {
        let mut typing = TypingTracker::new(secs(5.0));
        typing.set_open(2, &[7]);
        typing.close_session(2);
        assert!(typing.typing(7, "alice", 1, true, Instant::now()).is_none());
    }
}
