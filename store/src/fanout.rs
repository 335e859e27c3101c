//! Fan-out of committed messages to the edges attached to this owner.
//!
//! Publishing never waits: an edge whose queue is full loses its subscription (its
//! receiver closes), and the edge re-attaches and catches up from history.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tidings_schema::mesh::Delivery;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

/// Default capacity of an edge's delivery queue.
pub const EDGE_QUEUE_CAPACITY: usize = 16_384;

/// The attached edges and their delivery queues.
#[derive(Debug)]
pub(crate) struct Fanout {
    capacity: usize,
    edges: Mutex<HashMap<String, mpsc::Sender<Arc<Delivery>>>>,
}

impl Fanout {
    pub(crate) fn new(capacity: usize) -> Self {
        Fanout {
            capacity,
            edges: Mutex::new(HashMap::new()),
        }
    }

    /// Registers `edge_id`, replacing (and so closing) an earlier subscription of that id.
    pub(crate) fn attach(&self, edge_id: &str) -> mpsc::Receiver<Arc<Delivery>> {
        let (sender, receiver) = mpsc::channel(self.capacity);
        let previous = self.lock().insert(edge_id.to_owned(), sender);
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

    /// Queues each delivery for every attached edge, in order, without waiting.
    pub(crate) fn publish(&self, deliveries: Vec<Delivery>) {
        if deliveries.is_empty() {
            return;
        }
        let mut edges = self.lock();
        for delivery in deliveries {
            let delivery = Arc::new(delivery);
            edges.retain(
                |edge_id, queue| match queue.try_send(Arc::clone(&delivery)) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_)) => {
                        tracing::warn!(
                            edge_id = edge_id.as_str(),
                            capacity = self.capacity,
                            "edge delivery queue is full; dropping its subscription until it \
                         re-attaches"
                        );
                        false
                    }
                    Err(TrySendError::Closed(_)) => {
                        tracing::debug!(edge_id = edge_id.as_str(), "edge detached");
                        false
                    }
                },
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<Arc<Delivery>>>> {
        // A panic while the lock was held leaves only a map of senders, which stays valid.
        self.edges
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_schema::frame::Message;

    fn delivery(seq: u64) -> Delivery {
        Delivery {
            message: Message {
                seq,
                ..Message::default()
            },
            recipients: vec!["alice".into()],
            origin_device: String::new(),
        }
    }

    #[test]
    fn full_queue_drops_subscription() {
        let fanout = Fanout::new(2);
        let mut slow = fanout.attach("slow");
        fanout.publish(vec![delivery(1), delivery(2), delivery(3)]);

        assert_eq!(slow.try_recv().unwrap().message.seq, 1);
        assert_eq!(slow.try_recv().unwrap().message.seq, 2);
        assert!(matches!(
            slow.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));

        let mut again = fanout.attach("slow");
        fanout.publish(vec![delivery(4)]);
        assert_eq!(again.try_recv().unwrap().message.seq, 4);
    }

    #[test]
    fn reattach_replaces_queue() {
        let fanout = Fanout::new(8);
        let mut first = fanout.attach("edge-a");
        let mut second = fanout.attach("edge-a");
        fanout.publish(vec![delivery(1)]);

        assert!(matches!(
            first.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        assert_eq!(second.try_recv().unwrap().message.seq, 1);
    }
}
