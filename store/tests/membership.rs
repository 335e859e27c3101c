//! Group creation and membership changes: roles, caps, history visibility and inboxes.

mod common;

use common::*;
use tidings_schema::ErrorCode;
use tidings_schema::frame::{ConversationKind, MessageKind, Role};

#[tokio::test]
async fn create_group_writes_system_message() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open(dir.path());
    let info = create_group(&owner, "alice", 21, &["carol", "bob", "alice", "bob"])
        .await
        .unwrap();

    assert_eq!(info.kind, ConversationKind::Group);
    assert_eq!(info.last_seq, 1);
    let ids: Vec<&str> = info.members.iter().map(|m| m.user_id.as_str()).collect();
    assert_eq!(ids, ["alice", "bob", "carol"]);
    assert_eq!(info.members[0].role, Role::Admin);
    assert!(info.members[1..].iter().all(|m| m.role == Role::Member));
    assert!(info.members.iter().all(|m| m.joined_seq == 1));

    let history = history_all(&owner, "bob", 21).await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].kind, MessageKind::System);
    assert_eq!(history[0].sender, "alice");
    assert_eq!(
        history[0].body,
        "alice created the group \"team\" with bob, carol"
    );

    for user in ["alice", "bob", "carol"] {
        let conversations = list(&owner, user).await;
        assert_eq!(conversations, vec![info.clone()], "{user}'s inbox");
    }

    let taken = create_group(&owner, "bob", 21, &[]).await.unwrap_err();
    assert_eq!(taken.code, ErrorCode::InvalidRequest);
    let invalid = create_group(&owner, "alice", 22, &["no spaces"])
        .await
        .unwrap_err();
    assert_eq!(invalid.code, ErrorCode::InvalidRequest);
}

#[tokio::test]
async fn group_cap_is_500_members() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open(dir.path());
    let users: Vec<String> = (0..500).map(|i| format!("u{i:03}")).collect();
    let refs: Vec<&str> = users.iter().map(String::as_str).collect();

    let too_many = create_group(&owner, "admin", 31, &refs).await.unwrap_err();
    assert_eq!(too_many.code, ErrorCode::GroupTooLarge);

    let full = create_group(&owner, "admin", 31, &refs[..499])
        .await
        .unwrap();
    assert_eq!(full.members.len(), 500);
    let over = add_members(&owner, "admin", 31, &["extra"])
        .await
        .unwrap_err();
    assert_eq!(over.code, ErrorCode::GroupTooLarge);
}

#[tokio::test]
async fn added_member_sees_history_from_join() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open(dir.path());
    create_group(&owner, "alice", 41, &["bob"]).await.unwrap();
    send(&owner, "alice", 41, "k1", "before carol")
        .await
        .unwrap();

    let not_admin = add_members(&owner, "bob", 41, &["carol"])
        .await
        .unwrap_err();
    assert_eq!(not_admin.code, ErrorCode::NotAdmin);
    let outsider = add_members(&owner, "mallory", 41, &["carol"])
        .await
        .unwrap_err();
    assert_eq!(outsider.code, ErrorCode::NotMember);

    let info = add_members(&owner, "alice", 41, &["carol"]).await.unwrap();
    let carol = info.members.iter().find(|m| m.user_id == "carol").unwrap();
    assert_eq!(carol.joined_seq, 3);
    assert_eq!(carol.role, Role::Member);
    send(&owner, "carol", 41, "k1", "hi all").await.unwrap();

    let seen: Vec<u64> = history_all(&owner, "carol", 41)
        .await
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(seen, [4, 3]);
    let (page, next) = history_page(&owner, "carol", 41, 3, 10).await.unwrap();
    assert!(page.is_empty());
    assert_eq!(next, 0);
    assert_eq!(history_all(&owner, "bob", 41).await.len(), 4);
    assert_eq!(list(&owner, "carol").await.len(), 1);

    let again = add_members(&owner, "alice", 41, &["carol"])
        .await
        .unwrap_err();
    assert_eq!(again.code, ErrorCode::InvalidRequest);
}

#[tokio::test]
async fn removed_member_loses_access() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open(dir.path());
    create_group(&owner, "alice", 51, &["bob", "carol"])
        .await
        .unwrap();

    let not_admin = remove_members(&owner, "bob", 51, &["carol"])
        .await
        .unwrap_err();
    assert_eq!(not_admin.code, ErrorCode::NotAdmin);

    let info = remove_members(&owner, "alice", 51, &["bob"]).await.unwrap();
    assert!(info.members.iter().all(|m| m.user_id != "bob"));
    assert_eq!(info.last_seq, 2);

    let history = history_page(&owner, "bob", 51, 0, 10).await.unwrap_err();
    assert_eq!(history.code, ErrorCode::NotMember);
    let send_error = send(&owner, "bob", 51, "k", "hi").await.unwrap_err();
    assert_eq!(send_error.code, ErrorCode::NotMember);
    assert!(list(&owner, "bob").await.is_empty());
    assert_eq!(
        history_all(&owner, "carol", 51).await[0].body,
        "alice removed bob"
    );
}

#[tokio::test]
async fn direct_chat_members_are_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open(dir.path());
    let ack = send_direct(&owner, "alice", "bob", "k", "hi")
        .await
        .unwrap();

    let add = add_members(&owner, "alice", ack.conversation_id, &["carol"])
        .await
        .unwrap_err();
    assert_eq!(add.code, ErrorCode::InvalidRequest);
    let left = leave(&owner, "alice", ack.conversation_id)
        .await
        .unwrap_err();
    assert_eq!(left.code, ErrorCode::InvalidRequest);
}

#[tokio::test]
async fn last_admin_leaving_promotes_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open(dir.path());
    create_group(&owner, "alice", 61, &["bob"]).await.unwrap();
    add_members(&owner, "alice", 61, &["carol"]).await.unwrap();

    let info = leave(&owner, "alice", 61).await.unwrap();
    assert!(info.members.iter().all(|m| m.user_id != "alice"));
    let bob = info.members.iter().find(|m| m.user_id == "bob").unwrap();
    let carol = info.members.iter().find(|m| m.user_id == "carol").unwrap();
    assert_eq!(bob.role, Role::Admin);
    assert_eq!(carol.role, Role::Member);

    let history = history_all(&owner, "bob", 61).await;
    assert_eq!(history[0].body, "alice left the group");
    assert_eq!(history[0].sender, "alice");

    let again = leave(&owner, "alice", 61).await.unwrap_err();
    assert_eq!(again.code, ErrorCode::NotMember);
    let unknown = leave(&owner, "alice", 6_000).await.unwrap_err();
    assert_eq!(unknown.code, ErrorCode::UnknownConversation);
}
