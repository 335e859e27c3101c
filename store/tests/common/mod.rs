//! Helpers shared by the owner integration tests: real owners on real redb files.

#![allow(
    dead_code,
    reason = "each test file uses a different subset of the helpers"
)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tidings_schema::Rejection;
use tidings_schema::frame::{
    ConversationInfo, CreateGroup, HistoryRequest, Leave, MembersChange, Message, SendAck,
};
use tidings_schema::ids;
use tidings_schema::mesh::{OwnerReply, OwnerRequest, SendRequest, Stamp};
use tidings_store::{Owner, OwnerConfig};

/// Bound on every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn config(dir: &Path) -> OwnerConfig {
    let mut config = OwnerConfig::new(dir.to_path_buf());
    config.storage_shards = 4;
    config
}

pub fn open(dir: &Path) -> Arc<Owner> {
    Owner::open(config(dir)).expect("owner opens")
}

pub fn stamp(n: u64) -> Stamp {
    Stamp {
        message_id: 1_000_000 + n,
        hlc: 2_000_000 + n,
        server_time_ms: 1_800_000_000_000 + n,
    }
}

pub fn send_request(sender: &str, conversation_id: u64, key: &str, body: &str) -> SendRequest {
    SendRequest {
        sender: sender.into(),
        device_id: format!("{sender}-phone"),
        conversation_id,
        client_msg_id: key.into(),
        body: body.into(),
        direct_peer: None,
        message_id: 7,
        hlc: 8,
        server_time_ms: 9,
    }
}

pub async fn call(owner: &Owner, request: OwnerRequest) -> Result<OwnerReply, Rejection> {
    tokio::time::timeout(WAIT, owner.call(request))
        .await
        .expect("owner call timed out")
}

pub async fn send_with(owner: &Owner, request: SendRequest) -> Result<SendAck, Rejection> {
    match call(owner, OwnerRequest::Send(request)).await? {
        OwnerReply::SendAck(ack) => Ok(ack),
        other => panic!("expected SendAck, got {other:?}"),
    }
}

pub async fn send(
    owner: &Owner,
    sender: &str,
    conversation_id: u64,
    key: &str,
    body: &str,
) -> Result<SendAck, Rejection> {
    send_with(owner, send_request(sender, conversation_id, key, body)).await
}

pub async fn send_direct(
    owner: &Owner,
    sender: &str,
    peer: &str,
    key: &str,
    body: &str,
) -> Result<SendAck, Rejection> {
    let mut request = send_request(sender, ids::direct_conversation_id(sender, peer), key, body);
    request.direct_peer = Some(peer.into());
    send_with(owner, request).await
}

fn conversation(reply: OwnerReply) -> ConversationInfo {
    match reply {
        OwnerReply::Conversation(info) => info,
        other => panic!("expected Conversation, got {other:?}"),
    }
}

pub async fn create_group(
    owner: &Owner,
    creator: &str,
    conversation_id: u64,
    members: &[&str],
) -> Result<ConversationInfo, Rejection> {
    let request = OwnerRequest::CreateGroup {
        user: creator.into(),
        request: CreateGroup {
            request_id: 1,
            name: "team".into(),
            members: members.iter().map(|member| member.to_string()).collect(),
        },
        conversation_id,
        stamp: stamp(conversation_id),
    };
    call(owner, request).await.map(conversation)
}

pub async fn add_members(
    owner: &Owner,
    user: &str,
    conversation_id: u64,
    users: &[&str],
) -> Result<ConversationInfo, Rejection> {
    let request = OwnerRequest::AddMembers {
        user: user.into(),
        request: members_change(conversation_id, users),
        stamp: stamp(3),
    };
    call(owner, request).await.map(conversation)
}

pub async fn remove_members(
    owner: &Owner,
    user: &str,
    conversation_id: u64,
    users: &[&str],
) -> Result<ConversationInfo, Rejection> {
    let request = OwnerRequest::RemoveMembers {
        user: user.into(),
        request: members_change(conversation_id, users),
        stamp: stamp(4),
    };
    call(owner, request).await.map(conversation)
}

pub async fn leave(
    owner: &Owner,
    user: &str,
    conversation_id: u64,
) -> Result<ConversationInfo, Rejection> {
    let request = OwnerRequest::Leave {
        user: user.into(),
        request: Leave {
            request_id: 5,
            conversation_id,
        },
        stamp: stamp(5),
    };
    call(owner, request).await.map(conversation)
}

fn members_change(conversation_id: u64, users: &[&str]) -> MembersChange {
    MembersChange {
        request_id: 2,
        conversation_id,
        users: users.iter().map(|user| user.to_string()).collect(),
    }
}

pub async fn history_page(
    owner: &Owner,
    user: &str,
    conversation_id: u64,
    before_seq: u64,
    limit: u32,
) -> Result<(Vec<Message>, u64), Rejection> {
    let request = OwnerRequest::History {
        user: user.into(),
        request: HistoryRequest {
            request_id: 9,
            conversation_id,
            before_seq,
            limit,
        },
    };
    match call(owner, request).await? {
        OwnerReply::HistoryPage(page) => Ok((page.messages, page.next_before_seq)),
        other => panic!("expected HistoryPage, got {other:?}"),
    }
}

/// Reads the whole visible history page by page, newest first.
pub async fn history_all(owner: &Owner, user: &str, conversation_id: u64) -> Vec<Message> {
    let mut all = Vec::new();
    let mut before = 0;
    for _ in 0..10_000 {
        let (page, next) = history_page(owner, user, conversation_id, before, 7)
            .await
            .expect("history page");
        all.extend(page);
        if next == 0 {
            return all;
        }
        before = next;
    }
    panic!("history did not end after 10,000 pages");
}

pub async fn list(owner: &Owner, user: &str) -> Vec<ConversationInfo> {
    let request = OwnerRequest::ListConversations { user: user.into() };
    match call(owner, request).await.expect("list conversations") {
        OwnerReply::Conversations(list) => list,
        other => panic!("expected Conversations, got {other:?}"),
    }
}

/// Stops the owner's writers off the async workers and drops it, closing its files.
pub async fn close(owner: Arc<Owner>) {
    tokio::task::spawn_blocking(move || {
        owner.shutdown();
        assert_eq!(
            Arc::strong_count(&owner),
            1,
            "another handle keeps the files open"
        );
    })
    .await
    .expect("shutdown task");
}
