//! The edge's presence service: feeds sessions' heartbeats, subscriptions and typing into
//! the logic of `presence` and `typing`, and sends what they return to the watchers.
//!
//! One dispatcher task ([`run_presence`]) runs expiry, debounce and snapshots every tick,
//! fills in last seen times and writes to the sessions' [`PresenceSink`]s, in the order
//! the changes happened. Who may watch whom comes from the owners: the watcher's
//! conversation list, cached per user. Last seen rows live in each user's home shard; the
//! edge records them when a user's state changes and every `persist_interval` while a user
//! is present.
//!
//! In a cluster the hub also reports its users' presence to their home shards' owners and
//! takes in the presence of users on other edges, as `presence_mesh` describes.
//!
//! Presence state is in memory only, so after a restart it is rebuilt from the heartbeats
//! of the sessions that reconnect.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use moka::future::Cache;
use tidings_relay::Router;
use tidings_schema::codec;
use tidings_schema::error::{ErrorCode, Rejection};
use tidings_schema::frame::{ConversationInfo, ErrorFrame, Frame};
use tidings_schema::mesh::{LastSeenRow, OwnerReply, OwnerRequest};
use tidings_schema::presence::{
    PresenceEntry, PresenceSettings, PresenceState, PresenceSubscribe, PresenceUpdate, Typing,
    encode_datagrams,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::presence::{Notice, Output, PresenceConfig, PresenceTracker, SessionId};
use crate::presence_mesh::run_reports;
use crate::stamp::now_ms;
use crate::typing::{TypingNotice, TypingTracker};
use crate::writer::FrameSink;

/// Maximum users in one subscription.
pub const MAX_WATCHED_USERS: usize = 1_000;

/// Maximum open conversations in one subscription.
pub const MAX_OPEN_CONVERSATIONS: usize = 100;

/// How long a user's conversation list serves membership checks before it is read again.
const CONTACTS_TTL: Duration = Duration::from_secs(30);

/// How long a last seen row read from its home shard is reused.
const LAST_SEEN_TTL: Duration = Duration::from_secs(30);

/// Maximum users whose contacts or last seen rows are cached.
const CACHE_CAPACITY: u64 = 100_000;

/// Destination of a session's presence frames: datagrams, or the session's frame queue on
/// transports without datagrams. Both drop a frame rather than wait, because a lost
/// presence frame is repaired by the next snapshot.
#[derive(Clone)]
pub enum PresenceSink {
    /// Unprefixed frames, one per datagram.
    Datagrams(mpsc::Sender<Bytes>),
    Frames(FrameSink),
}

impl PresenceSink {
    /// Queues one encoded frame without a length prefix; returns `false` if it was dropped.
    fn offer(&self, frame: &Bytes) -> bool {
        match self {
            PresenceSink::Datagrams(queue) => queue.try_send(frame.clone()).is_ok(),
            PresenceSink::Frames(sink) => {
                let mut prefixed = Vec::with_capacity(codec::LENGTH_PREFIX_BYTES + frame.len());
                prefixed.extend_from_slice(&(frame.len() as u32).to_be_bytes());
                prefixed.extend_from_slice(frame);
                sink.try_send_encoded(Bytes::from(prefixed))
            }
        }
    }
}

/// Counters of presence traffic, for metrics and the presence benchmark.
#[derive(Debug, Default)]
pub struct PresenceCounters {
    /// Presence and typing frames queued to sessions.
    pub frames_sent: AtomicU64,
    /// Bytes of those frames, without length prefixes.
    pub bytes_sent: AtomicU64,
    /// Frames dropped because a session's queue was full.
    pub frames_dropped: AtomicU64,
    /// Heartbeats received.
    pub heartbeats: AtomicU64,
}

/// The conversations of a user and everyone who shares one with them.
struct Contacts {
    conversations: HashSet<u64>,
    users: HashSet<String>,
}

impl Contacts {
    fn from_list(list: Vec<ConversationInfo>) -> Self {
        let mut contacts = Contacts {
            conversations: HashSet::new(),
            users: HashSet::new(),
        };
        for info in list {
            contacts.conversations.insert(info.conversation_id);
            let members = info.members.into_iter().map(|member| member.user_id);
            contacts.users.extend(members);
        }
        contacts
    }
}

struct SessionLink {
    user: String,
    sink: PresenceSink,
}

struct HubState {
    tracker: PresenceTracker,
    typing: TypingTracker,
    sessions: HashMap<SessionId, SessionLink>,
}

/// Work for the dispatcher, in the order it happened.
enum Work {
    Output(Output),
    Typing(TypingNotice),
}

/// The presence service of one edge.
pub struct PresenceHub {
    config: PresenceConfig,
    state: Mutex<HubState>,
    work: mpsc::UnboundedSender<Work>,
    router: Router,
    /// This edge's id in presence reports to owners.
    edge_id: String,
    /// Changes of this edge's users, for the owners of their home shards.
    reports: mpsc::UnboundedSender<PresenceEntry>,
    contacts: Cache<String, Arc<Contacts>>,
    last_seen: Cache<String, LastSeenRow>,
    pub counters: PresenceCounters,
}

/// The receiving ends of the hub's work and report queues, for [`run_presence`].
pub struct PresenceWork {
    queue: mpsc::UnboundedReceiver<Work>,
    reports: mpsc::UnboundedReceiver<PresenceEntry>,
}

impl PresenceHub {
    /// Creates the hub of the edge `edge_id`, which reaches owners through `router`.
    pub fn new(
        config: PresenceConfig,
        router: Router,
        edge_id: String,
    ) -> (Arc<PresenceHub>, PresenceWork) {
        let (work, queue) = mpsc::unbounded_channel();
        let (reports, report_queue) = mpsc::unbounded_channel();
        let state = HubState {
            tracker: PresenceTracker::new(config),
            typing: TypingTracker::new(config.typing_expiry),
            sessions: HashMap::new(),
        };
        let hub = PresenceHub {
            config,
            state: Mutex::new(state),
            work,
            router,
            edge_id,
            reports,
            contacts: cache(CONTACTS_TTL),
            last_seen: cache(LAST_SEEN_TTL),
            counters: PresenceCounters::default(),
        };
        let work = PresenceWork {
            queue,
            reports: report_queue,
        };
        (Arc::new(hub), work)
    }

    pub fn config(&self) -> &PresenceConfig {
        &self.config
    }

    pub(crate) fn router(&self) -> &Router {
        &self.router
    }

    pub(crate) fn edge_id(&self) -> &str {
        &self.edge_id
    }

    /// Returns the users with a present device on this edge, for a report renewal.
    pub(crate) fn local_presence(&self) -> Vec<PresenceEntry> {
        let present = self.lock().tracker.present_users();
        let entries = present
            .into_iter()
            .map(|(user, state, last_seen_ms)| PresenceEntry {
                user,
                state,
                last_seen_ms,
            });
        entries.collect()
    }

    /// Takes in the presence of users on other edges, pushed by the owner at
    /// `owner_index` of the router. With `snapshot`, every user of that owner's home shards
    /// missing from `entries` is offline elsewhere.
    pub fn apply_remote(&self, owner_index: usize, entries: &[PresenceEntry], snapshot: bool) {
        let now = Instant::now().into_std();
        let mut outputs = Vec::with_capacity(entries.len());
        {
            let mut state = self.lock();
            if snapshot {
                let listed: HashSet<&str> =
                    entries.iter().map(|entry| entry.user.as_str()).collect();
                for user in state.tracker.remote_users() {
                    let from_owner = self.router.owner_index_for_user(&user) == owner_index;
                    if from_owner && !listed.contains(user.as_str()) {
                        let offline = PresenceEntry {
                            user,
                            ..PresenceEntry::default()
                        };
                        outputs.push(state.tracker.set_remote(&offline, now));
                    }
                }
            }
            for entry in entries {
                outputs.push(state.tracker.set_remote(entry, now));
            }
        }
        for output in outputs {
            self.queue(Work::Output(output));
        }
    }

    /// Registers a session's sink. Its device counts as present from its first heartbeat.
    pub fn attach(&self, session: SessionId, user: &str, sink: PresenceSink) {
        let link = SessionLink {
            user: user.to_owned(),
            sink,
        };
        self.lock().sessions.insert(session, link);
    }

    /// Removes a session that ended: its device stops counting at once, and its
    /// subscription and open conversations end.
    pub fn detach(&self, session: SessionId, user: &str) {
        let output = {
            let mut state = self.lock();
            state.sessions.remove(&session);
            state.typing.close_session(session);
            state
                .tracker
                .session_closed(user, session, Instant::now().into_std())
        };
        self.queue(Work::Output(output));
    }

    /// Records a heartbeat from a device of `user`.
    pub fn heartbeat(&self, session: SessionId, user: &str, state: PresenceState) {
        self.counters.heartbeats.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now().into_std();
        let output = {
            let mut hub = self.lock();
            if !hub.sessions.contains_key(&session) {
                return;
            }
            hub.tracker.heartbeat(user, session, state, now, now_ms())
        };
        self.queue(Work::Output(output));
    }

    /// Records activity of `user` other than a heartbeat, such as a sent message. For a
    /// user this edge tracks, the time goes out with their next state change; otherwise
    /// it is recorded in their home shard at once.
    pub fn note_activity(self: &Arc<Self>, user: &str) {
        let at_ms = now_ms();
        let tracked = self.lock().tracker.note_activity(user, at_ms);
        if !tracked {
            self.record_last_seen(user.to_owned(), at_ms);
        }
    }

    /// Forwards a typing indicator of `user` to the sessions that show the conversation.
    /// An indicator for a conversation the user is not a member of is dropped.
    pub async fn typing(&self, session: SessionId, user: &str, typing: Typing) {
        let conversation_id = typing.conversation_id;
        let allowed = match self.contacts(user, false).await {
            Ok(contacts) => contacts.conversations.contains(&conversation_id),
            Err(rejection) => {
                debug!(%user, conversation_id, %rejection, "typing dropped; membership unknown");
                false
            }
        };
        if !allowed {
            debug!(%user, conversation_id, "typing dropped; not a member");
            return;
        }
        let now = Instant::now().into_std();
        let notice = {
            let mut state = self.lock();
            let typing_state = &mut state.typing;
            typing_state.typing(conversation_id, user, session, typing.active, now)
        };
        if let Some(notice) = notice {
            self.queue(Work::Typing(notice));
        }
    }

    /// Replaces the session's subscription and returns the reply: the current presence of
    /// every listed user, or `NOT_MEMBER` when the user may not watch one of them.
    pub async fn subscribe(
        &self,
        session: SessionId,
        user: &str,
        request: PresenceSubscribe,
    ) -> Frame {
        let request_id = request.request_id;
        if let Err(rejection) = self.check_subscription(user, &request).await {
            return Frame::Error(ErrorFrame {
                request_id,
                ..ErrorFrame::from_rejection(&rejection)
            });
        }
        let now = Instant::now().into_std();
        let entries = {
            let mut state = self.lock();
            // A session that ended while the check ran must not be left watching.
            if !state.sessions.contains_key(&session) {
                Vec::new()
            } else {
                state.typing.set_open(session, &request.open_conversations);
                state.tracker.subscribe(session, &request.users, now)
            }
        };
        let entries = self.fill_last_seen(user, entries).await;
        Frame::PresenceUpdate(PresenceUpdate {
            request_id,
            snapshot: true,
            entries,
        })
    }

    /// Stores the user's presence settings in their home shard and returns the reply.
    pub async fn settings(&self, user: &str, request: PresenceSettings) -> Frame {
        let call = OwnerRequest::PresenceSettings {
            user: user.to_owned(),
            hide_last_seen: request.hide_last_seen,
        };
        match self.router.for_user(user).call(call).await {
            Ok(OwnerReply::LastSeen(row)) => {
                let hide_last_seen = row.hide_last_seen;
                self.last_seen.insert(user.to_owned(), row).await;
                Frame::PresenceSettings(PresenceSettings {
                    request_id: request.request_id,
                    hide_last_seen,
                })
            }
            Ok(other) => unexpected_reply(request.request_id, &other),
            Err(rejection) => Frame::Error(ErrorFrame {
                request_id: request.request_id,
                ..ErrorFrame::from_rejection(&rejection)
            }),
        }
    }

    async fn check_subscription(
        &self,
        user: &str,
        request: &PresenceSubscribe,
    ) -> Result<(), Rejection> {
        if request.users.len() > MAX_WATCHED_USERS
            || request.open_conversations.len() > MAX_OPEN_CONVERSATIONS
        {
            return Err(Rejection::new(
                ErrorCode::InvalidRequest,
                format!(
                    "subscription lists {} users and {} conversations; the limits are \
                     {MAX_WATCHED_USERS} and {MAX_OPEN_CONVERSATIONS}",
                    request.users.len(),
                    request.open_conversations.len()
                ),
            ));
        }
        let contacts = self.contacts(user, false).await?;
        if allows(&contacts, user, request).is_ok() {
            return Ok(());
        }
        // The cached list may predate a conversation the user just joined.
        let contacts = self.contacts(user, true).await?;
        allows(&contacts, user, request)
    }

    async fn contacts(&self, user: &str, fresh: bool) -> Result<Arc<Contacts>, Rejection> {
        if fresh {
            self.contacts.invalidate(user).await;
        }
        let router = self.router.clone();
        let owned = user.to_owned();
        let load = async move {
            let request = OwnerRequest::ListConversations {
                user: owned.clone(),
            };
            match router.for_user(&owned).call(request).await? {
                OwnerReply::Conversations(list) => Ok(Arc::new(Contacts::from_list(list))),
                other => Err(Rejection::internal(format!(
                    "the owner answered ListConversations with {other:?}"
                ))),
            }
        };
        let result = self.contacts.try_get_with(user.to_owned(), load).await;
        result.map_err(|error: Arc<Rejection>| (*error).clone())
    }

    async fn last_seen_row(&self, user: &str) -> Option<LastSeenRow> {
        let router = self.router.clone();
        let owned = user.to_owned();
        let load = async move {
            let request = OwnerRequest::LastSeen {
                user: owned.clone(),
            };
            match router.for_user(&owned).call(request).await? {
                OwnerReply::LastSeen(row) => Ok(row),
                other => Err(Rejection::internal(format!(
                    "the owner answered LastSeen with {other:?}"
                ))),
            }
        };
        let result = self.last_seen.try_get_with(user.to_owned(), load).await;
        match result {
            Ok(row) => Some(row),
            Err(rejection) => {
                debug!(%user, %rejection, "last seen read failed");
                None
            }
        }
    }

    /// Completes `last_seen_ms` of entries for `viewer`: the later of what this edge saw
    /// and the stored row, or 0 when the user hides it from others or it cannot be read.
    async fn fill_last_seen(
        &self,
        viewer: &str,
        entries: Vec<PresenceEntry>,
    ) -> Vec<PresenceEntry> {
        let mut filled = Vec::with_capacity(entries.len());
        for mut entry in entries {
            match self.last_seen_row(&entry.user).await {
                Some(row) if row.hide_last_seen && entry.user != viewer => entry.last_seen_ms = 0,
                Some(row) => entry.last_seen_ms = entry.last_seen_ms.max(row.last_seen_ms),
                // NOTE: without the row the edge cannot tell whether the user hides last
                // seen, so it sends none.
                None if entry.user != viewer => entry.last_seen_ms = 0,
                None => {}
            }
            filled.push(entry);
        }
        filled
    }

    /// Records a user's last seen time in their home shard, without waiting for it.
    fn record_last_seen(self: &Arc<Self>, user: String, at_ms: u64) {
        if at_ms == 0 {
            return;
        }
        let hub = Arc::clone(self);
        tokio::spawn(async move {
            let request = OwnerRequest::RecordLastSeen {
                user: user.clone(),
                at_ms,
            };
            match hub.router.for_user(&user).call(request).await {
                Ok(OwnerReply::LastSeen(row)) => hub.last_seen.insert(user, row).await,
                Ok(other) => warn!(%user, reply = ?other, "unexpected reply to RecordLastSeen"),
                Err(rejection) => debug!(%user, %rejection, "last seen not recorded"),
            }
        });
    }

    async fn deliver(self: &Arc<Self>, output: Output) {
        for transition in output.transitions {
            let report = PresenceEntry {
                user: transition.user.clone(),
                state: transition.state,
                last_seen_ms: transition.last_seen_ms,
            };
            // NOTE: fails only after the reporter stopped at shutdown.
            let _ = self.reports.send(report);
            self.record_last_seen(transition.user, transition.last_seen_ms);
        }
        for notice in output.notices {
            self.deliver_notice(notice).await;
        }
    }

    async fn deliver_notice(&self, notice: Notice) {
        let Some((viewer, sink)) = self.link(notice.watcher) else {
            return;
        };
        let entries = self.fill_last_seen(&viewer, notice.entries).await;
        for datagram in encode_datagrams(entries, notice.snapshot) {
            self.offer(&sink, &Bytes::from(datagram));
        }
    }

    fn deliver_typing(&self, notice: TypingNotice) {
        let frame = Frame::Typing(Typing {
            conversation_id: notice.conversation_id,
            user: notice.user,
            active: notice.active,
        });
        let bytes = Bytes::from(codec::encode(&frame));
        for viewer in notice.viewers {
            if let Some((_, sink)) = self.link(viewer) {
                self.offer(&sink, &bytes);
            }
        }
    }

    fn offer(&self, sink: &PresenceSink, frame: &Bytes) {
        let counters = &self.counters;
        if sink.offer(frame) {
            counters.frames_sent.fetch_add(1, Ordering::Relaxed);
            let len = frame.len() as u64;
            counters.bytes_sent.fetch_add(len, Ordering::Relaxed);
        } else {
            counters.frames_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn link(&self, session: SessionId) -> Option<(String, PresenceSink)> {
        let state = self.lock();
        let link = state.sessions.get(&session)?;
        Some((link.user.clone(), link.sink.clone()))
    }

    fn queue(&self, work: Work) {
        let empty = matches!(&work, Work::Output(output) if output.is_empty());
        if !empty {
            // NOTE: fails only after the dispatcher stopped at shutdown.
            let _ = self.work.send(work);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Runs the hub's dispatcher until `shutdown`: sends queued changes in order, and every
/// tick runs expiry, debounce, snapshots and typing expiry.
pub async fn run_presence(hub: Arc<PresenceHub>, work: PresenceWork, shutdown: CancellationToken) {
    let PresenceWork { mut queue, reports } = work;
    tokio::spawn(run_reports(Arc::clone(&hub), reports, shutdown.clone()));
    let mut tick = tokio::time::interval(hub.config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut persist = tokio::time::interval(hub.config.persist_interval);
    persist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            item = queue.recv() => match item {
                Some(Work::Output(output)) => hub.deliver(output).await,
                Some(Work::Typing(notice)) => hub.deliver_typing(notice),
                None => return,
            },
            _ = tick.tick() => {
                let now = Instant::now().into_std();
                let (output, typing) = {
                    let mut state = hub.lock();
                    (state.tracker.tick(now), state.typing.tick(now))
                };
                hub.deliver(output).await;
                for notice in typing {
                    hub.deliver_typing(notice);
                }
            }
            _ = persist.tick() => {
                let present = hub.lock().tracker.present_users();
                for (user, _, at_ms) in present {
                    hub.record_last_seen(user, at_ms);
                }
            }
        }
    }
}

/// Checks that `user` shares a conversation with every listed user and is a member of
/// every listed conversation.
fn allows(contacts: &Contacts, user: &str, request: &PresenceSubscribe) -> Result<(), Rejection> {
    let stranger = request
        .users
        .iter()
        .find(|watched| watched.as_str() != user && !contacts.users.contains(watched.as_str()));
    if let Some(stranger) = stranger {
        return Err(Rejection::new(
            ErrorCode::NotMember,
            format!("user {user} shares no conversation with {stranger}; watch only members"),
        ));
    }
    let foreign = request
        .open_conversations
        .iter()
        .find(|conversation_id| !contacts.conversations.contains(conversation_id));
    if let Some(conversation_id) = foreign {
        return Err(Rejection::new(
            ErrorCode::NotMember,
            format!("user {user} is not a member of conversation {conversation_id}"),
        ));
    }
    Ok(())
}

fn unexpected_reply(request_id: u64, reply: &OwnerReply) -> Frame {
    let rejection = Rejection::internal(format!("unexpected owner reply {reply:?}"));
    Frame::Error(ErrorFrame {
        request_id,
        ..ErrorFrame::from_rejection(&rejection)
    })
}

fn cache<V: Clone + Send + Sync + 'static>(ttl: Duration) -> Cache<String, V> {
    Cache::builder()
        .max_capacity(CACHE_CAPACITY)
        .time_to_live(ttl)
        .build()
}
