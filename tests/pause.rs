//! `pauseWhenDown` (rstunnel extension, issue 14; `src/health.rs`): a service whose far
//! side is down refuses new connections instead of accepting and dropping them, probes the
//! far side and listens again as soon as it answers.
//!
//! Every tunnel here names the option (the harness turns it off for other tests), runs real
//! TLS with certificates made at run time, and listens on loopback only.

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::daemon::is_connection_problem;
use common::faults::{echo_stream, echo_until_end, reset, Target};
use common::process::*;
use common::*;

const WAIT: Duration = Duration::from_secs(10);
/// A far side that comes back must be seen within this long: the probe back-off is at most
/// 1 s, plus the probe itself.
const RESUME: Duration = Duration::from_secs(5);

/// What a plain connect to `addr` gets right now.
fn connect_result(addr: SocketAddr) -> io::Result<TcpStream> {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2))
}

fn assert_refused(t: &Tunnel, addr: SocketAddr, when: &str) {
    match connect_result(addr) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        other => t.fail(&format!(
            "{when}: a connect to {addr} must be refused, got {other:?}"
        )),
    }
}

/// Binding `addr` again (with SO_REUSEADDR, as rstunnel itself binds) must fail: a pause
/// never lets the port go.
fn assert_port_held(t: &Tunnel, addr: SocketAddr) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_reuse_address(true).unwrap();
    match s.bind(&addr.into()) {
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {}
        other => t.fail(&format!(
            "while paused, {addr} must stay bound (EADDRINUSE), got {other:?}"
        )),
    }
}

/// A syslog-like target: reads, never answers; what it receives goes to the channel.
fn sink_target() -> (Target, std::sync::mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let t = Target::serve(l, move |mut s| {
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            let _ = tx.lock().unwrap().send(buf[..n].to_vec());
        }
    });
    (t, rx)
}

/// An echo target on a fixed port (so that it can come and go).
fn echo_on(port: u16) -> Target {
    let l = TcpListener::bind(lo(port)).expect("bind the backend port");
    Target::serve(l, |s| {
        let _ = echo_stream(s);
    })
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// A server tunnel whose target port is closed at startup starts paused: TLS clients are
/// refused at connect, the port stays bound, SIGHUP keeps it paused, and once the target
/// listens the tunnel resumes and relays.
#[test]
fn a_server_whose_target_is_down_at_startup_refuses_until_it_comes_up() {
    let dir = TestDir::new("pause-startup");
    let pki = Pki::new(&dir);
    let backend_port = free_port();
    let port = free_port();
    let body = format!(
        "[srv]\naccept = 127.0.0.1:{port}\nconnect = {}\ncert = {}\npauseWhenDown = yes\n",
        lo(backend_port),
        pki.server.combined.display()
    );
    let mut t = Tunnel::start(&dir, "server", &body);
    let addr = lo(port);
    t.wait_for_log("Service [srv] paused: ", WAIT);
    assert_refused(&t, addr, "target down at startup");
    assert_port_held(&t, addr);

    // A reload keeps the pause (and probes the far side again).
    t.signal(libc::SIGHUP);
    t.wait_for_log("Configuration reloaded", WAIT);
    assert_refused(&t, addr, "after SIGHUP, target still down");

    let _backend = echo_on(backend_port);
    let resumed = t.wait_for_log("Service [srv] resumed after ", RESUME);
    assert!(resumed.contains(" s"), "{resumed}");
    tls_echo(addr, &pki.ca_file, b"hello after resume\n").unwrap_or_else(|e| t.fail(&e));
    assert_eq!(
        t.log_lines()
            .iter()
            .filter(|l| l.contains("Service [srv] paused: "))
            .count(),
        1,
        "one outage, one pause line"
    );
    t.stop();
}

/// The failure of an earlier attempt, measured end to end: the client tunnel paused when
/// the server tunnel got SIGTERM and never resumed when a new server tunnel came up. Here:
/// a syslog-like session (nothing ever comes back) is open when the server tunnel stops;
/// the client tunnel must refuse from then on, and accept and relay again within a few
/// seconds of a new server tunnel listening on the same port.
#[test]
fn a_client_tunnel_resumes_when_a_new_server_tunnel_comes_back() {
    let dir = TestDir::new("pause-far-restart");
    let pki = Pki::new(&dir);
    let (backend, received) = sink_target();
    let server_port = free_port();
    let server_body = format!(
        "[srv]\naccept = 127.0.0.1:{server_port}\nconnect = {}\ncert = {}\npauseWhenDown = yes\n",
        backend.addr(),
        pki.server.combined.display()
    );
    let mut server = Tunnel::start(&dir, "server", &server_body);
    let client_port = free_port();
    let client = Tunnel::start(
        &dir,
        "client",
        &format!(
            "client = yes\n[cli]\naccept = 127.0.0.1:{client_port}\nconnect = {}\nverifyChain = yes\nCAfile = {}\ncheckHost = localhost\npauseWhenDown = yes\n",
            lo(server_port),
            pki.ca_file.display()
        ),
    );
    let entry = lo(client_port);
    client.wait_for_log("far side answers", WAIT);

    // A sender that only writes, as syslog does.
    let mut sender = connect(entry);
    sender.write_all(b"a line\n").unwrap();
    let got = received.recv_timeout(WAIT).expect("the line arrives");
    assert_eq!(got, b"a line\n");
    server.signal(libc::SIGTERM);
    client.wait_for_log("Service [cli] paused: ", WAIT);
    assert_refused(&client, entry, "server tunnel gone");
    assert_port_held(&client, entry);
    drop(sender);
    if server.wait_exit(WAIT).is_none() {
        server.fail("did not exit after SIGTERM");
    }

    std::thread::sleep(Duration::from_secs(1));
    assert_refused(&client, entry, "server tunnel still gone");
    let server2 = Tunnel::start(&dir, "server2", &server_body);
    client.wait_for_log("Service [cli] resumed after ", RESUME);
    let mut sender = connect(entry);
    sender.write_all(b"after\n").unwrap();
    let got = received
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| client.fail("nothing relayed after the new server tunnel came up"));
    assert_eq!(got, b"after\n", "the client tunnel relays again");
    assert!(
        !server2
            .log_lines()
            .iter()
            .any(|l| is_connection_problem(l, 3)),
        "the client tunnel's probe is no error on the far tunnel:\n{}",
        server2.log_text()
    );
}

/// `pauseWhenDown = no`: the behaviour of stunnel, accept and then drop.
#[test]
fn pause_when_down_no_accepts_and_drops() {
    let dir = TestDir::new("pause-off");
    let pki = Pki::new(&dir);
    let dead = lo(free_port());
    let t = Tunnel::start(
        &dir,
        "server",
        &server_body(dead, &pki.server.combined, "pauseWhenDown = no"),
    );
    for _ in 0..3 {
        // Accepted: the handshake completes, then the session is dropped.
        let mut s = tls_connect(t.addr("srv"), &pki.ca_file)
            .unwrap_or_else(|e| t.fail(&format!("accepted and handshaken, got {e:?}")));
        let mut buf = [0u8; 16];
        let end = s.read(&mut buf);
        assert!(!matches!(end, Ok(n) if n > 0), "dropped, got {end:?}");
    }
    assert!(
        wait_until(WAIT, || t
            .log_lines()
            .iter()
            .filter(|l| l.contains("No more addresses to connect"))
            .count()
            >= 3),
        "each of the three connections is accepted and fails to connect"
    );
    assert!(!t.has_log("paused"), "pauseWhenDown = no never pauses");
}

/// A target that resets one session while it is up costs a check, never a pause: the
/// probe answers at once and the next session is served.
#[test]
fn one_reset_session_of_a_live_target_is_a_check_not_a_pause() {
    let dir = TestDir::new("pause-check");
    let pki = Pki::new(&dir);
    let backend = Target::echo();
    let t = Tunnel::start(
        &dir,
        "server",
        &server_body(backend.addr(), &pki.server.combined, "pauseWhenDown = yes"),
    );
    t.wait_for_log("far side answers", WAIT);
    backend.push(|mut s| {
        let mut buf = [0u8; 16];
        let _ = s.read(&mut buf);
        reset(s);
    });
    let mut s =
        tls_connect(t.addr("srv"), &pki.ca_file).unwrap_or_else(|e| t.fail(&format!("{e:?}")));
    let _ = s.write_all(b"first\n");
    let mut buf = [0u8; 16];
    let end = s.read(&mut buf);
    assert!(
        !matches!(end, Ok(n) if n > 0),
        "the session whose target reset must end, got {end:?}"
    );
    t.wait_for_log("checked after", WAIT);
    tls_echo(t.addr("srv"), &pki.ca_file, b"second\n").unwrap_or_else(|e| t.fail(&e));
    assert!(
        !t.has_log("paused"),
        "one reset of a live target is no pause"
    );
}

/// SIGTERM while paused (probes going to a target that refuses) exits promptly.
#[test]
fn sigterm_while_paused_exits_promptly() {
    let dir = TestDir::new("pause-term");
    let pki = Pki::new(&dir);
    let dead = lo(free_port());
    let mut t = Tunnel::start(
        &dir,
        "server",
        &server_body(dead, &pki.server.combined, "pauseWhenDown = yes"),
    );
    t.wait_for_log("Service [srv] paused: ", WAIT);
    std::thread::sleep(Duration::from_secs(3)); // into the long back-off
    let started = Instant::now();
    t.signal(libc::SIGTERM);
    let st = t.wait_exit(Duration::from_secs(2));
    assert!(
        st.is_some_and(|s| s.success()),
        "exit 0 within 2 s of SIGTERM, got {st:?} after {:?}",
        started.elapsed()
    );
}

/// A certificate that does not verify is a configuration problem: logged loudly, never a
/// pause. The client tunnel keeps accepting (and failing) connections.
#[test]
fn a_certificate_that_does_not_verify_never_pauses() {
    let dir = TestDir::new("pause-verify");
    let pki = Pki::new(&dir);
    let backend = Target::echo();
    let server = Tunnel::start(
        &dir,
        "server",
        &server_body(backend.addr(), &pki.server.combined, "pauseWhenDown = yes"),
    );
    let client = Tunnel::start(
        &dir,
        "client",
        &client_body(
            server.addr("srv"),
            &format!(
                "verifyChain = yes\nCAfile = {}\npauseWhenDown = yes",
                pki.wrong_ca_file.display()
            ),
        ),
    );
    client.wait_for_log("not pausing for it", WAIT);
    for _ in 0..3 {
        let p = probe(client.addr("cli"), b"x\n", Duration::from_secs(5));
        assert_ne!(p.end, End::TimedOut, "the failed session must end");
    }
    assert!(
        wait_until(WAIT, || client
            .log_lines()
            .iter()
            .filter(|l| l.contains("SSL_connect:"))
            .count()
            >= 3),
        "three sessions accepted, each failing its handshake"
    );
    assert!(
        !client.has_log("paused"),
        "verification failures never pause"
    );
}

/// kill -9 of the server tunnel under a live session: the client tunnel resets its plain
/// client at once (no waiting, no FIN to keep writing after) and pauses.
#[test]
fn a_far_tunnel_killed_mid_session_resets_the_client_and_pauses() {
    let dir = TestDir::new("pause-kill");
    let pki = Pki::new(&dir);
    let (backend, received) = sink_target();
    let mut pair = TunnelPair::start(
        &dir,
        &pki,
        backend.addr(),
        "pauseWhenDown = yes",
        "pauseWhenDown = yes",
    );
    pair.client.wait_for_log("far side answers", WAIT);
    let mut sender = connect(pair.entry());
    sender.write_all(b"one\n").unwrap();
    assert_eq!(received.recv_timeout(WAIT).unwrap(), b"one\n");
    let entry = pair.entry();
    let _ = pair.server.stop_with(libc::SIGKILL);
    sender
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    let started = Instant::now();
    let end = sender.read(&mut buf);
    assert!(
        matches!(&end, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
        "the plain client must get a reset, got {end:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "at once");
    pair.client.wait_for_log("Service [cli] paused: ", WAIT);
    assert_refused(&pair.client, entry, "server tunnel killed");
}

/// A reload that turns `pauseWhenDown` off while paused listens again (stunnel's
/// accept-then-drop), and one that turns it back on pauses again.
#[test]
fn a_reload_turning_the_option_off_listens_again() {
    let dir = TestDir::new("pause-reload-off");
    let pki = Pki::new(&dir);
    let port = free_port();
    let dead = lo(free_port());
    let body = |on: &str| {
        format!(
            "[srv]\naccept = 127.0.0.1:{port}\nconnect = {dead}\ncert = {}\npauseWhenDown = {on}\n",
            pki.server.combined.display()
        )
    };
    let t = Tunnel::start(&dir, "server", &body("yes"));
    t.wait_for_log("Service [srv] paused: ", WAIT);
    assert_refused(&t, lo(port), "paused");
    let header = std::fs::read_to_string(&t.conf).unwrap();
    let header = &header[..header.find("[srv]").unwrap()];
    write_atomic(&t.conf, &format!("{header}{}", body("no")));
    t.signal(libc::SIGHUP);
    t.wait_for_log("Configuration reloaded", WAIT);
    assert!(
        wait_until(WAIT, || connect_result(lo(port)).is_ok()),
        "pauseWhenDown = no after the reload: accepting again"
    );
    write_atomic(&t.conf, &format!("{header}{}", body("yes")));
    t.signal(libc::SIGHUP);
    t.wait_for_logs("Configuration reloaded", 2, WAIT);
    // Turned off, the pause was forgotten: turned on again the service starts over, probes
    // (its socket still listening, as a check) and pauses when the probe fails.
    assert!(
        wait_until(WAIT, || connect_result(lo(port)).is_err()),
        "pauseWhenDown = yes again: refusing"
    );
}

// ---- Second read of issue 14 (review findings, one regression test each) ----

/// Finding 1: clean syslog-like churn (connect, one line, half-close, wait for the end)
/// through client tunnel → server tunnel → a sink that never sends. The far side's close
/// answers ours and must never count as a far side closing first: zero failed sessions,
/// and no service ever checks or pauses (before the fix most sessions failed, the server
/// tunnel went checking and the client tunnel paused).
#[test]
fn clean_syslog_like_churn_never_checks_or_pauses() {
    let dir = TestDir::new("pause-churn");
    let pki = Pki::new(&dir);
    let (backend, received) = sink_target();
    let pair = TunnelPair::start(
        &dir,
        &pki,
        backend.addr(),
        "pauseWhenDown = yes\ndebug = 4",
        "pauseWhenDown = yes\ndebug = 4",
    );
    let entry = pair.entry();
    const THREADS: usize = 8;
    const SESSIONS: usize = 100;
    let failures = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let failures = failures.clone();
            std::thread::spawn(move || {
                for i in 0..SESSIONS {
                    let attempt = || -> io::Result<()> {
                        let mut s = TcpStream::connect_timeout(&entry, Duration::from_secs(5))?;
                        s.set_read_timeout(Some(Duration::from_secs(10)))?;
                        s.write_all(format!("<134>churn {t} {i}\n").as_bytes())?;
                        s.shutdown(std::net::Shutdown::Write)?;
                        let mut buf = [0u8; 64];
                        match s.read(&mut buf)? {
                            0 => Ok(()),
                            n => Err(io::Error::other(format!("{n} unexpected byte(s)"))),
                        }
                    };
                    if let Err(e) = attempt() {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("session {t}/{i}: {e}"));
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let mut lines = 0;
    let deadline = Instant::now() + WAIT;
    while lines < THREADS * SESSIONS && Instant::now() < deadline {
        if let Ok(chunk) = received.recv_timeout(Duration::from_millis(200)) {
            lines += chunk.iter().filter(|b| **b == b'\n').count();
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} sessions failed, first: {:#?}\n--- client ---\n{}",
        failures.len(),
        THREADS * SESSIONS,
        &failures[..failures.len().min(5)],
        pair.client.log_text()
    );
    assert_eq!(lines, THREADS * SESSIONS, "every line reached the sink");
    for t in [&pair.client, &pair.server] {
        let listed = t.usr2_services();
        assert!(
            listed.is_empty(),
            "normal churn must never check or pause a service, SIGUSR2 lists: {listed:#?}"
        );
        assert!(
            !t.has_log("checked after") && !t.has_log("paused"),
            "a check or pause logged under clean churn:\n{}",
            t.log_text()
        );
    }
}

/// A TLS server on loopback made of `handler`s (the test's own: the far side of a client
/// tunnel); the first connection (the client tunnel's startup probe) goes to `first`.
fn tls_server(
    pki: &Pki,
    first: impl FnOnce(openssl::ssl::SslStream<TcpStream>) + Send + 'static,
    each: impl Fn(openssl::ssl::SslStream<TcpStream>) + Send + Sync + 'static,
) -> Target {
    let acceptor = std::sync::Arc::new(common::faults::tls_acceptor(&pki.server));
    let for_first = acceptor.clone();
    let t = Target::serve(TcpListener::bind("127.0.0.1:0").unwrap(), move |s| {
        if let Ok(tls) = acceptor.accept(s) {
            each(tls);
        }
    });
    t.push(move |s| {
        if let Ok(tls) = for_first.accept(s) {
            first(tls);
        }
    });
    t
}

/// A far side that behaves: reads until close_notify and answers it.
fn polite(mut tls: openssl::ssl::SslStream<TcpStream>) {
    let mut buf = [0u8; 4096];
    while matches!(tls.read(&mut buf), Ok(n) if n > 0) {}
    let _ = tls.shutdown();
}

/// Ends a TLS session as many servers do: FIN, no close_notify, then waits for the peer's
/// end (so no unread input turns the close into a reset).
fn close_without_close_notify(tls: openssl::ssl::SslStream<TcpStream>) {
    let tcp = tls.get_ref();
    let _ = tcp.shutdown(std::net::Shutdown::Write);
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let mut raw = tcp;
    let mut buf = [0u8; 4096];
    while matches!(raw.read(&mut buf), Ok(n) if n > 0) {}
}

fn client_tunnel_to(dir: &TestDir, pki: &Pki, far: SocketAddr, extra: &str) -> Tunnel {
    Tunnel::start(
        dir,
        "client",
        &client_body(
            far,
            &format!(
                "verifyChain = yes\nCAfile = {}\ncheckHost = localhost\n{extra}",
                pki.ca_file.display()
            ),
        ),
    )
}

/// Finding 2: a far TLS server that sends a large response and then closes without
/// close_notify has not broken anything: the plain client gets every byte and a clean EOF
/// (before the fix: a reset after about 100 KiB, the rest thrown away).
#[test]
fn a_response_ended_without_close_notify_arrives_whole() {
    const SIZE: usize = 4_000_000;
    let dir = TestDir::new("pause-quiet-close");
    let pki = Pki::new(&dir);
    let server = tls_server(&pki, polite, |mut tls| {
        let body = vec![b'r'; SIZE];
        if tls.write_all(&body).is_ok() {
            close_without_close_notify(tls);
        }
    });
    // pauseWhenDown = yes, the default (the harness turns it off unless named).
    let client = client_tunnel_to(&dir, &pki, server.addr(), "pauseWhenDown = yes");
    let mut s = connect(client.addr("cli"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let end = loop {
        match s.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => got += n,
            Err(e) => break Err(e),
        }
    };
    assert!(
        end.is_ok() && got == SIZE,
        "the plain client must get all {SIZE} bytes and a clean EOF, got {got} then {end:?}\n{}",
        client.log_text()
    );
    assert!(!client.has_log("paused"), "{}", client.log_text());
}

/// Finding 3: a healthy far side that answers our close_notify by closing without its own
/// (nginx does) is up: the service starts and stays accepting (before the fix every probe
/// counted it as down, for ever).
#[test]
fn a_far_side_that_answers_close_notify_with_a_bare_eof_is_up() {
    let dir = TestDir::new("pause-bare-eof");
    let pki = Pki::new(&dir);
    let nginx_like = |mut tls: openssl::ssl::SslStream<TcpStream>| {
        echo_until_end(&mut tls);
        close_without_close_notify(tls);
    };
    let server = tls_server(&pki, nginx_like, nginx_like);
    let client = client_tunnel_to(&dir, &pki, server.addr(), "pauseWhenDown = yes");
    client.wait_for_log("Service [cli]: far side answers", WAIT);
    for i in 0..3 {
        let line = format!("echo {i}\n");
        let (got, end) = half_close_exchange(client.addr("cli"), line.as_bytes());
        assert_eq!(got, line.as_bytes(), "{}", client.log_text());
        assert!(
            end.is_ok(),
            "a clean EOF, got {end:?}\n{}",
            client.log_text()
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    connect_result(client.addr("cli")).unwrap_or_else(|e| client.fail(&format!("{e}")));
    assert!(!client.has_log("paused"), "{}", client.log_text());
}

/// Finding 4: a far side that refuses our client certificate (TLS 1.3: its alert comes
/// after our handshake completed) is a configuration problem: logged as an error, never a
/// pause; the client tunnel keeps accepting (and the sessions fail, logged as before).
#[test]
fn a_far_side_refusing_our_certificate_never_pauses() {
    let dir = TestDir::new("pause-cert-refused");
    let pki = Pki::new(&dir);
    let backend = Target::echo();
    let server = Tunnel::start(
        &dir,
        "server",
        &server_body(
            backend.addr(),
            &pki.server.combined,
            &format!(
                "verifyChain = yes\nCAfile = {}\npauseWhenDown = yes",
                pki.ca_file.display()
            ),
        ),
    );
    let client = client_tunnel_to(
        &dir,
        &pki,
        server.addr("srv"),
        &format!(
            "cert = {}\npauseWhenDown = yes",
            pki.wrong_client.combined.display()
        ),
    );
    client.wait_for_log("Service [cli]: far side answers", WAIT);
    assert!(
        client.has_log("refused the session"),
        "the probe logs the refusal as an error:\n{}",
        client.log_text()
    );
    for _ in 0..3 {
        let p = probe(client.addr("cli"), b"x\n", Duration::from_secs(5));
        assert_ne!(p.end, End::TimedOut, "the failed session must end");
        assert!(p.received.is_empty());
    }
    std::thread::sleep(Duration::from_secs(1));
    connect_result(client.addr("cli"))
        .unwrap_or_else(|e| client.fail(&format!("still accepting, got {e}")));
    assert!(!client.has_log("paused"), "{}", client.log_text());
    assert!(
        client
            .log_lines()
            .iter()
            .any(|l| l.contains("LOG3") && l.contains("alert")),
        "the sessions' failure is logged as an error:\n{}",
        client.log_text()
    );
}

/// Finding 5: at startup a pausing service probes before it listens, so a client cannot
/// land in a backlog that a failed first probe then resets (before the fix: connect and
/// write succeeded, and a reset came seconds later). The far side here takes TCP
/// connections and never answers the handshake: the first probe lasts TIMEOUTconnect.
#[test]
fn no_connection_is_queued_before_the_first_probe() {
    let dir = TestDir::new("pause-first-probe");
    let pki = Pki::new(&dir);
    let silent = Target::serve(TcpListener::bind("127.0.0.1:0").unwrap(), |s| {
        std::thread::sleep(Duration::from_secs(15));
        drop(s);
    });
    let port = free_port();
    let body = format!(
        "client = yes\n[cli]\naccept = 127.0.0.1:{port}\nconnect = {}\nverifyChain = yes\nCAfile = {}\nTIMEOUTconnect = 3\npauseWhenDown = yes\n",
        silent.addr(),
        pki.ca_file.display()
    );
    let conf = dir.write(
        "client.conf",
        format!("foreground = yes\ndebug = 7\n{body}"),
    );
    let t = Tunnel::spawn(
        &common::daemon::rstunnel_bin(),
        &[conf.as_os_str()],
        "client",
        conf.clone(),
    );
    t.wait_for_log("Service [cli] (FD=", WAIT);
    // The first probe is under way for 3 s: connects are refused, none is queued.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) && !t.has_log("Service [cli] paused: ") {
        if let Ok(mut s) = connect_result(lo(port)) {
            let wrote = s.write_all(b"a line the sender thinks is delivered\n");
            t.fail(&format!(
                "connect accepted (write: {wrote:?}) before the first probe answered"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    t.wait_for_log("Service [cli] paused: ", WAIT);
    assert_refused(&t, lo(port), "paused at startup");
}

/// Finding 6: a probe of a Unix target whose backlog is full does not block the listener
/// thread (a blocking connect would wait for ever): the service pauses, and SIGTERM exits
/// at once.
#[test]
fn a_unix_target_with_a_full_backlog_pauses_without_blocking() {
    let dir = TestDir::new("pause-unix-full");
    let pki = Pki::new(&dir);
    let path = dir.join("full.sock");
    let listener =
        socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(&socket2::SockAddr::unix(&path).unwrap())
        .unwrap();
    listener.listen(0).unwrap();
    // Fill its backlog (never accepted).
    let mut fillers = Vec::new();
    loop {
        let c = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        c.set_nonblocking(true).unwrap();
        match c.connect(&socket2::SockAddr::unix(&path).unwrap()) {
            Ok(()) => fillers.push(c),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break,
            Err(e) => panic!("filling the backlog: {e}"),
        }
        assert!(fillers.len() < 100, "the backlog does not fill");
    }
    let body = format!(
        "[srv]\naccept = 127.0.0.1:0\nconnect = {}\ncert = {}\npauseWhenDown = yes\n",
        path.display(),
        pki.server.combined.display()
    );
    let conf = dir.write(
        "server.conf",
        format!("foreground = yes\ndebug = 7\n{body}"),
    );
    let mut t = Tunnel::spawn(
        &common::daemon::rstunnel_bin(),
        &[conf.as_os_str()],
        "server",
        conf.clone(),
    );
    t.wait_for_log("Service [srv] paused: ", WAIT);
    let started = Instant::now();
    t.signal(libc::SIGTERM);
    let st = t.wait_exit(Duration::from_secs(3));
    assert!(
        st.is_some_and(|s| s.success()),
        "exit 0 within 3 s of SIGTERM, got {st:?} after {:?}",
        started.elapsed()
    );
    drop(fillers);
}

/// Finding 7: probes are logged at debug on both tunnels: on the client tunnel the
/// certificate it accepts during a probe, on the far tunnel the probe's session (it
/// closes cleanly having moved nothing).
#[test]
fn probes_are_logged_at_debug_on_both_tunnels() {
    let dir = TestDir::new("pause-probe-log");
    let pki = Pki::new(&dir);
    let backend = Target::echo();
    let pair = TunnelPair::start(
        &dir,
        &pki,
        backend.addr(),
        "pauseWhenDown = yes",
        &format!(
            "verifyChain = yes\nCAfile = {}\ncheckHost = localhost\npauseWhenDown = yes",
            pki.ca_file.display()
        ),
    );
    pair.client
        .wait_for_log("Service [cli]: far side answers", WAIT);
    pair.server
        .wait_for_log("0 byte(s) sent to TLS, 0 byte(s) sent to socket", WAIT);
    let level_of = |t: &Tunnel, pat: &str| -> Vec<u8> {
        t.log_lines()
            .iter()
            .filter(|l| l.contains(pat))
            .filter_map(|l| common::daemon::parse_log_line(l).map(|p| p.level))
            .collect()
    };
    let accepted = level_of(&pair.client, "Certificate accepted");
    assert!(
        !accepted.is_empty() && accepted.iter().all(|l| *l == 7),
        "the probe's certificate lines at debug, got levels {accepted:?}\n{}",
        pair.client.log_text()
    );
    let closed = level_of(&pair.server, "Connection closed: 0 byte(s)");
    assert!(
        !closed.is_empty() && closed.iter().all(|l| *l == 7),
        "the far tunnel logs the probe's empty session at debug, got levels {closed:?}\n{}",
        pair.server.log_text()
    );
    // A real session is logged as before. (It resumes the TLS session the probe left in
    // the cache, so it verifies no certificate.)
    let (got, _) = half_close_exchange(pair.entry(), b"real\n");
    assert_eq!(got, b"real\n");
    pair.server
        .wait_for_log("Connection closed: 5 byte(s)", WAIT);
    assert!(level_of(&pair.server, "Connection closed: 5 byte(s)").contains(&5));
}

/// Sends `data`, half-closes, reads to the end: what came back and how it ended.
fn half_close_exchange(addr: SocketAddr, data: &[u8]) -> (Vec<u8>, io::Result<()>) {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let end = s
        .write_all(data)
        .and_then(|()| s.shutdown(std::net::Shutdown::Write))
        .and_then(|()| s.read_to_end(&mut got).map(|_| ()));
    (got, end)
}

/// The descriptor `fd` of process `pid`, duplicated into this one (pidfd_getfd; root).
fn steal_fd(pid: i32, fd: i32) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: plain syscalls on numbers; the new descriptor is ours and owned once.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        assert!(pidfd >= 0, "pidfd_open: {}", io::Error::last_os_error());
        let dup = libc::syscall(libc::SYS_pidfd_getfd, pidfd as i32, fd, 0);
        let err = io::Error::last_os_error();
        libc::close(pidfd as i32);
        assert!(dup >= 0, "pidfd_getfd: {err}");
        std::os::fd::OwnedFd::from_raw_fd(dup as i32)
    }
}

/// Waits until every thread of `pid` is stopped (SIGSTOP is delivered asynchronously).
fn wait_stopped(pid: i32) {
    let stopped = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .all(|task| {
                let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                // The state follows the command name in parentheses.
                stat.rsplit(") ")
                    .next()
                    .is_some_and(|rest| rest.starts_with('T') || rest.starts_with('t'))
            })
    };
    assert!(wait_until(WAIT, stopped), "the tunnel did not stop");
}

/// Finding 9: a listener that stops listening behind the service's back (here: shut down
/// from outside, and its port taken meanwhile, so that listen() fails at first) is noticed
/// through accept()'s EINVAL and listened again with back-off: no error logged every
/// second, no dead listener (before the fix: "accept: Invalid argument" in a loop, for
/// ever).
#[test]
fn a_listener_that_stops_listening_listens_again_with_back_off() {
    use std::os::fd::AsRawFd;
    let dir = TestDir::new("pause-relisten");
    let pki = Pki::new(&dir);
    let backend = Target::echo();
    let t = Tunnel::start(
        &dir,
        "server",
        &server_body(backend.addr(), &pki.server.combined, "pauseWhenDown = yes"),
    );
    let addr = t.addr("srv");
    let fd: i32 = {
        let line = t.wait_for_log("Service [srv] (FD=", WAIT);
        let at = line.find("(FD=").unwrap() + 4;
        line[at..].split(')').next().unwrap().parse().unwrap()
    };
    let pid = common::faults::tunnel_pid(&t);
    let stolen = steal_fd(pid, fd);
    let squatter =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    squatter.set_reuse_address(true).unwrap();
    // Stopped, so that the squatter has the port before the tunnel can listen again.
    // SAFETY: a signal to our child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    wait_stopped(pid);
    // SAFETY: shutdown on a descriptor we own (a duplicate of the tunnel's listener).
    let down = unsafe { libc::shutdown(stolen.as_raw_fd(), libc::SHUT_RD) };
    assert_eq!(down, 0);
    let taken = squatter
        .bind(&addr.into())
        .and_then(|()| squatter.listen(16));
    // SAFETY: a signal to our child.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    taken.unwrap();
    t.wait_for_log("is not listening (accept: EINVAL)", WAIT);
    std::thread::sleep(Duration::from_secs(3));
    let errors: Vec<String> = t
        .log_lines()
        .into_iter()
        .filter(|l| is_connection_problem(l, 3) || (l.contains("LOG3") && l.contains("[srv]")))
        .collect();
    assert!(
        errors.len() <= 1,
        "one error for the failed listen(), not one per retry: {errors:#?}"
    );
    drop(squatter);
    t.wait_for_log("Service [srv]: listening on ", RESUME);
    tls_echo(addr, &pki.ca_file, b"listening again\n").unwrap_or_else(|e| t.fail(&e));
    drop(stolen);
}

/// Finding 10: a reload that turns `pauseWhenDown` off for a paused service forgets its
/// pause: SIGUSR2 no longer lists it as paused (before the fix it did, for ever).
#[test]
fn a_reload_turning_the_option_off_forgets_the_pause() {
    let dir = TestDir::new("pause-reload-forget");
    let pki = Pki::new(&dir);
    let dead = lo(free_port());
    let body = |on: &str| {
        format!(
            "[srv]\naccept = 127.0.0.1:0\nconnect = {dead}\ncert = {}\npauseWhenDown = {on}\n",
            pki.server.combined.display()
        )
    };
    let t = Tunnel::start(&dir, "server", &body("yes"));
    t.wait_for_log("Service [srv] paused: ", WAIT);
    let listed = t.usr2_services();
    assert!(
        listed
            .iter()
            .any(|l| l.contains("Service [srv] paused for")),
        "{listed:#?}"
    );
    let header = std::fs::read_to_string(&t.conf).unwrap();
    let header = &header[..header.find("[srv]").unwrap()];
    write_atomic(&t.conf, &format!("{header}{}", body("no")));
    t.signal(libc::SIGHUP);
    t.wait_for_log("Configuration reloaded", WAIT);
    let listed = t.usr2_services();
    assert!(
        !listed.iter().any(|l| l.contains("Service [srv]")),
        "a service that no longer pauses is not listed: {listed:#?}"
    );
}
