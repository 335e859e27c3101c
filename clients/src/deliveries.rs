//! Server-opened conversation streams: `Deliver` frames in `seq` order, each acknowledged
//! with a `DeliveryAck` once the message is queued for the application.
//!
//! The client keeps a `seq` cursor per conversation. A delivery that skips ahead of the
//! cursor, for example after a reconnect, first has the missing messages fetched from
//! history, so the application sees every conversation without gaps or repeats.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings_schema::Frame;
use tidings_schema::codec::{encode_framed, read_frame};
use tidings_schema::frame::{DeliveryAck, HistoryRequest, ListConversations, Message};
use tokio::sync::mpsc;
use tracing::{debug, trace, warn};

use crate::session::Session;

/// Messages requested per history page when filling a gap.
const GAP_PAGE_LIMIT: u32 = 100;
/// Maximum history pages fetched for one gap; a longer gap is left to `history` calls.
const MAX_GAP_PAGES: usize = 50;
/// Maximum wait for one history or conversation list reply while filling gaps.
const GAP_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Destination of the deliveries of every session: the application's channel and the
/// per-conversation cursors that survive reconnects.
#[derive(Clone)]
pub(crate) struct DeliverySink {
    tx: mpsc::Sender<Message>,
    /// Highest `seq` passed to the application, by conversation.
    cursors: Arc<Mutex<HashMap<u64, u64>>>,
    /// NOTE: held while a message or a gap is passed on, so a live delivery cannot
    /// overtake the older messages a gap fill is still fetching.
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl DeliverySink {
    pub fn new(tx: mpsc::Sender<Message>) -> Self {
        DeliverySink {
            tx,
            cursors: Arc::new(Mutex::new(HashMap::new())),
            gate: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Records `seq` as delivered and returns whether it is new. A message at or below
    /// the cursor was already passed on, for example before a reconnect.
    fn advance(&self, conversation_id: u64, seq: u64) -> bool {
        let mut cursors = self.cursors.lock().expect("cursor map poisoned");
        let cursor = cursors.entry(conversation_id).or_insert(0);
        if seq <= *cursor {
            return false;
        }
        *cursor = seq;
        true
    }

    /// Returns the highest `seq` delivered in `conversation_id`, 0 when none was.
    pub fn cursor(&self, conversation_id: u64) -> u64 {
        let cursors = self.cursors.lock().expect("cursor map poisoned");
        cursors.get(&conversation_id).copied().unwrap_or(0)
    }

    /// Moves the cursor past a message this device sent when it directly follows the
    /// cursor, so the message does not come back as a delivery or a gap fill.
    pub fn note_sent(&self, conversation_id: u64, seq: u64) {
        let mut cursors = self.cursors.lock().expect("cursor map poisoned");
        if let Some(cursor) = cursors.get_mut(&conversation_id)
            && *cursor > 0
            && seq == *cursor + 1
        {
            *cursor = seq;
        }
    }

    /// Passes `message` to the application when it is new, after any messages between
    /// the cursor and it.
    pub async fn deliver(&self, session: &Session, message: Message) {
        let _gate = self.gate.lock().await;
        let cursor = self.cursor(message.conversation_id);
        if cursor > 0 && message.seq > cursor + 1 {
            self.fill_gap(session, message.conversation_id, cursor, message.seq)
                .await;
        }
        self.pass_on(message).await;
    }

    async fn pass_on(&self, message: Message) {
        if self.advance(message.conversation_id, message.seq)
            && self.tx.send(message).await.is_err()
        {
            // NOTE: the application dropped the receiver. They are still acknowledged so the
            // server does not redeliver to a device that chose not to listen.
            trace!("delivery receiver dropped");
        }
    }

    /// Fetches the messages with `after < seq < before` from history and passes them on
    /// in `seq` order. Failures are logged and leave the gap open.
    async fn fill_gap(&self, session: &Session, conversation_id: u64, after: u64, before: u64) {
        debug!(
            conversation_id,
            after, before, "filling a delivery gap from history"
        );
        let mut missing = Vec::new();
        let mut before_seq = before;
        for _ in 0..MAX_GAP_PAGES {
            let request_id = session.next_request_id();
            let request = Frame::HistoryRequest(HistoryRequest {
                request_id,
                conversation_id,
                before_seq,
                limit: GAP_PAGE_LIMIT,
            });
            let reply =
                tokio::time::timeout(GAP_REQUEST_TIMEOUT, session.request(request_id, request))
                    .await;
            let page = match reply {
                Ok(Ok(Frame::HistoryPage(page))) => page,
                Ok(Ok(other)) => {
                    warn!(
                        conversation_id,
                        kind = other.kind(),
                        "gap fill got no history page"
                    );
                    break;
                }
                Ok(Err(error)) => {
                    warn!(conversation_id, %error, "gap fill request failed");
                    break;
                }
                Err(_) => {
                    warn!(conversation_id, "gap fill request timed out");
                    break;
                }
            };

            let reached_cursor = page.messages.iter().any(|message| message.seq <= after + 1);
            missing.extend(
                page.messages
                    .into_iter()
                    .filter(|message| message.seq > after),
            );
            if reached_cursor || page.next_before_seq == 0 || page.next_before_seq >= before_seq {
                break;
            }
            before_seq = page.next_before_seq;
        }

        missing.sort_by_key(|message| message.seq);
        for message in missing {
            self.pass_on(message).await;
        }
    }

    /// Fills the tail of every conversation this client has received messages in, for
    /// messages committed while it was disconnected. Conversations it never received a
    /// message in are left to `history` calls.
    pub async fn resync(self, session: Arc<Session>) {
        let request_id = session.next_request_id();
        let request = Frame::ListConversations(ListConversations { request_id });
        let reply =
            tokio::time::timeout(GAP_REQUEST_TIMEOUT, session.request(request_id, request)).await;
        let conversations = match reply {
            Ok(Ok(Frame::ConversationList(list))) => list.conversations,
            _ => {
                warn!("resync after reconnect could not list conversations");
                return;
            }
        };

        for info in conversations {
            let _gate = self.gate.lock().await;
            let cursor = self.cursor(info.conversation_id);
            if cursor > 0 && info.last_seq > cursor {
                let before = info.last_seq.saturating_add(1);
                self.fill_gap(&session, info.conversation_id, cursor, before)
                    .await;
            }
        }
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
        assert_eq!(
            sink.cursor(7),
            3,
            "a send after a gap leaves the gap to be filled"
        );
        sink.note_sent(7, 4);
        assert_eq!(sink.cursor(7), 4);
        assert!(
            !sink.advance(7, 4),
            "the echo of an own send is a duplicate"
        );
    }
}
