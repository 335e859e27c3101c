//! The writer of one storage file: group commit of queued requests.
//!
//! The writer runs on its own OS thread because redb blocks. It takes the first queued
//! request, drains more until `batch_max` requests or `batch_deadline` have passed, runs
//! them all in one write transaction and commits with `Durability::Immediate`. Replies,
//! deliveries and inbox advances are released only after that commit returns. A batch of
//! inbox advances alone commits without an fsync.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{Database, Durability};
use tidings_schema::Rejection;
use tidings_schema::mesh::Delivery;
use tokio::sync::oneshot;

use crate::batch::{Batch, Finished, OpOutcome, StoreResult, Tables, WriteOp, WriterContext};
use crate::fanout::Fanout;
use crate::inbox::{InboxRoutes, InboxTarget};
use crate::inbox_forward::PeerInboxQueue;

/// Maximum time a commit that skipped its fsync stays unsynced, so a crash loses at most
/// this much of the inbox advances.
const SYNC_AFTER: Duration = Duration::from_millis(200);

/// The reply channel of one queued request.
pub(crate) type ReplySender = oneshot::Sender<Result<OpOutcome, Rejection>>;

pub(crate) struct Job {
    pub op: WriteOp,
    /// `None` for work nobody waits on (coalesced inbox advances).
    pub reply: Option<ReplySender>,
}

pub(crate) enum Command {
    Job(Job),
    /// Commit what is queued before this command, then stop.
    Shutdown,
}

/// Batching settings of a writer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchSettings {
    pub batch_max: usize,
    pub batch_deadline: Duration,
}

/// The owner's side of a writer: its queue and its thread.
pub(crate) struct WriterHandle {
    pub queue: SyncSender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl WriterHandle {
    /// Asks the writer to stop after its queued work and waits for its thread.
    pub(crate) fn stop(&self) {
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let Some(thread) = thread else {
            return;
        };
        // A closed queue means the thread already ended; joining still reports a panic.
        let _ = self.queue.send(Command::Shutdown);
        if thread.join().is_err() {
            tracing::error!("storage writer thread panicked");
        }
    }
}

/// Everything a writer thread owns.
pub(crate) struct Writer {
    pub ctx: WriterContext,
    pub settings: BatchSettings,
    pub db: Arc<Database>,
    pub queue: Receiver<Command>,
    /// Queues of every writer of the owner, indexed by file, for inbox advances.
    pub peers: Arc<[SyncSender<Command>]>,
    /// Queue of inbox advances for users homed on other owners; `None` with one owner.
    pub peer_inbox: Option<PeerInboxQueue>,
    pub fanout: Arc<Fanout>,
    /// Count of successful commits across the owner's writers.
    pub commits: Arc<AtomicU64>,
    /// Test-only: messages whose body starts with this prefix are committed and logged
    /// but not published, as if the owner crashed between its commit and its fan-out.
    pub hold_fanout_prefix: Option<String>,
}

impl Writer {
    /// Starts the writer thread.
    pub(crate) fn spawn(self, queue: SyncSender<Command>) -> std::io::Result<WriterHandle> {
        let name = format!("tidings-writer-{}", self.ctx.file);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || self.run())?;
        Ok(WriterHandle {
            queue,
            thread: Mutex::new(Some(thread)),
        })
    }

    fn run(self) {
        let span = tracing::info_span!("storage_writer", file = self.ctx.file);
        let _entered = span.enter();
        tracing::debug!("storage writer started");
        // When the oldest commit that skipped its fsync happened; `None` once a durable
        // commit has persisted it.
        let mut unsynced_since: Option<Instant> = None;
        loop {
            let first = match unsynced_since {
                None => self
                    .queue
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
                Some(since) => {
                    let left = (since + SYNC_AFTER).saturating_duration_since(Instant::now());
                    self.queue.recv_timeout(left)
                }
            };
            let first = match first {
                Ok(Command::Job(job)) => job,
                Err(RecvTimeoutError::Timeout) => {
                    self.sync(&mut unsynced_since);
                    continue;
                }
                Ok(Command::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
            };
            let (jobs, stop) = self.collect_batch(first);
            self.commit_batch(jobs, &mut unsynced_since);
            if stop {
                break;
            }
        }
        self.sync(&mut unsynced_since);
        tracing::debug!("storage writer stopped");
    }

    /// Commits an empty durable transaction when an earlier commit skipped its fsync, so
    /// that commit survives a crash too.
    fn sync(&self, unsynced_since: &mut Option<Instant>) {
        if unsynced_since.is_none() {
            return;
        }
        let synced = || -> StoreResult<()> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            txn.commit()?;
            Ok(())
        };
        match synced() {
            Ok(()) => *unsynced_since = None,
            // The next commit or timer tries again; the skipped commits are only hints.
            Err(error) => tracing::warn!(%error, "storage sync failed; the next commit retries it"),
        }
    }

    /// Drains the queue after `first` until the batch is full or its deadline passes.
    /// Returns the batch and whether a shutdown was requested.
    fn collect_batch(&self, first: Job) -> (Vec<Job>, bool) {
        let mut jobs = vec![first];
        let deadline = Instant::now() + self.settings.batch_deadline;
        while jobs.len() < self.settings.batch_max {
            let next = match self.queue.try_recv() {
                Ok(command) => command,
                Err(TryRecvError::Disconnected) => return (jobs, true),
                Err(TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match self.queue.recv_timeout(left) {
                        Ok(command) => command,
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return (jobs, true),
                    }
                }
            };
            match next {
                Command::Job(job) => jobs.push(job),
                Command::Shutdown => return (jobs, true),
            }
        }
        (jobs, false)
    }

    fn commit_batch(&self, jobs: Vec<Job>, unsynced_since: &mut Option<Instant>) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64);
        let ops: Vec<&WriteOp> = jobs.iter().map(|job| &job.op).collect();
        // A batch whose jobs have no reply channel contains only inbox advances. They are
        // hints, because the conversation row keeps the true last seq. Such a batch skips
        // the fsync, and the file's next durable commit, at most `SYNC_AFTER` later,
        // persists it.
        let hints_only = jobs.iter().all(|job| job.reply.is_none());
        let sync_due = unsynced_since.is_some_and(|since| since.elapsed() >= SYNC_AFTER);
        let durable = !hints_only || sync_due;
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };

        match execute_batch(&self.db, &self.ctx, &ops, now_ms, durability) {
            Ok((results, finished)) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                if durable {
                    *unsynced_since = None;
                } else if unsynced_since.is_none() {
                    *unsynced_since = Some(Instant::now());
                }
                tracing::trace!(requests = jobs.len(), "batch committed");
                // NOTE: the log range moves before the publish; `LogCursor::advance` explains why.
                self.ctx.log.advance(finished.log);
                let deliveries = self.held_back(finished.deliveries);
                self.fanout.publish(deliveries, Instant::now());
                self.forward_advances(finished.remote_advances);
                for (job, result) in jobs.into_iter().zip(results) {
                    if let Some(reply) = job.reply {
                        // The caller may have gone away; the write stays committed.
                        let _ = reply.send(result);
                    }
                }
            }
            Err(error) => {
                tracing::error!(
                    requests = jobs.len(),
                    %error,
                    "storage commit failed; every request of the batch is rejected"
                );
                let rejection = error.rejection();
                for job in jobs {
                    if let Some(reply) = job.reply {
                        let _ = reply.send(Err(rejection.clone()));
                    }
                }
            }
        }
    }

    /// Drops the deliveries that the test-only hold prefix selects.
    fn held_back(&self, mut deliveries: Vec<Delivery>) -> Vec<Delivery> {
        if let Some(prefix) = &self.hold_fanout_prefix {
            deliveries.retain(|delivery| !delivery.message.body.starts_with(prefix.as_str()));
        }
        deliveries
    }

    /// Hands inbox advances to the writers of other files, or to the mesh for users homed
    /// on other owners, without waiting for them.
    fn forward_advances(&self, advances: InboxRoutes) {
        for (target, ops) in advances {
            let file = match target {
                InboxTarget::File(file) => file,
                InboxTarget::Peer(owner) => {
                    if let Some(queue) = &self.peer_inbox {
                        queue.offer(owner, ops);
                    }
                    continue;
                }
            };
            let job = Job {
                op: WriteOp::Inbox(ops),
                reply: None,
            };
            match self.peers[file].try_send(Command::Job(job)) {
                Ok(()) => {}
                // NOTE: advances are hints (the conversation row holds the true last seq),
                // so a busy writer may skip one; the next send advances the row again.
                Err(TrySendError::Full(_)) => {
                    tracing::debug!(
                        target_file = file,
                        "writer queue full; inbox advance skipped"
                    )
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }
}

/// Runs `ops` in one write transaction and commits it with `durability`. Returns each
/// op's result and the batch's effects; on error nothing of the batch is stored.
pub(crate) fn execute_batch(
    db: &Database,
    ctx: &WriterContext,
    ops: &[&WriteOp],
    now_ms: u64,
    durability: Durability,
) -> StoreResult<(Vec<Result<OpOutcome, Rejection>>, Finished)> {
    let mut txn = db.begin_write()?;
    txn.set_durability(durability)?;

    let mut results = Vec::with_capacity(ops.len());
    let finished = {
        let mut batch = Batch::new(ctx, Tables::open(&txn)?, now_ms);
        for op in ops {
            results.push(batch.execute(op)?);
        }
        batch.finish()?
    };
    txn.commit()?;
    Ok((results, finished))
}

#[cfg(test)]
mod tests {
    use tidings_schema::ErrorCode;
    use tidings_schema::frame::{CreateGroup, Limits};
    use tidings_schema::mesh::{OwnerReply, OwnerRequest, SendRequest, Stamp};

    use super::*;
    use crate::tables::Placement;

    fn context(window_ms: u64) -> WriterContext {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("log.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        let log = crate::delivery_log::LogCursor::open(&txn, 0).unwrap();
        txn.commit().unwrap();
        WriterContext {
            log: Arc::new(log),
            file: 0,
            placement: Placement::new(1),
            shards: crate::cluster::ShardMap::single("owner-1"),
            limits: Limits::default(),
            idempotency_window_ms: window_ms,
        }
    }

    fn create(conversation_id: u64) -> WriteOp {
        WriteOp::Owner(OwnerRequest::CreateGroup {
            user: "alice".into(),
            request: CreateGroup {
                request_id: 1,
                name: "g".into(),
                members: vec!["bob".into()],
            },
            conversation_id,
            stamp: Stamp::default(),
        })
    }

    fn send(sender: &str, key: &str, body: &str) -> WriteOp {
        WriteOp::Owner(OwnerRequest::Send(SendRequest {
            sender: sender.into(),
            conversation_id: 5,
            client_msg_id: key.into(),
            body: body.into(),
            ..SendRequest::default()
        }))
    }

    fn seq(result: &Result<OpOutcome, Rejection>) -> u64 {
        match result {
            Ok(OpOutcome {
                reply: OwnerReply::SendAck(ack),
                ..
            }) => ack.seq,
            other => panic!("expected a SendAck, got {other:?}"),
        }
    }

    #[test]
    fn rejected_request_spares_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("shard.redb")).unwrap();
        let ctx = context(60_000);
        let ops = [
            create(5),
            send("alice", "a", "one"),
            send("mallory", "m", "intruder"),
            send("alice", "a", "one"),
            send("alice", "a", "changed"),
            send("bob", "b", "two"),
        ];
        let refs: Vec<&WriteOp> = ops.iter().collect();
        let (results, finished) =
            execute_batch(&db, &ctx, &refs, 1_000, Durability::Immediate).unwrap();

        assert!(results[0].is_ok());
        assert_eq!(seq(&results[1]), 2);
        assert_eq!(results[2].as_ref().unwrap_err().code, ErrorCode::NotMember);
        assert_eq!(
            seq(&results[3]),
            2,
            "a retry inside the same batch gets the first ack"
        );
        assert_eq!(
            results[4].as_ref().unwrap_err().code,
            ErrorCode::IdempotencyConflict
        );
        assert_eq!(seq(&results[5]), 3);
        assert_eq!(
            finished.deliveries.len(),
            3,
            "creation and two new messages"
        );
    }

    #[test]
    fn sweep_forgets_expired_keys() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("shard.redb")).unwrap();
        let ctx = context(1_000);
        let run = |ops: &[WriteOp], now_ms| {
            let refs: Vec<&WriteOp> = ops.iter().collect();
            execute_batch(&db, &ctx, &refs, now_ms, Durability::Immediate)
                .unwrap()
                .0
        };

        run(&[create(5), send("alice", "k", "first")], 10_000);
        let inside = run(&[send("alice", "k", "other body")], 10_999);
        assert_eq!(
            inside[0].as_ref().unwrap_err().code,
            ErrorCode::IdempotencyConflict
        );

        // The key expires at 11,000; the next batch after that removes it.
        run(&[WriteOp::Inbox(Vec::new())], 11_001);
        let after = run(&[send("alice", "k", "other body")], 11_002);
        assert_eq!(
            seq(&after[0]),
            3,
            "an expired key is free for a new message"
        );
    }
}
