//! The status endpoint's HTTP side (issue 17), driven through `rstunnel::status::server`
//! with a handler of the test's own: the three paths with curl, then hostile input on raw
//! sockets (malformed and oversized heads, other methods, traversal paths, a client
//! sending a byte a second, floods of idle connections, more requests than workers), the
//! Unix socket variant, and `rstunnel --status` reading a served document.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::free_port;
use common::tools::{find_program, run};
use common::TestDir;
use rstunnel::config::types::StatusAddress;
use rstunnel::status::doc::{Certificate, ServiceStatus, StatusDoc};
use rstunnel::status::server::{self, BindError, Server};
use rstunnel::status::{Handler, Response};

/// Answers each path with a body naming it, as the real handler's shape (text for
/// /metrics and /healthz, JSON for /status) without its content.
fn fixed_handler() -> Handler {
    Arc::new(|path: &str| match path {
        "/status" => Response {
            status: 200,
            content_type: "application/json",
            body: br#"{"fixed":true}"#.to_vec(),
        },
        other => Response::text(200, format!("fixed answer for {other}\n")),
    })
}

/// Serves `handler` on 127.0.0.1 at a free port.
fn serve(handler: Handler) -> (Server, SocketAddr) {
    let port = free_port();
    let bound = server::bind(&StatusAddress::Tcp { host: None, port }).expect("bind status");
    assert_eq!(bound.warning(), None, "loopback needs no warning");
    let addr: SocketAddr = bound.local_addr().parse().unwrap();
    (bound.serve(handler).expect("serve"), addr)
}

fn curl(args: &[&str]) -> common::tools::RunResult {
    let mut all = vec!["-sS", "--max-time", "10", "-i"];
    all.extend_from_slice(args);
    run(&find_program("curl"), &all, Duration::from_secs(15))
}

/// Sends `request` on a fresh connection and reads the answer to its end (the server
/// closes after one answer), within 10 s.
fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    read_answer(&mut s)
}

fn read_answer(s: &mut impl Read) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            // A reset after the answer (unread request bytes) still leaves the answer read.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the answer: {e} (after {answer:?})"),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_of(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

/// A GET for /metrics is answered 200 within `limit`.
fn get_within(addr: SocketAddr, limit: Duration, what: &str) {
    let asked = Instant::now();
    let answer = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status_of(&answer), 200, "{what}: {answer}");
    let took = asked.elapsed();
    assert!(took < limit, "{what}: answered after {took:?}");
}

/// The three paths answer 200 with the handler's body, its length and type, and close;
/// a query string is cut off; HTTP/1.0 is served too.
#[test]
fn the_three_paths_answer_200() {
    let (_server, addr) = serve(fixed_handler());
    for path in ["/metrics", "/healthz", "/status", "/metrics?name[]=x"] {
        let r = curl(&[&format!("http://{addr}{path}")]);
        assert!(r.status.success(), "{path}: {}", r.describe());
        let out = r.stdout.replace("\r\n", "\n");
        assert!(out.starts_with("HTTP/1.1 200 OK\n"), "{path}: {out}");
        assert!(out.contains("\nConnection: close\n"), "{path}: {out}");
        let body = out.split_once("\n\n").unwrap().1;
        let length = format!("\nContent-Length: {}\n", body.len());
        assert!(out.contains(&length), "{path}: {out}");
        let expected = match path {
            "/status" => r#"{"fixed":true}"#.to_string(),
            p => format!("fixed answer for {}\n", p.split('?').next().unwrap()),
        };
        assert_eq!(body, expected, "{path}");
    }
    let old = exchange(addr, b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!(status_of(&old), 200, "{old}");
}

/// GET only: POST (with a body), HEAD, PUT and DELETE are 405 with `Allow: GET`, and the
/// handler is never called for them.
#[test]
fn other_methods_are_405() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let (_server, addr) = serve(Arc::new(move |_: &str| {
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Response::text(200, "called\n")
    }));
    let url = format!("http://{addr}/metrics");
    let body = "x".repeat(3000);
    for args in [
        vec!["-X", "POST", "--data", body.as_str(), url.as_str()],
        vec!["-I", url.as_str()],
        vec!["-X", "PUT", "--data", "y", url.as_str()],
        vec!["-X", "DELETE", url.as_str()],
    ] {
        let r = curl(&args);
        let out = r.stdout.replace("\r\n", "\n");
        assert!(
            out.starts_with("HTTP/1.1 405 "),
            "{args:?}: {}",
            r.describe()
        );
        assert!(out.contains("\nAllow: GET\n"), "{args:?}: {out}");
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// Paths are compared, never normalised: every near miss of a served path is 404.
#[test]
fn traversal_and_near_miss_paths_are_404() {
    let (_server, addr) = serve(fixed_handler());
    for path in [
        "/",
        "/../metrics",
        "/metrics/..",
        "/metrics/",
        "//metrics",
        "/./metrics",
        "/%6detrics",
        "/metrics%00",
        "/%2e%2e/metrics",
        "/status.json",
        "/METRICS",
        "http://localhost/metrics",
        "*",
    ] {
        let answer = exchange(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        );
        assert_eq!(status_of(&answer), 404, "{path}: {answer}");
    }
    // curl sends `/../metrics` as written with --path-as-is.
    let r = curl(&["--path-as-is", &format!("http://{addr}/../metrics")]);
    assert!(r.stdout.starts_with("HTTP/1.1 404 "), "{}", r.describe());
}

/// Malformed request lines and heads are 400, oversized heads 431, and the endpoint serves
/// the next request as before.
#[test]
fn malformed_and_oversized_heads_are_refused() {
    let (_server, addr) = serve(fixed_handler());
    let many_headers: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"GARBAGE\r\n\r\n".to_vec(), 400),
        (b"GET /metrics\r\n\r\n".to_vec(), 400),
        (b"GET /metrics HTTP/2.0\r\n\r\n".to_vec(), 400),
        (
            b"GET /metrics HTTP/1.1\r\nNo colon here\r\n\r\n".to_vec(),
            400,
        ),
        (
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03".to_vec(),
            400,
        ),
        (b"GET \x00\xff HTTP/1.1\r\n\r\n".to_vec(), 400),
        (
            format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000)).into_bytes(),
            431,
        ),
        (
            format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(20_000)).into_bytes(),
            431,
        ),
        (
            format!("GET /metrics HTTP/1.1\r\n{many_headers}\r\n").into_bytes(),
            431,
        ),
    ];
    for (request, expected) in cases {
        let answer = exchange(addr, &request);
        assert_eq!(
            status_of(&answer),
            expected,
            "{:?}: {answer}",
            String::from_utf8_lossy(&request[..request.len().min(60)])
        );
    }
    let answer = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status_of(&answer), 200, "{answer}");
}

/// A client sending one byte a second is cut at the 5 s deadline (408), and meanwhile
/// other requests are answered at once.
#[test]
fn a_slow_client_is_cut_at_the_deadline_while_others_are_answered() {
    let (_server, addr) = serve(fixed_handler());
    let slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let started = Instant::now();
        for byte in b"GET /metrics HTTP/1.1\r\nHost: slow\r\n\r\n" {
            if s.write_all(&[*byte]).is_err() {
                break;
            }
            // Stop once the server has answered or closed.
            s.set_nonblocking(true).unwrap();
            let mut peek = [0u8; 1];
            let closed = !matches!(s.peek(&mut peek), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock);
            s.set_nonblocking(false).unwrap();
            if closed {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let answer = read_answer(&mut s);
        (started.elapsed(), answer)
    });
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..3 {
        get_within(addr, Duration::from_secs(1), "beside the slow client");
        std::thread::sleep(Duration::from_millis(500));
    }
    let (took, answer) = slow.join().unwrap();
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert!(
        took >= Duration::from_millis(4500) && took < Duration::from_millis(7000),
        "cut after {took:?}"
    );
}

/// Clients that never stop sending (past a refused head) do not keep the endpoint from
/// answering others, and are closed a second after their refusal.
#[test]
fn clients_that_never_stop_sending_do_not_stall_others() {
    let (_server, addr) = serve(fixed_handler());
    let blasters: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
                let junk = vec![b'x'; 64 * 1024];
                let started = Instant::now();
                let mut sent = 0usize;
                while started.elapsed() < Duration::from_secs(4) {
                    match s.write(&junk) {
                        Ok(n) => sent += n,
                        Err(_) => break,
                    }
                }
                (started.elapsed(), sent)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..5 {
        get_within(
            addr,
            Duration::from_millis(500),
            "beside clients sending without pause",
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for blaster in blasters {
        let (took, sent) = blaster.join().unwrap();
        assert!(sent > 64 * 1024, "sent only {sent} bytes");
        assert!(
            took < Duration::from_secs(3),
            "still connected after {took:?}"
        );
    }
}

/// Idle connections take no thread and at most `MAX_PENDING` places (the oldest goes
/// first): a normal GET is answered at once behind 50 of them, and behind 200.
#[test]
fn floods_of_idle_connections_do_not_stop_a_get() {
    let (_server, addr) = serve(fixed_handler());
    for flood in [50, 200] {
        let idle: Vec<TcpStream> = (0..flood)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        // Let the accept thread take them all in before the real request.
        std::thread::sleep(Duration::from_millis(300));
        get_within(addr, Duration::from_secs(2), &format!("behind {flood}"));
        drop(idle);
    }
}

/// At most `MAX_WORKERS` answers are made at once; a GET beyond them is answered 503 at
/// once, and once the workers are done the endpoint serves again.
#[test]
fn more_requests_than_workers_are_answered_503() {
    let (_server, addr) = serve(Arc::new(|_: &str| {
        std::thread::sleep(Duration::from_secs(2));
        Response::text(200, "slow answer\n")
    }));
    let requests = server::MAX_WORKERS + 4;
    let clients: Vec<_> = (0..requests)
        .map(|i| {
            // Staggered a little, so the first MAX_WORKERS are the ones that get workers.
            std::thread::sleep(Duration::from_millis(if i == server::MAX_WORKERS {
                200
            } else {
                10
            }));
            std::thread::spawn(move || {
                let asked = Instant::now();
                let answer = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
                (status_of(&answer), asked.elapsed())
            })
        })
        .collect();
    let results: Vec<(u16, Duration)> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let busy: Vec<_> = results.iter().filter(|(s, _)| *s == 503).collect();
    assert_eq!(ok, server::MAX_WORKERS, "{results:?}");
    assert_eq!(busy.len(), 4, "{results:?}");
    assert!(
        busy.iter().all(|(_, t)| *t < Duration::from_secs(1)),
        "{results:?}"
    );
    let answer = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status_of(&answer), 200, "{answer}");
}

/// `Server::stop` closes the listener: nothing answers on the port afterwards.
#[test]
fn stop_closes_the_listener() {
    let (server, addr) = serve(fixed_handler());
    let idle = TcpStream::connect(addr).unwrap();
    server.stop();
    let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(2));
    assert!(refused.is_err(), "still listening after stop");
    // The connection the thread was reading is closed too.
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    assert!(matches!((&idle).read(&mut buf), Ok(0) | Err(_)));
}

/// An address written out beyond loopback is bound, with the warning the caller logs.
#[test]
fn a_non_loopback_address_is_bound_with_a_warning() {
    let port = free_port();
    let bound = server::bind(&StatusAddress::Tcp {
        host: Some("0.0.0.0".into()),
        port,
    })
    .expect("bind 0.0.0.0");
    let warning = bound.warning().expect("a warning");
    assert!(
        warning.contains(&format!("0.0.0.0:{port} is not loopback")),
        "{warning}"
    );
    let loopback = server::bind(&StatusAddress::Tcp {
        host: Some("127.0.0.2".into()),
        port: free_port(),
    })
    .expect("bind 127.0.0.2");
    assert_eq!(loopback.warning(), None);
    let unknown = server::bind(&StatusAddress::Tcp {
        host: Some("no-such-host.invalid".into()),
        port,
    });
    assert!(
        matches!(unknown, Err(BindError::Resolve { .. })),
        "{:?}",
        unknown.err()
    );
}

/// The Unix socket variant: mode 0660, served to curl `--unix-socket`; a stale socket file
/// is replaced, a file that is not a socket is left alone and refused, a socket someone
/// listens on is refused; the file goes when the server stops.
#[test]
fn unix_socket_endpoint() {
    let dir = TestDir::new("status-unix");
    let path = dir.join("status.sock");
    // A stale socket: bound, then its listener closed without removing the file.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let bound = server::bind(&StatusAddress::Unix(path.clone())).expect("bind over a stale socket");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "{mode:o}");
    let server = bound.serve(fixed_handler()).unwrap();
    let socket = path.to_str().unwrap();
    let r = curl(&["--unix-socket", socket, "http://localhost/healthz"]);
    assert!(
        r.stdout.starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        r.describe()
    );
    assert!(
        r.stdout.ends_with("fixed answer for /healthz\n"),
        "{}",
        r.describe()
    );
    let r = curl(&[
        "--unix-socket",
        socket,
        "-X",
        "POST",
        "http://localhost/healthz",
    ]);
    assert!(r.stdout.starts_with("HTTP/1.1 405 "), "{}", r.describe());
    let taken = server::bind(&StatusAddress::Unix(path.clone()));
    assert!(
        matches!(taken, Err(BindError::InUse(_))),
        "{:?}",
        taken.err()
    );
    server.stop();
    assert!(!path.exists(), "socket file left after stop");

    let plain = dir.write("plain", "not a socket");
    let refused = server::bind(&StatusAddress::Unix(plain.clone()));
    assert!(
        matches!(refused, Err(BindError::NotASocket(_))),
        "{:?}",
        refused.err()
    );
    assert_eq!(std::fs::read_to_string(&plain).unwrap(), "not a socket");
}

/// A status document with one service, healthy or not.
fn document(healthy: bool) -> StatusDoc {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    StatusDoc {
        version: "test".into(),
        pid: 77,
        started_unix: now - 65,
        uptime_seconds: 65.0,
        healthy,
        unhealthy: if healthy {
            vec![]
        } else {
            vec!["[relay] paused: far side refused".into()]
        },
        services: vec![ServiceStatus {
            name: "relay".into(),
            accept: vec!["127.0.0.1:6514".into()],
            state: if healthy { "listening" } else { "paused" }.into(),
            sessions_live: 2,
            sessions_total: 41,
            bytes_to_tls: 3 * 1024 * 1024,
            bytes_to_socket: 512,
            handshakes_failed: [("verify".to_string(), 5)].into(),
            ..ServiceStatus::default()
        }],
        certificates: vec![Certificate {
            service: "relay".into(),
            role: "cert".into(),
            not_after_unix: now as i64 + 30 * 86_400 + 3600,
            ..Certificate::default()
        }],
        ..StatusDoc::default()
    }
}

/// A handler answering `doc` on /status, 404 elsewhere.
fn document_handler(doc: StatusDoc) -> Handler {
    let body = serde_json::to_vec(&doc).unwrap();
    Arc::new(move |path: &str| match path {
        "/status" => Response {
            status: 200,
            content_type: "application/json",
            body: body.clone(),
        },
        _ => Response::text(404, "only /status here\n"),
    })
}

fn serve_document(doc: StatusDoc) -> (Server, SocketAddr) {
    serve(document_handler(doc))
}

fn rstunnel_status(arg: &str) -> common::tools::RunResult {
    run(
        &common::daemon::rstunnel_bin(),
        &["--status", arg],
        Duration::from_secs(15),
    )
}

fn service_line(out: &str) -> Vec<String> {
    let line = out
        .lines()
        .find(|l| l.starts_with("relay "))
        .unwrap_or_else(|| panic!("no service line in {out}"));
    line.split_whitespace().map(String::from).collect()
}

/// `rstunnel --status HOST:PORT`, `PORT`, `SOCKET` and `CONFIG`: the service line, the process
/// line; exit 0 when healthy, 1 when not (with the reason).
#[test]
fn status_command_prints_the_services() {
    let (_healthy, addr) = serve_document(document(true));
    let r = rstunnel_status(&addr.to_string());
    assert_eq!(r.status.code(), Some(0), "{}", r.describe());
    assert_eq!(
        service_line(&r.stdout),
        [
            "relay",
            "listening",
            "127.0.0.1:6514",
            "2",
            "41",
            "5",
            "3.0",
            "MiB",
            "512",
            "B",
            "30d"
        ]
    );
    assert!(
        r.stdout.contains("\nprocess: pid 77, up 1m 5s, "),
        "{}",
        r.stdout
    );
    assert!(r.stdout.ends_with("\nhealthy\n"), "{}", r.stdout);

    let by_port = rstunnel_status(&addr.port().to_string());
    assert_eq!(by_port.stdout, r.stdout);

    let dir = TestDir::new("status-cli");
    let socket = dir.join("status.sock");
    let _on_socket = server::bind(&StatusAddress::Unix(socket.clone()))
        .unwrap()
        .serve(document_handler(document(true)))
        .unwrap();
    let by_socket = rstunnel_status(socket.to_str().unwrap());
    assert_eq!(by_socket.status.code(), Some(0), "{}", by_socket.describe());
    assert_eq!(by_socket.stdout, r.stdout);

    let (_paused, addr) = serve_document(document(false));
    let conf = dir.write(
        "with-status.conf",
        format!(
            "status = {}\n[relay]\nclient = yes\naccept = 1\nconnect = 2\n",
            addr.port()
        ),
    );
    let r = rstunnel_status(conf.to_str().unwrap());
    assert_eq!(r.status.code(), Some(1), "{}", r.describe());
    assert_eq!(service_line(&r.stdout)[1], "paused");
    assert!(
        r.stdout
            .ends_with("\nunhealthy: [relay] paused: far side refused\n"),
        "{}",
        r.stdout
    );
}

/// Exit 2, with the reason on stderr: nothing listening, an answer that is not a status
/// document, a configuration without `status`.
#[test]
fn status_command_fails_with_2() {
    let nothing = rstunnel_status(&format!("127.0.0.1:{}", free_port()));
    assert_eq!(nothing.status.code(), Some(2), "{}", nothing.describe());
    assert!(
        nothing.stderr.contains("cannot connect to 127.0.0.1:"),
        "{}",
        nothing.stderr
    );
    assert!(nothing.stdout.is_empty());

    let (_server, addr) = serve(fixed_handler());
    let wrong = rstunnel_status(&addr.to_string());
    assert_eq!(wrong.status.code(), Some(2), "{}", wrong.describe());
    assert!(
        wrong.stderr.contains("did not answer a status document"),
        "{}",
        wrong.stderr
    );

    let dir = TestDir::new("status-cli-none");
    let conf = dir.write(
        "none.conf",
        "[relay]\nclient = yes\naccept = 1\nconnect = 2\n",
    );
    let none = rstunnel_status(conf.to_str().unwrap());
    assert_eq!(none.status.code(), Some(2), "{}", none.describe());
    assert!(
        none.stderr.contains("no `status = ADDRESS` line"),
        "{}",
        none.stderr
    );
    assert!(Path::new(&conf).exists());
}
