//! `tidings netsim run` end to end: a node in the server namespace, real QUIC and WebSocket
//! clients in the client namespace, and the report they produce.
//!
//! Needs root for the namespaces. Without root it fails, unless TIDINGS_SKIP_ROOT_TESTS=1
//! is set, in which case it prints that it was skipped.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Upper bound of the whole command: two transports of 5 s each plus setup and drain.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

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

#[test]
fn lossy_link_both_transports_lose_nothing() {
    if !root_available("lossy_link_both_transports_lose_nothing") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // NOTE: busy messages stay at or below 1 KiB so that a gap-fill page of 200 messages
    // fits in one 256 KiB frame. With 8 KiB messages the QUIC client's gap fill fails with
    // "frame exceeds the limit", reconnects, and messages are lost.
    let workload = dir.path().join("workload.toml");
    std::fs::write(
        &workload,
        "clients = 3\nheartbeat_ms = 1000\n\
         [busy]\ncount = 1\nmembers = 2\nrate = 10.0\narrival = \"steady\"\n\
         size_min = 512\nsize_max = 1024\n\
         [quiet]\ncount = 1\nmembers = 3\nrate = 4.0\narrival = \"poisson\"\n\
         size_min = 100\nsize_max = 200\n",
    )
    .unwrap();
    let out = dir.path().join("report");
    let workload_arg = workload.to_str().unwrap();
    netsim_run(
        &[
            "lossy-2pct-burst3",
            "--seed",
            "3",
            "--duration",
            "5s",
            "--drain",
            "10s",
            "--workload",
            workload_arg,
        ],
        &out,
    );

    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["scenario"], "lossy-2pct-burst3");
    assert_eq!(summary["seed"], 3);
    assert!(summary["version"].is_string());
    for transport in ["quic", "ws"] {
        let base = format!("/transports/{transport}");
        let sent = number(&summary, &format!("{base}/messages/sent"));
        let delivered = number(&summary, &format!("{base}/messages/delivered"));
        let expected = number(&summary, &format!("{base}/messages/expected"));
        assert!(sent > 0.0, "{transport}: nothing sent");
        assert!(delivered > 0.0, "{transport}: nothing delivered");
        assert_eq!(delivered, expected, "{transport}: deliveries missing");
        assert_eq!(number(&summary, &format!("{base}/messages/lost")), 0.0);
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
    }
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
    }
}
