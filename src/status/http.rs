//! The status endpoint's HTTP, and nothing else: judging a request head (httparse; GET
//! only, HTTP/1.0 and 1.1, one of three exact paths), encoding an answer (always with
//! `Content-Length` and `Connection: close`), and writing or draining a socket within a
//! deadline.
//!
//! Must not: block without a deadline, allocate beyond `MAX_HEAD` for what a client sends,
//! or panic on any input. Sockets and threads are `server.rs`'s.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use super::Response;

/// The most a request head may take; more is answered 431.
pub const MAX_HEAD: usize = 8 * 1024;

/// The whole exchange (request read, answer written) must fit in this; a slower client is
/// answered 408 (or just closed, if it does not read either).
pub const DEADLINE: Duration = Duration::from_secs(5);

/// Headers httparse may fill; more is answered 431.
const MAX_HEADERS: usize = 32;

/// The endpoint's paths. Anything else, however close (`/metrics/`, `//metrics`,
/// `/%6detrics`, `/../metrics`), is 404: paths are compared, never normalised.
pub const PATHS: [&str; 3] = ["/metrics", "/status", "/healthz"];

/// What a request head, as read so far, calls for.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// Not complete yet (and still within `MAX_HEAD`): read more.
    Partial,
    /// A GET for one of `PATHS` (query string cut off): the handler answers.
    Get(&'static str),
    /// Answered here (4xx), without the handler.
    Refuse(Refusal),
}

/// A request refused before the handler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    TooLarge,
    Method,
    NotFound,
    Timeout,
    Busy,
}

impl Refusal {
    /// The answer to send, body included.
    pub fn encode(self) -> Vec<u8> {
        let (status, text) = match self {
            Refusal::Malformed => (400, "malformed request\n"),
            Refusal::TooLarge => (431, "request head too large\n"),
            Refusal::Method => (405, "only GET is served\n"),
            Refusal::NotFound => (404, "not found: try /metrics, /status or /healthz\n"),
            Refusal::Timeout => (408, "request not complete in time\n"),
            Refusal::Busy => (503, "too many status requests at once\n"),
        };
        let allow = match self {
            Refusal::Method => "Allow: GET\r\n",
            _ => "",
        };
        encode_with(&Response::text(status, text), allow)
    }
}

/// Judges the bytes of a request read so far (at most `MAX_HEAD` of them).
pub fn judge(bytes: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Partial) if bytes.len() >= MAX_HEAD => Head::Refuse(Refusal::TooLarge),
        Ok(httparse::Status::Partial) => Head::Partial,
        Err(httparse::Error::TooManyHeaders) => Head::Refuse(Refusal::TooLarge),
        Err(_) => Head::Refuse(Refusal::Malformed),
        Ok(httparse::Status::Complete(_)) => {
            // A complete parse always fills method, path and version.
            let (Some(method), Some(target)) = (request.method, request.path) else {
                return Head::Refuse(Refusal::Malformed);
            };
            if method != "GET" {
                return Head::Refuse(Refusal::Method);
            }
            let path = target.split_once('?').map_or(target, |(path, _)| path);
            match PATHS.iter().find(|p| **p == path) {
                Some(p) => Head::Get(p),
                None => Head::Refuse(Refusal::NotFound),
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// The bytes of `response`: status line, headers, body. The connection is always closed
/// after one answer, and said so.
pub fn encode(response: &Response) -> Vec<u8> {
    encode_with(response, "")
}

fn encode_with(response: &Response, extra_headers: &str) -> Vec<u8> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{extra_headers}Connection: close\r\n\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len(),
    );
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&response.body);
    bytes
}

/// A blocking stream whose timeouts can be set: what `write_until` and `drain_until` need.
pub trait TimedStream: Read + Write {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()>;
}

impl TimedStream for std::net::TcpStream {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

impl TimedStream for std::os::unix::net::UnixStream {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
}

/// Time left until `deadline`, or a `TimedOut` error once it has passed (a zero timeout
/// would mean "none" to the socket calls).
fn left(deadline: Instant) -> io::Result<Duration> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Writes all of `bytes` to a blocking `stream` by `deadline`: each write waits at most
/// for the time left, so a client that does not read cannot hold the caller past it.
pub fn write_until(
    stream: &mut impl TimedStream,
    bytes: &[u8],
    deadline: Instant,
) -> io::Result<()> {
    let mut rest = bytes;
    while !rest.is_empty() {
        stream.set_timeouts(left(deadline)?)?;
        match stream.write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads and drops what the client still sends, until it closes or `deadline`. Closing
/// a socket with unread bytes resets the connection, and a reset can discard the answer
/// before the client reads it (a POST's body, say): draining first lets it arrive.
pub fn drain_until(stream: &mut impl TimedStream, deadline: Instant) {
    let mut scratch = [0u8; 1024];
    while let Ok(timeout) = left(deadline) {
        if stream.set_timeouts(timeout).is_err() {
            return;
        }
        match stream.read(&mut scratch) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_paths_with_or_without_a_query() {
        assert_eq!(
            judge(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Head::Get("/metrics")
        );
        assert_eq!(
            judge(b"GET /status?x=1 HTTP/1.0\r\n\r\n"),
            Head::Get("/status")
        );
        assert_eq!(
            judge(b"GET /healthz HTTP/1.1\r\n\r\n"),
            Head::Get("/healthz")
        );
    }

    #[test]
    fn near_misses_are_not_found() {
        for path in [
            "/",
            "/metrics/",
            "//metrics",
            "/../metrics",
            "/metrics/..",
            "/%6detrics",
            "/METRICS",
            "metrics",
            "*",
        ] {
            let request = format!("GET {path} HTTP/1.1\r\n\r\n");
            assert_eq!(
                judge(request.as_bytes()),
                Head::Refuse(Refusal::NotFound),
                "{path}"
            );
        }
    }

    #[test]
    fn other_methods_malformed_and_partial_heads() {
        for method in ["POST", "HEAD", "PUT", "DELETE", "get"] {
            let request = format!("{method} /metrics HTTP/1.1\r\n\r\n");
            assert_eq!(
                judge(request.as_bytes()),
                Head::Refuse(Refusal::Method),
                "{method}"
            );
        }
        assert_eq!(judge(b"GET /metrics HTTP/1.1\r\nHo"), Head::Partial);
        assert_eq!(judge(b""), Head::Partial);
        for bad in [
            &b"GET /metrics HTTP/2.0\r\n\r\n"[..],
            b"\x16\x03\x01\x02\x00",
            b"GET\x00/ HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            assert_eq!(judge(bad), Head::Refuse(Refusal::Malformed), "{bad:?}");
        }
        let long = format!("GET /metrics HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(
            judge(&long.as_bytes()[..MAX_HEAD]),
            Head::Refuse(Refusal::TooLarge)
        );
        let many: String = (0..40).map(|i| format!("X{i}: y\r\n")).collect();
        let request = format!("GET /metrics HTTP/1.1\r\n{many}\r\n");
        assert_eq!(judge(request.as_bytes()), Head::Refuse(Refusal::TooLarge));
    }

    /// Nothing a client sends panics `judge`: random bytes, and every prefix and one-byte
    /// change of a valid request (what httparse sees as a head arrives piece by piece).
    #[test]
    fn no_input_panics() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 300) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = judge(&bytes);
        }
        let valid = b"GET /metrics?a=b HTTP/1.1\r\nHost: x\r\nUser-Agent: y\r\n\r\n";
        for end in 0..=valid.len() {
            let _ = judge(&valid[..end]);
        }
        for i in 0..valid.len() {
            for value in [0u8, b' ', b'\r', b'\n', b'?', b':', 0x7f, 0xff] {
                let mut changed = valid.to_vec();
                changed[i] = value;
                let _ = judge(&changed);
            }
        }
    }

    #[test]
    fn answers_say_their_length_and_close() {
        let bytes = encode(&Response::text(200, "ok\n"));
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("\r\nContent-Length: 3\r\n"), "{text}");
        assert!(text.contains("\r\nConnection: close\r\n\r\nok\n"), "{text}");
        let refused = String::from_utf8(Refusal::Method.encode()).unwrap();
        assert!(refused.starts_with("HTTP/1.1 405 "), "{refused}");
        assert!(refused.contains("\r\nAllow: GET\r\n"), "{refused}");
    }
}
