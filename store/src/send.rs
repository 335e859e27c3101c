//! The send operation: idempotency, membership, seq assignment and direct chat creation.

use tidings_schema::frame::{ConversationKind, Member, MessageKind, Role, SendAck};
use tidings_schema::mesh::{Delivery, OwnerReply, SendRequest};
use tidings_schema::{ErrorCode, Rejection};

use crate::batch::{Batch, OpOutcome, OpResult, not_member, unknown_conversation};
use crate::idempotency::{IdempotencyKey, body_digest};
use crate::inbox::InboxOp;
use crate::record::{ConversationRecord, IdempotencyRecord, MessageRecord};

impl Batch<'_, '_> {
    /// Stores one message, or returns the original acknowledgement of a retried one.
    pub(crate) fn send(&mut self, request: &SendRequest) -> OpResult {
        let conversation_id = request.conversation_id;
        let (vshard, _) = self.ctx.placement.conversation(conversation_id);
        let key = IdempotencyKey {
            vshard,
            conversation_id,
            sender: &request.sender,
            client_msg_id: &request.client_msg_id,
        };
        let digest = body_digest(&request.body);

        if let Some(original) = self.idempotency_record(key)? {
            if original.body_digest != digest {
                return Ok(Err(Rejection::new(
                    ErrorCode::IdempotencyConflict,
                    format!(
                        "client_msg_id {:?} was already used in conversation {conversation_id} \
                         with a different body; choose a new client_msg_id",
                        request.client_msg_id
                    ),
                )));
            }
            return Ok(Ok(OpOutcome::reply(OwnerReply::SendAck(ack(
                request, &original,
            )))));
        }

        let mut remote_inbox = Vec::new();
        if self.conversation(conversation_id)?.is_none() {
            let Some(peer) = &request.direct_peer else {
                return Ok(Err(unknown_conversation(conversation_id)));
            };
            remote_inbox = self.create_direct(conversation_id, &request.sender, peer)?;
        }
        let mut record = self
            .conversation(conversation_id)?
            .expect("conversation exists or was created above")
            .clone();
        if record.member(&request.sender).is_none() {
            return Ok(Err(not_member(&request.sender, conversation_id)));
        }

        let message = MessageRecord {
            kind: MessageKind::User,
            message_id: request.message_id,
            hlc: request.hlc,
            server_time_ms: request.server_time_ms,
            sender: request.sender.clone(),
            body: request.body.clone(),
        };
        let message = self.append_message(conversation_id, &mut record, message)?;
        let stored = IdempotencyRecord {
            seq: message.seq,
            message_id: message.message_id,
            hlc: message.hlc,
            server_time_ms: message.server_time_ms,
            body_digest: digest,
            created_ms: self.now_ms,
        };
        self.insert_idempotency(key, &stored)?;

        self.advanced.insert(conversation_id, message.seq);
        self.note_sender_read(conversation_id, &request.sender, message.seq)?;
        self.deliveries.push(Delivery {
            message,
            recipients: record.member_ids(),
            origin_device: request.device_id.clone(),
            receipt: None,
            presence: Vec::new(),
            presence_snapshot: false,
            position: None,
        });
        self.put_conversation(conversation_id, record);
        Ok(Ok(OpOutcome {
            reply: OwnerReply::SendAck(ack(request, &stored)),
            remote_inbox,
        }))
    }

    /// Creates the direct conversation of `sender` and `peer` with both inbox rows.
    fn create_direct(
        &mut self,
        conversation_id: u64,
        sender: &str,
        peer: &str,
    ) -> crate::batch::StoreResult<crate::inbox::InboxRoutes> {
        // NOTE: both members join at seq 1, the first message, which is the one being sent.
        let members = [sender, peer].map(|user_id| Member {
            user_id: user_id.to_owned(),
            role: Role::Member,
            joined_seq: 1,
        });
        let record = ConversationRecord {
            kind: ConversationKind::Direct,
            name: String::new(),
            created_ms: self.now_ms,
            last_seq: 0,
            members: members.to_vec(),
        };
        self.put_conversation(conversation_id, record);

        let joins = [sender, peer]
            .into_iter()
            .map(|user| InboxOp::Join {
                user: user.to_owned(),
                conversation_id,
                last_seq: 1,
            })
            .collect();
        self.route_inbox(joins)
    }
}

fn ack(request: &SendRequest, stored: &IdempotencyRecord) -> SendAck {
    SendAck {
        conversation_id: request.conversation_id,
        client_msg_id: request.client_msg_id.clone(),
        message_id: stored.message_id,
        seq: stored.seq,
        hlc: stored.hlc,
        server_time_ms: stored.server_time_ms,
    }
}
