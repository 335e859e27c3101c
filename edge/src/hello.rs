//! The first frame of every session: a `Hello` with a valid token.

use std::time::SystemTime;

use tidings_schema::codec::ReadError;
use tidings_schema::error::{ErrorCode, Rejection};
use tidings_schema::frame::{Frame, Hello};
use tracing::debug;

use crate::auth::{Claims, TokenVerifier};

/// Checks the first frame of a session: a `Hello` with a valid token. `Ok(None)` means
/// the stream or socket failed, so no `Error` frame can be sent.
pub fn check_hello(
    frame: Result<Option<Frame>, ReadError>,
    verifier: &TokenVerifier,
) -> Result<Option<(Hello, Claims)>, Rejection> {
    match frame {
        Ok(Some(Frame::Hello(hello))) => {
            let claims = verifier.verify(&hello.token, SystemTime::now())?;
            Ok(Some((hello, claims)))
        }
        Ok(Some(other)) => Err(Rejection::new(
            ErrorCode::Unauthenticated,
            format!("the first frame must be Hello, not {}", other.kind()),
        )),
        Ok(None) => Err(Rejection::new(
            ErrorCode::Unauthenticated,
            "the control stream ended before Hello",
        )),
        Err(ReadError::Decode(error)) => Err(Rejection::new(error.code(), error.to_string())),
        Err(ReadError::Truncated) => Err(Rejection::new(
            ErrorCode::MalformedFrame,
            "the control stream ended inside Hello",
        )),
        Err(error) => {
            debug!(%error, "control stream failed before Hello");
            Ok(None)
        }
    }
}
