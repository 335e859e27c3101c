//! The delivery log: positions on live deliveries, and replay to an edge that attaches
//! with the positions it received, also after the owner's files were reopened.

mod common;

use std::sync::Arc;

use common::*;
use tidings_schema::mesh::{Delivery, LogPosition, OwnerRequest};
use tidings_store::{Owner, OwnerConfig};
use tokio::sync::mpsc::Receiver;

/// Returns the next message or receipt delivery, skipping presence pushes.
async fn next(edge: &mut Receiver<Arc<Delivery>>) -> Arc<Delivery> {
    loop {
        let delivery = tokio::time::timeout(WAIT, edge.recv())
            .await
            .expect("delivery within the wait")
            .expect("edge queue open");
        if !delivery.presence_snapshot && delivery.presence.is_empty() {
            return delivery;
        }
    }
}

fn position(delivery: &Delivery) -> LogPosition {
    delivery
        .position
        .expect("message deliveries carry a position")
}

#[tokio::test]
async fn live_deliveries_carry_dense_positions() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open(dir.path());
    let attached = owner.attach_edge_at("edge-a", &[]);
    assert_eq!(
        attached.start.len(),
        4,
        "one start position per storage file"
    );
    assert!(attached.lost.is_empty());
    let mut edge = attached.deliveries;

    create_group(&owner, "alice", 91, &["bob"]).await.unwrap();
    for n in 0..5 {
        send(&owner, "bob", 91, &format!("k{n}"), "hi")
            .await
            .unwrap();
    }
    let mut offsets = Vec::new();
    for _ in 0..6 {
        offsets.push(position(&*next(&mut edge).await));
    }
    let file = offsets[0].file;
    let start = attached.start[usize::from(file)];
    for (index, at) in offsets.iter().enumerate() {
        assert_eq!(at.file, file);
        assert_eq!(at.epoch, start.epoch);
        assert_eq!(at.offset, start.offset + 1 + index as u64, "dense offsets");
    }

    let receipt = OwnerRequest::Receipt {
        user: "alice".into(),
        conversation_id: 91,
        delivered_seq: 6,
        read_seq: 6,
    };
    call(&owner, receipt).await.unwrap();
    let pushed = next(&mut edge).await;
    assert!(pushed.receipt.is_some());
    assert_eq!(pushed.position, None, "receipts are not logged");
    close(owner).await;
}

#[tokio::test]
async fn replay_after_reopen_is_complete_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open(dir.path());
    let mut edge = owner.attach_edge_at("edge-a", &[]).deliveries;
    create_group(&owner, "alice", 91, &["bob", "carol"])
        .await
        .unwrap();
    send(&owner, "bob", 91, "k0", "first").await.unwrap();
    let received = position(&*next(&mut edge).await);
    next(&mut edge).await;

    // What the edge never received: sends, a removal and more sends.
    for n in 1..=20 {
        send(&owner, "bob", 91, &format!("k{n}"), &format!("body {n}"))
            .await
            .unwrap();
    }
    remove_members(&owner, "alice", 91, &["carol"])
        .await
        .unwrap();
    send(&owner, "bob", 91, "k21", "after removal")
        .await
        .unwrap();
    drop(edge);
    close(owner).await;

    let owner = open(dir.path());
    let at = LogPosition {
        offset: received.offset + 1,
        ..received
    };
    let attached = owner.attach_edge_at("edge-a", &[at]);
    assert!(attached.lost.is_empty(), "same epoch after reopening");
    let start = attached.start[usize::from(at.file)];
    assert_eq!(start.epoch, at.epoch);
    let mut edge = attached.deliveries;

    let mut seqs = Vec::new();
    let mut last_offset = at.offset;
    for _ in 0..22 {
        let delivery = next(&mut edge).await;
        let offset = position(&delivery).offset;
        assert_eq!(offset, last_offset + 1, "replay in log order");
        last_offset = offset;
        seqs.push(delivery.message.seq);
        match delivery.message.seq {
            3 => assert_eq!(delivery.message.body, "body 1"),
            23 => assert_eq!(
                delivery.recipients,
                ["alice", "bob", "carol"],
                "the removed member still gets her removal"
            ),
            24 => {
                assert_eq!(delivery.message.body, "after removal");
                assert_eq!(delivery.recipients, ["alice", "bob"]);
                assert_eq!(delivery.origin_device, "bob-phone");
            }
            _ => {}
        }
    }
    assert_eq!(seqs, (3..=24).collect::<Vec<_>>());
    assert_eq!(last_offset, start.offset, "replay ends at the log's end");

    // Live deliveries follow the replay on the same queue.
    send(&owner, "bob", 91, "k22", "live").await.unwrap();
    let live = next(&mut edge).await;
    assert_eq!(live.message.seq, 25);
    assert_eq!(position(&live).offset, start.offset + 1);
    close(owner).await;
}

#[tokio::test]
async fn held_messages_reach_edges_only_by_replay() {
    let dir = tempfile::tempdir().unwrap();
    let mut config: OwnerConfig = config(dir.path());
    config.test_hold_fanout_prefix = Some("held:".into());
    let owner = Owner::open(config).unwrap();
    let attached = owner.attach_edge_at("edge-a", &[]);
    let mut edge = attached.deliveries;

    create_group(&owner, "alice", 91, &["bob"]).await.unwrap();
    let created = position(&*next(&mut edge).await);
    send(&owner, "bob", 91, "k1", "held: one").await.unwrap();
    send(&owner, "bob", 91, "k2", "held: two").await.unwrap();
    send(&owner, "bob", 91, "k3", "visible").await.unwrap();
    let visible = next(&mut edge).await;
    assert_eq!(
        visible.message.seq, 4,
        "held messages are not published live"
    );

    let mut again = owner.attach_edge_at("edge-a", &[created]).deliveries;
    let bodies: Vec<String> = [
        next(&mut again).await,
        next(&mut again).await,
        next(&mut again).await,
    ]
    .iter()
    .map(|delivery| delivery.message.body.clone())
    .collect();
    assert_eq!(bodies, ["held: one", "held: two", "visible"]);
    close(owner).await;
}

#[tokio::test]
async fn position_from_another_store_is_lost() {
    let first = tempfile::tempdir().unwrap();
    let owner = open(first.path());
    let start = owner.attach_edge_at("edge-a", &[]).start;
    close(owner).await;

    let second = tempfile::tempdir().unwrap();
    let owner = open(second.path());
    let attached = owner.attach_edge_at("edge-a", &start);
    assert_eq!(
        attached.lost,
        vec![0, 1, 2, 3],
        "every file has a new epoch"
    );
    for (old, new) in start.iter().zip(&attached.start) {
        assert_ne!(old.epoch, new.epoch);
    }
    close(owner).await;
}
