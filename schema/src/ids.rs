//! Id schemes: Snowflake message ids, hybrid logical clock stamps, direct conversation
//! ids and virtual shard placement.
//!
//! Everything here is pure and takes the current time as an argument, so callers decide
//! where time comes from. The hashed ids use SHA-256 with no per-process seed; the test
//! vectors at the bottom of this file are part of the protocol and `docs/protocol.md`
//! repeats them for other languages.

use sha2::{Digest, Sha256};

/// Start of the Snowflake epoch: 2026-01-01T00:00:00Z in milliseconds since the Unix epoch.
pub const SNOWFLAKE_EPOCH_MS: u64 = 1_767_225_600_000;

/// Number of virtual shards conversations and users are placed on.
pub const VIRTUAL_SHARDS: u16 = 1024;

const NODE_BITS: u32 = 10;
const SEQUENCE_BITS: u32 = 12;
const MAX_NODE: u16 = (1 << NODE_BITS) - 1;
const MAX_SEQUENCE: u64 = (1 << SEQUENCE_BITS) - 1;

/// Generates 64-bit Snowflake ids: 41 bits of milliseconds since [`SNOWFLAKE_EPOCH_MS`],
/// 10 bits of node id and 12 bits of per-millisecond sequence, so ids sort by time.
///
/// When the clock goes backwards or a millisecond's 4,096 ids run out, the generator
/// keeps counting on its last timestamp instead of repeating an id.
#[derive(Debug)]
pub struct Snowflake {
    node: u64,
    last_ms: u64,
    sequence: u64,
}

impl Snowflake {
    /// Creates a generator for `node`, which must be below 1,024.
    pub fn new(node: u16) -> Self {
        assert!(
            node <= MAX_NODE,
            "Snowflake node id {node} exceeds {MAX_NODE}"
        );
        Snowflake {
            node: u64::from(node),
            last_ms: 0,
            sequence: 0,
        }
    }

    /// Returns the next id for wall-clock time `now_ms` (milliseconds since the Unix epoch).
    pub fn next_id(&mut self, now_ms: u64) -> u64 {
        let ms = now_ms.saturating_sub(SNOWFLAKE_EPOCH_MS);
        if ms > self.last_ms {
            self.last_ms = ms;
            self.sequence = 0;
        } else if self.sequence == MAX_SEQUENCE {
            // NOTE: borrowing the next millisecond keeps ids unique and increasing when
            // more than 4,096 ids are needed in one millisecond or the clock stepped back.
            self.last_ms += 1;
            self.sequence = 0;
        } else {
            self.sequence += 1;
        }
        (self.last_ms << (NODE_BITS + SEQUENCE_BITS)) | (self.node << SEQUENCE_BITS) | self.sequence
    }
}

/// Returns the Unix time in milliseconds encoded in a Snowflake id.
pub fn snowflake_time_ms(id: u64) -> u64 {
    (id >> (NODE_BITS + SEQUENCE_BITS)) + SNOWFLAKE_EPOCH_MS
}

const HLC_LOGICAL_BITS: u32 = 16;
const HLC_LOGICAL_MASK: u64 = (1 << HLC_LOGICAL_BITS) - 1;

/// A hybrid logical clock: the upper 48 bits are milliseconds since the Unix epoch, the
/// lower 16 bits a logical counter. Stamps are strictly increasing per clock and never
/// lower than any stamp the clock has observed, even when wall clocks skew.
#[derive(Debug, Default)]
pub struct HybridClock {
    last: u64,
}

impl HybridClock {
    pub fn new() -> Self {
        HybridClock::default()
    }

    /// Returns a new stamp for a local event at wall-clock time `now_ms`.
    pub fn tick(&mut self, now_ms: u64) -> u64 {
        let physical = now_ms << HLC_LOGICAL_BITS;
        self.last = if physical > self.last {
            physical
        } else {
            self.last + 1
        };
        self.last
    }

    /// Merges a stamp received from elsewhere, so later local stamps sort after it.
    pub fn observe(&mut self, remote: u64) {
        if remote > self.last {
            self.last = remote;
        }
    }
}

/// Returns the wall-clock milliseconds of a hybrid clock stamp.
pub fn hlc_time_ms(stamp: u64) -> u64 {
    stamp >> HLC_LOGICAL_BITS
}

/// Returns the logical counter of a hybrid clock stamp.
pub fn hlc_logical(stamp: u64) -> u64 {
    stamp & HLC_LOGICAL_MASK
}

fn sha256_prefix(parts: &[&[u8]]) -> u64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("SHA-256 digest has 32 bytes"))
}

/// Returns the id of the direct conversation between two users, the same whichever of
/// them asks: the first 8 bytes (big-endian) of
/// `SHA-256("tidings/direct/v1" || 0x00 || low || 0x00 || high)` where `low` and `high` are
/// the two UTF-8 user ids in byte order.
pub fn direct_conversation_id(a: &str, b: &str) -> u64 {
    let (low, high) = if a.as_bytes() <= b.as_bytes() {
        (a, b)
    } else {
        (b, a)
    };
    sha256_prefix(&[
        b"tidings/direct/v1\0",
        low.as_bytes(),
        b"\0",
        high.as_bytes(),
    ])
}

/// Returns the virtual shard of a conversation: the first 8 bytes (big-endian) of
/// `SHA-256("tidings/shard/v1" || 0x00 || id as 8 big-endian bytes)` modulo
/// [`VIRTUAL_SHARDS`].
pub fn conversation_shard(conversation_id: u64) -> u16 {
    let hash = sha256_prefix(&[b"tidings/shard/v1\0", &conversation_id.to_be_bytes()]);
    (hash % u64::from(VIRTUAL_SHARDS)) as u16
}

/// Returns the home virtual shard of a user, where rows keyed by the user live:
/// `SHA-256("tidings/user/v1" || 0x00 || user id)` taken as for [`conversation_shard`].
pub fn user_shard(user_id: &str) -> u16 {
    let hash = sha256_prefix(&[b"tidings/user/v1\0", user_id.as_bytes()]);
    (hash % u64::from(VIRTUAL_SHARDS)) as u16
}

/// Checks a user id: 1 to 64 bytes of ASCII letters, digits, `.`, `_`, `-` or `@`.
pub fn is_valid_user_id(user_id: &str) -> bool {
    !user_id.is_empty()
        && user_id.len() <= 64
        && user_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snowflake_ids_increase_and_encode_time() {
        let mut ids = Snowflake::new(7);
        let now = SNOWFLAKE_EPOCH_MS + 1_000;
        let first = ids.next_id(now);
        let second = ids.next_id(now);
        assert!(second > first);
        assert_eq!(snowflake_time_ms(first), now);
        assert_eq!((first >> SEQUENCE_BITS) & u64::from(MAX_NODE), 7);
    }

    #[test]
    fn snowflake_survives_clock_step_back() {
        let mut ids = Snowflake::new(1);
        let later = ids.next_id(SNOWFLAKE_EPOCH_MS + 5_000);
        let earlier_clock = ids.next_id(SNOWFLAKE_EPOCH_MS + 4_000);
        assert!(earlier_clock > later);
    }

    #[test]
    fn snowflake_overflows_into_next_millisecond() {
        let mut ids = Snowflake::new(1);
        let now = SNOWFLAKE_EPOCH_MS + 10;
        let mut previous = 0;
        for _ in 0..10_000 {
            let id = ids.next_id(now);
            assert!(id > previous);
            previous = id;
        }
    }

    #[test]
    fn hybrid_clock_is_monotonic_under_skew() {
        let mut clock = HybridClock::new();
        let a = clock.tick(1_000);
        clock.observe((5_000 << HLC_LOGICAL_BITS) + 3);
        let b = clock.tick(1_001);
        assert!(b > a);
        assert_eq!(hlc_time_ms(b), 5_000);
        assert_eq!(hlc_logical(b), 4);
    }

    #[test]
    fn direct_id_is_symmetric() {
        assert_eq!(
            direct_conversation_id("alice", "bob"),
            direct_conversation_id("bob", "alice")
        );
        assert_ne!(
            direct_conversation_id("alice", "bob"),
            direct_conversation_id("alice", "carol")
        );
    }

    /// Published test vectors: other implementations must compute the same values.
    #[test]
    fn hash_test_vectors() {
        assert_eq!(
            direct_conversation_id("alice", "bob"),
            0xf5c4_1d50_dfc9_9dbb
        );
        assert_eq!(conversation_shard(1), 215);
        assert_eq!(user_shard("alice"), 159);
    }

    #[test]
    fn user_id_validation() {
        assert!(is_valid_user_id("alice"));
        assert!(is_valid_user_id("a.b-c_d@example"));
        assert!(!is_valid_user_id(""));
        assert!(!is_valid_user_id("has space"));
        assert!(!is_valid_user_id(&"x".repeat(65)));
    }
}
