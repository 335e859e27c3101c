//! Presence on the client: heartbeats that keep this device present, the subscription to
//! other users' presence, typing indicators and the last seen setting.
//!
//! On QUIC, heartbeats and typing go out as datagrams and presence updates arrive as
//! datagrams. On the WebSocket fallback they are ordinary frames. Datagrams may be lost:
//! the server expires a device only after several missed heartbeats, and it sends the full
//! state of every watched user periodically, which repairs a lost update.
//!
//! The subscription lives with the session on the server, so the client keeps the last
//! one it made and sends it again on every new session.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tidings_schema::codec;
use tidings_schema::frame::Frame;
use tidings_schema::presence::{
    Heartbeat, PresenceEntry, PresenceSettings, PresenceState, PresenceSubscribe, PresenceUpdate,
    Typing,
};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tracing::{debug, trace};

use crate::client::{Client, OnLoss, Shared};
use crate::error::ClientError;
use crate::requests::unexpected_reply;
use crate::session::Session;

/// Presence events queued for the application before new ones are dropped.
const PRESENCE_EVENT_BUFFER: usize = 1024;

/// Default interval between two heartbeats; the server expires a device after 25 s.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// A presence notification from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceEvent {
    /// States of watched users: changes, or the periodic snapshot of all of them.
    Update(PresenceUpdate),
    /// Another member started or stopped typing in an open conversation.
    Typing(Typing),
}

/// Client state that outlives sessions: the event queue, the subscription to send again
/// after a reconnect, and the state its heartbeats announce.
pub(crate) struct PresenceInbox {
    tx: mpsc::Sender<PresenceEvent>,
    rx: Mutex<Option<mpsc::Receiver<PresenceEvent>>>,
    subscription: Mutex<Option<PresenceSubscribe>>,
    state: Mutex<PresenceState>,
    changed: Notify,
}

impl Default for PresenceInbox {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(PRESENCE_EVENT_BUFFER);
        PresenceInbox {
            tx,
            rx: Mutex::new(Some(rx)),
            subscription: Mutex::new(None),
            state: Mutex::new(PresenceState::Online),
            changed: Notify::new(),
        }
    }
}

impl PresenceInbox {
    /// Queues a presence frame from the server; returns the frame when it is not one.
    pub(crate) fn push(&self, frame: Frame) -> Option<Frame> {
        let event = match frame {
            Frame::PresenceUpdate(update) => PresenceEvent::Update(update),
            Frame::Typing(typing) => PresenceEvent::Typing(typing),
            other => return Some(other),
        };
        if self.tx.try_send(event).is_err() {
            // NOTE: the next snapshot repeats every state, so a full queue loses only
            // changes that the snapshot repairs.
            trace!("presence event dropped; queue full");
        }
        None
    }

    fn subscription(&self) -> Option<PresenceSubscribe> {
        self.subscription
            .lock()
            .expect("subscription mutex poisoned")
            .clone()
    }

    fn state(&self) -> PresenceState {
        *self.state.lock().expect("presence state mutex poisoned")
    }
}

/// Reads presence datagrams of a QUIC session until its connection closes.
pub(crate) async fn read_datagrams(connection: quinn::Connection, inbox: Arc<PresenceInbox>) {
    while let Ok(datagram) = connection.read_datagram().await {
        match codec::decode(&datagram) {
            Ok(frame) => {
                if let Some(other) = inbox.push(frame) {
                    debug!(kind = other.kind(), "unexpected frame in a datagram");
                }
            }
            Err(error) => debug!(%error, "undecodable datagram"),
        }
    }
}

impl Client {
    /// Takes the receiver of presence updates and typing indicators. Returns `None` after
    /// the first call.
    pub fn presence_events(&self) -> Option<mpsc::Receiver<PresenceEvent>> {
        let inbox = &self.shared.sink.presence;
        inbox.rx.lock().expect("presence receiver poisoned").take()
    }

    /// Subscribes to the presence of `users` and the typing indicators of
    /// `open_conversations`, replacing the previous subscription, and returns the current
    /// presence of every listed user. The client repeats the subscription on every new
    /// session.
    ///
    /// Fails with `NOT_MEMBER` when a listed user shares no conversation with this user
    /// or this user is not a member of a listed conversation.
    pub async fn watch_presence(
        &self,
        users: Vec<String>,
        open_conversations: Vec<u64>,
    ) -> Result<Vec<PresenceEntry>, ClientError> {
        let template = PresenceSubscribe {
            request_id: 0,
            users,
            open_conversations,
        };
        let reply = self
            .control_request("watch_presence", OnLoss::Retry, |request_id| {
                Frame::PresenceSubscribe(PresenceSubscribe {
                    request_id,
                    ..template.clone()
                })
            })
            .await?;
        match reply {
            Frame::PresenceUpdate(update) => {
                let inbox = &self.shared.sink.presence;
                *inbox.subscription.lock().expect("subscription poisoned") = Some(template);
                Ok(update.entries)
            }
            other => Err(unexpected_reply("PresenceUpdate", &other)),
        }
    }

    /// Sets whether other users receive this user's last seen time, and returns the
    /// stored setting.
    pub async fn set_hide_last_seen(&self, hide: bool) -> Result<bool, ClientError> {
        let reply = self
            .control_request("set_hide_last_seen", OnLoss::Retry, |request_id| {
                Frame::PresenceSettings(PresenceSettings {
                    request_id,
                    hide_last_seen: hide,
                })
            })
            .await?;
        match reply {
            Frame::PresenceSettings(settings) => Ok(settings.hide_last_seen),
            other => Err(unexpected_reply("PresenceSettings", &other)),
        }
    }

    /// Sets the state the heartbeats of [`Client::keep_present`] announce, and sends one
    /// heartbeat with it at once.
    pub fn set_presence(&self, state: PresenceState) {
        let inbox = &self.shared.sink.presence;
        *inbox.state.lock().expect("presence state poisoned") = state;
        inbox.changed.notify_one();
    }

    /// Starts typing (`active`) or stops it at once in `conversation_id`. Typing expires
    /// on the server 5 s after the last indicator, so a client that keeps typing repeats
    /// it every few seconds.
    pub async fn typing(&self, conversation_id: u64, active: bool) -> Result<(), ClientError> {
        let session = self.live_session("typing", self.deadline()).await?;
        let frame = Frame::Typing(Typing {
            conversation_id,
            user: String::new(),
            active,
        });
        send_presence(&session, &frame)
            .await
            .map_err(|_| ClientError::ConnectionLost {
                operation: "typing",
            })
    }

    /// Keeps this device present: sends a heartbeat every `interval` on whatever session
    /// is live, and repeats the subscription of [`Client::watch_presence`] on each new
    /// session. The task ends when the client is closed or dropped.
    pub fn keep_present(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.shared);
        tokio::spawn(run_heartbeats(weak, interval))
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.shared.config.request_timeout
    }
}

/// Sends heartbeats until the client goes away. Holds the client only weakly, so dropping
/// the last [`Client`] still closes the connection.
async fn run_heartbeats(weak: Weak<Shared>, interval: Duration) {
    let mut last_session: Option<Weak<Session>> = None;
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let client = Client { shared };
        let session = match client
            .live_session("heartbeat", Instant::now() + interval)
            .await
        {
            Ok(session) => session,
            Err(ClientError::Timeout { .. }) => continue,
            Err(error) => {
                debug!(%error, "heartbeats stopped");
                return;
            }
        };
        let inbox = Arc::clone(&client.shared.sink.presence);
        let is_new = last_session
            .as_ref()
            .and_then(Weak::upgrade)
            .is_none_or(|last| !Arc::ptr_eq(&last, &session));
        if is_new {
            last_session = Some(Arc::downgrade(&session));
            resubscribe(&session, &inbox).await;
        }

        let heartbeat = Frame::Heartbeat(Heartbeat {
            state: inbox.state(),
        });
        if let Err(error) = send_presence(&session, &heartbeat).await {
            debug!(%error, "heartbeat not sent");
        }
        drop(client);
        drop(session);
        let _ = tokio::time::timeout(interval, inbox.changed.notified()).await;
    }
}

/// Sends the kept subscription on a new session. A failure is logged: the next session
/// tries again.
async fn resubscribe(session: &Session, inbox: &PresenceInbox) {
    let Some(mut subscription) = inbox.subscription() else {
        return;
    };
    let request_id = session.next_request_id();
    subscription.request_id = request_id;
    match session
        .request(request_id, Frame::PresenceSubscribe(subscription))
        .await
    {
        Ok(Frame::PresenceUpdate(update)) => {
            let _ = inbox.push(Frame::PresenceUpdate(update));
        }
        Ok(other) => debug!(kind = other.kind(), "subscription not renewed"),
        Err(error) => debug!(%error, "subscription not renewed"),
    }
}

/// Sends a heartbeat or typing frame: a datagram on QUIC, a frame on a WebSocket.
async fn send_presence(session: &Session, frame: &Frame) -> Result<(), crate::error::StreamError> {
    match session.datagram_connection() {
        Some(connection) => {
            match connection.send_datagram(codec::encode(frame).into()) {
                Ok(()) => Ok(()),
                // A peer without datagrams still takes the frame on the control stream.
                Err(quinn::SendDatagramError::UnsupportedByPeer)
                | Err(quinn::SendDatagramError::Disabled) => session.write_frame(frame).await,
                Err(error) => {
                    debug!(%error, "presence datagram not sent");
                    Ok(())
                }
            }
        }
        None => session.write_frame(frame).await,
    }
}
