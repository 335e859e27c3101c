//! `tidings netsim run` end to end: a node in the server namespace, real QUIC and WebSocket
//! clients in the client namespace, and the report they produce.
//!
//! Needs root for the namespaces. Without root it fails, unless TIDINGS_SKIP_ROOT_TESTS=1
//! is set, in which case it prints that it was skipped.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Upper bound of the whole command: two transports of 5 s each plus setup and drain.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// Serialises the runs: each one needs both cores to keep the link's timing accurate.
static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

fn root_available(test: &str) -> bool {
    if tidings_netsim::netns::require_root().is_ok() {
        return true;
    }
    if std::env::var("TIDINGS_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        eprintln!("SKIPPED {test}: needs root, and TIDINGS_SKIP_ROOT_TESTS=1 is set");
        return false;
    }
    panic!(
        "{test} needs root for network namespaces; run as root or set TIDINGS_SKIP_ROOT_TESTS=1"
    );
}

/// Runs `tidings netsim run ARGS` and fails the test on a non-zero exit or a timeout.
fn netsim_run(args: &[&str], out: &Path) {
    let _turn = ONE_RUN_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["netsim", "run"])
        .args(args)
        .arg("--out")
        .arg(out)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .spawn()
        .expect("failed to start tidings netsim run");
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for netsim run failed") {
            assert!(status.success(), "tidings netsim run exited with {status}");
            eprintln!("netsim run {} took {:?}", args[0], started.elapsed());
            return;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tidings netsim run did not finish within {RUN_TIMEOUT:?}");
        }
        // std offers no wait with a timeout; polling the exit status bounds the wait.
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn number(value: &Value, pointer: &str) -> f64 {
    value
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("summary.json has no number at {pointer}"))
}

/// Workload with busy messages of 8 to 16 KiB, so a gap-fill page spans several frames'
/// worth of messages, and a quiet group of three.
const WORKLOAD: &str = "clients = 3\nheartbeat_ms = 1000\n\
     [busy]\ncount = 1\nmembers = 2\nrate = 10.0\narrival = \"steady\"\n\
     size_min = 8192\nsize_max = 16384\n\
     [quiet]\ncount = 1\nmembers = 3\nrate = 4.0\narrival = \"poisson\"\n\
     size_min = 100\nsize_max = 200\n";

fn write_workload(dir: &Path) -> PathBuf {
    let path = dir.join("workload.toml");
    std::fs::write(&path, WORKLOAD).unwrap();
    path
}

fn read_summary(out: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

/// Asserts that every planned message reached every recipient.
fn assert_nothing_lost(summary: &Value, transport: &str) {
    let base = format!("/transports/{transport}/messages");
    let sent = number(summary, &format!("{base}/sent"));
    let delivered = number(summary, &format!("{base}/delivered"));
    let expected = number(summary, &format!("{base}/expected"));
    assert!(sent > 0.0, "{transport}: nothing sent");
    assert!(delivered > 0.0, "{transport}: nothing delivered");
    assert_eq!(delivered, expected, "{transport}: deliveries missing");
    assert_eq!(
        number(summary, &format!("{base}/lost")),
        0.0,
        "{transport}: lost"
    );
    assert_eq!(
        number(summary, &format!("{base}/send_failed")),
        0.0,
        "{transport}: sends failed"
    );
}

/// Packets of a pcap file written with `LINKTYPE_RAW`: timestamp in microseconds and bytes.
fn read_pcap(path: &Path) -> Vec<(u64, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.len() >= 24,
        "{} is shorter than a pcap header",
        path.display()
    );
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    let little = match magic {
        0xa1b2_c3d4 => true,
        0xd4c3_b2a1 => false,
        other => panic!("{}: unknown pcap magic {other:#x}", path.display()),
    };
    let word = |at: usize| {
        let raw: [u8; 4] = bytes[at..at + 4].try_into().unwrap();
        if little {
            u32::from_le_bytes(raw)
        } else {
            u32::from_be_bytes(raw)
        }
    };
    assert_eq!(word(20), 101, "link type is not LINKTYPE_RAW");
    let mut packets = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        assert!(
            at + 16 <= bytes.len(),
            "truncated record header at byte {at}"
        );
        let micros = u64::from(word(at)) * 1_000_000 + u64::from(word(at + 4));
        let captured = word(at + 8) as usize;
        assert!(
            captured <= word(at + 12) as usize,
            "captured length above original"
        );
        let end = at + 16 + captured;
        assert!(end <= bytes.len(), "truncated packet at byte {at}");
        packets.push((micros, bytes[at + 16..end].to_vec()));
        at = end;
    }
    packets
}

/// Checks the capture of one transport: IPv4 packets in both directions, in time order,
/// and at least as many as the link reported delivered.
fn check_capture(out: &Path, transport: &str, summary: &Value) {
    let packets = read_pcap(&out.join(format!("link-{transport}.pcap")));
    let server = [10, 77, 1, 2];
    let (mut up, mut down) = (0u64, 0u64);
    for (_, packet) in &packets {
        assert_eq!(
            packet[0] >> 4,
            4,
            "{transport}: a captured packet is not IPv4"
        );
        if packet[16..20] == server {
            up += 1;
        } else if packet[12..16] == server {
            down += 1;
        }
    }
    assert!(up > 0, "{transport}: no client-to-server packet captured");
    assert!(down > 0, "{transport}: no server-to-client packet captured");
    assert!(
        packets.windows(2).all(|pair| pair[0].0 <= pair[1].0),
        "{transport}: capture timestamps go back"
    );
    let base = format!("/transports/{transport}/link");
    let delivered = number(summary, &format!("{base}/uplink/packets_out"))
        + number(summary, &format!("{base}/downlink/packets_out"));
    assert!(
        packets.len() as f64 >= delivered,
        "{transport}: {} packets captured, but the link delivered {delivered}",
        packets.len()
    );
}

#[test]
fn lossy_link_both_transports_lose_nothing() {
    if !root_available("lossy_link_both_transports_lose_nothing") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let workload = write_workload(dir.path());
    let out = dir.path().join("report");
    netsim_run(
        &[
            "lossy-2pct-burst3",
            "--seed",
            "3",
            "--duration",
            "5s",
            "--drain",
            "15s",
            "--keylog",
            "--workload",
            workload.to_str().unwrap(),
        ],
        &out,
    );

    let summary = read_summary(&out);
    assert_eq!(summary["scenario"], "lossy-2pct-burst3");
    assert_eq!(summary["seed"], 3);
    assert!(summary["version"].is_string());
    for transport in ["quic", "ws"] {
        let base = format!("/transports/{transport}");
        assert_nothing_lost(&summary, transport);
        for kind in ["", "/busy", "/quiet"] {
            let p50 = number(&summary, &format!("{base}{kind}/latency_ms/p50"));
            let p99 = number(&summary, &format!("{base}{kind}/latency_ms/p99"));
            let max = number(&summary, &format!("{base}{kind}/latency_ms/max"));
            // 15 ms each way is the floor of any delivery through this link.
            assert!(
                p50 >= 15.0,
                "{transport}{kind}: p50 {p50} ms is below the link delay"
            );
            assert!(
                p50 <= p99 && p99 <= max,
                "{transport}{kind}: percentiles out of order"
            );
        }
        let dropped = number(&summary, &format!("{base}/link/uplink/dropped"))
            + number(&summary, &format!("{base}/link/downlink/dropped"));
        assert!(
            dropped > 0.0,
            "{transport}: the 2 % loss link dropped nothing"
        );
        let handshake = number(&summary, &format!("{base}/handshake_ms/p50"));
        assert!(
            handshake >= 30.0,
            "{transport}: handshake {handshake} ms is below one RTT"
        );
        assert_eq!(number(&summary, &format!("{base}/handshake_ms/count")), 3.0);
        assert_eq!(number(&summary, &format!("{base}/reconnects/count")), 0.0);

        check_capture(&out, transport, &summary);
        let keys = std::fs::read_to_string(out.join(format!("keylog-{transport}.txt"))).unwrap();
        let secrets = keys
            .lines()
            .filter(|line| line.starts_with("CLIENT_TRAFFIC_SECRET_0 "))
            .count();
        assert_eq!(
            secrets, 3,
            "{transport}: one traffic secret per client expected"
        );
    }

    // QUIC's loss detection reports the 2 % link loss, and TCP retransmits through it.
    let quic = "/transports/quic/transport";
    assert!(number(&summary, &format!("{quic}/sent_packets")) > 0.0);
    assert!(number(&summary, &format!("{quic}/lost_packets")) > 0.0);
    assert!(number(&summary, &format!("{quic}/rtt_ms/p50")) >= 30.0);
    let tcp = "/transports/ws/transport";
    assert!(number(&summary, &format!("{tcp}/retransmits")) > 0.0);
    assert!(number(&summary, &format!("{tcp}/rtt_ms/p50")) >= 30.0);

    assert!(out.join("scenario.toml").exists());
    assert!(out.join("run.json").exists());
    assert!(out.join("latency-quic.csv").exists());
    assert!(out.join("latency-ws.csv").exists());
    for plot in [
        "latency-cdf",
        "latency-time",
        "latency-cdf-quiet",
        "latency-time-quiet",
    ] {
        let text = std::fs::read_to_string(out.join(format!("{plot}.svg"))).unwrap();
        assert!(text.contains("quic"), "{plot}.svg has no quic series");
        assert!(text.contains("ws"), "{plot}.svg has no ws series");
        let png = std::fs::read(out.join(format!("{plot}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{plot}.png is not a PNG");
    }
}

#[test]
fn nat_rebind_quic_migrates_ws_reconnects() {
    if !root_available("nat_rebind_quic_migrates_ws_reconnects") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let workload = write_workload(dir.path());
    let out = dir.path().join("report");
    // Rebindings at 1 s and 6 s after the link starts, both inside the send phase.
    netsim_run(
        &[
            "nat-rebind-port",
            "--seed",
            "5",
            "--duration",
            "7s",
            "--drain",
            "15s",
            "--workload",
            workload.to_str().unwrap(),
        ],
        &out,
    );

    let summary = read_summary(&out);
    let rebinds = summary
        .pointer("/transports/quic/faults/rebinds_s")
        .and_then(Value::as_array)
        .expect("summary.json lists the rebindings");
    assert!(
        rebinds.len() >= 2,
        "expected two rebindings, got {rebinds:?}"
    );
    assert_nothing_lost(&summary, "quic");
    assert_eq!(
        number(&summary, "/transports/quic/reconnects/count"),
        0.0,
        "QUIC should migrate, not reconnect"
    );
    assert_eq!(
        number(&summary, "/transports/quic/reconnects/disconnects"),
        0.0
    );
    assert_nothing_lost(&summary, "ws");
    assert!(
        number(&summary, "/transports/ws/reconnects/count") >= 1.0,
        "the WebSocket should reconnect after its NAT mapping stops working"
    );
    let svg = std::fs::read_to_string(out.join("latency-time.svg")).unwrap();
    assert!(
        svg.contains("NAT rebinding"),
        "the timeline plot has no rebinding marks"
    );
}

#[test]
fn blackhole_both_transports_recover() {
    if !root_available("blackhole_both_transports_recover") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let workload = write_workload(dir.path());
    let out = dir.path().join("report");
    // The first 2 s outage starts 5 s after the link does, inside the 8 s send phase.
    netsim_run(
        &[
            "blackhole-2s",
            "--seed",
            "5",
            "--duration",
            "8s",
            "--drain",
            "20s",
            "--workload",
            workload.to_str().unwrap(),
        ],
        &out,
    );

    let summary = read_summary(&out);
    for transport in ["quic", "ws"] {
        assert_nothing_lost(&summary, transport);
        let dropped = number(
            &summary,
            &format!("/transports/{transport}/link/uplink/dropped"),
        );
        assert!(dropped > 0.0, "{transport}: the blackhole dropped nothing");
        let windows = summary
            .pointer(&format!("/transports/{transport}/faults/blackholes"))
            .and_then(Value::as_array)
            .expect("summary.json lists the blackhole windows");
        assert!(
            !windows.is_empty(),
            "{transport}: no blackhole window listed"
        );
        let max = number(&summary, &format!("/transports/{transport}/latency_ms/max"));
        assert!(
            max >= 1000.0,
            "{transport}: no delivery waited out the outage"
        );
    }
}

/// A `tidings serve` process on loopback in the host namespace, killed on drop.
struct LoopbackNode {
    child: Child,
    quic: SocketAddr,
    http: SocketAddr,
}

impl LoopbackNode {
    fn start(data_dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args(["serve", "--quic-listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("failed to start tidings serve");
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        // Reads until the node exits: a closed pipe would end it with SIGPIPE at its next
        // line of output.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let mut node = LoopbackNode {
            child,
            quic: "0.0.0.0:0".parse().unwrap(),
            http: "0.0.0.0:0".parse().unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while node.quic.port() == 0 || node.http.port() == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .expect("tidings serve did not print its addresses within 30 s");
            let address = |prefix: &str| {
                let rest = line.strip_prefix(prefix)?;
                rest.split_whitespace().next()?.parse().ok()
            };
            if let Some(quic) = address("quic listening on ") {
                node.quic = quic;
            }
            if let Some(http) = address("http listening on ") {
                node.http = http;
            }
        }
        node
    }
}

impl Drop for LoopbackNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn external_server_through_the_link() {
    if !root_available("external_server_through_the_link") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("node");
    let node = LoopbackNode::start(&data_dir);
    let workload = write_workload(dir.path());
    let out = dir.path().join("report");
    netsim_run(
        &[
            "lossy-2pct-burst3",
            "--seed",
            "9",
            "--duration",
            "4s",
            "--drain",
            "15s",
            "--workload",
            workload.to_str().unwrap(),
            "--server",
            &node.quic.to_string(),
            "--server-http",
            &node.http.to_string(),
            "--server-data-dir",
            data_dir.to_str().unwrap(),
        ],
        &out,
    );

    let summary = read_summary(&out);
    for transport in ["quic", "ws"] {
        assert_nothing_lost(&summary, transport);
        let base = format!("/transports/{transport}/link");
        let dropped = number(&summary, &format!("{base}/uplink/dropped"))
            + number(&summary, &format!("{base}/downlink/dropped"));
        assert!(
            dropped > 0.0,
            "{transport}: traffic did not cross the lossy link"
        );
        // 15 ms each way: a delivery faster than the link's delay bypassed it.
        let p50 = number(&summary, &format!("/transports/{transport}/latency_ms/p50"));
        assert!(
            p50 >= 15.0,
            "{transport}: p50 {p50} ms is below the link delay"
        );
        assert!(
            !out.join(format!("node-{transport}.log")).exists(),
            "{transport}: a node was started although --server was given"
        );
    }
    let run: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["server"]["quic"], node.quic.to_string());
}

/// Returns the names of the network namespaces that netsim process `pid` created.
fn namespaces_of(pid: u32) -> Vec<String> {
    let output = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("failed to run ip netns list");
    let marker = format!("-{pid}-");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.contains(&marker))
        .map(str::to_owned)
        .collect()
}

/// Returns the ids of the `tidings serve` processes whose parent is `pid`.
fn nodes_of(pid: u32) -> Vec<u32> {
    let mut nodes = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .expect("failed to read /proc")
        .flatten()
    {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // The parent id is the second field after the parenthesised command name.
        let parent = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|field| field.parse::<u32>().ok());
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if parent == Some(pid) && String::from_utf8_lossy(&cmdline).contains("serve") {
            nodes.push(child);
        }
    }
    nodes
}

#[test]
fn interrupted_run_removes_its_node_and_link() {
    if !root_available("interrupted_run_removes_its_node_and_link") {
        return;
    }
    let _turn = ONE_RUN_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["netsim", "run", "baseline-30ms", "--transport", "quic"])
        .args(["--duration", "60s", "--no-pcap", "--out"])
        .arg(dir.path().join("report"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to start tidings netsim run");
    let pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });

    // The first progress line comes 5 s into the send phase, with the node and link up.
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("sent") && line.contains("delivered") => break,
            Ok(_) => continue,
            Err(error) => {
                let _ = child.kill();
                panic!("no progress line from netsim run: {error}");
            }
        }
    }
    assert_eq!(namespaces_of(pid).len(), 2, "the run's namespaces");
    let nodes = nodes_of(pid);
    assert_eq!(nodes.len(), 1, "the run's node");

    let signalled = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("failed to run kill");
    assert!(signalled.success(), "kill -INT {pid} failed");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for netsim run failed") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("netsim run did not stop within 30 s of SIGINT");
        }
        // std offers no wait with a timeout; polling the exit status bounds the wait.
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130), "exit status after SIGINT");
    assert_eq!(
        namespaces_of(pid),
        Vec::<String>::new(),
        "namespaces left behind"
    );
    let node = Path::new("/proc").join(nodes[0].to_string());
    assert!(!node.exists(), "node {} still runs", nodes[0]);
}
