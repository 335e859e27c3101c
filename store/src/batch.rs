//! One write transaction's worth of requests: the tables it writes, the conversation rows
//! it has loaded, and the effects (deliveries, inbox updates) released after its commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use redb::{ReadableTable, Table, WriteTransaction};
use tidings_schema::frame::{Limits, Message, MessageKind};
use tidings_schema::mesh::{Delivery, OwnerReply, OwnerRequest, Stamp};
use tidings_schema::{ErrorCode, Rejection};

use crate::cluster::ShardMap;
use crate::delivery_log::{DELIVERY_LOG, LogAppend, LogCursor};
use crate::error::StorageError;
use crate::inbox::{InboxOp, InboxRoutes};
use crate::last_seen::{LAST_SEEN, LastSeenOp};
use crate::record::{ConversationRecord, MessageRecord};
use crate::tables::{
    CONVERSATIONS, IDEMPOTENCY, IDEMPOTENCY_EXPIRY, INBOX_LOG, INBOX_META, MESSAGES, Placement,
    RECEIPTS, USER_CONVERSATIONS,
};

pub(crate) type StoreResult<T> = Result<T, StorageError>;

/// The outcome of one request: `Ok(Err(_))` rejects this request alone, `Err(_)` aborts
/// the whole batch.
pub(crate) type OpResult = StoreResult<Result<OpOutcome, Rejection>>;

/// The storage file a writer owns and the limits it enforces.
#[derive(Debug, Clone)]
pub(crate) struct WriterContext {
    /// Index of the storage file this writer owns.
    pub file: usize,
    pub placement: Placement,
    /// The virtual shards this owner holds; inbox rows of other shards go to their owner.
    pub shards: ShardMap,
    pub limits: Limits,
    pub idempotency_window_ms: u64,
    /// The delivery log of this file; the batch appends its messages to it.
    pub log: Arc<LogCursor>,
}

/// A request a writer carries out inside its batch.
#[derive(Debug)]
pub(crate) enum WriteOp {
    /// A send or a membership change; never `History` or `ListConversations`.
    Owner(OwnerRequest),
    /// Inbox rows of users whose home shard is in this file.
    Inbox(Vec<InboxOp>),
    /// A last seen row of a user whose home shard is in this file.
    LastSeen(LastSeenOp),
    /// The mark-unread flag of an inbox row whose user is homed in this file.
    MarkUnread {
        user: String,
        request: tidings_schema::receipt::MarkUnread,
    },
}

/// The successful result of a write, returned to the caller after the commit.
#[derive(Debug)]
pub(crate) struct OpOutcome {
    pub reply: OwnerReply,
    /// Inbox rows that live in other storage files or on other owners. The caller writes
    /// them there and waits for their commits before replying.
    pub remote_inbox: InboxRoutes,
}

impl OpOutcome {
    pub(crate) fn reply(reply: OwnerReply) -> Self {
        OpOutcome {
            reply,
            remote_inbox: Vec::new(),
        }
    }
}

pub(crate) struct Tables<'txn> {
    pub messages: Table<'txn, (u16, u64, u64), &'static [u8]>,
    pub idempotency: Table<'txn, (u16, u64, &'static str, &'static str), &'static [u8]>,
    pub expiry: Table<'txn, (u64, u16, u64, &'static str, &'static str), ()>,
    pub conversations: Table<'txn, (u16, u64), &'static [u8]>,
    pub inbox: Table<'txn, (u16, &'static str, u64), &'static [u8]>,
    pub receipts: Table<'txn, (u16, u64, &'static str), &'static [u8]>,
    pub inbox_log: Table<'txn, (u16, &'static str, u64), u64>,
    pub inbox_meta: Table<'txn, (u16, &'static str, u64), &'static [u8]>,
    pub last_seen: Table<'txn, (u16, &'static str), (u64, bool)>,
    pub delivery_log: Table<'txn, u64, &'static [u8]>,
}

impl<'txn> Tables<'txn> {
    pub(crate) fn open(txn: &'txn WriteTransaction) -> StoreResult<Self> {
        Ok(Tables {
            messages: txn.open_table(MESSAGES)?,
            idempotency: txn.open_table(IDEMPOTENCY)?,
            expiry: txn.open_table(IDEMPOTENCY_EXPIRY)?,
            conversations: txn.open_table(CONVERSATIONS)?,
            inbox: txn.open_table(USER_CONVERSATIONS)?,
            receipts: txn.open_table(RECEIPTS)?,
            inbox_log: txn.open_table(INBOX_LOG)?,
            inbox_meta: txn.open_table(INBOX_META)?,
            last_seen: txn.open_table(LAST_SEEN)?,
            delivery_log: txn.open_table(DELIVERY_LOG)?,
        })
    }
}

/// A conversation row loaded into the batch; written back once when the batch finishes.
struct CachedConversation {
    vshard: u16,
    record: Option<ConversationRecord>,
    dirty: bool,
}

/// The state of one batch while its requests execute.
pub(crate) struct Batch<'a, 'txn> {
    pub ctx: &'a WriterContext,
    pub tables: Tables<'txn>,
    /// Owner wall-clock time for this batch, milliseconds since the Unix epoch.
    pub now_ms: u64,
    conversations: HashMap<u64, CachedConversation>,
    /// Conversations that received sends in this batch, with their newest seq.
    pub advanced: BTreeMap<u64, u64>,
    /// Deliveries of committed messages, in commit order.
    pub deliveries: Vec<Delivery>,
    /// Inbox read moves of senders, routed with the batch's inbox advances.
    pub inbox_reads: Vec<InboxOp>,
}

impl<'a, 'txn> Batch<'a, 'txn> {
    pub(crate) fn new(ctx: &'a WriterContext, tables: Tables<'txn>, now_ms: u64) -> Self {
        Batch {
            ctx,
            tables,
            now_ms,
            conversations: HashMap::new(),
            advanced: BTreeMap::new(),
            deliveries: Vec::new(),
            inbox_reads: Vec::new(),
        }
    }

    /// Carries out one request inside the batch's transaction.
    pub(crate) fn execute(&mut self, op: &WriteOp) -> OpResult {
        match op {
            WriteOp::Owner(OwnerRequest::Send(request)) => self.send(request),
            WriteOp::Owner(OwnerRequest::CreateGroup {
                user,
                request,
                conversation_id,
                stamp,
            }) => self.create_group(user, request, *conversation_id, stamp),
            WriteOp::Owner(OwnerRequest::AddMembers {
                user,
                request,
                stamp,
            }) => self.add_members(user, request, stamp),
            WriteOp::Owner(OwnerRequest::RemoveMembers {
                user,
                request,
                stamp,
            }) => self.remove_members(user, &request.users, request.conversation_id, stamp),
            WriteOp::Owner(OwnerRequest::Leave {
                user,
                request,
                stamp,
            }) => self.leave(user, request.conversation_id, stamp),
            WriteOp::Owner(OwnerRequest::Receipt {
                user,
                conversation_id,
                delivered_seq,
                read_seq,
            }) => self.receipt(user, *conversation_id, *delivered_seq, *read_seq),
            WriteOp::MarkUnread { user, request } => self.mark_unread(user, request),
            WriteOp::Owner(other) => Ok(Err(Rejection::internal(format!(
                "read request {other:?} was queued to a writer"
            )))),
            WriteOp::Inbox(ops) => {
                self.apply_local_inbox(ops)?;
                Ok(Ok(OpOutcome::reply(OwnerReply::Conversations(Vec::new()))))
            }
            WriteOp::LastSeen(op) => self.apply_last_seen(op),
        }
    }

    /// Returns the conversation row, loading it into the batch on first use.
    pub(crate) fn conversation(
        &mut self,
        conversation_id: u64,
    ) -> StoreResult<Option<&mut ConversationRecord>> {
        if !self.conversations.contains_key(&conversation_id) {
            let (vshard, _) = self.ctx.placement.conversation(conversation_id);
            let record = match self.tables.conversations.get((vshard, conversation_id))? {
                Some(bytes) => Some(ConversationRecord::decode(bytes.value())?),
                None => None,
            };
            self.conversations.insert(
                conversation_id,
                CachedConversation {
                    vshard,
                    record,
                    dirty: false,
                },
            );
        }
        let cached = self
            .conversations
            .get_mut(&conversation_id)
            .expect("inserted above");
        Ok(cached.record.as_mut())
    }

    /// Replaces a conversation row in the batch; it is written when the batch finishes.
    pub(crate) fn put_conversation(&mut self, conversation_id: u64, record: ConversationRecord) {
        let (vshard, _) = self.ctx.placement.conversation(conversation_id);
        self.conversations.insert(
            conversation_id,
            CachedConversation {
                vshard,
                record: Some(record),
                dirty: true,
            },
        );
    }

    /// Appends a message at the next seq of `record` and returns the stored message.
    pub(crate) fn append_message(
        &mut self,
        conversation_id: u64,
        record: &mut ConversationRecord,
        message: MessageRecord,
    ) -> StoreResult<Message> {
        let (vshard, _) = self.ctx.placement.conversation(conversation_id);
        let seq = record.last_seq + 1;
        self.tables
            .messages
            .insert((vshard, conversation_id, seq), message.encode().as_slice())?;
        record.last_seq = seq;
        Ok(message.into_message(conversation_id, seq))
    }

    /// Appends a system message written by `actor` with the edge's `stamp`.
    pub(crate) fn append_system(
        &mut self,
        conversation_id: u64,
        record: &mut ConversationRecord,
        actor: &str,
        body: String,
        stamp: &Stamp,
    ) -> StoreResult<Message> {
        let message = MessageRecord {
            kind: MessageKind::System,
            message_id: stamp.message_id,
            hlc: stamp.hlc,
            server_time_ms: stamp.server_time_ms,
            sender: actor.to_owned(),
            body,
        };
        self.append_message(conversation_id, record, message)
    }

    /// Writes the batch's remaining rows: conversation rows, inbox advances for users
    /// homed in this file, one chunk of expired idempotency keys and the delivery log
    /// entries of its messages. Returns the inbox advances for users homed in other files.
    pub(crate) fn finish(mut self) -> StoreResult<Finished> {
        for (conversation_id, cached) in &self.conversations {
            if let (true, Some(record)) = (cached.dirty, &cached.record) {
                self.tables.conversations.insert(
                    (cached.vshard, *conversation_id),
                    record.encode().as_slice(),
                )?;
            }
        }

        let remote_advances = self.advance_inboxes()?;
        self.sweep_idempotency()?;

        let rows: HashMap<u64, &ConversationRecord> = self
            .conversations
            .iter()
            .filter_map(|(id, cached)| cached.record.as_ref().map(|record| (*id, record)))
            .collect();
        let log = crate::delivery_log::append(
            &mut self.tables.delivery_log,
            &self.ctx.log,
            &mut self.deliveries,
            &rows,
            crate::delivery_log::LOG_RETENTION,
        )?;
        Ok(Finished {
            deliveries: self.deliveries,
            remote_advances,
            log,
        })
    }

    /// Advances the inbox rows of members of every conversation that got messages in this
    /// batch; returns the advances for rows in other files.
    fn advance_inboxes(&mut self) -> StoreResult<InboxRoutes> {
        let mut ops = Vec::new();
        for (&conversation_id, &last_seq) in &self.advanced {
            let Some(cached) = self.conversations.get(&conversation_id) else {
                continue;
            };
            let Some(record) = &cached.record else {
                continue;
            };
            for member in &record.members {
                ops.push(InboxOp::Advance {
                    user: member.user_id.clone(),
                    conversation_id,
                    last_seq,
                });
            }
        }
        // NOTE: after the advances, so a sender's read never lands on a row whose last
        // seq has not reached it yet.
        ops.append(&mut self.inbox_reads);
        self.route_inbox(ops)
    }
}

/// Effects of a batch, released only after its commit.
pub(crate) struct Finished {
    /// Message deliveries carry their delivery log position.
    pub deliveries: Vec<Delivery>,
    pub remote_advances: InboxRoutes,
    /// The delivery log's range after the commit.
    pub log: LogAppend,
}

pub(crate) fn not_member(user: &str, conversation_id: u64) -> Rejection {
    Rejection::new(
        ErrorCode::NotMember,
        format!("user {user} is not a member of conversation {conversation_id}"),
    )
}

pub(crate) fn unknown_conversation(conversation_id: u64) -> Rejection {
    Rejection::new(
        ErrorCode::UnknownConversation,
        format!("conversation {conversation_id} does not exist"),
    )
}

/// Reads a conversation row from any readable table.
pub(crate) fn read_conversation<T>(
    table: &T,
    placement: Placement,
    conversation_id: u64,
) -> StoreResult<Option<ConversationRecord>>
where
    T: ReadableTable<(u16, u64), &'static [u8]>,
{
    let (vshard, _) = placement.conversation(conversation_id);
    match table.get((vshard, conversation_id))? {
        Some(bytes) => Ok(Some(ConversationRecord::decode(bytes.value())?)),
        None => Ok(None),
    }
}
