//! Send path: seq assignment, idempotency, validation and direct chat creation.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use tidings_schema::ErrorCode;
use tidings_schema::frame::{ConversationKind, MessageKind, Role};
use tidings_schema::ids;

#[tokio::test]
async fn concurrent_senders_get_gapless_seq() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open(dir.path());
    let users: Vec<String> = (0..8).map(|i| format!("user{i}")).collect();
    let others: Vec<&str> = users[1..].iter().map(String::as_str).collect();
    create_group(&owner, &users[0], 77, &others).await.unwrap();

    let per_sender = 40;
    let mut tasks = Vec::new();
    for user in users.clone() {
        let owner = Arc::clone(&owner);
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for n in 0..per_sender {
                let ack = send(&owner, &user, 77, &format!("k{n}"), &format!("{user} {n}"))
                    .await
                    .unwrap();
                seqs.push(ack.seq);
            }
            (user, seqs)
        }));
    }

    let mut all_seqs = Vec::new();
    for task in tasks {
        let (user, seqs) = task.await.unwrap();
        assert!(
            seqs.windows(2).all(|pair| pair[0] < pair[1]),
            "{user} seqs not increasing"
        );
        all_seqs.extend(seqs);
    }
    all_seqs.sort_unstable();
    let total = (users.len() * per_sender) as u64;
    let expected: Vec<u64> = (2..2 + total).collect();
    assert_eq!(
        all_seqs, expected,
        "seqs must be gapless after the creation message"
    );

    let history = history_all(&owner, "user0", 77).await;
    assert_eq!(history.len() as u64, total + 1);
    let mut per_user_order: HashMap<String, Vec<String>> = HashMap::new();
    for message in history.iter().rev().filter(|m| m.kind == MessageKind::User) {
        per_user_order
            .entry(message.sender.clone())
            .or_default()
            .push(message.body.clone());
    }
    for user in &users {
        let bodies: Vec<String> = (0..per_sender).map(|n| format!("{user} {n}")).collect();
        assert_eq!(
            per_user_order[user], bodies,
            "{user}'s messages out of order"
        );
    }
}

#[tokio::test]
async fn group_commit_batches_concurrent_sends() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.storage_shards = 1;
    config.batch_deadline = std::time::Duration::from_millis(5);
    let owner = tidings_store::Owner::open(config).unwrap();
    create_group(&owner, "alice", 5, &["bob"]).await.unwrap();
    let before = owner.commit_count();

    let sends = 64;
    let tasks: Vec<_> = (0..sends)
        .map(|n| {
            let owner = Arc::clone(&owner);
            tokio::spawn(async move { send(&owner, "alice", 5, &format!("k{n}"), "hi").await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }

    let commits = owner.commit_count() - before;
    assert!(commits >= 1);
    assert!(
        commits < sends / 2,
        "{commits} commits for {sends} concurrent sends"
    );
}

#[tokio::test]
async fn retry_returns_original_ack() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open(dir.path());
    create_group(&owner, "alice", 11, &["bob"]).await.unwrap();

    let mut first = send_request("alice", 11, "key-1", "hello");
    first.message_id = 500;
    first.hlc = 600;
    first.server_time_ms = 700;
    let original = send_with(&owner, first.clone()).await.unwrap();
    assert_eq!(original.seq, 2);
    assert_eq!(original.message_id, 500);

    // A retry arrives through another edge with new stamps; the original ack wins.
    let mut retry = first.clone();
    retry.message_id = 501;
    retry.hlc = 601;
    retry.server_time_ms = 701;
    assert_eq!(send_with(&owner, retry.clone()).await.unwrap(), original);
    assert_eq!(history_all(&owner, "bob", 11).await.len(), 2);

    close(owner).await;
    let reopened = open(dir.path());
    assert_eq!(send_with(&reopened, retry).await.unwrap(), original);
    let history = history_all(&reopened, "bob", 11).await;
    assert_eq!(
        history.len(),
        2,
        "the retry after reopening must store nothing"
    );
    assert_eq!(history[0].message_id, 500);

    let next = send(&reopened, "alice", 11, "key-2", "again")
        .await
        .unwrap();
    assert_eq!(next.seq, 3);
}

#[tokio::test]
async fn same_key_different_body_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open(dir.path());
    create_group(&owner, "alice", 12, &["bob"]).await.unwrap();
    send(&owner, "alice", 12, "key", "one").await.unwrap();

    let error = send(&owner, "alice", 12, "key", "two").await.unwrap_err();
    assert_eq!(error.code, ErrorCode::IdempotencyConflict);

    // The key is scoped to the sender: bob may use the same client_msg_id.
    let bob = send(&owner, "bob", 12, "key", "two").await.unwrap();
    assert_eq!(bob.seq, 3);
}

#[tokio::test]
async fn send_rejections_have_codes() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open(dir.path());
    create_group(&owner, "alice", 13, &["bob"]).await.unwrap();

    let unknown = send(&owner, "alice", 999, "k", "hi").await.unwrap_err();
    assert_eq!(unknown.code, ErrorCode::UnknownConversation);

    let outsider = send(&owner, "mallory", 13, "k", "hi").await.unwrap_err();
    assert_eq!(outsider.code, ErrorCode::NotMember);

    let big = "x".repeat(64 * 1024 + 1);
    let too_large = send(&owner, "alice", 13, "k", &big).await.unwrap_err();
    assert_eq!(too_large.code, ErrorCode::MessageTooLarge);

    let empty_key = send(&owner, "alice", 13, "", "hi").await.unwrap_err();
    assert_eq!(empty_key.code, ErrorCode::InvalidRequest);
    let long_key = send(&owner, "alice", 13, &"k".repeat(65), "hi")
        .await
        .unwrap_err();
    assert_eq!(long_key.code, ErrorCode::InvalidRequest);

    let mut wrong_direct = send_request("alice", 13, "k", "hi");
    wrong_direct.direct_peer = Some("bob".into());
    let error = send_with(&owner, wrong_direct).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidRequest);

    let mut bad_peer = send_request(
        "alice",
        ids::direct_conversation_id("alice", "b b"),
        "k",
        "",
    );
    bad_peer.direct_peer = Some("b b".into());
    let error = send_with(&owner, bad_peer).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidRequest);

    // None of the rejected sends stored anything.
    assert_eq!(history_all(&owner, "alice", 13).await.len(), 1);
}

#[tokio::test]
async fn direct_chat_created_on_first_send() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open(dir.path());
    let ack = send_direct(&owner, "alice", "bob", "k1", "hi bob")
        .await
        .unwrap();
    assert_eq!(ack.seq, 1);
    assert_eq!(
        ack.conversation_id,
        ids::direct_conversation_id("alice", "bob")
    );

    let reply = send_direct(&owner, "bob", "alice", "k1", "hi alice")
        .await
        .unwrap();
    assert_eq!(reply.seq, 2);
    assert_eq!(reply.conversation_id, ack.conversation_id);

    for user in ["alice", "bob"] {
        let conversations = list(&owner, user).await;
        assert_eq!(conversations.len(), 1, "{user}'s inbox");
        let info = &conversations[0];
        assert_eq!(info.kind, ConversationKind::Direct);
        assert_eq!(info.last_seq, 2);
        assert_eq!(info.members.len(), 2);
        assert!(
            info.members
                .iter()
                .all(|member| member.role == Role::Member)
        );
    }

    // A third user cannot write into the pair's chat even with the right id.
    let carol = send(&owner, "carol", ack.conversation_id, "k", "hi")
        .await
        .unwrap_err();
    assert_eq!(carol.code, ErrorCode::NotMember);
}

#[tokio::test]
async fn reopen_with_other_shard_count_fails() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open(dir.path());
    close(owner).await;

    let mut config = config(dir.path());
    config.storage_shards = 8;
    let error = tidings_store::Owner::open(config)
        .err()
        .expect("open must fail");
    assert!(
        matches!(
            error,
            tidings_store::OpenError::StorageShardsMismatch { recorded: 4, .. }
        ),
        "{error}"
    );
}
