//! The `origin` allow-list for WebSocket and WebTransport requests.
//!
//! Neither WebTransport nor WebSocket is covered by CORS: a browser opens them from any
//! page, so the edge itself rejects pages it does not serve or trust.

use std::net::SocketAddr;

/// Origins allowed to open WebSocket and WebTransport sessions.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    allowed: Vec<String>,
}

impl OriginPolicy {
    /// Allows `configured` origins, or the edge's own origins when `configured` is empty:
    /// `http` and `https` on `localhost`, `127.0.0.1`, `[::1]` and the bound address, at
    /// the HTTP port.
    pub fn new(configured: &[String], http_addr: Option<SocketAddr>) -> OriginPolicy {
        let mut allowed: Vec<String> = configured.iter().map(|origin| normalize(origin)).collect();
        if allowed.is_empty()
            && let Some(addr) = http_addr
        {
            let port = addr.port();
            let mut hosts = vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "[::1]".to_owned(),
            ];
            let ip = addr.ip();
            if !ip.is_unspecified() && !ip.is_loopback() {
                match ip {
                    std::net::IpAddr::V4(v4) => hosts.push(v4.to_string()),
                    std::net::IpAddr::V6(v6) => hosts.push(format!("[{v6}]")),
                }
            }
            for host in hosts {
                allowed.push(format!("http://{host}:{port}"));
                allowed.push(format!("https://{host}:{port}"));
            }
        }
        OriginPolicy { allowed }
    }

    /// Checks the `origin` header of a request. A request without one is allowed,
    /// because browsers always send it and other clients can set any value anyway.
    pub fn check(&self, origin: Option<&str>) -> Result<(), String> {
        let Some(origin) = origin else {
            return Ok(());
        };
        let origin = normalize(origin);
        if self.allowed.contains(&origin) {
            return Ok(());
        }
        Err(format!(
            "origin {origin} is not allowed; add it to the edge's allowed origins"
        ))
    }

    /// Returns the allowed origins.
    pub fn allowed(&self) -> &[String] {
        &self.allowed
    }
}

fn normalize(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_origins_by_default() {
        let policy = OriginPolicy::new(&[], Some(SocketAddr::from(([127, 0, 0, 1], 8080))));
        assert!(policy.check(Some("http://127.0.0.1:8080")).is_ok());
        assert!(policy.check(Some("http://localhost:8080/")).is_ok());
        assert!(policy.check(Some("https://[::1]:8080")).is_ok());
        assert!(policy.check(Some("http://localhost:9090")).is_err());
        assert!(policy.check(Some("https://evil.example")).is_err());
        assert!(policy.check(None).is_ok());
    }

    #[test]
    fn configured_origins_replace_defaults() {
        let configured = vec!["https://chat.example".to_owned()];
        let policy = OriginPolicy::new(&configured, Some(SocketAddr::from(([127, 0, 0, 1], 80))));
        assert!(policy.check(Some("https://CHAT.example")).is_ok());
        assert!(policy.check(Some("http://127.0.0.1:80")).is_err());
    }
}
