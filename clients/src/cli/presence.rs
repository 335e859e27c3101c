//! The presence commands: `presence watch` and `settings`.

use std::collections::HashMap;
use std::time::Duration;

use clap::Subcommand;
use serde_json::{Value, json};
use tidings_schema::presence::PresenceEntry;

use super::CommandError;
use crate::client::Client;
use crate::presence::{DEFAULT_HEARTBEAT_INTERVAL, PresenceEvent};

#[derive(Debug, Subcommand)]
pub enum PresenceCommand {
    /// Print one JSON line per presence change of the listed users: user, state and
    /// last_seen (UTC, RFC 3339; null when unknown or hidden). The first line of each user
    /// is their state when the watch starts.
    Watch {
        /// User ids to watch; each must share a conversation with you.
        #[arg(required = true)]
        users: Vec<String>,
        /// Stop after this many lines; reaching the timeout first is a failure.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this long, for example 20s or 2m.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

/// Runs a presence subcommand. Watching also keeps this device present.
pub(crate) async fn presence(
    client: &Client,
    command: PresenceCommand,
) -> Result<(), CommandError> {
    match command {
        PresenceCommand::Watch {
            users,
            count,
            timeout,
        } => watch(client, users, count, timeout).await,
    }
}

async fn watch(
    client: &Client,
    users: Vec<String>,
    count: Option<u64>,
    timeout: Duration,
) -> Result<(), CommandError> {
    let mut events = client.presence_events().ok_or_else(|| {
        CommandError::Failed("the presence receiver was already taken".to_owned())
    })?;
    let _heartbeats = keep_present(client);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut printer = ChangePrinter::default();

    let initial = client.watch_presence(users, Vec::new()).await?;
    for entry in &initial {
        printer.print(entry);
    }
    while count.is_none_or(|count| printer.printed < count) {
        let event = match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => break,
            Err(_) => {
                return match count {
                    Some(count) => Err(CommandError::Failed(format!(
                        "presence watch timed out after {} with {} of {count} lines",
                        humantime::format_duration(timeout),
                        printer.printed
                    ))),
                    None => Ok(()),
                };
            }
        };
        if let PresenceEvent::Update(update) = event {
            for entry in &update.entries {
                printer.print(entry);
            }
        }
    }
    Ok(())
}

/// Stops the heartbeat task when dropped.
pub(crate) struct Heartbeats(tokio::task::JoinHandle<()>);

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Keeps this device present until the returned guard is dropped.
pub(crate) fn keep_present(client: &Client) -> Heartbeats {
    Heartbeats(client.keep_present(DEFAULT_HEARTBEAT_INTERVAL))
}

/// Prints an entry only when it differs from the last one printed for its user, so
/// snapshots that repeat known states print nothing.
#[derive(Default)]
struct ChangePrinter {
    known: HashMap<String, PresenceEntry>,
    printed: u64,
}

impl ChangePrinter {
    fn print(&mut self, entry: &PresenceEntry) {
        if self.known.get(&entry.user) == Some(entry) {
            return;
        }
        self.known.insert(entry.user.clone(), entry.clone());
        println!("{}", presence_json(entry));
        self.printed += 1;
    }
}

/// Returns the JSON object of a presence entry.
pub fn presence_json(entry: &PresenceEntry) -> Value {
    let last_seen = match entry.last_seen_ms {
        0 => Value::Null,
        ms => Value::String(rfc3339_utc(ms)),
    };
    json!({
        "user": entry.user,
        "state": entry.state.as_str(),
        "last_seen": last_seen,
        "last_seen_ms": entry.last_seen_ms,
    })
}

/// Formats milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn rfc3339_utc(unix_ms: u64) -> String {
    let days = (unix_ms / 86_400_000) as i64;
    let ms_of_day = unix_ms % 86_400_000;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms_of_day / 3_600_000,
        (ms_of_day / 60_000) % 60,
        (ms_of_day / 1000) % 60,
        ms_of_day % 1000
    )
}

/// Converts days since 1970-01-01 to a proleptic Gregorian date, by Howard Hinnant's
/// `civil_from_days` algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Stores the last seen setting and prints the stored value.
pub(crate) async fn settings(client: &Client, hide_last_seen: bool) -> Result<(), CommandError> {
    let stored = client.set_hide_last_seen(hide_last_seen).await?;
    println!("{}", json!({ "hide_last_seen": stored }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidings_schema::presence::PresenceState;

    #[test]
    fn presence_commands_parse() {
        use clap::Parser;

        use crate::cli::{ClientArgs, Command};

        let args = ClientArgs::try_parse_from(["client", "presence", "watch", "alice", "bob"])
            .expect("watch parses");
        let Command::Presence(PresenceCommand::Watch { users, .. }) = args.command else {
            panic!("parsed as {:?}", args.command);
        };
        assert_eq!(users, ["alice", "bob"]);

        for (value, expected) in [("true", true), ("false", false)] {
            let args =
                ClientArgs::try_parse_from(["client", "settings", "--hide-last-seen", value])
                    .expect("settings parses");
            let Command::Settings { hide_last_seen } = args.command else {
                panic!("parsed as {:?}", args.command);
            };
            assert_eq!(hide_last_seen, expected);
        }
        assert!(ClientArgs::try_parse_from(["client", "presence", "watch"]).is_err());
    }

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_utc(1_733_322_896_789), "2024-12-04T14:34:56.789Z");
    }

    #[test]
    fn presence_json_has_user_state_and_last_seen() {
        let entry = PresenceEntry {
            user: "alice".to_owned(),
            state: PresenceState::Away,
            last_seen_ms: 0,
        };
        let value = presence_json(&entry);
        assert_eq!(value["user"], "alice");
        assert_eq!(value["state"], "away");
        assert!(value["last_seen"].is_null());
    }
}
