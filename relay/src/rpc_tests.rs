//! Tests of the mesh RPC over real TCP connections on 127.0.0.1.
//!
//! Most tests serve a `ScriptedOwner`, which builds replies from the request alone and lets the
//! test push deliveries, so the mesh is tested independent of storage. The store's real
//! `Owner` is served in `store_owner_results_cross_the_mesh`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidings_schema::frame::{
    ConversationInfo, ConversationKind, CreateGroup, HistoryPage, HistoryRequest, Message, SendAck,
};
use tidings_schema::mesh::{Delivery, OwnerReply, OwnerRequest, Registration, SendRequest, Stamp};
use tidings_schema::{ErrorCode, Rejection};
use tidings_store::{Owner, OwnerConfig};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::timeout;

use crate::rpc::{
    CallFuture, OwnerServer, OwnerService, RemoteOwner, RemoteOwnerConfig, serve_owner,
    serve_service,
};

/// Upper bound on any single wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

/// An owner that builds replies from the request alone and lets the test push deliveries.
struct ScriptedOwner {
    edges: Mutex<HashMap<String, mpsc::Sender<Arc<Delivery>>>>,
    /// Number of `attach_edge` calls so far, so a test can wait for a (re)attach.
    attaches: watch::Sender<u32>,
    /// `History` requests wait for a permit here, so a test can hold calls in flight.
    history_gate: Semaphore,
    /// Every registration received, in order.
    registrations: watch::Sender<Vec<Registration>>,
}

impl ScriptedOwner {
    fn new() -> Arc<ScriptedOwner> {
        Arc::new(ScriptedOwner {
            edges: Mutex::new(HashMap::new()),
            attaches: watch::channel(0).0,
            history_gate: Semaphore::new(0),
            registrations: watch::channel(Vec::new()).0,
        })
    }

    /// Waits until `count` registrations arrived and returns them.
    async fn wait_for_registrations(&self, count: usize) -> Vec<Registration> {
        let mut registrations = self.registrations.subscribe();
        timeout(WAIT, registrations.wait_for(|seen| seen.len() >= count))
            .await
            .expect("registrations did not arrive in time")
            .expect("registration log closed")
            .clone()
    }

    async fn wait_for_attaches(&self, count: u32) {
        let mut attaches = self.attaches.subscribe();
        timeout(WAIT, attaches.wait_for(|seen| *seen >= count))
            .await
            .expect("edge did not attach in time")
            .expect("attach counter closed");
    }

    fn edge_sender(&self, edge_id: &str) -> mpsc::Sender<Arc<Delivery>> {
        self.edges.lock().unwrap()[edge_id].clone()
    }

    /// Closes an edge's queue, as the store does when the queue overflows.
    fn detach(&self, edge_id: &str) {
        self.edges.lock().unwrap().remove(edge_id);
    }
}

impl OwnerService for ScriptedOwner {
    fn call(self: Arc<Self>, request: OwnerRequest) -> CallFuture {
        Box::pin(async move {
            match request {
                OwnerRequest::ListConversations { user } => {
                    Ok(OwnerReply::Conversations(vec![conversation(&user)]))
                }
                OwnerRequest::Send(send) => Ok(OwnerReply::SendAck(SendAck {
                    conversation_id: send.conversation_id,
                    client_msg_id: send.client_msg_id,
                    message_id: send.message_id,
                    seq: 1,
                    hlc: send.hlc,
                    server_time_ms: send.server_time_ms,
                })),
                OwnerRequest::History { request, .. } => {
                    let permit = self.history_gate.acquire().await;
                    permit.expect("history gate closed").forget();
                    Ok(OwnerReply::HistoryPage(HistoryPage {
                        request_id: request.request_id,
                        conversation_id: request.conversation_id,
                        messages: Vec::new(),
                        next_before_seq: 0,
                    }))
                }
                _ => Err(Rejection::retry(
                    ErrorCode::StorageFailed,
                    "disk full",
                    1_500,
                )),
            }
        })
    }

    fn register_users(&self, registration: &Registration) {
        self.registrations
            .send_modify(|seen| seen.push(registration.clone()));
    }

    fn attach_edge(&self, edge_id: &str) -> mpsc::Receiver<Arc<Delivery>> {
        let (sender, receiver) = mpsc::channel(1024);
        self.edges
            .lock()
            .unwrap()
            .insert(edge_id.to_string(), sender);
        self.attaches.send_modify(|count| *count += 1);
        receiver
    }
}

fn conversation(name: &str) -> ConversationInfo {
    ConversationInfo {
        conversation_id: 5,
        kind: ConversationKind::Group,
        name: name.to_string(),
        members: Vec::new(),
        created_ms: 1,
        last_seq: 2,
    }
}

fn delivery(seq: u64) -> Delivery {
    Delivery {
        message: Message {
            conversation_id: 5,
            seq,
            sender: "alice".into(),
            body: format!("message {seq}"),
            ..Message::default()
        },
        recipients: vec!["bob".into()],
        origin_device: "phone".into(),
        receipt: None,
        presence: Vec::new(),
        presence_snapshot: false,
        position: None,
    }
}

fn list(user: &str) -> OwnerRequest {
    OwnerRequest::ListConversations { user: user.into() }
}

fn history() -> OwnerRequest {
    OwnerRequest::History {
        user: "alice".into(),
        request: HistoryRequest::default(),
    }
}

async fn start_scripted() -> (Arc<ScriptedOwner>, OwnerServer) {
    let owner = ScriptedOwner::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = serve_service(owner.clone(), listener).unwrap();
    (owner, server)
}

async fn connected(addr: SocketAddr, config: RemoteOwnerConfig) -> RemoteOwner {
    let remote = RemoteOwner::connect_with(addr, "edge-1".into(), config).unwrap();
    timeout(WAIT, remote.wait_connected())
        .await
        .expect("remote owner did not connect in time");
    remote
}

async fn recv(receiver: &mut mpsc::Receiver<Arc<Delivery>>) -> Arc<Delivery> {
    timeout(WAIT, receiver.recv())
        .await
        .expect("no delivery in time")
        .expect("delivery queue closed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_round_trips_over_tcp() {
    let (_owner, server) = start_scripted().await;
    let remote = connected(server.local_addr(), RemoteOwnerConfig::default()).await;

    let reply = remote.call(list("carol")).await.unwrap();
    assert_eq!(
        reply,
        OwnerReply::Conversations(vec![conversation("carol")])
    );

    let send = SendRequest {
        sender: "alice".into(),
        conversation_id: 9,
        client_msg_id: "c-1".into(),
        message_id: 77,
        ..SendRequest::default()
    };
    let reply = remote.call(OwnerRequest::Send(send)).await.unwrap();
    let OwnerReply::SendAck(ack) = reply else {
        panic!("expected a SendAck, got {reply:?}");
    };
    assert_eq!((ack.conversation_id, ack.message_id, ack.seq), (9, 77, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejection_crosses_mesh_faithfully() {
    let (_owner, server) = start_scripted().await;
    let remote = connected(server.local_addr(), RemoteOwnerConfig::default()).await;

    let leave = OwnerRequest::Leave {
        user: "alice".into(),
        request: Default::default(),
        stamp: Stamp::default(),
    };
    let rejection = remote.call(leave).await.unwrap_err();
    assert_eq!(
        rejection,
        Rejection::retry(ErrorCode::StorageFailed, "disk full", 1_500)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_calls_pipeline_on_one_connection() {
    let (_owner, server) = start_scripted().await;
    let remote = connected(server.local_addr(), RemoteOwnerConfig::default()).await;

    let calls = (0..500).map(|i| {
        let remote = remote.clone();
        tokio::spawn(async move { remote.call(list(&format!("user-{i}"))).await })
    });
    let results = futures::future::join_all(calls).await;
    for (i, result) in results.into_iter().enumerate() {
        let reply = result.unwrap().unwrap();
        assert_eq!(
            reply,
            OwnerReply::Conversations(vec![conversation(&format!("user-{i}"))])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_reach_edge_in_order() {
    let (owner, server) = start_scripted().await;
    // A small queue makes the sink hold replies back, so ordering under back-pressure is
    // exercised as well.
    let config = RemoteOwnerConfig {
        delivery_queue: 8,
        ..RemoteOwnerConfig::default()
    };
    let remote = connected(server.local_addr(), config).await;
    let mut deliveries = remote.attach_edge("edge-1");
    owner.wait_for_attaches(1).await;

    let sender = owner.edge_sender("edge-1");
    let pusher = tokio::spawn(async move {
        for seq in 1..=2_000 {
            sender.send(Arc::new(delivery(seq))).await.unwrap();
        }
    });
    for seq in 1..=2_000 {
        let received = recv(&mut deliveries).await;
        assert_eq!(*received, delivery(seq));
    }
    timeout(WAIT, pusher).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sink_stops_forwarding() {
    let (owner, server) = start_scripted().await;
    let remote = connected(server.local_addr(), RemoteOwnerConfig::default()).await;
    drop(remote.attach_edge("edge-1"));
    owner.wait_for_attaches(1).await;

    // The edge has no receiver, so `deliver` fails and the forwarder drops the owner's
    // queue, which closes this sender.
    let sender = owner.edge_sender("edge-1");
    sender.send(Arc::new(delivery(1))).await.unwrap();
    timeout(WAIT, sender.closed())
        .await
        .expect("forwarder kept the queue open after the sink failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_edge_attaches_again() {
    let (owner, server) = start_scripted().await;
    let remote = connected(server.local_addr(), RemoteOwnerConfig::default()).await;
    let mut deliveries = remote.attach_edge("edge-1");
    owner.wait_for_attaches(1).await;

    owner.detach("edge-1");
    owner.wait_for_attaches(2).await;

    owner
        .edge_sender("edge-1")
        .send(Arc::new(delivery(3)))
        .await
        .unwrap();
    assert_eq!(*recv(&mut deliveries).await, delivery(3));
    // The detach must not cost the connection: calls still work on it.
    assert!(remote.is_connected());
    remote.call(list("alice")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_attach_gets_deliveries() {
    let (owner, server) = start_scripted().await;
    let remote = connected(server.local_addr(), RemoteOwnerConfig::default()).await;
    drop(remote.attach_edge("edge-1"));
    owner.wait_for_attaches(1).await;

    let mut deliveries = remote.attach_edge("edge-1");
    owner.wait_for_attaches(2).await;
    owner
        .edge_sender("edge-1")
        .send(Arc::new(delivery(4)))
        .await
        .unwrap();
    assert_eq!(*recv(&mut deliveries).await, delivery(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_owner_fails_fast_then_recovers() {
    // Reserve a free port, then close it so nothing listens there.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let remote = RemoteOwner::connect(addr, "edge-1".into()).unwrap();
    let mut deliveries = remote.attach_edge("edge-1");

    let started = Instant::now();
    let rejection = remote.call(list("alice")).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(rejection.code, ErrorCode::OwnerUnavailable);
    assert!(rejection.retry_after_ms > 0);

    let owner = ScriptedOwner::new();
    let listener = TcpListener::bind(addr).await.unwrap();
    let _server = serve_service(owner.clone(), listener).unwrap();
    timeout(WAIT, remote.wait_connected())
        .await
        .expect("no reconnect in time");

    let reply = remote.call(list("alice")).await.unwrap();
    assert_eq!(
        reply,
        OwnerReply::Conversations(vec![conversation("alice")])
    );

    owner.wait_for_attaches(1).await;
    owner
        .edge_sender("edge-1")
        .send(Arc::new(delivery(1)))
        .await
        .unwrap();
    assert_eq!(*recv(&mut deliveries).await, delivery(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_survives_owner_restart() {
    let (owner, server) = start_scripted().await;
    let addr = server.local_addr();
    let remote = connected(addr, RemoteOwnerConfig::default()).await;
    let mut deliveries = remote.attach_edge("edge-1");
    owner.wait_for_attaches(1).await;
    remote.call(list("alice")).await.unwrap();

    server.shutdown().await;

    let restarted = ScriptedOwner::new();
    let listener = TcpListener::bind(addr).await.unwrap();
    let _server = serve_service(restarted.clone(), listener).unwrap();
    // The new owner sees an attach only after the handle noticed the lost connection,
    // so the link state seen next is the new connection's.
    restarted.wait_for_attaches(1).await;
    timeout(WAIT, remote.wait_connected())
        .await
        .expect("no reconnect in time");

    let reply = remote.call(list("bob")).await.unwrap();
    assert_eq!(reply, OwnerReply::Conversations(vec![conversation("bob")]));
    restarted
        .edge_sender("edge-1")
        .send(Arc::new(delivery(7)))
        .await
        .unwrap();
    assert_eq!(*recv(&mut deliveries).await, delivery(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_limit_are_overloaded() {
    let (owner, server) = start_scripted().await;
    let config = RemoteOwnerConfig {
        max_calls_in_flight: 2,
        ..RemoteOwnerConfig::default()
    };
    let remote = connected(server.local_addr(), config).await;

    let held: Vec<_> = (0..2)
        .map(|_| {
            let remote = remote.clone();
            tokio::spawn(async move { remote.call(history()).await })
        })
        .collect();
    // Wait until both held calls occupy their permits before the third call.
    timeout(WAIT, async {
        while remote.calls_in_flight() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("held calls did not start");

    let rejection = remote.call(list("alice")).await.unwrap_err();
    assert_eq!(rejection.code, ErrorCode::Overloaded);
    assert!(rejection.retry_after_ms > 0);

    owner.history_gate.add_permits(2);
    for call in held {
        timeout(WAIT, call).await.unwrap().unwrap().unwrap();
    }
    remote.call(list("alice")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_owner_times_out() {
    let (_owner, server) = start_scripted().await;
    let config = RemoteOwnerConfig {
        call_timeout: Duration::from_millis(200),
        ..RemoteOwnerConfig::default()
    };
    let remote = connected(server.local_addr(), config).await;

    // The scripted owner holds History calls until the test releases them, which it
    // never does here.
    let rejection = timeout(WAIT, remote.call(history()))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(rejection.code, ErrorCode::OwnerUnavailable);
    assert!(
        rejection.message.contains("did not reply"),
        "{}",
        rejection.message
    );
}

#[tokio::test]
async fn wrong_mesh_version_is_rejected() {
    use capnp_rpc::RpcSystem;
    use capnp_rpc::rpc_twoparty_capnp::Side;
    use tidings_schema::generated::mesh_capnp::owner;

    let (_owner, server) = start_scripted().await;
    let local = tokio::task::LocalSet::new();
    let error = local
        .run_until(async move {
            let stream = tokio::net::TcpStream::connect(server.local_addr())
                .await
                .unwrap();
            let network = crate::rpc::vat_network(stream, Side::Client);
            let mut rpc = RpcSystem::new(Box::new(network), None);
            let bootstrap: owner::Client = rpc.bootstrap(Side::Server);
            tokio::task::spawn_local(rpc);

            let mut open = bootstrap.open_request();
            open.get().set_version(99);
            timeout(WAIT, open.send().promise).await.unwrap().err()
        })
        .await
        .expect("open with version 99 succeeded");
    let message = error.to_string();
    assert!(message.contains("version 99 is not supported"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_owner_round_trip() {
    let data = tempfile::tempdir().unwrap();
    let owner = Owner::open(OwnerConfig::new(data.path().to_path_buf())).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = serve_owner(owner.clone(), listener).unwrap();
    let remote = connected(server.local_addr(), RemoteOwnerConfig::default()).await;
    let mut deliveries = remote.attach_edge("edge-1");

    let group_id = 4_242;
    let created = remote.call(create_group(group_id)).await.unwrap();
    let OwnerReply::Conversation(info) = created else {
        panic!("expected a Conversation, got {created:?}");
    };
    assert_eq!(info.conversation_id, group_id);
    assert_eq!(info.members.len(), 2);

    let send = SendRequest {
        sender: "alice".into(),
        device_id: "phone".into(),
        conversation_id: group_id,
        client_msg_id: "c-1".into(),
        body: "hello climbers".into(),
        message_id: 2,
        hlc: 2 << 16,
        server_time_ms: 1_767_225_600_001,
        ..SendRequest::default()
    };
    let reply = remote.call(OwnerRequest::Send(send)).await.unwrap();
    let OwnerReply::SendAck(ack) = reply else {
        panic!("expected a SendAck, got {reply:?}");
    };
    assert_eq!(ack.conversation_id, group_id);
    assert!(ack.seq > 0);

    // The owner fans out the creation's system message first, then the send.
    let mut seen = Vec::new();
    let delivered = loop {
        let delivery = recv(&mut deliveries).await;
        if delivery.message.seq == ack.seq {
            break delivery;
        }
        seen.push(delivery.message.seq);
        assert!(seen.len() < 10, "send not delivered; saw seqs {seen:?}");
    };
    assert_eq!(delivered.message.body, "hello climbers");
    assert_eq!(delivered.origin_device, "phone");
    assert!(delivered.recipients.contains(&"bob".to_string()));

    let local = owner.call(list("bob")).await;
    let remote_list = remote.call(list("bob")).await;
    assert_eq!(remote_list, local);
    let Ok(OwnerReply::Conversations(listed)) = remote_list else {
        panic!("listing failed: {remote_list:?}");
    };
    assert!(listed.iter().any(|c| c.conversation_id == group_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_rejection_crosses_mesh() {
    let data = tempfile::tempdir().unwrap();
    let owner = Owner::open(OwnerConfig::new(data.path().to_path_buf())).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = serve_owner(owner.clone(), listener).unwrap();
    let remote = connected(server.local_addr(), RemoteOwnerConfig::default()).await;

    // Carol is not a member of a group that does not exist yet.
    let history = OwnerRequest::History {
        user: "carol".into(),
        request: HistoryRequest {
            conversation_id: 999,
            limit: 10,
            ..HistoryRequest::default()
        },
    };
    let local = owner.call(history.clone()).await.unwrap_err();
    let rejection = remote.call(history).await.unwrap_err();
    assert_eq!(rejection, local);
}

fn create_group(conversation_id: u64) -> OwnerRequest {
    OwnerRequest::CreateGroup {
        user: "alice".into(),
        request: CreateGroup {
            request_id: 1,
            name: "climbers".into(),
            members: vec!["bob".into()],
        },
        conversation_id,
        stamp: Stamp {
            message_id: 1,
            hlc: 1 << 16,
            server_time_ms: 1_767_225_600_000,
        },
    }
}

struct FixedUsers(Vec<String>);

impl crate::rpc::UserSource for FixedUsers {
    fn users(&self) -> Vec<String> {
        self.0.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_sends_full_set_then_changes() {
    let (owner, server) = start_scripted().await;
    let remote = connected(server.local_addr(), RemoteOwnerConfig::default()).await;
    let _deliveries = remote.attach_edge("edge-1");

    let users = Arc::new(FixedUsers(vec!["ann".into(), "bo".into()]));
    remote.register_users(users, Duration::from_secs(30));
    let full = owner.wait_for_registrations(1).await;
    let first = full.last().unwrap();
    assert!(
        first.replace,
        "the first registration carries the whole set"
    );
    assert_eq!(first.added, vec!["ann", "bo"]);
    assert_eq!(first.edge_id, "edge-1");
    assert_eq!(first.lease_ms, 30_000);

    let seen = full.len();
    remote.update_registration(
        vec!["cy".into()],
        vec!["ann".into()],
        Duration::from_secs(30),
    );
    let all = owner.wait_for_registrations(seen + 1).await;
    let change = &all[seen];
    assert!(!change.replace);
    assert_eq!(change.added, vec!["cy"]);
    assert_eq!(change.removed, vec!["ann"]);
}
