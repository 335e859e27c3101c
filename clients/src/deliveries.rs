//! Server-opened conversation streams: `Deliver` frames in `seq` order, each acknowledged
//! with a `DeliveryAck` once the message is queued for the application.
//!
//! The client keeps a `seq` cursor per conversation. A delivery that skips ahead of the
//! cursor, for example after a reconnect, first has the missing messages fetched by seq
//! (`sync`), so the application sees every conversation without gaps or repeats. The
//! same streams carry `ReceiptUpdate` pushes, which go to the receipt book (`receipts`).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings_schema::Frame;
use tidings_schema::codec::{encode_framed, read_frame};
use tidings_schema::frame::{DeliveryAck, Message};
use tidings_schema::receipt::ReceiptUpdate;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tracing::{debug, trace, warn};

use crate::presence::PresenceInbox;
use crate::receipts::{ReceiptBook, ReceiptEvent};
use crate::session::Session;

/// Gap fills tried for one delivery, and the waits between them: about 6 s in all,
/// enough for an owner process to restart on the same machine.
const GAP_FILL_ATTEMPTS: u32 = 6;
const GAP_FILL_FIRST_RETRY: Duration = Duration::from_millis(250);
const GAP_FILL_MAX_RETRY: Duration = Duration::from_secs(2);

/// Maximum wait for this device's own send acknowledgements before a gap is fetched.
///
/// On QUIC a `SendAck` and the next `Deliver` of the same conversation travel on
/// different streams, so under loss the delivery of seq n+1 can arrive before the ack
/// of this device's seq n. Waiting for the ack avoids a needless round trip.
const OWN_ACK_WAIT: Duration = Duration::from_secs(1);

/// Receipt events queued for the application before new ones are dropped.
const RECEIPT_EVENT_BUFFER: usize = 1024;

/// Per-conversation positions of this device.
#[derive(Debug, Default)]
pub(crate) struct CursorState {
    /// Highest `seq` passed to the application, by conversation.
    pub delivered: HashMap<u64, u64>,
    /// The last seq of conversations this device started following without their
    /// backlog: a sync fetches only what comes after it.
    pub floors: HashMap<u64, u64>,
    /// Highest seq this device sent, by conversation.
    pub sent: HashMap<u64, u64>,
    /// Acknowledged seqs of this device's own sends above the cursor, by conversation.
    /// The cursor moves over them once it reaches them.
    pub own_ahead: HashMap<u64, BTreeSet<u64>>,
    /// Sends waiting for their acknowledgement, by conversation.
    pub sending: HashMap<u64, usize>,
    /// Inbox cursor of the last complete sync.
    pub inbox_cursor: u64,
}

/// Destination of the deliveries of every session: the application's channel and the
/// per-conversation cursors that survive reconnects.
#[derive(Clone)]
pub(crate) struct DeliverySink {
    tx: mpsc::Sender<Message>,
    pub(crate) state: Arc<Mutex<CursorState>>,
    /// Per-conversation gates. NOTE: a conversation's gate is held while a message or a
    /// gap is passed on, so a live delivery cannot overtake the older messages a gap fill
    /// is still fetching. Gates are per conversation so that a gap fill in one
    /// conversation never delays the others.
    gates: Arc<Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>>,
    /// Woken when a send of this device is acknowledged or given up.
    own_acks: Arc<Notify>,
    receipts: Arc<ReceiptBook>,
    receipt_tx: mpsc::Sender<ReceiptEvent>,
    receipt_rx: Arc<Mutex<Option<mpsc::Receiver<ReceiptEvent>>>>,
    /// Presence events and the presence subscription, which also outlive sessions.
    pub(crate) presence: Arc<PresenceInbox>,
}

impl DeliverySink {
    pub fn new(tx: mpsc::Sender<Message>) -> Self {
        let (receipt_tx, receipt_rx) = mpsc::channel(RECEIPT_EVENT_BUFFER);
        DeliverySink {
            tx,
            state: Arc::new(Mutex::new(CursorState::default())),
            gates: Arc::default(),
            own_acks: Arc::new(Notify::new()),
            receipts: Arc::new(ReceiptBook::default()),
            receipt_tx,
            receipt_rx: Arc::new(Mutex::new(Some(receipt_rx))),
            presence: Arc::new(PresenceInbox::default()),
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, CursorState> {
        self.state.lock().expect("cursor state poisoned")
    }

    /// Returns the gate of `conversation_id`, which orders its deliveries and gap fills.
    pub(crate) fn gate(&self, conversation_id: u64) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.gates.lock().expect("gate map poisoned");
        Arc::clone(gates.entry(conversation_id).or_default())
    }

    /// Records `seq` as delivered and returns whether it is new. A message at or below
    /// the cursor was already passed on, for example before a reconnect.
    fn advance(&self, conversation_id: u64, seq: u64) -> bool {
        let mut guard = self.lock();
        let state = &mut *guard;
        let cursor = state.delivered.entry(conversation_id).or_insert(0);
        if seq <= *cursor {
            return false;
        }
        *cursor = seq;
        skip_own_sends(state, conversation_id);
        true
    }

    /// Counts a send in `conversation_id` as waiting for its acknowledgement until the
    /// returned guard is dropped.
    pub(crate) fn begin_send(&self, conversation_id: u64) -> PendingSend {
        *self.lock().sending.entry(conversation_id).or_insert(0) += 1;
        PendingSend {
            sink: self.clone(),
            conversation_id,
        }
    }

    /// Waits while the gap before `seq` may consist of this device's own sends whose
    /// acknowledgements are still on the way, for at most [`OWN_ACK_WAIT`].
    async fn await_own_acks(&self, conversation_id: u64, seq: u64) {
        let deadline = Instant::now() + OWN_ACK_WAIT;
        loop {
            let notified = self.own_acks.notified();
            tokio::pin!(notified);
            // Registered before the check, so an ack between the check and the wait
            // still wakes this task.
            notified.as_mut().enable();
            let base = self.sync_base(conversation_id);
            if base == 0 || seq <= base + 1 {
                return;
            }
            let sending = self.lock().sending.get(&conversation_id).copied();
            if sending.unwrap_or(0) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// Returns the highest `seq` delivered in `conversation_id`, 0 when none was.
    pub fn cursor(&self, conversation_id: u64) -> u64 {
        self.lock()
            .delivered
            .get(&conversation_id)
            .copied()
            .unwrap_or(0)
    }

    /// Returns the seq after which this device needs every message: its delivery cursor,
    /// or the floor it started following the conversation at.
    pub fn sync_base(&self, conversation_id: u64) -> u64 {
        let state = self.lock();
        let cursor = state.delivered.get(&conversation_id).copied().unwrap_or(0);
        let floor = state.floors.get(&conversation_id).copied().unwrap_or(0);
        cursor.max(floor)
    }

    /// Returns the highest seq this device holds: delivered to it or sent by it.
    fn held(&self, conversation_id: u64) -> u64 {
        let state = self.lock();
        let cursor = state.delivered.get(&conversation_id).copied().unwrap_or(0);
        let sent = state.sent.get(&conversation_id).copied().unwrap_or(0);
        cursor.max(sent)
    }

    /// Moves the cursor past a message this device sent when it directly follows the
    /// cursor, so the message does not come back as a delivery or a gap fill.
    /// A later own seq is remembered, and the cursor moves over it once it gets there.
    pub fn note_sent(&self, conversation_id: u64, seq: u64) {
        {
            let mut guard = self.lock();
            let state = &mut *guard;
            let sent = state.sent.entry(conversation_id).or_insert(0);
            *sent = (*sent).max(seq);
            let cursor = state.delivered.get(&conversation_id).copied().unwrap_or(0);
            if cursor > 0 && seq > cursor {
                state
                    .own_ahead
                    .entry(conversation_id)
                    .or_default()
                    .insert(seq);
                skip_own_sends(state, conversation_id);
            }
        }
        self.own_acks.notify_waiters();
        let events = self
            .receipts
            .on_held(conversation_id, self.held(conversation_id));
        self.emit(events);
    }

    /// Takes the receiver of receipt events; `None` after the first call.
    pub fn take_receipt_events(&self) -> Option<mpsc::Receiver<ReceiptEvent>> {
        self.receipt_rx
            .lock()
            .expect("receipt receiver mutex poisoned")
            .take()
    }

    /// Stores a receipt push and releases what this device holds messages for.
    pub fn receipt(&self, update: ReceiptUpdate) {
        let held = self.held(update.conversation_id);
        let events = self.receipts.apply(update, held);
        self.emit(events);
    }

    fn emit(&self, events: Vec<ReceiptEvent>) {
        for event in events {
            if self.receipt_tx.try_send(event).is_err() {
                // NOTE: receipts can be read again with `Client::receipts`, so a full or
                // dropped receiver loses only the live view.
                trace!("receipt event dropped");
            }
        }
    }

    /// Passes `message` to the application when it is new, after any messages between
    /// the sync base and it. A failed gap fill is retried a few times, because it fails
    /// while the conversation's owner restarts.
    pub async fn deliver(&self, session: &Session, message: Message) {
        let conversation_id = message.conversation_id;
        let gate = self.gate(conversation_id);
        let _gate = gate.lock().await;
        self.await_own_acks(conversation_id, message.seq).await;
        let mut delay = GAP_FILL_FIRST_RETRY;
        for attempt in 1..=GAP_FILL_ATTEMPTS {
            let base = self.sync_base(conversation_id);
            if base == 0 || message.seq <= base + 1 {
                break;
            }
            let Err(error) = self
                .fill_after(session, conversation_id, base, Some(message.seq))
                .await
            else {
                break;
            };
            if attempt == GAP_FILL_ATTEMPTS || !session.is_open() {
                // NOTE: passing the message on would move the cursor past the gap for
                // good. Held back, it is fetched by the next delivery's gap fill or by the
                // sync after a reconnect, so a conversation that goes quiet shows it only
                // then.
                warn!(
                    conversation_id,
                    seq = message.seq,
                    attempt,
                    %error,
                    "gap fill failed; the delivery waits for a later fill"
                );
                return;
            }
            debug!(conversation_id, attempt, %error, "gap fill failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(GAP_FILL_MAX_RETRY);
        }
        self.pass_on(message).await;
    }

    pub(crate) async fn pass_on(&self, message: Message) {
        let conversation_id = message.conversation_id;
        if !self.advance(conversation_id, message.seq) {
            return;
        }
        if self.tx.send(message).await.is_err() {
            // NOTE: the application dropped the receiver. They are still acknowledged so the
            // server does not redeliver to a device that chose not to listen.
            trace!("delivery receiver dropped");
        }
        let events = self
            .receipts
            .on_held(conversation_id, self.held(conversation_id));
        self.emit(events);
    }
}

/// Moves the cursor of `conversation_id` over the own sends that directly follow it.
fn skip_own_sends(state: &mut CursorState, conversation_id: u64) {
    let Some(own) = state.own_ahead.get_mut(&conversation_id) else {
        return;
    };
    let cursor = state.delivered.entry(conversation_id).or_insert(0);
    while let Some(&seq) = own.first() {
        if seq > *cursor + 1 {
            break;
        }
        own.pop_first();
        *cursor = (*cursor).max(seq);
    }
    if own.is_empty() {
        state.own_ahead.remove(&conversation_id);
    }
}

/// A send waiting for its acknowledgement; dropping it ends the wait.
pub(crate) struct PendingSend {
    sink: DeliverySink,
    conversation_id: u64,
}

impl Drop for PendingSend {
    fn drop(&mut self) {
        {
            let mut state = self.sink.lock();
            if let Some(count) = state.sending.get_mut(&self.conversation_id) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    state.sending.remove(&self.conversation_id);
                }
            }
        }
        self.sink.own_acks.notify_waiters();
    }
}

/// Accepts the server's delivery streams on a QUIC connection until it ends.
pub(crate) async fn accept_deliveries(
    session: Arc<Session>,
    connection: quinn::Connection,
    sink: DeliverySink,
) {
    loop {
        match connection.accept_bi().await {
            Ok((send, recv)) => {
                debug!(stream_id = %send.id(), "server opened a delivery stream");
                tokio::spawn(read_deliveries(session.clone(), sink.clone(), send, recv));
            }
            Err(error) => {
                debug!(%error, "no more delivery streams");
                return;
            }
        }
    }
}

/// Reads `Deliver` frames from one stream, passes new messages to the application and
/// acknowledges each one, duplicates included, so the server can advance its cursor.
async fn read_deliveries(
    session: Arc<Session>,
    sink: DeliverySink,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let max_frame_bytes = session.max_frame_bytes();
    loop {
        let message = match read_frame(&mut recv, max_frame_bytes).await {
            Ok(Some(Frame::Deliver(deliver))) => deliver.message,
            Ok(Some(Frame::ReceiptUpdate(update))) => {
                sink.receipt(update);
                continue;
            }
            Ok(Some(Frame::Error(error))) => {
                let conversation_id = error.conversation_id;
                warn!(conversation_id, code = %error.code, "delivery stream error");
                continue;
            }
            Ok(Some(other)) => {
                warn!(kind = other.kind(), "unexpected frame on a delivery stream");
                continue;
            }
            Ok(None) => return,
            Err(error) => {
                debug!(%error, "delivery stream ended");
                return;
            }
        };

        let ack = DeliveryAck {
            conversation_id: message.conversation_id,
            seq: message.seq,
        };
        trace!(
            conversation_id = ack.conversation_id,
            seq = ack.seq,
            "delivery received"
        );
        sink.deliver(&session, message).await;

        let mut bytes = Vec::new();
        encode_framed(&Frame::DeliveryAck(ack), &mut bytes);
        if let Err(error) = send.write_all(&bytes).await {
            debug!(%error, "writing DeliveryAck failed");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_skips_old_and_duplicate_seqs() {
        let (tx, _rx) = mpsc::channel(1);
        let sink = DeliverySink::new(tx);
        assert!(sink.advance(7, 1));
        assert!(sink.advance(7, 2));
        assert!(!sink.advance(7, 2));
        assert!(!sink.advance(7, 1));
        assert!(sink.advance(8, 1));
        assert_eq!(sink.cursor(7), 2);
        assert_eq!(sink.cursor(9), 0);
    }

    #[test]
    fn own_send_advances_only_contiguous_cursor() {
        let (tx, _rx) = mpsc::channel(1);
        let sink = DeliverySink::new(tx);
        sink.note_sent(7, 1);
        assert_eq!(sink.cursor(7), 0, "an unknown cursor stays unknown");

        assert!(sink.advance(7, 3));
        sink.note_sent(7, 5);
        assert_eq!(sink.held(7), 5, "a sent message counts as held");
        assert_eq!(
            sink.cursor(7),
            3,
            "a send after a gap leaves the gap to be filled"
        );
        sink.note_sent(7, 4);
        assert_eq!(
            sink.cursor(7),
            5,
            "the cursor moves over adjacent own sends"
        );
        assert!(
            !sink.advance(7, 4),
            "the echo of an own send is a duplicate"
        );
    }

    #[test]
    fn delivery_moves_cursor_over_own_sends() {
        let (tx, _rx) = mpsc::channel(1);
        let sink = DeliverySink::new(tx);
        assert!(sink.advance(7, 1));
        sink.note_sent(7, 3);
        sink.note_sent(7, 4);
        assert_eq!(sink.cursor(7), 1);

        assert!(sink.advance(7, 2));
        assert_eq!(sink.cursor(7), 4);
        assert!(sink.lock().own_ahead.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn gap_waits_for_own_ack() {
        let (tx, _rx) = mpsc::channel(1);
        let sink = DeliverySink::new(tx);
        assert!(sink.advance(7, 3));
        let pending = sink.begin_send(7);

        let waiter = tokio::spawn({
            let sink = sink.clone();
            async move { sink.await_own_acks(7, 5).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            !waiter.is_finished(),
            "returned while the own send was pending"
        );

        sink.note_sent(7, 4);
        drop(pending);
        let started = Instant::now();
        waiter.await.unwrap();
        assert!(started.elapsed() < OWN_ACK_WAIT);
        assert_eq!(sink.cursor(7), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn gap_wait_is_bounded() {
        let (tx, _rx) = mpsc::channel(1);
        let sink = DeliverySink::new(tx);
        assert!(sink.advance(7, 3));
        let _pending = sink.begin_send(7);

        let started = Instant::now();
        sink.await_own_acks(7, 5).await;
        assert_eq!(started.elapsed(), OWN_ACK_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn gap_without_own_sends_is_not_delayed() {
        let (tx, _rx) = mpsc::channel(1);
        let sink = DeliverySink::new(tx);
        assert!(sink.advance(7, 3));
        let _other = sink.begin_send(8);

        let started = Instant::now();
        sink.await_own_acks(7, 5).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
