//! The command-line client, embedded in the main binary as `tidings client ...`.
//!
//! [`ClientArgs`] contains the global options and the subcommand; [`run`] connects,
//! executes the subcommand and maps failures to `error: ...` on stderr and a non-zero
//! exit code.

mod commands;
mod output;
mod presence;
mod receipts;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tidings_schema::Rejection;

use crate::config::{ClientConfig, DEFAULT_SERVER, Transport};
use crate::error::{ClientError, ConnectError};

pub use output::{ack_json, conversation_json, message_json, message_line};
pub use presence::{PresenceCommand, presence_json};

/// Exit code of a run that failed after its arguments were accepted.
const EXIT_FAILURE: u8 = 1;
/// Exit code of invalid or missing arguments.
const EXIT_USAGE: u8 = 2;

/// Talk to a Tidings server from the command line.
#[derive(Debug, Parser)]
#[command(name = "client")]
pub struct ClientArgs {
    /// Server address as host:port.
    #[arg(long, global = true, default_value = DEFAULT_SERVER)]
    pub server: String,
    /// Bearer token (a JWT); see `tidings token`.
    #[arg(long, global = true, env = "TIDINGS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Device id, stable across runs [default: cli-<hostname>].
    #[arg(long, global = true)]
    pub device: Option<String>,
    /// PEM file with the CA certificate to trust [default: <data-dir>/tls/ca.pem].
    #[arg(long, global = true)]
    pub cert: Option<PathBuf>,
    /// Data directory of a local `tidings serve`, where its development CA lives.
    #[arg(long, global = true, default_value = "./tidings-data")]
    pub data_dir: PathBuf,
    /// Transport: quic, ws (the WebSocket fallback over TCP), or auto (QUIC, then ws when
    /// QUIC gets no connection within 3 s).
    #[arg(long, global = true, default_value = "auto")]
    pub transport: Transport,
    /// WebSocket URL for the ws transport [default: ws://HOST:8080/v1/ws with the host of
    /// --server, wss:// when that host is not loopback].
    #[arg(long, global = true)]
    pub ws_url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Chat interactively: each line typed is sent, incoming messages print as they
    /// arrive. Ctrl-D exits.
    Chat(Target),
    /// Send one message and print its acknowledgement.
    Send {
        #[command(flatten)]
        target: Target,
        /// Message text.
        text: String,
        /// Print the acknowledgement as a JSON object, 64-bit ids as decimal strings.
        #[arg(long)]
        json: bool,
    },
    /// Print live deliveries as JSON lines, 64-bit ids as decimal strings.
    Listen {
        /// Print only deliveries of this conversation.
        #[arg(long)]
        conversation: Option<u64>,
        /// Stop after this many deliveries; reaching the timeout first is a failure.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this long, for example 20s or 2m.
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Continue from this device's saved cursors (in <data-dir>/cursors/): print every
        /// message since, then live ones, and save the cursors as messages print. Without
        /// a saved file every message the user can see is printed.
        #[arg(long)]
        resume: bool,
    },
    /// Mark every message up to a seq as read; prints the stored receipt as JSON.
    Read {
        #[arg(long)]
        conversation: u64,
        /// Seq of the newest message read; the server clamps it to the last seq.
        #[arg(long)]
        seq: u64,
    },
    /// Print every member's delivered and read seq as JSON.
    Receipts {
        #[arg(long)]
        conversation: u64,
    },
    /// Print a conversation's unread count, read seq and mark-unread flag as JSON.
    Unread {
        #[arg(long)]
        conversation: u64,
    },
    /// Print a conversation's history, newest first.
    History {
        #[arg(long)]
        conversation: u64,
        /// Start below this seq instead of at the newest message.
        #[arg(long)]
        before: Option<u64>,
        /// Messages per page.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Follow pages to the first message instead of printing one page.
        #[arg(long)]
        all: bool,
        /// Print one JSON object per message.
        #[arg(long)]
        json: bool,
    },
    /// List the conversations you are a member of.
    Conversations {
        /// Print one JSON object per conversation.
        #[arg(long)]
        json: bool,
    },
    /// Create and manage groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Watch other users' presence.
    #[command(subcommand)]
    Presence(PresenceCommand),
    /// Change your settings.
    Settings {
        /// Whether other users stop receiving your last seen time: true or false.
        #[arg(long, action = clap::ArgAction::Set)]
        hide_last_seen: bool,
    },
}

/// The conversation a command talks in: a direct chat with a user, or a conversation id.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// User id of the peer of a direct chat.
    #[arg(long)]
    pub to: Option<String>,
    /// Conversation id (decimal).
    #[arg(long)]
    pub conversation: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group with you as its admin and print its conversation id.
    Create {
        /// Group name shown to members; empty when omitted.
        #[arg(long, default_value = "")]
        name: String,
        /// Comma-separated user ids to add besides you.
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
    },
    /// Add members to a group (admins only).
    Add {
        #[arg(long)]
        conversation: u64,
        /// Comma-separated user ids.
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
    },
    /// Remove members from a group (admins only).
    Remove {
        #[arg(long)]
        conversation: u64,
        /// Comma-separated user ids.
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
    },
    /// Leave a group.
    Leave {
        #[arg(long)]
        conversation: u64,
    },
}

/// Why a command failed; printed as `error: ...`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommandError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Failed(String),
}

impl CommandError {
    fn rejection(&self) -> Option<&Rejection> {
        match self {
            CommandError::Client(error) => error.rejection(),
            CommandError::Connect(ConnectError::Rejected(rejection)) => Some(rejection),
            _ => None,
        }
    }
}

impl ClientArgs {
    /// Builds the library configuration, or explains which option is missing.
    pub fn client_config(&self) -> Result<ClientConfig, String> {
        let token = self
            .token
            .clone()
            .filter(|token| !token.is_empty())
            .ok_or("missing token: pass --token or set TIDINGS_TOKEN (see `tidings token`)")?;
        let device = self.device.clone().unwrap_or_else(default_device_id);
        let cert = self
            .cert
            .clone()
            .unwrap_or_else(|| self.data_dir.join("tls").join("ca.pem"));
        let mut config = ClientConfig::new(self.server.clone(), token, device, cert);
        config.transport = self.transport;
        config.ws_url = self.ws_url.clone();
        Ok(config)
    }
}

/// Returns `cli-<hostname>`, or `cli-<random hex>` when the host name is unknown.
pub fn default_device_id() -> String {
    let hostname = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty());
    match hostname {
        Some(name) => format!("cli-{name}"),
        None => format!("cli-{:08x}", rand::random::<u32>()),
    }
}

/// Runs the command-line client and returns the process exit code.
pub async fn run(args: ClientArgs) -> ExitCode {
    let config = match args.client_config() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let result = match args.command {
        Command::Listen {
            conversation,
            count,
            timeout,
            resume: true,
        } => {
            let options = receipts::ResumeListen {
                conversation,
                count,
                timeout,
            };
            receipts::listen_resume(config, &args.data_dir, options).await
        }
        command => commands::execute(config, command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // A server rejection prints as `CODE_NAME (number): message`.
            match error.rejection() {
                Some(rejection) => eprintln!("error: {rejection}"),
                None => eprintln!("error: {error}"),
            }
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

#[cfg(test)]
mod tests;
