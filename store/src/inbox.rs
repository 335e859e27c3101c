//! Inbox rows (`user_conversations`), kept in each user's home virtual shard.

use std::collections::BTreeMap;

use redb::ReadableTable;
use tidings_schema::mesh::{InboxChange, InboxUpdate};

use crate::batch::{Batch, StoreResult};
use crate::cluster::ShardHolder;
use crate::record::InboxRecord;

/// The destination of inbox ops that a batch cannot apply itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum InboxTarget {
    /// Another storage file of this owner, by index.
    File(usize),
    /// Another owner, by its index in the cluster, reached over the mesh.
    Peer(usize),
}

/// Inbox ops grouped by where they must be applied.
pub(crate) type InboxRoutes = Vec<(InboxTarget, Vec<InboxOp>)>;

/// A change to one user's inbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InboxOp {
    /// The user joined: create the row, or keep its read position if it exists.
    Join {
        user: String,
        conversation_id: u64,
        last_seq: u64,
    },
    /// A message was committed: raise `last_seq` of an existing row. It never creates a
    /// row, so a late advance cannot bring back the row of a removed member.
    Advance {
        user: String,
        conversation_id: u64,
        last_seq: u64,
    },
    /// The user left or was removed.
    Remove { user: String, conversation_id: u64 },
    /// The user's read receipt moved: raise `last_read_seq` of an existing row and clear
    /// its mark-unread flag. Like `Advance`, it never creates a row.
    Read {
        user: String,
        conversation_id: u64,
        read_seq: u64,
    },
}

impl InboxOp {
    pub(crate) fn user(&self) -> &str {
        match self {
            InboxOp::Join { user, .. } | InboxOp::Advance { user, .. } => user,
            InboxOp::Remove { user, .. } | InboxOp::Read { user, .. } => user,
        }
    }
}

impl From<InboxOp> for InboxUpdate {
    fn from(op: InboxOp) -> InboxUpdate {
        match op {
            InboxOp::Join {
                user,
                conversation_id,
                last_seq,
            } => InboxUpdate {
                user,
                conversation_id,
                last_seq,
                change: InboxChange::Join,
            },
            InboxOp::Advance {
                user,
                conversation_id,
                last_seq,
            } => InboxUpdate {
                user,
                conversation_id,
                last_seq,
                change: InboxChange::Advance,
            },
            InboxOp::Remove {
                user,
                conversation_id,
            } => InboxUpdate {
                user,
                conversation_id,
                last_seq: 0,
                change: InboxChange::Remove,
            },
            InboxOp::Read {
                user,
                conversation_id,
                read_seq,
            } => InboxUpdate {
                user,
                conversation_id,
                last_seq: read_seq,
                change: InboxChange::Read,
            },
        }
    }
}

impl From<InboxUpdate> for InboxOp {
    fn from(update: InboxUpdate) -> InboxOp {
        let InboxUpdate {
            user,
            conversation_id,
            last_seq,
            change,
        } = update;
        match change {
            InboxChange::Join => InboxOp::Join {
                user,
                conversation_id,
                last_seq,
            },
            InboxChange::Advance => InboxOp::Advance {
                user,
                conversation_id,
                last_seq,
            },
            InboxChange::Remove => InboxOp::Remove {
                user,
                conversation_id,
            },
            InboxChange::Read => InboxOp::Read {
                user,
                conversation_id,
                read_seq: last_seq,
            },
        }
    }
}

impl Batch<'_, '_> {
    /// Applies the ops for users homed in this file and returns the others grouped by the
    /// storage file or the owner that holds them.
    pub(crate) fn route_inbox(&mut self, ops: Vec<InboxOp>) -> StoreResult<InboxRoutes> {
        let mut remote: BTreeMap<InboxTarget, Vec<InboxOp>> = BTreeMap::new();
        let mut local = Vec::new();
        for op in ops {
            let (vshard, file) = self.ctx.placement.user(op.user());
            let target = match self.ctx.shards.holder(vshard) {
                ShardHolder::Peer(owner) => InboxTarget::Peer(owner),
                ShardHolder::Local if file == self.ctx.file => {
                    local.push(op);
                    continue;
                }
                ShardHolder::Local => InboxTarget::File(file),
            };
            remote.entry(target).or_default().push(op);
        }
        self.apply_local_inbox(&local)?;
        Ok(remote.into_iter().collect())
    }

    /// Applies inbox ops whose users are homed in this writer's file.
    pub(crate) fn apply_local_inbox(&mut self, ops: &[InboxOp]) -> StoreResult<()> {
        for op in ops {
            let (vshard, file) = self.ctx.placement.user(op.user());
            debug_assert_eq!(file, self.ctx.file, "inbox op routed to the wrong file");
            match op {
                InboxOp::Join {
                    user,
                    conversation_id,
                    last_seq,
                } => {
                    let key = (vshard, user.as_str(), *conversation_id);
                    let mut row = self.inbox_row(key)?.unwrap_or_default();
                    row.last_seq = row.last_seq.max(*last_seq);
                    self.tables.inbox.insert(key, row.encode().as_slice())?;
                    self.touch_inbox(key, None)?;
                }
                InboxOp::Advance {
                    user,
                    conversation_id,
                    last_seq,
                } => {
                    let key = (vshard, user.as_str(), *conversation_id);
                    if let Some(mut row) = self.inbox_row(key)?
                        && row.last_seq < *last_seq
                    {
                        row.last_seq = *last_seq;
                        self.tables.inbox.insert(key, row.encode().as_slice())?;
                        self.touch_inbox(key, None)?;
                    }
                }
                InboxOp::Remove {
                    user,
                    conversation_id,
                } => {
                    let key = (vshard, user.as_str(), *conversation_id);
                    if self.tables.inbox.remove(key)?.is_some() {
                        self.touch_inbox(key, Some(false))?;
                    }
                }
                InboxOp::Read {
                    user,
                    conversation_id,
                    read_seq,
                } => {
                    let key = (vshard, user.as_str(), *conversation_id);
                    if let Some(mut row) = self.inbox_row(key)? {
                        let moved = row.last_read_seq < *read_seq;
                        if moved {
                            row.last_read_seq = *read_seq;
                            self.tables.inbox.insert(key, row.encode().as_slice())?;
                        }
                        // NOTE: reading clears the mark-unread flag even when the read seq
                        // did not move, because the user looked at the conversation.
                        let flagged = self.inbox_meta(key)?.marked_unread;
                        if moved || flagged {
                            self.touch_inbox(key, Some(false))?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    pub(crate) fn inbox_row(&self, key: (u16, &str, u64)) -> StoreResult<Option<InboxRecord>> {
        match self.tables.inbox.get(key)? {
            Some(bytes) => Ok(Some(InboxRecord::decode(bytes.value())?)),
            None => Ok(None),
        }
    }
}
