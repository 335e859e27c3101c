//! One writer task per stream: frames queued from many tasks go out in order, and every
//! frame waiting in the queue is written with a single `write_all`. A WebSocket session
//! has one queue too, drained by its own writer (`websocket`).
//!
//! Coalescing matters because one write per small frame caps a sender core far below
//! what batched writes reach.

use std::time::Duration;

use bytes::Bytes;
use tidings_schema::codec;
use tidings_schema::frame::Frame;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, Span, debug, trace};

use crate::streams::StreamSend;

/// Maximum bytes gathered into one write; the rest waits for the next write.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Maximum wait for the peer to acknowledge a finished stream.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

pub enum Outgoing {
    /// One length-prefixed frame.
    Frame(Bytes),
    /// Write what is queued, finish the stream, wait for the peer's acknowledgement
    /// (bounded by [`FLUSH_TIMEOUT`]) and report back.
    Finish(oneshot::Sender<()>),
}

/// The writer task has exited, because the stream was finished, reset or the connection
/// closed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the stream writer has stopped")]
pub struct WriterClosed;

/// A handle to a stream's writer task. Clones share the queue.
#[derive(Clone)]
pub struct FrameSink {
    queue: mpsc::Sender<Outgoing>,
}

/// A handle that does not keep the writer alive.
#[derive(Clone)]
pub struct WeakFrameSink {
    queue: mpsc::WeakSender<Outgoing>,
}

impl WeakFrameSink {
    pub fn upgrade(&self) -> Option<FrameSink> {
        self.queue.upgrade().map(|queue| FrameSink { queue })
    }
}

impl FrameSink {
    /// Spawns the writer task for `stream` with a queue of `capacity` frames, inside `span`.
    ///
    /// The task finishes the stream once every `FrameSink` clone is dropped.
    pub fn spawn(stream: Box<dyn StreamSend>, capacity: usize, span: Span) -> FrameSink {
        let (sink, receiver) = FrameSink::channel(capacity);
        tokio::spawn(run_writer(stream, receiver).instrument(span));
        sink
    }

    /// Creates a sink whose queue the caller drains, for writers that are not streams.
    pub fn channel(capacity: usize) -> (FrameSink, mpsc::Receiver<Outgoing>) {
        let (queue, receiver) = mpsc::channel(capacity.max(1));
        (FrameSink { queue }, receiver)
    }

    /// Encodes and queues one frame, waiting while the queue is full.
    pub async fn send(&self, frame: &Frame) -> Result<(), WriterClosed> {
        trace!(kind = frame.kind(), "queue frame");
        self.send_encoded(encode(frame)).await
    }

    /// Queues an already length-prefixed frame, waiting while the queue is full.
    pub async fn send_encoded(&self, bytes: Bytes) -> Result<(), WriterClosed> {
        self.queue
            .send(Outgoing::Frame(bytes))
            .await
            .map_err(|_| WriterClosed)
    }

    /// Queues an already length-prefixed frame unless the queue is full; returns whether
    /// it was queued. For frames that may be lost, such as presence updates.
    pub fn try_send_encoded(&self, bytes: Bytes) -> bool {
        self.queue.try_send(Outgoing::Frame(bytes)).is_ok()
    }

    /// Writes everything queued, finishes the stream and waits until the peer has
    /// acknowledged it, or [`FLUSH_TIMEOUT`] passed. Frames queued afterwards are dropped.
    pub async fn finish(&self) {
        let (done, finished) = oneshot::channel();
        if self.queue.send(Outgoing::Finish(done)).await.is_ok() {
            let _ = tokio::time::timeout(FLUSH_TIMEOUT * 2, finished).await;
        }
    }

    pub fn downgrade(&self) -> WeakFrameSink {
        WeakFrameSink {
            queue: self.queue.downgrade(),
        }
    }
}

/// Encodes a frame with its length prefix.
pub fn encode(frame: &Frame) -> Bytes {
    let mut out = Vec::new();
    codec::encode_framed(frame, &mut out);
    Bytes::from(out)
}

async fn run_writer(mut stream: Box<dyn StreamSend>, mut queue: mpsc::Receiver<Outgoing>) {
    let mut batch = Vec::with_capacity(4096);
    while let Some(first) = queue.recv().await {
        let mut finish = None;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Outgoing::Frame(bytes) => batch.extend_from_slice(&bytes),
                Outgoing::Finish(done) => {
                    finish = Some(done);
                    break;
                }
            }
            if batch.len() < MAX_BATCH_BYTES {
                next = queue.try_recv().ok();
            }
        }

        if !batch.is_empty() {
            trace!(bytes = batch.len(), "write batch");
            if let Err(error) = stream.write_all(&batch).await {
                debug!(%error, "stream write failed; dropping queued frames");
                return;
            }
            batch.clear();
        }
        if let Some(done) = finish {
            stream.finish().await;
            let _ = done.send(());
            return;
        }
    }
    stream.finish().await;
}
