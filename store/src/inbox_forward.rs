//! Coalesced inbox advances for users whose home shard another owner holds.
//!
//! Writers hand their advances to one forwarder task without waiting. While a round of
//! mesh calls is in flight, new advances accumulate, and the next round sends only the
//! highest `last_seq` per (user, conversation). A busy conversation therefore costs its
//! members' home owners one update per round, not one per message.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tidings_schema::mesh::InboxUpdate;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::cluster::OwnerPeers;
use crate::inbox::InboxOp;

/// Maximum number of writer hand-offs waiting for the forwarder.
const QUEUE_CAPACITY: usize = 4096;

/// The writers' side of the forwarder.
#[derive(Debug, Clone)]
pub(crate) struct PeerInboxQueue {
    sender: mpsc::Sender<(usize, Vec<InboxOp>)>,
    skipped: Arc<AtomicU64>,
}

impl PeerInboxQueue {
    /// Queues inbox ops for owner `peer` without waiting.
    pub(crate) fn offer(&self, peer: usize, ops: Vec<InboxOp>) {
        if self.sender.try_send((peer, ops)).is_err() {
            // NOTE: advances are hints (the conversation row holds the true last seq), so
            // a backlog may drop some; the next message advances the rows again.
            let skipped = self.skipped.fetch_add(1, Ordering::Relaxed) + 1;
            if skipped == 1 || skipped.is_multiple_of(1024) {
                tracing::warn!(
                    peer,
                    skipped,
                    "peer inbox queue is full or closed; inbox advances skipped"
                );
            }
        }
    }
}

/// Starts the forwarder on the current tokio runtime.
pub(crate) fn start(peers: Arc<dyn OwnerPeers>) -> PeerInboxQueue {
    let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
    tokio::spawn(run(receiver, peers));
    PeerInboxQueue {
        sender,
        skipped: Arc::new(AtomicU64::new(0)),
    }
}

/// Pending updates of one round, by peer.
#[derive(Default)]
struct Round {
    /// Highest advance per (user, conversation).
    advances: BTreeMap<usize, BTreeMap<(String, u64), u64>>,
    /// Other ops, in arrival order.
    others: BTreeMap<usize, Vec<InboxUpdate>>,
}

impl Round {
    fn add(&mut self, peer: usize, ops: Vec<InboxOp>) {
        for op in ops {
            match op {
                InboxOp::Advance {
                    user,
                    conversation_id,
                    last_seq,
                } => {
                    let seq = self
                        .advances
                        .entry(peer)
                        .or_default()
                        .entry((user, conversation_id))
                        .or_insert(0);
                    *seq = (*seq).max(last_seq);
                }
                other => self.others.entry(peer).or_default().push(other.into()),
            }
        }
    }

    fn into_updates(self) -> BTreeMap<usize, Vec<InboxUpdate>> {
        let mut by_peer = self.others;
        for (peer, rows) in self.advances {
            let updates = by_peer.entry(peer).or_default();
            for ((user, conversation_id), last_seq) in rows {
                updates.push(
                    InboxOp::Advance {
                        user,
                        conversation_id,
                        last_seq,
                    }
                    .into(),
                );
            }
        }
        by_peer
    }
}

async fn run(mut receiver: mpsc::Receiver<(usize, Vec<InboxOp>)>, peers: Arc<dyn OwnerPeers>) {
    while let Some((peer, ops)) = receiver.recv().await {
        let mut round = Round::default();
        round.add(peer, ops);
        while let Ok((peer, ops)) = receiver.try_recv() {
            round.add(peer, ops);
        }

        let mut calls = JoinSet::new();
        for (peer, updates) in round.into_updates() {
            let count = updates.len();
            let call = peers.update_inbox(peer, updates);
            calls.spawn(async move { (peer, count, call.await) });
        }
        while let Some(joined) = calls.join_next().await {
            match joined {
                Ok((_, _, Ok(()))) => {}
                Ok((peer, count, Err(rejection))) => {
                    tracing::warn!(peer, count, %rejection, "failed to forward inbox advances");
                }
                Err(error) => tracing::error!(%error, "inbox forward task failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_schema::mesh::InboxChange;

    #[test]
    fn round_keeps_highest_advance() {
        let advance = |user: &str, seq| InboxOp::Advance {
            user: user.into(),
            conversation_id: 9,
            last_seq: seq,
        };
        let mut round = Round::default();
        round.add(1, vec![advance("ann", 3), advance("bo", 2)]);
        round.add(1, vec![advance("ann", 5), advance("ann", 4)]);
        round.add(
            2,
            vec![InboxOp::Remove {
                user: "cy".into(),
                conversation_id: 9,
            }],
        );

        let updates = round.into_updates();
        let to_one = &updates[&1];
        assert_eq!(to_one.len(), 2, "one update per (user, conversation)");
        let ann = to_one.iter().find(|u| u.user == "ann").unwrap();
        assert_eq!(ann.last_seq, 5);
        assert_eq!(updates[&2][0].change, InboxChange::Remove);
    }
}
