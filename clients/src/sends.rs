//! Client-opened conversation streams: one bidirectional stream per conversation the
//! client sends in, carrying `Send` frames and their `SendAck` or `Error` replies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tidings_schema::codec::{encode_framed, read_frame};
use tidings_schema::frame::{Limits, Send, SendAck};
use tidings_schema::{Frame, Rejection};
use tokio::sync::oneshot;
use tracing::{debug, trace, warn};

use crate::error::StreamError;

type AckWaiter = oneshot::Sender<Result<SendAck, Rejection>>;

/// One open conversation stream.
struct ConversationStream {
    writer: tokio::sync::Mutex<quinn::SendStream>,
    /// Sends waiting for their reply, by `client_msg_id`.
    pending: Mutex<HashMap<String, AckWaiter>>,
    last_used: Mutex<Instant>,
}

impl ConversationStream {
    fn pending_count(&self) -> usize {
        self.pending.lock().expect("pending map poisoned").len()
    }

    fn take_waiter(&self, client_msg_id: &str) -> Option<AckWaiter> {
        self.pending
            .lock()
            .expect("pending map poisoned")
            .remove(client_msg_id)
    }
}

/// The conversation streams of one session, opened on first use.
pub(crate) struct ConversationStreams {
    limits: Limits,
    streams: tokio::sync::Mutex<HashMap<u64, Arc<ConversationStream>>>,
}

impl ConversationStreams {
    pub fn new(limits: Limits) -> Self {
        ConversationStreams {
            limits,
            streams: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Writes `send` on its conversation's stream and waits for the reply.
    ///
    /// Cancel safety: a cancelled call leaves the send registered until its reply
    /// arrives or the stream ends; the server may still commit the message.
    pub async fn send(
        self: &Arc<Self>,
        connection: &quinn::Connection,
        send: Send,
    ) -> Result<Result<SendAck, Rejection>, StreamError> {
        let conversation_id = send.conversation_id;
        let stream = self.stream_for(connection, conversation_id).await?;

        let (ack_tx, ack_rx) = oneshot::channel();
        stream
            .pending
            .lock()
            .expect("pending map poisoned")
            .insert(send.client_msg_id.clone(), ack_tx);

        let client_msg_id = send.client_msg_id.clone();
        let mut bytes = Vec::new();
        encode_framed(&Frame::Send(send), &mut bytes);
        let written = stream.writer.lock().await.write_all(&bytes).await;
        if let Err(error) = written {
            stream.take_waiter(&client_msg_id);
            self.forget(conversation_id, &stream).await;
            return Err(error.into());
        }
        trace!(conversation_id, client_msg_id, "send written");

        ack_rx.await.map_err(|_| StreamError::Ended)
    }

    /// Returns the open stream of `conversation_id`, opening one when there is none.
    async fn stream_for(
        self: &Arc<Self>,
        connection: &quinn::Connection,
        conversation_id: u64,
    ) -> Result<Arc<ConversationStream>, StreamError> {
        let mut streams = self.streams.lock().await;
        if let Some(stream) = streams.get(&conversation_id) {
            *stream.last_used.lock().expect("clock mutex poisoned") = Instant::now();
            return Ok(stream.clone());
        }

        if streams.len() >= self.limits.max_conversation_streams as usize {
            evict_least_recently_used(&mut streams).await;
        }

        let (writer, reader) = connection.open_bi().await?;
        debug!(conversation_id, stream_id = %writer.id(), "opened conversation stream");
        let stream = Arc::new(ConversationStream {
            writer: tokio::sync::Mutex::new(writer),
            pending: Mutex::new(HashMap::new()),
            last_used: Mutex::new(Instant::now()),
        });
        streams.insert(conversation_id, stream.clone());
        tokio::spawn(read_replies(
            self.clone(),
            conversation_id,
            stream.clone(),
            reader,
            self.limits.max_frame_bytes,
        ));
        Ok(stream)
    }

    /// Removes `stream` from the map unless a newer stream already replaced it.
    async fn forget(&self, conversation_id: u64, stream: &Arc<ConversationStream>) {
        let mut streams = self.streams.lock().await;
        if streams
            .get(&conversation_id)
            .is_some_and(|current| Arc::ptr_eq(current, stream))
        {
            streams.remove(&conversation_id);
        }
    }
}

/// Finishes the least recently used stream that has no send in flight, so that the
/// client stays within the server's stream limit. When every stream is busy, nothing is
/// closed and the server decides.
async fn evict_least_recently_used(streams: &mut HashMap<u64, Arc<ConversationStream>>) {
    let idle = streams
        .iter()
        .filter(|(_, stream)| stream.pending_count() == 0)
        .min_by_key(|(_, stream)| *stream.last_used.lock().expect("clock mutex poisoned"))
        .map(|(conversation_id, _)| *conversation_id);
    if let Some(conversation_id) = idle
        && let Some(stream) = streams.remove(&conversation_id)
    {
        debug!(
            conversation_id,
            "closing least recently used conversation stream"
        );
        // A finish error means the stream is already gone, which is the goal.
        drop(stream.writer.lock().await.finish());
    }
}

/// Reads `SendAck` and `Error` frames from one conversation stream until it ends, then
/// drops the waiters that got no reply so their senders retry.
async fn read_replies(
    streams: Arc<ConversationStreams>,
    conversation_id: u64,
    stream: Arc<ConversationStream>,
    mut reader: quinn::RecvStream,
    max_frame_bytes: u32,
) {
    loop {
        match read_frame(&mut reader, max_frame_bytes).await {
            Ok(Some(Frame::SendAck(ack))) => {
                if let Some(waiter) = stream.take_waiter(&ack.client_msg_id) {
                    drop(waiter.send(Ok(ack)));
                }
            }
            Ok(Some(Frame::Error(error))) if !error.client_msg_id.is_empty() => {
                if let Some(waiter) = stream.take_waiter(&error.client_msg_id) {
                    drop(waiter.send(Err(error.rejection())));
                }
            }
            Ok(Some(Frame::Error(error))) => {
                // An error that names no send applies to the whole stream.
                warn!(conversation_id, code = %error.code, "conversation stream rejected");
                let waiters: Vec<AckWaiter> = stream
                    .pending
                    .lock()
                    .expect("pending map poisoned")
                    .drain()
                    .map(|(_, waiter)| waiter)
                    .collect();
                for waiter in waiters {
                    drop(waiter.send(Err(error.rejection())));
                }
            }
            Ok(Some(other)) => {
                warn!(
                    conversation_id,
                    kind = other.kind(),
                    "unexpected frame on a send stream"
                )
            }
            Ok(None) => break,
            Err(error) => {
                debug!(conversation_id, %error, "conversation stream ended");
                break;
            }
        }
    }
    streams.forget(conversation_id, &stream).await;
    stream.pending.lock().expect("pending map poisoned").clear();
}
