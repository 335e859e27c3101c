//! Replay of the delivery log over the mesh: a real store owner restarts on its files,
//! and the edge's connection re-attaches with its positions.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tidings_schema::frame::CreateGroup;
use tidings_schema::mesh::{Delivery, OwnerReply, OwnerRequest, SendRequest, Stamp};
use tidings_store::{Owner, OwnerConfig};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::rpc::{OwnerServer, RemoteOwner, serve_owner};

const WAIT: Duration = Duration::from_secs(10);

fn owner_config(dir: &Path, hold: Option<&str>) -> OwnerConfig {
    let mut config = OwnerConfig::new(dir.to_path_buf());
    config.test_hold_fanout_prefix = hold.map(str::to_owned);
    config
}

async fn serve(owner: Arc<Owner>, addr: SocketAddr) -> OwnerServer {
    let listener = TcpListener::bind(addr).await.unwrap();
    serve_owner(owner, listener).unwrap()
}

/// Returns the next message delivery, skipping presence pushes.
async fn next_message(deliveries: &mut mpsc::Receiver<Arc<Delivery>>) -> Arc<Delivery> {
    loop {
        let delivery = timeout(WAIT, deliveries.recv())
            .await
            .expect("no delivery in time")
            .expect("delivery queue closed");
        if delivery.presence.is_empty() && !delivery.presence_snapshot {
            return delivery;
        }
    }
}

fn send(body: &str, key: &str) -> OwnerRequest {
    OwnerRequest::Send(SendRequest {
        sender: "alice".into(),
        device_id: "phone".into(),
        conversation_id: 77,
        client_msg_id: key.into(),
        body: body.into(),
        ..SendRequest::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_owner_replays_what_edge_missed() {
    let data = tempfile::tempdir().unwrap();
    let owner = Owner::open(owner_config(data.path(), Some("held:"))).unwrap();
    let server = serve(owner.clone(), "127.0.0.1:0".parse().unwrap()).await;
    let addr = server.local_addr();
    let remote = RemoteOwner::connect(addr, "edge-1".into()).unwrap();
    timeout(WAIT, remote.wait_connected()).await.unwrap();
    let mut deliveries = remote.attach_edge("edge-1");

    let create = OwnerRequest::CreateGroup {
        user: "alice".into(),
        request: CreateGroup {
            request_id: 1,
            name: "quiet".into(),
            members: vec!["bob".into()],
        },
        conversation_id: 77,
        stamp: Stamp::default(),
    };
    remote.call(create).await.unwrap();
    let created = next_message(&mut deliveries).await;
    let created_at = created
        .position
        .expect("message deliveries carry a position");

    // Committed and acknowledged, but never published, as if the owner crashed first.
    let mut acked = Vec::new();
    for n in 0..5 {
        match remote
            .call(send(&format!("held: {n}"), &format!("k{n}")))
            .await
        {
            Ok(OwnerReply::SendAck(ack)) => acked.push(ack.seq),
            other => panic!("expected a SendAck, got {other:?}"),
        }
    }
    let before = remote.delivery_positions();
    assert!(
        before.contains(&created_at),
        "the edge holds the creation's position: {before:?}"
    );

    server.shutdown().await;
    tokio::task::spawn_blocking(move || {
        owner.shutdown();
        assert_eq!(Arc::strong_count(&owner), 1, "the owner's files stay open");
    })
    .await
    .unwrap();

    let owner = Owner::open(owner_config(data.path(), None)).unwrap();
    let _server = serve(owner.clone(), addr).await;
    let mut replayed = Vec::new();
    for _ in 0..acked.len() {
        let delivery = next_message(&mut deliveries).await;
        assert_eq!(delivery.position.unwrap().epoch, created_at.epoch);
        replayed.push(delivery.message.seq);
    }
    assert_eq!(replayed, acked, "every acknowledged message, in order");

    // The edge records a position right after queueing its delivery, so once a later
    // delivery arrived every replayed position is recorded.
    // The replay can arrive before the link is published as up.
    timeout(WAIT, remote.wait_connected()).await.unwrap();
    remote.call(send("live", "k-live")).await.unwrap();
    let live = next_message(&mut deliveries).await;
    assert_eq!(live.message.seq, acked[acked.len() - 1] + 1);
    let after = remote.delivery_positions();
    let file = after
        .iter()
        .find(|position| position.file == created_at.file)
        .unwrap();
    assert!(
        file.offset >= created_at.offset + acked.len() as u64,
        "positions moved past the replay: {after:?}"
    );
}
