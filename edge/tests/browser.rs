//! Browser transports on real sockets: one conversation across native QUIC, WebTransport
//! and WebSocket; limits, kicks and origins on each; plain HTTP/3 requests.

mod common;

use anyhow::{Result, bail};
use common::web::{
    WsClient, h3_get, published_hashes, ws_connect, ws_login, wt_connect, wt_login, wt_read,
    wt_write,
};
use common::{
    Client, WAIT, accept_delivery, close_code, login, read_frame, start_edge, write_frame,
};
use futures::SinkExt;
use tidings_schema::error::{CloseCode, ErrorCode};
use tidings_schema::frame::{CreateGroup, Frame, Message, MessageKind, Send};
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn send_frame(conversation_id: u64, id: &str) -> Frame {
    Frame::Send(Send {
        conversation_id,
        client_msg_id: id.to_owned(),
        body: format!("body of {id}"),
        direct_peer: None,
    })
}

async fn create_group(alice: &mut Client, members: &[&str]) -> Result<u64> {
    let request = Frame::CreateGroup(CreateGroup {
        request_id: 1,
        name: "mixed".to_owned(),
        members: members.iter().map(|m| m.to_string()).collect(),
    });
    write_frame(&mut alice.control_send, &request).await?;
    match read_frame(&mut alice.control_recv, alice.max_frame_bytes).await? {
        Frame::ConversationReply(reply) => Ok(reply.conversation.conversation_id),
        other => bail!("expected ConversationReply, got {other:?}"),
    }
}

/// Sends on the WebSocket and returns the acknowledged seq, keeping deliveries that
/// arrive meanwhile.
async fn ws_send(ws: &mut WsClient, frame: Frame, seen: &mut Vec<Message>) -> Result<u64> {
    ws.send(&frame).await?;
    loop {
        match ws.recv().await? {
            Frame::SendAck(ack) => return Ok(ack.seq),
            Frame::Deliver(deliver) => seen.push(deliver.message),
            other => bail!("expected SendAck, got {other:?}"),
        }
    }
}

fn user_bodies(messages: &[Message]) -> Vec<String> {
    let user = messages.iter().filter(|m| m.kind == MessageKind::User);
    user.map(|m| m.body.clone()).collect()
}

fn assert_in_seq_order(messages: &[Message]) {
    let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(seqs, sorted, "deliveries out of order or repeated");
}

#[tokio::test]
async fn conversation_across_three_transports() -> Result<()> {
    let edge = start_edge(|_| {}).await?;
    let mut alice = login(&edge, "alice", "phone").await?;
    let (mut bob, _) = ws_login(&edge, "bob", "browser").await?;
    let carol = wt_login(&edge, "carol", "browser").await?;
    let conversation_id = create_group(&mut alice, &["bob", "carol"]).await?;

    let (mut alice_send, mut alice_recv) = alice.connection.open_bi().await?;
    let (mut carol_send, mut carol_recv) = carol.connection.open_bi().await?.await?;
    let max = edge.config.limits.max_frame_bytes;
    let mut bob_seen = Vec::new();
    let mut acked = Vec::new();
    for round in 1..=2 {
        write_frame(
            &mut alice_send,
            &send_frame(conversation_id, &format!("a{round}")),
        )
        .await?;
        let Frame::SendAck(ack) = read_frame(&mut alice_recv, max).await? else {
            bail!("alice expected SendAck");
        };
        acked.push(ack.seq);
        let seq = ws_send(
            &mut bob,
            send_frame(conversation_id, &format!("b{round}")),
            &mut bob_seen,
        )
        .await?;
        acked.push(seq);
        wt_write(
            &mut carol_send,
            &send_frame(conversation_id, &format!("c{round}")),
        )
        .await?;
        let Frame::SendAck(ack) = wt_read(&mut carol_recv, max).await? else {
            bail!("carol expected SendAck");
        };
        acked.push(ack.seq);
    }
    let mut sorted = acked.clone();
    sorted.sort_unstable();
    assert_eq!(acked, sorted, "seqs follow the order of the sends");

    let all = [
        "body of a1",
        "body of b1",
        "body of c1",
        "body of a2",
        "body of b2",
        "body of c2",
    ];
    let others = |skip: &str| -> Vec<String> {
        all.iter()
            .filter(|b| !b.contains(skip))
            .map(|b| b.to_string())
            .collect()
    };

    // Alice, native: one delivery stream for the conversation.
    let (_ack, mut stream, first) = accept_delivery(&alice).await?;
    let mut alice_seen = vec![delivered(first)?];
    while user_bodies(&alice_seen).len() < 4 {
        alice_seen.push(delivered(read_frame(&mut stream, max).await?)?);
    }
    assert_in_seq_order(&alice_seen);
    assert_eq!(user_bodies(&alice_seen), others(" of a"));

    // Bob, WebSocket: deliveries share the socket.
    while user_bodies(&bob_seen).len() < 4 {
        match bob.recv().await? {
            Frame::Deliver(deliver) => bob_seen.push(deliver.message),
            other => bail!("bob expected Deliver, got {other:?}"),
        }
    }
    assert_in_seq_order(&bob_seen);
    assert_eq!(user_bodies(&bob_seen), others(" of b"));

    // Carol, WebTransport: a server-opened stream, as on native QUIC.
    let (_ack, mut stream) = tokio::time::timeout(WAIT, carol.connection.accept_bi()).await??;
    let mut carol_seen = Vec::new();
    while user_bodies(&carol_seen).len() < 4 {
        carol_seen.push(delivered(wt_read(&mut stream, max).await?)?);
    }
    assert_in_seq_order(&carol_seen);
    assert_eq!(user_bodies(&carol_seen), others(" of c"));

    let metrics = edge.edge.as_ref().expect("running").metrics();
    let started = metrics
        .sessions_started
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(started, 3);
    Ok(())
}

fn delivered(frame: Frame) -> Result<Message> {
    match frame {
        Frame::Deliver(deliver) => Ok(deliver.message),
        other => bail!("expected Deliver, got {other:?}"),
    }
}

#[tokio::test]
async fn websocket_oversize_closes_with_1009() -> Result<()> {
    let edge = start_edge(|config| config.limits.max_frame_bytes = 4096).await?;
    let (mut ws, _) = ws_login(&edge, "alice", "browser").await?;
    let big = vec![0u8; 10_000];
    ws.socket.send(WsMessage::Binary(big.into())).await?;
    let (code, reason) = ws.close_code().await?;
    assert_eq!(code, 1009);
    assert!(reason.contains("4096"), "reason {reason:?} names the limit");
    Ok(())
}

#[tokio::test]
async fn webtransport_oversize_frame_is_rejected() -> Result<()> {
    let edge = start_edge(|config| config.limits.max_frame_bytes = 4096).await?;
    let mut carol = wt_login(&edge, "carol", "browser").await?;
    // A length prefix above the limit: the edge rejects it before reading the body.
    carol
        .control_send
        .write_all(&100_000u32.to_be_bytes())
        .await?;
    let frame = wt_read(&mut carol.control_recv, 4096).await?;
    let Frame::Error(error) = frame else {
        bail!("expected Error, got {frame:?}");
    };
    assert_eq!(error.code, ErrorCode::FrameTooLarge);
    let closed = tokio::time::timeout(WAIT, carol.connection.closed()).await?;
    let text = closed.to_string();
    assert!(
        text.contains(&format!("{}", CloseCode::ProtocolViolation.as_u32())),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn kick_sends_close_on_every_transport() -> Result<()> {
    let edge = start_edge(|_| {}).await?;
    let mut native = login(&edge, "mallory", "phone").await?;
    let (mut ws, _) = ws_login(&edge, "mallory", "browser").await?;
    let mut wt = wt_login(&edge, "mallory", "laptop").await?;

    let handle = edge.edge.as_ref().expect("running");
    let kicked = handle.kick("mallory", CloseCode::AuthFailed, "account suspended");
    assert_eq!(kicked, 3);
    let code = CloseCode::AuthFailed.as_u32();

    let frame = read_frame(&mut native.control_recv, native.max_frame_bytes).await?;
    let Frame::Close(close) = frame else {
        bail!("native expected Close, got {frame:?}")
    };
    assert_eq!(close.code, code);
    assert_eq!(close.message, "account suspended");
    assert_eq!(close_code(&native.connection).await?, u64::from(code));

    let frame = ws.recv().await?;
    let Frame::Close(close) = frame else {
        bail!("websocket expected Close, got {frame:?}")
    };
    assert_eq!(close.code, code);
    let (ws_code, reason) = ws.close_code().await?;
    assert_eq!(
        ws_code,
        tidings_edge::websocket::websocket_close_code(CloseCode::AuthFailed)
    );
    assert_eq!(reason, "account suspended");

    let frame = wt_read(&mut wt.control_recv, edge.config.limits.max_frame_bytes).await?;
    let Frame::Close(close) = frame else {
        bail!("webtransport expected Close, got {frame:?}")
    };
    assert_eq!(close.code, code);
    drop(tokio::time::timeout(WAIT, wt.connection.closed()).await?);
    Ok(())
}

#[tokio::test]
async fn foreign_origin_is_forbidden() -> Result<()> {
    let edge = start_edge(|_| {}).await?;
    let error = ws_connect(&edge, Some("https://evil.example")).await.err();
    let text = format!("{:#}", error.expect("foreign origin must fail"));
    assert!(text.contains("403"), "{text}");

    let own = format!("http://127.0.0.1:{}", edge.http_addr().port());
    assert!(ws_connect(&edge, Some(&own)).await.is_ok());

    let refused = wt_connect(&edge, published_hashes(&edge), Some("https://evil.example")).await;
    assert!(
        refused.is_err(),
        "WebTransport from a foreign origin must fail"
    );
    let accepted = wt_connect(&edge, published_hashes(&edge), Some(&own)).await;
    assert!(accepted.is_ok(), "{:?}", accepted.err());
    Ok(())
}

#[tokio::test]
async fn http3_get_answers_health_and_hashes() -> Result<()> {
    let edge = start_edge(|_| {}).await?;
    let (status, body) = h3_get(&edge, "/healthz").await?;
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"ok\n");

    let (status, body) = h3_get(&edge, "/v1/cert-hashes").await?;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_slice(&body)?;
    let current = hex::encode(published_hashes(&edge)[0]);
    assert_eq!(json["current"], current.as_str());
    assert_eq!(json["algorithm"], "sha-256");

    let (status, _) = h3_get(&edge, "/nowhere").await?;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test]
async fn rotated_leaf_needs_the_published_hash() -> Result<()> {
    let edge = start_edge(|config| {
        // A schedule that is due at once: the next leaf is published, then presented.
        config.cert_rotation.prepare_before = tidings_edge::tls::LEAF_VALIDITY;
        config.cert_rotation.switch_before = tidings_edge::tls::LEAF_VALIDITY / 2;
    })
    .await?;
    let handle = edge.edge.as_ref().expect("running");
    let old = published_hashes(&edge)[0];
    let now = std::time::SystemTime::now();
    handle.certificates().rotate(now)?;
    let both = published_hashes(&edge);
    assert_eq!(
        both.len(),
        2,
        "current and next are published in the overlap"
    );
    assert_eq!(both[0], old);

    // A page that holds both hashes connects before and after the switch.
    assert!(wt_connect(&edge, both.clone(), None).await.is_ok());
    let switch_at = now + tidings_edge::tls::LEAF_VALIDITY / 2;
    handle.certificates().rotate(switch_at)?;
    assert!(wt_connect(&edge, both.clone(), None).await.is_ok());

    // A page that only knew the old hash fails with a certificate error.
    let error = wt_connect(&edge, vec![old], None).await.err();
    let text = format!("{:#}", error.expect("the old hash no longer matches"));
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    Ok(())
}
