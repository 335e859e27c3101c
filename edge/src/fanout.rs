//! Fan-out from owners to local sessions: one dispatcher task per owner.
//!
//! Each dispatcher also keeps the owner's registration of this edge current. It sends the
//! full set of users with sessions here when it starts (a remote owner gets it again after
//! every reconnect), then each arrival or departure, and a renewal before the lease runs
//! out. The owner sends this edge one copy of a message when a recipient is registered
//! here, and the dispatcher resolves the recipients to their local sessions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tidings_relay::OwnerHandle;
use tidings_relay::handle::UserSource;
use tidings_schema::frame::{Deliver, Frame};
use tidings_schema::mesh::Delivery;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{trace, warn};

use crate::metrics::EdgeMetrics;
use crate::presence_hub::PresenceHub;
use crate::registry::{EncodedDelivery, SessionRegistry, UserChange};
use crate::writer;

/// Pause before attaching again after an owner closed this edge's delivery queue.
const REATTACH_PAUSE: Duration = Duration::from_millis(100);

/// How long an owner keeps this edge's registration without a renewal.
pub const REGISTRATION_LEASE: Duration = Duration::from_secs(30);

/// How often the registration is renewed: a third of the lease, so two renewals can be
/// lost before it expires.
const REGISTRATION_RENEWAL: Duration = Duration::from_secs(10);

/// Routes every delivery from one owner to the local sessions of its recipients until
/// `shutdown` fires, and keeps this edge's user registration with the owner current.
///
/// An owner closes an edge's queue when the edge falls too far behind; the dispatcher
/// then attaches again, and clients fill the gap from history by their seq cursors.
pub async fn run_dispatcher(
    owner_index: usize,
    owner: OwnerHandle,
    edge_id: String,
    registry: Arc<SessionRegistry>,
    presence: Arc<PresenceHub>,
    metrics: Arc<EdgeMetrics>,
    shutdown: CancellationToken,
) {
    // NOTE: subscribe before the full set is read, so no arrival falls between the two.
    let mut changes = registry.subscribe();
    let users: Arc<dyn UserSource> = registry.clone();
    owner.register_users(&edge_id, users, REGISTRATION_LEASE);
    let mut renewal = tokio::time::interval(REGISTRATION_RENEWAL);
    renewal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    renewal.reset();

    let mut deliveries = owner.attach_edge(&edge_id);
    loop {
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(change) = changes.recv() => {
                let (added, removed) = drain_changes(change, &mut changes);
                owner.update_registration(&edge_id, added, removed, REGISTRATION_LEASE);
                continue;
            }
            _ = renewal.tick() => {
                owner.update_registration(&edge_id, Vec::new(), Vec::new(), REGISTRATION_LEASE);
                continue;
            }
            delivery = deliveries.recv() => delivery,
        };
        let Some(delivery) = delivery else {
            warn!(owner_index, %edge_id, "owner closed this edge's delivery queue; attaching again");
            // Pause briefly so an owner that keeps closing the queue is not hammered.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(REATTACH_PAUSE) => {}
            }
            deliveries = owner.attach_edge(&edge_id);
            continue;
        };
        // Presence pushes count in no delivery metric, so that metric stays one per message.
        if !delivery.presence.is_empty() || delivery.presence_snapshot {
            presence.apply_remote(owner_index, &delivery.presence, delivery.presence_snapshot);
            continue;
        }
        if delivery.receipt.is_some() {
            EdgeMetrics::inc(&metrics.owner_receipt_pushes);
        } else {
            EdgeMetrics::inc(&metrics.owner_deliveries);
        }
        dispatch(&registry, &delivery);
    }
}

/// Collects `first` and every change already queued into the users to add and remove,
/// keeping only the latest change of each user.
fn drain_changes(
    first: UserChange,
    changes: &mut mpsc::UnboundedReceiver<UserChange>,
) -> (Vec<String>, Vec<String>) {
    let mut latest: HashMap<String, bool> = HashMap::new();
    let mut next = Some(first);
    while let Some(change) = next {
        match change {
            UserChange::Online(user) => latest.insert(user, true),
            UserChange::Offline(user) => latest.insert(user, false),
        };
        next = changes.try_recv().ok();
    }
    let mut added = Vec::new();
    let mut removed = Vec::new();
    for (user, online) in latest {
        if online {
            added.push(user);
        } else {
            removed.push(user);
        }
    }
    (added, removed)
}

/// Offers one delivery to every recipient session, except the device that sent it.
pub fn dispatch(registry: &SessionRegistry, delivery: &Delivery) {
    if let Some(update) = &delivery.receipt {
        crate::receipts::dispatch_receipt(registry, delivery, update);
        return;
    }
    let message = &delivery.message;
    let mut encoded: Option<Arc<EncodedDelivery>> = None;
    for user in &delivery.recipients {
        for session in registry.sessions(user) {
            let is_origin = !delivery.origin_device.is_empty()
                && session.user == message.sender
                && session.device_id == delivery.origin_device;
            if is_origin {
                continue;
            }
            let encoded = encoded.get_or_insert_with(|| {
                Arc::new(EncodedDelivery {
                    conversation_id: message.conversation_id,
                    seq: message.seq,
                    frame: writer::encode(&Frame::Deliver(Deliver {
                        message: message.clone(),
                    })),
                })
            });
            trace!(
                conversation_id = message.conversation_id,
                seq = message.seq,
                session_id = session.session_id,
                "offer delivery"
            );
            session.offer(encoded);
        }
    }
}
