//! The `tidings` binary: one command with a subcommand for every role.

mod bench;
mod cluster_cmd;
mod node;
mod serve;
mod token;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Tidings: a QUIC-first real-time chat backend.
#[derive(Debug, Parser)]
#[command(name = "tidings", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every role (edge, relay, owner) in one process with embedded defaults.
    Serve(serve::ServeArgs),
    /// Run an owner node from a cluster file.
    Owner(node::NodeArgs),
    /// Run an edge node from a cluster file.
    Edge(node::NodeArgs),
    /// Start a local multi-process cluster (`cluster up`).
    Cluster(cluster_cmd::ClusterArgs),
    /// Print a signed client token for a user.
    Token(token::TokenArgs),
    /// Talk to a Tidings edge as a user.
    Client(tidings_clients::cli::ClientArgs),
    /// Run a benchmark and print its figures.
    Bench(bench::BenchArgs),
    /// Emulate a lossy link (namespaces and TUN devices, or a UDP proxy).
    Netsim(tidings_netsim::cli::NetsimArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // NOTE: `token` is the only command that writes to stdout alone. The others write to
    // sockets, and a vectored write to a reset TCP socket raises SIGPIPE. Rust's runtime
    // ignores that signal, so those writes fail with EPIPE instead of ending a server.
    if matches!(cli.command, Command::Token(_)) {
        restore_default_sigpipe();
    }
    // Servers log their lifecycle by default; client commands keep stderr for errors.
    let default_filter = match cli.command {
        Command::Serve(_) | Command::Owner(_) | Command::Edge(_) | Command::Cluster(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await.map(|()| None),
            Command::Owner(args) => node::run_owner(args).await.map(|()| None),
            Command::Edge(args) => node::run_edge(args).await.map(|()| None),
            Command::Cluster(args) => cluster_cmd::run(args).await.map(|()| None),
            Command::Token(args) => token::run(args).map(|()| None),
            Command::Client(args) => Ok(Some(tidings_clients::cli::run(args).await)),
            Command::Bench(args) => bench::run(args).await.map(|()| None),
            Command::Netsim(args) => tidings_netsim::cli::run(args).await.map(Some),
        }
    });
    match result {
        Ok(code) => code.unwrap_or(ExitCode::SUCCESS),
        Err(error) => {
            eprintln!("error: {}", error_chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// Joins an error and its causes with ": ", skipping a cause whose text the previous
/// message already contains (many library errors repeat their source in their message).
fn error_chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}

/// Restores the default SIGPIPE action, so that output piped into `head` ends the process
/// quietly as other Unix tools do, instead of `println!` panicking on EPIPE.
#[allow(
    unsafe_code,
    reason = "resetting a signal disposition needs libc::signal"
)]
fn restore_default_sigpipe() {
    // SAFETY: called first in main, before any other thread exists, and SIG_DFL is a
    // valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler succeeds in a tokio runtime");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
