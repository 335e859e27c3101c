//! Malformed, oversized and misplaced frames: the right error code, the right close or
//! reset, and no effect on other connections.

mod common;

use anyhow::{Result, bail};
use common::{Client, WAIT, close_code, login, read_frame, start_edge, write_frame};
use quinn::{ReadError, WriteError};
use tidings_schema::error::{CloseCode, ErrorCode};
use tidings_schema::frame::{Frame, Hello, ListConversations, Send};
use tidings_schema::ids::direct_conversation_id;

/// Length prefix followed by bytes that are no Cap'n Proto message.
fn garbage_frame() -> Vec<u8> {
    let body = [0xffu8; 16];
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&body);
    bytes
}

/// Checks that `client` is still served: a `ListConversations` gets its list.
async fn assert_served(client: &mut Client) -> Result<()> {
    let request = Frame::ListConversations(ListConversations { request_id: 77 });
    write_frame(&mut client.control_send, &request).await?;
    let reply = read_frame(&mut client.control_recv, client.max_frame_bytes).await?;
    let Frame::ConversationList(list) = reply else {
        bail!("expected ConversationList, got {reply:?}")
    };
    assert_eq!(list.request_id, 77);
    Ok(())
}

fn send_frame(conversation_id: u64, client_msg_id: &str) -> Frame {
    Frame::Send(Send {
        conversation_id,
        client_msg_id: client_msg_id.to_owned(),
        body: "hi".to_owned(),
        direct_peer: Some("bob".to_owned()),
    })
}

#[tokio::test]
async fn malformed_control_frame_closes_connection_only() -> Result<()> {
    let edge = start_edge(|_| {}).await?;
    let mut bystander = login(&edge, "bob", "phone").await?;
    let mut client = login(&edge, "alice", "phone").await?;

    client.control_send.write_all(&garbage_frame()).await?;
    let reply = read_frame(&mut client.control_recv, client.max_frame_bytes).await?;
    let Frame::Error(error) = reply else {
        bail!("expected Error, got {reply:?}")
    };
    assert_eq!(error.code, ErrorCode::MalformedFrame);
    let code = close_code(&client.connection).await?;
    assert_eq!(code, u64::from(CloseCode::ProtocolViolation.as_u32()));

    assert_served(&mut bystander).await
}

#[tokio::test]
async fn oversized_control_frame_is_rejected_unread() -> Result<()> {
    let edge = start_edge(|_| {}).await?;
    let mut bystander = login(&edge, "bob", "phone").await?;
    let mut client = login(&edge, "alice", "phone").await?;

    // Only the prefix is sent: the edge must reject it without waiting for the body.
    let too_large = edge.config.limits.max_frame_bytes + 1;
    client
        .control_send
        .write_all(&too_large.to_be_bytes())
        .await?;
    let reply = read_frame(&mut client.control_recv, client.max_frame_bytes).await?;
    let Frame::Error(error) = reply else {
        bail!("expected Error, got {reply:?}")
    };
    assert_eq!(error.code, ErrorCode::FrameTooLarge);
    let code = close_code(&client.connection).await?;
    assert_eq!(code, u64::from(CloseCode::ProtocolViolation.as_u32()));

    assert_served(&mut bystander).await
}

#[tokio::test]
async fn send_on_control_stream_is_unknown_frame() -> Result<()> {
    let edge = start_edge(|_| {}).await?;
    let mut client = login(&edge, "alice", "phone").await?;

    let conversation_id = direct_conversation_id("alice", "bob");
    write_frame(&mut client.control_send, &send_frame(conversation_id, "m1")).await?;
    let reply = read_frame(&mut client.control_recv, client.max_frame_bytes).await?;
    let Frame::Error(error) = reply else {
        bail!("expected Error, got {reply:?}")
    };
    assert_eq!(error.code, ErrorCode::UnknownFrame);
    let code = close_code(&client.connection).await?;
    assert_eq!(code, u64::from(CloseCode::ProtocolViolation.as_u32()));
    Ok(())
}

/// Expects the edge to stop the client's half of a conversation stream with
/// `ProtocolViolation`.
async fn assert_stopped(send: &mut quinn::SendStream) -> Result<()> {
    let stopped = tokio::time::timeout(WAIT, send.stopped()).await??;
    assert_eq!(
        stopped.map(|code| code.into_inner()),
        Some(u64::from(CloseCode::ProtocolViolation.as_u32()))
    );
    let write = send.write_all(b"more").await;
    assert!(
        matches!(write, Err(WriteError::Stopped(_))),
        "write after stop: {write:?}"
    );
    Ok(())
}

/// Reads the `Error` frame and then the end of the edge's half of the stream.
async fn read_error_then_end(recv: &mut quinn::RecvStream, max: u32) -> Result<ErrorCode> {
    let reply = read_frame(recv, max).await?;
    let Frame::Error(error) = reply else {
        bail!("expected Error, got {reply:?}")
    };
    let mut rest = [0u8; 1];
    let end = tokio::time::timeout(WAIT, recv.read(&mut rest)).await?;
    assert!(
        matches!(end, Ok(None) | Err(ReadError::Reset(_))),
        "stream not ended: {end:?}"
    );
    Ok(error.code)
}

#[tokio::test]
async fn malformed_conversation_frame_resets_stream_only() -> Result<()> {
    let edge = start_edge(|_| {}).await?;
    let mut client = login(&edge, "alice", "phone").await?;

    let (mut send, mut recv) = client.connection.open_bi().await?;
    send.write_all(&garbage_frame()).await?;
    let code = read_error_then_end(&mut recv, client.max_frame_bytes).await?;
    assert_eq!(code, ErrorCode::MalformedFrame);
    assert_stopped(&mut send).await?;

    assert_served(&mut client).await
}

#[tokio::test]
async fn oversized_conversation_frame_resets_stream() -> Result<()> {
    let edge = start_edge(|_| {}).await?;
    let mut client = login(&edge, "alice", "phone").await?;

    let (mut send, mut recv) = client.connection.open_bi().await?;
    let too_large = edge.config.limits.max_frame_bytes + 1;
    send.write_all(&too_large.to_be_bytes()).await?;
    let code = read_error_then_end(&mut recv, client.max_frame_bytes).await?;
    assert_eq!(code, ErrorCode::FrameTooLarge);
    assert_stopped(&mut send).await?;

    assert_served(&mut client).await
}

#[tokio::test]
async fn conversation_mismatch_resets_stream() -> Result<()> {
    let edge = start_edge(|_| {}).await?;
    let mut client = login(&edge, "alice", "phone").await?;

    let (mut send, mut recv) = client.connection.open_bi().await?;
    let first = direct_conversation_id("alice", "bob");
    write_frame(&mut send, &send_frame(first, "m1")).await?;
    let ack = read_frame(&mut recv, client.max_frame_bytes).await?;
    assert!(
        matches!(ack, Frame::SendAck(_)),
        "expected SendAck, got {ack:?}"
    );

    write_frame(&mut send, &send_frame(first + 1, "m2")).await?;
    let code = read_error_then_end(&mut recv, client.max_frame_bytes).await?;
    assert_eq!(code, ErrorCode::StreamMismatch);
    assert_stopped(&mut send).await?;

    assert_served(&mut client).await
}

#[tokio::test]
async fn hello_on_conversation_stream_resets_stream() -> Result<()> {
    let edge = start_edge(|_| {}).await?;
    let mut client = login(&edge, "alice", "phone").await?;

    let (mut send, mut recv) = client.connection.open_bi().await?;
    write_frame(&mut send, &Frame::Hello(Hello::default())).await?;
    let code = read_error_then_end(&mut recv, client.max_frame_bytes).await?;
    assert_eq!(code, ErrorCode::UnknownFrame);
    assert_stopped(&mut send).await?;

    assert_served(&mut client).await
}
