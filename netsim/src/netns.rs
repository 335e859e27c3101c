//! Network namespaces owned by netsim: creation, removal, stale cleanup and entering one
//! from a thread.
//!
//! Namespaces are named `tn-cli-<pid>-<n>` and `tn-srv-<pid>-<n>`, where `<pid>` is the
//! process that created them. A namespace whose creator no longer runs was left behind by a
//! crash and is removed by the next link that starts. Every device and route netsim creates
//! lives inside its namespaces, so removing them removes everything.

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::sys;

/// Prefix of every namespace netsim creates.
pub const PREFIX: &str = "tn-";

/// Error while creating or configuring namespaces and devices.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NamespaceError {
    /// The process lacks the privileges for namespaces and TUN devices.
    #[error(
        "netsim link needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) to create network namespaces \
         and TUN devices; run it with sudo, or use `tidings netsim proxy` for UDP without root"
    )]
    NotRoot,
    /// An `ip` command failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its stderr output, or the reason it could not start.
        stderr: String,
    },
    /// A system call failed.
    #[error("failed to {action}: {source}")]
    Io {
        /// The operation that failed.
        action: String,
        /// The OS error.
        source: std::io::Error,
    },
}

static NEXT_LINK: AtomicU32 = AtomicU32::new(0);

/// Returns a fresh link id, unique within this process and across live processes.
pub(crate) fn next_link_id() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        NEXT_LINK.fetch_add(1, Ordering::Relaxed)
    )
}

/// Checks for root before anything is created.
pub fn require_root() -> Result<(), NamespaceError> {
    if sys::is_root() {
        Ok(())
    } else {
        Err(NamespaceError::NotRoot)
    }
}

/// Runs `ip` with the given arguments and returns its stdout.
pub fn ip(args: &[&str]) -> Result<String, NamespaceError> {
    let command = format!("ip {}", args.join(" "));
    let output =
        Command::new("ip")
            .args(args)
            .output()
            .map_err(|error| NamespaceError::Command {
                command: command.clone(),
                stderr: format!("{error}; is iproute2 installed?"),
            })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        return Err(NamespaceError::Command { command, stderr });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A namespace that is deleted when dropped.
#[derive(Debug)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Creates the namespace and brings its loopback device up.
    pub fn create(name: &str) -> Result<Self, NamespaceError> {
        ip(&["netns", "add", name])?;
        let namespace = Self {
            name: name.to_owned(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(namespace)
    }

    /// Returns the namespace name, as `ip netns` lists it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `work` on a new thread inside this namespace and returns its result.
    ///
    /// Sockets and TUN devices created by `work` belong to the namespace and keep working
    /// after the thread ends, from any thread.
    pub fn run_in<T: Send>(&self, work: impl FnOnce() -> T + Send) -> Result<T, NamespaceError> {
        run_in_namespace(&self.name, work)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Err(error) = ip(&["netns", "delete", &self.name]) {
            tracing::warn!(namespace = %self.name, %error, "failed to delete network namespace");
        }
    }
}

/// Runs `work` on a new thread that first enters the namespace called `name`.
pub fn run_in_namespace<T: Send>(
    name: &str,
    work: impl FnOnce() -> T + Send,
) -> Result<T, NamespaceError> {
    let path = Path::new("/run/netns").join(name);
    let handle = File::open(&path).map_err(|source| NamespaceError::Io {
        action: format!("open namespace {}", path.display()),
        source,
    })?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                sys::enter_network_namespace(&handle).map_err(|source| NamespaceError::Io {
                    action: format!("enter namespace {name}"),
                    source,
                })?;
                Ok(work())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Lists every namespace netsim created, live or stale.
pub fn list_owned() -> Result<Vec<String>, NamespaceError> {
    let output = ip(&["netns", "list"])?;
    Ok(output
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| owner_pid(name).is_some())
        .map(str::to_owned)
        .collect())
}

/// Returns the creating process of a netsim namespace name, or `None` for other names.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let rest = rest
        .strip_prefix("cli-")
        .or_else(|| rest.strip_prefix("srv-"))?;
    let (pid, counter) = rest.split_once('-')?;
    counter.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Deletes namespaces left behind by netsim processes that no longer run; returns their names.
pub fn remove_stale() -> Result<Vec<String>, NamespaceError> {
    let mut removed = Vec::new();
    for name in list_owned()? {
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        // NOTE: a reused pid makes a stale namespace look live; it is then removed by a later
        // run, after that process ends.
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        ip(&["netns", "delete", &name])?;
        tracing::info!(namespace = %name, pid, "removed stale namespace from a crashed run");
        removed.push(name);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_only_netsim_names() {
        assert_eq!(owner_pid("tn-cli-1234-0"), Some(1234));
        assert_eq!(owner_pid("tn-srv-99-12"), Some(99));
        assert_eq!(owner_pid("tn-other-99-1"), None);
        assert_eq!(owner_pid("tn-cli-99"), None);
        assert_eq!(owner_pid("mynet"), None);
    }
}
