//! Presence on one session: attaching its sink to the hub, reading its datagrams, and
//! the presence frames that arrive on its control stream or WebSocket.

use std::sync::Arc;

use bytes::Bytes;
use tidings_schema::codec;
use tidings_schema::frame::Frame;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, trace};

use crate::datagram::DatagramChannel;
use crate::presence_hub::PresenceSink;
use crate::session::Session;
use crate::writer::FrameSink;

/// Attaches the session to the presence hub: presence goes out as datagrams when the
/// transport has them, else as frames on `frames`. Incoming datagrams are read until
/// `cancel`.
pub fn start(
    session: &Arc<Session>,
    datagrams: Option<DatagramChannel>,
    frames: &FrameSink,
    cancel: &CancellationToken,
) {
    let hub = &session.edge.presence;
    let Some(channel) = datagrams else {
        hub.attach(
            session.session_id,
            &session.user,
            PresenceSink::Frames(frames.clone()),
        );
        return;
    };
    let sink = PresenceSink::Datagrams(channel.outgoing);
    hub.attach(session.session_id, &session.user, sink);
    let reader = read_datagrams(Arc::clone(session), channel.incoming, cancel.clone());
    tokio::spawn(reader.in_current_span());
}

/// Handles a presence frame from the control stream or WebSocket and returns `None`, or
/// returns the frame when it is not one a client may send about presence.
pub async fn handle_frame(session: &Arc<Session>, sink: &FrameSink, frame: Frame) -> Option<Frame> {
    let hub = &session.edge.presence;
    match frame {
        Frame::Heartbeat(heartbeat) => {
            hub.heartbeat(session.session_id, &session.user, heartbeat.state);
        }
        Frame::Typing(typing) => hub.typing(session.session_id, &session.user, typing).await,
        // NOTE: awaited in line, so two subscriptions of one session apply in the order
        // they were sent.
        Frame::PresenceSubscribe(request) => {
            let reply = hub
                .subscribe(session.session_id, &session.user, request)
                .await;
            let _ = sink.send(&reply).await;
        }
        Frame::PresenceSettings(request) => {
            let reply = hub.settings(&session.user, request).await;
            let _ = sink.send(&reply).await;
        }
        other => return Some(other),
    }
    None
}

/// Reads heartbeats and typing indicators from datagrams. Anything else in a datagram is
/// dropped: datagrams carry no requests, and a malformed one gets no reply.
async fn read_datagrams(
    session: Arc<Session>,
    mut incoming: mpsc::Receiver<Bytes>,
    cancel: CancellationToken,
) {
    let hub = &session.edge.presence;
    loop {
        let datagram = tokio::select! {
            _ = cancel.cancelled() => return,
            datagram = incoming.recv() => datagram,
        };
        let Some(datagram) = datagram else { return };
        match codec::decode(&datagram) {
            Ok(Frame::Heartbeat(heartbeat)) => {
                hub.heartbeat(session.session_id, &session.user, heartbeat.state);
            }
            Ok(Frame::Typing(typing)) => {
                hub.typing(session.session_id, &session.user, typing).await;
            }
            Ok(other) => trace!(
                kind = other.kind(),
                "datagram dropped; not allowed in a datagram"
            ),
            Err(error) => trace!(%error, "datagram dropped; not a frame"),
        }
    }
}
