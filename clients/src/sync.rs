//! Exact sync after a reconnect: the inbox says which conversations moved since this
//! device's inbox cursor, and each gap is fetched by seq from the conversation's owner.
//!
//! Every message reaches the application once: a fetched or live message at or below the
//! conversation's cursor is dropped. Gap pages come oldest first and say when they hold
//! only part of the gap, so a fill continues until the gap is closed. A conversation's gate
//! in the sink is held while its gap is filled, so a live delivery that arrives meanwhile
//! waits and never moves the cursor past messages not yet fetched.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings_schema::Frame;
use tidings_schema::receipt::{GapPage, GapRequest, InboxPage, InboxSync};
use tracing::{debug, warn};

use crate::deliveries::DeliverySink;
use crate::session::Session;

/// Messages requested per gap page.
const GAP_PAGE_LIMIT: u32 = 200;
/// Maximum gap pages fetched for one gap, so a server that never reports the end cannot
/// keep the fill running forever.
const MAX_GAP_PAGES: usize = 10_000;
/// Maximum inbox pages read in one sync, for the same reason.
const MAX_INBOX_PAGES: usize = 10_000;
/// Maximum wait for one reply while syncing.
const SYNC_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The positions a device saves to continue where it stopped: the inbox cursor and the
/// highest seq it holds per conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncCursors {
    pub inbox_cursor: u64,
    /// Highest seq held, by conversation id (a decimal string in JSON).
    pub conversations: BTreeMap<String, u64>,
}

/// How a new client starts following its conversations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartSync {
    /// From now: messages committed before the first session are not fetched.
    Live,
    /// From saved cursors: the backlog is fetched first.
    Resume,
}

impl DeliverySink {
    /// Returns the device's positions, to save and pass to a later `connect_resuming`.
    pub fn snapshot(&self) -> SyncCursors {
        let state = self.lock();
        let mut conversations = BTreeMap::new();
        for (&id, &seq) in state.floors.iter().chain(state.delivered.iter()) {
            let held = conversations.entry(id.to_string()).or_insert(0);
            *held = seq.max(*held);
        }
        SyncCursors {
            inbox_cursor: state.inbox_cursor,
            conversations,
        }
    }

    /// Restores saved positions as delivery cursors: a sync fetches what follows them.
    pub fn restore(&self, cursors: &SyncCursors) {
        let mut state = self.lock();
        state.inbox_cursor = cursors.inbox_cursor;
        for (id, &seq) in &cursors.conversations {
            if let Ok(id) = id.parse::<u64>() {
                state.delivered.insert(id, seq);
            }
        }
    }

    /// Runs the first sync of a client: a full catch-up from restored cursors, or a
    /// baseline that records where each conversation stands.
    pub(crate) async fn start(self, session: Arc<Session>, mode: StartSync) {
        let result = match mode {
            StartSync::Resume => self.catch_up(&session).await,
            StartSync::Live => self.baseline(&session).await,
        };
        if let Err(error) = result {
            warn!(%error, "first sync failed; the next reconnect syncs again");
        }
    }

    /// Syncs after a reconnect, logging a failure.
    pub async fn resync(self, session: Arc<Session>) {
        if let Err(error) = self.catch_up(&session).await {
            warn!(%error, "sync after reconnect failed; the next delivery fills its gap");
        }
    }

    /// Records the last seq of every conversation not followed yet as its floor, and the
    /// inbox cursor, without fetching anything.
    async fn baseline(&self, session: &Session) -> Result<(), String> {
        let mut after = self.lock().inbox_cursor;
        for _ in 0..MAX_INBOX_PAGES {
            let page = inbox_page(session, after).await?;
            {
                let mut state = self.lock();
                for entry in page.entries.iter().filter(|entry| entry.member) {
                    state
                        .floors
                        .entry(entry.conversation_id)
                        .or_insert(entry.last_seq);
                }
                state.inbox_cursor = state.inbox_cursor.max(page.cursor);
            }
            if page.complete {
                return Ok(());
            }
            after = page.cursor;
        }
        Err(format!("inbox has more than {MAX_INBOX_PAGES} pages"))
    }

    /// Fetches every message of every conversation that moved since the inbox cursor,
    /// then advances the cursor. Conversations without a cursor are fetched from their
    /// first message the user can see.
    pub(crate) async fn catch_up(&self, session: &Session) -> Result<(), String> {
        let mut after = self.lock().inbox_cursor;
        for _ in 0..MAX_INBOX_PAGES {
            let page = inbox_page(session, after).await?;
            for entry in page.entries.iter().filter(|entry| entry.member) {
                let gate = self.gate(entry.conversation_id);
                let _gate = gate.lock().await;
                let base = self.sync_base(entry.conversation_id);
                if entry.last_seq > base {
                    self.fill_after(session, entry.conversation_id, base, None)
                        .await?;
                }
            }
            // NOTE: the cursor moves only after every gap of the page is filled, so a
            // failed fill is retried by the next sync. An inbox advance the owner has not
            // applied yet is missed here; the conversation's next delivery fills that gap.
            {
                let mut state = self.lock();
                state.inbox_cursor = state.inbox_cursor.max(page.cursor);
            }
            if page.complete {
                return Ok(());
            }
            after = page.cursor;
        }
        Err(format!("inbox has more than {MAX_INBOX_PAGES} pages"))
    }

    /// Passes on the messages after `after`, oldest first, up to but excluding `until`
    /// (to the last seq when `None`). The caller holds the gate.
    pub(crate) async fn fill_after(
        &self,
        session: &Session,
        conversation_id: u64,
        after: u64,
        until: Option<u64>,
    ) -> Result<(), String> {
        debug!(conversation_id, after, ?until, "filling a gap");
        let mut after_seq = after;
        for _ in 0..MAX_GAP_PAGES {
            let page = gap_page(session, conversation_id, after_seq).await?;
            for message in page.messages {
                if until.is_some_and(|until| message.seq >= until) {
                    return Ok(());
                }
                self.pass_on(message).await;
            }
            if page.complete || page.next_after_seq <= after_seq {
                return Ok(());
            }
            after_seq = page.next_after_seq;
        }
        Err(format!(
            "gap in conversation {conversation_id} after seq {after} spans more than \
             {MAX_GAP_PAGES} pages"
        ))
    }
}

async fn inbox_page(session: &Session, after_cursor: u64) -> Result<InboxPage, String> {
    let request_id = session.next_request_id();
    let request = Frame::InboxSync(InboxSync {
        request_id,
        after_cursor,
        limit: 0,
        conversation_id: 0,
    });
    match sync_request(session, request_id, request).await? {
        Frame::InboxPage(page) => Ok(page),
        other => Err(format!("expected InboxPage, received {}", other.kind())),
    }
}

async fn gap_page(session: &Session, conversation_id: u64, after: u64) -> Result<GapPage, String> {
    let request_id = session.next_request_id();
    let request = Frame::GapRequest(GapRequest {
        request_id,
        conversation_id,
        after_seq: after,
        limit: GAP_PAGE_LIMIT,
    });
    match sync_request(session, request_id, request).await? {
        Frame::GapPage(page) => Ok(page),
        other => Err(format!("expected GapPage, received {}", other.kind())),
    }
}

async fn sync_request(session: &Session, request_id: u64, request: Frame) -> Result<Frame, String> {
    let kind = request.kind();
    match tokio::time::timeout(SYNC_REQUEST_TIMEOUT, session.request(request_id, request)).await {
        Ok(Ok(Frame::Error(error))) => Err(format!("{kind} rejected: {}", error.rejection())),
        Ok(Ok(frame)) => Ok(frame),
        Ok(Err(error)) => Err(format!("{kind} failed: {error}")),
        Err(_) => Err(format!(
            "{kind} timed out after {}",
            humantime::format_duration(SYNC_REQUEST_TIMEOUT)
        )),
    }
}
