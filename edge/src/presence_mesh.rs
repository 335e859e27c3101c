//! Presence across the edges of a cluster.
//!
//! Each edge reports the presence of its own users, the most present state of their
//! devices here, to the owner of each user's home shard. A change goes out at once, and
//! every present user is reported again each [`REPORT_RENEWAL`], so the owner's lease of
//! [`REPORT_LEASE`] does not run out. The owner merges the reports of all edges and pushes
//! each edge the presence of users on the other edges, through the edge's delivery queue.
//! The edge feeds those pushes into its tracker, so local watchers get them with the same
//! debounce and snapshots as local changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tidings_schema::mesh::{OwnerReply, OwnerRequest, PresenceReport};
use tidings_schema::presence::PresenceEntry;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::presence_hub::PresenceHub;

/// How long an owner keeps an edge's report of a user without a renewal.
pub const REPORT_LEASE: Duration = Duration::from_secs(30);

/// How often an edge reports all its present users again: a third of the lease, so two
/// renewals can be lost before the owner drops the edge's state.
pub const REPORT_RENEWAL: Duration = Duration::from_secs(10);

/// Maximum entries in one report call, which keeps a renewal of many users in messages
/// of a bounded size.
const MAX_REPORT_ENTRIES: usize = 1_000;

/// Maximum queued changes gathered into one round of reports.
const MAX_CHANGES_PER_ROUND: usize = 10_000;

/// Sends this edge's presence changes and renewals to the owners of the users' home
/// shards until `shutdown` fires.
///
/// Reports to one owner go out one call at a time, in the order the changes happened, so
/// an owner never applies an older state after a newer one.
pub(crate) async fn run_reports(
    hub: Arc<PresenceHub>,
    mut changes: mpsc::UnboundedReceiver<PresenceEntry>,
    shutdown: CancellationToken,
) {
    let mut renewal = tokio::time::interval(REPORT_RENEWAL);
    renewal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    renewal.reset();
    loop {
        let entries = tokio::select! {
            _ = shutdown.cancelled() => return,
            first = changes.recv() => match first {
                Some(first) => drain_changes(first, &mut changes),
                None => return,
            },
            _ = renewal.tick() => {
                send_reports(&hub, hub.local_presence(), true).await;
                continue;
            }
        };
        send_reports(&hub, entries, false).await;
    }
}

/// Collects `first` and the changes already queued, keeping the latest entry per user.
fn drain_changes(
    first: PresenceEntry,
    changes: &mut mpsc::UnboundedReceiver<PresenceEntry>,
) -> Vec<PresenceEntry> {
    let mut latest: HashMap<String, PresenceEntry> = HashMap::new();
    latest.insert(first.user.clone(), first);
    while latest.len() < MAX_CHANGES_PER_ROUND {
        let Ok(entry) = changes.try_recv() else {
            break;
        };
        latest.insert(entry.user.clone(), entry);
    }
    latest.into_values().collect()
}

/// Groups entries by the owner of each user's home shard and sends each owner its part.
/// With `every_owner`, an owner without entries gets an empty report, because a report is
/// what makes an owner drop the lapsed state of an edge that stopped.
async fn send_reports(hub: &PresenceHub, entries: Vec<PresenceEntry>, every_owner: bool) {
    let router = hub.router();
    let mut by_owner: HashMap<usize, Vec<PresenceEntry>> = HashMap::new();
    if every_owner {
        for owner_index in 0..router.owners().len() {
            by_owner.insert(owner_index, Vec::new());
        }
    }
    for entry in entries {
        let owner_index = router.owner_index_for_user(&entry.user);
        by_owner.entry(owner_index).or_default().push(entry);
    }
    let lease_ms = u32::try_from(REPORT_LEASE.as_millis()).unwrap_or(u32::MAX);
    for (owner_index, entries) in by_owner {
        let owner = &router.owners()[owner_index];
        let chunks: Vec<&[PresenceEntry]> = if entries.is_empty() {
            vec![&[]]
        } else {
            entries.chunks(MAX_REPORT_ENTRIES).collect()
        };
        for chunk in chunks {
            let request = OwnerRequest::PresenceReport(PresenceReport {
                edge_id: hub.edge_id().to_owned(),
                entries: chunk.to_vec(),
                lease_ms,
            });
            match owner.call(request).await {
                Ok(OwnerReply::Accepted) => {}
                Ok(other) => {
                    warn!(owner_index, reply = ?other, "unexpected reply to a presence report")
                }
                // The next renewal repairs a lost report of a present user; a lost offline
                // report lapses with the owner's lease.
                Err(rejection) => debug!(
                    owner_index,
                    users = chunk.len(),
                    %rejection,
                    "presence report failed"
                ),
            }
        }
    }
}
