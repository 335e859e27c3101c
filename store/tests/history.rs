//! History pagination: every message exactly once, newest first, with capped pages.

mod common;

use common::*;
use tidings_schema::ErrorCode;

#[tokio::test]
async fn pagination_returns_each_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open(dir.path());
    create_group(&owner, "alice", 71, &["bob"]).await.unwrap();
    for n in 0..49 {
        send(&owner, "bob", 71, &format!("k{n}"), &format!("m{n}"))
            .await
            .unwrap();
    }

    let history = history_all(&owner, "alice", 71).await;
    let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
    let expected: Vec<u64> = (1..=50).rev().collect();
    assert_eq!(seqs, expected);
    assert_eq!(history[0].body, "m48");

    let (page, next) = history_page(&owner, "alice", 71, 0, 7).await.unwrap();
    assert_eq!(page.len(), 7);
    assert_eq!(next, 44);
    let (page, next) = history_page(&owner, "alice", 71, 8, 7).await.unwrap();
    assert_eq!(
        page.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [7, 6, 5, 4, 3, 2, 1]
    );
    assert_eq!(next, 0, "the page that reaches seq 1 is the last");
}

#[tokio::test]
async fn page_limits_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open(dir.path());
    create_group(&owner, "alice", 81, &[]).await.unwrap();
    for n in 0..259 {
        send(&owner, "alice", 81, &format!("k{n}"), "x")
            .await
            .unwrap();
    }

    let (page, next) = history_page(&owner, "alice", 81, 0, 0).await.unwrap();
    assert_eq!(page.len(), tidings_store::DEFAULT_HISTORY_LIMIT as usize);
    assert_eq!(next, 211);

    let (page, next) = history_page(&owner, "alice", 81, 0, 10_000).await.unwrap();
    assert_eq!(page.len(), tidings_store::MAX_HISTORY_LIMIT as usize);
    assert_eq!(next, 61);

    let outsider = history_page(&owner, "bob", 81, 0, 10).await.unwrap_err();
    assert_eq!(outsider.code, ErrorCode::NotMember);
    let unknown = history_page(&owner, "alice", 82, 0, 10).await.unwrap_err();
    assert_eq!(unknown.code, ErrorCode::UnknownConversation);
}

/// Regression: pages were capped by count only, so 200 messages of up to 64 KiB made a
/// reply far larger than the 256 KiB frame limit, and clients dropped their control
/// stream and reconnected over and over.
#[tokio::test]
async fn pages_of_large_messages_stay_in_budget() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open(dir.path());
    create_group(&owner, "alice", 91, &[]).await.unwrap();
    let body = "y".repeat(60 * 1024);
    for n in 0..9 {
        send(&owner, "alice", 91, &format!("k{n}"), &body)
            .await
            .unwrap();
    }

    let (page, next) = history_page(&owner, "alice", 91, 0, 200).await.unwrap();
    let bytes: usize = page.iter().map(|m| m.body.len()).sum();
    assert!(
        bytes <= tidings_store::PAGE_BODY_BUDGET,
        "page has {bytes} body bytes"
    );
    assert_eq!(page.len(), 2);
    assert_eq!(next, page.last().unwrap().seq);

    let all = history_all(&owner, "alice", 91).await;
    let seqs: Vec<u64> = all.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=10).rev().collect::<Vec<_>>());
}
