//! Helpers for tests that run the real `tidings` binary as separate processes.

#![allow(dead_code, reason = "each test binary uses a different subset of these helpers")]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

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
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
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
                    bail!("{} printed no line starting with {prefix:?} in time", self.name)
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.try_wait()?;
                    bail!("{} exited ({status:?}) before printing {prefix:?}", self.name)
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
    pub fn start(data_dir: &Path) -> Result<ServeNode> {
        let dir = data_dir.to_str().context("data dir is not UTF-8")?;
        let mut process = Process::start(
            "serve",
            &["serve", "--data-dir", dir, "--quic-listen", "127.0.0.1:0"],
        )?;
        let quic = process.wait_for_addr("quic listening on")?;
        Ok(ServeNode {
            data_dir: data_dir.to_owned(),
            process,
            quic,
        })
    }

    pub fn ca_path(&self) -> PathBuf {
        self.data_dir.join("tls").join("ca.pem")
    }
}

/// Runs `tidings token --user USER --data-dir DIR` and returns the token.
pub fn token(data_dir: &Path, user: &str) -> Result<String> {
    let output = Command::new(tidings_bin())
        .args(["token", "--user", user, "--data-dir"])
        .arg(data_dir)
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
