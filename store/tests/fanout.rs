//! Deliveries to attached edges after commits.

mod common;

use common::*;
use tidings_schema::frame::MessageKind;

#[tokio::test]
async fn deliveries_reach_attached_edges() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open(dir.path());
    let mut edge_a = owner.attach_edge("edge-a");
    let mut edge_b = owner.attach_edge("edge-b");

    create_group(&owner, "alice", 91, &["bob", "carol"])
        .await
        .unwrap();
    let ack = send(&owner, "bob", 91, "k1", "hello").await.unwrap();
    // A retry is not delivered again.
    send(&owner, "bob", 91, "k1", "hello").await.unwrap();
    remove_members(&owner, "alice", 91, &["carol"])
        .await
        .unwrap();

    for edge in [&mut edge_a, &mut edge_b] {
        let created = next(edge).await;
        assert_eq!(created.message.seq, 1);
        assert_eq!(created.message.kind, MessageKind::System);
        assert_eq!(created.recipients, ["alice", "bob", "carol"]);
        assert_eq!(created.origin_device, "");

        let message = next(edge).await;
        assert_eq!(message.message.seq, ack.seq);
        assert_eq!(message.message.body, "hello");
        assert_eq!(message.origin_device, "bob-phone");
        assert_eq!(message.recipients, ["alice", "bob", "carol"]);

        let removal = next(edge).await;
        assert_eq!(removal.message.seq, 3);
        assert_eq!(
            removal.recipients,
            ["alice", "bob", "carol"],
            "carol sees her removal"
        );
    }

    send(&owner, "bob", 91, "k2", "after").await.unwrap();
    let after = next(&mut edge_a).await;
    assert_eq!(after.message.seq, 4);
    assert_eq!(after.recipients, ["alice", "bob"]);
}

#[tokio::test]
async fn reattach_closes_old_queue() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open(dir.path());
    let mut old = owner.attach_edge("edge-a");
    let mut new = owner.attach_edge("edge-a");
    create_group(&owner, "alice", 92, &[]).await.unwrap();

    // The old queue holds only its attach-time presence snapshot before it closes.
    let snapshot = tokio::time::timeout(WAIT, old.recv()).await.unwrap();
    assert!(snapshot.is_some_and(|delivery| delivery.presence_snapshot));
    let closed = tokio::time::timeout(WAIT, old.recv()).await.unwrap();
    assert!(closed.is_none());
    let delivered = next(&mut new).await;
    assert_eq!(delivered.message.conversation_id, 92);
}

/// Returns the next message or receipt delivery, skipping presence pushes such as the
/// snapshot every edge gets when it attaches.
async fn next(
    edge: &mut tokio::sync::mpsc::Receiver<std::sync::Arc<tidings_schema::mesh::Delivery>>,
) -> std::sync::Arc<tidings_schema::mesh::Delivery> {
    loop {
        let delivery = tokio::time::timeout(WAIT, edge.recv())
            .await
            .unwrap()
            .expect("edge queue open");
        if !delivery.presence_snapshot && delivery.presence.is_empty() {
            return delivery;
        }
    }
}
