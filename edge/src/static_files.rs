//! The web client: the files of `web/static/`, embedded in the binary by `build.rs` and
//! served on the HTTP port, `/` being `index.html`.

use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// Every embedded file as (URL path, contents), sorted by URL path.
static FILES: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/static_files.rs"));

/// Content security policy of the page: scripts and styles from the edge only. It leaves
/// `connect-src` open, because the page's WebTransport URL is on the QUIC port, another
/// origin than the page.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'; connect-src *";

/// Returns the embedded file at `path`, with `/` mapped to `/index.html`.
pub fn lookup(path: &str) -> Option<&'static [u8]> {
    let path = if path == "/" { "/index.html" } else { path };
    FILES
        .binary_search_by(|(url_path, _)| (*url_path).cmp(path))
        .ok()
        .map(|index| FILES[index].1)
}

/// Returns the `content-type` of a file by its extension.
pub fn content_type(path: &str) -> &'static str {
    let extension = path.rsplit_once('.').map_or("", |(_, extension)| extension);
    match extension {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// Serves an embedded file for `GET` and `HEAD`, 404 for an unknown path and 405 for
/// other methods. Used as the router's fallback, so API routes take precedence.
pub async fn serve(method: Method, uri: Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served\n",
        )
            .into_response();
    }
    let path = uri.path();
    let Some(bytes) = lookup(path) else {
        let message = format!("no file at {path}; the web client starts at /\n");
        return (StatusCode::NOT_FOUND, message).into_response();
    };
    let file_path = if path == "/" { "/index.html" } else { path };
    let headers = [
        (header::CONTENT_TYPE, content_type(file_path)),
        // Revalidated on every load, so a rebuilt edge never serves a stale mix of modules.
        (header::CACHE_CONTROL, "no-cache"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    ];
    (headers, bytes).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_serves_index_page() {
        let page = lookup("/").expect("web/static/index.html is embedded");
        assert!(std::str::from_utf8(page).unwrap().contains("<html"));
        assert_eq!(lookup("/"), lookup("/index.html"));
    }

    #[test]
    fn unknown_path_is_not_found() {
        assert!(lookup("/no-such-file.js").is_none());
        assert!(lookup("/../Cargo.toml").is_none());
    }

    #[test]
    fn table_is_sorted_for_binary_search() {
        assert!(FILES.windows(2).all(|pair| pair[0].0 < pair[1].0));
    }

    #[test]
    fn content_types_follow_extension() {
        assert_eq!(content_type("/index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("/app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("/style.css"), "text/css; charset=utf-8");
        assert_eq!(
            content_type("/codec/frames.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("/blob"), "application/octet-stream");
    }
}
