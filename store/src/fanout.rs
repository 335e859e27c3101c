//! Fan-out of committed messages to the edges attached to this owner.
//!
//! Publishing never waits: an edge whose queue is full loses its subscription (its
//! receiver closes), and the edge re-attaches and catches up from history.
//!
//! An edge that registered its users gets one copy of a delivery when at least one
//! recipient is registered there, with the recipient list cut down to those users. An
//! edge that never registered gets every delivery. A registration lasts for its lease;
//! when it runs out the edge's subscription and registration are dropped, so an edge
//! that stopped renewing stops costing the owner anything.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidings_schema::frame::Message;
use tidings_schema::mesh::{Delivery, Registration};
use tidings_schema::presence::PresenceEntry;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// Default capacity of an edge's delivery queue.
pub const EDGE_QUEUE_CAPACITY: usize = 16_384;

/// The users an edge registered and when the registration runs out.
#[derive(Debug)]
struct EdgeUsers {
    users: HashSet<String>,
    expires_at: Instant,
}

#[derive(Debug, Default)]
struct State {
    queues: HashMap<String, mpsc::Sender<Arc<Delivery>>>,
    registrations: HashMap<String, EdgeUsers>,
}

/// The attached edges, their delivery queues and their registered users.
#[derive(Debug)]
pub(crate) struct Fanout {
    capacity: usize,
    state: Mutex<State>,
}

impl Fanout {
    pub(crate) fn new(capacity: usize) -> Self {
        Fanout {
            capacity,
            state: Mutex::new(State::default()),
        }
    }

    /// Registers `edge_id`, replacing (and so closing) an earlier subscription of that id.
    pub(crate) fn attach(&self, edge_id: &str) -> mpsc::Receiver<Arc<Delivery>> {
        let (sender, receiver) = mpsc::channel(self.capacity);
        let previous = self.lock().queues.insert(edge_id.to_owned(), sender);
        if previous.is_some() {
            tracing::info!(
                edge_id,
                "edge re-attached; its previous delivery queue is closed"
            );
        } else {
            tracing::info!(edge_id, "edge attached");
        }
        receiver
    }

    /// Applies an edge's registration and renews its lease from `now`.
    pub(crate) fn register(&self, registration: &Registration, now: Instant) {
        let lease = Duration::from_millis(u64::from(registration.lease_ms));
        let mut state = self.lock();
        let entry = state
            .registrations
            .entry(registration.edge_id.clone())
            .or_insert_with(|| EdgeUsers {
                users: HashSet::new(),
                expires_at: now,
            });
        if registration.replace {
            entry.users.clear();
        }
        for user in &registration.removed {
            entry.users.remove(user);
        }
        entry.users.extend(registration.added.iter().cloned());
        entry.expires_at = now + lease;
        tracing::debug!(
            edge_id = registration.edge_id,
            replace = registration.replace,
            added = registration.added.len(),
            removed = registration.removed.len(),
            users = entry.users.len(),
            "edge registration applied"
        );
    }

    /// Queues each delivery, in order and without waiting, for every attached edge that
    /// serves a recipient. Registrations that ran out before `now` are dropped first.
    pub(crate) fn publish(&self, deliveries: Vec<Delivery>, now: Instant) {
        if deliveries.is_empty() {
            return;
        }
        let mut guard = self.lock();
        let state = &mut *guard;
        expire(state, now);
        for delivery in deliveries {
            let shared = Arc::new(delivery);
            state.queues.retain(|edge_id, queue| {
                let copy = match state.registrations.get(edge_id) {
                    None => Arc::clone(&shared),
                    Some(registered) => match for_edge(&shared, &registered.users) {
                        Some(copy) => copy,
                        None => return true,
                    },
                };
                self.offer(edge_id, queue, copy)
            });
        }
    }

    /// Returns the copy of a replayed delivery for `edge_id`, cut down to its registered
    /// users as [`Fanout::publish`] does, or `None` when no recipient is registered there.
    pub(crate) fn copy_for(&self, edge_id: &str, delivery: Arc<Delivery>) -> Option<Arc<Delivery>> {
        match self.lock().registrations.get(edge_id) {
            None => Some(delivery),
            Some(registered) => for_edge(&delivery, &registered.users),
        }
    }

    /// Returns the ids of the edges with a delivery queue.
    pub(crate) fn attached_edges(&self) -> Vec<String> {
        self.lock().queues.keys().cloned().collect()
    }

    /// Queues presence changes for the named edges, one delivery per edge, without
    /// waiting. An edge that is not attached is skipped, because it gets the full state
    /// when it attaches. With `snapshot` each list replaces what its edge holds.
    pub(crate) fn publish_presence(
        &self,
        pushes: Vec<(String, Vec<PresenceEntry>)>,
        snapshot: bool,
    ) {
        let mut state = self.lock();
        for (edge_id, entries) in pushes {
            let Some(queue) = state.queues.get(&edge_id) else {
                continue;
            };
            let delivery = Arc::new(Delivery {
                message: Message::default(),
                recipients: Vec::new(),
                origin_device: String::new(),
                receipt: None,
                presence: entries,
                presence_snapshot: snapshot,
                position: None,
            });
            if !self.offer(&edge_id, queue, delivery) {
                state.queues.remove(&edge_id);
            }
        }
    }

    /// Queues one delivery; returns whether the edge keeps its subscription.
    fn offer(
        &self,
        edge_id: &str,
        queue: &mpsc::Sender<Arc<Delivery>>,
        delivery: Arc<Delivery>,
    ) -> bool {
        match queue.try_send(delivery) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::warn!(
                    edge_id,
                    capacity = self.capacity,
                    "edge delivery queue is full; dropping its subscription until it re-attaches"
                );
                false
            }
            Err(TrySendError::Closed(_)) => {
                tracing::debug!(edge_id, "edge detached");
                false
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while the lock was held leaves only maps of senders and names, which
        // stay valid.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Drops the registrations that ran out, with the subscriptions of their edges.
fn expire(state: &mut State, now: Instant) {
    let expired: Vec<String> = state
        .registrations
        .iter()
        .filter(|(_, registered)| registered.expires_at <= now)
        .map(|(edge_id, _)| edge_id.clone())
        .collect();
    for edge_id in expired {
        state.registrations.remove(&edge_id);
        state.queues.remove(&edge_id);
        tracing::info!(
            edge_id,
            "edge registration expired without renewal; fan-out to this edge stopped"
        );
    }
}

/// Returns the copy of `delivery` for an edge serving `users`, or `None` when no
/// recipient is among them.
fn for_edge(delivery: &Delivery, users: &HashSet<String>) -> Option<Arc<Delivery>> {
    let recipients: Vec<String> = delivery
        .recipients
        .iter()
        .filter(|user| users.contains(*user))
        .cloned()
        .collect();
    if recipients.is_empty() {
        return None;
    }
    Some(Arc::new(Delivery {
        message: delivery.message.clone(),
        recipients,
        origin_device: delivery.origin_device.clone(),
        receipt: delivery.receipt.clone(),
        presence: delivery.presence.clone(),
        presence_snapshot: delivery.presence_snapshot,
        position: delivery.position,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(seq: u64) -> Delivery {
        Delivery {
            message: Message {
                seq,
                ..Message::default()
            },
            recipients: vec!["alice".into()],
            origin_device: String::new(),
            receipt: None,
            presence: Vec::new(),
            presence_snapshot: false,
            position: None,
        }
    }

    #[test]
    fn full_queue_drops_subscription() {
        let fanout = Fanout::new(2);
        let mut slow = fanout.attach("slow");
        fanout.publish(vec![delivery(1), delivery(2), delivery(3)], Instant::now());

        assert_eq!(slow.try_recv().unwrap().message.seq, 1);
        assert_eq!(slow.try_recv().unwrap().message.seq, 2);
        assert!(matches!(
            slow.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));

        let mut again = fanout.attach("slow");
        fanout.publish(vec![delivery(4)], Instant::now());
        assert_eq!(again.try_recv().unwrap().message.seq, 4);
    }

    #[test]
    fn reattach_replaces_queue() {
        let fanout = Fanout::new(8);
        let mut first = fanout.attach("edge-a");
        let mut second = fanout.attach("edge-a");
        fanout.publish(vec![delivery(1)], Instant::now());

        assert!(matches!(
            first.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        assert_eq!(second.try_recv().unwrap().message.seq, 1);
    }

    fn group_delivery(seq: u64, recipients: &[&str]) -> Delivery {
        Delivery {
            recipients: recipients.iter().map(|user| (*user).to_owned()).collect(),
            ..delivery(seq)
        }
    }

    fn register(fanout: &Fanout, edge_id: &str, users: &[&str], now: Instant) {
        fanout.register(
            &Registration {
                edge_id: edge_id.into(),
                replace: true,
                added: users.iter().map(|user| (*user).to_owned()).collect(),
                removed: Vec::new(),
                lease_ms: 1_000,
            },
            now,
        );
    }

    #[test]
    fn one_copy_per_edge_with_members() {
        let fanout = Fanout::new(8);
        let now = Instant::now();
        let mut east = fanout.attach("east");
        let mut west = fanout.attach("west");
        let mut idle = fanout.attach("idle");
        register(&fanout, "east", &["ann", "bo"], now);
        register(&fanout, "west", &["cy"], now);
        register(&fanout, "idle", &["zed"], now);

        fanout.publish(vec![group_delivery(1, &["ann", "bo", "cy", "dee"])], now);

        let east_copy = east.try_recv().unwrap();
        assert_eq!(east_copy.recipients, vec!["ann", "bo"]);
        assert!(
            east.try_recv().is_err(),
            "one copy for the edge, not one per member"
        );
        assert_eq!(west.try_recv().unwrap().recipients, vec!["cy"]);
        assert!(
            idle.try_recv().is_err(),
            "no copy for an edge without members"
        );
    }

    #[test]
    fn delta_registration_adds_and_removes() {
        let fanout = Fanout::new(8);
        let now = Instant::now();
        let mut edge = fanout.attach("edge");
        register(&fanout, "edge", &["ann"], now);
        fanout.register(
            &Registration {
                edge_id: "edge".into(),
                replace: false,
                added: vec!["bo".into()],
                removed: vec!["ann".into()],
                lease_ms: 1_000,
            },
            now,
        );

        fanout.publish(vec![group_delivery(1, &["ann"])], now);
        assert!(edge.try_recv().is_err(), "ann was removed");
        fanout.publish(vec![group_delivery(2, &["bo"])], now);
        assert_eq!(edge.try_recv().unwrap().message.seq, 2);
    }

    #[test]
    fn registration_expires_without_renewal() {
        let fanout = Fanout::new(8);
        let start = Instant::now();
        let mut renewed = fanout.attach("renewed");
        let mut silent = fanout.attach("silent");
        register(&fanout, "renewed", &["ann"], start);
        register(&fanout, "silent", &["ann"], start);
        register(
            &fanout,
            "renewed",
            &["ann"],
            start + Duration::from_millis(900),
        );

        fanout.publish(
            vec![group_delivery(1, &["ann"])],
            start + Duration::from_millis(1_500),
        );
        assert_eq!(renewed.try_recv().unwrap().message.seq, 1);
        assert!(matches!(
            silent.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }
}
