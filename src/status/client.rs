//! `rstunnel --status [ADDRESS|CONFIG]`: finds a running instance's status endpoint (from
//! the argument, or the `status` line of a configuration file), asks it for `/status`
//! within `http::DEADLINE`, and prints a summary, one line per service, as `ss` does.
//! Exit code: 0 healthy, 1 reachable but not healthy, 2 not reachable or not a status
//! document (said on stderr).
//!
//! Must not: start anything, bind anything, or read more of an answer than `MAX_ANSWER`.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::doc::StatusDoc;
use super::http::{self, TimedStream};
use crate::config::{self, types::StatusAddress};

/// The most of an answer read: a `/status` with a few hundred thousand sessions.
const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// Where the endpoint is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Target::Tcp { host, port } => write!(f, "{host}:{port}"),
            Target::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Why no status document came back.
#[derive(Debug)]
pub enum ClientError {
    /// The configuration file could not be read or parsed.
    Config(config::ConfigError),
    /// The configuration has no `status` line.
    NoStatus(PathBuf),
    Connect {
        target: Target,
        error: io::Error,
    },
    Exchange {
        target: Target,
        error: io::Error,
    },
    /// The answer is not HTTP, or not a status document.
    NotStatus {
        target: Target,
        why: String,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Config(e) => write!(f, "{e}"),
            ClientError::NoStatus(path) => write!(
                f,
                "{} has no `status = ADDRESS` line: that instance serves no status endpoint",
                path.display()
            ),
            ClientError::Connect { target, error } => {
                write!(f, "cannot connect to {target}: {error}")
            }
            ClientError::Exchange { target, error } => write!(f, "{target}: {error}"),
            ClientError::NotStatus { target, why } => {
                write!(f, "{target} did not answer a status document: {why}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// `--status [ARG]`: prints the summary (stdout) or the error (stderr); returns the exit
/// code. `default_config` is read when there is no argument.
pub fn run(arg: Option<&str>, default_config: &str) -> i32 {
    let fetched = target_of(arg.unwrap_or(default_config)).and_then(|target| fetch(&target));
    match fetched {
        Ok(doc) => {
            print!("{}", summary(&doc));
            if doc.healthy {
                0
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("rstunnel --status: {e}");
            2
        }
    }
}

/// Reads the argument: `PORT` (on 127.0.0.1), an existing socket, an existing file (a
/// configuration), `HOST:PORT` or `[V6]:PORT`; anything else is taken for a
/// configuration file, and the loader says why it cannot be read.
pub fn target_of(arg: &str) -> Result<Target, ClientError> {
    if let Ok(port) = arg.parse::<u16>() {
        return Ok(loopback(port));
    }
    let path = Path::new(arg);
    match std::fs::metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => return Ok(Target::Unix(path.into())),
        Ok(_) => return from_config(path),
        Err(_) => {}
    }
    if !arg.starts_with('/') {
        if let Some((host, port)) = arg.rsplit_once(':') {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if let (false, Ok(port)) = (host.is_empty(), port.parse::<u16>()) {
                return Ok(Target::Tcp {
                    host: host.to_string(),
                    port,
                });
            }
        }
    }
    from_config(path)
}

fn loopback(port: u16) -> Target {
    Target::Tcp {
        host: "127.0.0.1".into(),
        port,
    }
}

/// The `status` line of a configuration. An endpoint on every interface is asked on
/// loopback.
fn from_config(path: &Path) -> Result<Target, ClientError> {
    // User and group names do not matter here: their lookup could only fail.
    let config = config::load_with(path, config::Names::Skip).map_err(ClientError::Config)?;
    match config.global.status {
        None => Err(ClientError::NoStatus(path.into())),
        Some(StatusAddress::Unix(path)) => Ok(Target::Unix(path)),
        Some(StatusAddress::Tcp { host: None, port }) => Ok(loopback(port)),
        Some(StatusAddress::Tcp {
            host: Some(host),
            port,
        }) => Ok(match host.as_str() {
            "0.0.0.0" | "*" => loopback(port),
            "::" => Target::Tcp {
                host: "::1".into(),
                port,
            },
            _ => Target::Tcp { host, port },
        }),
    }
}

/// GETs `/status` from `target`, all within `http::DEADLINE`, and parses the document.
pub fn fetch(target: &Target) -> Result<StatusDoc, ClientError> {
    let deadline = Instant::now() + http::DEADLINE;
    let exchange = |error| ClientError::Exchange {
        target: target.clone(),
        error,
    };
    let answer = match target {
        Target::Tcp { host, port } => {
            exchange_on(connect_tcp(target, host, *port, deadline)?, deadline)
        }
        Target::Unix(path) => {
            let stream = UnixStream::connect(path).map_err(|error| ClientError::Connect {
                target: target.clone(),
                error,
            })?;
            exchange_on(stream, deadline)
        }
    }
    .map_err(exchange)?;
    parse_answer(&answer).map_err(|why| ClientError::NotStatus {
        target: target.clone(),
        why,
    })
}

fn connect_tcp(
    target: &Target,
    host: &str,
    port: u16,
    deadline: Instant,
) -> Result<TcpStream, ClientError> {
    let failed = |error| ClientError::Connect {
        target: target.clone(),
        error,
    };
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().map_err(failed)?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            last = io::ErrorKind::TimedOut.into();
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(failed(last))
}

/// Sends the request and reads the answer to its end (the server closes after one).
fn exchange_on(mut stream: impl TimedStream, deadline: Instant) -> io::Result<Vec<u8>> {
    let request = b"GET /status HTTP/1.1\r\nHost: rstunnel\r\nAccept: application/json\r\nConnection: close\r\n\r\n";
    http::write_until(&mut stream, request, deadline)?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(io::ErrorKind::TimedOut)?;
        stream.set_timeouts(left)?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(answer),
            Ok(n) if answer.len() + n > MAX_ANSWER => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "answer too large",
                ))
            }
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::ErrorKind::TimedOut.into())
            }
            Err(e) => return Err(e),
        }
    }
}

/// The document in an HTTP answer (any status: the body says whether it is one).
fn parse_answer(answer: &[u8]) -> Result<StatusDoc, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let start = match response.parse(answer) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("the answer ended in its head".into()),
        Err(e) => return Err(format!("not HTTP ({e})")),
    };
    let code = response.code.unwrap_or(0);
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        });
    let mut body = &answer[start..];
    if let Some(length) = length {
        if body.len() < length {
            return Err(format!(
                "the body ended after {} of {length} bytes",
                body.len()
            ));
        }
        body = &body[..length];
    }
    serde_json::from_slice(body).map_err(|e| {
        let reason = response.reason.unwrap_or("");
        format!("HTTP {code} {reason}, and the body is not the JSON expected ({e})")
    })
}

/// The summary's columns.
const HEADER: [&str; 9] = [
    "SERVICE",
    "STATE",
    "ACCEPT",
    "LIVE",
    "TOTAL",
    "HS-FAILED",
    "TO-TLS",
    "TO-SOCKET",
    "CERT-EXPIRY",
];

/// The summary `--status` prints: a header, one line per service, the process, health.
pub fn summary(doc: &StatusDoc) -> String {
    // The server's clock, not this one: expiry days as the server counts them.
    let now = doc.started_unix as f64 + doc.uptime_seconds;
    let mut rows = vec![HEADER.map(String::from)];
    for s in &doc.services {
        let expiry = doc
            .certificates
            .iter()
            .filter(|c| c.service == s.name)
            .map(|c| c.not_after_unix)
            .min()
            .map_or("-".to_string(), |t| days_left(t, now));
        rows.push([
            s.name.clone(),
            s.state.clone(),
            if s.accept.is_empty() {
                "-".into()
            } else {
                s.accept.join(",")
            },
            s.sessions_live.to_string(),
            s.sessions_total.to_string(),
            s.handshakes_failed.values().sum::<u64>().to_string(),
            bytes(s.bytes_to_tls),
            bytes(s.bytes_to_socket),
            expiry,
        ]);
    }
    let mut widths = [0usize; 9];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            // Names and addresses to the left, figures to the right.
            if i < 3 {
                line.push_str(&format!("{cell:<w$}  "));
            } else {
                line.push_str(&format!("{cell:>w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let p = &doc.process;
    out.push_str(&format!(
        "process: pid {}, up {}, RSS {}, {}/{} fds, {} threads, reloads {} ok {} failed\n",
        doc.pid,
        duration(doc.uptime_seconds),
        bytes(p.rss_bytes),
        p.open_fds,
        p.max_fds,
        p.threads,
        doc.reloads.ok,
        doc.reloads.failed,
    ));
    if doc.healthy {
        out.push_str("healthy\n");
    } else if doc.unhealthy.is_empty() {
        out.push_str("unhealthy\n");
    } else {
        for reason in &doc.unhealthy {
            out.push_str(&format!("unhealthy: {reason}\n"));
        }
    }
    out
}

/// Whole days until `not_after`, or `expired`.
fn days_left(not_after: i64, now: f64) -> String {
    let left = not_after as f64 - now;
    if left < 0.0 {
        "expired".into()
    } else {
        format!("{}d", (left / 86_400.0).floor() as i64)
    }
}

/// `512 B`, `1.5 KiB`, `3.2 GiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `45s`, `3m 20s`, `2h 5m`, `4d 3h`: the two largest units.
fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::doc::{Certificate, Process, Reloads, ServiceStatus};

    fn doc() -> StatusDoc {
        let now: u64 = 1_800_000_000;
        StatusDoc {
            pid: 4242,
            started_unix: now - 7_500,
            uptime_seconds: 7_500.0,
            healthy: false,
            unhealthy: vec!["[db] paused: connect 127.0.0.1:5432 refused".into()],
            process: Process {
                rss_bytes: 12 * 1024 * 1024 + 300 * 1024,
                open_fds: 23,
                max_fds: 1024,
                threads: 9,
                ..Process::default()
            },
            reloads: Reloads {
                ok: 2,
                failed: 1,
                ..Reloads::default()
            },
            services: vec![
                ServiceStatus {
                    name: "web".into(),
                    accept: vec!["127.0.0.1:8443".into(), "[::1]:8443".into()],
                    state: "listening".into(),
                    sessions_live: 3,
                    sessions_total: 120,
                    bytes_to_tls: 5 * 1024 * 1024 * 1024 / 2,
                    bytes_to_socket: 700,
                    handshakes_failed: [("verify".to_string(), 2), ("timeout".to_string(), 1)]
                        .into(),
                    ..ServiceStatus::default()
                },
                ServiceStatus {
                    name: "db".into(),
                    accept: vec!["/run/db.sock".into()],
                    state: "paused".into(),
                    ..ServiceStatus::default()
                },
            ],
            certificates: vec![
                Certificate {
                    service: "web".into(),
                    role: "cert".into(),
                    not_after_unix: now as i64 + 90 * 86_400 + 5,
                    ..Certificate::default()
                },
                Certificate {
                    service: "web".into(),
                    role: "ca".into(),
                    not_after_unix: now as i64 + 6 * 86_400 + 86_000,
                    ..Certificate::default()
                },
                Certificate {
                    service: "db".into(),
                    role: "cert".into(),
                    not_after_unix: now as i64 - 1,
                    ..Certificate::default()
                },
            ],
            ..StatusDoc::default()
        }
    }

    #[test]
    fn one_line_per_service_then_the_process_then_health() {
        let text = summary(&doc());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        let words = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(words(lines[0]), HEADER);
        assert_eq!(
            words(lines[1]),
            [
                "web",
                "listening",
                "127.0.0.1:8443,[::1]:8443",
                "3",
                "120",
                "3",
                "2.5",
                "GiB",
                "700",
                "B",
                "6d"
            ]
        );
        assert_eq!(
            words(lines[2]),
            [
                "db",
                "paused",
                "/run/db.sock",
                "0",
                "0",
                "0",
                "0",
                "B",
                "0",
                "B",
                "expired"
            ]
        );
        // Columns line up: each figure ends where its header does.
        let end = |l: &str, word: &str| l.find(word).map(|i| i + word.len());
        assert_eq!(end(lines[0], "TOTAL"), end(lines[1], "120"));
        assert_eq!(
            lines[3],
            "process: pid 4242, up 2h 5m, RSS 12.3 MiB, 23/1024 fds, 9 threads, reloads 2 ok 1 failed"
        );
        assert_eq!(
            lines[4],
            "unhealthy: [db] paused: connect 127.0.0.1:5432 refused"
        );
    }

    #[test]
    fn healthy_and_no_certificates() {
        let mut d = doc();
        d.healthy = true;
        d.unhealthy.clear();
        d.certificates.clear();
        let text = summary(&d);
        assert!(text.ends_with("\nhealthy\n"), "{text}");
        assert!(
            text.lines().nth(1).unwrap().trim_end().ends_with(" -"),
            "{text}"
        );
    }

    #[test]
    fn figures_read_as_people_write_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 40), "3.0 TiB");
        assert_eq!(duration(45.9), "45s");
        assert_eq!(duration(200.0), "3m 20s");
        assert_eq!(duration(4.0 * 86_400.0 + 3.0 * 3600.0 + 7.0), "4d 3h");
    }

    #[test]
    fn arguments_name_a_port_an_address_a_socket_or_a_config() {
        assert_eq!(target_of("9101").unwrap(), loopback(9101));
        assert_eq!(
            target_of("127.0.0.2:80").unwrap(),
            Target::Tcp {
                host: "127.0.0.2".into(),
                port: 80
            }
        );
        assert_eq!(
            target_of("[::1]:80").unwrap(),
            Target::Tcp {
                host: "::1".into(),
                port: 80
            }
        );
        let dir =
            std::env::temp_dir().join(format!("rstunnel-status-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("status.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert_eq!(
            target_of(socket.to_str().unwrap()).unwrap(),
            Target::Unix(socket.clone())
        );
        let with = dir.join("with.conf");
        std::fs::write(
            &with,
            "status = 0.0.0.0:9102\n[s]\nclient = yes\naccept = 1\nconnect = 2\n",
        )
        .unwrap();
        assert_eq!(target_of(with.to_str().unwrap()).unwrap(), loopback(9102));
        let without = dir.join("without.conf");
        std::fs::write(&without, "[s]\nclient = yes\naccept = 1\nconnect = 2\n").unwrap();
        let e = target_of(without.to_str().unwrap()).unwrap_err();
        assert!(matches!(e, ClientError::NoStatus(_)), "{e}");
        assert!(e.to_string().contains("no `status = ADDRESS` line"), "{e}");
        let missing = target_of(dir.join("missing.conf").to_str().unwrap()).unwrap_err();
        assert!(matches!(missing, ClientError::Config(_)), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn answers_that_are_not_status_documents() {
        let doc = serde_json::to_vec(&doc()).unwrap();
        let mut good =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", doc.len()).into_bytes();
        good.extend_from_slice(&doc);
        assert_eq!(parse_answer(&good).unwrap().pid, 4242);
        assert!(parse_answer(b"SSH-2.0-OpenSSH\r\n").is_err());
        let e =
            parse_answer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno\n").unwrap_err();
        assert!(e.contains("HTTP 404 Not Found"), "{e}");
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{}").is_err());
    }
}
