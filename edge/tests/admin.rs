//! The operator endpoint `POST /v1/admin/kick` over real HTTP/1.1 on 127.0.0.1: who may
//! call it, how it refuses bad requests, and what the kicked sessions see.

mod common;

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use common::web::ws_login;
use common::{TestEdge, WAIT, close_code, login, read_frame, start_edge};
use serde_json::{Value, json};
use tidings_schema::error::CloseCode;
use tidings_schema::frame::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one HTTP/1.1 POST with `body` and returns the status and the JSON reply.
async fn post(
    edge: &TestEdge,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> Result<(u16, Value)> {
    let exchange = async {
        let mut stream = TcpStream::connect(edge.http_addr()).await?;
        let authorization = bearer
            .map(|token| format!("Authorization: Bearer {token}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             {authorization}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut reply = Vec::new();
        // NOTE: a server that replies before reading the whole body may reset the
        // connection after its reply. The reply that arrived first is kept.
        if let Err(error) = stream.read_to_end(&mut reply).await {
            ensure!(!reply.is_empty(), "reading the reply failed: {error}");
        }
        anyhow::Ok(reply)
    };
    let reply = tokio::time::timeout(WAIT, exchange).await??;
    let text = String::from_utf8(reply).context("reply is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("reply has no header end")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    let json = serde_json::from_str(body).with_context(|| format!("body {body:?}"))?;
    Ok((status, json))
}

fn admin_token(edge: &TestEdge) -> String {
    edge.signer
        .sign_admin("ops", Duration::from_secs(600))
        .expect("sign admin token")
}

#[tokio::test]
async fn kick_rejects_non_admin_callers() -> Result<()> {
    let edge = start_edge(|_| {}).await?;
    let _alice = login(&edge, "alice", "phone").await?;
    let body = r#"{"user": "alice"}"#;

    let cases = [
        (None, 401, "UNAUTHENTICATED"),
        (Some("not-a-jwt".to_owned()), 401, "INVALID_TOKEN"),
        (Some(edge.token("alice")), 403, "NOT_ADMIN"),
    ];
    for (token, status, code) in cases {
        let reply = post(&edge, "/v1/admin/kick", token.as_deref(), body).await?;
        assert_eq!(reply.0, status, "{reply:?}");
        assert_eq!(reply.1["code"], code, "{reply:?}");
        ensure!(reply.1["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    let admin = admin_token(&edge);
    let long_reason = json!({"user": "alice", "reason": "x".repeat(121)}).to_string();
    let bad_bodies = [
        "not json",
        r#"{"reason": "no user"}"#,
        r#"{"user": "has space"}"#,
        r#"{"user": "alice", "colour": "red"}"#,
        long_reason.as_str(),
    ];
    for bad in bad_bodies {
        let reply = post(&edge, "/v1/admin/kick", Some(&admin), bad).await?;
        assert_eq!(reply.0, 400, "{bad}: {reply:?}");
        assert_eq!(reply.1["code"], "INVALID_REQUEST", "{bad}: {reply:?}");
    }

    // The token is checked before the body is read, and a body over 4 KiB is refused.
    let huge = json!({"user": "alice", "reason": "x".repeat(5_000)}).to_string();
    let reply = post(&edge, "/v1/admin/kick", None, &huge).await?;
    assert_eq!(reply.0, 401, "{reply:?}");
    let reply = post(&edge, "/v1/admin/kick", Some(&admin), &huge).await?;
    assert_eq!(reply.0, 413, "{reply:?}");
    assert_eq!(reply.1["code"], "INVALID_REQUEST", "{reply:?}");

    // Nothing above ended alice's session.
    let handle = edge.edge.as_ref().context("edge stopped")?;
    assert_eq!(handle.session_count(), 1);
    Ok(())
}

#[tokio::test]
async fn kick_ends_only_that_users_sessions() -> Result<()> {
    let edge = start_edge(|_| {}).await?;
    let mut phone = login(&edge, "alice", "phone").await?;
    let (mut browser, _) = ws_login(&edge, "alice", "browser").await?;
    let _bob = login(&edge, "bob", "phone").await?;

    let admin = admin_token(&edge);
    let body = r#"{"user": "alice", "reason": "account under review"}"#;
    let (status, reply) = post(&edge, "/v1/admin/kick", Some(&admin), body).await?;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply, json!({"user": "alice", "sessions": 2}));

    let kicked = CloseCode::Kicked.as_u32();
    let frame = read_frame(&mut phone.control_recv, phone.max_frame_bytes).await?;
    let Frame::Close(close) = frame else {
        bail!("native client expected Close, got {frame:?}")
    };
    assert_eq!(
        (close.code, close.message.as_str()),
        (kicked, "account under review")
    );
    assert_eq!(close_code(&phone.connection).await?, u64::from(kicked));

    let frame = browser.recv().await?;
    let Frame::Close(close) = frame else {
        bail!("WebSocket client expected Close, got {frame:?}")
    };
    assert_eq!(close.code, kicked);
    let (ws_code, reason) = browser.close_code().await?;
    assert_eq!((ws_code, reason.as_str()), (4008, "account under review"));

    // Only bob is left, and a second kick finds no session of alice.
    let handle = edge.edge.as_ref().context("edge stopped")?;
    let left = async {
        while handle.session_count() != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(WAIT, left)
        .await
        .context("alice's sessions did not end")?;
    let (status, reply) = post(&edge, "/v1/admin/kick", Some(&admin), body).await?;
    assert_eq!(
        (status, reply),
        (200, json!({"user": "alice", "sessions": 0}))
    );
    Ok(())
}
