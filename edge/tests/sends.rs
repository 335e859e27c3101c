//! Sends on conversation streams: acknowledgement, rate limit and size limit.

mod common;

use anyhow::{Result, bail};
use common::{login, read_frame, start_edge, write_frame};
use tidings_edge::RateConfig;
use tidings_schema::error::ErrorCode;
use tidings_schema::frame::{Frame, Send};
use tidings_schema::ids::{direct_conversation_id, snowflake_time_ms};

fn direct_send(to: &str, from: &str, client_msg_id: &str, body: String) -> Frame {
    Frame::Send(Send {
        conversation_id: direct_conversation_id(from, to),
        client_msg_id: client_msg_id.to_owned(),
        body,
        direct_peer: Some(to.to_owned()),
    })
}

#[tokio::test]
async fn send_is_stamped_and_acknowledged() -> Result<()> {
    let edge = start_edge(|_| {}).await?;
    let client = login(&edge, "alice", "phone").await?;
    let (mut send, mut recv) = client.connection.open_bi().await?;

    write_frame(
        &mut send,
        &direct_send("bob", "alice", "m1", "hello".to_owned()),
    )
    .await?;
    write_frame(
        &mut send,
        &direct_send("bob", "alice", "m2", "again".to_owned()),
    )
    .await?;
    let mut acks = Vec::new();
    for _ in 0..2 {
        let reply = read_frame(&mut recv, client.max_frame_bytes).await?;
        let Frame::SendAck(ack) = reply else {
            bail!("expected SendAck, got {reply:?}")
        };
        acks.push(ack);
    }
    acks.sort_by_key(|ack| ack.seq);

    assert_eq!(acks[0].client_msg_id, "m1");
    assert_eq!(acks[1].client_msg_id, "m2");
    assert_eq!(acks[1].seq, acks[0].seq + 1);
    assert!(acks[1].message_id > acks[0].message_id);
    assert!(acks[1].hlc > acks[0].hlc);
    let stamped = snowflake_time_ms(acks[0].message_id);
    assert!(stamped.abs_diff(acks[0].server_time_ms) <= 1);
    Ok(())
}

#[tokio::test]
async fn rate_limit_yields_retry_after() -> Result<()> {
    let edge = start_edge(|config| {
        config.send_rate = RateConfig {
            per_second: 1.0,
            burst: 2,
        }
    })
    .await?;
    let client = login(&edge, "alice", "phone").await?;
    let (mut send, mut recv) = client.connection.open_bi().await?;

    for id in ["m1", "m2", "m3"] {
        write_frame(&mut send, &direct_send("bob", "alice", id, "hi".to_owned())).await?;
    }
    let mut limited = None;
    let mut acked = 0;
    for _ in 0..3 {
        match read_frame(&mut recv, client.max_frame_bytes).await? {
            Frame::SendAck(_) => acked += 1,
            Frame::Error(error) => limited = Some(error),
            other => bail!("unexpected reply {other:?}"),
        }
    }

    assert_eq!(acked, 2);
    let Some(error) = limited else {
        bail!("no send was rate limited")
    };
    assert_eq!(error.code, ErrorCode::RateLimited);
    assert_eq!(error.client_msg_id, "m3");
    assert!(error.retry_after_ms > 0);
    assert!(error.retry_after_ms <= 1_000);
    Ok(())
}

#[tokio::test]
async fn oversized_body_is_rejected() -> Result<()> {
    let edge = start_edge(|config| config.limits.max_message_bytes = 100).await?;
    let client = login(&edge, "alice", "phone").await?;
    let (mut send, mut recv) = client.connection.open_bi().await?;

    write_frame(
        &mut send,
        &direct_send("bob", "alice", "big", "x".repeat(101)),
    )
    .await?;
    let reply = read_frame(&mut recv, client.max_frame_bytes).await?;
    let Frame::Error(error) = reply else {
        bail!("expected Error, got {reply:?}")
    };
    assert_eq!(error.code, ErrorCode::MessageTooLarge);
    assert_eq!(error.client_msg_id, "big");

    // The stream stays usable after a rejected send.
    write_frame(
        &mut send,
        &direct_send("bob", "alice", "small", "x".repeat(100)),
    )
    .await?;
    let reply = read_frame(&mut recv, client.max_frame_bytes).await?;
    assert!(
        matches!(reply, Frame::SendAck(_)),
        "expected SendAck, got {reply:?}"
    );
    Ok(())
}
