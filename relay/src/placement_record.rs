//! The owner set an owner's data was written with, recorded in its data directory.
//!
//! Shard handoff (copying a virtual shard's rows to its new owner) does not exist yet.
//! An owner therefore refuses to start when the cluster file's owners would move any
//! virtual shard onto or away from it, because the moved shards' data would stay behind
//! on the old owner. The error names those shards. A change that moves no shard of this owner (for example a
//! new owner that takes shards only from others) is accepted and recorded.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::placement::{self, OwnerWeight};

/// Name of the record inside an owner's data directory.
pub const RECORD_FILE: &str = "placement.toml";

/// Failure to check or write the placement record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementRecordError {
    #[error("failed to access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "placement record {path} is damaged ({message}); restore it or use an empty data directory"
    )]
    Invalid { path: PathBuf, message: String },
    #[error(
        "data directory {data_dir} belongs to owner {recorded:?}, not {node:?}; point this \
         node at its own data directory"
    )]
    OtherNode {
        data_dir: PathBuf,
        recorded: String,
        node: String,
    },
    #[error("{0}")]
    ShardsWouldMove(Box<ShardMoves>),
}

/// The virtual shards that a change of the owner set would move onto or away from one
/// owner.
#[derive(Debug)]
pub struct ShardMoves {
    pub node: String,
    /// The placement record that contains the earlier owner set.
    pub path: PathBuf,
    pub recorded: Vec<OwnerWeight>,
    pub configured: Vec<OwnerWeight>,
    /// Virtual shards whose data is on this owner and that would go to another owner.
    pub moved_away: Vec<u16>,
    /// Virtual shards that would come to this owner from another.
    pub moved_in: Vec<u16>,
}

impl std::fmt::Display for ShardMoves {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&describe_moves(self))
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    node: String,
    #[serde(rename = "owner")]
    owners: Vec<RecordedOwner>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordedOwner {
    id: String,
    weight: u32,
}

/// Checks the cluster's `owners` against the set recorded in `data_dir`, and records
/// them when no shard of `node` moves.
///
/// A data directory without a record but with storage from an earlier version counts as
/// written by `node` alone, because earlier versions ran one owner per cluster. An empty
/// directory takes the configured set.
pub fn check_and_record(
    data_dir: &Path,
    node: &str,
    owners: &[OwnerWeight],
) -> Result<(), PlacementRecordError> {
    let path = data_dir.join(RECORD_FILE);
    let recorded = match read_record(&path)? {
        Some(record) if record.node != node => {
            return Err(PlacementRecordError::OtherNode {
                data_dir: data_dir.to_owned(),
                recorded: record.node,
                node: node.to_owned(),
            });
        }
        Some(record) => Some(
            record
                .owners
                .into_iter()
                .map(|owner| OwnerWeight {
                    id: owner.id,
                    weight: owner.weight,
                })
                .collect::<Vec<_>>(),
        ),
        None if data_dir.join(tidings_store::layout::LAYOUT_FILE).exists() => {
            Some(vec![OwnerWeight {
                id: node.to_owned(),
                weight: 1,
            }])
        }
        None => None,
    };

    if let Some(recorded) = recorded {
        let (moved_away, moved_in) = moved_shards(node, &recorded, owners);
        if !moved_away.is_empty() || !moved_in.is_empty() {
            return Err(PlacementRecordError::ShardsWouldMove(Box::new(
                ShardMoves {
                    node: node.to_owned(),
                    path,
                    recorded,
                    configured: owners.to_vec(),
                    moved_away,
                    moved_in,
                },
            )));
        }
    }
    write_record(&path, node, owners)
}

/// Returns the virtual shards that would leave `node` and those that would come to it
/// when the owner set changes from `before` to `after`.
pub fn moved_shards(
    node: &str,
    before: &[OwnerWeight],
    after: &[OwnerWeight],
) -> (Vec<u16>, Vec<u16>) {
    let old = placement::place_all(before);
    let new = placement::place_all(after);
    let mut away = Vec::new();
    let mut into = Vec::new();
    for (shard, (&old_index, &new_index)) in old.iter().zip(&new).enumerate() {
        let was_here = before[old_index].id == node;
        let is_here = after[new_index].id == node;
        let shard = shard as u16;
        match (was_here, is_here) {
            (true, false) => away.push(shard),
            (false, true) => into.push(shard),
            _ => {}
        }
    }
    (away, into)
}

fn read_record(path: &Path) -> Result<Option<Record>, PlacementRecordError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PlacementRecordError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    toml::from_str(&text)
        .map(Some)
        .map_err(|error| PlacementRecordError::Invalid {
            path: path.to_owned(),
            message: error.to_string(),
        })
}

fn write_record(
    path: &Path,
    node: &str,
    owners: &[OwnerWeight],
) -> Result<(), PlacementRecordError> {
    let record = Record {
        node: node.to_owned(),
        owners: owners
            .iter()
            .map(|owner| RecordedOwner {
                id: owner.id.clone(),
                weight: owner.weight,
            })
            .collect(),
    };
    let body = toml::to_string(&record).map_err(|error| PlacementRecordError::Invalid {
        path: path.to_owned(),
        message: error.to_string(),
    })?;
    let text = format!(
        "# The owners this data directory was written with. Starting with owners that would\n\
         # move one of this owner's virtual shards is refused until shard handoff exists.\n{body}"
    );
    let io_error = |source| PlacementRecordError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io_error)?;
    }
    // Write then rename, so a crash never leaves a half-written record.
    let scratch = path.with_extension("toml.tmp");
    fs::write(&scratch, text).map_err(io_error)?;
    fs::rename(&scratch, path).map_err(io_error)
}

fn describe_moves(moves: &ShardMoves) -> String {
    let ShardMoves {
        node,
        path,
        recorded,
        configured,
        moved_away,
        moved_in,
    } = moves;
    let mut text = format!(
        "the cluster file's owners {} differ from the owners {} that owner {node}'s data was \
         written with (recorded in {}), and the change would move virtual shards:",
        list_owners(configured),
        list_owners(recorded),
        path.display()
    );
    if !moved_away.is_empty() {
        let _ = write!(
            text,
            " {} shards from {node} to other owners ({})",
            moved_away.len(),
            list_shards(moved_away)
        );
    }
    if !moved_in.is_empty() {
        let separator = if moved_away.is_empty() { "" } else { ";" };
        let _ = write!(
            text,
            "{separator} {} shards from other owners to {node} ({})",
            moved_in.len(),
            list_shards(moved_in)
        );
    }
    text.push_str(
        ". Moving shard data between owners is not implemented yet, so start the cluster \
         with the recorded owners and weights, or start this owner on an empty data directory",
    );
    text
}

fn list_owners(owners: &[OwnerWeight]) -> String {
    let names: Vec<String> = owners
        .iter()
        .map(|owner| format!("{} (weight {})", owner.id, owner.weight))
        .collect();
    format!("[{}]", names.join(", "))
}

fn list_shards(shards: &[u16]) -> String {
    let names: Vec<String> = shards.iter().map(u16::to_string).collect();
    format!("shards {}", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(list: &[(&str, u32)]) -> Vec<OwnerWeight> {
        list.iter()
            .map(|(id, weight)| OwnerWeight {
                id: (*id).to_owned(),
                weight: *weight,
            })
            .collect()
    }

    #[test]
    fn same_owner_set_starts_again() {
        let dir = tempfile::tempdir().unwrap();
        let set = owners(&[("a", 1), ("b", 1)]);
        check_and_record(dir.path(), "a", &set).unwrap();
        check_and_record(dir.path(), "a", &set).unwrap();
        assert!(dir.path().join(RECORD_FILE).exists());
    }

    #[test]
    fn added_owner_is_refused_with_shards() {
        let dir = tempfile::tempdir().unwrap();
        let before = owners(&[("a", 1), ("b", 1)]);
        let after = owners(&[("a", 1), ("b", 1), ("c", 1)]);
        check_and_record(dir.path(), "a", &before).unwrap();

        let error = check_and_record(dir.path(), "a", &after).unwrap_err();
        let (away, into) = moved_shards("a", &before, &after);
        assert!(!away.is_empty(), "c takes some of a's shards");
        assert!(into.is_empty(), "a gains nothing when c joins");
        let text = error.to_string();
        assert!(
            text.contains(&format!("{} shards from a", away.len())),
            "{text}"
        );
        let first = format!("shards {}", away[0]);
        assert!(text.contains(&first), "{text} lacks {first}");
        assert!(text.contains("c (weight 1)"), "{text}");
    }

    #[test]
    fn weight_change_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        check_and_record(dir.path(), "a", &owners(&[("a", 1), ("b", 1)])).unwrap();
        let error = check_and_record(dir.path(), "a", &owners(&[("a", 1), ("b", 3)]));
        assert!(matches!(
            error,
            Err(PlacementRecordError::ShardsWouldMove(_))
        ));
    }

    #[test]
    fn data_of_another_node_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        check_and_record(dir.path(), "a", &owners(&[("a", 1), ("b", 1)])).unwrap();
        let error = check_and_record(dir.path(), "b", &owners(&[("a", 1), ("b", 1)]));
        assert!(matches!(error, Err(PlacementRecordError::OtherNode { .. })));
    }

    #[test]
    fn unrecorded_storage_counts_as_sole_owner() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(tidings_store::layout::LAYOUT_FILE), "x").unwrap();
        let error = check_and_record(dir.path(), "a", &owners(&[("a", 1), ("b", 1)]));
        assert!(matches!(
            error,
            Err(PlacementRecordError::ShardsWouldMove(_))
        ));
    }
}
