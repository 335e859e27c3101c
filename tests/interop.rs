//! Interoperability with clients that share no code with Tidings: Python `aioquic` with
//! `pycapnp` (the schema file is loaded at run time) and Debian's `gtlsclient` (ngtcp2).
//!
//! `scripts/test.sh` installs both: the Python packages into `target/interop-venv` from
//! `tests/interop/requirements.txt`, and the `ngtcp2-client` package. Set
//! `TIDINGS_INTEROP_PYTHON` to use another interpreter, or `TIDINGS_SKIP_INTEROP=1` to skip
//! these tests on a machine without them.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use tidings_clients::{Client, ClientConfig, Message, Transport};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use support::{Process, token};

/// Upper bound on one wait for a line or a delivery.
const WAIT: Duration = Duration::from_secs(30);

/// Seconds each Python client may run in total; the Rust side waits a little longer.
const CLIENT_TIMEOUT_SECS: u64 = 40;

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Returns whether the interop tests are skipped on purpose, and prints a notice if so.
fn skipped() -> bool {
    let skip = std::env::var("TIDINGS_SKIP_INTEROP").is_ok_and(|value| value == "1");
    if skip {
        eprintln!("interop test skipped: TIDINGS_SKIP_INTEROP=1");
    }
    skip
}

fn python() -> Result<PathBuf> {
    let path = match std::env::var_os("TIDINGS_INTEROP_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => repo_path("target/interop-venv/bin/python"),
    };
    ensure!(
        path.exists(),
        "Python for the interop tests not found at {}; run scripts/test.sh, or create it with \
         `python3 -m venv target/interop-venv && target/interop-venv/bin/pip install -r \
         tests/interop/requirements.txt`, or set TIDINGS_SKIP_INTEROP=1",
        path.display()
    );
    Ok(path)
}

/// A `tidings serve` on kernel-chosen ports, with its QUIC and HTTP addresses.
struct Serve {
    dir: tempfile::TempDir,
    process: Process,
    quic_port: u16,
    http_port: u16,
}

impl Serve {
    fn start() -> Result<Serve> {
        let dir = tempfile::tempdir()?;
        let data_dir = dir.path().to_str().context("temp dir is not UTF-8")?;
        let args = [
            "serve",
            "--data-dir",
            data_dir,
            "--quic-listen",
            "127.0.0.1:0",
        ];
        let mut process = Process::start("serve", &args)?;
        let quic = process.wait_for_addr("quic listening on")?;
        let http = process.wait_for_addr("http listening on")?;
        Ok(Serve {
            dir,
            process,
            quic_port: quic.port(),
            http_port: http.port(),
        })
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("tls").join("ca.pem")
    }

    async fn rust_client(&self, user: &str) -> Result<Client> {
        let token = token(self.dir.path(), user)?;
        let server = format!("127.0.0.1:{}", self.quic_port);
        let mut config = ClientConfig::new(server, token, format!("{user}-rust"), self.ca());
        config.transport = Transport::Quic;
        config.request_timeout = WAIT;
        Ok(Client::connect(config).await?)
    }
}

/// A Python client process with its stdout read line by line.
struct PythonClient {
    name: &'static str,
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl PythonClient {
    fn start(name: &'static str, args: &[String]) -> Result<PythonClient> {
        let mut child = Command::new(python()?)
            .arg(repo_path("tests/interop/tidings_interop.py"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("failed to start the {name} client"))?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        Ok(PythonClient {
            name,
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// Reads stdout until a JSON line with `"event": event`.
    async fn wait_event(&mut self, event: &str) -> Result<Value> {
        for _ in 0..100 {
            let line = tokio::time::timeout(WAIT, self.lines.next_line()).await;
            let line = match line {
                Ok(Ok(Some(line))) => line,
                Ok(Ok(None)) => {
                    let stderr = self.stderr().await;
                    bail!("{} exited before {event:?}: {stderr}", self.name)
                }
                Ok(Err(error)) => bail!("reading {} output failed: {error}", self.name),
                Err(_) => bail!("{} printed no {event:?} within {WAIT:?}", self.name),
            };
            eprintln!("[{}] {line}", self.name);
            let value: Value = serde_json::from_str(&line).with_context(|| {
                format!("{} printed a line that is not JSON: {line}", self.name)
            })?;
            if value["event"] == event {
                return Ok(value);
            }
        }
        bail!("{} printed 100 lines without {event:?}", self.name)
    }

    async fn send_go(&mut self) -> Result<()> {
        let stdin = self.child.stdin.as_mut().context("stdin is piped")?;
        stdin.write_all(b"go\n").await?;
        stdin.flush().await?;
        Ok(())
    }

    /// Waits for the process to exit and fails with its stderr unless it succeeded.
    async fn finish(mut self) -> Result<()> {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .with_context(|| format!("{} did not exit within {WAIT:?}", self.name))??;
        if !status.success() {
            let stderr = self.stderr().await;
            bail!("{} exited with {status}: {stderr}", self.name);
        }
        Ok(())
    }

    async fn stderr(&mut self) -> String {
        let Some(mut stderr) = self.child.stderr.take() else {
            return String::new();
        };
        let mut text = String::new();
        let read = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text);
        let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
        text
    }
}

fn chat_args(
    serve: &Serve,
    mode: &str,
    user: &str,
    conversation: u64,
    body: &str,
) -> Result<Vec<String>> {
    let mut args = vec![
        mode.to_owned(),
        "--port".to_owned(),
        serve.quic_port.to_string(),
        "--ca".to_owned(),
        serve.ca().display().to_string(),
        "--schema".to_owned(),
        repo_path("schema/capnp/frames.capnp").display().to_string(),
        "--token".to_owned(),
        token(serve.dir.path(), user)?,
        "--device".to_owned(),
        format!("{user}-python"),
        "--conversation".to_owned(),
        conversation.to_string(),
        "--body".to_owned(),
        body.to_owned(),
        "--origin".to_owned(),
        format!("http://127.0.0.1:{}", serve.http_port),
        "--timeout".to_owned(),
        CLIENT_TIMEOUT_SECS.to_string(),
    ];
    for expected in ["from rust", "from raw", "from webtransport"] {
        if expected != body {
            args.extend(["--expect".to_owned(), expected.to_owned()]);
        }
    }
    Ok(args)
}

/// Returns the (seq, body) pairs a Python client reported, checking that seqs ascend.
fn received(name: &str, done: &Value) -> Result<Vec<(u64, String)>> {
    let list = done["received"].as_array().context("no received list")?;
    let pairs: Vec<(u64, String)> = list
        .iter()
        .map(|item| {
            let seq = item["seq"].as_u64().unwrap_or(0);
            (seq, item["body"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    let seqs: Vec<u64> = pairs.iter().map(|(seq, _)| *seq).collect();
    ensure!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "{name} saw seqs out of order: {seqs:?}"
    );
    Ok(pairs)
}

async fn next_delivery(deliveries: &mut tokio::sync::mpsc::Receiver<Message>) -> Result<Message> {
    tokio::time::timeout(WAIT, deliveries.recv())
        .await
        .context("timed out waiting for a delivery")?
        .context("delivery channel closed")
}

#[tokio::test]
async fn python_clients_chat_with_rust_client() -> Result<()> {
    if skipped() {
        return Ok(());
    }
    let serve = Serve::start()?;
    let alice = serve.rust_client("alice").await?;
    let mut alice_inbox = alice.deliveries().context("deliveries taken twice")?;
    let group = alice
        .create_group("interop", &["bob".to_owned(), "carol".to_owned()])
        .await?;
    let conversation = group.conversation_id;

    let raw_args = chat_args(&serve, "raw", "bob", conversation, "from raw")?;
    let wt_args = chat_args(
        &serve,
        "webtransport",
        "carol",
        conversation,
        "from webtransport",
    )?;
    let mut raw = PythonClient::start("raw", &raw_args)?;
    let mut wt = PythonClient::start("webtransport", &wt_args)?;
    assert_eq!(raw.wait_event("ready").await?["user"], "bob");
    assert_eq!(wt.wait_event("ready").await?["user"], "carol");

    let rust_ack = alice.send(conversation, "from rust").await?;
    raw.send_go().await?;
    wt.send_go().await?;
    let raw_done = raw.wait_event("done").await?;
    let wt_done = wt.wait_event("done").await?;
    raw.finish().await?;
    wt.finish().await?;

    let raw_seq = raw_done["sent_seq"]
        .as_u64()
        .context("raw reported no sent_seq")?;
    let wt_seq = wt_done["sent_seq"]
        .as_u64()
        .context("webtransport reported no sent_seq")?;
    let mut expected = vec![
        (rust_ack.seq, "from rust".to_owned()),
        (raw_seq, "from raw".to_owned()),
        (wt_seq, "from webtransport".to_owned()),
    ];
    expected.sort();
    let others = |body: &str| -> Vec<(u64, String)> {
        expected
            .iter()
            .filter(|(_, b)| b != body)
            .cloned()
            .collect()
    };

    let raw_received = received("raw", &raw_done)?;
    let wt_received = received("webtransport", &wt_done)?;
    assert_eq!(raw_received, others("from raw"), "raw client deliveries");
    assert_eq!(
        wt_received,
        others("from webtransport"),
        "webtransport client deliveries"
    );

    let mut alice_received = Vec::new();
    while alice_received.len() < 2 {
        let message = next_delivery(&mut alice_inbox).await?;
        if message.seq > group.last_seq {
            alice_received.push((message.seq, message.body));
        }
    }
    assert_eq!(
        alice_received,
        others("from rust"),
        "Rust client deliveries"
    );

    let page = alice.history(conversation, 0, 10).await?;
    let mut stored: Vec<(u64, String)> = page
        .messages
        .into_iter()
        .filter(|message| message.seq > group.last_seq)
        .map(|message| (message.seq, message.body))
        .collect();
    stored.sort();
    assert_eq!(stored, expected, "history of the conversation");
    Ok(())
}

#[tokio::test]
async fn python_http3_get_of_healthz() -> Result<()> {
    if skipped() {
        return Ok(());
    }
    let serve = Serve::start()?;
    let args = vec![
        "h3get".to_owned(),
        "--port".to_owned(),
        serve.quic_port.to_string(),
        "--ca".to_owned(),
        serve.ca().display().to_string(),
        "--path".to_owned(),
        "/healthz".to_owned(),
        "--timeout".to_owned(),
        CLIENT_TIMEOUT_SECS.to_string(),
    ];
    let mut client = PythonClient::start("h3get", &args)?;
    let response = client.wait_event("response").await?;
    client.finish().await?;
    assert_eq!(response["status"], 200);
    assert_eq!(response["body"], "ok\n");
    Ok(())
}

#[tokio::test]
async fn gtlsclient_fetches_healthz() -> Result<()> {
    if skipped() {
        return Ok(());
    }
    let serve = Serve::start()?;
    let download = tempfile::tempdir()?;
    let port = serve.quic_port.to_string();
    let url = format!("https://localhost:{port}/healthz");
    // gtlsclient offers only ALPN h3 and does not check the certificate; --download
    // stores each response body under the last path segment of its URL.
    let command = Command::new("gtlsclient")
        .arg("--quiet")
        .arg("--exit-on-all-streams-close")
        .arg("--timeout=10s")
        .arg(format!("--download={}", download.path().display()))
        .args(["127.0.0.1", port.as_str(), url.as_str()])
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(WAIT, command).await {
        Ok(Ok(output)) => output,
        Ok(Err(error)) => bail!(
            "cannot run gtlsclient: {error}; install the ngtcp2-client package (scripts/test.sh \
             does) or set TIDINGS_SKIP_INTEROP=1"
        ),
        Err(_) => bail!("gtlsclient did not finish within {WAIT:?}"),
    };
    ensure!(
        output.status.success(),
        "gtlsclient exited with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let body = std::fs::read_to_string(download.path().join("healthz"))
        .context("gtlsclient stored no healthz body")?;
    assert_eq!(body, "ok\n");
    drop(serve.process);
    Ok(())
}
