//! `status = ADDRESS` (rstunnel extension, `src/status/`): what `/metrics`, `/status` and
//! `/healthz` say while real sessions run. Each counter is checked to move by exactly
//! what the test did (sessions, bytes, a failed handshake of each reason, a refusal, a
//! pause), every scrape passes `promtool check metrics`, and a reload keeps the counters
//! of the services that stay.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::faults::{echo_stream, Target};
use common::process::*;
use common::status::{get, scrape, scrape_until, status, Metrics};
use common::tls::tls_to;
use common::*;

const WAIT: Duration = Duration::from_secs(10);

/// `status = 127.0.0.1:PORT` as the global line a tunnel's body starts with, and where it
/// listens.
fn status_line() -> (String, SocketAddr) {
    let port = free_port();
    (format!("status = 127.0.0.1:{port}\n"), lo(port))
}

fn svc(name: &str) -> [(&'static str, &str); 1] {
    [("service", name)]
}

/// One echo session of `len` bytes through `entry`: all of it back, then a clean close.
fn echo_through(entry: SocketAddr, seed: u64, len: usize) {
    let data = payload(seed, len);
    let mut s = connect(entry);
    let writer = {
        let mut w = s.try_clone().unwrap();
        let data = data.clone();
        std::thread::spawn(move || {
            w.write_all(&data).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == data, "echo of {len} bytes came back different");
}

/// Sessions and bytes, live and ended, on both tunnels of a pair: three echo sessions of
/// known sizes move sessions_total by 3 and the byte counters by exactly their sizes; a
/// session still open is listed (in /metrics as active, in /status with its peer and
/// bytes); resumption is counted the same on both sides.
#[test]
fn sessions_and_bytes_move_by_exactly_what_was_relayed() {
    let dir = TestDir::new("status-bytes");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let (server_status, server_at) = status_line();
    let (client_status, client_at) = status_line();
    let server = Tunnel::start(
        &dir,
        "server",
        &format!(
            "{server_status}{}",
            server_body(echo.addr(), &pki.server.combined, "")
        ),
    );
    let client = Tunnel::start(
        &dir,
        "client",
        &format!(
            "{client_status}{}",
            client_body(
                server.addr("srv"),
                &format!(
                    "CAfile = {}\nverifyChain = yes\ncheckHost = localhost\n",
                    pki.ca_file.display()
                )
            )
        ),
    );
    let server_ready = Instant::now();
    let before = scrape(server_at);
    before.assert_promtool_clean();
    assert_eq!(before.value("rstunnel_sessions_total", &svc("srv")), 0.0);
    assert_eq!(before.value("rstunnel_service_listening", &svc("srv")), 1.0);

    let sizes = [1_000usize, 20_000, 300_000];
    for (i, len) in sizes.iter().enumerate() {
        echo_through(client.addr("cli"), i as u64, *len);
    }
    let total: f64 = sizes.iter().sum::<usize>() as f64;
    let ended = |m: &Metrics, name: &str| m.value("rstunnel_sessions_active", &svc(name)) == 0.0;
    let srv = scrape_until(server_at, WAIT, |m| ended(m, "srv"));
    let cli = scrape_until(client_at, WAIT, |m| ended(m, "cli"));
    for (m, name) in [(&srv, "srv"), (&cli, "cli")] {
        m.assert_promtool_clean();
        assert_eq!(
            m.value("rstunnel_sessions_total", &svc(name)),
            3.0,
            "{name}"
        );
        assert_eq!(
            m.value("rstunnel_handshakes_total", &svc(name)),
            3.0,
            "{name}"
        );
        for direction in ["to_tls", "to_socket"] {
            assert_eq!(
                m.value(
                    "rstunnel_relayed_bytes_total",
                    &[("service", name), ("direction", direction)]
                ),
                total,
                "{name} {direction}"
            );
        }
    }
    // The client tunnel offers the session it cached; what one side resumed, the other did.
    let resumed = srv.value("rstunnel_handshakes_resumed_total", &svc("srv"));
    assert!(
        resumed >= 1.0,
        "the client tunnel resumed nothing:\n{}",
        srv.0
    );
    assert_eq!(
        cli.value("rstunnel_handshakes_resumed_total", &svc("cli")),
        resumed
    );

    // A live session: counted as active, its bytes already in the totals, listed in /status.
    let mut open = connect(client.addr("cli"));
    open.write_all(&payload(9, 5_000)).unwrap();
    let mut back = vec![0u8; 5_000];
    open.read_exact(&mut back).unwrap();
    let live = scrape_until(server_at, WAIT, |m| {
        m.value(
            "rstunnel_relayed_bytes_total",
            &[("service", "srv"), ("direction", "to_socket")],
        ) == total + 5_000.0
    });
    assert_eq!(live.value("rstunnel_sessions_active", &svc("srv")), 1.0);
    let doc = status(server_at);
    let listed: Vec<_> = doc.sessions.iter().filter(|s| s.service == "srv").collect();
    assert_eq!(listed.len(), 1, "{:?}", doc.sessions);
    assert_eq!(
        (listed[0].bytes_to_socket, listed[0].bytes_to_tls),
        (5_000, 5_000)
    );
    assert!(
        listed[0].peer.starts_with("127.0.0.1:"),
        "{}",
        listed[0].peer
    );
    let service = doc
        .services
        .iter()
        .find(|s| s.name == "srv")
        .expect("srv in /status");
    assert_eq!(
        (service.state.as_str(), service.sessions_total),
        ("listening", 4)
    );
    assert!(doc.healthy && doc.process.threads > 0 && doc.process.rss_bytes > 0);
    // The process started before it was ready, and no earlier than the test started it.
    let since_ready = server_ready.elapsed().as_secs_f64();
    assert!(
        doc.uptime_seconds >= since_ready && doc.uptime_seconds < since_ready + 10.0,
        "uptime {} s, ready {since_ready} s ago",
        doc.uptime_seconds
    );
    drop(open);
}

/// Each failure before a session is served moves its own counter by one and no other: a
/// client that resets, one that speaks plain text to the TLS port, one that never sends
/// (TIMEOUTbusy), one without the client certificate a service requires, and one past
/// `maxConnections`.
#[test]
fn each_failed_handshake_and_refusal_is_counted_once_under_its_reason() {
    let dir = TestDir::new("status-failures");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let (line, at) = status_line();
    let body = format!(
        "{line}[srv]\naccept = 127.0.0.1:0\nconnect = {}\ncert = {}\nTIMEOUTbusy = 1\nmaxConnections = 1\n\
         [mtls]\naccept = 127.0.0.1:0\nconnect = {}\ncert = {}\nCAfile = {}\nverifyChain = yes\nrequireCert = yes\n",
        echo.addr(),
        pki.server.combined.display(),
        echo.addr(),
        pki.server.combined.display(),
        pki.ca_file.display()
    );
    let t = Tunnel::start(&dir, "server", &body);
    let failures = |m: &Metrics, service: &str, reason: &str| {
        m.value(
            "rstunnel_handshake_failures_total",
            &[("service", service), ("reason", reason)],
        )
    };
    let all_counts = |m: &Metrics| {
        let mut v = Vec::new();
        for service in ["srv", "mtls"] {
            for reason in ["verify", "protocol", "timeout", "reset", "other"] {
                v.push(((service, reason), failures(m, service, reason)));
            }
            for cause in [
                "connection_cap",
                "max_connections",
                "unproven_per_source",
                "unproven_max",
            ] {
                v.push((
                    (service, cause),
                    m.value(
                        "rstunnel_refused_connections_total",
                        &[("service", service), ("cause", cause)],
                    ),
                ));
            }
        }
        v
    };
    // One step, then exactly its own counter has moved by one.
    let step = |what: &str, service: &'static str, key: &'static str, act: &dyn Fn()| {
        let before = all_counts(&scrape(at));
        act();
        let after = scrape_until(at, WAIT, |m| {
            all_counts(m).iter().zip(&before).any(|(a, b)| a.1 != b.1)
        });
        // Let a second, wrong, count show up if there is one.
        std::thread::sleep(Duration::from_millis(300));
        let after_all = all_counts(&scrape(at));
        for ((k, a), (_, b)) in after_all.iter().zip(&before) {
            let expected = if *k == (service, key) { b + 1.0 } else { *b };
            assert_eq!(
                *a, expected,
                "{what}: {k:?} went from {b} to {a}\n{}",
                after.0
            );
        }
        after.assert_promtool_clean();
    };
    let srv = t.addr("srv");
    step("a client that connects and resets", "srv", "reset", &|| {
        common::faults::reset(connect(srv));
    });
    step(
        "a plain-text client on the TLS port",
        "srv",
        "protocol",
        &|| {
            let mut s = connect(srv);
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            let _ = s.read_to_end(&mut Vec::new());
        },
    );
    step(
        "a client that never sends (TIMEOUTbusy = 1)",
        "srv",
        "timeout",
        &|| {
            let mut s = connect(srv);
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.read_to_end(&mut Vec::new());
        },
    );
    let mtls = t.addr("mtls");
    step(
        "a client without the required certificate",
        "mtls",
        "verify",
        &|| {
            let mut s = tls_to(mtls, Some(&pki.ca_file), None);
            // TLS 1.3: the server's refusal arrives after the client's handshake is done.
            let _ = s.read(&mut [0u8; 16]);
        },
    );
    let held = tls_to(srv, Some(&pki.ca_file), None);
    scrape_until(at, WAIT, |m| {
        m.value("rstunnel_sessions_active", &svc("srv")) == 1.0
    });
    let admitted = scrape(at).value("rstunnel_sessions_total", &svc("srv"));
    step(
        "a connection past maxConnections = 1",
        "srv",
        "max_connections",
        &|| {
            let mut s = connect(srv);
            let _ = s.read_to_end(&mut Vec::new());
        },
    );
    assert_eq!(
        scrape(at).value("rstunnel_sessions_total", &svc("srv")),
        admitted,
        "a refused connection is no session"
    );
    drop(held);
}

/// A connection refused by the unproven budget is counted as a refusal and not as a
/// session: with `unprovenPerSource = 1`, a client silent for over a second is a suspect,
/// and the next connection from its address is refused.
#[test]
fn an_unproven_refusal_is_no_session() {
    let dir = TestDir::new("status-unproven");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let (line, at) = status_line();
    let t = Tunnel::start(
        &dir,
        "server",
        &format!(
            "{line}unprovenPerSource = 1\n{}",
            server_body(echo.addr(), &pki.server.combined, "")
        ),
    );
    let _silent = connect(t.addr("srv"));
    scrape_until(at, WAIT, |m| {
        m.value("rstunnel_sessions_total", &svc("srv")) == 1.0
    });
    std::thread::sleep(Duration::from_millis(1_300));
    // The refusal is a reset at once; when it beats connect_timeout's check of SO_ERROR
    // after its poll, the connect itself fails with it. Both are the refusal counted below.
    match TcpStream::connect_timeout(&t.addr("srv"), WAIT) {
        Ok(mut refused) => {
            set_timeouts(&refused);
            let _ = refused.read_to_end(&mut Vec::new());
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("connect {}: {e}", t.addr("srv")),
    }
    let cause = [("service", "srv"), ("cause", "unproven_per_source")];
    let m = scrape_until(at, WAIT, |m| {
        m.value("rstunnel_refused_connections_total", &cause) == 1.0
    });
    assert_eq!(
        m.value("rstunnel_sessions_total", &svc("srv")),
        1.0,
        "{}",
        m.0
    );
    assert_eq!(m.value("rstunnel_unproven_sessions", &[]), 1.0, "{}", m.0);
}

/// A session an SNI virtual host serves is counted under the listening service, its failed
/// connect included (the endpoint lists the services that listen).
#[test]
fn a_virtual_host_counts_into_its_primary() {
    let dir = TestDir::new("status-sni");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let dead = lo(free_port());
    let (line, at) = status_line();
    let body = format!(
        "{line}[prim]\naccept = 127.0.0.1:0\nconnect = {}\ncert = {}\n\
         [vh]\nsni = prim:vh.example\nconnect = {dead}\ncert = {}\n",
        echo.addr(),
        pki.server.combined.display(),
        pki.server.combined.display()
    );
    let t = Tunnel::start_waiting_for(Program::Rstunnel, &dir, "server", &body, &["prim"]);
    let r = common::openssl_cli::s_client(
        t.port("prim"),
        &["-servername", "vh.example", "-quiet"],
        b"x\n",
        Duration::from_secs(10),
    );
    t.wait_for_log("SNI: switched to service [vh]", WAIT);
    let target = dead.to_string();
    let failed = [("service", "prim"), ("target", target.as_str())];
    let m = scrape_until(at, WAIT, |m| {
        m.value("rstunnel_connect_failures_total", &failed) == 1.0
    });
    assert_eq!(
        m.value("rstunnel_sessions_total", &svc("prim")),
        1.0,
        "{}\n{}",
        m.0,
        r.describe()
    );
    assert_eq!(
        m.get("rstunnel_sessions_total", &svc("vh")),
        None,
        "{}",
        m.0
    );
}

/// An echo target on `port` that can be stopped and started again.
fn echo_on(port: u16) -> Target {
    let l = TcpListener::bind(lo(port)).expect("bind the backend port");
    Target::serve(l, |s| {
        let _ = echo_stream(s);
    })
}

/// `/healthz` is 200 while every service listens, 503 naming the paused service while its
/// far side is down, and 200 again once it is back; the pause and the failed connect to
/// that target are counted.
#[test]
fn healthz_turns_503_while_the_far_side_is_down_and_200_when_it_is_back() {
    let dir = TestDir::new("status-healthz");
    let pki = Pki::new(&dir);
    let backend_port = free_port();
    let backend = echo_on(backend_port);
    let (line, at) = status_line();
    let body = format!(
        "{line}{}",
        server_body(
            lo(backend_port),
            &pki.server.combined,
            "pauseWhenDown = yes"
        )
    );
    let t = Tunnel::start(&dir, "server", &body);
    // Until its first probe answers, a pausing service is starting, not yet healthy.
    assert!(
        wait_until(WAIT, || get(at, "/healthz").0 == 200),
        "/healthz never became 200: {:?}",
        get(at, "/healthz")
    );
    assert_eq!(get(at, "/healthz").1, "ok\n");

    drop(backend);
    // A session finds the far side down: the service pauses.
    let mut s = tls_to(t.addr("srv"), Some(&pki.ca_file), None);
    let _ = s.read(&mut [0u8; 1]);
    t.wait_for_log("Service [srv] paused: ", WAIT);
    let (code, why) = get(at, "/healthz");
    assert_eq!(code, 503, "{why}");
    assert!(why.contains("service [srv] paused"), "{why}");
    let m = scrape(at);
    m.assert_promtool_clean();
    assert_eq!(m.value("rstunnel_service_paused", &svc("srv")), 1.0);
    assert_eq!(m.value("rstunnel_service_listening", &svc("srv")), 0.0);
    assert_eq!(m.value("rstunnel_service_pauses_total", &svc("srv")), 1.0);
    let target = lo(backend_port).to_string();
    assert_eq!(
        m.value(
            "rstunnel_connect_failures_total",
            &[("service", "srv"), ("target", &target)]
        ),
        1.0,
        "one session failed to connect; probes are not sessions\n{}",
        m.0
    );

    let _backend = echo_on(backend_port);
    t.wait_for_log("Service [srv] resumed after ", WAIT);
    assert_eq!(get(at, "/healthz"), (200, "ok\n".to_string()));
    let m = scrape(at);
    assert_eq!(m.value("rstunnel_service_paused", &svc("srv")), 0.0);
    assert_eq!(m.value("rstunnel_service_pauses_total", &svc("srv")), 1.0);
}

/// SIGHUP keeps the counters of a service that stays and forgets one that is gone; good
/// and failed reloads are counted, with the time of the last good one.
#[test]
fn a_reload_keeps_the_counters_of_services_that_stay() {
    let dir = TestDir::new("status-reload");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let (line, at) = status_line();
    let section = |name: &str| {
        format!(
            "[{name}]\naccept = 127.0.0.1:0\nconnect = {}\ncert = {}\n",
            echo.addr(),
            pki.server.combined.display()
        )
    };
    let t = Tunnel::start(
        &dir,
        "server",
        &format!("{line}{}{}", section("stays"), section("goes")),
    );
    for name in ["stays", "goes"] {
        let mut s = tls_to(t.addr(name), Some(&pki.ca_file), None);
        s.write_all(b"ping\n").unwrap();
        let mut back = [0u8; 5];
        s.read_exact(&mut back).unwrap();
    }
    scrape_until(at, WAIT, |m| {
        m.value("rstunnel_sessions_active", &svc("goes")) == 0.0
    });
    let conf = std::fs::read_to_string(&t.conf).unwrap();
    std::fs::write(&t.conf, conf.replace(&section("goes"), "")).unwrap();
    t.signal(libc::SIGHUP);
    t.wait_for_log("Configuration reloaded", WAIT);
    let m = scrape(at);
    m.assert_promtool_clean();
    assert_eq!(m.value("rstunnel_sessions_total", &svc("stays")), 1.0);
    assert_eq!(
        m.get("rstunnel_sessions_total", &svc("goes")),
        None,
        "{}",
        m.0
    );
    assert_eq!(m.value("rstunnel_reloads_total", &[("result", "ok")]), 1.0);
    let last = m
        .get("rstunnel_last_reload_success_timestamp_seconds", &[])
        .expect("the time of the good reload");
    assert!(last > 1.7e9, "{last}");

    // The same endpoint spelled otherwise (a port alone is 127.0.0.1:PORT) is kept, not
    // bound twice.
    let conf = std::fs::read_to_string(&t.conf).unwrap();
    let respelled = conf.replace(line.trim(), &format!("status = {}", at.port()));
    assert_ne!(conf, respelled);
    std::fs::write(&t.conf, respelled).unwrap();
    t.signal(libc::SIGHUP);
    t.wait_for_logs("Configuration reloaded", 2, WAIT);
    let m = scrape(at);
    assert_eq!(
        m.value("rstunnel_reloads_total", &[("result", "ok")]),
        2.0,
        "{}",
        t.log_text()
    );

    std::fs::write(&t.conf, "this line is not an option\n").unwrap();
    t.signal(libc::SIGHUP);
    t.wait_for_log("Failed to reload the configuration file", WAIT);
    let m = scrape(at);
    assert_eq!(
        m.value("rstunnel_reloads_total", &[("result", "failed")]),
        1.0
    );
    assert_eq!(m.value("rstunnel_sessions_total", &svc("stays")), 1.0);
}

/// Hostile input on a running tunnel's status port touches nothing else: while 200
/// connections sit idle on it, others send garbage, an oversized head, other methods and
/// traversal paths (each refused with its 4xx), a TLS session streams through the tunnel
/// unharmed, and a GET of /metrics is still answered, counting exactly that one session.
#[test]
fn hostile_input_on_the_status_port_affects_nothing_else() {
    let dir = TestDir::new("status-hostile");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let (line, at) = status_line();
    let t = Tunnel::start(
        &dir,
        "server",
        &format!(
            "{line}{}",
            server_body(echo.addr(), &pki.server.combined, "")
        ),
    );
    let mut session = tls_to(t.addr("srv"), Some(&pki.ca_file), None);
    let idle: Vec<_> = (0..200).map(|_| connect(at)).collect();
    let answer = |request: &[u8]| {
        let mut s = connect(at);
        let _ = s.write_all(request);
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.lines().next().unwrap_or("").to_string()
    };
    let oversized = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    for (request, status) in [
        (&b"\x16\x03\x01\x02\x00garbage\r\n\r\n"[..], "400"),
        (oversized.as_bytes(), "431"),
        (
            b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "405",
        ),
        (b"DELETE /status HTTP/1.1\r\n\r\n", "405"),
        (b"GET /../metrics HTTP/1.1\r\n\r\n", "404"),
        (b"GET /metrics/../../etc/passwd HTTP/1.1\r\n\r\n", "404"),
        (b"GET %2Fmetrics HTTP/1.1\r\n\r\n", "404"),
    ] {
        let got = answer(request);
        assert!(
            got.starts_with(&format!("HTTP/1.1 {status}")),
            "{:?} answered {got:?}",
            String::from_utf8_lossy(&request[..request.len().min(40)])
        );
        // The tunnel relays meanwhile, every byte.
        let data = payload(status.len() as u64, 64 * 1024);
        session.write_all(&data).unwrap();
        let mut back = vec![0u8; data.len()];
        session.read_exact(&mut back).unwrap();
        assert!(
            back == data,
            "the session's echo changed while the status port was abused"
        );
    }
    let m = scrape(at);
    assert_eq!(m.value("rstunnel_sessions_active", &svc("srv")), 1.0);
    assert_eq!(m.value("rstunnel_sessions_total", &svc("srv")), 1.0);
    assert_eq!(
        m.value(
            "rstunnel_refused_connections_total",
            &[("service", "srv"), ("cause", "connection_cap")]
        ),
        0.0
    );
    drop(idle);
    common::tls::tls_close(&mut session, "the session after the abuse");
}

/// SIGTERM closes the status endpoint last: while the drain waits for a live session, a
/// monitor still reads it (the session still active, the service no longer listening, its
/// port refusing, `/healthz` 503), and the endpoint's port is closed at exit.
#[test]
fn the_endpoint_answers_through_the_drain_and_closes_at_exit() {
    let dir = TestDir::new("status-drain");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let (line, at) = status_line();
    let mut t = Tunnel::start(
        &dir,
        "server",
        &format!(
            "{line}{}",
            server_body(echo.addr(), &pki.server.combined, "TIMEOUTclose = 3")
        ),
    );
    // A client that never answers the drain's close_notify keeps its session to TIMEOUTclose.
    let session = tls_to(t.addr("srv"), Some(&pki.ca_file), None);
    scrape_until(at, WAIT, |m| {
        m.value("rstunnel_sessions_active", &svc("srv")) == 1.0
    });
    t.signal(libc::SIGTERM);
    t.wait_for_log("Closing 1 active connection(s)", WAIT);
    let m = scrape(at);
    assert_eq!(
        m.value("rstunnel_sessions_active", &svc("srv")),
        1.0,
        "{}",
        m.0
    );
    assert_eq!(
        m.value("rstunnel_service_listening", &svc("srv")),
        0.0,
        "{}",
        m.0
    );
    // The service's port refuses during the drain (the endpoint holds no listener open),
    // and health says why.
    let refused = std::net::TcpStream::connect_timeout(&t.addr("srv"), Duration::from_secs(2));
    assert!(
        refused.is_err(),
        "the service port still accepts during the drain"
    );
    let (code, why) = get(at, "/healthz");
    assert_eq!(code, 503, "{why}");
    assert!(why.contains("service [srv] stopping"), "{why}");
    assert!(
        t.wait_exit(WAIT).is_some_and(|s| s.success()),
        "exit 0 after the drain"
    );
    assert!(
        std::net::TcpStream::connect_timeout(&at, Duration::from_secs(2)).is_err(),
        "the status port is closed once the process is gone"
    );
    drop(session);
}
