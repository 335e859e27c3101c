//! A TLS key log file in the NSS key log format (`SSLKEYLOGFILE`), so Wireshark can decrypt
//! the client's QUIC and TLS traffic.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::warn;

/// Appends one line per TLS secret to a file: `LABEL CLIENT_RANDOM SECRET`, both in hex.
///
/// rustls's own `KeyLogFile` only reads the path from the `SSLKEYLOGFILE` environment
/// variable, which one process cannot set per client.
pub(crate) struct KeyLogPath {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl std::fmt::Debug for KeyLogPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyLogPath")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl KeyLogPath {
    /// Opens `path` for appending, so several clients may share one file.
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::options().create(true).append(true).open(path)?;
        Ok(KeyLogPath {
            path: path.to_owned(),
            file: Mutex::new(Some(file)),
        })
    }
}

impl rustls::KeyLog for KeyLogPath {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let mut line =
            String::with_capacity(label.len() + 2 * (client_random.len() + secret.len()) + 3);
        line.push_str(label);
        line.push(' ');
        push_hex(&mut line, client_random);
        line.push(' ');
        push_hex(&mut line, secret);
        line.push('\n');

        let mut file = self.file.lock().expect("key log mutex poisoned");
        let Some(open) = file.as_mut() else {
            return;
        };
        // NOTE: one write per line on a file opened for appending, so lines of clients
        // sharing the file do not interleave.
        if let Err(error) = open.write_all(line.as_bytes()) {
            warn!(path = %self.path.display(), %error, "writing the TLS key log failed; stopping it");
            *file = None;
        }
    }
}

fn push_hex(text: &mut String, bytes: &[u8]) {
    use std::fmt::Write as _;
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
}

#[cfg(test)]
mod tests {
    use rustls::KeyLog as _;

    use super::*;

    #[test]
    fn lines_follow_the_nss_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.txt");
        let log = KeyLogPath::open(&path).unwrap();
        log.log(
            "CLIENT_TRAFFIC_SECRET_0",
            &[0x01, 0xab],
            &[0xff, 0x00, 0x10],
        );
        let second = KeyLogPath::open(&path).unwrap();
        second.log("SERVER_TRAFFIC_SECRET_0", &[0x02], &[0x03]);

        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "CLIENT_TRAFFIC_SECRET_0 01ab ff0010\nSERVER_TRAFFIC_SECRET_0 02 03\n"
        );
    }
}
