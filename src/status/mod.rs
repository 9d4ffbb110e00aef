//! `status = ADDRESS` (rstunnel extension; docs/ARCHITECTURE.md, Monitoring): a small
//! HTTP/1.1 endpoint, GET only, on loopback TCP or a Unix socket, answering `/metrics`
//! (Prometheus text format), `/status` (JSON) and `/healthz`; and `rstunnel --status`,
//! its command-line reader.
//!
//! Files: `doc.rs`, the JSON document (a leaf); `snapshot.rs`, filling it from the
//! registry, `health` and `metrics`; `prometheus.rs`, the text format; `http.rs` and
//! `server.rs`, the endpoint's sockets and requests; `client.rs`, `--status`.
//!
//! Must not: block or slow the data path. The endpoint runs on threads of its own, bounded
//! in number, and reads what sessions publish (atomics, the registry's table under its
//! lock for as long as a copy takes); it never touches a session's sockets.

pub mod client;
pub mod doc;
pub mod http;
pub mod server;

/// An answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }
}

/// What answers a GET for a path (the path without its query string, already checked to
/// be one of the endpoint's paths' shape: it starts with `/`).
pub type Handler = std::sync::Arc<dyn Fn(&str) -> Response + Send + Sync>;
