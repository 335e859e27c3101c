//! The owner side of the mesh: accepts edge connections and serves `mesh.capnp`'s `Owner`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use capnp::capability::Rc;
use capnp_rpc::RpcSystem;
use capnp_rpc::rpc_twoparty_capnp::Side;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tidings_schema::Rejection;
use tidings_schema::generated::mesh_capnp::{edge_sink, owner, owner_v1};
use tidings_schema::mesh::{Delivery, OwnerReply};
use tidings_schema::mesh_codec::{
    MESH_PROTOCOL_VERSION, read_inbox_updates, read_log_positions, read_owner_request,
    read_registration, write_call_result, write_deliveries, write_log_positions,
};
use tidings_store::Owner;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::mesh_tls::MeshTls;
use crate::rpc::{
    MAX_DELIVER_CALLS_IN_FLIGHT, MAX_DELIVERY_BATCH, OwnerService, spawn_rpc_thread, vat_network,
};

/// Time a peer has to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A running owner RPC server. Dropping it stops accepting and closes every connection.
/// [`OwnerServer::shutdown`] does the same and also waits until the listener is closed.
pub struct OwnerServer {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    accept_task: Option<tokio::task::JoinHandle<()>>,
    rpc_thread: Option<std::thread::JoinHandle<()>>,
}

impl OwnerServer {
    /// Returns the address the server accepts edges on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every edge connection and waits until the listening socket
    /// and the RPC thread are gone, so the address can be bound again.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.accept_task.take() {
            let _ = task.await;
        }
        if let Some(thread) = self.rpc_thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        info!(addr = %self.local_addr, "owner RPC server stopped");
    }
}

impl Drop for OwnerServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Serves the store's owner to edges on `listener` without TLS. Must be called inside a
/// tokio runtime, which runs the accept loop and every [`Owner::call`].
pub fn serve_owner(owner: Arc<Owner>, listener: TcpListener) -> io::Result<OwnerServer> {
    serve_service(owner, listener)
}

/// Serves any [`OwnerService`] to edges on `listener` without TLS, as [`serve_owner`] does.
pub fn serve_service(
    service: Arc<dyn OwnerService>,
    listener: TcpListener,
) -> io::Result<OwnerServer> {
    serve_service_with(service, listener, None)
}

/// Serves an [`OwnerService`] on `listener`; with `tls`, only to peers that complete a
/// mutual TLS handshake with a certificate from the mesh CA.
pub fn serve_service_with(
    service: Arc<dyn OwnerService>,
    listener: TcpListener,
    tls: Option<MeshTls>,
) -> io::Result<OwnerServer> {
    let local_addr = listener.local_addr()?;
    let runtime = Handle::current();
    let shutdown = CancellationToken::new();
    let (streams_tx, streams_rx) = mpsc::unbounded_channel();

    let thread_shutdown = shutdown.clone();
    let tls_enabled = tls.is_some();
    let rpc_thread = spawn_rpc_thread("tidings-mesh-owner", move || {
        serve_connections(service, runtime, streams_rx, tls, thread_shutdown)
    })?;
    let accept_task = tokio::spawn(accept_loop(listener, streams_tx, shutdown.clone()));

    info!(addr = %local_addr, mutual_tls = tls_enabled, "owner RPC server listening");
    Ok(OwnerServer {
        local_addr,
        shutdown,
        accept_task: Some(accept_task),
        rpc_thread: Some(rpc_thread),
    })
}

/// Accepts edges on the caller's runtime and hands each socket to the RPC thread.
async fn accept_loop(
    listener: TcpListener,
    streams: mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Accept fails when file descriptors run out, among other reasons. The
                // listener stays usable, so log and keep accepting.
                warn!(%error, "failed to accept an edge connection");
                continue;
            }
        };

        // NOTE: a tokio socket is bound to the runtime that created it, so it crosses
        // to the RPC thread as a std socket and is registered again there.
        let handoff = stream.set_nodelay(true).and_then(|()| stream.into_std());
        match handoff {
            Ok(stream) => {
                if streams.send((stream, peer)).is_err() {
                    return;
                }
            }
            Err(error) => warn!(%error, %peer, "failed to prepare an edge connection"),
        }
    }
}

/// Runs on the RPC thread: serves each handed-over connection until shutdown.
async fn serve_connections(
    service: Arc<dyn OwnerService>,
    runtime: Handle,
    mut streams: mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
    tls: Option<MeshTls>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = streams.recv() => match next {
                Some(next) => next,
                None => return,
            },
        };
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(error) => {
                warn!(%error, %peer, "failed to register an edge connection");
                continue;
            }
        };
        let context = ConnectionContext {
            service: service.clone(),
            runtime: runtime.clone(),
            closed: shutdown.child_token(),
            peer,
        };
        tokio::task::spawn_local(handshake_and_serve(stream, tls.clone(), context));
    }
}

/// Runs the TLS handshake when the mesh uses TLS, then serves the connection.
async fn handshake_and_serve(stream: TcpStream, tls: Option<MeshTls>, context: ConnectionContext) {
    let Some(tls) = tls else {
        serve_connection(stream, context).await;
        return;
    };
    let peer = context.peer;
    let accepted = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await;
    match accepted {
        Ok(Ok(stream)) => serve_connection(stream, context).await,
        Ok(Err(error)) => {
            warn!(%peer, %error, "mesh peer rejected: TLS handshake failed");
        }
        Err(_) => {
            warn!(%peer, timeout = ?TLS_HANDSHAKE_TIMEOUT, "mesh peer rejected: TLS handshake timed out");
        }
    }
}

/// State shared by every capability served on one connection.
#[derive(Clone)]
struct ConnectionContext {
    service: Arc<dyn OwnerService>,
    runtime: Handle,
    /// Cancelled when the connection ends, which stops its delivery forwarders.
    closed: CancellationToken,
    peer: SocketAddr,
}

async fn serve_connection<S>(stream: S, context: ConnectionContext)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let peer = context.peer;
    debug!(%peer, "edge connected");
    let closed = context.closed.clone();
    let bootstrap: owner::Client = capnp_rpc::new_client(OwnerBootstrap { context });
    let mut rpc = RpcSystem::new(
        Box::new(vat_network(stream, Side::Server)),
        Some(bootstrap.client),
    );
    // capnp-rpc prints background errors to stdout unless given a handler.
    rpc.set_background_error_handler(move |error| {
        debug!(%peer, %error, "background error on edge connection");
    });

    tokio::select! {
        result = rpc => match result {
            Ok(()) => debug!(%peer, "edge disconnected"),
            Err(error) => warn!(%peer, %error, "edge connection failed"),
        },
        _ = closed.cancelled() => debug!(%peer, "closing edge connection for shutdown"),
    }
    closed.cancel();
}

/// The bootstrap capability: hands out the interface for the edge's protocol version.
struct OwnerBootstrap {
    context: ConnectionContext,
}

impl owner::Server for OwnerBootstrap {
    fn open(
        self: Rc<Self>,
        params: owner::OpenParams,
        mut results: owner::OpenResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let version = params.get().map(|params| params.get_version());
        async move {
            let version = version?;
            if version != MESH_PROTOCOL_VERSION {
                return Err(capnp::Error::failed(format!(
                    "mesh protocol version {version} is not supported. This owner \
                     implements version {MESH_PROTOCOL_VERSION}, so upgrade the older node"
                )));
            }
            let v1: owner_v1::Client = capnp_rpc::new_client(OwnerV1 {
                context: self.context.clone(),
            });
            results.get().set_owner(v1);
            Ok(())
        }
    }
}

/// Version 1 of the owner interface.
struct OwnerV1 {
    context: ConnectionContext,
}

impl owner_v1::Server for OwnerV1 {
    fn call(
        self: Rc<Self>,
        params: owner_v1::CallParams,
        mut results: owner_v1::CallResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let request = params
            .get()
            .and_then(|params| read_owner_request(params.get_request()?));
        async move {
            let request = request?;
            // NOTE: the owner runs on the process's multi-threaded runtime, where its
            // storage tasks live. This thread only waits for the reply.
            let call = self.context.service.clone().call(request);
            let outcome = match self.context.runtime.spawn(call).await {
                Ok(outcome) => outcome,
                Err(error) => Err(Rejection::internal(format!(
                    "owner call task failed: {error}"
                ))),
            };
            write_call_result(results.get().init_result(), &outcome);
            Ok(())
        }
    }

    fn attach_edge(
        self: Rc<Self>,
        params: owner_v1::AttachEdgeParams,
        mut results: owner_v1::AttachEdgeResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let attach = params.get().and_then(|params| {
            let edge_id = params.get_edge_id()?.to_str()?.to_owned();
            // An edge older than the delivery log sends no positions.
            let positions = match params.has_positions() {
                true => read_log_positions(params.get_positions()?),
                false => Vec::new(),
            };
            Ok((edge_id, params.get_sink()?, positions))
        });
        async move {
            let (edge_id, sink, positions) = attach?;
            let attached = self.context.service.attach_edge_at(&edge_id, &positions);
            info!(
                edge_id,
                peer = %self.context.peer,
                positions = ?positions,
                lost = ?attached.lost,
                "edge attached for fan-out"
            );
            let mut out = results.get();
            let start = out.reborrow().init_start(attached.start.len() as u32);
            write_log_positions(start, &attached.start);
            let mut lost = out.init_lost(attached.lost.len() as u32);
            for (index, file) in attached.lost.iter().enumerate() {
                lost.set(index as u32, *file);
            }
            tokio::task::spawn_local(forward_deliveries(
                edge_id,
                attached.deliveries,
                sink,
                self.context.closed.clone(),
            ));
            Ok(())
        }
    }

    fn register_users(
        self: Rc<Self>,
        params: owner_v1::RegisterUsersParams,
        _results: owner_v1::RegisterUsersResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        // NOTE: applied before the method returns, so registrations from one edge take
        // effect in the order the edge sent them.
        let applied = params.get().and_then(|params| {
            let registration = read_registration(params)?;
            self.context.service.register_users(&registration);
            Ok(())
        });
        async move { applied }
    }

    fn update_inbox(
        self: Rc<Self>,
        params: owner_v1::UpdateInboxParams,
        mut results: owner_v1::UpdateInboxResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let updates = params
            .get()
            .and_then(|params| read_inbox_updates(params.get_updates()?));
        async move {
            let updates = updates?;
            let call = self.context.service.clone().update_inbox(updates);
            let outcome = self
                .run_peer_call(call)
                .await
                .map(|()| OwnerReply::Conversations(Vec::new()));
            write_call_result(results.get().init_result(), &outcome);
            Ok(())
        }
    }

    fn conversations_by_id(
        self: Rc<Self>,
        params: owner_v1::ConversationsByIdParams,
        mut results: owner_v1::ConversationsByIdResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let request = params.get().and_then(|params| {
            let user = params.get_user()?.to_str()?.to_owned();
            let ids: Vec<u64> = params.get_ids()?.iter().collect();
            Ok((user, ids))
        });
        async move {
            let (user, ids) = request?;
            let call = self.context.service.clone().conversations_by_id(user, ids);
            let outcome = self
                .run_peer_call(call)
                .await
                .map(OwnerReply::Conversations);
            write_call_result(results.get().init_result(), &outcome);
            Ok(())
        }
    }
}

impl OwnerV1 {
    /// Runs an owner-to-owner request on the process's runtime and waits for its outcome.
    async fn run_peer_call<T: Send + 'static>(
        &self,
        call: crate::rpc::PeerCallFuture<T>,
    ) -> Result<T, Rejection> {
        match self.context.runtime.spawn(call).await {
            Ok(outcome) => outcome,
            Err(error) => Err(Rejection::internal(format!(
                "owner peer call task failed: {error}"
            ))),
        }
    }
}

/// Pushes an edge's deliveries to its sink in batches until the sink fails, the owner
/// drops the queue or the connection closes.
async fn forward_deliveries(
    edge_id: String,
    mut deliveries: mpsc::Receiver<Arc<Delivery>>,
    sink: edge_sink::Client,
    closed: CancellationToken,
) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            _ = closed.cancelled() => return,
            Some(result) = in_flight.next(), if !in_flight.is_empty() => {
                if let Err(error) = result {
                    warn!(edge_id, %error, "edge sink failed, so fan-out to this edge stopped");
                    return;
                }
            }
            first = deliveries.recv(), if in_flight.len() < MAX_DELIVER_CALLS_IN_FLIGHT => {
                let Some(first) = first else { break };
                let batch = drain_batch(first, &mut deliveries);
                in_flight.push(send_batch(&sink, &batch));
            }
        }
    }

    // The owner closed this edge's queue, because it overflowed or the edge attached
    // again. Finish the calls already sent, then tell the edge so it can attach again.
    while let Some(result) = in_flight.next().await {
        if let Err(error) = result {
            warn!(edge_id, %error, "edge sink failed while draining");
            return;
        }
    }
    info!(
        edge_id,
        "owner closed the delivery queue, notifying the edge"
    );
    let mut detached = sink.detached_request();
    detached
        .get()
        .set_reason("the owner closed this edge's delivery queue");
    tokio::select! {
        _ = closed.cancelled() => {}
        result = detached.send().promise => {
            if let Err(error) = result {
                debug!(edge_id, %error, "failed to notify the edge of its detach");
            }
        }
    }
}

fn drain_batch(
    first: Arc<Delivery>,
    deliveries: &mut mpsc::Receiver<Arc<Delivery>>,
) -> Vec<Arc<Delivery>> {
    let mut batch = vec![first];
    while batch.len() < MAX_DELIVERY_BATCH {
        match deliveries.try_recv() {
            Ok(delivery) => batch.push(delivery),
            Err(_) => break,
        }
    }
    batch
}

fn send_batch(
    sink: &edge_sink::Client,
    batch: &[Arc<Delivery>],
) -> impl Future<Output = Result<(), capnp::Error>> + use<> {
    let mut request = sink.deliver_request();
    let list = request.get().init_batch(batch.len() as u32);
    write_deliveries(list, batch.iter().map(Arc::as_ref));
    let promise = request.send().promise;
    async move { promise.await.map(drop) }
}
