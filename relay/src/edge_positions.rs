//! The delivery log positions an edge keeps for one owner: the last log entry it received
//! from each of the owner's storage files. The edge hands them back on every attach, so
//! the owner replays what a crash or a closed queue kept from the edge.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use tidings_schema::mesh::LogPosition;

/// Positions by storage file, shared by the sinks and attaches of one owner connection.
#[derive(Debug, Default)]
pub(crate) struct EdgePositions {
    by_file: Mutex<BTreeMap<u16, LogPosition>>,
}

impl EdgePositions {
    /// Returns the positions to send with an attach.
    pub(crate) fn snapshot(&self) -> Vec<LogPosition> {
        self.lock().values().copied().collect()
    }

    /// Records a delivery the edge queued. A position of another epoch replaces the old
    /// one, because the owner's file then contains a new log.
    pub(crate) fn record(&self, position: LogPosition) {
        let mut by_file = self.lock();
        let entry = by_file.entry(position.file).or_insert(position);
        if entry.epoch != position.epoch || entry.offset < position.offset {
            *entry = position;
        }
    }

    /// Applies an attach's result: files without a position, with a position of another
    /// epoch, or listed in `lost` start at the log's end. A position of the same epoch is
    /// kept, because the replay moves it forward and a crash during the replay must not
    /// skip the rest.
    pub(crate) fn adopt_start(&self, start: &[LogPosition], lost: &[u16]) {
        let mut by_file = self.lock();
        for position in start {
            let keep = by_file.get(&position.file).is_some_and(|current| {
                current.epoch == position.epoch && !lost.contains(&position.file)
            });
            if !keep {
                by_file.insert(position.file, *position);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u16, LogPosition>> {
        // The map contains plain values, which stay valid after a panic.
        self.by_file.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(file: u16, epoch: u64, offset: u64) -> LogPosition {
        LogPosition {
            file,
            epoch,
            offset,
        }
    }

    #[test]
    fn record_keeps_highest_offset_per_epoch() {
        let positions = EdgePositions::default();
        positions.record(at(0, 7, 5));
        positions.record(at(0, 7, 3));
        positions.record(at(1, 7, 2));
        assert_eq!(positions.snapshot(), vec![at(0, 7, 5), at(1, 7, 2)]);

        positions.record(at(0, 9, 1));
        assert_eq!(positions.snapshot()[0], at(0, 9, 1), "a new epoch replaces");
    }

    #[test]
    fn start_fills_missing_and_replaced_files_only() {
        let positions = EdgePositions::default();
        positions.record(at(0, 7, 5));
        positions.record(at(1, 7, 5));
        positions.record(at(2, 7, 5));
        positions.adopt_start(&[at(0, 7, 9), at(1, 8, 4), at(2, 7, 9), at(3, 7, 1)], &[2]);
        assert_eq!(
            positions.snapshot(),
            vec![at(0, 7, 5), at(1, 8, 4), at(2, 7, 9), at(3, 7, 1)],
            "file 0 replays from 5; 1 has a new epoch; 2 was lost; 3 is new"
        );
    }
}
