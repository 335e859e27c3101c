//! Fan-out from owners to local sessions: one dispatcher task per owner.

use std::sync::Arc;
use std::time::Duration;

use tidings_relay::OwnerHandle;
use tidings_schema::frame::{Deliver, Frame};
use tidings_schema::mesh::Delivery;
use tokio_util::sync::CancellationToken;
use tracing::{trace, warn};

use crate::registry::{EncodedDelivery, SessionRegistry};
use crate::writer;

/// Pause before attaching again after an owner closed this edge's delivery queue.
const REATTACH_PAUSE: Duration = Duration::from_millis(100);

/// Routes every delivery from one owner to the local sessions of its recipients until
/// `shutdown` fires.
///
/// An owner closes an edge's queue when the edge falls too far behind; the dispatcher
/// then attaches again, and clients fill the gap from history by their seq cursors.
pub async fn run_dispatcher(
    owner_index: usize,
    owner: OwnerHandle,
    edge_id: String,
    registry: Arc<SessionRegistry>,
    shutdown: CancellationToken,
) {
    let mut deliveries = owner.attach_edge(&edge_id);
    loop {
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => break,
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
        dispatch(&registry, &delivery);
    }
}

/// Offers one delivery to every recipient session, except the device that sent it.
pub fn dispatch(registry: &SessionRegistry, delivery: &Delivery) {
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
