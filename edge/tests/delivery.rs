//! End-to-end fan-out through a real owner: delivery streams, their order, their limits,
//! and the slow-client guard.

mod common;

use std::time::Duration;

use anyhow::{Result, bail};
use common::{
    Client, WAIT, accept_delivery, close_code, connect_with, hello_on, login, read_frame,
    start_edge, write_frame,
};
use quinn::{RecvStream, SendStream, VarInt};
use tidings_schema::error::CloseCode;
use tidings_schema::frame::{
    CreateGroup, DeliveryAck, Frame, HistoryRequest, Message, MessageKind, Send,
};
use tidings_schema::ids::direct_conversation_id;

/// Sends one message on a fresh conversation stream and waits for its `SendAck`.
async fn send_message(
    client: &Client,
    conversation_id: u64,
    peer: Option<&str>,
    id: &str,
) -> Result<u64> {
    let (mut send, mut recv) = client.connection.open_bi().await?;
    let frame = Frame::Send(Send {
        conversation_id,
        client_msg_id: id.to_owned(),
        body: format!("body of {id}"),
        direct_peer: peer.map(str::to_owned),
    });
    write_frame(&mut send, &frame).await?;
    let reply = read_frame(&mut recv, client.max_frame_bytes).await?;
    let Frame::SendAck(ack) = reply else {
        bail!("expected SendAck, got {reply:?}")
    };
    Ok(ack.seq)
}

fn delivered(frame: Frame) -> Result<Message> {
    match frame {
        Frame::Deliver(deliver) => Ok(deliver.message),
        other => bail!("expected Deliver, got {other:?}"),
    }
}

/// Waits until the edge has finished its half of a delivery stream.
async fn assert_finished(recv: &mut RecvStream) -> Result<()> {
    let mut rest = [0u8; 1];
    let end = tokio::time::timeout(WAIT, recv.read(&mut rest)).await??;
    assert_eq!(end, None, "delivery stream still open");
    Ok(())
}

#[tokio::test]
async fn direct_message_reaches_peer_and_other_devices() -> Result<()> {
    let edge = start_edge(|_| {}).await?;
    let alice_phone = login(&edge, "alice", "phone").await?;
    let alice_tablet = login(&edge, "alice", "tablet").await?;
    let bob = login(&edge, "bob", "phone").await?;
    let conversation_id = direct_conversation_id("alice", "bob");

    let seq = send_message(&alice_phone, conversation_id, Some("bob"), "m1").await?;
    let (mut ack_send, _recv, frame) = accept_delivery(&bob).await?;
    let message = delivered(frame)?;
    assert_eq!(message.conversation_id, conversation_id);
    assert_eq!(message.seq, seq);
    assert_eq!(message.sender, "alice");
    assert_eq!(message.body, "body of m1");
    assert_eq!(message.kind, MessageKind::User);
    let ack = Frame::DeliveryAck(DeliveryAck {
        conversation_id,
        seq,
    });
    write_frame(&mut ack_send, &ack).await?;

    let (_send, mut tablet_stream, frame) = accept_delivery(&alice_tablet).await?;
    assert_eq!(delivered(frame)?.seq, seq);

    // The sending device gets its SendAck only. Once the tablet has the second message,
    // the phone would have had the first long before, so its absence is not a race.
    // Bob's delivered receipt reaches both of alice's devices on the conversation's
    // delivery stream, interleaved with messages.
    let seq2 = send_message(&alice_phone, conversation_id, Some("bob"), "m2").await?;
    let mut frame = read_frame(&mut tablet_stream, alice_tablet.max_frame_bytes).await?;
    for _ in 0..4 {
        if !matches!(frame, Frame::ReceiptUpdate(_)) {
            break;
        }
        frame = read_frame(&mut tablet_stream, alice_tablet.max_frame_bytes).await?;
    }
    assert_eq!(delivered(frame)?.seq, seq2);
    let short = Duration::from_millis(100);
    if let Ok(stream) = tokio::time::timeout(short, alice_phone.connection.accept_bi()).await {
        let (_send, mut recv) = stream?;
        for _ in 0..4 {
            let read = read_frame(&mut recv, alice_phone.max_frame_bytes);
            let Ok(frame) = tokio::time::timeout(short, read).await else {
                break;
            };
            let frame = frame?;
            assert!(
                matches!(frame, Frame::ReceiptUpdate(_)),
                "the sending device received its own message: {frame:?}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn deliveries_arrive_in_seq_order_on_one_stream() -> Result<()> {
    let edge = start_edge(|_| {}).await?;
    let alice = login(&edge, "alice", "phone").await?;
    let bob = login(&edge, "bob", "phone").await?;
    let conversation_id = direct_conversation_id("alice", "bob");

    let (mut send, mut recv) = alice.connection.open_bi().await?;
    for index in 0..20 {
        let frame = Frame::Send(Send {
            conversation_id,
            client_msg_id: format!("m{index}"),
            body: format!("message {index}"),
            direct_peer: Some("bob".to_owned()),
        });
        write_frame(&mut send, &frame).await?;
    }
    for _ in 0..20 {
        let reply = read_frame(&mut recv, alice.max_frame_bytes).await?;
        assert!(
            matches!(reply, Frame::SendAck(_)),
            "expected SendAck, got {reply:?}"
        );
    }

    let (_send, mut stream, frame) = accept_delivery(&bob).await?;
    let mut previous = delivered(frame)?.seq;
    for _ in 1..20 {
        let seq = delivered(read_frame(&mut stream, bob.max_frame_bytes).await?)?.seq;
        assert_eq!(seq, previous + 1);
        previous = seq;
    }
    Ok(())
}

#[tokio::test]
async fn group_creation_and_history() -> Result<()> {
    let edge = start_edge(|_| {}).await?;
    let mut alice = login(&edge, "alice", "phone").await?;
    let mut bob = login(&edge, "bob", "phone").await?;

    let create = Frame::CreateGroup(CreateGroup {
        request_id: 5,
        name: "climbing".to_owned(),
        members: vec!["bob".to_owned()],
    });
    write_frame(&mut alice.control_send, &create).await?;
    let reply = read_frame(&mut alice.control_recv, alice.max_frame_bytes).await?;
    let Frame::ConversationReply(reply) = reply else {
        bail!("expected ConversationReply, got {reply:?}")
    };
    assert_eq!(reply.request_id, 5);
    let group_id = reply.conversation.conversation_id;
    assert_ne!(group_id, 0);
    assert_eq!(reply.conversation.name, "climbing");

    let (_send, mut stream, frame) = accept_delivery(&bob).await?;
    let system = delivered(frame)?;
    assert_eq!(system.conversation_id, group_id);
    assert_eq!(system.kind, MessageKind::System);

    let seq = send_message(&alice, group_id, None, "g1").await?;
    let message = delivered(read_frame(&mut stream, bob.max_frame_bytes).await?)?;
    assert_eq!(message.seq, seq);
    assert!(message.seq > system.seq);

    let request = Frame::HistoryRequest(HistoryRequest {
        request_id: 9,
        conversation_id: group_id,
        before_seq: 0,
        limit: 10,
    });
    write_frame(&mut bob.control_send, &request).await?;
    let reply = read_frame(&mut bob.control_recv, bob.max_frame_bytes).await?;
    let Frame::HistoryPage(page) = reply else {
        bail!("expected HistoryPage, got {reply:?}")
    };
    assert_eq!(page.request_id, 9);
    assert_eq!(page.messages.first().map(|message| message.seq), Some(seq));
    Ok(())
}

#[tokio::test]
async fn stream_limit_finishes_least_recent_stream() -> Result<()> {
    let edge = start_edge(|config| config.limits.max_conversation_streams = 1).await?;
    let alice = login(&edge, "alice", "phone").await?;
    let carol = login(&edge, "carol", "phone").await?;
    let bob = login(&edge, "bob", "phone").await?;

    send_message(
        &alice,
        direct_conversation_id("alice", "bob"),
        Some("bob"),
        "a1",
    )
    .await?;
    let (_send, mut first, frame) = accept_delivery(&bob).await?;
    assert_eq!(delivered(frame)?.sender, "alice");

    send_message(
        &carol,
        direct_conversation_id("carol", "bob"),
        Some("bob"),
        "c1",
    )
    .await?;
    let (_send, _second, frame) = accept_delivery(&bob).await?;
    assert_eq!(delivered(frame)?.sender, "carol");
    assert_finished(&mut first).await
}

#[tokio::test]
async fn idle_delivery_stream_is_finished() -> Result<()> {
    let edge =
        start_edge(|config| config.delivery_idle_timeout = Duration::from_millis(300)).await?;
    let alice = login(&edge, "alice", "phone").await?;
    let bob = login(&edge, "bob", "phone").await?;

    send_message(
        &alice,
        direct_conversation_id("alice", "bob"),
        Some("bob"),
        "a1",
    )
    .await?;
    let (_send, mut stream, frame) = accept_delivery(&bob).await?;
    delivered(frame)?;
    assert_finished(&mut stream).await
}

/// A client that never lets the edge open a delivery stream stops its queue from draining,
/// so the edge must close that connection instead of buffering without bound.
#[tokio::test]
async fn slow_client_is_closed_on_queue_overflow() -> Result<()> {
    let edge = start_edge(|config| config.session_queue = 2).await?;
    let alice = login(&edge, "alice", "phone").await?;
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(VarInt::from_u32(0));
    let connection = connect_with(&edge, transport).await?;
    let token = edge.token("bob");
    let (bob, _control_send, _control_recv, reply) =
        hello_on(&edge, connection, &token, "phone").await?;
    assert!(
        matches!(reply, Frame::Welcome(_)),
        "expected Welcome, got {reply:?}"
    );

    let conversation_id = direct_conversation_id("alice", "bob");
    let (mut send, mut recv): (SendStream, RecvStream) = alice.connection.open_bi().await?;
    for index in 0..8 {
        let frame = Frame::Send(Send {
            conversation_id,
            client_msg_id: format!("m{index}"),
            body: "hi".to_owned(),
            direct_peer: Some("bob".to_owned()),
        });
        write_frame(&mut send, &frame).await?;
    }
    for _ in 0..8 {
        let reply = read_frame(&mut recv, alice.max_frame_bytes).await?;
        assert!(
            matches!(reply, Frame::SendAck(_)),
            "expected SendAck, got {reply:?}"
        );
    }

    let code = close_code(&bob).await?;
    assert_eq!(code, u64::from(CloseCode::InternalError.as_u32()));
    Ok(())
}

/// Regression: an owner closes an edge's delivery queue when the edge falls behind (here
/// forced by attaching again under the same edge id). The dispatcher used to stop for
/// good, so sessions of an in-process owner never got another delivery.
#[tokio::test]
async fn dispatcher_reattaches_after_queue_closed() -> Result<()> {
    let edge = start_edge(|_| {}).await?;
    let alice = login(&edge, "alice", "phone").await?;
    let bob = login(&edge, "bob", "phone").await?;
    let conversation_id = direct_conversation_id("alice", "bob");

    // Replacing the subscription closes the edge's queue; the dispatcher then attaches
    // again, which in turn closes this stolen one.
    let mut stolen = edge.owner.attach_edge(&edge.config.edge_id);
    let closed = tokio::time::timeout(WAIT, async { while stolen.recv().await.is_some() {} }).await;
    assert!(closed.is_ok(), "the dispatcher did not attach again");

    let seq = send_message(&alice, conversation_id, Some("bob"), "after").await?;
    let (_send, _recv, frame) = accept_delivery(&bob).await?;
    assert_eq!(delivered(frame)?.seq, seq);
    Ok(())
}
