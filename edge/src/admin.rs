//! Operator endpoints on the TCP port. Each one needs a bearer token with the `admin`
//! claim (`tidings token --admin`), signed with the key the edge verifies client tokens
//! with.
//!
//! `POST /v1/admin/kick` ends every session of a user on this edge. Each session gets a
//! `Close` frame with [`CloseCode::Kicked`] and the operator's reason, and clients do not
//! reconnect on their own after it. The edge does not revoke the user's tokens: a client
//! that signs in again with its token is let in. In a cluster, each edge ends only its own
//! sessions, so an operator calls every edge.
//!
//! Errors reply with JSON `{"code": NAME, "message": TEXT}`, where `NAME` is an
//! [`ErrorCode`] name.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tidings_schema::CloseCode;
use tidings_schema::error::{ErrorCode, Rejection};
use tidings_schema::ids;
use tracing::{info, warn};

use crate::endpoint::EdgeShared;

/// Path of the endpoint that ends a user's sessions on this edge.
pub const KICK_PATH: &str = "/v1/admin/kick";

/// Maximum kick reason in bytes. The reason also travels in the WebSocket close frame,
/// whose reason is limited to 123 bytes (RFC 6455, section 5.5).
pub const MAX_REASON_BYTES: usize = 120;

/// Largest request body in bytes: a user id and a reason fit many times over.
const MAX_BODY_BYTES: usize = 4096;

/// Reason sent when the request has none.
const DEFAULT_REASON: &str = "an operator ended the session";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KickRequest {
    user: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct KickReply {
    user: String,
    /// Sessions of the user that this edge ended.
    sessions: usize,
}

#[derive(Debug, Serialize)]
struct ErrorReply {
    code: &'static str,
    message: String,
}

/// A failed operator request: the HTTP status and the error the body names.
struct AdminError {
    status: StatusCode,
    rejection: Rejection,
}

impl AdminError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        AdminError {
            status,
            rejection: Rejection::new(code, message),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let body = ErrorReply {
            code: self.rejection.code.name(),
            message: self.rejection.message,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = header::HeaderValue::from_static("Bearer");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

/// Handles `POST /v1/admin/kick` with a JSON body `{"user": ID, "reason": TEXT}`.
pub async fn kick(State(edge): State<Arc<EdgeShared>>, headers: HeaderMap, body: Body) -> Response {
    let result = match authorize(&edge, &headers) {
        Ok(operator) => match read_body(body).await {
            Ok(body) => kick_request(&edge, &operator, &body),
            Err(error) => Err(error),
        },
        Err(error) => Err(error),
    };
    match result {
        Ok(reply) => axum::Json(reply).into_response(),
        Err(error) => {
            warn!(
                status = %error.status,
                code = %error.rejection.code,
                message = error.rejection.message,
                "operator request rejected"
            );
            error.into_response()
        }
    }
}

/// Reads a request body of at most [`MAX_BODY_BYTES`].
async fn read_body(body: Body) -> Result<Bytes, AdminError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            AdminError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::InvalidRequest,
                format!("the body is over {MAX_BODY_BYTES} bytes or was cut off"),
            )
        })
}

fn kick_request(edge: &EdgeShared, operator: &str, body: &[u8]) -> Result<KickReply, AdminError> {
    let request: KickRequest = serde_json::from_slice(body).map_err(|error| {
        AdminError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            format!(r#"the body is not {{"user": ID, "reason": TEXT}}: {error}"#),
        )
    })?;
    if !ids::is_valid_user_id(&request.user) {
        return Err(AdminError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "user is not a valid user id (1 to 64 of A-Z a-z 0-9 . _ - @)",
        ));
    }
    let reason = request
        .reason
        .filter(|reason| !reason.is_empty())
        .unwrap_or_else(|| DEFAULT_REASON.to_owned());
    if reason.len() > MAX_REASON_BYTES {
        return Err(AdminError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            format!(
                "reason has {} bytes; the limit is {MAX_REASON_BYTES}",
                reason.len()
            ),
        ));
    }
    info!(operator, user = request.user, reason, "operator kick");
    let sessions = edge.kick(&request.user, CloseCode::Kicked, &reason);
    Ok(KickReply {
        user: request.user,
        sessions,
    })
}

/// Checks the request's bearer token and returns the operator's user id.
fn authorize(edge: &EdgeShared, headers: &HeaderMap) -> Result<String, AdminError> {
    let unauthorized =
        |code, message: String| AdminError::new(StatusCode::UNAUTHORIZED, code, message);
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| {
            unauthorized(
                ErrorCode::Unauthenticated,
                "send an operator token as `Authorization: Bearer TOKEN`".to_owned(),
            )
        })?;
    let token = value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .ok_or_else(|| {
            unauthorized(
                ErrorCode::Unauthenticated,
                "the Authorization header is not `Bearer TOKEN`".to_owned(),
            )
        })?;
    let claims = edge
        .verifier
        .verify(token, SystemTime::now())
        .map_err(|rejection| unauthorized(rejection.code, rejection.message))?;
    if !claims.admin {
        return Err(AdminError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::NotAdmin,
            "the token lacks the admin claim; sign one with `tidings token --admin`",
        ));
    }
    Ok(claims.sub)
}
