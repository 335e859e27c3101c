//! Fan-out from owners to local sessions: one dispatcher task per owner.

use std::sync::Arc;

use tidings_schema::frame::{Deliver, Frame};
use tidings_schema::mesh::Delivery;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace};

use crate::registry::{EncodedDelivery, SessionRegistry};
use crate::writer;

/// Routes every delivery from one owner to the local sessions of its recipients until
/// the owner drops its sender or `shutdown` fires.
pub async fn run_dispatcher(
    owner_index: usize,
    mut deliveries: mpsc::Receiver<Arc<Delivery>>,
    registry: Arc<SessionRegistry>,
    shutdown: CancellationToken,
) {
    loop {
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => break,
            delivery = deliveries.recv() => delivery,
        };
        let Some(delivery) = delivery else {
            debug!(owner_index, "owner closed its delivery queue");
            break;
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
