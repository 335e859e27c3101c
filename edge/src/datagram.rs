//! Datagram plumbing of a session: one task sends queued datagrams, another reads
//! incoming ones, so the session core sees two queues whatever the transport.
//!
//! Datagrams are unreliable by design: a full queue drops the datagram, and so does a
//! datagram the peer cannot take.

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{Instrument, debug, trace};

/// Datagrams queued in each direction before new ones are dropped.
pub(crate) const DATAGRAM_QUEUE: usize = 256;

/// The two queues of a session's datagrams.
pub struct DatagramChannel {
    /// Datagrams to send; dropping every sender stops the sending task.
    pub outgoing: mpsc::Sender<Bytes>,
    /// Datagrams received; the reading task stops when this is dropped or the connection
    /// closes.
    pub incoming: mpsc::Receiver<Bytes>,
}

/// Starts the datagram tasks of a native QUIC connection.
pub fn native(connection: quinn::Connection) -> DatagramChannel {
    let (outgoing, mut to_send) = mpsc::channel::<Bytes>(DATAGRAM_QUEUE);
    let (received, incoming) = mpsc::channel(DATAGRAM_QUEUE);

    let sender = connection.clone();
    let send = async move {
        while let Some(datagram) = to_send.recv().await {
            match sender.send_datagram(datagram) {
                Ok(()) => {}
                Err(quinn::SendDatagramError::ConnectionLost(_)) => return,
                Err(error) => debug!(%error, "datagram not sent"),
            }
        }
    };
    tokio::spawn(send.in_current_span());

    let read = async move {
        loop {
            let datagram = tokio::select! {
                _ = received.closed() => return,
                datagram = connection.read_datagram() => datagram,
            };
            let Ok(datagram) = datagram else { return };
            if received.try_send(datagram).is_err() {
                trace!("incoming datagram dropped; queue full");
            }
        }
    };
    tokio::spawn(read.in_current_span());
    DatagramChannel { outgoing, incoming }
}
