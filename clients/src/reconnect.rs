//! The reconnect supervisor: watches the live session and, when its connection ends,
//! connects again with exponential backoff and full jitter.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings_schema::CloseCode;
use tidings_schema::frame::Welcome;
use tidings_schema::mesh::edge_order;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::backoff::jitter_sample;
use crate::config::ClientConfig;
use crate::connect::connect;
use crate::deliveries::DeliverySink;
use crate::error::ConnectError;
use crate::session::Session;
use crate::stats::TransportStats;

/// Maximum wait for the close of the connection to be sent when the client closes.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_millis(100);

/// Connection state that requests wait on.
#[derive(Clone)]
pub(crate) enum State {
    /// Between connections: requests wait for the next state.
    Connecting,
    Ready(Arc<Session>),
    /// The supervisor gave up; requests fail with this error.
    Failed(Arc<ConnectError>),
    /// The application closed the client.
    Closed,
}

/// Settings and channels of the reconnect supervisor.
pub(crate) struct Supervisor {
    pub config: ClientConfig,
    pub quic: quinn::ClientConfig,
    pub sink: DeliverySink,
    pub state: watch::Sender<State>,
    pub welcome: Arc<Mutex<Welcome>>,
    pub shutdown: watch::Receiver<bool>,
    /// Statistics of ended sessions, shared with [`crate::Client::transport_stats`].
    pub stats: Arc<Mutex<TransportStats>>,
}

impl Supervisor {
    /// Runs until the client is closed or reconnecting fails for good.
    pub async fn run(mut self, first: Arc<Session>) {
        let mut session = first;
        loop {
            tokio::select! {
                reason = session.closed() => {
                    info!(%reason, transport = %session.transport(), "connection lost; reconnecting");
                }
                _ = self.shutdown.changed() => {
                    session.close(CloseCode::Normal, "client closed").await;
                    // Gives the connection a moment to send the close, so the server does not
                    // wait for its idle timeout when the process exits right after.
                    let drained = session.flush_close();
                    drop(tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, drained).await);
                    self.end_session(&session, State::Closed);
                    return;
                }
            }
            self.end_session(&session, State::Connecting);

            match self.reconnect(&session).await {
                Ok(next) => {
                    *self.welcome.lock().expect("welcome mutex poisoned") = next.welcome.clone();
                    let mut stats = self.stats.lock().expect("stats mutex poisoned");
                    stats.sessions += 1;
                    self.state.send_replace(State::Ready(next.clone()));
                    drop(stats);
                    session = next;
                }
                Err(Some(error)) => {
                    warn!(%error, "giving up reconnecting");
                    self.state.send_replace(State::Failed(Arc::new(error)));
                    return;
                }
                Err(None) => {
                    self.state.send_replace(State::Closed);
                    return;
                }
            }
        }
    }

    /// Moves the statistics of `session` into the totals and leaves the `Ready` state.
    fn end_session(&self, session: &Session, next: State) {
        let mut stats = self.stats.lock().expect("stats mutex poisoned");
        stats.add_session(&session.stats());
        self.state.send_replace(next);
    }

    /// Connects again after `lost` ended. Returns `Err(None)` when the client was
    /// closed meanwhile, `Err(Some(_))` when the error is permanent or attempts ran out.
    async fn reconnect(&mut self, lost: &Session) -> Result<Arc<Session>, Option<ConnectError>> {
        if let Some(error) = permanent_close(lost) {
            return Err(Some(error));
        }
        let close = lost.close_frame();
        let mut retry_after_ms = close.as_ref().map_or(0, |close| close.retry_after_ms);
        let redirect = close
            .map(|close| close.redirect)
            .filter(|redirect| !redirect.is_empty());
        let targets = reconnect_targets(
            redirect,
            &lost.welcome.user_id,
            &lost.welcome.edges,
            &self.config.server,
        );
        let mut target = targets[0].clone();

        let backoff = self.config.reconnect_backoff;
        let mut last_error = None;
        for attempt in 0..self.config.max_reconnect_attempts {
            let delay = backoff.delay_after(retry_after_ms, attempt, jitter_sample());
            retry_after_ms = 0;
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.shutdown.changed() => return Err(None),
            }

            // NOTE: each transport attempt is bounded by connect_timeout inside connect.
            let attempt_result = connect(&self.config, &self.quic, &target, lost.transport()).await;
            let error = match attempt_result {
                Ok(connected) => {
                    let session = Session::start(connected, self.sink.clone());
                    info!(server = %target, attempt, transport = %session.transport(), "reconnected");
                    let sink = self.sink.clone();
                    tokio::spawn(sink.resync(session.clone()));
                    return Ok(session);
                }
                Err(error) => error,
            };
            if !error.is_transient() {
                return Err(Some(error));
            }
            warn!(server = %target, attempt, %error, "reconnect attempt failed");
            // The next attempt goes to the next edge in the fixed order, wrapping around.
            target = targets[(attempt as usize + 1) % targets.len()].clone();
            last_error = Some(error);
        }
        Err(Some(last_error.unwrap_or_else(|| ConnectError::Connect {
            server: target,
            reason: "max_reconnect_attempts is 0, so no reconnect was attempted".to_owned(),
        })))
    }
}

/// Returns the edges to try after a lost session, in order: the `Close` frame's redirect,
/// then the edges from `Welcome` in the order `edge_order` gives this user (so every
/// device of a user meets on the same edge, and an edge that fails moves only its own
/// users), then the configured server. Never empty, and without repeats.
fn reconnect_targets(
    redirect: Option<String>,
    user_id: &str,
    edges: &[String],
    configured: &str,
) -> Vec<String> {
    let preferred = edge_order(user_id, edges)
        .into_iter()
        .map(|index| edges[index].clone());
    let mut targets: Vec<String> = Vec::new();
    for target in redirect
        .into_iter()
        .chain(preferred)
        .chain([configured.to_owned()])
    {
        if !target.is_empty() && !targets.contains(&target) {
            targets.push(target);
        }
    }
    targets
}

/// Returns an error when the server closed the session for a reason a reconnect with
/// the same token cannot fix, or one that asks the client not to come back.
fn permanent_close(lost: &Session) -> Option<ConnectError> {
    let code = lost.close_code()?;
    // The server's own reason (say, why an operator kicked the user) beats the generic one.
    let reason = lost
        .close_frame()
        .map(|close| close.message)
        .filter(|message| !message.is_empty())
        .unwrap_or_else(|| code.meaning().to_owned());
    code.is_final()
        .then_some(ConnectError::Closed { code, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|item| (*item).to_owned()).collect()
    }

    #[test]
    fn targets_follow_redirect_then_edge_order() {
        let edges = strings(&["127.0.0.1:4001", "127.0.0.1:4002", "127.0.0.1:4003"]);
        let targets = reconnect_targets(
            Some("127.0.0.1:4009".to_owned()),
            "alice",
            &edges,
            "127.0.0.1:4002",
        );
        let ordered: Vec<String> = edge_order("alice", &edges)
            .into_iter()
            .map(|index| edges[index].clone())
            .collect();
        assert_eq!(targets[0], "127.0.0.1:4009");
        assert_eq!(targets[1..], ordered[..]);
        assert_eq!(targets.len(), 4, "the configured server is already an edge");
    }

    #[test]
    fn targets_fall_back_to_configured_server() {
        let targets = reconnect_targets(None, "bob", &[], "127.0.0.1:4433");
        assert_eq!(targets, strings(&["127.0.0.1:4433"]));
    }
}
