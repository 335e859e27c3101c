//! The `tidings` binary: one command with a subcommand for every role.

mod bench;
mod node;
mod serve;
mod token;

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
    /// Print a signed client token for a user.
    Token(token::TokenArgs),
    /// Talk to a Tidings edge as a user.
    Client(tidings_clients::cli::ClientArgs),
    /// Run a benchmark and print its figures.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Servers log their lifecycle by default; client commands keep stderr for errors.
    let default_filter = match cli.command {
        Command::Serve(_) | Command::Owner(_) | Command::Edge(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
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
            Command::Token(args) => token::run(args).map(|()| None),
            Command::Client(args) => Ok(Some(tidings_clients::cli::run(args).await)),
            Command::Bench(args) => bench::run(args).await.map(|()| None),
        }
    });
    match result {
        Ok(code) => code.unwrap_or(ExitCode::SUCCESS),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
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
