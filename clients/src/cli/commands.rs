//! The subcommands of the command-line client, each on a connected [`Client`].

use std::collections::HashSet;
use std::time::Duration;

use tidings_schema::ErrorCode;
use tidings_schema::ids::direct_conversation_id;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::output::{
    ack_json, ack_line, conversation_json, conversation_line, message_json, message_line,
};
use super::{Command, CommandError, GroupCommand, Target};
use crate::client::Client;
use crate::config::ClientConfig;

/// Upper bound on pages `history --all` reads, so a server that never reports the end
/// cannot keep the command running forever.
const MAX_HISTORY_PAGES: usize = 100_000;

pub(crate) async fn execute(config: ClientConfig, command: Command) -> Result<(), CommandError> {
    let client = Client::connect(config).await?;
    let result = match command {
        Command::Chat(target) => chat(&client, &target).await,
        Command::Send { target, text, json } => send(&client, &target, text, json).await,
        Command::Listen {
            conversation,
            count,
            timeout,
            resume: _,
        } => listen(&client, conversation, count, timeout).await,
        Command::Read { conversation, seq } => {
            super::receipts::read(&client, conversation, seq).await
        }
        Command::Receipts { conversation } => {
            super::receipts::receipts(&client, conversation).await
        }
        Command::Unread { conversation } => super::receipts::unread(&client, conversation).await,
        Command::History {
            conversation,
            before,
            limit,
            all,
            json,
        } => history(&client, conversation, before.unwrap_or(0), limit, all, json).await,
        Command::Conversations { json } => conversations(&client, json).await,
        Command::Group(group) => group_command(&client, group).await,
        Command::Presence(command) => super::presence::presence(&client, command).await,
        Command::Settings { hide_last_seen } => {
            super::presence::settings(&client, hide_last_seen).await
        }
    };
    client.close().await;
    result
}

/// Resolves a target to its conversation id and, for a direct chat, the peer.
fn resolve_target(client: &Client, target: &Target) -> (u64, Option<String>) {
    match (&target.to, target.conversation) {
        (Some(peer), _) => (
            direct_conversation_id(&client.user_id(), peer),
            Some(peer.clone()),
        ),
        (None, Some(conversation_id)) => (conversation_id, None),
        // clap's argument group requires exactly one of the two.
        (None, None) => unreachable!("clap requires --to or --conversation"),
    }
}

async fn send_to(
    client: &Client,
    conversation_id: u64,
    peer: &Option<String>,
    text: String,
) -> Result<tidings_schema::frame::SendAck, CommandError> {
    let ack = match peer {
        Some(peer) => client.send_direct(peer, text).await?,
        None => client.send(conversation_id, text).await?,
    };
    Ok(ack)
}

async fn send(
    client: &Client,
    target: &Target,
    text: String,
    json: bool,
) -> Result<(), CommandError> {
    let (conversation_id, peer) = resolve_target(client, target);
    let ack = send_to(client, conversation_id, &peer, text).await?;
    if json {
        println!("{}", ack_json(&ack));
    } else {
        println!("{}", ack_line(&ack));
    }
    Ok(())
}

/// Number of earlier messages `chat` prints when it starts.
const CHAT_BACKLOG: u32 = 20;

/// Prints the conversation's latest messages, oldest first, so a chat that starts after
/// others have written shows what it missed. Returns the highest seq printed (0 if none).
async fn print_recent(client: &Client, conversation_id: u64) -> Result<u64, CommandError> {
    let page = match client.history(conversation_id, 0, CHAT_BACKLOG).await {
        Ok(page) => page,
        // A direct conversation does not exist until its first message.
        Err(error) if error.code() == Some(ErrorCode::UnknownConversation) => return Ok(0),
        Err(error) => return Err(error.into()),
    };
    if page.next_before_seq != 0 {
        eprintln!("(earlier messages: history --conversation {conversation_id})");
    }
    for message in page.messages.iter().rev() {
        println!("{}", message_line(message));
    }
    Ok(page.messages.first().map_or(0, |message| message.seq))
}

async fn chat(client: &Client, target: &Target) -> Result<(), CommandError> {
    let (conversation_id, peer) = resolve_target(client, target);
    let mut deliveries = client.deliveries().ok_or_else(|| {
        CommandError::Failed("the delivery receiver was already taken".to_owned())
    })?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    // Messages this process sent, so their echo to this device is not printed twice.
    let mut sent_ids = HashSet::new();
    let shown_up_to = print_recent(client, conversation_id).await?;
    eprintln!("chatting in conversation {conversation_id}; Ctrl-D exits");

    loop {
        tokio::select! {
            line = lines.next_line() => {
                let line = line.map_err(|error| {
                    CommandError::Failed(format!("reading standard input failed: {error}"))
                })?;
                let Some(line) = line else { return Ok(()) };
                if line.trim().is_empty() {
                    continue;
                }
                let ack = send_to(client, conversation_id, &peer, line).await?;
                sent_ids.insert(ack.message_id);
                println!("  {}", ack_line(&ack));
            }
            stopped = client.stopped() => return Err(stopped.into()),
            message = deliveries.recv() => {
                let Some(message) = message else {
                    return Err(CommandError::Failed("the delivery stream closed".to_owned()));
                };
                if message.conversation_id == conversation_id
                    && message.seq > shown_up_to
                    && !sent_ids.contains(&message.message_id)
                {
                    println!("{}", message_line(&message));
                }
            }
        }
    }
}

async fn listen(
    client: &Client,
    conversation: Option<u64>,
    count: Option<u64>,
    timeout: Duration,
) -> Result<(), CommandError> {
    let mut deliveries = client.deliveries().ok_or_else(|| {
        CommandError::Failed("the delivery receiver was already taken".to_owned())
    })?;
    let _heartbeats = super::presence::keep_present(client);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut printed = 0u64;
    // Scripts wait for this line before sending, so no delivery is missed.
    eprintln!("listening as {}", client.user_id());

    while count.is_none_or(|count| printed < count) {
        let next = async {
            tokio::select! {
                stopped = client.stopped() => Err(stopped),
                message = deliveries.recv() => Ok(message),
            }
        };
        let message = match tokio::time::timeout_at(deadline, next).await {
            Ok(Err(stopped)) => return Err(stopped.into()),
            Ok(Ok(Some(message))) => message,
            Ok(Ok(None)) => {
                return Err(CommandError::Failed(
                    "the delivery stream closed".to_owned(),
                ));
            }
            Err(_) => {
                return match count {
                    Some(count) => Err(CommandError::Failed(format!(
                        "listen timed out after {} with {printed} of {count} deliveries",
                        humantime::format_duration(timeout)
                    ))),
                    None => Ok(()),
                };
            }
        };
        if conversation.is_none_or(|id| id == message.conversation_id) {
            println!("{}", message_json(&message));
            printed += 1;
        }
    }
    Ok(())
}

async fn history(
    client: &Client,
    conversation_id: u64,
    before_seq: u64,
    limit: u32,
    all: bool,
    json: bool,
) -> Result<(), CommandError> {
    let mut before_seq = before_seq;
    for _ in 0..MAX_HISTORY_PAGES {
        let page = client.history(conversation_id, before_seq, limit).await?;
        for message in &page.messages {
            if json {
                println!("{}", message_json(message));
            } else {
                println!("{}", message_line(message));
            }
        }

        if page.next_before_seq == 0 {
            return Ok(());
        }
        if !all {
            eprintln!(
                "(more: history --conversation {conversation_id} --before {}, or --all)",
                page.next_before_seq
            );
            return Ok(());
        }
        if before_seq != 0 && page.next_before_seq >= before_seq {
            return Err(CommandError::Failed(format!(
                "server returned next_before_seq {} after before_seq {before_seq}; stopping",
                page.next_before_seq
            )));
        }
        before_seq = page.next_before_seq;
    }
    Err(CommandError::Failed(format!(
        "history has more than {MAX_HISTORY_PAGES} pages; stopping"
    )))
}

async fn conversations(client: &Client, json: bool) -> Result<(), CommandError> {
    for info in client.conversations().await? {
        if json {
            println!("{}", conversation_json(&info));
        } else {
            println!("{}", conversation_line(&info));
        }
    }
    Ok(())
}

async fn group_command(client: &Client, command: GroupCommand) -> Result<(), CommandError> {
    let info = match command {
        GroupCommand::Create { name, members } => {
            let info = client.create_group(&name, &members).await?;
            println!("{}", info.conversation_id);
            return Ok(());
        }
        GroupCommand::Add {
            conversation,
            members,
        } => client.add_members(conversation, &members).await?,
        GroupCommand::Remove {
            conversation,
            members,
        } => client.remove_members(conversation, &members).await?,
        GroupCommand::Leave { conversation } => {
            client.leave(conversation).await?;
            println!("left conversation {conversation}");
            return Ok(());
        }
    };
    println!("{}", conversation_line(&info));
    Ok(())
}
