//! Helpers for tests that run the real `tidings` binary as separate processes.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of these helpers"
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tidings_clients::{Client, Message};

/// How long a test waits for a process to print that it is ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub fn tidings_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tidings")
}

/// A `tidings` process started by a test; killed with SIGKILL when dropped.
pub struct Process {
    pub name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Process {
    /// Starts `tidings ARGS` with stdout captured and stderr passed through.
    pub fn start(name: &str, args: &[&str]) -> Result<Process> {
        let mut child = Command::new(tidings_bin())
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("failed to start {name}: tidings {args:?}"))?;

        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, lines) = mpsc::channel();
        let label = name.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|line| line.ok()) {
                eprintln!("[{label}] {line}");
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Process {
            name: name.to_owned(),
            child,
            lines,
        })
    }

    /// Waits until the process prints a line starting with `prefix`, and returns the rest
    /// of that line.
    pub fn wait_for_line(&mut self, prefix: &str) -> Result<String> {
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.trim().to_owned());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!(
                        "{} printed no line starting with {prefix:?} in time",
                        self.name
                    )
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.try_wait()?;
                    bail!(
                        "{} exited ({status:?}) before printing {prefix:?}",
                        self.name
                    )
                }
            }
        }
    }

    /// Waits for a line `PREFIX ADDR` and parses the address.
    pub fn wait_for_addr(&mut self, prefix: &str) -> Result<SocketAddr> {
        let rest = self.wait_for_line(prefix)?;
        let addr = rest.split_whitespace().next().unwrap_or_default();
        addr.parse()
            .with_context(|| format!("{} printed an invalid address {rest:?}", self.name))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `limit` for the process to exit; kills it with
    /// SIGKILL after that. Returns whether it exited on its own.
    pub fn terminate(&mut self, limit: Duration) -> bool {
        self.terminate_status(limit).is_some()
    }

    /// Sends SIGTERM and waits up to `limit` for the process to exit. Returns its exit
    /// status, or `None` when it did not exit in time and was killed with SIGKILL.
    pub fn terminate_status(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        if sent.is_ok() {
            let deadline = std::time::Instant::now() + limit;
            while std::time::Instant::now() < deadline {
                if let Ok(Some(status)) = self.child.try_wait() {
                    return Some(status);
                }
                // NOTE: std offers no wait with a timeout, so the exit is polled.
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
        None
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A single-process node (`tidings serve`) on loopback ports chosen by the kernel.
pub struct ServeNode {
    pub data_dir: PathBuf,
    pub process: Process,
    pub quic: SocketAddr,
}

impl ServeNode {
    /// Starts `tidings serve` on a QUIC port chosen by the kernel.
    pub fn start(data_dir: &Path) -> Result<ServeNode> {
        Self::start_on(data_dir, "127.0.0.1:0")
    }

    fn start_on(data_dir: &Path, listen: &str) -> Result<ServeNode> {
        let dir = path_str(data_dir)?;
        let mut process = Process::start(
            "serve",
            &[
                "serve",
                "--data-dir",
                dir,
                "--quic-listen",
                listen,
                // A fixed HTTP port would collide with other tests and running nodes.
                "--http-listen",
                "127.0.0.1:0",
            ],
        )?;
        let quic = process.wait_for_addr("quic listening on")?;
        Ok(ServeNode {
            data_dir: data_dir.to_owned(),
            process,
            quic,
        })
    }

    /// Kills the node with SIGKILL and starts it again on the same data and port.
    pub fn restart(&mut self) -> Result<()> {
        self.process.kill();
        *self = Self::start_on(&self.data_dir, &self.quic.to_string())?;
        Ok(())
    }

    pub fn ca_path(&self) -> PathBuf {
        self.data_dir.join("tls").join("ca.pem")
    }
}

/// Runs `tidings token --user USER --data-dir DIR` and returns the token.
pub fn token(data_dir: &Path, user: &str) -> Result<String> {
    run_token(user, "--data-dir", data_dir)
}

/// Runs `tidings token --user USER --cluster FILE` and returns the token.
pub fn cluster_token(cluster_file: &Path, user: &str) -> Result<String> {
    run_token(user, "--cluster", cluster_file)
}

/// Runs `tidings token --user USER KEY_FLAG PATH` and returns the token.
fn run_token(user: &str, key_flag: &str, path: &Path) -> Result<String> {
    let output = Command::new(tidings_bin())
        .args(["token", "--user", user, key_flag])
        .arg(path)
        .output()
        .context("failed to run tidings token")?;
    if !output.status.success() {
        bail!(
            "tidings token failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// Reserves a free loopback TCP port for a cluster file. The port is released before the
/// owner binds it, so another process could take it in between; on a test machine that
/// race is rare, and the owner then fails to start with a clear bind error.
pub fn free_tcp_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// An owner process and an edge process started from one cluster file.
pub struct TwoProcessCluster {
    pub dir: PathBuf,
    pub cluster_file: PathBuf,
    pub owner: Process,
    pub edge: Process,
    pub quic: SocketAddr,
}

impl TwoProcessCluster {
    pub fn start(dir: &Path) -> Result<TwoProcessCluster> {
        let mesh_port = free_tcp_port()?;
        let cluster_file = dir.join("cluster.toml");
        std::fs::write(
            &cluster_file,
            format!(
                r#"
[cluster]
token_key = "token.key"

[[node]]
id = "owner-1"
roles = ["owner"]
mesh = "127.0.0.1:{mesh_port}"
data_dir = "owner-1"

[[node]]
id = "edge-1"
roles = ["edge"]
quic = "127.0.0.1:0"
snowflake_node = 1
"#
            ),
        )?;
        let owner = Self::start_owner(&cluster_file)?;
        let mut edge = Process::start(
            "edge",
            &[
                "edge",
                "--cluster",
                path_str(&cluster_file)?,
                "--node",
                "edge-1",
            ],
        )?;
        let quic = edge.wait_for_addr("quic listening on")?;
        Ok(TwoProcessCluster {
            dir: dir.to_owned(),
            cluster_file,
            owner,
            edge,
            quic,
        })
    }

    fn start_owner(cluster_file: &Path) -> Result<Process> {
        let mut owner = Process::start(
            "owner",
            &[
                "owner",
                "--cluster",
                path_str(cluster_file)?,
                "--node",
                "owner-1",
            ],
        )?;
        owner.wait_for_addr("mesh listening on")?;
        Ok(owner)
    }

    /// Kills the owner with SIGKILL and starts it again on the same data and address.
    pub fn restart_owner(&mut self) -> Result<()> {
        self.owner.kill();
        self.owner = Self::start_owner(&self.cluster_file)?;
        Ok(())
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("tls").join("ca.pem")
    }

    pub fn token(&self, user: &str) -> Result<String> {
        let output = Command::new(tidings_bin())
            .args(["token", "--user", user, "--cluster"])
            .arg(&self.cluster_file)
            .output()
            .context("failed to run tidings token")?;
        if !output.status.success() {
            bail!(
                "tidings token failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8(output.stdout)?.trim().to_owned())
    }
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().context("path is not UTF-8")
}

/// Reads the whole history of `conversation`, page by page, keyed by seq. Fails when a
/// seq comes back twice.
pub async fn read_history(reader: &Client, conversation: u64) -> Result<BTreeMap<u64, Message>> {
    let mut stored = BTreeMap::new();
    let mut before = 0;
    // Bounded, so a server that never reports the last page cannot hang the test.
    for _ in 0..10_000 {
        let page = reader.history(conversation, before, 200).await?;
        for message in page.messages {
            ensure!(
                stored.insert(message.seq, message).is_none(),
                "history of {conversation} returned a seq twice"
            );
        }
        if page.next_before_seq == 0 {
            return Ok(stored);
        }
        before = page.next_before_seq;
    }
    bail!("history of {conversation} did not end within 10,000 pages")
}
