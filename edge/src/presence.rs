//! Presence logic: device heartbeats and their expiry, the most present state across a
//! user's devices, and which entries each watcher receives and when.
//!
//! This module does no I/O and never reads a clock. Every method takes `now` (a
//! monotonic [`Instant`] for expiry and debounce) and, where last seen moves, `wall_ms`
//! (milliseconds since the Unix epoch), so tests drive it on explicit or paused time.
//! `presence_hub` feeds it from sessions and sends what it returns.
//!
//! Rules, with the defaults of [`PresenceConfig`]:
//! - a device is present from its first heartbeat until `offline_after` passes without
//!   another one, a heartbeat with state offline arrives, or its session closes;
//! - a user's state is the most present state of their devices (online > away > offline)
//!   and of their presence on other edges of the cluster, which the home shard's owner
//!   pushes here (see [`PresenceTracker::set_remote`]);
//! - a watcher gets a change of a watched user at once, unless it got one for that user
//!   less than `debounce` ago; then the newest state goes out when the window ends, and
//!   nothing goes out if the state returned to what the watcher last got;
//! - every `snapshot_interval` a watcher gets the state of everyone it watches, which
//!   repairs a change lost with its datagram.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use tidings_schema::presence::{PresenceEntry, PresenceState};

/// Identifies a session (one device on one connection); the edge's session id.
pub type SessionId = u64;

/// Timing of presence. `Default` contains the production values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceConfig {
    /// How often a client sends a heartbeat; announced to clients, not enforced.
    pub heartbeat_interval: Duration,
    /// A device with no heartbeat for this long is offline.
    pub offline_after: Duration,
    /// Minimum time between two changes of one watched user sent to one watcher.
    pub debounce: Duration,
    /// How often each watcher gets the full state of everyone it watches.
    pub snapshot_interval: Duration,
    /// A typing indicator that is not renewed within this time is cleared.
    pub typing_expiry: Duration,
    /// How often the edge runs expiry, debounce and snapshots. Deadlines are met within
    /// one tick.
    pub tick: Duration,
    /// How often the last seen time of a present user is written to their home shard.
    pub persist_interval: Duration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            heartbeat_interval: Duration::from_secs(10),
            offline_after: Duration::from_secs(25),
            debounce: Duration::from_secs(1),
            snapshot_interval: Duration::from_secs(30),
            typing_expiry: Duration::from_secs(5),
            tick: Duration::from_millis(100),
            persist_interval: Duration::from_secs(60),
        }
    }
}

/// Presence entries for one watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub watcher: SessionId,
    /// Whether this is the periodic full state rather than changes.
    pub snapshot: bool,
    /// `last_seen_ms` is the activity this edge saw, 0 when it saw none.
    pub entries: Vec<PresenceEntry>,
}

/// A user whose state changed, with the last activity this edge saw (0 when none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub user: String,
    pub state: PresenceState,
    pub last_seen_ms: u64,
}

/// The result of one call: entries to send, and state changes to record.
///
/// `transitions` are changes of the state of the user's devices on this edge alone. The
/// edge reports them to the user's home shard, so remote presence never appears there.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub notices: Vec<Notice>,
    pub transitions: Vec<Transition>,
}

impl Output {
    pub fn is_empty(&self) -> bool {
        self.notices.is_empty() && self.transitions.is_empty()
    }
}

struct Device {
    state: PresenceState,
    expires: Instant,
}

#[derive(Default)]
struct UserPresence {
    devices: HashMap<SessionId, Device>,
    /// The most present state of the devices on this edge.
    local_state: PresenceState,
    /// The user's presence on the other edges, as the home shard's owner last pushed it.
    remote_state: PresenceState,
    /// The state watchers receive: the more present of `local_state` and `remote_state`.
    state: PresenceState,
    /// Wall-clock time of the last activity seen here: a heartbeat with state online or a
    /// sent message.
    last_seen_ms: u64,
    watchers: HashSet<SessionId>,
}

impl UserPresence {
    fn local_aggregate(&self) -> PresenceState {
        let states = self.devices.values().map(|device| device.state);
        states.max().unwrap_or(PresenceState::Offline)
    }

    fn entry(&self, user: &str) -> PresenceEntry {
        PresenceEntry {
            user: user.to_owned(),
            state: self.state,
            last_seen_ms: self.last_seen_ms,
        }
    }
}

#[derive(Default)]
struct WatchSlot {
    last_change_sent: Option<Instant>,
    sent_state: Option<PresenceState>,
    pending: bool,
}

struct Watcher {
    watched: HashMap<String, WatchSlot>,
    next_snapshot: Instant,
}

/// Presence of the users with sessions on one edge, and the watchers of those users.
pub struct PresenceTracker {
    config: PresenceConfig,
    users: HashMap<String, UserPresence>,
    watchers: HashMap<SessionId, Watcher>,
    /// Device expiry deadlines; an entry is stale when the device's deadline moved.
    expiries: BinaryHeap<Reverse<(Instant, String, SessionId)>>,
    /// Debounced changes waiting for their window to end.
    pending: BinaryHeap<Reverse<(Instant, SessionId, String)>>,
    /// Snapshot deadlines; an entry is stale when the watcher's deadline moved.
    snapshots: BinaryHeap<Reverse<(Instant, SessionId)>>,
}

impl PresenceTracker {
    pub fn new(config: PresenceConfig) -> Self {
        PresenceTracker {
            config,
            users: HashMap::new(),
            watchers: HashMap::new(),
            expiries: BinaryHeap::new(),
            pending: BinaryHeap::new(),
            snapshots: BinaryHeap::new(),
        }
    }

    pub fn config(&self) -> &PresenceConfig {
        &self.config
    }

    /// Records a heartbeat of `session`, a device of `user`. A heartbeat with state
    /// offline removes the device at once.
    pub fn heartbeat(
        &mut self,
        user: &str,
        session: SessionId,
        state: PresenceState,
        now: Instant,
        wall_ms: u64,
    ) -> Output {
        let presence = self.users.entry(user.to_owned()).or_default();
        if state == PresenceState::Online {
            presence.last_seen_ms = presence.last_seen_ms.max(wall_ms);
        }
        if state == PresenceState::Offline {
            presence.devices.remove(&session);
        } else {
            let expires = now + self.config.offline_after;
            presence.devices.insert(session, Device { state, expires });
            self.expiries
                .push(Reverse((expires, user.to_owned(), session)));
        }
        let mut changes = Changes::default();
        self.recompute(user, now, &mut changes);
        self.forget_if_unused(user);
        changes.into_output()
    }

    /// Records activity other than a heartbeat, such as a sent message. Returns whether
    /// the user has a present device here, whose later transitions carry the time; for
    /// any other user the caller records it itself.
    pub fn note_activity(&mut self, user: &str, wall_ms: u64) -> bool {
        let Some(presence) = self.users.get_mut(user) else {
            return false;
        };
        presence.last_seen_ms = presence.last_seen_ms.max(wall_ms);
        presence.local_state != PresenceState::Offline
    }

    /// Records the user's presence on the other edges of the cluster, as pushed by the
    /// owner of their home shard. Watchers here get the change with the usual debounce.
    ///
    /// NOTE: the state is kept for every user the owner reports, watched here or not, so
    /// a later subscription returns it at once. That is one small entry per user present
    /// elsewhere in the cluster.
    pub fn set_remote(&mut self, entry: &PresenceEntry, now: Instant) -> Output {
        let presence = self.users.entry(entry.user.clone()).or_default();
        presence.remote_state = entry.state;
        presence.last_seen_ms = presence.last_seen_ms.max(entry.last_seen_ms);
        let mut changes = Changes::default();
        self.recompute(&entry.user, now, &mut changes);
        self.forget_if_unused(&entry.user);
        changes.into_output()
    }

    /// Removes a session that closed: its device stops counting and its subscription ends.
    pub fn session_closed(&mut self, user: &str, session: SessionId, now: Instant) -> Output {
        self.unsubscribe(session);
        let mut changes = Changes::default();
        if let Some(presence) = self.users.get_mut(user)
            && presence.devices.remove(&session).is_some()
        {
            self.recompute(user, now, &mut changes);
        }
        self.forget_if_unused(user);
        changes.into_output()
    }

    /// Replaces the users `watcher` watches and returns their current entries, which the
    /// caller sends as the reply. The first snapshot follows one interval later.
    pub fn subscribe(
        &mut self,
        watcher: SessionId,
        users: &[String],
        now: Instant,
    ) -> Vec<PresenceEntry> {
        self.unsubscribe(watcher);
        let mut watched = HashMap::new();
        let mut entries = Vec::new();
        for user in users {
            if watched.contains_key(user) {
                continue;
            }
            let presence = self.users.entry(user.clone()).or_default();
            presence.watchers.insert(watcher);
            let slot = WatchSlot {
                last_change_sent: Some(now),
                sent_state: Some(presence.state),
                pending: false,
            };
            watched.insert(user.clone(), slot);
            entries.push(presence.entry(user));
        }
        let next_snapshot = now + self.config.snapshot_interval;
        self.watchers.insert(
            watcher,
            Watcher {
                watched,
                next_snapshot,
            },
        );
        self.snapshots.push(Reverse((next_snapshot, watcher)));
        entries
    }

    /// Ends the subscription of `watcher`, if it has one.
    pub fn unsubscribe(&mut self, watcher: SessionId) {
        let Some(old) = self.watchers.remove(&watcher) else {
            return;
        };
        for user in old.watched.keys() {
            if let Some(presence) = self.users.get_mut(user) {
                presence.watchers.remove(&watcher);
            }
            self.forget_if_unused(user);
        }
    }

    /// Runs everything due at `now`: device expiry, debounced changes and snapshots.
    pub fn tick(&mut self, now: Instant) -> Output {
        let mut changes = Changes::default();
        self.expire_devices(now, &mut changes);
        self.flush_pending(now, &mut changes);
        self.emit_snapshots(now, &mut changes);
        changes.into_output()
    }

    /// Returns the user's state and the last activity this edge saw.
    pub fn entry(&self, user: &str) -> PresenceEntry {
        match self.users.get(user) {
            Some(presence) => presence.entry(user),
            None => PresenceEntry {
                user: user.to_owned(),
                ..PresenceEntry::default()
            },
        }
    }

    /// Returns the users with at least one present device on this edge, with their state
    /// and last activity.
    pub fn present_users(&self) -> Vec<(String, PresenceState, u64)> {
        let present = self
            .users
            .iter()
            .filter(|(_, presence)| presence.local_state != PresenceState::Offline);
        present
            .map(|(user, presence)| (user.clone(), presence.local_state, presence.last_seen_ms))
            .collect()
    }

    /// Returns the users that the owners report present on other edges.
    pub fn remote_users(&self) -> Vec<String> {
        let remote = self
            .users
            .iter()
            .filter(|(_, presence)| presence.remote_state != PresenceState::Offline);
        remote.map(|(user, _)| user.clone()).collect()
    }

    /// Returns the number of devices with a heartbeat that has not expired.
    pub fn device_count(&self) -> usize {
        self.users.values().map(|user| user.devices.len()).sum()
    }

    fn expire_devices(&mut self, now: Instant, changes: &mut Changes) {
        while let Some(Reverse((deadline, _, _))) = self.expiries.peek() {
            if *deadline > now {
                break;
            }
            let Some(Reverse((deadline, user, session))) = self.expiries.pop() else {
                break;
            };
            let Some(presence) = self.users.get_mut(&user) else {
                continue;
            };
            // A later heartbeat moved the deadline; this heap entry is stale.
            let current = presence.devices.get(&session).map(|device| device.expires);
            if current != Some(deadline) {
                continue;
            }
            presence.devices.remove(&session);
            self.recompute(&user, now, changes);
            self.forget_if_unused(&user);
        }
    }

    fn flush_pending(&mut self, now: Instant, changes: &mut Changes) {
        while let Some(Reverse((due, _, _))) = self.pending.peek() {
            if *due > now {
                break;
            }
            let Some(Reverse((_, watcher, user))) = self.pending.pop() else {
                break;
            };
            let state = self.entry(&user);
            let Some(slot) = self.slot(watcher, &user) else {
                continue;
            };
            if !slot.pending {
                continue;
            }
            slot.pending = false;
            if slot.sent_state == Some(state.state) {
                continue;
            }
            slot.sent_state = Some(state.state);
            slot.last_change_sent = Some(now);
            changes.push(watcher, state);
        }
    }

    fn emit_snapshots(&mut self, now: Instant, changes: &mut Changes) {
        while let Some(Reverse((due, _))) = self.snapshots.peek() {
            if *due > now {
                break;
            }
            let Some(Reverse((due, watcher_id))) = self.snapshots.pop() else {
                break;
            };
            let Some(watcher) = self.watchers.get_mut(&watcher_id) else {
                continue;
            };
            if watcher.next_snapshot != due {
                continue;
            }
            let mut entries = Vec::with_capacity(watcher.watched.len());
            for (user, slot) in &mut watcher.watched {
                let entry = match self.users.get(user) {
                    Some(presence) => presence.entry(user),
                    None => PresenceEntry {
                        user: user.clone(),
                        ..PresenceEntry::default()
                    },
                };
                slot.sent_state = Some(entry.state);
                entries.push(entry);
            }
            entries.sort_by(|a, b| a.user.cmp(&b.user));
            // NOTE: snapshots keep a fixed phase from the subscription, so a slow tick
            // does not drift them later and later.
            watcher.next_snapshot = due + self.config.snapshot_interval;
            if watcher.next_snapshot <= now {
                watcher.next_snapshot = now + self.config.snapshot_interval;
            }
            self.snapshots
                .push(Reverse((watcher.next_snapshot, watcher_id)));
            changes.snapshots.push(Notice {
                watcher: watcher_id,
                snapshot: true,
                entries,
            });
        }
    }

    /// Recomputes the user's state and, when it changed, sends it to the watchers or schedules
    /// it for the end of their debounce window.
    fn recompute(&mut self, user: &str, now: Instant, changes: &mut Changes) {
        let Some(presence) = self.users.get_mut(user) else {
            return;
        };
        let local_state = presence.local_aggregate();
        if local_state != presence.local_state {
            presence.local_state = local_state;
            changes.transitions.push(Transition {
                user: user.to_owned(),
                state: local_state,
                last_seen_ms: presence.last_seen_ms,
            });
        }
        let state = local_state.max(presence.remote_state);
        if state == presence.state {
            return;
        }
        presence.state = state;
        let entry = presence.entry(user);

        let watchers: Vec<SessionId> = presence.watchers.iter().copied().collect();
        let debounce = self.config.debounce;
        for watcher in watchers {
            let Some(slot) = self.slot(watcher, user) else {
                continue;
            };
            let ready = slot
                .last_change_sent
                .is_none_or(|sent| now >= sent + debounce);
            if ready && !slot.pending {
                slot.last_change_sent = Some(now);
                slot.sent_state = Some(state);
                changes.push(watcher, entry.clone());
            } else if !slot.pending {
                slot.pending = true;
                let due = slot.last_change_sent.map_or(now, |sent| sent + debounce);
                self.pending.push(Reverse((due, watcher, user.to_owned())));
            }
        }
    }

    fn slot(&mut self, watcher: SessionId, user: &str) -> Option<&mut WatchSlot> {
        self.watchers.get_mut(&watcher)?.watched.get_mut(user)
    }

    /// Drops the user's row once nothing refers to it. Last seen survives in the user's
    /// home shard, where transitions are recorded.
    fn forget_if_unused(&mut self, user: &str) {
        let unused = self.users.get(user).is_some_and(|presence| {
            presence.devices.is_empty()
                && presence.watchers.is_empty()
                && presence.remote_state == PresenceState::Offline
        });
        if unused {
            self.users.remove(user);
        }
    }
}

/// Entries gathered during one call, grouped per watcher.
#[derive(Default)]
struct Changes {
    by_watcher: BTreeMap<SessionId, Vec<PresenceEntry>>,
    snapshots: Vec<Notice>,
    transitions: Vec<Transition>,
}

impl Changes {
    fn push(&mut self, watcher: SessionId, entry: PresenceEntry) {
        self.by_watcher.entry(watcher).or_default().push(entry);
    }

    fn into_output(self) -> Output {
        let mut notices: Vec<Notice> = self
            .by_watcher
            .into_iter()
            .map(|(watcher, entries)| Notice {
                watcher,
                snapshot: false,
                entries,
            })
            .collect();
        notices.extend(self.snapshots);
        Output {
            notices,
            transitions: self.transitions,
        }
    }
}

#[cfg(test)]
#[path = "presence_tests.rs"]
mod tests;
