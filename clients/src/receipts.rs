//! Receipts on the client: the latest receipt of each member, held back until this device
//! holds the messages they cover.
//!
//! A `ReceiptUpdate` can overtake the message it refers to, for example while a gap is
//! still being fetched after a reconnect. The book keeps such a receipt and releases it,
//! as [`ReceiptEvent`]s, only up to the highest seq the device holds (delivered or sent
//! by itself); the rest is released when the messages arrive.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use tidings_schema::receipt::{MemberReceipt, ReceiptUpdate, SeqReceiptCount};

/// A receipt change the application can show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptEvent {
    /// A member's receipt, limited to the messages this device holds. In a direct
    /// conversation it gives the state of every message: delivered when
    /// `seq <= delivered_seq`, read when `seq <= read_seq`.
    Member {
        conversation_id: u64,
        receipt: MemberReceipt,
    },
    /// The read-by-N-of-M state of one message in a group; `member_count` is M.
    Counts {
        conversation_id: u64,
        member_count: u32,
        count: SeqReceiptCount,
    },
}

#[derive(Default)]
struct Conversation {
    /// Latest receipt per user, as the server sent it.
    latest: HashMap<String, MemberReceipt>,
    /// Receipt per user already released, limited to the held seq.
    released: HashMap<String, (u64, u64)>,
    /// Group counts not released yet, by seq.
    pending_counts: BTreeMap<u64, SeqReceiptCount>,
    member_count: u32,
}

/// The receipts of every conversation this client has seen receipts in.
#[derive(Default)]
pub(crate) struct ReceiptBook {
    conversations: Mutex<HashMap<u64, Conversation>>,
}

impl ReceiptBook {
    /// Stores an update and returns what it releases for a device that holds every
    /// message up to `held`.
    pub fn apply(&self, update: ReceiptUpdate, held: u64) -> Vec<ReceiptEvent> {
        let mut conversations = self.lock();
        let conversation = conversations.entry(update.conversation_id).or_default();
        let receipt = update.receipt;
        let latest = conversation
            .latest
            .entry(receipt.user_id.clone())
            .or_insert_with(|| MemberReceipt {
                user_id: receipt.user_id.clone(),
                ..MemberReceipt::default()
            });
        // Receipts only move forward, whatever order their pushes arrive in.
        latest.delivered_seq = latest.delivered_seq.max(receipt.delivered_seq);
        latest.read_seq = latest.read_seq.max(receipt.read_seq);
        if update.member_count > 0 {
            conversation.member_count = update.member_count;
        }
        for count in update.counts {
            let entry = conversation
                .pending_counts
                .entry(count.seq)
                .or_insert(count);
            entry.delivered = entry.delivered.max(count.delivered);
            entry.read = entry.read.max(count.read);
        }
        release(update.conversation_id, conversation, held)
    }

    /// Returns what the arrival of messages up to `held` releases in `conversation_id`.
    pub fn on_held(&self, conversation_id: u64, held: u64) -> Vec<ReceiptEvent> {
        let mut conversations = self.lock();
        match conversations.get_mut(&conversation_id) {
            Some(conversation) => release(conversation_id, conversation, held),
            None => Vec::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Conversation>> {
        // The book holds plain maps of seqs, which stay valid after a panic.
        self.conversations
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

fn release(conversation_id: u64, conversation: &mut Conversation, held: u64) -> Vec<ReceiptEvent> {
    let mut events = Vec::new();
    for (user, latest) in &conversation.latest {
        let visible = (latest.delivered_seq.min(held), latest.read_seq.min(held));
        let released = conversation.released.entry(user.clone()).or_default();
        if visible.0 > released.0 || visible.1 > released.1 {
            *released = (visible.0.max(released.0), visible.1.max(released.1));
            events.push(ReceiptEvent::Member {
                conversation_id,
                receipt: MemberReceipt {
                    user_id: user.clone(),
                    delivered_seq: released.0,
                    read_seq: released.1,
                },
            });
        }
    }
    let later = conversation
        .pending_counts
        .split_off(&held.saturating_add(1));
    let ready = std::mem::replace(&mut conversation.pending_counts, later);
    for count in ready.into_values() {
        events.push(ReceiptEvent::Counts {
            conversation_id,
            member_count: conversation.member_count,
            count,
        });
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(user: &str, delivered: u64, read: u64) -> ReceiptUpdate {
        ReceiptUpdate {
            conversation_id: 7,
            receipt: MemberReceipt {
                user_id: user.into(),
                delivered_seq: delivered,
                read_seq: read,
            },
            member_count: 0,
            counts: Vec::new(),
        }
    }

    #[test]
    fn early_receipt_waits_for_its_message() {
        let book = ReceiptBook::default();
        let events = book.apply(update("bob", 5, 5), 3);
        assert_eq!(
            events,
            vec![ReceiptEvent::Member {
                conversation_id: 7,
                receipt: MemberReceipt {
                    user_id: "bob".into(),
                    delivered_seq: 3,
                    read_seq: 3,
                },
            }],
            "only the held part is released"
        );
        assert!(book.on_held(7, 3).is_empty(), "nothing new at the same seq");

        let events = book.on_held(7, 5);
        let ReceiptEvent::Member { receipt, .. } = &events[0] else {
            panic!("expected a member receipt, got {events:?}");
        };
        assert_eq!((receipt.delivered_seq, receipt.read_seq), (5, 5));
    }

    #[test]
    fn stale_push_never_moves_back() {
        let book = ReceiptBook::default();
        book.apply(update("bob", 9, 8), 10);
        let events = book.apply(update("bob", 4, 2), 10);
        assert!(
            events.is_empty(),
            "an older push changes nothing: {events:?}"
        );
    }

    #[test]
    fn group_counts_wait_for_their_seq() {
        let book = ReceiptBook::default();
        let mut group = update("cy", 6, 6);
        group.member_count = 499;
        group.counts = vec![
            SeqReceiptCount {
                seq: 6,
                delivered: 10,
                read: 4,
            },
            SeqReceiptCount {
                seq: 5,
                delivered: 12,
                read: 6,
            },
        ];
        let events = book.apply(group, 5);
        let counts: Vec<_> = events
            .iter()
            .filter_map(|event| match event {
                ReceiptEvent::Counts { count, .. } => Some(count.seq),
                ReceiptEvent::Member { .. } => None,
            })
            .collect();
        assert_eq!(counts, vec![5]);
        let later = book.on_held(7, 6);
        assert!(later.contains(&ReceiptEvent::Counts {
            conversation_id: 7,
            member_count: 499,
            count: SeqReceiptCount {
                seq: 6,
                delivered: 10,
                read: 4,
            },
        }));
    }
}
