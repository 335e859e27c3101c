//! Attaching an edge from its delivery log positions: the owner replays what the edge
//! missed from each storage file's delivery log, then hands over to live fan-out.
//!
//! Ordering: the live queue is registered first and each log's end is read after that.
//! So every entry up to that end is in the replay and every later one is in the live
//! queue. An entry published in between is in both, and devices drop the duplicate by
//! seq. The replay task sends the whole replay before the first live delivery, so each
//! conversation reaches the edge in seq order.

use std::sync::Arc;

use tidings_schema::mesh::{Delivery, LogPosition};
use tokio::sync::mpsc;

use super::Owner;
use crate::delivery_log::{self, LogRange};
use crate::fanout::Fanout;
use crate::tables::Placement;

/// Entries read from a log in one blocking read, which bounds the replay's memory.
const REPLAY_PAGE: usize = 256;

/// Capacity of the queue between the replay task and the edge's forwarder. Replay pages
/// wait here for the edge, which is how the edge's back-pressure reaches the replay.
const REPLAY_QUEUE: usize = 1_024;

/// An attached edge's deliveries and where they start.
#[derive(Debug)]
pub struct EdgeAttachment {
    /// Replayed deliveries first, then live ones. Closes when the owner drops the edge's
    /// subscription; the edge then attaches again with its positions.
    pub deliveries: mpsc::Receiver<Arc<Delivery>>,
    /// The end of each storage file's log at the attach. An edge without a position for a
    /// file, or with a position of another epoch, starts from here.
    pub start: Vec<LogPosition>,
    /// Files whose given position could not be served: another epoch, an offset this log
    /// never assigned, or entries already trimmed. The edge missed an unknown number of
    /// messages of these files.
    pub lost: Vec<u16>,
}

/// Entries of one file to replay: offsets `after + 1 ..= until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReplayRange {
    log: LogRange,
    after: u64,
    until: u64,
}

/// The replay of one edge, planned from the logs' ranges and the edge's positions.
#[derive(Debug, Default, PartialEq, Eq)]
struct ReplayPlan {
    start: Vec<LogPosition>,
    lost: Vec<u16>,
    ranges: Vec<ReplayRange>,
}

impl Owner {
    /// Registers an edge for fan-out, as [`Owner::attach_edge`] does, and first replays
    /// every delivery log entry after `positions` (the last entry the edge received from
    /// each storage file). Positions of files the edge has none for start at the log's
    /// end. Must be called inside a tokio runtime when `open` was not.
    ///
    /// The replay reads pages on tokio's blocking pool and waits for the edge, so it keeps
    /// at most a few pages in memory and never delays a commit. Live deliveries that
    /// arrive meanwhile wait in the edge's queue. If that queue overflows, it closes after
    /// the replay, and the edge attaches again from its new positions.
    pub fn attach_edge_at(&self, edge_id: &str, positions: &[LogPosition]) -> EdgeAttachment {
        let live = self.attach_edge(edge_id);
        // NOTE: the ranges are read after the live queue exists; the module header explains why.
        let ranges: Vec<LogRange> = self.logs.iter().map(|log| log.range()).collect();
        let plan = plan_replay(&ranges, positions);
        for &file in &plan.lost {
            tracing::warn!(
                edge_id,
                file,
                "edge's delivery position is from another log or already trimmed; messages it \
                 missed reach devices only when they reconnect"
            );
        }
        if plan.ranges.is_empty() {
            return EdgeAttachment {
                deliveries: live,
                start: plan.start,
                lost: plan.lost,
            };
        }

        let entries: u64 = plan.ranges.iter().map(|r| r.until - r.after).sum();
        tracing::info!(
            edge_id,
            files = plan.ranges.len(),
            entries,
            "replaying the delivery log to a re-attached edge"
        );
        let (sender, deliveries) = mpsc::channel(REPLAY_QUEUE);
        let replay = Replay {
            edge_id: edge_id.to_owned(),
            databases: self.databases.clone(),
            placement: self.placement,
            fanout: Arc::clone(&self.fanout),
            out: sender,
        };
        let task = replay.run(plan.ranges, live);
        match &self.runtime {
            Some(runtime) => drop(runtime.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
        EdgeAttachment {
            deliveries,
            start: plan.start,
            lost: plan.lost,
        }
    }
}

/// Decides the replay for an edge's `positions` against the logs' current `ranges`.
fn plan_replay(ranges: &[LogRange], positions: &[LogPosition]) -> ReplayPlan {
    let mut plan = ReplayPlan::default();
    for range in ranges {
        plan.start.push(LogPosition {
            file: range.file,
            epoch: range.epoch,
            offset: range.last,
        });
        let Some(position) = positions.iter().find(|p| p.file == range.file) else {
            continue;
        };
        let servable = position.epoch == range.epoch
            && position.offset <= range.last
            && position.offset + 1 >= range.first;
        if !servable {
            plan.lost.push(range.file);
        } else if position.offset < range.last {
            plan.ranges.push(ReplayRange {
                log: *range,
                after: position.offset,
                until: range.last,
            });
        }
    }
    plan
}

/// The task that replays log ranges to one edge and then forwards its live queue.
struct Replay {
    edge_id: String,
    databases: Vec<Arc<redb::Database>>,
    placement: Placement,
    fanout: Arc<Fanout>,
    out: mpsc::Sender<Arc<Delivery>>,
}

impl Replay {
    /// Sends the ranges, then live deliveries. On a storage error or a trimmed range it
    /// stops, which closes the edge's queue, and the edge attaches again.
    async fn run(self, ranges: Vec<ReplayRange>, mut live: mpsc::Receiver<Arc<Delivery>>) {
        for range in ranges {
            if !self.replay_range(range).await {
                return;
            }
        }
        tracing::debug!(edge_id = self.edge_id, "delivery log replay finished");
        // The files and the fan-out are released here, so an owner that shuts down is not
        // kept open by an edge's live forwarding.
        let Replay { out, .. } = self;
        while let Some(delivery) = live.recv().await {
            if out.send(delivery).await.is_err() {
                return;
            }
        }
    }

    /// Sends one range page by page; returns whether the whole range was sent.
    async fn replay_range(&self, range: ReplayRange) -> bool {
        let file = range.log.file;
        let mut after = range.after;
        while after < range.until {
            let db = Arc::clone(&self.databases[usize::from(file)]);
            let placement = self.placement;
            let read = tokio::task::spawn_blocking(move || {
                delivery_log::read_page(&db, placement, range.log, after, range.until, REPLAY_PAGE)
            });
            let page = match read.await {
                Ok(Ok(page)) => page,
                Ok(Err(error)) => {
                    tracing::error!(edge_id = self.edge_id, file, after, %error, "delivery log read failed; edge must attach again");
                    return false;
                }
                Err(error) => {
                    tracing::error!(edge_id = self.edge_id, file, after, %error, "delivery log read task failed");
                    return false;
                }
            };
            for delivery in page.deliveries {
                let Some(copy) = self.fanout.copy_for(&self.edge_id, Arc::new(delivery)) else {
                    continue;
                };
                if self.out.send(copy).await.is_err() {
                    return false;
                }
            }
            if page.trimmed {
                tracing::warn!(
                    edge_id = self.edge_id,
                    file,
                    after = page.last,
                    "delivery log entries were trimmed during the replay; edge must attach again"
                );
                return false;
            }
            after = page.last;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(file: u16, first: u64, last: u64) -> LogRange {
        LogRange {
            file,
            epoch: 7,
            first,
            last,
        }
    }

    fn position(file: u16, epoch: u64, offset: u64) -> LogPosition {
        LogPosition {
            file,
            epoch,
            offset,
        }
    }

    #[test]
    fn plan_replays_after_each_position() {
        let ranges = [range(0, 1, 10), range(1, 1, 4)];
        let plan = plan_replay(&ranges, &[position(0, 7, 6), position(1, 7, 4)]);

        assert_eq!(plan.start, vec![position(0, 7, 10), position(1, 7, 4)]);
        assert!(plan.lost.is_empty());
        assert_eq!(
            plan.ranges,
            vec![ReplayRange {
                log: ranges[0],
                after: 6,
                until: 10
            }],
            "file 1 is up to date"
        );
    }

    #[test]
    fn plan_without_positions_starts_live() {
        let plan = plan_replay(&[range(0, 1, 10)], &[]);
        assert!(plan.ranges.is_empty());
        assert!(plan.lost.is_empty());
        assert_eq!(plan.start, vec![position(0, 7, 10)]);
    }

    #[test]
    fn plan_reports_lost_positions() {
        let ranges = [range(0, 50, 100), range(1, 1, 10), range(2, 1, 10)];
        let positions = [
            // Entries 49 and earlier were trimmed; 48 means 49 is needed.
            position(0, 7, 48),
            // Another epoch: the store was replaced.
            position(1, 9, 3),
            // Ahead of the log: the store went back in time.
            position(2, 7, 11),
        ];
        let plan = plan_replay(&ranges, &positions);
        assert_eq!(plan.lost, vec![0, 1, 2]);
        assert!(plan.ranges.is_empty());
    }

    #[test]
    fn plan_serves_position_just_before_trim_point() {
        let plan = plan_replay(&[range(0, 50, 100)], &[position(0, 7, 49)]);
        assert!(plan.lost.is_empty());
        assert_eq!(plan.ranges[0].after, 49);
    }
}
