//! Control stream requests: pipelined, replied to by request id, errors carry the id.

mod common;

use std::collections::HashSet;

use anyhow::{Result, bail};
use common::{login, read_frame, start_edge, write_frame};
use tidings_schema::error::ErrorCode;
use tidings_schema::frame::{Frame, HistoryRequest, ListConversations};

#[tokio::test]
async fn pipelined_requests_get_their_replies() -> Result<()> {
    let edge = start_edge(|_| {}).await?;
    let mut client = login(&edge, "alice", "phone").await?;

    for request_id in 1..=5 {
        let request = Frame::ListConversations(ListConversations { request_id });
        write_frame(&mut client.control_send, &request).await?;
    }
    let unknown = Frame::HistoryRequest(HistoryRequest {
        request_id: 6,
        conversation_id: 42,
        before_seq: 0,
        limit: 10,
    });
    write_frame(&mut client.control_send, &unknown).await?;

    let mut listed = HashSet::new();
    let mut history_error = None;
    for _ in 0..6 {
        match read_frame(&mut client.control_recv, client.max_frame_bytes).await? {
            Frame::ConversationList(list) => {
                assert!(list.conversations.is_empty());
                listed.insert(list.request_id);
            }
            Frame::Error(error) => history_error = Some(error),
            other => bail!("unexpected reply {other:?}"),
        }
    }

    assert_eq!(listed, (1..=5).collect::<HashSet<u64>>());
    let Some(error) = history_error else {
        bail!("the history request got no Error")
    };
    assert_eq!(error.request_id, 6);
    assert_eq!(error.conversation_id, 42);
    let expected = [ErrorCode::UnknownConversation, ErrorCode::NotMember];
    assert!(
        expected.contains(&error.code),
        "unexpected code {}",
        error.code
    );
    Ok(())
}
