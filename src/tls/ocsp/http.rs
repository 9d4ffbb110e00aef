//! The OCSP transport: one HTTP/1.0 POST (`application/ocsp-request`) over plain TCP to a
//! responder, the whole exchange within TIMEOUTocsp, and the parse of the answer. Bytes in,
//! bytes out: knows nothing of OCSP itself, speaks no TLS (an `https://` responder is
//! refused here, so it counts as giving no answer), opens no listening socket.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::config::url::ResponderUrl;

/// Largest responder answer read (real ones are a few KiB).
const MAX_HTTP_RESPONSE: usize = 1 << 20;

fn time_left(deadline: Instant) -> Result<Duration, String> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|left| !left.is_zero())
        .ok_or_else(|| "TIMEOUTocsp exceeded".to_string())
}

/// POSTs a DER request to `url` and returns the response body. Blocks for at most `timeout`
/// (resolving the name aside); the connection is closed on return.
pub(super) fn http_post(
    url: &ResponderUrl,
    request: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    if url.https {
        return Err("https responders are not supported".into());
    }
    let deadline = Instant::now() + timeout;
    let addrs = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolving {}: {e}", url.host))?;
    let mut last_error = format!("{}: no address", url.host);
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, time_left(deadline)?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_error = format!("connect {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last_error)?;
    let head = format!(
        "POST {} HTTP/1.0\r\nHost: {}\r\nContent-Type: application/ocsp-request\r\n\
         Accept: application/ocsp-response\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.path,
        url.host_header(),
        request.len()
    );
    let mut message = head.into_bytes();
    message.extend_from_slice(request);
    stream
        .set_write_timeout(Some(time_left(deadline)?))
        .and_then(|()| stream.write_all(&message))
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(body) = complete_body(&received)? {
            return Ok(body);
        }
        stream
            .set_read_timeout(Some(time_left(deadline)?))
            .map_err(|e| format!("reading the response: {e}"))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if received.len() + n > MAX_HTTP_RESPONSE => {
                return Err("response too large".into())
            }
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the response: {e}")),
        }
    }
    parse_http_response(&received, true)?.ok_or_else(|| "truncated HTTP response".into())
}

/// The body once `received` holds a whole response with a Content-Length; `None` while more
/// is needed (or the length is only known at EOF).
fn complete_body(received: &[u8]) -> Result<Option<Vec<u8>>, String> {
    parse_http_response(received, false)
}

/// Parses an HTTP/1.x response: a 200 status, headers, then the body (by Content-Length, or
/// everything until EOF when `at_eof`). `Ok(None)`: incomplete.
fn parse_http_response(data: &[u8], at_eof: bool) -> Result<Option<Vec<u8>>, String> {
    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&data[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.split_whitespace();
    let version_ok = words.next().is_some_and(|v| v.starts_with("HTTP/1."));
    let code = words.next().and_then(|c| c.parse::<u16>().ok());
    match (version_ok, code) {
        (true, Some(200)) => {}
        (true, Some(_)) => return Err(format!("responder answered \"{status_line}\"")),
        _ => return Err("not an HTTP response".into()),
    }
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.trim().parse::<usize>())
        .transpose()
        .map_err(|_| String::from("bad Content-Length"))?;
    let body = &data[end + 4..];
    match length {
        Some(n) if body.len() >= n => Ok(Some(body[..n].to_vec())),
        Some(_) if at_eof => Err("truncated HTTP response".into()),
        Some(_) => Ok(None),
        None if at_eof => Ok(Some(body.to_vec())),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn http_responses() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: 3\r\n\r\nabcdef";
        assert_eq!(parse_http_response(ok, false), Ok(Some(b"abc".to_vec())));
        let partial = b"HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\nab";
        assert_eq!(parse_http_response(partial, false), Ok(None));
        assert!(parse_http_response(partial, true).is_err());
        let no_length = b"HTTP/1.1 200 OK\r\n\r\nxyz";
        assert_eq!(parse_http_response(no_length, false), Ok(None));
        assert_eq!(
            parse_http_response(no_length, true),
            Ok(Some(b"xyz".to_vec()))
        );
        assert_eq!(parse_http_response(b"HTTP/1.0 200", true), Ok(None));
        let err = parse_http_response(b"HTTP/1.0 404 Not Found\r\n\r\n", true).unwrap_err();
        assert!(err.contains("404"), "{err}");
        assert!(parse_http_response(b"SSH-2.0\r\n\r\n", true).is_err());
    }

    /// A one-shot HTTP server on loopback that answers with `reply` after reading the request.
    fn serve_once(reply: &'static [u8]) -> (ResponderUrl, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            // The request is small: read until its 4-byte body arrived.
            while !got.ends_with(b"\r\n\r\nDER!") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(reply);
            got
        });
        let url = ResponderUrl::parse(&format!("http://127.0.0.1:{port}/ocsp")).unwrap();
        (url, t)
    }

    #[test]
    fn http_post_sends_a_request_and_reads_the_body() {
        let (url, server) = serve_once(b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nRESP");
        let body = http_post(&url, b"DER!", Duration::from_secs(5)).unwrap();
        assert_eq!(body, b"RESP");
        let request = String::from_utf8_lossy(&server.join().unwrap()).into_owned();
        assert!(request.starts_with("POST /ocsp HTTP/1.0\r\n"), "{request}");
        assert!(request.contains("Content-Type: application/ocsp-request\r\n"));
        assert!(request.contains("Content-Length: 4\r\n"));
        assert!(request.contains(&format!("Host: 127.0.0.1:{}\r\n", url.port)));
    }

    #[test]
    fn http_post_errors() {
        let (url, server) = serve_once(b"HTTP/1.0 500 Internal Server Error\r\n\r\n");
        let err = http_post(&url, b"DER!", Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("500"), "{err}");
        server.join().unwrap();
        // Nobody listening.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = ResponderUrl::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        assert!(http_post(&url, b"x", Duration::from_secs(2))
            .unwrap_err()
            .starts_with("connect"));
        let url = ResponderUrl::parse("https://127.0.0.1/").unwrap();
        assert!(http_post(&url, b"x", Duration::from_secs(2))
            .unwrap_err()
            .contains("https"));
    }

    #[test]
    fn http_post_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = ResponderUrl::parse(&format!(
            "http://127.0.0.1:{}/",
            listener.local_addr().unwrap().port()
        ))
        .unwrap();
        let started = Instant::now();
        // Accepted by the kernel's backlog, never answered.
        let err = http_post(&url, b"x", Duration::from_millis(300)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3), "{err}");
        drop(listener);
    }
}
