//! `netsim run`: the same workload over each transport through a fresh link with the same
//! seed, against a node started in the server namespace, and the report in one folder.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use tidings_clients::Transport;

use crate::drive::{DriveConfig, DriveOutcome, drive};
use crate::engine::{Direction, LinkSpec};
use crate::faults::FaultTimeline;
use crate::link::{LinkOptions, NetnsLink, SERVER_ADDRESS};
use crate::plot;
use crate::relay::{RelayRoute, ServerRelay};
use crate::report::{
    self, CpuReport, CpuTimes, LinkReport, ReconnectReport, Summary, TransportCounters,
    TransportReport,
};
use crate::stats::{Percentiles, Sample};
use crate::sys;
use crate::workload::{ConversationKind, WorkloadConfig, schedule};

/// QUIC port of the node in the server namespace.
const QUIC_PORT: u16 = 4433;
/// HTTPS port (WebSocket fallback) of the node in the server namespace.
const HTTP_PORT: u16 = 8080;
/// Maximum time the node may take to print that it listens.
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of one `netsim run`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Scenario name or path, as given.
    pub scenario: String,
    /// Scenario file text, copied into the report.
    pub scenario_text: String,
    /// Resolved link.
    pub spec: LinkSpec,
    /// Seed of the link and the workload.
    pub seed: u64,
    /// Length of the send phase per transport.
    pub duration: Duration,
    /// Maximum wait for missing deliveries after the send phase.
    pub drain: Duration,
    /// Transports, run one after the other.
    pub transports: Vec<Transport>,
    /// Report folder.
    pub out: PathBuf,
    /// The workload.
    pub workload: WorkloadConfig,
    /// The `tidings` executable that runs `serve` and `token`.
    pub program: PathBuf,
    /// An existing node to reach through the link instead of starting one per transport.
    pub server: Option<ExternalNode>,
    /// Write `link-<transport>.pcap` with every packet that leaves the link.
    pub capture: bool,
    /// Write `keylog-<transport>.txt` with the TLS secrets of every client.
    pub key_log: bool,
    /// Trace files given for the uplink and the downlink, recorded in `run.json`.
    pub traces: Option<(PathBuf, PathBuf)>,
    /// Becomes `true` on Ctrl-C or SIGTERM: the run stops its clients, node and link, and
    /// returns an error.
    pub stop: tokio::sync::watch::Receiver<bool>,
}

/// A node that runs outside the link, in the host's namespace.
#[derive(Debug, Clone)]
pub struct ExternalNode {
    /// QUIC address of the node.
    pub quic: SocketAddr,
    /// HTTP address of the node (the WebSocket fallback). The clients use `ws://` when it
    /// is a loopback address, because the node serves plain HTTP there, and `wss://`
    /// otherwise.
    pub http: SocketAddr,
    /// Data folder of the node: its `token.key` signs the workload users' tokens.
    pub data_dir: PathBuf,
    /// CA certificate (PEM) the node's certificate chains to.
    pub ca_pem: PathBuf,
}

/// Runs every transport and writes the report; returns the summary.
///
/// Blocking: it creates namespaces and waits for processes. Needs root.
pub fn run(config: &RunConfig) -> anyhow::Result<Summary> {
    config.workload.validate()?;
    prepare_report_folder(&config.out)?;
    write_inputs(config)?;

    let plan = schedule(&config.workload, config.seed, config.duration);
    let mut transports = BTreeMap::new();
    let mut samples = Vec::new();
    for &transport in &config.transports {
        if *config.stop.borrow() {
            bail!("interrupted before the {transport} run");
        }
        eprintln!(
            "netsim: running {transport} for {} with {} planned sends",
            humantime::format_duration(config.duration),
            plan.len()
        );
        let (outcome, link, cpu, faults) = run_transport(config, transport, &plan)?;
        let client_reconnects = outcome
            .transport_stats
            .iter()
            .map(|stats| stats.reconnects())
            .sum();
        let samples_path = config.out.join(format!("latency-{transport}.csv"));
        report::write_samples(&samples_path, &outcome.ledger)
            .with_context(|| format!("failed to write {}", samples_path.display()))?;
        let reconnects = ReconnectReport {
            count: client_reconnects,
            disconnects: outcome.disconnects,
            outage_ms: Percentiles::of(&outcome.outages_ms),
        };
        let mut transport_report = TransportReport::new(
            &outcome.ledger,
            &outcome.handshakes_ms,
            reconnects,
            TransportCounters::of(&outcome.transport_stats),
            link,
            cpu,
        );
        transport_report.faults = faults.clone();
        transports.insert(transport.as_str().to_owned(), transport_report);
        samples.push(PlotInput {
            name: transport.as_str(),
            samples: outcome.ledger.samples().to_vec(),
            faults,
        });
    }
    write_plots(&config.out, &samples)?;

    let summary = Summary {
        scenario: config.scenario.clone(),
        seed: config.seed,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        duration_s: config.duration.as_secs_f64(),
        workload: config.workload.clone(),
        transports,
    };
    let path = config.out.join("summary.json");
    let json = serde_json::to_string_pretty(&summary).context("failed to encode summary")?;
    std::fs::write(&path, json).with_context(|| format!("failed to write {}", path.display()))?;
    Ok(summary)
}

/// One transport's samples and faults, for the plots.
#[derive(Debug, Clone)]
pub struct PlotInput<'a> {
    /// Transport name.
    pub name: &'a str,
    /// Latency samples.
    pub samples: Vec<Sample>,
    /// Faults during the transport's run.
    pub faults: FaultTimeline,
}

/// Draws the latency CDF and the latency over time of every transport, all kinds together
/// and quiet conversations alone, each as SVG and PNG.
pub fn write_plots(out: &Path, inputs: &[PlotInput<'_>]) -> anyhow::Result<()> {
    let quiet: Vec<Vec<Sample>> = inputs
        .iter()
        .map(|input| {
            input
                .samples
                .iter()
                .filter(|sample| sample.kind == ConversationKind::Quiet)
                .copied()
                .collect()
        })
        .collect();
    let all: Vec<&[Sample]> = inputs.iter().map(|input| &input.samples[..]).collect();
    let quiet: Vec<&[Sample]> = quiet.iter().map(|list| &list[..]).collect();
    for (suffix, which, sets) in [
        ("", "all conversations", all),
        ("-quiet", "quiet conversations", quiet),
    ] {
        let series: Vec<plot::Series<'_>> = inputs
            .iter()
            .zip(sets)
            .map(|(input, samples)| plot::Series {
                name: input.name,
                samples,
                faults: &input.faults,
            })
            .collect();
        for extension in ["svg", "png"] {
            plot::latency_cdf(
                &out.join(format!("latency-cdf{suffix}.{extension}")),
                &format!("Send-to-delivery latency, CDF, {which}"),
                &series,
            )?;
            plot::latency_over_time(
                &out.join(format!("latency-time{suffix}.{extension}")),
                &format!("Latency over time, {which}"),
                &series,
            )?;
        }
    }
    Ok(())
}

/// Draws the plots of an existing report folder again from its `latency-*.csv` files and
/// the fault timelines in its `summary.json`, where present.
pub fn replot(out: &Path) -> anyhow::Result<()> {
    let summary: Option<serde_json::Value> = std::fs::read_to_string(out.join("summary.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    let mut inputs = Vec::new();
    for name in ["quic", "ws"] {
        let path = out.join(format!("latency-{name}.csv"));
        if !path.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        let samples = report::parse_samples(&text).map_err(|line| {
            anyhow::anyhow!("invalid sample on line {line} of {}", path.display())
        })?;
        let faults = summary
            .as_ref()
            .and_then(|summary| summary.pointer(&format!("/transports/{name}/faults")))
            .and_then(|faults| serde_json::from_value(faults.clone()).ok())
            .unwrap_or_default();
        inputs.push(PlotInput {
            name,
            samples,
            faults,
        });
    }
    if inputs.is_empty() {
        bail!(
            "no latency-quic.csv or latency-ws.csv in {}; is it a netsim run report?",
            out.display()
        );
    }
    write_plots(out, &inputs)
}

fn write_inputs(config: &RunConfig) -> anyhow::Result<()> {
    let files = [
        ("scenario.toml", config.scenario_text.clone()),
        (
            "run.json",
            serde_json::to_string_pretty(&serde_json::json!({
                "scenario": config.scenario,
                "seed": config.seed,
                "version": env!("CARGO_PKG_VERSION"),
                "duration_s": config.duration.as_secs_f64(),
                "drain_s": config.drain.as_secs_f64(),
                "transports": config.transports.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                "workload": config.workload,
                "server": config.server.as_ref().map(|node| serde_json::json!({
                    "quic": node.quic.to_string(),
                    "http": node.http.to_string(),
                })),
                "capture": config.capture,
                "key_log": config.key_log,
                "traces": config.traces.as_ref().map(|(up, down)| serde_json::json!({
                    "up": up.display().to_string(),
                    "down": down.display().to_string(),
                })),
            }))
            .context("failed to encode run.json")?,
        ),
    ];
    for (name, text) in files {
        let path = config.out.join(name);
        std::fs::write(&path, text)
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    Ok(())
}

/// Files a run writes into its report folder, by exact name or by `prefix*suffix`.
const REPORT_FILES: [(&str, &str); 9] = [
    ("scenario.toml", ""),
    ("run.json", ""),
    ("summary.json", ""),
    ("latency-", ".csv"),
    ("latency-", ".svg"),
    ("latency-", ".png"),
    ("link-", ".pcap"),
    ("keylog-", ".txt"),
    ("node-", ".log"),
];

/// Reports whether `name` is a file that a run writes.
fn is_report_file(name: &str) -> bool {
    REPORT_FILES.iter().any(|(prefix, suffix)| {
        if suffix.is_empty() {
            name == *prefix
        } else {
            name.starts_with(prefix) && name.ends_with(suffix)
        }
    })
}

/// Creates the report folder, or empties an earlier report in it, so no file of an
/// earlier run is mixed into this one. Refuses a folder holding other files.
fn prepare_report_folder(out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("failed to create report folder {}", out.display()))?;
    let entries = std::fs::read_dir(out)
        .with_context(|| format!("failed to read report folder {}", out.display()))?;
    let mut earlier = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("failed to read {}", out.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_report_file(&name) || !entry.path().is_file() {
            bail!(
                "invalid --out {}: it contains {name}, which is not part of a netsim report; \
                 choose an empty or new folder",
                out.display()
            );
        }
        earlier.push(entry.path());
    }
    for path in earlier {
        std::fs::remove_file(&path)
            .with_context(|| format!("failed to remove {} of an earlier run", path.display()))?;
    }
    Ok(())
}

/// The node side of one transport's run: a node of its own, or a relay to an existing one.
enum Backend {
    Spawned {
        node: Node,
        // Deleted after the node stopped.
        _data: tempfile::TempDir,
    },
    External(ServerRelay),
}

/// Runs one transport through a fresh link and node.
fn run_transport(
    config: &RunConfig,
    transport: Transport,
    plan: &[crate::workload::PlannedSend],
) -> anyhow::Result<(DriveOutcome, LinkReport, CpuReport, FaultTimeline)> {
    let options = LinkOptions {
        pcap: config
            .capture
            .then(|| config.out.join(format!("link-{transport}.pcap"))),
    };
    let link = NetnsLink::start_with(&config.spec, config.seed, &options)
        .context("failed to start the link")?;
    let (backend, data_dir, ca_pem, ws_scheme) = match &config.server {
        None => {
            let data = tempfile::tempdir().context("failed to create a node data folder")?;
            let log_path = config.out.join(format!("node-{transport}.log"));
            let node = Node::start(
                &config.program,
                &link.addresses().server_namespace,
                data.path(),
                &log_path,
            )?;
            let data_dir = data.path().to_owned();
            let ca_pem = data_dir.join("tls").join("ca.pem");
            let backend = Backend::Spawned { node, _data: data };
            (backend, data_dir, ca_pem, "wss")
        }
        Some(external) => {
            let routes = [
                RelayRoute::Udp {
                    listen_port: QUIC_PORT,
                    target: external.quic,
                },
                RelayRoute::Tcp {
                    listen_port: HTTP_PORT,
                    target: external.http,
                },
            ];
            let relay = ServerRelay::start(&link, SERVER_ADDRESS, &routes)
                .context("failed to start the relay to --server")?;
            let scheme = if external.http.ip().is_loopback() {
                "ws"
            } else {
                "wss"
            };
            let backend = Backend::External(relay);
            (
                backend,
                external.data_dir.clone(),
                external.ca_pem.clone(),
                scheme,
            )
        }
    };

    let prefix = user_prefix(transport);
    let users = (0..config.workload.clients)
        .map(|index| {
            let user = format!("{prefix}-u{index}");
            let token = mint_token(&config.program, &data_dir, &user)?;
            Ok((user, token))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let key_log_file = config
        .key_log
        .then(|| config.out.join(format!("keylog-{transport}.txt")));
    if let Some(path) = &key_log_file {
        // A fresh file per run, because clients append to it.
        std::fs::write(path, "").with_context(|| format!("failed to create {}", path.display()))?;
    }
    let drive_config = DriveConfig {
        transport,
        server: format!("{SERVER_ADDRESS}:{QUIC_PORT}"),
        ws_url: format!("{ws_scheme}://{SERVER_ADDRESS}:{HTTP_PORT}/v1/ws"),
        ca_pem,
        users,
        workload: config.workload.clone(),
        plan: plan.to_vec(),
        drain: config.drain,
        group_prefix: prefix,
        key_log_file,
    };

    let cpu_before = CpuTimes::read();
    let mut stop = config.stop.clone();
    let outcome = link
        .run_in_client(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let interruptible = async move {
                tokio::select! {
                    outcome = drive(drive_config) => outcome.map_err(anyhow::Error::from),
                    _ = stop.wait_for(|stopped| *stopped) => Err(anyhow!("interrupted by a signal")),
                }
            };
            Ok::<_, std::io::Error>(runtime.block_on(interruptible))
        })
        .context("failed to enter the client namespace")?
        .context("failed to start the client runtime")?;
    let cpu_after = CpuTimes::read();

    let link_report = LinkReport {
        uplink: link.stats(Direction::Uplink).into(),
        downlink: link.stats(Direction::Downlink).into(),
    };
    let link_started = link.started_at();
    // The faults the run saw: those until now, not those of an unused drain time.
    let link_span = link_started.elapsed();
    match backend {
        Backend::Spawned { mut node, _data } => node.stop(),
        Backend::External(relay) => drop(relay),
    }
    link.shutdown();

    let outcome = outcome.with_context(|| format!("the {transport} run failed"))?;
    let origin_offset = outcome.origin.saturating_duration_since(link_started);
    let faults = FaultTimeline::of(&config.spec, origin_offset, link_span);
    let cpu = CpuReport {
        busy_fraction: cpu_before
            .zip(cpu_after)
            .and_then(|(before, after)| before.busy_fraction(&after)),
        load_average_1m: report::load_average(),
    };
    Ok((outcome, link_report, cpu, faults))
}

/// Returns a prefix of user ids and group names that no earlier run used, so a run
/// against an existing node starts with empty conversations.
fn user_prefix(transport: Transport) -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    format!("ns{}-{seconds}-{}", std::process::id(), transport.as_str())
}

/// Signs a token for `user` with the node's key.
fn mint_token(program: &Path, data_dir: &Path, user: &str) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(["token", "--user", user, "--data-dir"])
        .arg(data_dir)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("failed to run {} token", program.display()))?;
    if !output.status.success() {
        bail!(
            "`tidings token --user {user}` failed with {}",
            output.status
        );
    }
    let token = String::from_utf8(output.stdout).context("token is not UTF-8")?;
    Ok(token.trim().to_owned())
}

/// A `tidings serve` process in the server namespace.
struct Node {
    child: Child,
}

impl Node {
    /// Starts the node and waits until it prints both listening addresses.
    fn start(
        program: &Path,
        namespace: &str,
        data_dir: &Path,
        log_path: &Path,
    ) -> anyhow::Result<Node> {
        use std::os::unix::process::CommandExt as _;

        let log = std::fs::File::create(log_path)
            .with_context(|| format!("failed to create {}", log_path.display()))?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", namespace])
            .arg(program)
            .args(["serve", "--quic-listen"])
            .arg(format!("{SERVER_ADDRESS}:{QUIC_PORT}"))
            .arg("--http-listen")
            .arg(format!("{SERVER_ADDRESS}:{HTTP_PORT}"))
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("failed to start {} serve", program.display()))?;

        let stdout = child.stdout.take().context("node stdout is not piped")?;
        let (sender, lines) = mpsc::channel();
        // NOTE: the thread reads until the node exits, after the listening lines too: a
        // closed pipe would end the node with SIGPIPE at its next line of output.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let mut node = Node { child };
        let deadline = std::time::Instant::now() + NODE_READY_TIMEOUT;
        let (mut quic, mut http) = (false, false);
        while !(quic && http) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match lines.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    node.stop();
                    bail!(
                        "the node did not print its listening addresses within {}s; see {}",
                        NODE_READY_TIMEOUT.as_secs(),
                        log_path.display()
                    );
                }
            };
            quic |= line.starts_with("quic listening on");
            http |= line.starts_with("http listening on");
        }
        Ok(node)
    }

    /// Sends SIGTERM to the node's process group and waits up to 5 s, then kills it.
    fn stop(&mut self) {
        sys::terminate_process_group(self.child.id());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if std::time::Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
                // NOTE: std has no wait with a timeout; a short poll bounds the shutdown.
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_folder_empties_an_earlier_report() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "summary.json",
            "latency-ws.csv",
            "latency-cdf.png",
            "link-quic.pcap",
        ] {
            std::fs::write(dir.path().join(name), "old").unwrap();
        }
        prepare_report_folder(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn report_folder_rejects_other_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("summary.json"), "old").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let error = prepare_report_folder(dir.path()).unwrap_err();
        assert!(error.to_string().contains("notes.txt"), "{error}");
        // Nothing is removed when the folder is rejected.
        assert!(dir.path().join("summary.json").exists());
    }
}
