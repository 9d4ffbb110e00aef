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
pub mod prometheus;
pub mod server;
pub mod snapshot;

pub use snapshot::{Published, Running};

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

/// The endpoint's answers, from what `published` holds when each request comes.
pub fn handler(published: Published) -> Handler {
    std::sync::Arc::new(move |path: &str| answer(&published, path))
}

fn answer(published: &Published, path: &str) -> Response {
    match path {
        "/metrics" => Response {
            status: 200,
            content_type: prometheus::CONTENT_TYPE,
            body: prometheus::render(&snapshot::take(published)).into_bytes(),
        },
        "/status" => {
            let doc = snapshot::take(published);
            match serde_json::to_vec_pretty(&doc) {
                Ok(mut body) => {
                    body.push(b'\n');
                    Response {
                        status: 200,
                        content_type: "application/json",
                        body,
                    }
                }
                Err(e) => Response::text(500, format!("cannot encode the status: {e}\n")),
            }
        }
        "/healthz" => {
            let doc = snapshot::take(published);
            if doc.healthy {
                Response::text(200, "ok\n")
            } else {
                Response::text(503, doc.unhealthy.join("\n") + "\n")
            }
        }
        _ => Response::text(
            404,
            "not found: the paths are /metrics, /status and /healthz\n",
        ),
    }
}
