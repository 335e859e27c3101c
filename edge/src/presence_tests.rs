//! Tests of the presence logic on explicit time.

use std::time::{Duration, Instant};

use tidings_schema::presence::PresenceState::{Away, Offline, Online};

use super::*;

const WALL: u64 = 1_700_000_000_000;

fn tracker() -> PresenceTracker {
    PresenceTracker::new(PresenceConfig::default())
}

fn secs(value: f64) -> Duration {
    Duration::from_secs_f64(value)
}

fn users(list: &[&str]) -> Vec<String> {
    list.iter().map(|user| (*user).to_owned()).collect()
}

/// Returns the states sent to `watcher` for `user`, in order.
fn states_for(output: &Output, watcher: SessionId, user: &str) -> Vec<PresenceState> {
    output
        .notices
        .iter()
        .filter(|notice| notice.watcher == watcher && !notice.snapshot)
        .flat_map(|notice| notice.entries.iter())
        .filter(|entry| entry.user == user)
        .map(|entry| entry.state)
        .collect()
}

#[test]
fn most_present_device_wins() {
    let mut presence = tracker();
    let t0 = Instant::now();
    presence.heartbeat("alice", 1, Away, t0, WALL);
    assert_eq!(presence.entry("alice").state, Away);

    presence.heartbeat("alice", 2, Online, t0, WALL);
    assert_eq!(presence.entry("alice").state, Online);

    presence.heartbeat("alice", 2, Offline, t0 + secs(1.0), WALL);
    assert_eq!(presence.entry("alice").state, Away);

    presence.session_closed("alice", 1, t0 + secs(2.0));
    assert_eq!(presence.entry("alice").state, Offline);
}

#[test]
fn silent_device_expires_after_offline_after() {
    let mut presence = tracker();
    let t0 = Instant::now();
    presence.subscribe(9, &users(&["alice"]), t0);
    let t1 = t0 + secs(5.0);
    presence.heartbeat("alice", 1, Online, t1, WALL);

    let before = presence.tick(t1 + secs(24.9));
    assert!(states_for(&before, 9, "alice").is_empty());
    assert_eq!(presence.entry("alice").state, Online);

    let after = presence.tick(t1 + secs(25.0));
    assert_eq!(states_for(&after, 9, "alice"), vec![Offline]);
    assert_eq!(after.transitions.len(), 1);
    assert_eq!(after.transitions[0].last_seen_ms, WALL);
}

#[test]
fn heartbeat_renews_expiry() {
    let mut presence = tracker();
    let t0 = Instant::now();
    presence.heartbeat("alice", 1, Online, t0, WALL);
    presence.heartbeat("alice", 1, Online, t0 + secs(10.0), WALL + 10_000);
    presence.heartbeat("alice", 1, Online, t0 + secs(20.0), WALL + 20_000);

    presence.tick(t0 + secs(40.0));
    assert_eq!(presence.entry("alice").state, Online);
    presence.tick(t0 + secs(45.0));
    assert_eq!(presence.entry("alice").state, Offline);
}

#[test]
fn other_device_keeps_user_present() {
    let mut presence = tracker();
    let t0 = Instant::now();
    presence.heartbeat("alice", 1, Online, t0, WALL);
    presence.heartbeat("alice", 2, Away, t0 + secs(20.0), WALL);

    presence.tick(t0 + secs(30.0));
    assert_eq!(presence.entry("alice").state, Away);
}

#[test]
fn change_right_after_subscribe_waits_for_the_window() {
    let mut presence = tracker();
    let t0 = Instant::now();
    presence.subscribe(9, &users(&["alice"]), t0);
    let output = presence.heartbeat("alice", 1, Online, t0 + secs(0.5), WALL);
    assert!(
        states_for(&output, 9, "alice").is_empty(),
        "the reply counts as an update"
    );

    let due = presence.tick(t0 + secs(1.0));
    assert_eq!(states_for(&due, 9, "alice"), vec![Online]);
}

#[test]
fn change_is_sent_at_once() {
    let mut presence = tracker();
    let t0 = Instant::now();
    presence.subscribe(9, &users(&["alice"]), t0);
    let output = presence.heartbeat("alice", 1, Online, t0 + secs(2.0), WALL);
    assert_eq!(states_for(&output, 9, "alice"), vec![Online]);
    assert_eq!(output.notices[0].entries[0].last_seen_ms, WALL);
}

#[test]
fn flapping_sends_at_most_one_change_per_second() {
    let mut presence = tracker();
    let t0 = Instant::now();
    presence.subscribe(9, &users(&["alice"]), t0);
    presence.heartbeat("alice", 1, Online, t0 + secs(5.0), WALL);

    // Flap every 100 ms for 10 s, ticking between flaps like the edge does.
    let mut sent = Vec::new();
    for step in 1..=100u32 {
        let now = t0 + secs(5.0) + secs(0.1) * step;
        let state = if step % 2 == 0 { Online } else { Away };
        let output = presence.heartbeat("alice", 1, state, now, WALL);
        sent.extend(
            states_for(&output, 9, "alice")
                .into_iter()
                .map(|s| (now, s)),
        );
        let output = presence.tick(now);
        sent.extend(
            states_for(&output, 9, "alice")
                .into_iter()
                .map(|s| (now, s)),
        );
    }
    assert!(!sent.is_empty());
    for pair in sent.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(gap >= secs(1.0), "two changes {gap:?} apart");
    }
    assert!(sent.len() <= 10, "{} changes in 10 s", sent.len());
}

#[test]
fn debounced_change_carries_the_newest_state() {
    let mut presence = tracker();
    let t0 = Instant::now();
    presence.subscribe(9, &users(&["alice"]), t0);
    presence.heartbeat("alice", 1, Online, t0 + secs(5.0), WALL);
    let output = presence.heartbeat("alice", 1, Away, t0 + secs(5.2), WALL);
    assert!(
        states_for(&output, 9, "alice").is_empty(),
        "inside the window"
    );

    let early = presence.tick(t0 + secs(5.9));
    assert!(states_for(&early, 9, "alice").is_empty());
    let due = presence.tick(t0 + secs(6.0));
    assert_eq!(states_for(&due, 9, "alice"), vec![Away]);
}

#[test]
fn flap_back_inside_window_sends_nothing() {
    let mut presence = tracker();
    let t0 = Instant::now();
    presence.subscribe(9, &users(&["alice"]), t0);
    presence.heartbeat("alice", 1, Online, t0 + secs(5.0), WALL);
    presence.heartbeat("alice", 1, Away, t0 + secs(5.2), WALL);
    presence.heartbeat("alice", 1, Online, t0 + secs(5.4), WALL);

    let due = presence.tick(t0 + secs(6.0));
    assert!(states_for(&due, 9, "alice").is_empty());
}

#[test]
fn snapshot_every_interval_with_all_watched() {
    let mut presence = tracker();
    let t0 = Instant::now();
    presence.heartbeat("alice", 1, Online, t0, WALL);
    presence.heartbeat("bob", 2, Away, t0, WALL);
    let reply = presence.subscribe(9, &users(&["alice", "bob", "carol"]), t0);
    assert_eq!(reply.len(), 3);

    // Keep the devices alive past the snapshot.
    presence.heartbeat("alice", 1, Online, t0 + secs(20.0), WALL);
    presence.heartbeat("bob", 2, Away, t0 + secs(20.0), WALL);
    assert!(presence.tick(t0 + secs(29.9)).notices.is_empty());

    let output = presence.tick(t0 + secs(30.0));
    let snapshot: Vec<&Notice> = output.notices.iter().filter(|n| n.snapshot).collect();
    assert_eq!(snapshot.len(), 1);
    let states: Vec<(&str, PresenceState)> = snapshot[0]
        .entries
        .iter()
        .map(|entry| (entry.user.as_str(), entry.state))
        .collect();
    assert_eq!(
        states,
        vec![("alice", Online), ("bob", Away), ("carol", Offline)]
    );

    let next = presence.tick(t0 + secs(60.0));
    assert_eq!(next.notices.iter().filter(|n| n.snapshot).count(), 1);
}

#[test]
fn unsubscribed_watcher_gets_nothing() {
    let mut presence = tracker();
    let t0 = Instant::now();
    presence.subscribe(9, &users(&["alice"]), t0);
    presence.session_closed("watcher", 9, t0);
    let output = presence.heartbeat("alice", 1, Online, t0 + secs(2.0), WALL);
    assert!(output.notices.is_empty());
    assert!(presence.tick(t0 + secs(31.0)).notices.is_empty());
}

#[test]
fn resubscribe_replaces_the_set() {
    let mut presence = tracker();
    let t0 = Instant::now();
    presence.subscribe(9, &users(&["alice"]), t0);
    presence.subscribe(9, &users(&["bob"]), t0 + secs(1.0));
    let output = presence.heartbeat("alice", 1, Online, t0 + secs(3.0), WALL);
    assert!(output.notices.is_empty());
    let output = presence.heartbeat("bob", 2, Online, t0 + secs(3.0), WALL);
    assert_eq!(states_for(&output, 9, "bob"), vec![Online]);
}

#[test]
fn last_seen_moves_only_with_online_activity() {
    let mut presence = tracker();
    let t0 = Instant::now();
    presence.heartbeat("alice", 1, Online, t0, WALL);
    presence.heartbeat("alice", 1, Away, t0 + secs(10.0), WALL + 10_000);
    assert_eq!(presence.entry("alice").last_seen_ms, WALL);

    assert!(presence.note_activity("alice", WALL + 12_000));
    assert_eq!(presence.entry("alice").last_seen_ms, WALL + 12_000);
    assert!(
        !presence.note_activity("nobody", WALL),
        "untracked users are the caller's"
    );

    // A heartbeat stamped earlier (a skewed wall clock) never moves last seen back.
    presence.heartbeat("alice", 1, Online, t0 + secs(11.0), WALL + 5_000);
    assert_eq!(presence.entry("alice").last_seen_ms, WALL + 12_000);
}

#[test]
fn state_is_dropped_when_unused() {
    let mut presence = tracker();
    let t0 = Instant::now();
    presence.heartbeat("alice", 1, Online, t0, WALL);
    presence.tick(t0 + secs(26.0));
    assert_eq!(presence.device_count(), 0);
    assert!(presence.present_users().is_empty());
    assert!(presence.users.is_empty());
}

fn remote(user: &str, state: PresenceState) -> PresenceEntry {
    PresenceEntry {
        user: user.to_owned(),
        state,
        last_seen_ms: WALL,
    }
}

#[test]
fn remote_presence_reaches_watchers_with_debounce() {
    let mut presence = tracker();
    let t0 = Instant::now();
    presence.subscribe(9, &users(&["alice"]), t0);

    let online = presence.set_remote(&remote("alice", Online), t0 + secs(2.0));
    assert_eq!(states_for(&online, 9, "alice"), vec![Online]);
    assert!(
        online.transitions.is_empty(),
        "remote state is not reported back"
    );

    let away = presence.set_remote(&remote("alice", Away), t0 + secs(2.5));
    assert!(
        states_for(&away, 9, "alice").is_empty(),
        "inside the debounce window"
    );
    let flushed = presence.tick(t0 + secs(3.0));
    assert_eq!(states_for(&flushed, 9, "alice"), vec![Away]);
}

#[test]
fn local_and_remote_merge() {
    let mut presence = tracker();
    let t0 = Instant::now();
    presence.set_remote(&remote("alice", Away), t0);
    let local = presence.heartbeat("alice", 1, Online, t0, WALL);
    assert_eq!(presence.entry("alice").state, Online);
    assert_eq!(local.transitions.len(), 1, "the local change is reported");
    assert_eq!(local.transitions[0].state, Online);

    let closed = presence.session_closed("alice", 1, t0 + secs(1.0));
    assert_eq!(presence.entry("alice").state, Away, "still away elsewhere");
    assert_eq!(closed.transitions[0].state, Offline, "offline on this edge");
    assert!(presence.present_users().is_empty());

    presence.set_remote(&remote("alice", Offline), t0 + secs(2.0));
    assert_eq!(presence.entry("alice").state, Offline);
    assert!(presence.remote_users().is_empty());
}

#[test]
fn remote_state_kept_for_later_subscription() {
    let mut presence = tracker();
    let t0 = Instant::now();
    presence.set_remote(&remote("alice", Online), t0);
    let reply = presence.subscribe(9, &users(&["alice"]), t0 + secs(1.0));
    assert_eq!(reply[0].state, Online);
    assert_eq!(reply[0].last_seen_ms, WALL);
}
