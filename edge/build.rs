//! Lists the web client's files (`web/static/**`) into `$OUT_DIR/static_files.rs` as
//! `include_bytes!` entries, so the edge binary serves the page with no npm step at run
//! time. Cargo reruns this script when anything under `web/static/` changes, which also
//! picks up added and removed files.

use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.join("../web/static");
    println!("cargo:rerun-if-changed={}", root.display());

    let mut files = Vec::new();
    if root.is_dir() {
        collect(&root, &root, &mut files);
    }
    // NOTE: sorted by URL path, because `static_files::lookup` binary-searches the table.
    files.sort();

    let mut table = String::from("&[\n");
    for (url_path, file) in &files {
        table.push_str(&format!("    ({url_path:?}, include_bytes!({file:?})),\n"));
    }
    table.push_str("]\n");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    fs::write(out.join("static_files.rs"), table).expect("writing static_files.rs failed");
}

/// Adds every regular file under `dir` as (URL path, absolute file path), skipping hidden
/// files and editor backups.
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, String)>) {
    let entries = fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("reading {} failed: {error}", dir.display()));
    for entry in entries {
        let path = entry.expect("reading a directory entry failed").path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        if name.starts_with('.') || name.ends_with('~') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, files);
            continue;
        }
        let relative = path.strip_prefix(root).expect("path is under the root");
        // A file whose name is not UTF-8 has no URL path, so it is not served.
        let Some(relative) = relative.to_str() else {
            continue;
        };
        let absolute = fs::canonicalize(&path).expect("canonicalizing a static file failed");
        files.push((
            format!("/{}", relative.replace('\\', "/")),
            absolute.to_string_lossy().into_owned(),
        ));
    }
}
