//! Hello / Welcome, token failures, token expiry during a session, and shutdown.

mod common;

use std::time::{Duration, SystemTime};

use anyhow::{Result, bail};
use common::{WAIT, close_code, connect, hello, login, read_frame, start_edge, write_frame};
use tidings_schema::error::{CloseCode, ErrorCode};
use tidings_schema::frame::{Frame, ListConversations};

#[tokio::test]
async fn hello_gets_welcome() -> Result<()> {
    let edge = start_edge(|_| {}).await?;
    let client = login(&edge, "alice", "phone").await?;

    assert_eq!(client.welcome.user_id, "alice");
    assert_ne!(client.welcome.session_id, 0);
    assert_eq!(client.welcome.limits, edge.config.limits);
    assert_eq!(client.welcome.edges, vec!["127.0.0.1:4433".to_owned()]);
    let skew = client.welcome.server_time_ms.abs_diff(tidings_now_ms());
    assert!(skew < 60_000, "server time is {skew} ms off");
    Ok(())
}

#[tokio::test]
async fn bad_token_closes_with_auth_failed() -> Result<()> {
    let edge = start_edge(|_| {}).await?;
    let (connection, _send, _recv, reply) = hello(&edge, "not-a-jwt", "phone").await?;

    let Frame::Error(error) = reply else {
        bail!("expected Error, got {reply:?}")
    };
    assert_eq!(error.code, ErrorCode::InvalidToken);
    assert_eq!(
        close_code(&connection).await?,
        u64::from(CloseCode::AuthFailed.as_u32())
    );
    Ok(())
}

#[tokio::test]
async fn expired_token_closes_with_token_expired() -> Result<()> {
    let edge = start_edge(|_| {}).await?;
    let issued = SystemTime::now() - Duration::from_secs(600);
    let token = edge
        .signer
        .sign_at("alice", issued, Duration::from_secs(60))?;
    let (connection, _send, _recv, reply) = hello(&edge, &token, "phone").await?;

    let Frame::Error(error) = reply else {
        bail!("expected Error, got {reply:?}")
    };
    assert_eq!(error.code, ErrorCode::TokenExpired);
    assert_eq!(
        close_code(&connection).await?,
        u64::from(CloseCode::TokenExpired.as_u32())
    );
    Ok(())
}

#[tokio::test]
async fn token_expiring_mid_session_closes() -> Result<()> {
    let edge = start_edge(|_| {}).await?;
    let token = edge.signer.sign("alice", Duration::from_secs(2))?;
    let (connection, _send, mut recv, reply) = hello(&edge, &token, "phone").await?;
    assert!(
        matches!(reply, Frame::Welcome(_)),
        "expected Welcome, got {reply:?}"
    );

    let frame = read_frame(&mut recv, edge.config.limits.max_frame_bytes).await?;
    let Frame::Close(close) = frame else {
        bail!("expected Close, got {frame:?}")
    };
    assert_eq!(close.code, CloseCode::TokenExpired.as_u32());
    assert_eq!(
        close_code(&connection).await?,
        u64::from(CloseCode::TokenExpired.as_u32())
    );
    Ok(())
}

#[tokio::test]
async fn first_frame_other_than_hello_fails_auth() -> Result<()> {
    let edge = start_edge(|_| {}).await?;
    let connection = connect(&edge).await?;
    let (mut send, mut recv) = connection.open_bi().await?;
    let request = Frame::ListConversations(ListConversations { request_id: 1 });
    write_frame(&mut send, &request).await?;

    let reply = read_frame(&mut recv, edge.config.limits.max_frame_bytes).await?;
    let Frame::Error(error) = reply else {
        bail!("expected Error, got {reply:?}")
    };
    assert_eq!(error.code, ErrorCode::Unauthenticated);
    assert_eq!(
        close_code(&connection).await?,
        u64::from(CloseCode::AuthFailed.as_u32())
    );
    Ok(())
}

#[tokio::test]
async fn missing_hello_times_out() -> Result<()> {
    let edge = start_edge(|config| config.hello_timeout = Duration::from_millis(300)).await?;
    let connection = connect(&edge).await?;
    assert_eq!(
        close_code(&connection).await?,
        u64::from(CloseCode::AuthFailed.as_u32())
    );
    Ok(())
}

#[tokio::test]
async fn shutdown_sends_close_then_closes() -> Result<()> {
    let mut edge = start_edge(|_| {}).await?;
    let mut client = login(&edge, "alice", "phone").await?;

    let handle = edge.edge.take().expect("edge is running");
    let shutdown = tokio::spawn(handle.shutdown());
    let frame = read_frame(&mut client.control_recv, client.max_frame_bytes).await?;
    let Frame::Close(close) = frame else {
        bail!("expected Close, got {frame:?}")
    };
    assert_eq!(close.code, CloseCode::ServerShutdown.as_u32());
    assert!(close.retry_after_ms > 0);
    let code = close_code(&client.connection).await?;
    assert_eq!(code, u64::from(CloseCode::ServerShutdown.as_u32()));
    tokio::time::timeout(WAIT, shutdown).await??;
    Ok(())
}

/// A leaf deleted by an operator is re-signed by the existing CA, so clients that trust
/// the old `ca.pem` still connect.
#[tokio::test]
async fn recreated_leaf_is_trusted() -> Result<()> {
    let pki_dir = tempfile::tempdir()?;
    let pki = tidings_edge::DevPki::load_or_create(pki_dir.path())?;
    let ca_before = std::fs::read(&pki.ca_cert)?;
    std::fs::remove_file(&pki.server_cert)?;

    let dir = pki_dir.path().to_owned();
    let edge = start_edge(|config| config.tls = tidings_edge::TlsSource::DevPki { dir }).await?;
    assert_eq!(std::fs::read(&pki.ca_cert)?, ca_before);
    let client = login(&edge, "alice", "phone").await?;
    assert_eq!(client.welcome.user_id, "alice");
    Ok(())
}

fn tidings_now_ms() -> u64 {
    let elapsed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH);
    elapsed
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}
