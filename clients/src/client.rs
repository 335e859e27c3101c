//! The [`Client`] handle: connecting, waiting for a live session and retrying a request
//! across rejections and reconnects.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tidings_schema::Rejection;
use tidings_schema::frame::{Message, Welcome};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::debug;

use crate::backoff::jitter_sample;
use crate::config::ClientConfig;
use crate::config::Transport;
use crate::connect::connect;
use crate::deliveries::DeliverySink;
use crate::error::{ClientError, ConnectError, StreamError};
use crate::reconnect::{State, Supervisor};
use crate::session::Session;
use crate::stats::TransportStats;
use crate::sync::{StartSync, SyncCursors};
use crate::transport::quic_config;

/// A connection to a Tidings edge that reconnects by itself.
///
/// Cloning is cheap and every clone shares the connection. The connection closes when
/// [`Client::close`] is called or the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub config: ClientConfig,
    state: watch::Receiver<State>,
    shutdown: watch::Sender<bool>,
    welcome: Arc<Mutex<Welcome>>,
    deliveries: Mutex<Option<mpsc::Receiver<Message>>>,
    pub sink: DeliverySink,
    /// Statistics of the sessions that ended, and the number of sessions started.
    stats: Arc<Mutex<TransportStats>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// Whether a request may be sent again after the connection was lost while it was in
/// flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnLoss {
    /// Repeating it is harmless: a read, or a send with its idempotency key.
    Retry,
    /// Repeating it could do it twice, so the caller learns the outcome is unknown.
    Fail,
}

impl Client {
    /// Connects to `config.server` over the transports `config.transport` allows and
    /// completes the handshake.
    ///
    /// The first connection is attempted once per transport, so a wrong address or token
    /// fails fast. After that the client reconnects by itself whenever the connection is
    /// lost, first over the transport that worked last.
    pub async fn connect(config: ClientConfig) -> Result<Client, ConnectError> {
        Client::connect_with(config, None).await
    }

    /// Connects as [`Client::connect`] does, then continues from `cursors` saved by an
    /// earlier run ([`Client::sync_cursors`]): every message after them, in every
    /// conversation that moved since, is queued on the delivery receiver before or
    /// between live ones, in seq order per conversation.
    pub async fn connect_resuming(
        config: ClientConfig,
        cursors: &SyncCursors,
    ) -> Result<Client, ConnectError> {
        Client::connect_with(config, Some(cursors)).await
    }

    async fn connect_with(
        config: ClientConfig,
        resume: Option<&SyncCursors>,
    ) -> Result<Client, ConnectError> {
        let quic = quic_config(&config)?;
        let connected = connect(&config, &quic, &config.server, Transport::Quic).await?;

        let (delivery_tx, delivery_rx) = mpsc::channel(config.delivery_buffer.max(1));
        let sink = DeliverySink::new(delivery_tx);
        let welcome = Arc::new(Mutex::new(connected.welcome().clone()));
        let user_id = &connected.welcome().user_id;
        debug!(server = %config.server, %user_id, "session started");
        // NOTE: cursors are restored before the session starts, so no live delivery can
        // pass a saved cursor before the backlog behind it is fetched.
        let mode = match resume {
            Some(cursors) => {
                sink.restore(cursors);
                StartSync::Resume
            }
            None => StartSync::Live,
        };
        let session = Session::start(connected, sink.clone());
        tokio::spawn(sink.clone().start(session.clone(), mode));

        let stats = Arc::new(Mutex::new(TransportStats {
            sessions: 1,
            ..TransportStats::default()
        }));
        let (state_tx, state_rx) = watch::channel(State::Ready(session.clone()));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let supervisor = Supervisor {
            config: config.clone(),
            quic,
            sink: sink.clone(),
            state: state_tx,
            welcome: welcome.clone(),
            shutdown: shutdown_rx,
            stats: stats.clone(),
        };
        tokio::spawn(supervisor.run(session));

        Ok(Client {
            shared: Arc::new(Shared {
                config,
                state: state_rx,
                shutdown: shutdown_tx,
                welcome,
                deliveries: Mutex::new(Some(delivery_rx)),
                sink,
                stats,
            }),
        })
    }

    /// Returns the `Welcome` of the latest session: user id, limits and edges.
    pub fn welcome(&self) -> Welcome {
        self.shared
            .welcome
            .lock()
            .expect("welcome mutex poisoned")
            .clone()
    }

    /// Returns the authenticated user id.
    pub fn user_id(&self) -> String {
        self.welcome().user_id
    }

    /// Returns the transport of the current session, [`Transport::Quic`] or
    /// [`Transport::WebSocket`], or `None` while the client is reconnecting or closed.
    pub fn transport(&self) -> Option<Transport> {
        match &*self.shared.state.borrow() {
            State::Ready(session) => Some(session.transport()),
            _ => None,
        }
    }

    /// Reports whether a session is live right now.
    pub fn is_connected(&self) -> bool {
        matches!(&*self.shared.state.borrow(), State::Ready(session) if session.is_open())
    }

    /// Takes the receiver of live deliveries. Returns `None` after the first call.
    ///
    /// Every delivery is acknowledged to the server once it is queued here. Messages
    /// already passed on are not queued again after a reconnect. When the queue is full
    /// the client stops reading delivery streams, which slows the server down.
    pub fn deliveries(&self) -> Option<mpsc::Receiver<Message>> {
        self.shared
            .deliveries
            .lock()
            .expect("delivery receiver mutex poisoned")
            .take()
    }

    /// Returns the transport statistics of every session so far, the live one included:
    /// QUIC packets sent and lost, congestion events and RTT from quinn, and for WebSocket
    /// sessions the retransmissions and RTT the kernel reports in `TCP_INFO`.
    ///
    /// Counters of a WebSocket session are read when it ends or when this is called, so
    /// call it before [`Client::close`] to include the last session.
    pub fn transport_stats(&self) -> TransportStats {
        // NOTE: the supervisor moves a session's statistics into the totals and changes
        // the state under this lock, so no session is counted twice or skipped.
        let totals = self.shared.stats.lock().expect("stats mutex poisoned");
        let mut stats = *totals;
        if let State::Ready(session) = &*self.shared.state.borrow() {
            stats.add_session(&session.stats());
        }
        stats
    }

    /// Returns the highest `seq` of `conversation_id` passed to the delivery receiver,
    /// 0 when none was.
    pub fn delivered_seq(&self, conversation_id: u64) -> u64 {
        self.shared.sink.cursor(conversation_id)
    }

    /// Closes the connection with the `Normal` close code. Calls made afterwards fail
    /// with [`ClientError::Closed`].
    pub async fn close(&self) {
        self.shared.shutdown.send_replace(true);
        let mut state = self.shared.state.clone();
        // The supervisor reacts within one scheduling round. The bound only guards
        // against a supervisor that already exited.
        let closed = state.wait_for(|state| !matches!(state, State::Ready(_) | State::Connecting));
        drop(tokio::time::timeout(std::time::Duration::from_secs(1), closed).await);
    }

    /// Waits until the client stops for good and returns why: reconnecting failed (after
    /// a `KICKED` or `TOKEN_EXPIRED` close, for example) or [`Client::close`] was called.
    pub async fn stopped(&self) -> ClientError {
        let mut state = self.shared.state.clone();
        loop {
            match &*state.borrow_and_update() {
                State::Failed(error) => return ClientError::Connect(error.clone()),
                State::Closed => return ClientError::Closed,
                State::Ready(_) | State::Connecting => {}
            }
            if state.changed().await.is_err() {
                return ClientError::Closed;
            }
        }
    }

    /// Waits until a live session exists, or `deadline`.
    pub(crate) async fn live_session(
        &self,
        operation: &'static str,
        deadline: Instant,
    ) -> Result<Arc<Session>, ClientError> {
        let mut state = self.shared.state.clone();
        loop {
            match &*state.borrow_and_update() {
                State::Ready(session) if session.is_open() => return Ok(session.clone()),
                State::Failed(error) => return Err(ClientError::Connect(error.clone())),
                State::Closed => return Err(ClientError::Closed),
                State::Ready(_) | State::Connecting => {}
            }
            match tokio::time::timeout_at(deadline, state.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ClientError::Closed),
                Err(_) => return Err(self.timeout(operation)),
            }
        }
    }

    fn timeout(&self, operation: &'static str) -> ClientError {
        ClientError::Timeout {
            operation,
            after: self.shared.config.request_timeout,
        }
    }

    /// Runs `attempt` on a live session until it succeeds, fails for good, runs out of
    /// attempts or reaches the request timeout.
    ///
    /// A retryable rejection waits its `retry_after_ms` plus jitter. A lost stream or
    /// connection waits for the next session when `on_loss` allows a repeat.
    pub(crate) async fn with_retries<T, F, Fut>(
        &self,
        operation: &'static str,
        on_loss: OnLoss,
        mut attempt: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(Arc<Session>) -> Fut,
        Fut: Future<Output = Result<Result<T, Rejection>, StreamError>>,
    {
        let config = &self.shared.config;
        let deadline = Instant::now() + config.request_timeout;
        let max_attempts = config.max_attempts.max(1);

        for number in 0..max_attempts {
            let session = self.live_session(operation, deadline).await?;
            let outcome = tokio::time::timeout_at(deadline, attempt(session))
                .await
                .map_err(|_| self.timeout(operation))?;
            let is_last = number + 1 == max_attempts;

            // Each retry keeps the error it retries, to return when no time is left.
            let (delay, error) = match outcome {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(rejection)) if rejection.code.is_retryable() && !is_last => {
                    debug!(operation, code = %rejection.code, attempt = number, "retrying");
                    let backoff = config.reconnect_backoff;
                    let delay =
                        backoff.delay_after(rejection.retry_after_ms, number, jitter_sample());
                    (delay, ClientError::Rejected(rejection))
                }
                Ok(Err(rejection)) => return Err(ClientError::Rejected(rejection)),
                Err(error) if on_loss == OnLoss::Retry && !is_last => {
                    debug!(operation, %error, attempt = number, "stream lost; retrying");
                    let delay = config.reconnect_backoff.delay(number, jitter_sample());
                    (delay, ClientError::ConnectionLost { operation })
                }
                Err(_) => return Err(ClientError::ConnectionLost { operation }),
            };
            if Instant::now() + delay >= deadline {
                return Err(error);
            }
            tokio::time::sleep(delay).await;
        }
        // NOTE: unreachable in practice because the last attempt returns inside the loop.
        Err(self.timeout(operation))
    }
}
