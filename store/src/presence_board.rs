//! Cluster presence at the owner of users' home shards: each edge reports the presence of
//! its users, and the board pushes to every attached edge the presence of each user on
//! the other edges.
//!
//! A user's presence seen from edge `E` is the most present state among the reports of
//! every edge except `E`, because `E` merges its own devices itself. The board remembers
//! what it last pushed to each edge and pushes only a changed state, so a heartbeat that
//! changes nothing costs no mesh traffic. Each report lasts a lease, so the state of an
//! edge that stops reporting lapses to offline.
//!
//! The board does no I/O and reads no clock: every method takes `now`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use tidings_schema::mesh::PresenceReport;
use tidings_schema::presence::{PresenceEntry, PresenceState};

/// Presence changes for one edge.
pub(crate) type EdgePush = (String, Vec<PresenceEntry>);

struct EdgeReport {
    state: PresenceState,
    last_seen_ms: u64,
    expires_at: Instant,
}

#[derive(Default)]
struct UserBoard {
    /// The latest report of each edge, by edge id.
    reports: HashMap<String, EdgeReport>,
    /// The state last pushed to each edge; a missing edge was sent offline or nothing.
    pushed: HashMap<String, PresenceState>,
}

impl UserBoard {
    /// Returns the user's presence on every edge except `viewer`.
    fn view_from(&self, viewer: &str) -> (PresenceState, u64) {
        let others = self
            .reports
            .iter()
            .filter(|(edge, _)| edge.as_str() != viewer);
        others.fold((PresenceState::Offline, 0), |(state, seen), (_, report)| {
            (state.max(report.state), seen.max(report.last_seen_ms))
        })
    }
}

/// The presence reports of every edge for the users whose home shard this owner holds.
#[derive(Default)]
pub(crate) struct PresenceBoard {
    users: HashMap<String, UserBoard>,
    /// Report deadlines; an entry is stale when the report's deadline moved.
    expiries: BinaryHeap<Reverse<(Instant, String, String)>>,
}

impl PresenceBoard {
    /// Applies an edge's report and returns the changes to push to the `attached` edges.
    /// Reports whose lease ran out before `now` are dropped first.
    pub(crate) fn report(
        &mut self,
        report: PresenceReport,
        attached: &[String],
        now: Instant,
    ) -> Vec<EdgePush> {
        let mut touched = self.expire(now);
        let lease = Duration::from_millis(u64::from(report.lease_ms));
        for entry in report.entries {
            let expires_at = now + lease;
            let board = self.users.entry(entry.user.clone()).or_default();
            let edge_report = EdgeReport {
                state: entry.state,
                last_seen_ms: entry.last_seen_ms,
                expires_at,
            };
            board.reports.insert(report.edge_id.clone(), edge_report);
            let deadline = (expires_at, entry.user.clone(), report.edge_id.clone());
            self.expiries.push(Reverse(deadline));
            touched.push(entry.user);
        }
        self.pushes(touched, attached)
    }

    /// Forgets what was pushed to `edge_id` and returns the full state it must get: every
    /// user present on another edge. Called when the edge attaches, because an edge that
    /// attaches again may have restarted and lost everything it was sent.
    pub(crate) fn attach(&mut self, edge_id: &str) -> Vec<PresenceEntry> {
        let mut entries = Vec::new();
        for (user, board) in &mut self.users {
            board.pushed.remove(edge_id);
            let (state, last_seen_ms) = board.view_from(edge_id);
            if state != PresenceState::Offline {
                board.pushed.insert(edge_id.to_owned(), state);
                entries.push(PresenceEntry {
                    user: user.clone(),
                    state,
                    last_seen_ms,
                });
            }
        }
        entries.sort_by(|a, b| a.user.cmp(&b.user));
        entries
    }

    /// Returns the number of users with at least one report or pushed state.
    #[cfg(test)]
    pub(crate) fn user_count(&self) -> usize {
        self.users.len()
    }

    fn expire(&mut self, now: Instant) -> Vec<String> {
        let mut touched = Vec::new();
        while let Some(Reverse((deadline, _, _))) = self.expiries.peek() {
            if *deadline > now {
                break;
            }
            let Some(Reverse((deadline, user, edge_id))) = self.expiries.pop() else {
                break;
            };
            let Some(board) = self.users.get_mut(&user) else {
                continue;
            };
            let current = board.reports.get(&edge_id).map(|report| report.expires_at);
            if current != Some(deadline) {
                continue;
            }
            board.reports.remove(&edge_id);
            touched.push(user);
        }
        touched
    }

    /// Compares each touched user's view from every attached edge with what that edge was
    /// sent, and collects the differences per edge.
    fn pushes(&mut self, mut touched: Vec<String>, attached: &[String]) -> Vec<EdgePush> {
        touched.sort();
        touched.dedup();
        let mut by_edge: HashMap<&str, Vec<PresenceEntry>> = HashMap::new();
        for user in touched {
            let Some(board) = self.users.get_mut(&user) else {
                continue;
            };
            for edge_id in attached {
                let (state, last_seen_ms) = board.view_from(edge_id);
                let last_pushed = board.pushed.get(edge_id).copied();
                if last_pushed.unwrap_or(PresenceState::Offline) == state {
                    continue;
                }
                if state == PresenceState::Offline {
                    board.pushed.remove(edge_id);
                } else {
                    board.pushed.insert(edge_id.clone(), state);
                }
                by_edge.entry(edge_id).or_default().push(PresenceEntry {
                    user: user.clone(),
                    state,
                    last_seen_ms,
                });
            }
            // NOTE: an offline report is kept until its lease ends, so its last seen time
            // still reaches the other edges with a later change.
            if board.reports.is_empty() && board.pushed.is_empty() {
                self.users.remove(&user);
            }
        }
        let mut pushes: Vec<EdgePush> = by_edge
            .into_iter()
            .map(|(edge_id, entries)| (edge_id.to_owned(), entries))
            .collect();
        pushes.sort_by(|a, b| a.0.cmp(&b.0));
        pushes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edges(list: &[&str]) -> Vec<String> {
        list.iter().map(|edge| (*edge).to_owned()).collect()
    }

    fn report(edge_id: &str, user: &str, state: PresenceState) -> PresenceReport {
        PresenceReport {
            edge_id: edge_id.into(),
            entries: vec![PresenceEntry {
                user: user.into(),
                state,
                last_seen_ms: 1_000,
            }],
            lease_ms: 30_000,
        }
    }

    fn renewal(edge_id: &str) -> PresenceReport {
        PresenceReport {
            edge_id: edge_id.into(),
            entries: Vec::new(),
            lease_ms: 30_000,
        }
    }

    fn states(pushes: &[EdgePush]) -> Vec<(String, String, PresenceState)> {
        let mut flat = Vec::new();
        for (edge_id, entries) in pushes {
            for entry in entries {
                flat.push((edge_id.clone(), entry.user.clone(), entry.state));
            }
        }
        flat
    }

    #[test]
    fn change_goes_to_other_edges_only() {
        let mut board = PresenceBoard::default();
        let attached = edges(&["a", "b", "c"]);
        let now = Instant::now();

        let pushes = board.report(report("a", "ann", PresenceState::Online), &attached, now);
        assert_eq!(
            states(&pushes),
            vec![
                ("b".into(), "ann".into(), PresenceState::Online),
                ("c".into(), "ann".into(), PresenceState::Online),
            ]
        );
    }

    #[test]
    fn unchanged_state_pushes_nothing() {
        let mut board = PresenceBoard::default();
        let attached = edges(&["a", "b"]);
        let now = Instant::now();
        board.report(report("a", "ann", PresenceState::Online), &attached, now);

        let again = board.report(report("a", "ann", PresenceState::Online), &attached, now);
        assert!(again.is_empty(), "a renewal is not a change: {again:?}");
    }

    #[test]
    fn most_present_edge_wins() {
        let mut board = PresenceBoard::default();
        let attached = edges(&["a", "b", "c"]);
        let now = Instant::now();
        board.report(report("a", "ann", PresenceState::Online), &attached, now);
        let pushes = board.report(report("b", "ann", PresenceState::Away), &attached, now);
        // Edge a now sees away from b; c still sees online, so c gets nothing.
        assert_eq!(
            states(&pushes),
            vec![("a".into(), "ann".into(), PresenceState::Away)]
        );

        let pushes = board.report(report("a", "ann", PresenceState::Offline), &attached, now);
        assert_eq!(
            states(&pushes),
            vec![
                ("b".into(), "ann".into(), PresenceState::Offline),
                ("c".into(), "ann".into(), PresenceState::Away),
            ]
        );
    }

    #[test]
    fn silent_edge_lapses_to_offline() {
        let mut board = PresenceBoard::default();
        let attached = edges(&["a", "b"]);
        let start = Instant::now();
        board.report(report("a", "ann", PresenceState::Online), &attached, start);

        // Edge b's empty renewals are what let the board notice that a's report lapsed.
        let early = board.report(renewal("b"), &attached, start + Duration::from_secs(29));
        assert!(early.is_empty());
        let late = board.report(renewal("b"), &attached, start + Duration::from_secs(30));
        assert_eq!(
            states(&late),
            vec![("b".into(), "ann".into(), PresenceState::Offline)]
        );
        assert_eq!(board.user_count(), 0, "nothing left to remember");
    }

    #[test]
    fn renewal_moves_the_lease() {
        let mut board = PresenceBoard::default();
        let attached = edges(&["a", "b"]);
        let start = Instant::now();
        board.report(report("a", "ann", PresenceState::Online), &attached, start);
        let renewed_at = start + Duration::from_secs(20);
        board.report(
            report("a", "ann", PresenceState::Online),
            &attached,
            renewed_at,
        );

        let after_first_lease =
            board.report(renewal("b"), &attached, start + Duration::from_secs(35));
        assert!(after_first_lease.is_empty(), "{after_first_lease:?}");
    }

    #[test]
    fn attach_sends_full_state() {
        let mut board = PresenceBoard::default();
        let now = Instant::now();
        board.report(
            report("a", "ann", PresenceState::Online),
            &edges(&["a"]),
            now,
        );
        board.report(
            report("a", "bo", PresenceState::Offline),
            &edges(&["a"]),
            now,
        );

        let snapshot = board.attach("b");
        assert_eq!(snapshot.len(), 1);
        assert_eq!(snapshot[0].user, "ann");
        assert_eq!(snapshot[0].state, PresenceState::Online);
        assert!(
            board.attach("a").is_empty(),
            "an edge never sees its own report"
        );

        let pushes = board.report(
            report("a", "ann", PresenceState::Offline),
            &edges(&["a", "b"]),
            now,
        );
        assert_eq!(
            states(&pushes),
            vec![("b".into(), "ann".into(), PresenceState::Offline)]
        );
    }
}
