//! Scenario files: the TOML schema, parsing and range checks.
//!
//! A scenario describes both directions of one link. `uplink` is client to server, `downlink`
//! server to client. Every section is optional, and an absent section means no impairment of
//! that kind. Durations are humantime strings such as `"15ms"` or `"2s"`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

/// Error for a scenario file that does not parse or has a value out of range.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The TOML is malformed, a field is unknown or has the wrong type.
    #[error("invalid scenario file: {0}")]
    Parse(#[from] toml::de::Error),
    /// A field parsed but its value is not allowed.
    #[error("invalid scenario field `{field}`: {reason}")]
    Field {
        /// Dotted path of the field, for example `uplink.loss.rate`.
        field: String,
        /// The problem and the allowed values.
        reason: String,
    },
    /// No embedded scenario has this name and no file exists at this path.
    #[error(
        "unknown scenario `{0}`: run `tidings netsim list` for the embedded ones, or pass a path to a TOML file"
    )]
    Unknown(String),
    /// A scenario file could not be read.
    #[error("failed to read scenario file {path}: {source}")]
    Read {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A trace file could not be read or parsed.
    #[error("invalid trace file {path}: {reason}")]
    Trace {
        /// The trace path.
        path: PathBuf,
        /// The problem.
        reason: String,
    },
}

impl ScenarioError {
    fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Field {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// One named link description.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, as used on the command line.
    pub name: String,
    /// One-line description of the link.
    pub summary: String,
    /// Behaviour of the system under test that the scenario exercises.
    pub probes: String,
    /// Origin of the parameters (a measurement, a standard, a rule of thumb).
    pub source: String,
    /// Client-to-server impairments.
    #[serde(default)]
    pub uplink: DirectionConfig,
    /// Server-to-client impairments.
    #[serde(default)]
    pub downlink: DirectionConfig,
    /// NAT rebinding on the client side of the link.
    #[serde(default)]
    pub nat: Option<NatConfig>,
}

/// Impairments of one direction, applied in this order: blackhole, loss, corruption,
/// duplication, bottleneck queue, delay.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectionConfig {
    /// Packet loss.
    pub loss: Option<LossConfig>,
    /// One-way propagation delay and jitter.
    pub delay: Option<DelayConfig>,
    /// Packet duplication.
    pub duplicate: Option<ProbabilityConfig>,
    /// Corruption of one payload byte, with checksums recomputed.
    pub corrupt: Option<ProbabilityConfig>,
    /// Bottleneck: a fixed rate or an mm-link trace, behind a byte-accounted queue.
    pub rate: Option<RateConfig>,
    /// Periodic outage during which every packet is dropped.
    pub blackhole: Option<BlackholeConfig>,
}

/// Packet loss model.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "model", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LossConfig {
    /// Each packet is lost with probability `rate`, independently of the others.
    Independent {
        /// Loss probability, 0 to 1.
        rate: f64,
        /// After this many losses in a row the next packet is always delivered.
        #[serde(default)]
        max_consecutive: Option<u32>,
    },
    /// Two-state Markov chain (Gilbert-Elliott), one transition per packet.
    GilbertElliott {
        /// Probability of moving from the good to the bad state.
        p: f64,
        /// Probability of moving from the bad to the good state.
        r: f64,
        /// Loss probability in the good state.
        #[serde(default)]
        loss_good: f64,
        /// Loss probability in the bad state.
        #[serde(default = "one")]
        loss_bad: f64,
    },
}

fn one() -> f64 {
    1.0
}

/// Distribution of the jitter added to the base delay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JitterDistribution {
    /// Uniform in `[-jitter, +jitter]`.
    #[default]
    Uniform,
    /// Normal with mean 0 and standard deviation `jitter`.
    Normal,
    /// Pareto (Lomax) extra delay, always positive, with mean `jitter`.
    Pareto,
}

/// One-way delay.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DelayConfig {
    /// Base one-way delay.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub base: Duration,
    /// Jitter scale; its meaning depends on `distribution`.
    #[serde(
        default,
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub jitter: Duration,
    /// Jitter distribution.
    #[serde(default)]
    pub distribution: JitterDistribution,
    /// Whether a packet may overtake an earlier one when its jitter is smaller. When false,
    /// a packet waits for the one before it, as on a real FIFO path.
    #[serde(default)]
    pub reorder: bool,
    /// Pareto shape parameter (alpha), above 1 so the mean exists.
    #[serde(default = "default_pareto_shape")]
    pub pareto_shape: f64,
}

fn default_pareto_shape() -> f64 {
    3.0
}

/// A per-packet probability.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProbabilityConfig {
    /// Probability, 0 to 1.
    pub rate: f64,
}

/// Queue management at the bottleneck.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Aqm {
    /// Drop arriving packets when the queue is full.
    #[default]
    DropTail,
    /// CoDel (RFC 8289) at dequeue, with the queue limit as a hard cap.
    Codel,
}

/// Bottleneck rate and queue.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Fixed rate in megabits per second (10^6 bit/s), counting whole IP packets.
    pub mbit: Option<f64>,
    /// Path of an mm-link trace. Scenarios that leave both `mbit` and `trace` unset take the
    /// trace from the command line.
    pub trace: Option<PathBuf>,
    /// Whether the trace starts again from its beginning when it ends.
    #[serde(default = "default_true")]
    pub repeat: bool,
    /// Queue limit in packets.
    pub queue_packets: Option<u32>,
    /// Queue limit in bytes of IP packets.
    pub queue_bytes: Option<u64>,
    /// Queue management.
    #[serde(default)]
    pub aqm: Aqm,
    /// CoDel target sojourn time.
    #[serde(
        default = "default_codel_target",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub codel_target: Duration,
    /// CoDel interval.
    #[serde(
        default = "default_codel_interval",
        deserialize_with = "de_duration",
        serialize_with = "ser_duration"
    )]
    pub codel_interval: Duration,
}

fn default_true() -> bool {
    true
}

fn default_codel_target() -> Duration {
    Duration::from_millis(5)
}

fn default_codel_interval() -> Duration {
    Duration::from_millis(100)
}

/// Blackhole schedule: the link passes traffic for `pass_for`, then drops everything for
/// `drop_for`, and repeats unless `repeat` is false.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeConfig {
    /// Time the link works before each outage.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub pass_for: Duration,
    /// Length of each outage.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub drop_for: Duration,
    /// Whether the cycle repeats.
    #[serde(default = "default_true")]
    pub repeat: bool,
}

/// Part of the public source that a NAT rebinding changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RebindKind {
    /// The public source port changes, the address stays.
    Port,
    /// The public source address changes, the port stays.
    Address,
}

/// NAT rebinding schedule.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NatConfig {
    /// Part of the source changed at each rebinding.
    pub rebind: RebindKind,
    /// Time of the first rebinding after the link starts.
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub first: Duration,
    /// Time between later rebindings; absent means only one rebinding.
    #[serde(
        default,
        deserialize_with = "de_opt_duration",
        serialize_with = "ser_opt_duration"
    )]
    pub every: Option<Duration>,
}

impl Scenario {
    /// Parses and checks a scenario file.
    pub fn from_toml(text: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario = toml::from_str(text)?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Checks every value against its allowed range.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        if self.name.trim().is_empty() {
            return Err(ScenarioError::field("name", "must not be empty"));
        }
        self.uplink.validate("uplink")?;
        self.downlink.validate("downlink")?;
        if let Some(nat) = &self.nat
            && nat.every == Some(Duration::ZERO)
        {
            return Err(ScenarioError::field("nat.every", "must be above zero"));
        }
        Ok(())
    }

    /// Serializes the scenario back to TOML, for `show` on a resolved scenario.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|error| format!("# not printable: {error}"))
    }
}

impl DirectionConfig {
    fn validate(&self, prefix: &str) -> Result<(), ScenarioError> {
        if let Some(loss) = &self.loss {
            match loss {
                LossConfig::Independent {
                    rate,
                    max_consecutive,
                } => {
                    probability(&format!("{prefix}.loss.rate"), *rate)?;
                    if *max_consecutive == Some(0) && *rate > 0.0 {
                        return Err(ScenarioError::field(
                            format!("{prefix}.loss.max_consecutive"),
                            "must be at least 1, or absent for no cap",
                        ));
                    }
                }
                LossConfig::GilbertElliott {
                    p,
                    r,
                    loss_good,
                    loss_bad,
                } => {
                    probability(&format!("{prefix}.loss.p"), *p)?;
                    probability(&format!("{prefix}.loss.r"), *r)?;
                    probability(&format!("{prefix}.loss.loss_good"), *loss_good)?;
                    probability(&format!("{prefix}.loss.loss_bad"), *loss_bad)?;
                    if *r == 0.0 && *p > 0.0 {
                        return Err(ScenarioError::field(
                            format!("{prefix}.loss.r"),
                            "must be above zero, or the link never leaves the bad state",
                        ));
                    }
                }
            }
        }
        if let Some(delay) = &self.delay
            && (!delay.pareto_shape.is_finite() || delay.pareto_shape <= 1.0)
        {
            return Err(ScenarioError::field(
                format!("{prefix}.delay.pareto_shape"),
                format!(
                    "must be above 1 so the mean exists, got {}",
                    delay.pareto_shape
                ),
            ));
        }
        if let Some(duplicate) = &self.duplicate {
            probability(&format!("{prefix}.duplicate.rate"), duplicate.rate)?;
        }
        if let Some(corrupt) = &self.corrupt {
            probability(&format!("{prefix}.corrupt.rate"), corrupt.rate)?;
        }
        if let Some(rate) = &self.rate {
            rate.validate(prefix)?;
        }
        if let Some(blackhole) = &self.blackhole
            && blackhole.drop_for.is_zero()
        {
            return Err(ScenarioError::field(
                format!("{prefix}.blackhole.drop_for"),
                "must be above zero",
            ));
        }
        Ok(())
    }
}

impl RateConfig {
    fn validate(&self, prefix: &str) -> Result<(), ScenarioError> {
        if let Some(mbit) = self.mbit {
            if !mbit.is_finite() || mbit <= 0.0 {
                return Err(ScenarioError::field(
                    format!("{prefix}.rate.mbit"),
                    format!("must be a positive number of megabits per second, got {mbit}"),
                ));
            }
            if self.trace.is_some() {
                return Err(ScenarioError::field(
                    format!("{prefix}.rate.trace"),
                    "cannot be set together with `mbit`; choose a fixed rate or a trace",
                ));
            }
        }
        if self.queue_packets == Some(0) {
            return Err(ScenarioError::field(
                format!("{prefix}.rate.queue_packets"),
                "must be at least 1",
            ));
        }
        if self.queue_bytes.is_some_and(|bytes| bytes < 1500) {
            return Err(ScenarioError::field(
                format!("{prefix}.rate.queue_bytes"),
                "must be at least 1500 so one full-size packet fits",
            ));
        }
        if self.aqm == Aqm::Codel && (self.codel_target.is_zero() || self.codel_interval.is_zero())
        {
            return Err(ScenarioError::field(
                format!("{prefix}.rate.codel_interval"),
                "CoDel target and interval must be above zero",
            ));
        }
        Ok(())
    }
}

fn probability(field: &str, value: f64) -> Result<(), ScenarioError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(ScenarioError::field(
            field,
            format!("must be a probability from 0 to 1, got {value}"),
        ))
    }
}

fn de_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|error| {
        serde::de::Error::custom(format!(
            "invalid duration `{text}`: {error}; write for example \"15ms\" or \"2s\""
        ))
    })
}

fn de_opt_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    de_duration(deserializer).map(Some)
}

fn ser_duration<S: serde::Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&humantime::format_duration(*value).to_string())
}

fn ser_opt_duration<S: serde::Serializer>(
    value: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(duration) => ser_duration(duration, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        name = "t"
        summary = "s"
        probes = "p"
        source = "src"
    "#;

    fn field_of(error: ScenarioError) -> String {
        match error {
            ScenarioError::Field { field, .. } => field,
            other => panic!("expected a field error, got {other}"),
        }
    }

    #[test]
    fn to_toml_round_trips() {
        let text = crate::scenarios::embedded_text("chaos-reorder-dup").unwrap();
        let scenario = Scenario::from_toml(text).unwrap();
        let again = Scenario::from_toml(&scenario.to_toml()).unwrap();
        assert_eq!(again.to_toml(), scenario.to_toml());
        assert_eq!(
            again.uplink.delay.unwrap().jitter,
            Duration::from_millis(15)
        );
    }

    #[test]
    fn minimal_file_parses() {
        let scenario = Scenario::from_toml(MINIMAL).unwrap();
        assert!(scenario.uplink.loss.is_none());
        assert!(scenario.nat.is_none());
    }

    #[test]
    fn out_of_range_loss_names_field() {
        let text = format!("{MINIMAL}\n[downlink.loss]\nmodel = \"independent\"\nrate = 1.5\n");
        let error = Scenario::from_toml(&text).unwrap_err();
        assert_eq!(field_of(error), "downlink.loss.rate");
    }

    #[test]
    fn unknown_field_is_named() {
        let text = format!("{MINIMAL}\n[uplink.delay]\nbase = \"10ms\"\njiter = \"1ms\"\n");
        let message = Scenario::from_toml(&text).unwrap_err().to_string();
        assert!(message.contains("jiter"), "{message}");
    }

    #[test]
    fn bad_duration_is_named() {
        let text = format!("{MINIMAL}\n[uplink.delay]\nbase = \"ten ms\"\n");
        let message = Scenario::from_toml(&text).unwrap_err().to_string();
        assert!(message.contains("ten ms"), "{message}");
        assert!(message.contains("base"), "{message}");
    }

    #[test]
    fn rate_and_trace_together_rejected() {
        let text = format!("{MINIMAL}\n[uplink.rate]\nmbit = 10.0\ntrace = \"/tmp/x\"\n");
        let error = Scenario::from_toml(&text).unwrap_err();
        assert_eq!(field_of(error), "uplink.rate.trace");
    }

    #[test]
    fn zero_nat_interval_rejected() {
        let text = format!("{MINIMAL}\n[nat]\nrebind = \"port\"\nfirst = \"1s\"\nevery = \"0s\"\n");
        let error = Scenario::from_toml(&text).unwrap_err();
        assert_eq!(field_of(error), "nat.every");
    }
}
