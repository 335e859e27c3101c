//! The web client (`web/static/`) in Debian's headless Chromium: runs the node tests in
//! `web/tests/browser/` against this build of `tidings`. They start their own
//! `tidings serve` on free ports and drive pages over WebTransport and WebSocket.
//!
//! Needs `node`, `/usr/bin/chromium` and `playwright-core` in `web/node_modules`
//! (`npm --prefix web ci`); `scripts/test.sh` installs all three.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Bound on the whole node run; the tests take well under a minute on an idle machine.
const NODE_TIMEOUT: Duration = Duration::from_secs(300);

/// Spawns a thread that reads `source` to its end, so the child never blocks on a full pipe.
fn collect(mut source: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        // A read error only truncates the output that a failure message shows.
        let _ = source.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

#[test]
fn web_client_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let playwright = root.join("web/node_modules/playwright-core");
    assert!(
        playwright.is_dir(),
        "{} is missing; run npm --prefix web ci",
        playwright.display()
    );

    let mut child = Command::new("node")
        .args(["--test", "--test-concurrency=1", "web/tests/browser/"])
        .current_dir(root)
        .env("TIDINGS_BIN", env!("CARGO_BIN_EXE_tidings"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout ends node and the servers it started.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|error| panic!("failed to start node: {error}; install nodejs"));
    let pid = child.id();
    let stdout = collect(child.stdout.take().expect("stdout is piped"));
    let stderr = collect(child.stderr.take().expect("stderr is piped"));

    let (done_tx, done_rx) = mpsc::channel::<std::io::Result<ExitStatus>>();
    std::thread::spawn(move || {
        // The receiver is gone only when the test already failed on the timeout.
        let _ = done_tx.send(child.wait());
    });
    let status = match done_rx.recv_timeout(NODE_TIMEOUT) {
        Ok(status) => status.expect("waiting for node failed"),
        Err(_) => {
            // Ends the group by its id: node, its test processes and their `tidings serve`.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            let output = stdout.join().unwrap_or_default();
            panic!("node --test web/tests/browser/ timed out after {NODE_TIMEOUT:?}:\n{output}");
        }
    };

    let output = stdout.join().unwrap_or_default();
    let errors = stderr.join().unwrap_or_default();
    assert!(
        status.success(),
        "node --test web/tests/browser/ failed with {status}:\n{output}\n{errors}"
    );
    // Shown with --nocapture: each test's name and duration.
    println!("{output}");
}
