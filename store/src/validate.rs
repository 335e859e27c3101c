//! Checks of a request that need no stored state, done before the request is queued.

use tidings_schema::frame::Limits;
use tidings_schema::ids;
use tidings_schema::mesh::SendRequest;
use tidings_schema::{ErrorCode, Rejection};

/// Maximum length of a `client_msg_id` in bytes.
pub const MAX_CLIENT_MSG_ID_BYTES: usize = 64;

/// Maximum length of a group name in bytes.
pub const MAX_GROUP_NAME_BYTES: usize = 256;

pub(crate) fn invalid(message: impl Into<String>) -> Rejection {
    Rejection::new(ErrorCode::InvalidRequest, message)
}

pub(crate) fn check_user(field: &str, user_id: &str) -> Result<(), Rejection> {
    if ids::is_valid_user_id(user_id) {
        return Ok(());
    }
    // Echo at most the start of a long id, so a hostile request cannot inflate the reply.
    let shown: String = user_id.chars().take(80).collect();
    let ellipsis = if shown.len() < user_id.len() {
        "…"
    } else {
        ""
    };
    Err(invalid(format!(
        "{field} {shown:?}{ellipsis} is not a valid user id: use 1 to 64 ASCII letters, \
         digits, '.', '_', '-' or '@'"
    )))
}

/// Checks the fields of a send that do not depend on the conversation's state.
pub(crate) fn check_send(request: &SendRequest, limits: &Limits) -> Result<(), Rejection> {
    check_user("sender", &request.sender)?;

    let key_len = request.client_msg_id.len();
    if key_len == 0 || key_len > MAX_CLIENT_MSG_ID_BYTES {
        return Err(invalid(format!(
            "client_msg_id has {key_len} bytes; it must have 1 to {MAX_CLIENT_MSG_ID_BYTES}"
        )));
    }

    let body_len = request.body.len();
    if request.body.trim().is_empty() {
        return Err(invalid(
            "message body is empty; send at least one visible character",
        ));
    }
    if body_len > limits.max_message_bytes as usize {
        return Err(Rejection::new(
            ErrorCode::MessageTooLarge,
            format!(
                "message body has {body_len} bytes; the limit is {}",
                limits.max_message_bytes
            ),
        ));
    }

    if let Some(peer) = &request.direct_peer {
        check_user("direct_peer", peer)?;
        if peer == &request.sender {
            return Err(invalid(
                "direct_peer is the sender; a direct chat needs two users",
            ));
        }
        let expected = ids::direct_conversation_id(&request.sender, peer);
        if request.conversation_id != expected {
            return Err(invalid(format!(
                "conversation_id {} does not match the direct conversation of {} and {peer}, \
                 which is {expected}",
                request.conversation_id, request.sender
            )));
        }
    }
    Ok(())
}

/// Returns the sorted, deduplicated list of valid user ids, leaving out `exclude`.
pub(crate) fn check_user_list(users: &[String], exclude: &str) -> Result<Vec<String>, Rejection> {
    let mut unique = Vec::with_capacity(users.len());
    for user in users {
        check_user("member", user)?;
        if user != exclude {
            unique.push(user.clone());
        }
    }
    unique.sort();
    unique.dedup();
    Ok(unique)
}

/// Checks a new group's name and members; returns the members besides the creator.
pub(crate) fn check_create_group(
    creator: &str,
    name: &str,
    members: &[String],
    limits: &Limits,
) -> Result<Vec<String>, Rejection> {
    check_user("user", creator)?;
    if name.len() > MAX_GROUP_NAME_BYTES {
        return Err(invalid(format!(
            "group name has {} bytes; the limit is {MAX_GROUP_NAME_BYTES}",
            name.len()
        )));
    }

    let others = check_user_list(members, creator)?;
    let total = others.len() + 1;
    if total > limits.max_group_members as usize {
        return Err(group_too_large(total, limits));
    }
    Ok(others)
}

pub(crate) fn group_too_large(total: usize, limits: &Limits) -> Rejection {
    Rejection::new(
        ErrorCode::GroupTooLarge,
        format!(
            "the group would have {total} members; the limit is {}",
            limits.max_group_members
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(sender: &str, key: &str, body: &str) -> SendRequest {
        SendRequest {
            sender: sender.into(),
            conversation_id: 5,
            client_msg_id: key.into(),
            body: body.into(),
            ..SendRequest::default()
        }
    }

    #[test]
    fn send_checks_key_length() {
        let limits = Limits::default();
        assert!(check_send(&send("alice", "k", "hi"), &limits).is_ok());
        assert!(check_send(&send("alice", &"k".repeat(64), "hi"), &limits).is_ok());

        let empty = check_send(&send("alice", "", "hi"), &limits).unwrap_err();
        assert_eq!(empty.code, ErrorCode::InvalidRequest);
        let long = check_send(&send("alice", &"k".repeat(65), "hi"), &limits).unwrap_err();
        assert_eq!(long.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn send_checks_body_size() {
        let limits = Limits {
            max_message_bytes: 4,
            ..Limits::default()
        };
        assert!(check_send(&send("alice", "k", "four"), &limits).is_ok());
        let error = check_send(&send("alice", "k", "fives"), &limits).unwrap_err();
        assert_eq!(error.code, ErrorCode::MessageTooLarge);
    }

    #[test]
    fn send_checks_direct_id() {
        let limits = Limits::default();
        let mut request = send("alice", "k", "hi");
        request.direct_peer = Some("bob".into());
        assert_eq!(
            check_send(&request, &limits).unwrap_err().code,
            ErrorCode::InvalidRequest
        );

        request.conversation_id = ids::direct_conversation_id("alice", "bob");
        assert!(check_send(&request, &limits).is_ok());

        request.direct_peer = Some("not valid".into());
        assert_eq!(
            check_send(&request, &limits).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn group_members_are_deduped_and_capped() {
        let limits = Limits {
            max_group_members: 3,
            ..Limits::default()
        };
        let members = vec!["bob".into(), "alice".into(), "bob".into(), "carol".into()];
        let others = check_create_group("alice", "team", &members, &limits).unwrap();
        assert_eq!(others, vec!["bob".to_string(), "carol".to_string()]);

        let four = vec!["bob".into(), "carol".into(), "dave".into()];
        let error = check_create_group("alice", "team", &four, &limits).unwrap_err();
        assert_eq!(error.code, ErrorCode::GroupTooLarge);

        let bad = vec!["no spaces".into()];
        let error = check_create_group("alice", "team", &bad, &limits).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn empty_body_is_invalid() {
        let request = SendRequest {
            sender: "alice".into(),
            client_msg_id: "k1".into(),
            body: " \n".into(),
            ..SendRequest::default()
        };
        let error = check_send(&request, &Limits::default()).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn long_invalid_user_id_is_cut_in_message() {
        let long = "x y".repeat(2_000);
        let error = check_user("member", &long).unwrap_err();
        assert!(
            error.message.len() < 300,
            "message has {} bytes",
            error.message.len()
        );
    }
}
