//! Writes the error and close code tables as JSON for the web client's tests, which check
//! that `web/static/codes.js` agrees with this crate.
//!
//! Run with `TIDINGS_UPDATE_VECTORS=1` to rewrite `web/tests/vectors/codes.json` after
//! adding a code.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use tidings_schema::error::{CloseCode, ErrorCode};

fn codes_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/tests/vectors/codes.json")
}

fn tables() -> Value {
    let errors: Map<String, Value> = ErrorCode::ALL
        .iter()
        .map(|code| (code.as_u16().to_string(), json!(code.name())))
        .collect();
    let retryable: Vec<u16> = ErrorCode::ALL
        .iter()
        .filter(|code| code.is_retryable())
        .map(|code| code.as_u16())
        .collect();
    let close: Map<String, Value> = CloseCode::ALL
        .iter()
        .map(|code| (code.as_u32().to_string(), json!(code.name())))
        .collect();
    let final_close: Vec<u32> = CloseCode::ALL
        .iter()
        .filter(|code| code.is_final())
        .map(|code| code.as_u32())
        .collect();
    json!({
        "errors": errors,
        "retryable_errors": retryable,
        "close": close,
        "final_close": final_close,
    })
}

#[test]
fn code_tables_match_the_committed_file() {
    let mut expected = serde_json::to_string_pretty(&tables()).expect("encode the tables");
    expected.push('\n');
    let path = codes_path();
    if std::env::var("TIDINGS_UPDATE_VECTORS").is_ok_and(|value| value == "1") {
        fs::write(&path, &expected).expect("write codes.json");
        return;
    }
    let committed = fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!("failed to read {}: {error}", path.display());
    });
    assert_eq!(
        committed,
        expected,
        "{} is stale; rerun with TIDINGS_UPDATE_VECTORS=1 and update web/static/codes.js",
        path.display()
    );
}
