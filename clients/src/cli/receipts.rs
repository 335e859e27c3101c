//! The receipt and sync subcommands: `read`, `receipts`, `unread` and `listen --resume`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tidings_schema::receipt::{InboxEntry, ReceiptList};

use super::CommandError;
use super::output::message_json;
use crate::client::Client;
use crate::config::ClientConfig;
use crate::sync::SyncCursors;

pub(crate) async fn read(
    client: &Client,
    conversation_id: u64,
    seq: u64,
) -> Result<(), CommandError> {
    let receipt = client.mark_read(conversation_id, seq).await?;
    println!(
        "{}",
        json!({
            "conversation": conversation_id.to_string(),
            "user": receipt.user_id,
            "delivered_seq": receipt.delivered_seq,
            "read_seq": receipt.read_seq,
        })
    );
    Ok(())
}

pub(crate) async fn receipts(client: &Client, conversation_id: u64) -> Result<(), CommandError> {
    let list = client.receipts(conversation_id).await?;
    println!("{}", receipts_json(&list));
    Ok(())
}

pub(crate) async fn unread(client: &Client, conversation_id: u64) -> Result<(), CommandError> {
    let entry = client.unread(conversation_id).await?;
    println!("{}", entry_json(&entry));
    Ok(())
}

/// Returns the JSON object of a conversation's receipts: one row per member.
pub fn receipts_json(list: &ReceiptList) -> Value {
    let members: Vec<Value> = list
        .receipts
        .iter()
        .map(|receipt| {
            json!({
                "user": receipt.user_id,
                "delivered_seq": receipt.delivered_seq,
                "read_seq": receipt.read_seq,
            })
        })
        .collect();
    json!({
        "conversation": list.conversation_id.to_string(),
        "last_seq": list.last_seq,
        "members": members,
    })
}

/// Returns the JSON object of an inbox entry.
pub fn entry_json(entry: &InboxEntry) -> Value {
    json!({
        "conversation": entry.conversation_id.to_string(),
        "last_seq": entry.last_seq,
        "read_seq": entry.read_seq,
        "unread": entry.unread_count,
        "marked_unread": entry.marked_unread,
    })
}

/// Options of `listen --resume`.
pub(crate) struct ResumeListen {
    pub conversation: Option<u64>,
    pub count: Option<u64>,
    pub timeout: Duration,
}

/// Connects from the cursors saved for this user and device, prints the backlog and then
/// live deliveries as JSON lines, and saves the cursors after every printed message.
pub(crate) async fn listen_resume(
    config: ClientConfig,
    data_dir: &Path,
    options: ResumeListen,
) -> Result<(), CommandError> {
    let path = cursor_path(data_dir, &config.token, &config.device_id);
    let saved = load_cursors(&path)?;
    let client = Client::connect_resuming(config, &saved).await?;
    let result = print_deliveries(&client, &path, &options).await;
    let saved = save_cursors(&path, &client.sync_cursors());
    client.close().await;
    result.and(saved)
}

async fn print_deliveries(
    client: &Client,
    path: &Path,
    options: &ResumeListen,
) -> Result<(), CommandError> {
    let mut deliveries = client.deliveries().ok_or_else(|| {
        CommandError::Failed("the delivery receiver was already taken".to_owned())
    })?;
    let deadline = tokio::time::Instant::now() + options.timeout;
    let mut printed = 0u64;
    eprintln!("listening as {} from saved cursors", client.user_id());
    while options.count.is_none_or(|count| printed < count) {
        let message = match tokio::time::timeout_at(deadline, deliveries.recv()).await {
            Ok(Some(message)) => message,
            Ok(None) => {
                return Err(CommandError::Failed(
                    "the delivery stream closed".to_owned(),
                ));
            }
            Err(_) => {
                return match options.count {
                    Some(count) => Err(CommandError::Failed(format!(
                        "listen timed out after {} with {printed} of {count} deliveries",
                        humantime::format_duration(options.timeout)
                    ))),
                    None => Ok(()),
                };
            }
        };
        if options
            .conversation
            .is_none_or(|id| id == message.conversation_id)
        {
            println!("{}", message_json(&message));
            printed += 1;
        }
        save_cursors(path, &client.sync_cursors())?;
    }
    Ok(())
}

/// Returns `<data_dir>/cursors/<user>.<device>.json`, with the user read from the token.
fn cursor_path(data_dir: &Path, token: &str, device_id: &str) -> PathBuf {
    let user = token_subject(token).unwrap_or_else(|| "unknown-user".to_owned());
    let name = format!("{}.{}.json", file_safe(&user), file_safe(device_id));
    data_dir.join("cursors").join(name)
}

fn file_safe(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
            _ => '_',
        })
        .collect()
}

/// Reads the `sub` claim of a JWT without verifying it: only to name the cursor file,
/// since the server authenticates the token.
fn token_subject(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64url_decode(payload)?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("sub")?.as_str().map(str::to_owned)
}

fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for byte in text.bytes().filter(|&byte| byte != b'=') {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

fn load_cursors(path: &Path) -> Result<SyncCursors, CommandError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| {
            CommandError::Failed(format!(
                "cursor file {} is invalid ({error}); delete it to fetch the whole backlog",
                path.display()
            ))
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(SyncCursors::default()),
        Err(error) => Err(CommandError::Failed(format!(
            "reading cursor file {} failed: {error}",
            path.display()
        ))),
    }
}

/// Writes the cursors through a temporary file and a rename, so a crash leaves either
/// the old or the new file.
fn save_cursors(path: &Path, cursors: &SyncCursors) -> Result<(), CommandError> {
    let failed = |error: std::io::Error| {
        CommandError::Failed(format!(
            "saving cursors to {} failed: {error}",
            path.display()
        ))
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let json = serde_json::to_vec(cursors).expect("cursors serialize to JSON");
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, json).map_err(failed)?;
    std::fs::rename(&temporary, path).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_subject_reads_sub_claim() {
        // Header and payload of a JWT whose payload is {"sub":"alice","exp":1}.
        let token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MX0.c2ln";
        assert_eq!(token_subject(token).as_deref(), Some("alice"));
        assert_eq!(token_subject("not-a-jwt"), None);
    }

    #[test]
    fn cursors_survive_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = cursor_path(dir.path(), "x.eyJzdWIiOiJhbGljZSJ9.y", "phone/1");
        assert!(
            path.ends_with("cursors/alice.phone_1.json"),
            "{}",
            path.display()
        );
        assert_eq!(load_cursors(&path).unwrap(), SyncCursors::default());

        let mut cursors = SyncCursors {
            inbox_cursor: 42,
            ..SyncCursors::default()
        };
        cursors.conversations.insert(u64::MAX.to_string(), 7);
        save_cursors(&path, &cursors).unwrap();
        assert_eq!(load_cursors(&path).unwrap(), cursors);
    }
}
