//! Presence frames: heartbeats, presence subscriptions and updates, typing indicators and
//! presence settings.
//!
//! Heartbeats, typing indicators and unsolicited presence updates travel in QUIC or
//! WebTransport datagrams (one unprefixed frame per datagram) and as ordinary frames on a
//! WebSocket. Subscriptions, settings and their replies travel on the control stream.

/// Maximum encoded size of a presence datagram. Chromium reports a maximum datagram size
/// of 1,211 bytes and quinn starts at 1,162 before path MTU discovery, so this leaves room
/// for the QUIC and WebTransport headers.
pub const MAX_DATAGRAM_BYTES: usize = 1_000;

/// The presence of a device or user, ordered from least to most present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum PresenceState {
    #[default]
    Offline,
    Away,
    Online,
}

impl PresenceState {
    /// Returns the lowercase name used in JSON output and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceState::Offline => "offline",
            PresenceState::Away => "away",
            PresenceState::Online => "online",
        }
    }
}

/// A device's periodic statement that it is still there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heartbeat {
    pub state: PresenceState,
}

/// Replaces the session's presence subscription. The reply is a [`PresenceUpdate`] with
/// the same `request_id`, or an `Error` with `NOT_MEMBER`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PresenceSubscribe {
    pub request_id: u64,
    /// Users whose presence the session receives.
    pub users: Vec<String>,
    /// Conversations the client shows, whose typing indicators the session receives.
    pub open_conversations: Vec<u64>,
}

/// The presence of one user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PresenceEntry {
    pub user: String,
    pub state: PresenceState,
    /// Last activity in milliseconds since the Unix epoch; 0 when unknown or hidden.
    pub last_seen_ms: u64,
}

/// Presence of watched users: changes, the periodic snapshot, or a subscription reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PresenceUpdate {
    /// The subscription request this replies to; 0 for updates the server pushes.
    pub request_id: u64,
    /// Whether the entries are the periodic full state rather than changes.
    pub snapshot: bool,
    pub entries: Vec<PresenceEntry>,
}

/// A typing indicator in one conversation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Typing {
    pub conversation_id: u64,
    /// The typing user, set by the server; a client leaves it empty.
    pub user: String,
    /// `false` clears the indicator at once.
    pub active: bool,
}

/// A change to the user's presence settings, and the server's reply with the stored
/// settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PresenceSettings {
    pub request_id: u64,
    /// Whether other users stop receiving this user's last seen time.
    pub hide_last_seen: bool,
}

/// Encoded size of a presence update besides its entries, rounded up: segment table, root
/// pointer, `Frame` and `PresenceUpdate` structs and the list pointer.
const UPDATE_OVERHEAD_BYTES: usize = 96;

/// Returns the encoded size of one entry: its list element (two data words and a
/// pointer) and its user id text, padded to whole words.
fn entry_bytes(entry: &PresenceEntry) -> usize {
    24 + (entry.user.len() + 1).div_ceil(8) * 8
}

/// Encodes presence entries as datagram frames of at most [`MAX_DATAGRAM_BYTES`] each,
/// splitting them across as many frames as needed. An entry whose user id alone exceeds
/// the limit goes in a frame by itself, which the transport may then drop.
pub fn encode_datagrams(entries: Vec<PresenceEntry>, snapshot: bool) -> Vec<Vec<u8>> {
    let mut datagrams = Vec::new();
    let mut chunk = Vec::new();
    let mut size = UPDATE_OVERHEAD_BYTES;
    for entry in entries {
        let bytes = entry_bytes(&entry);
        if !chunk.is_empty() && size + bytes > MAX_DATAGRAM_BYTES {
            datagrams.push(encode_chunk(std::mem::take(&mut chunk), snapshot));
            size = UPDATE_OVERHEAD_BYTES;
        }
        size += bytes;
        chunk.push(entry);
    }
    if !chunk.is_empty() {
        datagrams.push(encode_chunk(chunk, snapshot));
    }
    datagrams
}

fn encode_chunk(entries: Vec<PresenceEntry>, snapshot: bool) -> Vec<u8> {
    crate::codec::encode(&crate::frame::Frame::PresenceUpdate(PresenceUpdate {
        request_id: 0,
        snapshot,
        entries,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::frame::Frame;

    fn entries(count: usize, user_len: usize) -> Vec<PresenceEntry> {
        (0..count)
            .map(|index| PresenceEntry {
                user: format!("{index:0>user_len$}"),
                state: PresenceState::Away,
                last_seen_ms: u64::MAX - index as u64,
            })
            .collect()
    }

    #[test]
    fn datagrams_stay_under_the_limit() {
        for user_len in [1, 7, 8, 20, 64, 200] {
            let all = entries(300, user_len);
            let datagrams = encode_datagrams(all.clone(), true);
            let mut decoded = Vec::new();
            for datagram in &datagrams {
                assert!(
                    datagram.len() <= MAX_DATAGRAM_BYTES,
                    "{} bytes with {user_len}-byte user ids",
                    datagram.len()
                );
                let Frame::PresenceUpdate(update) = codec::decode(datagram).unwrap() else {
                    panic!("not a presence update");
                };
                assert!(update.snapshot);
                decoded.extend(update.entries);
            }
            assert_eq!(decoded, all, "entries survive the split in order");
        }
    }

    #[test]
    fn small_update_is_one_datagram() {
        let datagrams = encode_datagrams(entries(3, 10), false);
        assert_eq!(datagrams.len(), 1);
    }

    #[test]
    fn split_uses_most_of_each_datagram() {
        let datagrams = encode_datagrams(entries(300, 20), false);
        let full = &datagrams[..datagrams.len() - 1];
        assert!(
            full.iter()
                .all(|datagram| datagram.len() > MAX_DATAGRAM_BYTES * 3 / 4)
        );
    }
}
