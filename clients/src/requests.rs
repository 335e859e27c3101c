//! The calls a [`Client`] offers: sends, history and group management.

use tidings_schema::frame::{
    ConversationInfo, CreateGroup, HistoryPage, HistoryRequest, Leave, ListConversations,
    MembersChange, Send, SendAck,
};
use tidings_schema::ids::direct_conversation_id;
use tidings_schema::{ErrorCode, Frame, Rejection};

use crate::client::{Client, OnLoss};
use crate::error::{ClientError, StreamError};

/// Generates a fresh idempotency key: 128 random bits as 32 hex digits.
pub fn new_client_msg_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Client {
    /// Sends `body` to the conversation `conversation_id` and waits for the durable
    /// acknowledgement.
    ///
    /// The send carries a fresh idempotency key. Retryable rejections and lost
    /// connections are retried with the same key, so the server stores the message at
    /// most once while it keeps the key (its idempotency window, at least 24 hours).
    /// Other rejections (for example `MessageTooLarge` or `NotMember`) return at once as
    /// [`ClientError::Rejected`].
    ///
    /// Cancel safety: a cancelled send may still be committed by the server.
    pub async fn send(
        &self,
        conversation_id: u64,
        body: impl Into<String>,
    ) -> Result<SendAck, ClientError> {
        self.send_with_key(conversation_id, None, new_client_msg_id(), body.into())
            .await
    }

    /// Sends `body` to the direct conversation with `peer`, creating it on first use.
    pub async fn send_direct(
        &self,
        peer: &str,
        body: impl Into<String>,
    ) -> Result<SendAck, ClientError> {
        let conversation_id = direct_conversation_id(&self.user_id(), peer);
        let key = new_client_msg_id();
        self.send_with_key(conversation_id, Some(peer.to_owned()), key, body.into())
            .await
    }

    /// Sends with a caller-chosen idempotency key, for applications that persist their
    /// outbox and resend after a restart. Retries as [`Client::send`] does.
    pub async fn send_with_key(
        &self,
        conversation_id: u64,
        direct_peer: Option<String>,
        client_msg_id: String,
        body: String,
    ) -> Result<SendAck, ClientError> {
        if client_msg_id.is_empty() {
            return Err(ClientError::InvalidArgument(
                "client_msg_id is empty; use new_client_msg_id() to generate one".to_owned(),
            ));
        }
        let max_message_bytes = self.welcome().limits.max_message_bytes;
        if body.len() > max_message_bytes as usize {
            return Err(ClientError::Rejected(Rejection::new(
                ErrorCode::MessageTooLarge,
                format!(
                    "message body of {} bytes exceeds the limit of {max_message_bytes} bytes",
                    body.len()
                ),
            )));
        }

        let send = Send {
            conversation_id,
            client_msg_id,
            body,
            direct_peer,
        };
        let pending = self.shared.sink.begin_send(conversation_id);
        let ack = self
            .with_retries("send", OnLoss::Retry, |session| {
                let send = send.clone();
                async move { session.send(send).await }
            })
            .await?;
        self.shared.sink.note_sent(ack.conversation_id, ack.seq);
        drop(pending);
        Ok(ack)
    }

    /// Reads one page of history, newest first: messages with `seq` below `before_seq`
    /// (0 for the newest), at most `limit` of them.
    pub async fn history(
        &self,
        conversation_id: u64,
        before_seq: u64,
        limit: u32,
    ) -> Result<HistoryPage, ClientError> {
        let reply = self
            .control_request("history", OnLoss::Retry, |request_id| {
                Frame::HistoryRequest(HistoryRequest {
                    request_id,
                    conversation_id,
                    before_seq,
                    limit,
                })
            })
            .await?;
        match reply {
            Frame::HistoryPage(page) => Ok(page),
            other => Err(unexpected_reply("HistoryPage", &other)),
        }
    }

    /// Creates a group named `name` with `members`; the caller joins as its admin.
    ///
    /// Not repeated after a lost connection, because a repeat could create a second
    /// group; that case returns [`ClientError::ConnectionLost`].
    pub async fn create_group(
        &self,
        name: &str,
        members: &[String],
    ) -> Result<ConversationInfo, ClientError> {
        let reply = self
            .control_request("create_group", OnLoss::Fail, |request_id| {
                Frame::CreateGroup(CreateGroup {
                    request_id,
                    name: name.to_owned(),
                    members: members.to_vec(),
                })
            })
            .await?;
        conversation_from(reply)
    }

    /// Adds `users` to the group `conversation_id`. Requires the admin role.
    pub async fn add_members(
        &self,
        conversation_id: u64,
        users: &[String],
    ) -> Result<ConversationInfo, ClientError> {
        let reply = self
            .control_request("add_members", OnLoss::Fail, |request_id| {
                Frame::AddMembers(MembersChange {
                    request_id,
                    conversation_id,
                    users: users.to_vec(),
                })
            })
            .await?;
        conversation_from(reply)
    }

    /// Removes `users` from the group `conversation_id`. Requires the admin role.
    pub async fn remove_members(
        &self,
        conversation_id: u64,
        users: &[String],
    ) -> Result<ConversationInfo, ClientError> {
        let reply = self
            .control_request("remove_members", OnLoss::Fail, |request_id| {
                Frame::RemoveMembers(MembersChange {
                    request_id,
                    conversation_id,
                    users: users.to_vec(),
                })
            })
            .await?;
        conversation_from(reply)
    }

    /// Leaves the group `conversation_id`.
    pub async fn leave(&self, conversation_id: u64) -> Result<ConversationInfo, ClientError> {
        let reply = self
            .control_request("leave", OnLoss::Fail, |request_id| {
                Frame::Leave(Leave {
                    request_id,
                    conversation_id,
                })
            })
            .await?;
        conversation_from(reply)
    }

    /// Lists the conversations the user is a member of.
    pub async fn conversations(&self) -> Result<Vec<ConversationInfo>, ClientError> {
        let reply = self
            .control_request("conversations", OnLoss::Retry, |request_id| {
                Frame::ListConversations(ListConversations { request_id })
            })
            .await?;
        match reply {
            Frame::ConversationList(list) => Ok(list.conversations),
            other => Err(unexpected_reply("ConversationList", &other)),
        }
    }

    /// Sends a control-stream request built by `build` from a fresh `request_id` and
    /// returns its reply, with `Error` replies turned into rejections.
    pub(crate) async fn control_request(
        &self,
        operation: &'static str,
        on_loss: OnLoss,
        build: impl Fn(u64) -> Frame,
    ) -> Result<Frame, ClientError> {
        self.with_retries(operation, on_loss, |session| {
            let request_id = session.next_request_id();
            let frame = build(request_id);
            async move {
                let reply = session.request(request_id, frame).await?;
                Ok::<_, StreamError>(match reply {
                    Frame::Error(error) => Err(error.rejection()),
                    other => Ok(other),
                })
            }
        })
        .await
    }
}

fn conversation_from(reply: Frame) -> Result<ConversationInfo, ClientError> {
    match reply {
        Frame::ConversationReply(reply) => Ok(reply.conversation),
        other => Err(unexpected_reply("ConversationReply", &other)),
    }
}

pub(crate) fn unexpected_reply(expected: &str, received: &Frame) -> ClientError {
    ClientError::Protocol(format!(
        "expected {expected} in reply, received {}",
        received.kind()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_msg_ids_are_unique_hex() {
        let first = new_client_msg_id();
        let second = new_client_msg_id();
        assert_eq!(first.len(), 32);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(first, second);
    }
}
