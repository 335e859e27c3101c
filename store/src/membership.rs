//! Group creation and membership changes. Each change is recorded as a system message,
//! and the inbox rows of joining and departing users change in the same request.

use tidings_schema::frame::{ConversationKind, CreateGroup, Member, MembersChange, Role};
use tidings_schema::mesh::{Delivery, OwnerReply, Stamp};
use tidings_schema::{ErrorCode, Rejection};

use crate::batch::{Batch, OpOutcome, OpResult, StoreResult, not_member, unknown_conversation};
use crate::inbox::InboxOp;
use crate::record::ConversationRecord;
use crate::validate::{check_user_list, group_too_large, invalid};

impl Batch<'_, '_> {
    pub(crate) fn create_group(
        &mut self,
        creator: &str,
        request: &CreateGroup,
        conversation_id: u64,
        stamp: &Stamp,
    ) -> OpResult {
        if self.conversation(conversation_id)?.is_some() {
            return Ok(Err(invalid(format!(
                "conversation id {conversation_id} is already in use; pick another random id"
            ))));
        }
        let others = match check_user_list(&request.members, creator) {
            Ok(others) => others,
            Err(rejection) => return Ok(Err(rejection)),
        };
        if others.len() + 1 > self.ctx.limits.max_group_members as usize {
            return Ok(Err(group_too_large(others.len() + 1, &self.ctx.limits)));
        }

        // NOTE: the creation message is always seq 1, so every founding member joins at 1.
        let mut members = vec![Member {
            user_id: creator.to_owned(),
            role: Role::Admin,
            joined_seq: 1,
        }];
        members.extend(others.iter().map(|user_id| Member {
            user_id: user_id.clone(),
            role: Role::Member,
            joined_seq: 1,
        }));
        let mut record = ConversationRecord {
            kind: ConversationKind::Group,
            name: request.name.clone(),
            created_ms: stamp.server_time_ms,
            last_seq: 0,
            members,
        };

        let body = if others.is_empty() {
            format!("{creator} created the group {:?}", request.name)
        } else {
            format!(
                "{creator} created the group {:?} with {}",
                request.name,
                others.join(", ")
            )
        };
        let joining = record.member_ids();
        let before = record.clone();
        let seq = self.commit_change(conversation_id, before, &mut record, creator, body, stamp)?;
        self.finish_change(conversation_id, record, &joining, &[], seq)
    }

    pub(crate) fn add_members(
        &mut self,
        actor: &str,
        request: &MembersChange,
        stamp: &Stamp,
    ) -> OpResult {
        let conversation_id = request.conversation_id;
        let mut record = match self.admin_group(actor, conversation_id)? {
            Ok(record) => record,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let requested = match check_user_list(&request.users, actor) {
            Ok(users) => users,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let added: Vec<String> = requested
            .into_iter()
            .filter(|user| record.member(user).is_none())
            .collect();
        if added.is_empty() {
            return Ok(Err(invalid(
                "every listed user is already a member of the group",
            )));
        }
        let total = record.members.len() + added.len();
        if total > self.ctx.limits.max_group_members as usize {
            return Ok(Err(group_too_large(total, &self.ctx.limits)));
        }

        // NOTE: new members join at the seq of the message that records the addition, so
        // their history starts there.
        let joined_seq = record.last_seq + 1;
        record.members.extend(added.iter().map(|user_id| Member {
            user_id: user_id.clone(),
            role: Role::Member,
            joined_seq,
        }));
        let body = format!("{actor} added {}", added.join(", "));
        let before = record.clone();
        let seq = self.commit_change(conversation_id, before, &mut record, actor, body, stamp)?;
        self.finish_change(conversation_id, record, &added, &[], seq)
    }

    pub(crate) fn remove_members(
        &mut self,
        actor: &str,
        users: &[String],
        conversation_id: u64,
        stamp: &Stamp,
    ) -> OpResult {
        let mut record = match self.admin_group(actor, conversation_id)? {
            Ok(record) => record,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let requested = match check_user_list(users, "") {
            Ok(users) => users,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let removed: Vec<String> = requested
            .into_iter()
            .filter(|user| record.member(user).is_some())
            .collect();
        if removed.is_empty() {
            return Ok(Err(invalid(
                "none of the listed users is a member of the group",
            )));
        }

        let before = record.clone();
        record
            .members
            .retain(|member| !removed.contains(&member.user_id));
        promote_if_no_admin(&mut record);
        let body = format!("{actor} removed {}", removed.join(", "));
        let seq = self.commit_change(conversation_id, before, &mut record, actor, body, stamp)?;
        self.finish_change(conversation_id, record, &[], &removed, seq)
    }

    pub(crate) fn leave(&mut self, user: &str, conversation_id: u64, stamp: &Stamp) -> OpResult {
        let Some(record) = self.conversation(conversation_id)? else {
            return Ok(Err(unknown_conversation(conversation_id)));
        };
        if record.member(user).is_none() {
            return Ok(Err(not_member(user, conversation_id)));
        }
        if record.kind != ConversationKind::Group {
            return Ok(Err(invalid(format!(
                "conversation {conversation_id} is a direct chat; only groups can be left"
            ))));
        }

        let mut record = record.clone();
        let before = record.clone();
        record.members.retain(|member| member.user_id != user);
        promote_if_no_admin(&mut record);
        let body = format!("{user} left the group");
        let seq = self.commit_change(conversation_id, before, &mut record, user, body, stamp)?;
        self.finish_change(conversation_id, record, &[], &[user.to_owned()], seq)
    }

    /// Returns the group row if `actor` is one of its admins.
    fn admin_group(
        &mut self,
        actor: &str,
        conversation_id: u64,
    ) -> StoreResult<Result<ConversationRecord, Rejection>> {
        let Some(record) = self.conversation(conversation_id)? else {
            return Ok(Err(unknown_conversation(conversation_id)));
        };
        let Some(member) = record.member(actor) else {
            return Ok(Err(not_member(actor, conversation_id)));
        };
        if record.kind != ConversationKind::Group {
            return Ok(Err(invalid(format!(
                "conversation {conversation_id} is a direct chat; members can change only in \
                 groups"
            ))));
        }
        if member.role != Role::Admin {
            return Ok(Err(Rejection::new(
                ErrorCode::NotAdmin,
                format!("user {actor} is not an admin of group {conversation_id}"),
            )));
        }
        Ok(Ok(record.clone()))
    }

    /// Appends the system message of a change and queues its delivery to the members after
    /// the change plus those in `before` who are gone (so they see their own removal).
    /// Returns the message's seq.
    fn commit_change(
        &mut self,
        conversation_id: u64,
        before: ConversationRecord,
        record: &mut ConversationRecord,
        actor: &str,
        body: String,
        stamp: &Stamp,
    ) -> StoreResult<u64> {
        let message = self.append_system(conversation_id, record, actor, body, stamp)?;
        let seq = message.seq;
        let mut recipients = record.member_ids();
        for member in before.members {
            if record.member(&member.user_id).is_none() {
                recipients.push(member.user_id);
            }
        }
        self.deliveries.push(Delivery {
            message,
            recipients,
            origin_device: String::new(),
            receipt: None,
            presence: Vec::new(),
            presence_snapshot: false,
            position: None,
        });
        Ok(seq)
    }

    /// Stores the changed row, writes the inbox rows of joining and departing users and
    /// builds the reply.
    fn finish_change(
        &mut self,
        conversation_id: u64,
        record: ConversationRecord,
        joined: &[String],
        departed: &[String],
        seq: u64,
    ) -> OpResult {
        let mut ops: Vec<InboxOp> = joined
            .iter()
            .map(|user| InboxOp::Join {
                user: user.clone(),
                conversation_id,
                last_seq: seq,
            })
            .collect();
        ops.extend(departed.iter().map(|user| InboxOp::Remove {
            user: user.clone(),
            conversation_id,
        }));
        // Members who stay see the change in their inbox through the coalesced advance.
        self.advanced.insert(conversation_id, seq);

        let info = record.info(conversation_id);
        self.put_conversation(conversation_id, record);
        let remote_inbox = self.route_inbox(ops)?;
        Ok(Ok(OpOutcome {
            reply: OwnerReply::Conversation(info),
            remote_inbox,
        }))
    }
}

/// Promotes the longest-standing member (lowest `joined_seq`, earliest in the list on a
/// tie) when the group has members but no admin.
fn promote_if_no_admin(record: &mut ConversationRecord) {
    if record
        .members
        .iter()
        .any(|member| member.role == Role::Admin)
    {
        return;
    }
    if let Some(oldest) = record
        .members
        .iter_mut()
        .min_by_key(|member| member.joined_seq)
    {
        oldest.role = Role::Admin;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(user_id: &str, role: Role, joined_seq: u64) -> Member {
        Member {
            user_id: user_id.into(),
            role,
            joined_seq,
        }
    }

    #[test]
    fn promotion_picks_longest_standing() {
        let mut record = ConversationRecord {
            kind: ConversationKind::Group,
            name: "g".into(),
            created_ms: 0,
            last_seq: 9,
            members: vec![
                member("late", Role::Member, 5),
                member("early", Role::Member, 1),
                member("also-early", Role::Member, 1),
            ],
        };
        promote_if_no_admin(&mut record);
        assert_eq!(record.member("early").unwrap().role, Role::Admin);
        assert_eq!(record.member("also-early").unwrap().role, Role::Member);
        assert_eq!(record.member("late").unwrap().role, Role::Member);
    }
}
