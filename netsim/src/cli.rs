//! The `tidings netsim` command line: `list`, `show`, `link`, `proxy` and `run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitCode, ExitStatus};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use tidings_clients::Transport;

use crate::config::RebindKind;
use crate::engine::{Direction, DirectionStats, LinkSpec};
use crate::link::{NAT_ADDRESS_POOL, NetnsLink};
use crate::proxy::UdpProxy;
use crate::run::{ExternalNode, RunConfig};
use crate::workload::WorkloadConfig;
use crate::{compare, report, scenarios, sys};

/// Emulate a lossy link for real TCP and QUIC traffic.
#[derive(Debug, Args)]
pub struct NetsimArgs {
    /// Subcommand.
    #[command(subcommand)]
    pub command: NetsimCommand,
}

/// Subcommands of `tidings netsim`.
#[derive(Debug, Subcommand)]
pub enum NetsimCommand {
    /// List the embedded scenarios.
    List,
    /// Print a scenario file: embedded name or path to a TOML file.
    Show {
        /// Scenario name or path.
        scenario: String,
    },
    /// Run a command on the client side of an emulated link (needs root).
    Link(LinkArgs),
    /// Relay UDP between a local port and a target through the impairments (no root).
    Proxy(ProxyArgs),
    /// Run a chat workload over QUIC and over the WebSocket fallback through the same link
    /// and seed, and write a report (needs root).
    Run(RunArgs),
    /// Draw the plots of a report folder again from its latency samples.
    Plot {
        /// Report folder written by `run`.
        dir: PathBuf,
    },
    /// Print the numbers that differ between the reports of two runs.
    Compare {
        /// First report folder (or its summary.json).
        first: PathBuf,
        /// Second report folder (or its summary.json).
        second: PathBuf,
    },
}

/// Maximum `--duration` or `--drain` that `run` accepts.
const MAX_RUN_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Options of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Scenario, seed and traces.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Transports to compare, run one after the other: `quic`, `ws` or both.
    #[arg(long, value_delimiter = ',', default_value = "quic,ws")]
    pub transport: Vec<Transport>,
    /// Length of the send phase of each transport, for example `30s`.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Maximum wait for missing deliveries after the send phase; messages still missing
    /// then count as lost.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
    /// Report folder [default: netsim-SCENARIO-seedN].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Workload TOML file; fields it leaves out keep their defaults.
    #[arg(long, value_name = "PATH")]
    pub workload: Option<PathBuf>,
    /// Number of clients (overrides the workload file).
    #[arg(long)]
    pub clients: Option<usize>,
    /// QUIC address of an existing node to run against instead of starting one. Its
    /// traffic still crosses the link: a relay on the server side forwards it to ADDR.
    #[arg(long, value_name = "ADDR", requires = "server_data_dir")]
    pub server: Option<SocketAddr>,
    /// HTTP address (WebSocket fallback) of the `--server` node [default: the --server
    /// host, port 8080].
    #[arg(long, value_name = "ADDR", requires = "server")]
    pub server_http: Option<SocketAddr>,
    /// Data folder of the `--server` node; its token.key signs the workload users' tokens.
    #[arg(long, value_name = "DIR", requires = "server")]
    pub server_data_dir: Option<PathBuf>,
    /// CA certificate (PEM) of the `--server` node [default: DIR/tls/ca.pem of
    /// --server-data-dir].
    #[arg(long, value_name = "PATH", requires = "server")]
    pub server_ca: Option<PathBuf>,
    /// Write the TLS secrets of every client to keylog-<transport>.txt in the report
    /// folder (NSS key log format), so Wireshark decrypts link-<transport>.pcap.
    #[arg(long)]
    pub keylog: bool,
    /// Do not write link-<transport>.pcap.
    #[arg(long)]
    pub no_pcap: bool,
}

/// Seed and trace options shared by `link` and `proxy`.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Scenario name (see `list`) or path to a TOML file.
    pub scenario: String,
    /// Seed of every random decision; the same seed replays the same decisions.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// mm-link trace for the client-to-server direction (replaces the scenario's trace).
    #[arg(long, value_name = "PATH")]
    pub trace_up: Option<PathBuf>,
    /// mm-link trace for the server-to-client direction (replaces the scenario's trace).
    #[arg(long, value_name = "PATH")]
    pub trace_down: Option<PathBuf>,
}

/// Options of `link`.
#[derive(Debug, Args)]
pub struct LinkArgs {
    /// Scenario, seed and traces.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Shell command run in the server namespace while the link is up, for example a node
    /// listening on 10.77.1.2. It is stopped when the client command ends.
    #[arg(long, value_name = "SHELL COMMAND")]
    pub server_cmd: Option<String>,
    /// Command run in the client namespace. Without one the link stays up until Ctrl-C.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Options of `proxy`.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Scenario, seed and traces.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Local address clients send to.
    #[arg(long, default_value = "127.0.0.1:4500")]
    pub listen: SocketAddr,
    /// Address of the real server.
    #[arg(long)]
    pub target: SocketAddr,
}

/// Runs a `tidings netsim` subcommand; the exit code is the client command's for `link`.
pub async fn run(args: NetsimArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        NetsimCommand::List => {
            list();
            Ok(ExitCode::SUCCESS)
        }
        NetsimCommand::Show { scenario } => {
            let (_, text) = scenarios::load(&scenario)?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        NetsimCommand::Link(args) => run_link(args).await,
        NetsimCommand::Proxy(args) => run_proxy(args).await,
        NetsimCommand::Run(args) => run_workload(args).await,
        NetsimCommand::Plot { dir } => {
            crate::run::replot(&dir)?;
            eprintln!("netsim: plots written to {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        NetsimCommand::Compare { first, second } => {
            let (left, right) = (read_summary(&first)?, read_summary(&second)?);
            println!("first: {}\nsecond: {}", first.display(), second.display());
            for warning in compare::condition_warnings(&left, &right) {
                println!("warning: {warning}");
            }
            let found = compare::differences(&left, &right);
            if found.is_empty() {
                println!("no numbers differ");
            } else {
                print!("{}", compare::format(&found));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn list() {
    for (name, text) in scenarios::EMBEDDED {
        match crate::config::Scenario::from_toml(text) {
            Ok(scenario) => println!("{name:<24} {}", scenario.summary),
            Err(error) => println!("{name:<24} (invalid: {error})"),
        }
    }
}

fn resolve(engine: &EngineArgs) -> anyhow::Result<LinkSpec> {
    let (scenario, _) = scenarios::load(&engine.scenario)?;
    let spec = LinkSpec::resolve(
        &scenario,
        engine.trace_up.as_deref(),
        engine.trace_down.as_deref(),
    )
    .with_context(|| format!("scenario `{}` cannot run", engine.scenario))?;
    Ok(spec)
}

async fn run_link(args: LinkArgs) -> anyhow::Result<ExitCode> {
    let spec = resolve(&args.engine)?;
    let seed = args.engine.seed;
    let nat = spec.nat.clone();
    let link = tokio::task::spawn_blocking(move || NetnsLink::start(&spec, seed))
        .await
        .context("link setup task failed")??;
    let addresses = link.addresses().clone();
    eprintln!(
        "netsim: scenario {} (seed {seed}) is up",
        args.engine.scenario
    );
    eprintln!(
        "netsim: client side: namespace {}, address {}",
        addresses.client_namespace, addresses.client
    );
    eprintln!(
        "netsim: server side: namespace {}, address {}",
        addresses.server_namespace, addresses.server
    );
    eprintln!(
        "netsim: start a node with --server-cmd, or: ip netns exec {} COMMAND",
        addresses.server_namespace
    );
    if let Some(nat) = nat {
        let public = match nat.rebind {
            RebindKind::Port => format!("{} with ports from 20000", addresses.client),
            RebindKind::Address => format!("{} to {}", NAT_ADDRESS_POOL[0], NAT_ADDRESS_POOL[3]),
        };
        eprintln!("netsim: after each NAT rebinding the server sees the client as {public}");
    }

    let environment = [
        ("NETSIM_CLIENT_ADDR", addresses.client.to_string()),
        ("NETSIM_SERVER_ADDR", addresses.server.to_string()),
        ("NETSIM_CLIENT_NETNS", addresses.client_namespace.clone()),
        ("NETSIM_SERVER_NETNS", addresses.server_namespace.clone()),
    ];
    let mut server = match &args.server_cmd {
        Some(command) => {
            let mut process = tokio::process::Command::new("ip");
            process
                .args([
                    "netns",
                    "exec",
                    &addresses.server_namespace,
                    "sh",
                    "-c",
                    command,
                ])
                .envs(environment.clone())
                .process_group(0)
                .kill_on_drop(true);
            Some(
                process
                    .spawn()
                    .context("failed to start the --server-cmd command")?,
            )
        }
        None => None,
    };

    let outcome = wait_for_client(&args.command, &addresses.client_namespace, &environment).await;

    if let Some(server) = &mut server {
        if let Some(pid) = server.id() {
            sys::terminate_process_group(pid);
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server.wait()).await;
    }
    print_stats("uplink", link.stats(Direction::Uplink));
    print_stats("downlink", link.stats(Direction::Downlink));
    tokio::task::spawn_blocking(move || link.shutdown())
        .await
        .context("link teardown failed")?;
    eprintln!("netsim: link removed");
    outcome
}

async fn wait_for_client(
    command: &[String],
    namespace: &str,
    environment: &[(&str, String)],
) -> anyhow::Result<ExitCode> {
    let Some((program, arguments)) = command.split_first() else {
        eprintln!("netsim: no command given; the link stays up until Ctrl-C");
        shutdown_signal().await;
        return Ok(ExitCode::from(130));
    };
    let mut child = tokio::process::Command::new("ip")
        .args(["netns", "exec", namespace, program])
        .args(arguments)
        .envs(environment.iter().cloned())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("failed to start `{program}` in namespace {namespace}"))?;
    tokio::select! {
        status = child.wait() => Ok(exit_code(status.context("waiting for the command failed")?)),
        () = shutdown_signal() => {
            // The terminal sent SIGINT to the command too; give it a moment to exit cleanly.
            let waited = tokio::time::timeout(std::time::Duration::from_secs(2), child.wait()).await;
            if waited.is_err() {
                let _ = child.kill().await;
            }
            Ok(ExitCode::from(130))
        }
    }
}

fn exit_code(status: ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt as _;
    let code = status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn print_stats(name: &str, stats: DirectionStats) {
    eprintln!(
        "netsim: {name}: {} in, {} out; dropped: {} loss, {} queue, {} CoDel, {} blackhole, {} NAT; \
         {} corrupted, {} duplicated",
        stats.received,
        stats.delivered,
        stats.dropped_loss,
        stats.dropped_queue,
        stats.dropped_codel,
        stats.dropped_blackhole,
        stats.dropped_nat,
        stats.corrupted,
        stats.duplicated,
    );
}

async fn run_proxy(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    let spec = resolve(&args.engine)?;
    let proxy = UdpProxy::start(&spec, args.listen, args.target, args.engine.seed)
        .await
        .with_context(|| format!("failed to listen on {}", args.listen))?;
    eprintln!(
        "netsim: proxy up: clients send to {}, relayed to {} through scenario {} (seed {})",
        proxy.local_addr(),
        args.target,
        args.engine.scenario,
        args.engine.seed
    );
    if spec.nat.is_some() {
        eprintln!(
            "netsim: each NAT rebinding opens a new upstream socket; address rebinding binds \
             127.0.0.2 to 127.0.0.5 in turn when the target is on loopback"
        );
    }
    shutdown_signal().await;
    print_stats("uplink", proxy.stats(Direction::Uplink));
    print_stats("downlink", proxy.stats(Direction::Downlink));
    Ok(ExitCode::SUCCESS)
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM.
async fn shutdown_signal() {
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    match terminate {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn run_workload(args: RunArgs) -> anyhow::Result<ExitCode> {
    let spec = resolve(&args.engine)?;
    let (_, scenario_text) = scenarios::load(&args.engine.scenario)?;
    let mut workload = match &args.workload {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("failed to read workload file {}", path.display()))?;
            WorkloadConfig::from_toml(&text)
                .with_context(|| format!("invalid workload file {}", path.display()))?
        }
        None => WorkloadConfig::default(),
    };
    if let Some(clients) = args.clients {
        workload.clients = clients;
    }
    if args.transport.contains(&Transport::Auto) {
        anyhow::bail!("invalid --transport auto: compare `quic` and `ws` explicitly");
    }
    let mut transports = Vec::new();
    for transport in args.transport {
        if transports.contains(&transport) {
            anyhow::bail!("invalid --transport: {transport} is listed twice");
        }
        transports.push(transport);
    }
    if args.duration.is_zero() || args.duration > MAX_RUN_DURATION {
        anyhow::bail!(
            "invalid --duration {}: use more than 0s and at most {}",
            humantime::format_duration(args.duration),
            humantime::format_duration(MAX_RUN_DURATION)
        );
    }
    if args.drain > MAX_RUN_DURATION {
        anyhow::bail!(
            "invalid --drain {}: use at most {}",
            humantime::format_duration(args.drain),
            humantime::format_duration(MAX_RUN_DURATION)
        );
    }
    let out = args.out.unwrap_or_else(|| {
        let name = std::path::Path::new(&args.engine.scenario)
            .file_stem()
            .map_or_else(|| "scenario".into(), |stem| stem.to_string_lossy());
        PathBuf::from(format!("netsim-{name}-seed{}", args.engine.seed))
    });
    let server = args.server.map(|quic| {
        let data_dir = args
            .server_data_dir
            .clone()
            .expect("clap requires --server-data-dir with --server");
        ExternalNode {
            quic,
            http: args
                .server_http
                .unwrap_or_else(|| SocketAddr::new(quic.ip(), tidings_clients::DEFAULT_HTTP_PORT)),
            ca_pem: args
                .server_ca
                .clone()
                .unwrap_or_else(|| data_dir.join("tls").join("ca.pem")),
            data_dir,
        }
    });
    if let Some(node) = &server {
        // Checked before the link is built, so a typo costs no setup.
        let key = node.data_dir.join("token.key");
        if !key.is_file() {
            anyhow::bail!(
                "invalid --server-data-dir {}: it has no token.key; give the data folder of \
                 the node at {}",
                node.data_dir.display(),
                node.quic
            );
        }
        if !node.ca_pem.is_file() {
            anyhow::bail!(
                "CA certificate {} not found; give the node's CA with --server-ca",
                node.ca_pem.display()
            );
        }
    }
    // Ctrl-C or SIGTERM stops the run, which then removes its node and link.
    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    let signals = tokio::spawn(async move {
        shutdown_signal().await;
        eprintln!("netsim: interrupted; stopping the clients, the node and the link");
        let _ = stop_sender.send(true);
    });
    let traces = args
        .engine
        .trace_up
        .clone()
        .zip(args.engine.trace_down.clone());
    let config = RunConfig {
        scenario: args.engine.scenario.clone(),
        scenario_text: scenario_text.to_string(),
        spec,
        seed: args.engine.seed,
        duration: args.duration,
        drain: args.drain,
        transports,
        out: out.clone(),
        workload,
        program: std::env::current_exe().context("failed to find the tidings executable")?,
        server,
        capture: !args.no_pcap,
        key_log: args.keylog,
        traces,
        stop: stop.clone(),
    };
    let outcome = tokio::task::spawn_blocking(move || crate::run::run(&config))
        .await
        .context("netsim run task failed")?;
    signals.abort();
    if *stop.borrow() {
        if let Err(error) = outcome {
            eprintln!("netsim: {error:#}");
        }
        return Ok(ExitCode::from(130));
    }
    let summary = outcome?;
    print!("{}", report::table(&summary));
    eprintln!("netsim: report written to {}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// Reads `summary.json` from a report folder, or the file itself when given one.
fn read_summary(path: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let file = if path.is_dir() {
        path.join("summary.json")
    } else {
        path.to_owned()
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("failed to read {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("invalid JSON in {}", file.display()))
}
