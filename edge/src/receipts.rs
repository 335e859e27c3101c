//! Receipts and sync at the edge: control frames that map to receipt and sync requests,
//! and the forwarding of delivery acknowledgements as delivered receipts.
//!
//! A message counts as delivered to a device only when the device sends its
//! `DeliveryAck`, never when the edge's write to the socket succeeds. Each session keeps
//! the highest acknowledged seq per conversation ([`AckRecorder`]) and one task forwards
//! new highs to the conversation's owner, coalesced: while one round of owner calls is in
//! flight, later acks only raise the pending seq.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tidings_schema::frame::Frame;
use tidings_schema::mesh::{Delivery, OwnerReply, OwnerRequest};
use tidings_schema::receipt::ReceiptUpdate;
use tokio::sync::mpsc;
use tracing::{debug, trace};

use crate::endpoint::EdgeShared;
use crate::registry::{EncodedDelivery, SessionRegistry};
use crate::writer;

/// Maps a receipt or sync control frame to its owner request, or returns the frame when it
/// is none of them.
pub fn to_request(user: &str, frame: Frame) -> Result<(u64, OwnerRequest), Frame> {
    let user = user.to_owned();
    let mapped = match frame {
        Frame::MarkRead(request) => (
            request.request_id,
            OwnerRequest::Receipt {
                user,
                conversation_id: request.conversation_id,
                delivered_seq: 0,
                read_seq: request.seq,
            },
        ),
        Frame::ReceiptsRequest(request) => (
            request.request_id,
            OwnerRequest::Receipts {
                user,
                conversation_id: request.conversation_id,
            },
        ),
        Frame::InboxSync(request) => (
            request.request_id,
            OwnerRequest::InboxSync { user, request },
        ),
        Frame::MarkUnread(request) => (
            request.request_id,
            OwnerRequest::MarkUnread { user, request },
        ),
        Frame::GapRequest(request) => (request.request_id, OwnerRequest::Gap { user, request }),
        other => return Err(other),
    };
    Ok(mapped)
}

/// Returns the reply frame of a receipt or sync reply, with the client's `request_id`, or
/// gives the reply back when it is none of them.
pub fn reply_frame(request_id: u64, reply: OwnerReply) -> Result<Frame, OwnerReply> {
    let frame = match reply {
        OwnerReply::ReceiptList(mut list) => {
            list.request_id = request_id;
            Frame::ReceiptList(list)
        }
        OwnerReply::InboxPage(mut page) => {
            page.request_id = request_id;
            Frame::InboxPage(page)
        }
        OwnerReply::GapPage(mut page) => {
            page.request_id = request_id;
            Frame::GapPage(page)
        }
        other => return Err(other),
    };
    Ok(frame)
}

/// Acknowledged seqs of one session and the delivered receipts not yet forwarded.
#[derive(Default)]
struct AckState {
    /// Highest acknowledged seq per conversation.
    cursors: HashMap<u64, u64>,
    /// New highs waiting for the forwarder, by conversation.
    pending: BTreeMap<u64, u64>,
}

/// The delivery acknowledgements of one session.
pub struct AckRecorder {
    state: Arc<Mutex<AckState>>,
    /// Wakes the forwarder; dropping it ends the forwarder after a last round.
    wake: mpsc::Sender<()>,
}

impl AckRecorder {
    /// Creates the recorder of `user`'s session and starts its forwarder on the current
    /// tokio runtime. The forwarder sends what is pending once more after the recorder is
    /// dropped, then ends.
    pub fn start(user: String, edge: Arc<EdgeShared>) -> Arc<AckRecorder> {
        let state = Arc::new(Mutex::new(AckState::default()));
        let (wake, woken) = mpsc::channel(1);
        tokio::spawn(forward(user, edge, Arc::clone(&state), woken));
        Arc::new(AckRecorder { state, wake })
    }

    /// Records that the device holds every message of `conversation_id` up to `seq`.
    pub fn record(&self, conversation_id: u64, seq: u64) {
        {
            let mut state = lock(&self.state);
            let cursor = state.cursors.entry(conversation_id).or_default();
            if seq <= *cursor {
                return;
            }
            *cursor = seq;
            state.pending.insert(conversation_id, seq);
        }
        // A full channel means a wake-up is already queued.
        let _ = self.wake.try_send(());
    }
}

fn lock(state: &Mutex<AckState>) -> std::sync::MutexGuard<'_, AckState> {
    // The state holds plain maps of seqs, which stay valid after a panic.
    state.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Forwards pending delivered receipts until the recorder is dropped, then once more.
async fn forward(
    user: String,
    edge: Arc<EdgeShared>,
    state: Arc<Mutex<AckState>>,
    mut woken: mpsc::Receiver<()>,
) {
    loop {
        let open = woken.recv().await.is_some();
        let pending = std::mem::take(&mut lock(&state).pending);
        for (conversation_id, seq) in pending {
            let request = OwnerRequest::Receipt {
                user: user.clone(),
                conversation_id,
                delivered_seq: seq,
                read_seq: 0,
            };
            trace!(conversation_id, seq, "forward delivered receipt");
            let owner = edge.router.for_conversation(conversation_id);
            if let Err(rejection) = owner.call(request).await {
                // NOTE: a lost delivered receipt is not retried: the next ack of the
                // conversation carries a higher seq that covers it.
                debug!(conversation_id, seq, %rejection, "delivered receipt not stored");
            }
        }
        if !open {
            return;
        }
    }
}

/// Offers a receipt push to every session of its recipients, on the conversation's
/// delivery stream (QUIC, WebTransport) or socket (WebSocket). The reader's other devices
/// get it too, so their receipts and unread counts converge.
pub fn dispatch_receipt(registry: &SessionRegistry, delivery: &Delivery, update: &ReceiptUpdate) {
    let mut encoded: Option<Arc<EncodedDelivery>> = None;
    for user in &delivery.recipients {
        for session in registry.sessions(user) {
            let encoded = encoded.get_or_insert_with(|| {
                Arc::new(EncodedDelivery {
                    conversation_id: update.conversation_id,
                    // NOTE: 0 marks a frame that is not a message; no message has seq 0.
                    seq: 0,
                    frame: writer::encode(&Frame::ReceiptUpdate(update.clone())),
                })
            });
            trace!(
                conversation_id = update.conversation_id,
                session_id = session.session_id,
                "offer receipt update"
            );
            session.offer(encoded);
        }
    }
}
