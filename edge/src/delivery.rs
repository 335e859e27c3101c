//! A session's delivery streams: server-opened bidirectional streams, one per
//! conversation, opened on the first delivery and carrying `Deliver` frames in `seq` order.
//!
//! The client writes `DeliveryAck` frames back on the same stream; the edge records the
//! highest acknowledged `seq` per conversation with [`record_ack`]. WebSocket sessions
//! have no streams and write deliveries to their socket (`websocket`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tidings_schema::codec::{self, ReadError};
use tidings_schema::error::{CloseCode, ErrorCode};
use tidings_schema::frame::{ErrorFrame, Frame};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, debug_span, trace};

use crate::metrics::EdgeMetrics;
use crate::registry::EncodedDelivery;
use crate::streams::{SharedConnection, StreamRecv};
use crate::writer::{FrameSink, WeakFrameSink};

/// Frames queued per delivery stream before the session's dispatcher waits.
const STREAM_QUEUE: usize = 256;

/// Settings of a session's delivery streams.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryConfig {
    /// Maximum number of delivery streams open at once; the least recently used one is
    /// finished to make room.
    pub max_streams: usize,
    /// A stream with nothing to send for this long is finished.
    pub idle_timeout: Duration,
    pub max_frame_bytes: u32,
}

/// Highest acknowledged `seq` per conversation, written by the ack readers and forwarded
/// to owners as delivered receipts.
pub type AckCursors = Arc<crate::receipts::AckRecorder>;

/// Records that the client holds every message of `conversation_id` up to `seq`.
pub fn record_ack(cursors: &AckCursors, conversation_id: u64, seq: u64) {
    cursors.record(conversation_id, seq);
}

struct OpenStream {
    sink: FrameSink,
    last_used: Instant,
    /// Stops the ack reader with the given code when the stream is closed by the edge.
    stop_reader: oneshot::Sender<CloseCode>,
}

/// Delivers queued messages on the session's delivery streams until the queue closes,
/// the connection is lost, or `cancel` fires.
pub async fn run_delivery_streams(
    connection: SharedConnection,
    mut queue: mpsc::Receiver<Arc<EncodedDelivery>>,
    config: DeliveryConfig,
    cursors: AckCursors,
    metrics: Arc<EdgeMetrics>,
    cancel: CancellationToken,
) {
    let mut streams: HashMap<u64, OpenStream> = HashMap::new();
    let sweep_period = (config.idle_timeout / 4).max(Duration::from_millis(100));
    let mut sweep = tokio::time::interval(sweep_period);

    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = sweep.tick() => close_idle(&mut streams, config.idle_timeout, Instant::now()),
            delivery = queue.recv() => {
                let Some(delivery) = delivery else { break };
                let delivered =
                    deliver(&connection, &mut streams, &delivery, config, &cursors).await;
                if delivered.is_none() {
                    break;
                }
                EdgeMetrics::inc(&metrics.session_deliveries);
            }
        }
    }
}

/// Writes one delivery to its conversation's stream, opening the stream when needed.
/// Returns `None` only when the connection is gone.
async fn deliver(
    connection: &SharedConnection,
    streams: &mut HashMap<u64, OpenStream>,
    delivery: &EncodedDelivery,
    config: DeliveryConfig,
    cursors: &AckCursors,
) -> Option<()> {
    let conversation_id = delivery.conversation_id;
    trace!(conversation_id, seq = delivery.seq, "deliver");
    if let Some(stream) = streams.get_mut(&conversation_id) {
        stream.last_used = Instant::now();
        if stream
            .sink
            .send_encoded(delivery.frame.clone())
            .await
            .is_ok()
        {
            return Some(());
        }
        // The client stopped the stream; open a fresh one for this delivery.
        streams.remove(&conversation_id);
    }

    if streams.len() >= config.max_streams.max(1) {
        close_least_recent(streams);
    }
    let stream = connection.open_bi().await?;
    let span = debug_span!("delivery_stream", stream_id = stream.id, conversation_id);
    let sink = FrameSink::spawn(stream.send, STREAM_QUEUE, span.clone());
    let (stop_reader, stop) = oneshot::channel();
    let reader = read_acks(
        stream.recv,
        conversation_id,
        sink.downgrade(),
        Arc::clone(cursors),
        config.max_frame_bytes,
        stop,
    );
    tokio::spawn(reader.instrument(span));

    // A failed first write means the connection is closing; the next call reports it.
    let _ = sink.send_encoded(delivery.frame.clone()).await;
    streams.insert(
        conversation_id,
        OpenStream {
            sink,
            last_used: Instant::now(),
            stop_reader,
        },
    );
    Some(())
}

fn close_least_recent(streams: &mut HashMap<u64, OpenStream>) {
    let oldest = streams
        .iter()
        .min_by_key(|(_, stream)| stream.last_used)
        .map(|(id, _)| *id);
    if let Some(id) = oldest
        && let Some(stream) = streams.remove(&id)
    {
        debug!(
            conversation_id = id,
            "delivery stream limit reached; finishing the oldest"
        );
        // Dropping the sink makes the writer flush and finish the stream.
        let _ = stream.stop_reader.send(CloseCode::StreamLimit);
    }
}

fn close_idle(streams: &mut HashMap<u64, OpenStream>, idle_timeout: Duration, now: Instant) {
    let idle: Vec<u64> = streams
        .iter()
        .filter(|(_, stream)| now.duration_since(stream.last_used) >= idle_timeout)
        .map(|(id, _)| *id)
        .collect();
    for id in idle {
        if let Some(stream) = streams.remove(&id) {
            debug!(conversation_id = id, "delivery stream idle; finishing it");
            let _ = stream.stop_reader.send(CloseCode::StreamIdle);
        }
    }
}

/// Reads the client's `DeliveryAck` frames and records the highest `seq`.
async fn read_acks(
    mut recv: Box<dyn StreamRecv>,
    conversation_id: u64,
    sink: WeakFrameSink,
    cursors: AckCursors,
    max_frame_bytes: u32,
    mut stop: oneshot::Receiver<CloseCode>,
) {
    loop {
        let read = tokio::select! {
            code = &mut stop => {
                // NOTE: acks still in flight are dropped. The client acknowledges the
                // conversation again on its next delivery, and resyncs by its own cursors.
                if let Ok(code) = code {
                    recv.stop(code);
                }
                return;
            }
            read = codec::read_frame(&mut recv, max_frame_bytes) => read,
        };
        let violation = match read {
            Ok(Some(Frame::DeliveryAck(ack))) if ack.conversation_id == conversation_id => {
                trace!(seq = ack.seq, "delivery ack");
                record_ack(&cursors, conversation_id, ack.seq);
                continue;
            }
            Ok(Some(Frame::DeliveryAck(ack))) => (
                ErrorCode::StreamMismatch,
                format!(
                    "DeliveryAck names conversation {} on a stream of {conversation_id}",
                    ack.conversation_id
                ),
            ),
            Ok(Some(other)) => (
                ErrorCode::UnknownFrame,
                format!(
                    "{} is not allowed on a delivery stream; send DeliveryAck",
                    other.kind()
                ),
            ),
            Ok(None) => return,
            Err(ReadError::Decode(error)) => (error.code(), error.to_string()),
            Err(ReadError::Truncated) => (
                ErrorCode::MalformedFrame,
                "stream ended inside a frame".to_owned(),
            ),
            Err(error) => {
                debug!(%error, "delivery stream read ended");
                return;
            }
        };
        debug!(code = %violation.0, reason = %violation.1, "protocol violation on delivery stream");
        if let Some(sink) = sink.upgrade() {
            let _ = sink
                .send(&Frame::Error(error_frame(conversation_id, violation)))
                .await;
        }
        recv.stop(CloseCode::ProtocolViolation);
        return;
    }
}

fn error_frame(conversation_id: u64, (code, message): (ErrorCode, String)) -> ErrorFrame {
    ErrorFrame {
        request_id: 0,
        conversation_id,
        client_msg_id: String::new(),
        code,
        message,
        retry_after_ms: 0,
    }
}
