//! `pauseWhenDown` (rstunnel extension, issue 14; `src/health.rs`): a service whose far
//! side is down refuses new connections instead of accepting and dropping them, probes the
//! far side and listens again as soon as it answers.
//!
//! Every tunnel here names the option (the harness turns it off for other tests), runs real
//! TLS with certificates made at run time, and listens on loopback only.

mod common;
#[path = "common/process.rs"]
mod process;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::daemon::is_connection_problem;
use common::faults::{echo_stream, reset, Target};
use common::*;
use process::*;

const WAIT: Duration = Duration::from_secs(10);
/// A far side that comes back must be seen within this long: the probe back-off is at most
/// 2.5 s, plus the probe itself.
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

/// One TLS session through a server tunnel at `addr` that echoes `data`.
fn tls_echo(addr: SocketAddr, ca: &std::path::Path, data: &[u8]) -> Result<(), String> {
    let mut s = tls_connect(addr, ca).map_err(|e| format!("{e:?}"))?;
    echo_check(&mut s, data)?;
    tls_close(s);
    Ok(())
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
    // Still paused from before (the state outlives the reload): refusing again at once.
    assert!(
        wait_until(WAIT, || connect_result(lo(port)).is_err()),
        "pauseWhenDown = yes again: refusing"
    );
}
