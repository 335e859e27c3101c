//! Control requests after `Welcome`: frames with a `request_id`, answered in any order.
//! On QUIC and WebTransport they arrive on the control stream; on a WebSocket they share
//! the socket with every other frame, and [`Requests`] serves both.

use std::sync::Arc;

use rand::Rng;
use tidings_relay::OwnerHandle;
use tidings_schema::codec::{self, ReadError};
use tidings_schema::error::{ErrorCode, Rejection};
use tidings_schema::frame::{ConversationList, ConversationReply, ErrorFrame, Frame};
use tidings_schema::mesh::{OwnerReply, OwnerRequest};
use tokio::sync::Semaphore;
use tracing::{Instrument, debug, debug_span, trace};

use crate::session::{Session, error_frame};
use crate::streams::StreamRecv;
use crate::writer::FrameSink;

/// Requests of one session handled at once; reading pauses above it.
const MAX_CONCURRENT_REQUESTS: usize = 64;

/// The outcome of a control stream.
#[derive(Debug)]
pub enum ControlEnd {
    /// The client finished its side of the stream.
    Finished,
    /// The client broke the protocol; the `Error` frame is queued and the connection must
    /// be closed with `ProtocolViolation`.
    Violation,
    /// The stream or connection failed.
    Lost,
}

/// Reads requests until the stream ends or the client breaks the protocol.
pub async fn run_control(
    mut recv: Box<dyn StreamRecv>,
    sink: FrameSink,
    session: Arc<Session>,
) -> ControlEnd {
    let requests = Requests::default();
    loop {
        let frame = match codec::read_frame(&mut recv, session.max_frame_bytes()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return ControlEnd::Finished,
            Err(ReadError::Decode(error)) => {
                return violation(&sink, &session, error.code(), error.to_string()).await;
            }
            Err(ReadError::Truncated) => {
                let reason = "control stream ended inside a frame";
                return violation(&sink, &session, ErrorCode::MalformedFrame, reason).await;
            }
            Err(error) => {
                debug!(%error, "control stream read failed");
                return ControlEnd::Lost;
            }
        };
        let kind = frame.kind();
        trace!(kind, "control frame");
        let Some(frame) = crate::presence_session::handle_frame(&session, &sink, frame).await
        else {
            continue;
        };
        if requests.submit(&session, &sink, frame).await.is_err() {
            let reason = format!("{kind} is not allowed on the control stream after Welcome");
            return violation(&sink, &session, ErrorCode::UnknownFrame, reason).await;
        }
    }
}

/// Forwards control requests of one session to their owners, at most
/// `MAX_CONCURRENT_REQUESTS` at once.
pub struct Requests {
    permits: Arc<Semaphore>,
}

impl Default for Requests {
    fn default() -> Self {
        Requests {
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS)),
        }
    }
}

impl Requests {
    /// Forwards `frame` to its owner and queues the reply on `sink`. Waits while the
    /// session has too many requests in flight. Returns the frame back when it is not a
    /// control request.
    pub async fn submit(
        &self,
        session: &Arc<Session>,
        sink: &FrameSink,
        frame: Frame,
    ) -> Result<(), Frame> {
        let kind = frame.kind();
        let (request_id, request) = to_request(session, frame)?;
        let Ok(permit) = Arc::clone(&self.permits).acquire_owned().await else {
            // NOTE: the semaphore is never closed, so this only drops the request.
            return Ok(());
        };
        let span = debug_span!("request", request_id, kind);
        let owner = route(session, &request).clone();
        let conversation_id = conversation_of(&request);
        let sink = sink.clone();
        tokio::spawn(
            async move {
                let reply = match owner.call(request).await {
                    Ok(reply) => reply_frame(request_id, reply),
                    Err(rejection) => Frame::Error(ErrorFrame {
                        conversation_id,
                        ..request_error(request_id, &rejection)
                    }),
                };
                let _ = sink.send(&reply).await;
                drop(permit);
            }
            .instrument(span),
        );
        Ok(())
    }
}

async fn violation(
    sink: &FrameSink,
    session: &Session,
    code: ErrorCode,
    reason: impl Into<String>,
) -> ControlEnd {
    let reason = reason.into();
    debug!(conn_id = session.conn_id, user = %session.user, %code, %reason, "protocol violation on control stream");
    let _ = sink.send(&Frame::Error(error_frame(code, reason))).await;
    ControlEnd::Violation
}

/// Maps a control frame to its owner request, with the stamps the edge adds, or returns
/// the frame when it is not a control request.
fn to_request(session: &Session, frame: Frame) -> Result<(u64, OwnerRequest), Frame> {
    let user = session.user.clone();
    let stamp = || session.edge.stamper.stamp();
    let mapped = match frame {
        Frame::HistoryRequest(request) => {
            (request.request_id, OwnerRequest::History { user, request })
        }
        Frame::CreateGroup(request) => {
            // Group ids are random and never 0, which means "no conversation" on the wire.
            let conversation_id = rand::rng().random_range(1..=u64::MAX);
            let request_id = request.request_id;
            let request = OwnerRequest::CreateGroup {
                user,
                request,
                conversation_id,
                stamp: stamp(),
            };
            (request_id, request)
        }
        Frame::AddMembers(request) => (
            request.request_id,
            OwnerRequest::AddMembers {
                user,
                request,
                stamp: stamp(),
            },
        ),
        Frame::RemoveMembers(request) => (
            request.request_id,
            OwnerRequest::RemoveMembers {
                user,
                request,
                stamp: stamp(),
            },
        ),
        Frame::Leave(request) => (
            request.request_id,
            OwnerRequest::Leave {
                user,
                request,
                stamp: stamp(),
            },
        ),
        Frame::ListConversations(request) => {
            (request.request_id, OwnerRequest::ListConversations { user })
        }
        other => return crate::receipts::to_request(&session.user, other),
    };
    Ok(mapped)
}

/// Returns the owner a request goes to: the conversation's owner, or the user's home
/// owner for the inbox listing.
fn route<'a>(session: &'a Session, request: &OwnerRequest) -> &'a OwnerHandle {
    let router = &session.edge.router;
    match request {
        OwnerRequest::History { request, .. } => router.for_conversation(request.conversation_id),
        OwnerRequest::CreateGroup {
            conversation_id, ..
        } => router.for_conversation(*conversation_id),
        OwnerRequest::AddMembers { request, .. } | OwnerRequest::RemoveMembers { request, .. } => {
            router.for_conversation(request.conversation_id)
        }
        OwnerRequest::Leave { request, .. } => router.for_conversation(request.conversation_id),
        OwnerRequest::ListConversations { user } => router.for_user(user),
        OwnerRequest::Send(send) => router.for_conversation(send.conversation_id),
        OwnerRequest::Receipt {
            conversation_id, ..
        }
        | OwnerRequest::Receipts {
            conversation_id, ..
        } => router.for_conversation(*conversation_id),
        OwnerRequest::Gap { request, .. } => router.for_conversation(request.conversation_id),
        OwnerRequest::InboxSync { user, .. } | OwnerRequest::MarkUnread { user, .. } => {
            router.for_user(user)
        }
        OwnerRequest::LastSeen { user }
        | OwnerRequest::RecordLastSeen { user, .. }
        | OwnerRequest::PresenceSettings { user, .. } => router.for_user(user),
        // NOTE: only the presence hub sends reports, grouped by home owner. No client
        // request maps to one, so routing by the first user is only a fallback.
        OwnerRequest::PresenceReport(report) => {
            let first = report
                .entries
                .first()
                .map_or("", |entry| entry.user.as_str());
            router.for_user(first)
        }
    }
}

fn reply_frame(request_id: u64, reply: OwnerReply) -> Frame {
    match reply {
        OwnerReply::HistoryPage(mut page) => {
            page.request_id = request_id;
            Frame::HistoryPage(page)
        }
        OwnerReply::Conversation(conversation) => Frame::ConversationReply(ConversationReply {
            request_id,
            conversation,
        }),
        OwnerReply::Conversations(conversations) => Frame::ConversationList(ConversationList {
            request_id,
            conversations,
        }),
        reply
        @ (OwnerReply::ReceiptList(_) | OwnerReply::InboxPage(_) | OwnerReply::GapPage(_)) => {
            crate::receipts::reply_frame(request_id, reply).unwrap_or_else(|_| {
                let rejection = Rejection::internal("receipt reply mapping failed");
                Frame::Error(request_error(request_id, &rejection))
            })
        }
        OwnerReply::SendAck(_) => {
            let rejection =
                Rejection::internal("the owner answered a control request with a SendAck");
            Frame::Error(request_error(request_id, &rejection))
        }
        // NOTE: presence requests go through the presence hub, never through here.
        OwnerReply::LastSeen(_) => {
            let rejection =
                Rejection::internal("the owner answered a control request with a last seen row");
            Frame::Error(request_error(request_id, &rejection))
        }
        OwnerReply::Accepted => {
            let rejection =
                Rejection::internal("the owner answered a control request with no data");
            Frame::Error(request_error(request_id, &rejection))
        }
    }
}

/// Returns the conversation a request names, echoed in its `Error` reply; 0 for requests
/// that name none (a new group's id is not the client's to know until the reply).
fn conversation_of(request: &OwnerRequest) -> u64 {
    match request {
        OwnerRequest::History { request, .. } => request.conversation_id,
        OwnerRequest::AddMembers { request, .. } | OwnerRequest::RemoveMembers { request, .. } => {
            request.conversation_id
        }
        OwnerRequest::Leave { request, .. } => request.conversation_id,
        OwnerRequest::Send(send) => send.conversation_id,
        OwnerRequest::Receipt {
            conversation_id, ..
        }
        | OwnerRequest::Receipts {
            conversation_id, ..
        } => *conversation_id,
        OwnerRequest::Gap { request, .. } => request.conversation_id,
        OwnerRequest::MarkUnread { request, .. } => request.conversation_id,
        _ => 0,
    }
}

fn request_error(request_id: u64, rejection: &Rejection) -> ErrorFrame {
    ErrorFrame {
        request_id,
        ..ErrorFrame::from_rejection(rejection)
    }
}
