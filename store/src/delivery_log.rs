//! The delivery log of one storage file: every committed message in commit order, under
//! dense offsets, so fan-out that a crash or a full edge queue cut short can be replayed.
//!
//! Entries are written in the same write transaction as the messages, so the log is
//! exactly as durable as they are. An entry keeps only the ids needed to rebuild the
//! delivery from the message and conversation rows. Each file's log has an epoch, a random
//! id written when the file is created, so an edge can tell a restarted owner (same
//! epoch, offsets still valid) from a wiped or replaced store.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};
use tidings_schema::mesh::{Delivery, LogPosition};

use crate::batch::StoreResult;
use crate::record::{ConversationRecord, LogRecord, MessageRecord};
use crate::tables::{CONVERSATIONS, MESSAGES, Placement};

/// `offset` → encoded [`LogRecord`]. Offsets start at 1 and have no holes, except below
/// the trim point.
pub(crate) const DELIVERY_LOG: TableDefinition<'static, u64, &[u8]> =
    TableDefinition::new("delivery_log");

/// Settings of the delivery log; only [`EPOCH_KEY`] so far.
const DELIVERY_LOG_META: TableDefinition<'static, &str, u64> =
    TableDefinition::new("delivery_log_meta");

const EPOCH_KEY: &str = "epoch";

/// Number of newest entries each storage file keeps.
///
/// NOTE: an edge that falls further behind than this (a long outage under heavy traffic)
/// gets a reply that its position is lost, and its devices catch up from history when
/// they reconnect. Each entry takes a few dozen bytes, so the log stays a few MB per file.
pub const LOG_RETENTION: u64 = 65_536;

/// Most entries one commit trims beyond the ones it appends, so a log that was opened
/// with a longer retention shrinks over several commits instead of in one.
const TRIM_SLACK: u64 = 1_024;

/// The in-memory view of one file's log: its epoch and the range of offsets it holds.
///
/// The file's writer is the only one that appends. It moves the range forward after each
/// commit and before publishing the commit's deliveries (see [`LogCursor::advance`]).
#[derive(Debug)]
pub(crate) struct LogCursor {
    file: u16,
    epoch: u64,
    /// Smallest offset still stored, or `next` when the log is empty.
    first: AtomicU64,
    /// Offset the next entry gets.
    next: AtomicU64,
}

/// The range a file's log holds, read at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogRange {
    pub file: u16,
    pub epoch: u64,
    pub first: u64,
    /// Offset of the newest entry; 0 when nothing was ever logged.
    pub last: u64,
}

impl LogCursor {
    /// Opens the log tables of a file, writing its epoch on first use, and reads the range
    /// of offsets it holds.
    pub(crate) fn open(txn: &WriteTransaction, file: u16) -> Result<LogCursor, redb::Error> {
        let mut meta = txn.open_table(DELIVERY_LOG_META)?;
        let stored = meta.get(EPOCH_KEY)?.map(|epoch| epoch.value());
        let epoch = match stored {
            Some(epoch) => epoch,
            None => {
                // Zero is kept out so that an unset epoch never matches a real one.
                let epoch = rand::random::<u64>().max(1);
                meta.insert(EPOCH_KEY, epoch)?;
                tracing::info!(file, epoch, "delivery log created");
                epoch
            }
        };
        let log = txn.open_table(DELIVERY_LOG)?;
        let next = match log.last()? {
            Some((offset, _)) => offset.value() + 1,
            None => 1,
        };
        let first = match log.first()? {
            Some((offset, _)) => offset.value(),
            None => next,
        };
        Ok(LogCursor {
            file,
            epoch,
            first: AtomicU64::new(first),
            next: AtomicU64::new(next),
        })
    }

    /// Returns the log's current range of offsets.
    pub(crate) fn range(&self) -> LogRange {
        // NOTE: `next` is read first. The writer stores `first` before `next`, so this
        // never reads a `first` ahead of `next`.
        let next = self.next.load(Ordering::SeqCst);
        let first = self.first.load(Ordering::SeqCst).min(next);
        LogRange {
            file: self.file,
            epoch: self.epoch,
            first,
            last: next - 1,
        }
    }

    /// Records a committed append. Called after the commit and before its deliveries are
    /// published, so an edge that attaches and then reads the range gets every entry up
    /// to `next - 1` either from the replay or from its live queue.
    pub(crate) fn advance(&self, appended: LogAppend) {
        self.first.store(appended.first, Ordering::SeqCst);
        self.next.store(appended.next, Ordering::SeqCst);
    }
}

/// The range of a file's log after a batch's append, applied to the cursor after commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogAppend {
    pub first: u64,
    pub next: u64,
}

/// Appends an entry for every message delivery in `deliveries`, in order, and sets their
/// positions. Then trims the entries older than the newest `retention` ones (the owner
/// passes [`LOG_RETENTION`]). `conversations` contains the batch's conversation rows as
/// they will be committed.
pub(crate) fn append(
    table: &mut Table<'_, u64, &'static [u8]>,
    cursor: &LogCursor,
    deliveries: &mut [Delivery],
    conversations: &HashMap<u64, &ConversationRecord>,
    retention: u64,
) -> StoreResult<LogAppend> {
    let mut next = cursor.next.load(Ordering::SeqCst);
    for delivery in deliveries.iter_mut().filter(|d| is_message(d)) {
        let message = &delivery.message;
        let derived: HashSet<&str> = conversations
            .get(&message.conversation_id)
            .map(|record| members_at(record, message.seq).collect())
            .unwrap_or_default();
        let record = LogRecord {
            conversation_id: message.conversation_id,
            seq: message.seq,
            origin_device: delivery.origin_device.clone(),
            departed: delivery
                .recipients
                .iter()
                .filter(|user| !derived.contains(user.as_str()))
                .cloned()
                .collect(),
        };
        table.insert(next, record.encode().as_slice())?;
        delivery.position = Some(LogPosition {
            file: cursor.file,
            epoch: cursor.epoch,
            offset: next,
        });
        next += 1;
    }

    let appended = next - cursor.next.load(Ordering::SeqCst);
    let keep_from = next.saturating_sub(retention).max(1);
    let mut budget = appended + TRIM_SLACK;
    while budget > 0 {
        let oldest = table.first()?.map(|(offset, _)| offset.value());
        if oldest.is_none_or(|offset| offset >= keep_from) {
            break;
        }
        table.pop_first()?;
        budget -= 1;
    }
    let first = match table.first()? {
        Some((offset, _)) => offset.value(),
        None => next,
    };
    Ok(LogAppend { first, next })
}

/// Returns whether a delivery carries a committed message, as opposed to a receipt or a
/// presence change.
fn is_message(delivery: &Delivery) -> bool {
    delivery.receipt.is_none() && delivery.presence.is_empty() && delivery.message.seq > 0
}

/// Returns the members of `record` who had joined by `seq`.
fn members_at(record: &ConversationRecord, seq: u64) -> impl Iterator<Item = &str> {
    record
        .members
        .iter()
        .filter(move |member| member.joined_seq <= seq)
        .map(|member| member.user_id.as_str())
}

/// Entries read from a log, in offset order.
#[derive(Debug, Default)]
pub(crate) struct LogPage {
    pub deliveries: Vec<Delivery>,
    /// Offset of the last entry read; the next page starts after it.
    pub last: u64,
    /// Whether entries between the requested start and the first one found were trimmed.
    pub trimmed: bool,
}

/// Reads up to `limit` entries after offset `after`, up to and including `until`, and
/// rebuilds their deliveries. Recipients are the members who had joined by the message,
/// as the conversation row is now, plus the departed users the entry names.
pub(crate) fn read_page(
    db: &Database,
    placement: Placement,
    cursor_range: LogRange,
    after: u64,
    until: u64,
    limit: usize,
) -> StoreResult<LogPage> {
    let txn = db.begin_read()?;
    let log = txn.open_table(DELIVERY_LOG)?;
    let messages = txn.open_table(MESSAGES)?;
    let conversations = txn.open_table(CONVERSATIONS)?;
    let mut rows: HashMap<u64, Option<ConversationRecord>> = HashMap::new();
    let mut page = LogPage {
        last: after,
        ..LogPage::default()
    };

    for entry in log.range(after + 1..=until)?.take(limit) {
        let (offset, bytes) = entry?;
        let offset = offset.value();
        if page.last + 1 != offset {
            page.trimmed = true;
            return Ok(page);
        }
        page.last = offset;
        let record = LogRecord::decode(bytes.value())?;
        let (vshard, _) = placement.conversation(record.conversation_id);
        let Some(message) = messages.get((vshard, record.conversation_id, record.seq))? else {
            tracing::error!(
                file = cursor_range.file,
                offset,
                conversation_id = record.conversation_id,
                seq = record.seq,
                "delivery log names a message that is not stored; entry skipped"
            );
            continue;
        };
        let message = MessageRecord::decode(message.value())?;
        let row = match rows.entry(record.conversation_id) {
            Entry::Occupied(row) => row.into_mut(),
            Entry::Vacant(slot) => slot.insert(crate::batch::read_conversation(
                &conversations,
                placement,
                record.conversation_id,
            )?),
        };
        let mut recipients: Vec<String> = match row {
            Some(row) => members_at(row, record.seq).map(str::to_owned).collect(),
            None => Vec::new(),
        };
        recipients.extend(record.departed);
        page.deliveries.push(Delivery {
            message: message.into_message(record.conversation_id, record.seq),
            recipients,
            origin_device: record.origin_device,
            receipt: None,
            presence: Vec::new(),
            presence_snapshot: false,
            position: Some(LogPosition {
                file: cursor_range.file,
                epoch: cursor_range.epoch,
                offset,
            }),
        });
    }
    // Every offset in (after, until] was assigned, so an empty page means they were all
    // trimmed meanwhile.
    if page.last == after && after < until {
        page.trimmed = true;
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use tidings_schema::frame::Message;

    use super::*;
    use crate::record::MessageRecord;

    fn delivery(conversation_id: u64, seq: u64) -> Delivery {
        Delivery {
            message: Message {
                conversation_id,
                seq,
                ..Message::default()
            },
            recipients: vec!["alice".into()],
            origin_device: "phone".into(),
            receipt: None,
            presence: Vec::new(),
            presence_snapshot: false,
            position: None,
        }
    }

    /// Commits one message row and its log entry per seq in `seqs`, as a batch does.
    fn commit(db: &Database, cursor: &LogCursor, seqs: std::ops::RangeInclusive<u64>) {
        let placement = Placement::new(1);
        let txn = db.begin_write().unwrap();
        let appended = {
            let mut messages = txn.open_table(MESSAGES).unwrap();
            let mut deliveries = Vec::new();
            for seq in seqs {
                let (vshard, _) = placement.conversation(5);
                let row = MessageRecord {
                    kind: tidings_schema::frame::MessageKind::User,
                    message_id: seq,
                    hlc: seq,
                    server_time_ms: seq,
                    sender: "alice".into(),
                    body: format!("m{seq}"),
                };
                messages
                    .insert((vshard, 5, seq), row.encode().as_slice())
                    .unwrap();
                deliveries.push(delivery(5, seq));
            }
            let mut table = txn.open_table(DELIVERY_LOG).unwrap();
            append(&mut table, cursor, &mut deliveries, &HashMap::new(), 10).unwrap()
        };
        txn.commit().unwrap();
        cursor.advance(appended);
    }

    fn open(db: &Database) -> LogCursor {
        let txn = db.begin_write().unwrap();
        let cursor = LogCursor::open(&txn, 0).unwrap();
        txn.open_table(CONVERSATIONS).unwrap();
        txn.open_table(MESSAGES).unwrap();
        txn.commit().unwrap();
        cursor
    }

    #[test]
    fn epoch_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        let first = {
            let db = Database::create(&path).unwrap();
            let cursor = open(&db);
            commit(&db, &cursor, 1..=3);
            cursor.range()
        };
        let db = Database::create(&path).unwrap();
        let again = open(&db).range();
        assert_eq!(again, first, "same epoch and offsets after reopening");
        assert_ne!(again.epoch, 0);

        let other = tempfile::tempdir().unwrap();
        let fresh = Database::create(other.path().join("log.redb")).unwrap();
        assert_ne!(
            open(&fresh).range().epoch,
            first.epoch,
            "a new file gets a new epoch"
        );
    }

    #[test]
    fn trim_keeps_newest_entries() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("log.redb")).unwrap();
        let cursor = open(&db);
        for batch in 0..5 {
            commit(&db, &cursor, batch * 5 + 1..=batch * 5 + 5);
        }
        let range = cursor.range();
        assert_eq!(range.last, 25);
        assert_eq!(range.first, 16, "retention 10 keeps offsets 16 to 25");

        let txn = db.begin_read().unwrap();
        let table = txn.open_table(DELIVERY_LOG).unwrap();
        let stored: Vec<u64> = table
            .iter()
            .unwrap()
            .map(|entry| entry.unwrap().0.value())
            .collect();
        assert_eq!(stored, (16..=25).collect::<Vec<_>>());
    }

    #[test]
    fn page_reads_in_order_and_flags_trimmed_start() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("log.redb")).unwrap();
        let cursor = open(&db);
        commit(&db, &cursor, 1..=8);
        let range = cursor.range();
        let placement = Placement::new(1);

        let page = read_page(&db, placement, range, 2, 8, 4).unwrap();
        let seqs: Vec<u64> = page.deliveries.iter().map(|d| d.message.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5, 6]);
        assert_eq!(page.last, 6);
        assert!(!page.trimmed);
        assert_eq!(page.deliveries[0].message.body, "m3");
        assert_eq!(page.deliveries[0].origin_device, "phone");
        assert_eq!(
            page.deliveries[0].recipients,
            vec!["alice"],
            "departed user kept"
        );
        assert_eq!(page.deliveries[3].position.unwrap().offset, 6);

        commit(&db, &cursor, 9..=20);
        let range = cursor.range();
        assert_eq!(range.first, 11);
        let page = read_page(&db, placement, range, 6, 20, 4).unwrap();
        assert!(page.trimmed, "offsets 7 to 10 are gone");
        assert!(page.deliveries.is_empty());
    }
}
