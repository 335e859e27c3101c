//! The data directory: shard file names and the record of how many storage files it has.
//!
//! Virtual shards map to files by `vshard % storage_shards`, so opening a directory with a
//! different count would look for rows in the wrong files. The count is recorded on first
//! open and checked on every later one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::owner::OpenError;

/// Name of the file that records the layout of a data directory.
pub const LAYOUT_FILE: &str = "layout.txt";

/// Version of the layout record.
const LAYOUT_VERSION: u32 = 1;

/// Returns the path of storage file `index`.
pub fn shard_path(data_dir: &Path, index: usize) -> PathBuf {
    data_dir.join(format!("shard-{index}.redb"))
}

/// Creates the data directory if needed, then records or checks `storage_shards`.
pub(crate) fn prepare(data_dir: &Path, storage_shards: u16) -> Result<(), OpenError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OpenError::Io { path, source }
    };
    fs::create_dir_all(data_dir).map_err(io_error(data_dir))?;

    let layout_path = data_dir.join(LAYOUT_FILE);
    match fs::read_to_string(&layout_path) {
        Ok(text) => {
            let recorded = parse_layout(&text).ok_or_else(|| OpenError::InvalidLayout {
                path: layout_path.clone(),
            })?;
            if recorded != storage_shards {
                return Err(OpenError::StorageShardsMismatch {
                    path: layout_path,
                    recorded,
                    configured: storage_shards,
                });
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if shard_path(data_dir, 0).exists() {
                return Err(OpenError::InvalidLayout { path: layout_path });
            }
            write_layout(data_dir, &layout_path, storage_shards).map_err(io_error(&layout_path))
        }
        Err(error) => Err(OpenError::Io {
            path: layout_path,
            source: error,
        }),
    }
}

fn parse_layout(text: &str) -> Option<u16> {
    let mut version = None;
    let mut shards = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key.trim() {
            "layout_version" => version = value.trim().parse::<u32>().ok(),
            "storage_shards" => shards = value.trim().parse::<u16>().ok(),
            _ => {}
        }
    }
    match (version, shards) {
        (Some(LAYOUT_VERSION), Some(shards)) if shards > 0 => Some(shards),
        _ => None,
    }
}

/// Writes the layout record through a temporary file, so a crash leaves either no record
/// or a complete one.
fn write_layout(data_dir: &Path, path: &Path, storage_shards: u16) -> std::io::Result<()> {
    let temporary = data_dir.join(format!("{LAYOUT_FILE}.tmp"));
    let mut file = fs::File::create(&temporary)?;
    writeln!(
        file,
        "# Written by tidings-store; do not edit: it places data in files."
    )?;
    writeln!(file, "layout_version = {LAYOUT_VERSION}")?;
    writeln!(file, "storage_shards = {storage_shards}")?;
    file.sync_all()?;
    fs::rename(&temporary, path)?;
    fs::File::open(data_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_mismatch_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path(), 4).unwrap();
        prepare(dir.path(), 4).unwrap();

        let error = prepare(dir.path(), 8).unwrap_err();
        assert!(matches!(
            error,
            OpenError::StorageShardsMismatch {
                recorded: 4,
                configured: 8,
                ..
            }
        ));
    }

    #[test]
    fn damaged_layout_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(LAYOUT_FILE), "storage_shards = x\n").unwrap();
        assert!(matches!(
            prepare(dir.path(), 4),
            Err(OpenError::InvalidLayout { .. })
        ));
    }
}
