//! Chat workloads: which users talk in which conversations, and when each message is sent.
//!
//! Everything here is plain data and arithmetic with no I/O, so the schedule for a seed is
//! the same on every run and every transport. [`schedule`] turns a [`WorkloadConfig`] into
//! a time-ordered list of [`PlannedSend`]s that the runner replays against a real node.

use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

/// Stream number of the workload generator, kept apart from the impairment streams.
const WORKLOAD_STREAM: u64 = 101;

/// Maximum number of sends one run may plan, so a typo in a rate cannot exhaust memory.
pub const MAX_PLANNED_SENDS: usize = 1_000_000;

/// Whether a conversation is a steady stream of large messages or a trickle of small ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConversationKind {
    /// A steady stream of large messages.
    Busy,
    /// Small messages at a low rate.
    Quiet,
}

impl ConversationKind {
    /// Returns the name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationKind::Busy => "busy",
            ConversationKind::Quiet => "quiet",
        }
    }
}

/// Distribution of the gaps between two messages of one conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// A fixed interval of `1 / rate`, starting at a random phase.
    Steady,
    /// Exponential gaps with mean `1 / rate` (a Poisson process).
    Poisson,
}

/// Maximum number of clients in a workload: each is a connection from one process, and each
/// token is minted by running `tidings token`.
pub const MAX_CLIENTS: usize = 1_000;

/// Settings shared by all conversations of one kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationClass {
    /// Number of conversations of this kind.
    pub count: usize,
    /// Members per conversation: 2 is a one-to-one (direct) conversation, more is a group.
    pub members: usize,
    /// Messages per second in each conversation.
    pub rate: f64,
    /// Gap distribution.
    pub arrival: Arrival,
    /// Smallest message body in bytes.
    pub size_min: usize,
    /// Largest message body in bytes; sizes are uniform between the two.
    pub size_max: usize,
}

/// A complete workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadConfig {
    /// Number of clients, one user and one connection each.
    pub clients: usize,
    /// Busy conversations.
    pub busy: ConversationClass,
    /// Quiet conversations.
    pub quiet: ConversationClass,
    /// Interval of presence heartbeats in milliseconds; 0 turns them off.
    pub heartbeat_ms: u64,
}

impl Default for WorkloadConfig {
    /// Four clients, one busy direct conversation of 8–16 KiB messages at 20 per second
    /// (about 2 Mbit/s) and three quiet groups of three with 100–300-byte messages at
    /// 2 per second. Busy conversation 0 and quiet conversation 0 share clients 0 and 1.
    /// Their messages therefore travel on the same connections.
    fn default() -> Self {
        WorkloadConfig {
            clients: 4,
            busy: ConversationClass {
                count: 1,
                members: 2,
                rate: 20.0,
                arrival: Arrival::Steady,
                size_min: 8 * 1024,
                size_max: 16 * 1024,
            },
            quiet: ConversationClass {
                count: 3,
                members: 3,
                rate: 2.0,
                arrival: Arrival::Poisson,
                size_min: 100,
                size_max: 300,
            },
            heartbeat_ms: 5_000,
        }
    }
}

/// A workload setting that cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadError {
    /// A field has a value outside its range.
    #[error("invalid workload field `{field}`: {reason}")]
    Invalid {
        /// Dotted field name.
        field: String,
        /// The problem and the allowed range.
        reason: String,
    },
    /// The file is not valid TOML for a workload.
    #[error("{0}")]
    Parse(#[from] toml::de::Error),
}

impl WorkloadConfig {
    /// Parses a workload from TOML; missing fields take their defaults, also inside the
    /// `[busy]` and `[quiet]` tables.
    pub fn from_toml(text: &str) -> Result<Self, WorkloadError> {
        let overrides: toml::Table = toml::from_str(text)?;
        let mut merged = WorkloadConfig::default().to_table();
        for (key, value) in overrides {
            match (merged.get_mut(&key), value) {
                (Some(toml::Value::Table(class)), toml::Value::Table(fields)) => {
                    class.extend(fields);
                }
                (_, value) => {
                    merged.insert(key, value);
                }
            }
        }
        let config: WorkloadConfig = toml::Value::Table(merged).try_into()?;
        config.validate()?;
        Ok(config)
    }

    /// Returns the workload as a TOML table.
    fn to_table(&self) -> toml::Table {
        // NOTE: every field is a number, a string or a table of those, which TOML encodes.
        toml::Table::try_from(self).expect("a workload encodes as a TOML table")
    }

    /// Checks every range the runner relies on.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        if !(2..=MAX_CLIENTS).contains(&self.clients) {
            return Err(invalid(
                "clients",
                &format!("use 2 to {MAX_CLIENTS} clients"),
            ));
        }
        for (name, class) in [("busy", &self.busy), ("quiet", &self.quiet)] {
            class.validate(name, self.clients)?;
        }
        if self.busy.count + self.quiet.count == 0 {
            return Err(invalid("busy.count", "the workload has no conversation"));
        }
        Ok(())
    }

    /// Returns every conversation: busy ones first, then quiet ones.
    pub fn conversations(&self) -> Vec<PlannedConversation> {
        let mut all = Vec::new();
        for (kind, class) in [
            (ConversationKind::Busy, &self.busy),
            (ConversationKind::Quiet, &self.quiet),
        ] {
            for index in 0..class.count {
                // Conversation `index` of each kind starts at client `index`, so busy and
                // quiet conversations with the same index share their first clients.
                let members = (0..class.members)
                    .map(|offset| (index + offset) % self.clients)
                    .collect();
                all.push(PlannedConversation {
                    kind,
                    index,
                    members,
                });
            }
        }
        all
    }
}

impl ConversationClass {
    fn validate(&self, name: &str, clients: usize) -> Result<(), WorkloadError> {
        if self.count == 0 {
            return Ok(());
        }
        if self.members < 2 || self.members > clients {
            return Err(invalid(
                &format!("{name}.members"),
                &format!("use 2 to {clients} (the number of clients)"),
            ));
        }
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 1000.0) {
            return Err(invalid(
                &format!("{name}.rate"),
                "use a rate above 0 and at most 1000 messages per second",
            ));
        }
        if self.size_min > self.size_max || self.size_max > 60 * 1024 {
            return Err(invalid(
                &format!("{name}.size_min"),
                "use size_min <= size_max <= 61440 bytes (the node accepts at most 64 KiB)",
            ));
        }
        Ok(())
    }

    fn class_of(config: &WorkloadConfig, kind: ConversationKind) -> &ConversationClass {
        match kind {
            ConversationKind::Busy => &config.busy,
            ConversationKind::Quiet => &config.quiet,
        }
    }
}

fn invalid(field: &str, reason: &str) -> WorkloadError {
    WorkloadError::Invalid {
        field: field.to_owned(),
        reason: reason.to_owned(),
    }
}

/// One conversation of the workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedConversation {
    /// Busy or quiet.
    pub kind: ConversationKind,
    /// Index among the conversations of its kind.
    pub index: usize,
    /// Client indices of the members; the first one creates a group.
    pub members: Vec<usize>,
}

/// One message to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedSend {
    /// Offset from the start of the run.
    pub at: Duration,
    /// Index into [`WorkloadConfig::conversations`].
    pub conversation: usize,
    /// Client index of the sender, a member of the conversation.
    pub sender: usize,
    /// Body size in bytes.
    pub size: usize,
}

/// Plans every send of a run of length `duration`, ordered by time.
///
/// The same config, seed and duration always give the same plan. At most
/// [`MAX_PLANNED_SENDS`] sends are planned.
pub fn schedule(config: &WorkloadConfig, seed: u64, duration: Duration) -> Vec<PlannedSend> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(WORKLOAD_STREAM);
    let end = duration.as_secs_f64();
    let mut sends = Vec::new();

    for (position, conversation) in config.conversations().iter().enumerate() {
        let class = ConversationClass::class_of(config, conversation.kind);
        let interval = 1.0 / class.rate;
        let mut time = match class.arrival {
            Arrival::Steady => unit(&mut rng) * interval,
            Arrival::Poisson => exponential(&mut rng, interval),
        };
        while time < end && sends.len() < MAX_PLANNED_SENDS {
            let member = pick(&mut rng, conversation.members.len());
            let size = class.size_min + pick(&mut rng, class.size_max - class.size_min + 1);
            sends.push(PlannedSend {
                at: Duration::from_secs_f64(time),
                conversation: position,
                sender: conversation.members[member],
                size,
            });
            time += match class.arrival {
                Arrival::Steady => interval,
                Arrival::Poisson => exponential(&mut rng, interval),
            };
        }
    }
    sends.sort_by_key(|send| (send.at, send.conversation));
    sends
}

/// Returns a float uniform in `[0, 1)` from the top 53 bits.
fn unit(rng: &mut ChaCha8Rng) -> f64 {
    const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
    (rng.next_u64() >> 11) as f64 * SCALE
}

fn exponential(rng: &mut ChaCha8Rng, mean: f64) -> f64 {
    -(1.0 - unit(rng)).ln() * mean
}

/// Returns an index uniform in `0..len`; `len` must be at least 1.
fn pick(rng: &mut ChaCha8Rng, len: usize) -> usize {
    ((unit(rng) * len as f64) as usize).min(len - 1)
}

/// Marker that starts every workload message body, followed by the fields of [`BodyHeader`].
const BODY_MARKER: &str = "netsim";

/// The fields a workload message carries at the start of its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyHeader {
    /// Index of the send in the plan, unique within a run.
    pub send_index: u64,
    /// Microseconds from the run's clock origin to the moment of sending.
    pub sent_at_micros: u64,
}

impl BodyHeader {
    /// Encodes the header and pads the body with `x` to `size` bytes (longer when the
    /// header alone exceeds `size`).
    pub fn encode(&self, size: usize) -> String {
        let mut body = format!("{BODY_MARKER} {} {} ", self.send_index, self.sent_at_micros);
        if body.len() < size {
            body.extend(std::iter::repeat_n('x', size - body.len()));
        }
        body
    }

    /// Parses the header of a workload body; `None` for any other body.
    pub fn decode(body: &str) -> Option<Self> {
        let mut fields = body.splitn(4, ' ');
        if fields.next()? != BODY_MARKER {
            return None;
        }
        let send_index = fields.next()?.parse().ok()?;
        let sent_at_micros = fields.next()?.parse().ok()?;
        Some(BodyHeader {
            send_index,
            sent_at_micros,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_repeats_for_a_seed() {
        let config = WorkloadConfig::default();
        let first = schedule(&config, 7, Duration::from_secs(10));
        let second = schedule(&config, 7, Duration::from_secs(10));
        assert_eq!(first, second);
        assert_ne!(first, schedule(&config, 8, Duration::from_secs(10)));
    }

    #[test]
    fn schedule_is_ordered_and_in_range() {
        let config = WorkloadConfig::default();
        let duration = Duration::from_secs(10);
        let plan = schedule(&config, 1, duration);
        let conversations = config.conversations();
        assert!(plan.windows(2).all(|pair| pair[0].at <= pair[1].at));
        for send in &plan {
            assert!(send.at < duration);
            let conversation = &conversations[send.conversation];
            assert!(conversation.members.contains(&send.sender));
            let class = ConversationClass::class_of(&config, conversation.kind);
            assert!((class.size_min..=class.size_max).contains(&send.size));
        }
    }

    #[test]
    fn steady_rate_gives_exact_count() {
        let config = WorkloadConfig::default();
        let plan = schedule(&config, 3, Duration::from_secs(10));
        let busy = plan.iter().filter(|send| send.conversation == 0).count();
        // 20 per second for 10 s at a phase inside the first interval.
        assert_eq!(busy, 200);
    }

    #[test]
    fn poisson_rate_is_close_to_mean() {
        let mut config = WorkloadConfig::default();
        config.busy.count = 0;
        config.quiet.count = 1;
        config.quiet.rate = 50.0;
        let plan = schedule(&config, 11, Duration::from_secs(100));
        let observed = plan.len() as f64;
        // 5000 expected; the standard deviation of a Poisson count is about 71.
        assert!((observed - 5000.0).abs() < 400.0, "observed {observed}");
    }

    #[test]
    fn busy_and_quiet_share_first_clients() {
        let conversations = WorkloadConfig::default().conversations();
        assert_eq!(conversations[0].kind, ConversationKind::Busy);
        assert_eq!(conversations[0].members, vec![0, 1]);
        assert_eq!(conversations[1].kind, ConversationKind::Quiet);
        assert_eq!(conversations[1].members, vec![0, 1, 2]);
        assert_eq!(conversations[3].members, vec![2, 3, 0]);
    }

    #[test]
    fn validate_rejects_bad_fields() {
        let mut config = WorkloadConfig::default();
        config.quiet.members = 9;
        assert!(config.validate().is_err());

        let mut config = WorkloadConfig::default();
        config.busy.rate = 0.0;
        assert!(config.validate().is_err());

        let config = WorkloadConfig {
            clients: 1,
            ..WorkloadConfig::default()
        };
        assert!(config.validate().is_err());

        let config = WorkloadConfig {
            clients: MAX_CLIENTS + 1,
            ..WorkloadConfig::default()
        };
        assert!(config.validate().is_err());

        assert!(WorkloadConfig::default().validate().is_ok());
    }

    #[test]
    fn from_toml_fills_partial_tables() {
        let config = WorkloadConfig::from_toml(
            "[busy]
rate = 5.0
",
        )
        .unwrap();
        assert_eq!(config.busy.rate, 5.0);
        assert_eq!(
            config.busy.size_max,
            WorkloadConfig::default().busy.size_max
        );
        assert_eq!(config.quiet, WorkloadConfig::default().quiet);

        let unknown = WorkloadConfig::from_toml(
            "[busy]
colour = 1
",
        )
        .unwrap_err();
        assert!(unknown.to_string().contains("colour"), "{unknown}");
        let zero_rate = WorkloadConfig::from_toml(
            "[quiet]
rate = 0.0
",
        )
        .unwrap_err();
        assert!(zero_rate.to_string().contains("quiet.rate"), "{zero_rate}");
    }

    #[test]
    fn from_toml_overrides_fields() {
        let text = "clients = 6\n[quiet]\ncount = 2\nmembers = 4\nrate = 1.0\n\
                    arrival = \"steady\"\nsize_min = 50\nsize_max = 60\n";
        let config = WorkloadConfig::from_toml(text).unwrap();
        assert_eq!(config.clients, 6);
        assert_eq!(config.quiet.members, 4);
        assert_eq!(config.busy, WorkloadConfig::default().busy);
        assert!(WorkloadConfig::from_toml("clients = 6\nbogus = 1\n").is_err());
    }

    #[test]
    fn body_header_round_trips() {
        let header = BodyHeader {
            send_index: 42,
            sent_at_micros: 123_456,
        };
        let body = header.encode(200);
        assert_eq!(body.len(), 200);
        assert_eq!(BodyHeader::decode(&body), Some(header));
        assert_eq!(BodyHeader::decode("hello 1 2 "), None);
        assert!(header.encode(3).len() > 3);
    }
}
