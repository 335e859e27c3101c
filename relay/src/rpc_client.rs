//! The edge side of the mesh: a reconnecting connection to one remote owner.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use capnp::capability::Rc;
use capnp_rpc::RpcSystem;
use capnp_rpc::rpc_twoparty_capnp::Side;
use rand::Rng;
use tidings_schema::frame::ConversationInfo;
use tidings_schema::generated::mesh_capnp::{edge_sink, owner, owner_v1};
use tidings_schema::mesh::{
    Delivery, InboxUpdate, LogPosition, OwnerReply, OwnerRequest, Registration,
};
use tidings_schema::mesh_codec::{
    MESH_PROTOCOL_VERSION, read_call_result, read_deliveries, read_log_positions,
    write_inbox_updates, write_log_positions, write_owner_request, write_registration,
};
use tidings_schema::{ErrorCode, Rejection};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::edge_positions::EdgePositions;
use crate::mesh_tls::{self, MeshTls};
use crate::rpc::{spawn_rpc_thread, vat_network};

/// The users an edge serves, read whenever a full registration is sent to an owner.
pub trait UserSource: Send + Sync + 'static {
    /// Returns every user with at least one session on the edge.
    fn users(&self) -> Vec<String>;
}

/// Settings of a [`RemoteOwner`].
#[derive(Debug, Clone)]
pub struct RemoteOwnerConfig {
    /// How long a call may wait for its reply before it fails with `OwnerUnavailable`.
    pub call_timeout: Duration,
    /// How long one connection attempt, including the `open` and `attachEdge` calls, may take.
    pub connect_timeout: Duration,
    /// Maximum number of calls in flight. Further calls fail at once with `Overloaded`.
    pub max_calls_in_flight: usize,
    /// First reconnect delay before jitter. It doubles after each failed attempt.
    pub backoff_base: Duration,
    /// Maximum reconnect delay before jitter.
    pub backoff_max: Duration,
    /// Capacity of the delivery queue returned by [`RemoteOwner::attach_edge`]. When it
    /// is full the edge stops acknowledging `deliver` calls, which slows the owner down.
    pub delivery_queue: usize,
    /// Whether the connection attaches for fan-out. Edges do; an owner calling another
    /// owner for inbox rows does not.
    pub fan_out: bool,
    /// Mutual TLS settings; `None` runs the mesh over plain TCP.
    pub tls: Option<MeshTls>,
    /// Node id of the owner, which its mesh certificate must name. Required with `tls`.
    pub server_name: Option<String>,
}

impl Default for RemoteOwnerConfig {
    fn default() -> Self {
        RemoteOwnerConfig {
            call_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            max_calls_in_flight: 4096,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            delivery_queue: 4096,
            fan_out: true,
            tls: None,
            server_name: None,
        }
    }
}

/// Minimum `retry_after_ms` in a rejection sent while the owner is unreachable.
const MIN_RETRY_AFTER_MS: u32 = 50;

/// Minimum time between two attaches on one connection.
const MIN_REATTACH_INTERVAL: Duration = Duration::from_secs(1);

/// `retry_after_ms` for a call rejected because too many are in flight.
const OVERLOADED_RETRY_AFTER_MS: u32 = 100;

/// State of the connection, published by the RPC thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Connected,
    /// Not connected. The next attempt starts in about this many milliseconds.
    Down {
        retry_after_ms: u32,
    },
}

/// A request that the RPC thread sends to the owner.
enum MeshCall {
    Owner(OwnerRequest),
    UpdateInbox(Vec<InboxUpdate>),
    ConversationsById { user: String, ids: Vec<u64> },
}

/// One call waiting to be sent by the RPC thread. The permit counts it as in flight
/// until the reply arrives or the call fails.
struct PendingCall {
    call: MeshCall,
    reply: oneshot::Sender<Result<OwnerReply, Rejection>>,
    _permit: OwnedSemaphorePermit,
}

/// Work for the RPC thread, in the order the handle queued it.
enum Outgoing {
    Call(PendingCall),
    /// A registration change or renewal. Dropped while the link is down, because the
    /// next connection sends the whole set.
    Register(Registration),
}

/// The source of full registrations and the lease they request.
#[derive(Clone)]
struct RegistrationSource {
    users: Arc<dyn UserSource>,
    lease_ms: u32,
}

type SourceSlot = Arc<Mutex<Option<RegistrationSource>>>;

/// The sending half of the queue that [`RemoteOwner::attach_edge`] returned last.
type DeliverySlot = Arc<Mutex<mpsc::Sender<Arc<Delivery>>>>;

/// A connection to an owner in another process, over Cap'n Proto RPC on TCP.
///
/// The connection runs on its own thread, connects in the background and reconnects
/// with exponential backoff and full jitter. Every (re)connect registers this edge for
/// fan-out, so the receiver from [`RemoteOwner::attach_edge`] keeps receiving across
/// reconnects. Each attach carries the delivery log positions this edge received, and the
/// owner replays the messages after them. So fan-out cut short by an owner crash or a
/// closed queue is completed. Duplicates are possible, and devices drop them by seq.
#[derive(Clone)]
pub struct RemoteOwner {
    shared: Arc<Shared>,
}

struct Shared {
    addr: SocketAddr,
    edge_id: String,
    config: RemoteOwnerConfig,
    calls: mpsc::UnboundedSender<Outgoing>,
    permits: Arc<Semaphore>,
    link: watch::Receiver<Link>,
    deliveries: DeliverySlot,
    unclaimed: Mutex<Option<mpsc::Receiver<Arc<Delivery>>>>,
    attach_requested: Arc<Notify>,
    source: SourceSlot,
    positions: Arc<EdgePositions>,
}

impl RemoteOwner {
    /// Starts connecting to the owner at `addr` as edge `edge_id`, with default settings.
    ///
    /// Returns at once, and calls fail fast with `OwnerUnavailable` until the connection
    /// is up. Fails only when the RPC thread cannot be started.
    pub fn connect(addr: SocketAddr, edge_id: String) -> io::Result<RemoteOwner> {
        RemoteOwner::connect_with(addr, edge_id, RemoteOwnerConfig::default())
    }

    /// Starts connecting to the owner at `addr` with the given settings.
    pub fn connect_with(
        addr: SocketAddr,
        edge_id: String,
        config: RemoteOwnerConfig,
    ) -> io::Result<RemoteOwner> {
        let (calls_tx, calls_rx) = mpsc::unbounded_channel();
        let (link_tx, link_rx) = watch::channel(Link::Down {
            retry_after_ms: MIN_RETRY_AFTER_MS,
        });
        let (deliveries_tx, deliveries_rx) = mpsc::channel(config.delivery_queue.max(1));
        let deliveries: DeliverySlot = Arc::new(Mutex::new(deliveries_tx));
        let attach_requested = Arc::new(Notify::new());
        let source: SourceSlot = Arc::new(Mutex::new(None));
        let positions = Arc::new(EdgePositions::default());
        if config.tls.is_some() {
            let name = config.server_name.as_deref().unwrap_or_default();
            mesh_tls::server_name(name).map_err(io::Error::other)?;
        }

        let connector = Connector {
            addr,
            edge_id: edge_id.clone(),
            config: config.clone(),
            link: link_tx,
            deliveries: deliveries.clone(),
            attach_requested: attach_requested.clone(),
            source: source.clone(),
            positions: positions.clone(),
        };
        spawn_rpc_thread("tidings-mesh-edge", move || connector.run(calls_rx))?;

        Ok(RemoteOwner {
            shared: Arc::new(Shared {
                addr,
                edge_id,
                permits: Arc::new(Semaphore::new(config.max_calls_in_flight)),
                config,
                calls: calls_tx,
                link: link_rx,
                deliveries,
                unclaimed: Mutex::new(Some(deliveries_rx)),
                attach_requested,
                source,
                positions,
            }),
        })
    }

    /// Returns the owner's mesh address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Returns the last delivery log position this edge received from each of the owner's
    /// storage files. Every attach sends them, so the owner replays what the edge missed.
    pub fn delivery_positions(&self) -> Vec<LogPosition> {
        self.shared.positions.snapshot()
    }

    /// Returns whether the connection to the owner is up right now.
    pub fn is_connected(&self) -> bool {
        *self.shared.link.borrow() == Link::Connected
    }

    /// Number of calls sent or queued that have not completed yet.
    pub fn calls_in_flight(&self) -> usize {
        let shared = &self.shared;
        shared.config.max_calls_in_flight - shared.permits.available_permits()
    }

    /// Waits until the connection is up, which may be never. Callers bound it with a
    /// timeout. Cancel safe.
    pub async fn wait_connected(&self) {
        let mut link = self.shared.link.clone();
        // The sender lives as long as the RPC thread, which lives as long as `self`.
        let _ = link.wait_for(|link| *link == Link::Connected).await;
    }

    /// Carries out one request on the remote owner.
    ///
    /// Fails fast with a retryable `OwnerUnavailable` while the connection is down, with
    /// `Overloaded` when too many calls are in flight, and with `OwnerUnavailable` when no
    /// reply arrives within the call timeout. Cancel safety: dropping the future does not
    /// cancel the call on the owner, which may still commit it.
    pub async fn call(&self, request: OwnerRequest) -> Result<OwnerReply, Rejection> {
        self.send_call(MeshCall::Owner(request)).await
    }

    /// Applies inbox changes on the remote owner; owner-to-owner. Fails as
    /// [`RemoteOwner::call`] does.
    pub async fn update_inbox(&self, updates: Vec<InboxUpdate>) -> Result<(), Rejection> {
        self.send_call(MeshCall::UpdateInbox(updates))
            .await
            .map(drop)
    }

    /// Reads rows of conversations held by the remote owner that `user` is a member of;
    /// owner-to-owner. Fails as [`RemoteOwner::call`] does.
    pub async fn conversations_by_id(
        &self,
        user: String,
        ids: Vec<u64>,
    ) -> Result<Vec<ConversationInfo>, Rejection> {
        match self
            .send_call(MeshCall::ConversationsById { user, ids })
            .await?
        {
            OwnerReply::Conversations(list) => Ok(list),
            other => Err(Rejection::internal(format!(
                "owner at {} answered conversationsById with {other:?}",
                self.shared.addr
            ))),
        }
    }

    /// Sets the users this edge serves and sends them to the owner as a full registration,
    /// now and after every reconnect. Each registration requests a lease of `lease`.
    pub fn register_users(&self, users: Arc<dyn UserSource>, lease: Duration) {
        let lease_ms = u32::try_from(lease.as_millis()).unwrap_or(u32::MAX);
        *self
            .shared
            .source
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(RegistrationSource { users, lease_ms });
        // Attaching again sends the full set, in order with the changes queued after it.
        self.shared.attach_requested.notify_one();
    }

    /// Sends a change to the registered users, or a renewal when both lists are empty.
    /// Dropped while the connection is down, because the next connection sends the full set.
    pub fn update_registration(&self, added: Vec<String>, removed: Vec<String>, lease: Duration) {
        let registration = Registration {
            edge_id: self.shared.edge_id.clone(),
            replace: false,
            added,
            removed,
            lease_ms: u32::try_from(lease.as_millis()).unwrap_or(u32::MAX),
        };
        let _ = self.shared.calls.send(Outgoing::Register(registration));
    }

    async fn send_call(&self, call: MeshCall) -> Result<OwnerReply, Rejection> {
        let shared = &self.shared;
        if let Link::Down { retry_after_ms } = *shared.link.borrow() {
            return Err(unavailable(shared.addr, "is not connected", retry_after_ms));
        }
        let permit = shared.permits.clone().try_acquire_owned().map_err(|_| {
            Rejection::retry(
                ErrorCode::Overloaded,
                format!(
                    "{} calls to the owner at {} are already in flight",
                    shared.config.max_calls_in_flight, shared.addr
                ),
                OVERLOADED_RETRY_AFTER_MS,
            )
        })?;

        let (reply_tx, reply_rx) = oneshot::channel();
        let pending = PendingCall {
            call,
            reply: reply_tx,
            _permit: permit,
        };
        if shared.calls.send(Outgoing::Call(pending)).is_err() {
            return Err(unavailable(
                shared.addr,
                "RPC thread has stopped",
                MIN_RETRY_AFTER_MS,
            ));
        }

        // The RPC thread enforces the call timeout. This wait is a backstop in case the
        // thread itself stalls.
        let backstop = shared.config.call_timeout + Duration::from_secs(1);
        match tokio::time::timeout(backstop, reply_rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(unavailable(
                shared.addr,
                "dropped the call",
                MIN_RETRY_AFTER_MS,
            )),
            Err(_) => Err(unavailable(
                shared.addr,
                "did not reply in time",
                MIN_RETRY_AFTER_MS,
            )),
        }
    }

    /// Returns the deliveries the owner fans out to this edge.
    ///
    /// The first call returns the queue that has been filling since [`RemoteOwner::connect`].
    /// A later call replaces it with a new one and closes the previous one. `edge_id` should be the id given to `connect`, which is the one the owner
    /// registers.
    pub fn attach_edge(&self, edge_id: &str) -> mpsc::Receiver<Arc<Delivery>> {
        let shared = &self.shared;
        if edge_id != shared.edge_id {
            warn!(
                edge_id,
                registered = shared.edge_id,
                "attach_edge names another edge than the connection registers; using the \
                 registered id"
            );
        }
        let unclaimed = shared
            .unclaimed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(receiver) = unclaimed {
            return receiver;
        }
        let (sender, receiver) = mpsc::channel(shared.config.delivery_queue.max(1));
        *shared
            .deliveries
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = sender;
        // The owner may have stopped forwarding when the previous receiver was dropped,
        // so attach again to be sure deliveries flow into the new queue.
        shared.attach_requested.notify_one();
        receiver
    }
}

fn unavailable(addr: SocketAddr, what: &str, retry_after_ms: u32) -> Rejection {
    Rejection::retry(
        ErrorCode::OwnerUnavailable,
        format!("owner at {addr} {what}; retry after {retry_after_ms} ms"),
        retry_after_ms.max(1),
    )
}

/// Maps a failed RPC to the rejection returned to the caller. A call that failed in transit may
/// or may not have been carried out, so it is retryable like any unreachable owner.
fn transport_rejection(addr: SocketAddr, error: &capnp::Error) -> Rejection {
    match error.kind {
        capnp::ErrorKind::Disconnected | capnp::ErrorKind::Overloaded => Rejection::retry(
            ErrorCode::OwnerUnavailable,
            format!("call to the owner at {addr} failed in transit: {error}"),
            MIN_RETRY_AFTER_MS,
        ),
        _ => Rejection::internal(format!("call to the owner at {addr} failed: {error}")),
    }
}

/// Exponential backoff with full jitter: each delay is uniform in `[0, min(max, base * 2^n)]`.
struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=ceiling_ms))
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Reason a served connection ended.
enum Ended {
    /// The connection broke, so reconnect.
    Lost,
    /// Every [`RemoteOwner`] clone is gone, so stop the thread.
    Dropped,
}

/// Runs on the RPC thread: connects, serves calls, reconnects.
struct Connector {
    addr: SocketAddr,
    edge_id: String,
    config: RemoteOwnerConfig,
    link: watch::Sender<Link>,
    deliveries: DeliverySlot,
    attach_requested: Arc<Notify>,
    source: SourceSlot,
    positions: Arc<EdgePositions>,
}

impl Connector {
    async fn run(self, mut calls: mpsc::UnboundedReceiver<Outgoing>) {
        let mut backoff = Backoff {
            base: self.config.backoff_base,
            max: self.config.backoff_max,
            attempt: 0,
        };
        let mut failures: u64 = 0;
        loop {
            match self.open_session().await {
                Ok(session) => {
                    info!(addr = %self.addr, edge_id = self.edge_id, "connected to owner");
                    backoff.reset();
                    failures = 0;
                    self.link.send_replace(Link::Connected);
                    let ended = self.serve(session, &mut calls).await;
                    if let Ended::Dropped = ended {
                        return;
                    }
                    warn!(addr = %self.addr, "connection to owner lost, reconnecting");
                }
                Err(error) => {
                    failures += 1;
                    // The first failure and then every 64th are worth an operator's look.
                    if failures == 1 || failures.is_multiple_of(64) {
                        warn!(addr = %self.addr, %error, failures, "failed to connect to owner");
                    } else {
                        debug!(addr = %self.addr, %error, failures, "failed to connect to owner");
                    }
                }
            }

            let delay = backoff.next_delay();
            let retry_after_ms = u32::try_from(delay.as_millis())
                .unwrap_or(u32::MAX)
                .max(MIN_RETRY_AFTER_MS);
            self.link.send_replace(Link::Down { retry_after_ms });
            if let Ended::Dropped = self.reject_until(delay, &mut calls, retry_after_ms).await {
                return;
            }
        }
    }

    /// Rejects calls that were queued while the link went down, until `delay` passes.
    async fn reject_until(
        &self,
        delay: Duration,
        calls: &mut mpsc::UnboundedReceiver<Outgoing>,
        retry_after_ms: u32,
    ) -> Ended {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return Ended::Lost,
                call = calls.recv() => match call {
                    Some(Outgoing::Call(call)) => {
                        let rejection = unavailable(self.addr, "is not connected", retry_after_ms);
                        let _ = call.reply.send(Err(rejection));
                    }
                    Some(Outgoing::Register(_)) => {}
                    None => return Ended::Dropped,
                },
            }
        }
    }

    /// Connects, opens the version 1 interface and registers this edge's sink.
    async fn open_session(&self) -> Result<Session, capnp::Error> {
        let timeout = self.config.connect_timeout;
        let opened = tokio::time::timeout(timeout, self.open_session_inner()).await;
        opened.unwrap_or_else(|_| {
            Err(capnp::Error::failed(format!(
                "connecting took longer than {timeout:?}"
            )))
        })
    }

    async fn open_session_inner(&self) -> Result<Session, capnp::Error> {
        let stream = TcpStream::connect(self.addr).await?;
        stream.set_nodelay(true)?;
        let network = match &self.config.tls {
            None => {
                Box::new(vat_network(stream, Side::Client)) as Box<dyn capnp_rpc::VatNetwork<Side>>
            }
            Some(tls) => {
                let name = self.config.server_name.as_deref().unwrap_or_default();
                let name = mesh_tls::server_name(name)
                    .map_err(|error| capnp::Error::failed(error.to_string()))?;
                let stream = tls
                    .connector()
                    .connect(name, stream)
                    .await
                    .map_err(|error| {
                        capnp::Error::failed(format!("mesh TLS handshake failed: {error}"))
                    })?;
                Box::new(vat_network(stream, Side::Client))
            }
        };
        let mut rpc = RpcSystem::new(network, None);
        let addr = self.addr;
        // capnp-rpc prints background errors to stdout unless given a handler.
        rpc.set_background_error_handler(move |error| {
            debug!(%addr, %error, "background error on owner connection");
        });
        let bootstrap: owner::Client = rpc.bootstrap(Side::Server);
        // The guard closes the connection if a later step fails or times out.
        let rpc_task = AbortOnDrop(tokio::task::spawn_local(rpc));

        let mut open = bootstrap.open_request();
        open.get().set_version(MESH_PROTOCOL_VERSION);
        let owner = open.send().promise.await?.get()?.get_owner()?;

        let (reattach_tx, reattach) = mpsc::unbounded_channel();
        let attacher = Attacher {
            owner: owner.clone(),
            edge_id: self.edge_id.clone(),
            deliveries: self.deliveries.clone(),
            reattach: reattach_tx,
            generation: Rc::new(Cell::new(0)),
            source: self.source.clone(),
            positions: self.positions.clone(),
        };
        if self.config.fan_out {
            attacher.attach().await?;
        }

        Ok(Session {
            owner,
            rpc_task,
            attacher,
            reattach,
        })
    }

    /// Attaches this edge again on the session's connection, in the background.
    fn attach_again(&self, session: &Session, last_attach: &mut Instant) {
        if !self.config.fan_out {
            return;
        }
        // NOTE: two edges configured with one id would take the subscription from each
        // other forever, so attaches on one connection are spaced at least this far.
        let earliest = *last_attach + MIN_REATTACH_INTERVAL;
        *last_attach = earliest.max(Instant::now());
        let attacher = session.attacher.clone();
        let addr = self.addr;
        tokio::task::spawn_local(async move {
            tokio::time::sleep_until(earliest.into()).await;
            match attacher.attach().await {
                Ok(()) => info!(%addr, "attached to owner again"),
                Err(error) => warn!(%addr, %error, "failed to attach to owner again"),
            }
        });
    }

    /// Sends calls over one connection until it breaks or the handle is dropped.
    async fn serve(
        &self,
        mut session: Session,
        calls: &mut mpsc::UnboundedReceiver<Outgoing>,
    ) -> Ended {
        let mut last_attach = Instant::now();
        loop {
            tokio::select! {
                _ = &mut session.rpc_task.0 => return Ended::Lost,
                Some(()) = session.reattach.recv() => {
                    self.attach_again(&session, &mut last_attach);
                }
                _ = self.attach_requested.notified() => {
                    self.attach_again(&session, &mut last_attach);
                }
                call = calls.recv() => match call {
                    Some(Outgoing::Call(call)) => {
                        let owner = session.owner.clone();
                        let timeout = self.config.call_timeout;
                        tokio::task::spawn_local(send_call(owner, call, self.addr, timeout));
                    }
                    Some(Outgoing::Register(registration)) => {
                        tokio::task::spawn_local(send_registration(
                            session.owner.clone(),
                            registration,
                            self.addr,
                        ));
                    }
                    None => return Ended::Dropped,
                },
            }
        }
    }
}

struct Session {
    owner: owner_v1::Client,
    /// The task running the connection's RPC system. Dropping the session closes the
    /// connection.
    rpc_task: AbortOnDrop,
    attacher: Attacher,
    /// Receives a message when the owner detaches this edge's sink.
    reattach: mpsc::UnboundedReceiver<()>,
}

/// A task handle that aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), capnp::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Registers this edge's sink with the owner on one connection.
#[derive(Clone)]
struct Attacher {
    owner: owner_v1::Client,
    edge_id: String,
    deliveries: DeliverySlot,
    reattach: mpsc::UnboundedSender<()>,
    /// Generation of the latest sink, so that a detach of a replaced sink is ignored.
    generation: Rc<Cell<u64>>,
    source: SourceSlot,
    positions: Arc<EdgePositions>,
}

impl Attacher {
    async fn attach(&self) -> Result<(), capnp::Error> {
        let generation = self.generation.get() + 1;
        self.generation.set(generation);
        let sink: edge_sink::Client = capnp_rpc::new_client(EdgeSink {
            deliveries: self.deliveries.clone(),
            order: tokio::sync::Mutex::new(()),
            reattach: self.reattach.clone(),
            generation,
            latest: self.generation.clone(),
            positions: self.positions.clone(),
        });
        let mut attach = self.owner.attach_edge_request();
        attach.get().set_edge_id(self.edge_id.as_str());
        attach.get().set_sink(sink);
        let positions = self.positions.snapshot();
        write_log_positions(
            attach.get().init_positions(positions.len() as u32),
            &positions,
        );
        let attached = attach.send().promise;

        // NOTE: the set is read and its request queued in one step with no await in
        // between, so every registration change queued later reaches the owner after it.
        let source = self
            .source
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let registered = source.map(|source| {
            let registration = Registration {
                edge_id: self.edge_id.clone(),
                replace: true,
                added: source.users.users(),
                removed: Vec::new(),
                lease_ms: source.lease_ms,
            };
            let mut request = self.owner.register_users_request();
            write_registration(request.get(), &registration);
            request.send().promise
        });

        let attached = attached.await?;
        let attached = attached.get()?;
        let start = read_log_positions(attached.get_start()?);
        let lost: Vec<u16> = attached.get_lost()?.iter().collect();
        if !lost.is_empty() {
            warn!(
                edge_id = self.edge_id,
                files = ?lost,
                "owner lost this edge's delivery positions (store replaced or log trimmed); \
                 messages missed meanwhile reach devices only when they reconnect"
            );
        }
        self.positions.adopt_start(&start, &lost);
        if let Some(registered) = registered {
            registered.await?;
        }
        Ok(())
    }
}

/// Sends one registration change; a failure is logged, because the next connection
/// sends the full set again.
async fn send_registration(owner: owner_v1::Client, registration: Registration, addr: SocketAddr) {
    let mut request = owner.register_users_request();
    write_registration(request.get(), &registration);
    if let Err(error) = request.send().promise.await {
        debug!(%addr, %error, "failed to send a registration change to the owner");
    }
}

/// The reason a call got no usable reply.
enum CallFailure {
    Transport(capnp::Error),
    Malformed(capnp::Error),
}

/// Sends one call and passes its outcome to the caller.
async fn send_call(
    owner: owner_v1::Client,
    call: PendingCall,
    addr: SocketAddr,
    timeout: Duration,
) {
    let response = match &call.call {
        MeshCall::Owner(owner_request) => {
            let mut request = owner.call_request();
            write_owner_request(request.get().init_request(), owner_request);
            let promise = request.send().promise;
            tokio::time::timeout(timeout, async move {
                let response = promise.await.map_err(CallFailure::Transport)?;
                let result = response
                    .get()
                    .and_then(|r| read_call_result(r.get_result()?));
                result.map_err(CallFailure::Malformed)
            })
            .await
        }
        MeshCall::UpdateInbox(updates) => {
            let mut request = owner.update_inbox_request();
            let list = request.get().init_updates(updates.len() as u32);
            write_inbox_updates(list, updates);
            let promise = request.send().promise;
            tokio::time::timeout(timeout, async move {
                let response = promise.await.map_err(CallFailure::Transport)?;
                let result = response
                    .get()
                    .and_then(|r| read_call_result(r.get_result()?));
                result.map_err(CallFailure::Malformed)
            })
            .await
        }
        MeshCall::ConversationsById { user, ids } => {
            let mut request = owner.conversations_by_id_request();
            request.get().set_user(user.as_str());
            let mut list = request.get().init_ids(ids.len() as u32);
            for (index, id) in ids.iter().enumerate() {
                list.set(index as u32, *id);
            }
            let promise = request.send().promise;
            tokio::time::timeout(timeout, async move {
                let response = promise.await.map_err(CallFailure::Transport)?;
                let result = response
                    .get()
                    .and_then(|r| read_call_result(r.get_result()?));
                result.map_err(CallFailure::Malformed)
            })
            .await
        }
    };

    let outcome = match response {
        Err(_) => Err(Rejection::retry(
            ErrorCode::OwnerUnavailable,
            format!("owner at {addr} did not reply within {timeout:?}"),
            MIN_RETRY_AFTER_MS,
        )),
        Ok(Err(CallFailure::Transport(error))) => Err(transport_rejection(addr, &error)),
        Ok(Err(CallFailure::Malformed(error))) => Err(Rejection::internal(format!(
            "owner at {addr} sent a malformed reply: {error}"
        ))),
        Ok(Ok(outcome)) => outcome,
    };
    // The caller may have timed out already, and then the outcome is dropped.
    let _ = call.reply.send(outcome);
}

/// The capability the owner pushes this edge's deliveries to.
struct EdgeSink {
    deliveries: DeliverySlot,
    /// Serialises `deliver` calls so batches reach the queue in the order they were sent.
    ///
    /// NOTE: this relies on capnp-rpc starting calls to one object in arrival order and
    /// on tokio's mutex granting the lock first come, first served.
    order: tokio::sync::Mutex<()>,
    reattach: mpsc::UnboundedSender<()>,
    generation: u64,
    latest: Rc<Cell<u64>>,
    positions: Arc<EdgePositions>,
}

impl edge_sink::Server for EdgeSink {
    fn deliver(
        self: Rc<Self>,
        params: edge_sink::DeliverParams,
        _results: edge_sink::DeliverResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let batch = params
            .get()
            .and_then(|params| read_deliveries(params.get_batch()?));
        async move {
            let batch = batch?;
            let _turn = self.order.lock().await;
            let sender = self
                .deliveries
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            for delivery in batch {
                let position = delivery.position;
                // A full queue delays this reply, which slows the owner down.
                sender.send(Arc::new(delivery)).await.map_err(|_| {
                    capnp::Error::failed("the edge dropped its delivery receiver".to_string())
                })?;
                if let Some(position) = position {
                    self.positions.record(position);
                }
            }
            Ok(())
        }
    }

    fn detached(
        self: Rc<Self>,
        params: edge_sink::DetachedParams,
        _results: edge_sink::DetachedResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let reason = params
            .get()
            .and_then(|params| Ok(params.get_reason()?.to_str()?.to_owned()));
        async move {
            let reason = reason?;
            if self.generation != self.latest.get() {
                // A newer attach replaced this sink, which is why the owner closed it.
                debug!(reason, "owner detached a replaced sink");
                return Ok(());
            }
            info!(reason, "owner detached this edge, attaching again");
            // The session may have ended already, and then the next connection attaches.
            let _ = self.reattach.send(());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_its_ceiling() {
        let mut backoff = Backoff {
            base: Duration::from_millis(50),
            max: Duration::from_secs(2),
            attempt: 0,
        };
        for attempt in 0..40u32 {
            let ceiling =
                Duration::from_millis(50 * 2u64.pow(attempt.min(16))).min(Duration::from_secs(2));
            let delay = backoff.next_delay();
            assert!(
                delay <= ceiling,
                "attempt {attempt}: {delay:?} > {ceiling:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(50));
    }
}
