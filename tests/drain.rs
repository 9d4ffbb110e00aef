//! Live sessions at the process level (docs/ARCHITECTURE.md, Drain):
//!
//! * SIGUSR2 lists them: `Active connections:`, one `Active connection N: Service [S]...`
//!   line each, then `Listed N active connection(s)` and a `Memory: heap …` line.
//! * SIGTERM drains: `Terminated`, no new connections, data already sent is delivered, each
//!   client sees a clean TLS close (close_notify, then EOF), and the process exits 0 within
//!   TIMEOUTclose even if a client never answers.
//! * The connection cap follows the fd limit ((RLIMIT_NOFILE - 64) / 4): sessions over it
//!   are closed at once with `rejected: too many clients`, and slots free up when sessions end.

mod common;

use std::io;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use openssl::ssl::{ErrorCode, SslStream};

use common::daemon::parse_log_line;
use common::process::*;
use common::*;

const WAIT: Duration = Duration::from_secs(10);

fn open_session(t: &Tunnel, ca: &Path, i: usize) -> SslStream<TcpStream> {
    let mut s =
        tls_connect(t.addr("srv"), ca).unwrap_or_else(|e| t.fail(&format!("session {i}: {e:?}")));
    echo_check(&mut s, format!("session {i}\n").as_bytes()).unwrap_or_else(|e| t.fail(&e));
    s
}

#[test]
fn sigusr2_lists_active_connections() {
    let ((_dir, pki), _echo, t) = echo_server("sigusr2");
    let sessions: Vec<_> = (0..3).map(|i| open_session(&t, &pki.ca_file, i)).collect();

    t.signal(libc::SIGUSR2);
    t.wait_for_log("Listed 3 active connection(s)", WAIT);
    // After the list, what the allocator holds (glibc): the figure a leak would move.
    let memory = t.wait_for_log("Memory: heap ", WAIT);
    let kib: Vec<u64> = memory
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        kib.len() >= 2 && kib[0] > 0 && kib[0] <= kib[1],
        "memory line gives heap in use <= held, in KiB: {memory}"
    );
    let lines = t.log_lines();
    let header = lines
        .iter()
        .find(|l| l.contains("Active connections:"))
        .unwrap_or_else(|| t.fail("no `Active connections:` line"));
    assert_eq!(
        parse_log_line(header).map(|l| l.level),
        Some(0),
        "`Active connections:` is a LOG0 line: {header}"
    );
    let listed: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("Active connection ") && !l.contains("Active connections:"))
        .collect();
    assert_eq!(listed.len(), 3, "one line per live session: {listed:#?}");
    let mut ids = Vec::new();
    for l in &listed {
        let text = parse_log_line(l)
            .unwrap_or_else(|| t.fail(&format!("not a log line: {l}")))
            .text;
        let rest = text.strip_prefix("Active connection ").unwrap();
        let (id, rest) = rest.split_once(": ").unwrap();
        assert!(
            rest.starts_with("Service [srv]"),
            "listing line must name the service: {text}"
        );
        assert!(
            rest.contains("byte(s) sent to TLS") && rest.contains("byte(s) sent to socket"),
            "listing line must give the byte counts: {text}"
        );
        ids.push(
            id.parse::<u64>()
                .unwrap_or_else(|_| t.fail(&format!("bad id in {text}"))),
        );
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "each session listed once");
    let header_at = lines.iter().position(|l| l == header).unwrap();
    let footer_at = lines
        .iter()
        .position(|l| l.contains("Listed 3 active connection(s)"))
        .unwrap();
    assert!(
        listed.iter().all(|l| {
            let at = lines.iter().position(|x| x == *l).unwrap();
            header_at < at && at < footer_at
        }),
        "the session lines come between the header and the footer"
    );

    // Sessions keep working after a listing, and it counts only live ones.
    let mut sessions = sessions;
    echo_check(&mut sessions[0], b"still here\n").unwrap();
    tls_close(sessions.remove(2));
    t.wait_close_counts(1, WAIT);
    t.signal(libc::SIGUSR2);
    t.wait_for_log("Listed 2 active connection(s)", WAIT);
}

/// Reads until the session ends. `Ok(bytes)` for a clean end (close_notify, EOF), `Err` for
/// a reset, a truncated TLS stream or no end within `timeout`.
fn read_until_clean_close(
    s: &mut SslStream<TcpStream>,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    s.get_ref().set_read_timeout(Some(timeout)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.ssl_read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.code() == ErrorCode::ZERO_RETURN => return Ok(got),
            Err(e) => {
                if let Some(io) = e.io_error() {
                    if matches!(
                        io.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) {
                        return Err(format!("still open after {timeout:?}"));
                    }
                }
                return Err(format!("not a clean TLS close: {e}"));
            }
        }
    }
}

#[test]
fn sigterm_drains_live_sessions_and_exits_0_within_timeout_close() {
    let dir = TestDir::new("drain");
    let pki = Pki::new(&dir);
    let sink = Backend::sink();
    let mut t = Tunnel::server(&dir, &pki, sink.addr(), "TIMEOUTclose = 5");
    let addr = t.addr("srv");
    let mut sessions: Vec<SslStream<TcpStream>> = (0..3)
        .map(|i| {
            tls_connect(addr, &pki.ca_file)
                .unwrap_or_else(|e| t.fail(&format!("session {i}: {e:?}")))
        })
        .collect();
    // Each sends data right before the signal; it must all reach the backend.
    let sizes = [64 * 1024u64, 256 * 1024, 1024];
    let mut expected = Vec::new();
    for (i, s) in sessions.iter_mut().enumerate() {
        expected.push(send_payload(s, 100 + i as u64, sizes[i]).unwrap());
    }
    let signalled = Instant::now();
    t.signal(libc::SIGTERM);

    // Sessions 0 and 1 answer the tunnel's close_notify like a normal client; session 2 never
    // answers, so the tunnel has to give up on it after TIMEOUTclose.
    let mut quiet = sessions.pop().unwrap();
    for (i, mut s) in sessions.into_iter().enumerate() {
        match read_until_clean_close(&mut s, Duration::from_secs(8)) {
            Ok(extra) => assert!(extra.is_empty(), "session {i}: unexpected data {extra:?}"),
            Err(e) => t.fail(&format!("session {i} after SIGTERM: {e}")),
        }
        let _ = s.shutdown();
    }
    match read_until_clean_close(&mut quiet, Duration::from_secs(8)) {
        Ok(extra) => assert!(extra.is_empty()),
        Err(e) => t.fail(&format!("silent session after SIGTERM: {e}")),
    }
    let status = match t.wait_exit(Duration::from_secs(8)) {
        Some(st) => st,
        None => t.fail("still running 8 s after SIGTERM with TIMEOUTclose = 5"),
    };
    let took = signalled.elapsed();
    println!("exited {took:?} after SIGTERM (one client never answered the close_notify)");
    assert_eq!(status.code(), Some(0), "SIGTERM must exit 0");
    assert!(
        took <= Duration::from_millis(6500),
        "exit took {took:?} after SIGTERM; TIMEOUTclose = 5 bounds the drain"
    );
    assert!(t.has_log("Terminated"), "SIGTERM must log `Terminated`");

    let mut got: Vec<Digest> = (0..3).map(|_| sink.next_result(WAIT)).collect();
    got.sort_by_key(|d| d.bytes);
    expected.sort_by_key(|d| d.bytes);
    assert_eq!(
        got, expected,
        "the data each client sent just before SIGTERM must reach the backend intact"
    );
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "the listener must be gone"
    );
    drop(quiet);
}

/// One session that must be refused by the cap: the tunnel closes it at once.
fn assert_rejected(t: &Tunnel, ca: &Path, what: &str) {
    match tls_connect(t.addr("srv"), ca) {
        Ok(mut s) => {
            // TLS 1.3 may finish the client side before the server's verdict: the session
            // must still be dead.
            if echo_check(&mut s, b"over the cap\n").is_ok() {
                t.fail(&format!("{what}: a session over the cap was served"));
            }
        }
        Err(ConnectError::Hung) => t.fail(&format!("{what}: left hanging instead of closed")),
        Err(ConnectError::Tcp(e)) => t.fail(&format!("{what}: TCP connect failed: {e}")),
        Err(ConnectError::Handshake(_)) => {}
    }
}

#[test]
fn connection_cap_follows_the_fd_limit() {
    let dir = TestDir::new("cap");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    // RLIMIT_NOFILE 80: (80 - 64) / 2 = 8 concurrent sessions.
    let mut t = Tunnel::start_with_open_files(
        &dir,
        "cap",
        80,
        &server_body(echo.addr(), &pki.server.combined, ""),
    );

    let mut live: Vec<_> = (0..8).map(|i| open_session(&t, &pki.ca_file, i)).collect();
    for i in 8..12 {
        assert_rejected(&t, &pki.ca_file, &format!("session {i}"));
    }
    t.wait_for_logs("rejected: too many clients", 4, WAIT);
    for (i, s) in live.iter_mut().enumerate() {
        echo_check(s, b"still served\n")
            .unwrap_or_else(|e| t.fail(&format!("session {i} under the cap broke: {e}")));
    }

    // Free three slots; three new sessions fit, the fourth does not.
    for s in live.drain(..3) {
        tls_close(s);
    }
    t.wait_close_counts(3, WAIT);
    std::thread::sleep(Duration::from_millis(200));
    for i in 12..15 {
        live.push(open_session(&t, &pki.ca_file, i));
    }
    assert_rejected(&t, &pki.ca_file, "session 15");
    // Logged, or past the source's budget of loud lines counted (src/repeats/).
    assert_eq!(t.refusals_logged_or_counted("too many clients (>=8)"), 5);
    for s in live {
        tls_close(s);
    }
    assert_eq!(t.stop().code(), Some(0));
}

/// `maxConnections` (rstunnel extension) caps one service without touching another.
#[test]
fn per_service_cap_leaves_other_services_alone() {
    let dir = TestDir::new("svc-cap");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let body = format!(
        "cert = {cert}\n[srv]\naccept = 127.0.0.1:0\nconnect = {echo}\nmaxConnections = 2\n\
         [other]\naccept = 127.0.0.1:0\nconnect = {echo}\n",
        cert = pki.server.combined.display(),
        echo = echo.addr()
    );
    let t = Tunnel::start(&dir, "svc-cap", &body);
    let mut live: Vec<_> = (0..2).map(|i| open_session(&t, &pki.ca_file, i)).collect();
    assert_rejected(&t, &pki.ca_file, "third session of [srv]");
    t.wait_for_logs("rejected: too many clients (>=2)", 1, WAIT);
    // The other service is not limited by [srv]'s cap.
    let mut others: Vec<_> = (0..3)
        .map(|i| {
            let mut s = tls_connect(t.addr("other"), &pki.ca_file)
                .unwrap_or_else(|e| t.fail(&format!("[other] session {i}: {e:?}")));
            echo_check(&mut s, b"other\n").unwrap_or_else(|e| t.fail(&e));
            s
        })
        .collect();
    // A freed slot is usable again.
    tls_close(live.remove(0));
    t.wait_close_counts(1, WAIT);
    std::thread::sleep(Duration::from_millis(200));
    live.push(open_session(&t, &pki.ca_file, 3));
    for s in live.into_iter().chain(others.drain(..)) {
        tls_close(s);
    }
}
