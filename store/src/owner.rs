//! The owner service: validates and commits requests, then fans out deliveries.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::Database;
use tidings_schema::frame::{ConversationInfo, Limits};
use tidings_schema::mesh::{
    Delivery, InboxUpdate, OwnerReply, OwnerRequest, PresenceReport, Registration,
};
use tidings_schema::{ErrorCode, Rejection};
use tokio::sync::{mpsc, oneshot};

use crate::batch::{OpOutcome, WriteOp, WriterContext};
use crate::cluster::{ClusterView, OwnerPeers, ShardHolder, ShardMap};
use crate::delivery_log::LogCursor;
use crate::fanout::{EDGE_QUEUE_CAPACITY, Fanout};
use crate::inbox::{InboxOp, InboxRoutes, InboxTarget};
use crate::last_seen::{LAST_SEEN, LastSeenOp};
use crate::presence_board::PresenceBoard;
use crate::tables::{CONVERSATIONS, IDEMPOTENCY, IDEMPOTENCY_EXPIRY, MESSAGES, Placement};
use crate::tables::{INBOX_LOG, INBOX_META, RECEIPTS, USER_CONVERSATIONS};
use crate::writer::{BatchSettings, Command, Job, Writer, WriterHandle};
use crate::{layout, read, validate};

#[path = "owner_sync.rs"]
mod sync;

#[path = "owner_replay.rs"]
mod replay;
pub use replay::EdgeAttachment;

/// Environment variable that sets [`OwnerConfig::test_hold_fanout_prefix`]. Test-only.
pub const HOLD_FANOUT_PREFIX_ENV: &str = "TIDINGS_TEST_HOLD_FANOUT_PREFIX";

/// Shortest idempotency window the owner accepts: clients may retry for a day.
pub const MIN_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// How long a client waits before retrying when a writer's queue is full.
const OVERLOADED_RETRY_AFTER_MS: u32 = 50;

/// How long a client waits before retrying when the owner is shutting down.
const SHUTDOWN_RETRY_AFTER_MS: u32 = 1_000;

/// Settings of an owner node's storage.
#[derive(Debug, Clone)]
pub struct OwnerConfig {
    /// Directory holding the storage shard files.
    pub data_dir: PathBuf,
    /// Number of redb files (storage shards); each has one writer. Fixed for the life of
    /// a data directory.
    pub storage_shards: u16,
    /// Maximum number of requests committed in one transaction.
    pub batch_max: usize,
    /// How long a writer waits for more requests before it commits a batch. Zero, the
    /// default, commits what is queued at once: requests that arrive during a commit form
    /// the next batch, so batches grow with load and a lone request waits for no timer.
    pub batch_deadline: Duration,
    /// How long idempotency keys are kept; at least [`MIN_IDEMPOTENCY_WINDOW`].
    pub idempotency_window: Duration,
    /// Message size and group size limits.
    pub limits: Limits,
    /// Test-only: messages whose body starts with this prefix are committed and logged but
    /// never published live, as if the owner crashed between commit and fan-out. Only a
    /// replay of the delivery log delivers them. [`OwnerConfig::new`] reads it from the
    /// `TIDINGS_TEST_HOLD_FANOUT_PREFIX` environment variable; leave it unset in production.
    pub test_hold_fanout_prefix: Option<String>,
}

impl OwnerConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        OwnerConfig {
            data_dir,
            storage_shards: 4,
            batch_max: 1024,
            batch_deadline: Duration::ZERO,
            idempotency_window: Duration::from_secs(48 * 3600),
            limits: Limits::default(),
            test_hold_fanout_prefix: std::env::var(HOLD_FANOUT_PREFIX_ENV)
                .ok()
                .filter(|prefix| !prefix.is_empty()),
        }
    }
}

/// Error from opening an owner's storage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("failed to open storage shard {path}: {source}")]
    Database {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("failed to access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "data directory was created with storage_shards = {recorded} (see {path}), but \
         storage_shards = {configured} is configured; set it back to {recorded}, because \
         another count would look for rows in the wrong files"
    )]
    StorageShardsMismatch {
        path: PathBuf,
        recorded: u16,
        configured: u16,
    },
    #[error(
        "layout record {path} is missing or damaged, so the storage_shards count of this data \
         directory is unknown; restore the file or use an empty directory"
    )]
    InvalidLayout { path: PathBuf },
    #[error("invalid owner configuration: {0}")]
    InvalidConfig(String),
}

/// An owner node's storage and fan-out.
pub struct Owner {
    config: OwnerConfig,
    placement: Placement,
    shards: ShardMap,
    peers: Option<Arc<dyn OwnerPeers>>,
    databases: Vec<Arc<Database>>,
    /// The delivery log of each storage file, by file index.
    logs: Vec<Arc<LogCursor>>,
    /// Runtime that runs edge replays; the one `open` was called in, when there was one.
    runtime: Option<tokio::runtime::Handle>,
    writers: Vec<WriterHandle>,
    fanout: Arc<Fanout>,
    presence: Mutex<PresenceBoard>,
    commits: Arc<AtomicU64>,
}

impl Owner {
    /// Opens (or creates) the storage shards of an owner that holds every virtual shard,
    /// and starts their writer threads. Must be called inside a tokio runtime, because
    /// reads run on its blocking pool.
    pub fn open(config: OwnerConfig) -> Result<Arc<Owner>, OpenError> {
        Owner::open_in_cluster(config, None)
    }

    /// Opens an owner that holds the virtual shards `cluster` assigns it and reaches the
    /// other owners through `cluster.peers`; `None` holds every shard, as [`Owner::open`].
    pub fn open_in_cluster(
        config: OwnerConfig,
        cluster: Option<ClusterView>,
    ) -> Result<Arc<Owner>, OpenError> {
        check_config(&config)?;
        let (shards, owner_peers) = match cluster {
            Some(view) => (view.shards, Some(view.peers)),
            None => (ShardMap::single("local"), None),
        };
        let peer_inbox = owner_peers.clone().map(crate::inbox_forward::start);
        layout::prepare(&config.data_dir, config.storage_shards)?;

        let (databases, logs): (Vec<_>, Vec<_>) = (0..usize::from(config.storage_shards))
            .map(|index| open_database(&config, index))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(|(db, log)| (Arc::new(db), Arc::new(log)))
            .unzip();
        if let Some(prefix) = &config.test_hold_fanout_prefix {
            tracing::warn!(
                prefix_bytes = prefix.len(),
                "test-only setting {HOLD_FANOUT_PREFIX_ENV} is set: some messages are not \
                 published live"
            );
        }

        let placement = Placement::new(config.storage_shards);
        let fanout = Arc::new(Fanout::new(EDGE_QUEUE_CAPACITY));
        let commits = Arc::new(AtomicU64::new(0));
        let settings = BatchSettings {
            batch_max: config.batch_max,
            batch_deadline: config.batch_deadline,
        };

        // NOTE: each queue holds a few batches, so a burst waits in memory while a writer
        // that falls further behind rejects requests with a retryable Overloaded.
        let queue_capacity = config.batch_max.saturating_mul(4).max(64);
        let (senders, receivers): (Vec<_>, Vec<_>) = databases
            .iter()
            .map(|_| sync_channel(queue_capacity))
            .unzip();
        let peers: Arc<[_]> = senders.clone().into();

        let mut writers = Vec::with_capacity(databases.len());
        for (file, (receiver, sender)) in receivers.into_iter().zip(senders).enumerate() {
            let writer = Writer {
                ctx: WriterContext {
                    file,
                    placement,
                    shards: shards.clone(),
                    limits: config.limits,
                    idempotency_window_ms: config.idempotency_window.as_millis() as u64,
                    log: Arc::clone(&logs[file]),
                },
                settings,
                db: Arc::clone(&databases[file]),
                queue: receiver,
                peers: Arc::clone(&peers),
                peer_inbox: peer_inbox.clone(),
                fanout: Arc::clone(&fanout),
                commits: Arc::clone(&commits),
                hold_fanout_prefix: config.test_hold_fanout_prefix.clone(),
            };
            let handle = writer.spawn(sender).map_err(|source| OpenError::Io {
                path: layout::shard_path(&config.data_dir, file),
                source,
            })?;
            writers.push(handle);
        }

        tracing::info!(
            data_dir = %config.data_dir.display(),
            storage_shards = config.storage_shards,
            virtual_shards = shards.local_count(),
            "owner storage opened"
        );
        Ok(Arc::new(Owner {
            config,
            placement,
            shards,
            peers: owner_peers,
            databases,
            logs,
            runtime: tokio::runtime::Handle::try_current().ok(),
            writers,
            fanout,
            presence: Mutex::new(PresenceBoard::default()),
            commits,
        }))
    }

    /// Carries out one request. Replies to writes only after their commit is durable.
    ///
    /// Cancellation: dropping the future after a write was queued does not withdraw it;
    /// it may still commit and fan out.
    pub async fn call(&self, request: OwnerRequest) -> Result<OwnerReply, Rejection> {
        self.check_holds(&request)?;
        match request {
            OwnerRequest::PresenceReport(report) => {
                self.report_presence(report);
                Ok(OwnerReply::Accepted)
            }
            OwnerRequest::History { user, request } => {
                let db = Arc::clone(self.database_of_conversation(request.conversation_id));
                let placement = self.placement;
                let page =
                    run_blocking(move || read::history(&db, placement, &user, &request)).await??;
                Ok(OwnerReply::HistoryPage(page))
            }
            OwnerRequest::ListConversations { user } => {
                let list = self.list_conversations(user).await?;
                Ok(OwnerReply::Conversations(list))
            }
            OwnerRequest::LastSeen { user } => {
                let (_, file) = self.placement.user(&user);
                let db = Arc::clone(&self.databases[file]);
                let placement = self.placement;
                let row = run_blocking(move || {
                    crate::last_seen::read_last_seen(&db, placement, &user).map(Ok)
                })
                .await??;
                Ok(OwnerReply::LastSeen(row))
            }
            OwnerRequest::RecordLastSeen { user, at_ms } => {
                self.write_last_seen(LastSeenOp::Record { user, at_ms })
                    .await
            }
            OwnerRequest::PresenceSettings {
                user,
                hide_last_seen,
            } => {
                let op = LastSeenOp::Settings {
                    user,
                    hide_last_seen,
                };
                self.write_last_seen(op).await
            }
            request @ (OwnerRequest::Receipts { .. }
            | OwnerRequest::InboxSync { .. }
            | OwnerRequest::MarkUnread { .. }
            | OwnerRequest::Gap { .. }) => self.call_sync(request).await,
            write => self.write(write).await,
        }
    }

    /// Applies inbox changes sent by the owners of conversations, for users whose home
    /// shard this owner holds. Returns once every change is durable.
    pub async fn update_inbox(&self, updates: Vec<InboxUpdate>) -> Result<(), Rejection> {
        let mut by_file: std::collections::BTreeMap<usize, Vec<InboxOp>> = Default::default();
        for update in updates {
            let (vshard, file) = self.placement.user(&update.user);
            let what = format!("the home shard of user {}", update.user);
            self.shards.check_local(vshard, &what)?;
            by_file.entry(file).or_default().push(update.into());
        }
        for (file, ops) in by_file {
            self.submit(file, WriteOp::Inbox(ops)).await?;
        }
        Ok(())
    }

    /// Returns the rows of the listed conversations that `user` is a member of. Every
    /// conversation must be in a virtual shard this owner holds.
    pub async fn conversations_by_id(
        &self,
        user: String,
        conversation_ids: Vec<u64>,
    ) -> Result<Vec<ConversationInfo>, Rejection> {
        for &conversation_id in &conversation_ids {
            let (vshard, _) = self.placement.conversation(conversation_id);
            self.shards
                .check_local(vshard, &format!("conversation {conversation_id}"))?;
        }
        let databases = self.databases.clone();
        let placement = self.placement;
        run_blocking(move || {
            read::conversations_by_id(&databases, placement, &user, &conversation_ids).map(Ok)
        })
        .await?
    }

    /// Applies an edge's registration of the users it serves, renewing its lease.
    pub fn register_edge_users(&self, registration: &Registration) {
        self.fanout.register(registration, Instant::now());
    }

    /// Returns which virtual shards this owner holds.
    pub fn shards(&self) -> &ShardMap {
        &self.shards
    }

    /// Registers an edge for fan-out and returns the queue of its deliveries. An edge that
    /// attaches again with the same id replaces (and closes) its previous queue.
    pub fn attach_edge(&self, edge_id: &str) -> mpsc::Receiver<Arc<Delivery>> {
        let receiver = self.fanout.attach(edge_id);
        // NOTE: the snapshot goes out even when empty, because it clears presence the edge
        // kept from before an owner restart.
        let snapshot = self.presence_board().attach(edge_id);
        self.fanout
            .publish_presence(vec![(edge_id.to_owned(), snapshot)], true);
        receiver
    }

    /// Merges an edge's presence report into the board and pushes the resulting changes
    /// to the other edges. Entries for users whose home shard is elsewhere are dropped.
    ///
    /// NOTE: reports that lapse are noticed only when a report arrives. Every live edge
    /// sends one to every owner each renewal interval, empty when it has no present users.
    fn report_presence(&self, mut report: PresenceReport) {
        report.entries.retain(|entry| {
            let (vshard, _) = self.placement.user(&entry.user);
            let held = matches!(self.shards.holder(vshard), ShardHolder::Local);
            if !held {
                tracing::warn!(
                    user = entry.user,
                    edge_id = report.edge_id,
                    "presence report for a user whose home shard is on another owner; dropped"
                );
            }
            held
        });
        let attached = self.fanout.attached_edges();
        let pushes = self
            .presence_board()
            .report(report, &attached, Instant::now());
        self.fanout.publish_presence(pushes, false);
    }

    fn presence_board(&self) -> std::sync::MutexGuard<'_, PresenceBoard> {
        // The board contains only maps of plain values, which stay valid after a panic.
        self.presence
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns the number of durable commits so far, across all storage files.
    pub fn commit_count(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Returns the configuration the owner was opened with.
    pub fn config(&self) -> &OwnerConfig {
        &self.config
    }

    /// Commits the queued writes, then stops the writer threads; later writes are rejected
    /// with `ShuttingDown`. Blocks the calling thread until the last batch is committed.
    /// The files close when the last `Arc<Owner>` is dropped.
    pub fn shutdown(&self) {
        for writer in &self.writers {
            writer.stop();
        }
    }

    async fn write(&self, request: OwnerRequest) -> Result<OwnerReply, Rejection> {
        let conversation_id = self.check_write(&request)?;
        let (_, file) = self.placement.conversation(conversation_id);
        let outcome = self.submit(file, WriteOp::Owner(request)).await?;

        // NOTE: the membership change is durable before these inbox rows; a crash between
        // the two commits, or an unreachable home owner, leaves the conversation out of
        // ListConversations for the users whose rows were not written.
        self.write_remote_inbox(outcome.remote_inbox).await?;
        Ok(outcome.reply)
    }

    /// Commits a last seen change in the user's home file and returns the stored row.
    async fn write_last_seen(&self, op: LastSeenOp) -> Result<OwnerReply, Rejection> {
        validate::check_user("user", op.user())?;
        let (_, file) = self.placement.user(op.user());
        Ok(self.submit(file, WriteOp::LastSeen(op)).await?.reply)
    }

    /// Writes inbox rows through other storage files' writers and other owners, and
    /// waits until they are durable.
    async fn write_remote_inbox(&self, routes: InboxRoutes) -> Result<(), Rejection> {
        for (target, ops) in routes {
            match target {
                InboxTarget::File(file) => {
                    self.submit(file, WriteOp::Inbox(ops)).await?;
                }
                InboxTarget::Peer(owner) => {
                    let Some(peers) = &self.peers else {
                        return Err(Rejection::internal(
                            "inbox rows routed to another owner, but this owner has no peers",
                        ));
                    };
                    let updates = ops.into_iter().map(InboxUpdate::from).collect();
                    peers.update_inbox(owner, updates).await?;
                }
            }
        }
        Ok(())
    }

    /// Lists the user's conversations from the inbox in their home shard, reading rows of
    /// conversations held elsewhere from their owners.
    async fn list_conversations(&self, user: String) -> Result<Vec<ConversationInfo>, Rejection> {
        let databases = self.databases.clone();
        let placement = self.placement;
        let shards = self.shards.clone();
        let reader = user.clone();
        let (mut found, remote) = run_blocking(move || {
            read::list_conversations(&databases, placement, &shards, &reader).map(Ok)
        })
        .await??;

        for (owner, conversation_ids) in remote {
            let Some(peers) = &self.peers else {
                return Err(Rejection::internal(
                    "inbox names conversations on another owner, but this owner has no peers",
                ));
            };
            found.extend(
                peers
                    .conversations(owner, user.clone(), conversation_ids)
                    .await?,
            );
        }
        found.sort_by_key(|info| info.conversation_id);
        Ok(found)
    }

    /// Rejects a request for a virtual shard this owner does not hold.
    fn check_holds(&self, request: &OwnerRequest) -> Result<(), Rejection> {
        let conversation_id = match request {
            OwnerRequest::LastSeen { user }
            | OwnerRequest::RecordLastSeen { user, .. }
            | OwnerRequest::PresenceSettings { user, .. }
            | OwnerRequest::InboxSync { user, .. }
            | OwnerRequest::MarkUnread { user, .. } => {
                let (vshard, _) = self.placement.user(user);
                return self
                    .shards
                    .check_local(vshard, &format!("the home shard of user {user}"));
            }
            OwnerRequest::ListConversations { user } => {
                let (vshard, _) = self.placement.user(user);
                return self
                    .shards
                    .check_local(vshard, &format!("the home shard of user {user}"));
            }
            OwnerRequest::Send(send) => send.conversation_id,
            OwnerRequest::History { request, .. } => request.conversation_id,
            OwnerRequest::CreateGroup {
                conversation_id, ..
            } => *conversation_id,
            OwnerRequest::AddMembers { request, .. }
            | OwnerRequest::RemoveMembers { request, .. } => request.conversation_id,
            OwnerRequest::Leave { request, .. } => request.conversation_id,
            OwnerRequest::Receipt {
                conversation_id, ..
            }
            | OwnerRequest::Receipts {
                conversation_id, ..
            } => *conversation_id,
            OwnerRequest::Gap { request, .. } => request.conversation_id,
            // Checked per entry, because one report names many users.
            OwnerRequest::PresenceReport(_) => return Ok(()),
        };
        let (vshard, _) = self.placement.conversation(conversation_id);
        self.shards
            .check_local(vshard, &format!("conversation {conversation_id}"))
    }

    /// Runs the checks that need no stored state; returns the conversation to route to.
    fn check_write(&self, request: &OwnerRequest) -> Result<u64, Rejection> {
        let limits = &self.config.limits;
        match request {
            OwnerRequest::Send(send) => {
                validate::check_send(send, limits)?;
                Ok(send.conversation_id)
            }
            OwnerRequest::CreateGroup {
                user,
                request,
                conversation_id,
                ..
            } => {
                validate::check_create_group(user, &request.name, &request.members, limits)?;
                Ok(*conversation_id)
            }
            OwnerRequest::AddMembers { user, request, .. }
            | OwnerRequest::RemoveMembers { user, request, .. } => {
                validate::check_user("user", user)?;
                validate::check_user_list(&request.users, "")?;
                Ok(request.conversation_id)
            }
            OwnerRequest::Leave { user, request, .. } => {
                validate::check_user("user", user)?;
                Ok(request.conversation_id)
            }
            OwnerRequest::Receipt {
                user,
                conversation_id,
                ..
            } => {
                validate::check_user("user", user)?;
                Ok(*conversation_id)
            }
            OwnerRequest::History { .. }
            | OwnerRequest::ListConversations { .. }
            | OwnerRequest::LastSeen { .. }
            | OwnerRequest::RecordLastSeen { .. }
            | OwnerRequest::PresenceSettings { .. }
            | OwnerRequest::Receipts { .. }
            | OwnerRequest::InboxSync { .. }
            | OwnerRequest::MarkUnread { .. }
            | OwnerRequest::Gap { .. }
            | OwnerRequest::PresenceReport(_) => {
                Err(Rejection::internal("read request routed to the write path"))
            }
        }
    }

    /// Queues `op` on the writer of `file` and waits for its commit.
    async fn submit(&self, file: usize, op: WriteOp) -> Result<OpOutcome, Rejection> {
        let (reply, outcome) = oneshot::channel();
        let job = Job {
            op,
            reply: Some(reply),
        };
        match self.writers[file].queue.try_send(Command::Job(job)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(Rejection::retry(
                    ErrorCode::Overloaded,
                    format!("storage writer {file} has a full queue; retry after a pause"),
                    OVERLOADED_RETRY_AFTER_MS,
                ));
            }
            Err(TrySendError::Disconnected(_)) => return Err(shutting_down()),
        }
        outcome.await.unwrap_or_else(|_| Err(shutting_down()))
    }

    fn database_of_conversation(&self, conversation_id: u64) -> &Arc<Database> {
        let (_, file) = self.placement.conversation(conversation_id);
        &self.databases[file]
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn shutting_down() -> Rejection {
    Rejection::retry(
        ErrorCode::ShuttingDown,
        "the owner is shutting down; retry on another node",
        SHUTDOWN_RETRY_AFTER_MS,
    )
}

fn check_config(config: &OwnerConfig) -> Result<(), OpenError> {
    if config.storage_shards == 0 {
        return Err(OpenError::InvalidConfig(
            "storage_shards must be at least 1".into(),
        ));
    }
    if config.batch_max == 0 {
        return Err(OpenError::InvalidConfig(
            "batch_max must be at least 1".into(),
        ));
    }
    if config.idempotency_window < MIN_IDEMPOTENCY_WINDOW {
        return Err(OpenError::InvalidConfig(format!(
            "idempotency_window is {:?}; it must be at least {:?} so that client retries \
             within a day are recognised",
            config.idempotency_window, MIN_IDEMPOTENCY_WINDOW
        )));
    }
    Ok(())
}

/// Opens one storage file and creates its tables, so read transactions find them, and
/// opens its delivery log.
fn open_database(config: &OwnerConfig, index: usize) -> Result<(Database, LogCursor), OpenError> {
    let path = layout::shard_path(&config.data_dir, index);
    let database_error = |source: redb::Error| OpenError::Database {
        path: path.clone(),
        source: Box::new(source),
    };
    let db = Database::create(&path).map_err(|error| database_error(error.into()))?;

    let txn = db
        .begin_write()
        .map_err(|error| database_error(error.into()))?;
    {
        let open = |result: Result<(), redb::TableError>| result.map_err(redb::Error::from);
        open(txn.open_table(MESSAGES).map(drop)).map_err(database_error)?;
        open(txn.open_table(IDEMPOTENCY).map(drop)).map_err(database_error)?;
        open(txn.open_table(IDEMPOTENCY_EXPIRY).map(drop)).map_err(database_error)?;
        open(txn.open_table(CONVERSATIONS).map(drop)).map_err(database_error)?;
        open(txn.open_table(USER_CONVERSATIONS).map(drop)).map_err(database_error)?;
        open(txn.open_table(RECEIPTS).map(drop)).map_err(database_error)?;
        open(txn.open_table(INBOX_LOG).map(drop)).map_err(database_error)?;
        open(txn.open_table(INBOX_META).map(drop)).map_err(database_error)?;
        open(txn.open_table(LAST_SEEN).map(drop)).map_err(database_error)?;
    }
    let file = u16::try_from(index).expect("storage_shards is a u16");
    let log = LogCursor::open(&txn, file).map_err(database_error)?;
    txn.commit().map_err(|error| database_error(error.into()))?;
    Ok((db, log))
}

/// Runs a read on tokio's blocking pool and maps storage failures to rejections.
async fn run_blocking<T, F>(read: F) -> Result<Result<T, Rejection>, Rejection>
where
    F: FnOnce() -> crate::batch::StoreResult<Result<T, Rejection>> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(error)) => {
            tracing::error!(%error, "storage read failed");
            Err(Rejection::retry(
                ErrorCode::StorageFailed,
                format!("storage read failed: {error}"),
                OVERLOADED_RETRY_AFTER_MS,
            ))
        }
        Err(join_error) => Err(Rejection::internal(format!(
            "storage read task failed: {join_error}"
        ))),
    }
}
