//! Transport extras, checked by what users see:
//!
//! * `redirect = B` (server, with `verifyChain`): a client with a valid certificate reaches
//!   `connect`, a client without one or with one from another CA reaches B, and the log says
//!   `Redirecting connection`; the same with verifyPeer (pinning); a redirected client that
//!   resumes its TLS session stays redirected. `redirect` without verifyChain/verifyPeer,
//!   or in client mode, is a config error (`--check` exits 1).
//! * `protocol = socks` (server, no `connect`): SOCKS 5 (by name and by IPv4), 4a and 4
//!   CONNECT inside TLS reach an echo backend on this host's non-loopback address; targets
//!   on the loopback are refused, as stunnel refuses them; a SOCKS 5 CONNECT to a closed port
//!   is answered with reply code 5 and the session ends; a first byte that is no SOCKS
//!   version ends the session with a log line.
//! * exec+connect (`exec` + `connect`, no `accept`, client mode): the program talks to the
//!   TLS server through its stdio; `retry = 300` restarts it after each run, `retry = no`
//!   runs it once; `pty = yes` gives it a /dev/pts terminal.
//! * `transparent` (namespace tests are root only; network namespaces made here, 192.0.2.0/24
//!   only, deleted on drop with everything in them):
//!   `source`: the backend sees the client's own address (IP_TRANSPARENT + policy routing on
//!   the tunnel host; a control section without it shows the tunnel host's address); without
//!   CAP_NET_ADMIN/CAP_NET_RAW the failure is logged and names IP_TRANSPARENT, as stunnel's.
//!   `destination`: a client-mode tunnel behind an iptables REDIRECT connects to where the
//!   client meant to go (SO_ORIGINAL_DST), here a TLS server in another namespace; `both`
//!   does that from the client's address. A connection that was not redirected fails
//!   instead of looping back into the listener, and the listener itself needs no privilege
//!   (stunnel 5.68 binds it without CAP_NET_ADMIN).
//!
//! ```text
//! source:       C 192.0.2.2 ──▶ T 192.0.2.1 [srv, transparent=source] 192.0.2.5 ──▶ B 192.0.2.6 echo
//! destination:  C 192.0.2.2 ──(to 192.0.2.6:7777, REDIRECT in T)──▶ T [cli, transparent=destination]
//!                 ──TLS──▶ B 192.0.2.6:7777 [srv] ──▶ B 127.0.0.1 echo
//! ```

mod common;
use common::process;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslSession, SslStream, SslVerifyMode};

use common::daemon::{rstunnel_bin, START_TIMEOUT};
use common::faults::{in_named_netns, ip_words};
use common::process::{echo_check, pid_alive, require_root};
use common::tls::tls_over;
use common::tools::{find_program, run, RunResult};
use common::*;

const T: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// helpers

/// Writes `<label>.conf` (the standard global lines + `body`) and starts `prefix… rstunnel
/// conf` (`prefix` e.g. `ip netns exec NS`, or `setpriv …`), then waits for the `bound to`
/// lines of `sections` (an exec+connect section has none: pass only listening ones) and
/// for `Configuration successful`.
fn start_with(
    dir: &TestDir,
    label: &str,
    body: &str,
    prefix: &[&str],
    sections: &[&str],
) -> Tunnel {
    let bin = rstunnel_bin();
    // RSTUNNEL_TEST_BIN=/usr/bin/stunnel4 checks the tests against the reference.
    let conf_path = common::daemon::write_test_conf(dir, label, &bin, body);
    let (program, mut args): (PathBuf, Vec<&OsStr>) = match prefix.split_first() {
        Some((first, rest)) => (
            find_program(first),
            rest.iter().map(|a| OsStr::new(*a)).collect(),
        ),
        None => (bin.clone(), Vec::new()),
    };
    if !prefix.is_empty() {
        args.push(bin.as_os_str());
    }
    args.push(conf_path.as_os_str());
    let mut t = Tunnel::spawn(&program, &args, label, conf_path.clone());
    let names: Vec<String> = sections.iter().map(|s| s.to_string()).collect();
    t.wait_bound(&names, START_TIMEOUT);
    t.wait_for_log("Configuration successful", START_TIMEOUT);
    t
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Reads up to `\n`; panics unless a complete line came.
fn read_text_line<S: Read>(s: &mut S, what: &str) -> String {
    let line = read_line(s, 512).unwrap_or_else(|e| panic!("{what}: reading a line: {e}"));
    let text = String::from_utf8_lossy(&line).into_owned();
    assert!(
        text.ends_with('\n'),
        "{what}: no complete line came: {text:?}"
    );
    text.trim_end().to_string()
}

/// Close_notify, then read (briefly) what is left.
fn tls_finish<S: Read + Write>(s: &mut SslStream<S>) {
    let _ = s.shutdown();
    let mut buf = [0u8; 256];
    for _ in 0..64 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// Reads until the session ends. Returns what came and whether it ended (EOF or an error
/// such as a reset) rather than hanging until `timeout`.
fn read_until_end<S: Read>(s: &mut S, timeout_hint: &str) -> (Vec<u8>, Result<(), String>) {
    let mut got = Vec::new();
    // A reset (reset = yes) or a TLS error ends the session as an EOF does.
    match read_to_end_or_timeout(s, &mut got, None) {
        End::Eof | End::Closed(_) => (got, Ok(())),
        End::TimedOut => (
            got,
            Err(format!("{timeout_hint}: still open after the timeout")),
        ),
    }
}

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// redirect

fn redirect_server(dir: &TestDir, pki: &Pki, a: &Backend, b: &Backend, verify: &str) -> Tunnel {
    let body = format!(
        "[srv]\naccept = 127.0.0.1:0\nconnect = {}\nredirect = {}\ncert = {}\n{verify}\n",
        a.addr(),
        b.addr(),
        pki.server.combined.display(),
    );
    start_with(dir, "server", &body, &[], &["srv"])
}

/// One session through `entry` as a client presenting `cert`: the tag the backend sent.
fn tag_via(entry: SocketAddr, pki: &Pki, cert: Option<&LeafFiles>, what: &str) -> String {
    let mut s = tls_over(connect(entry), Some(&pki.ca_file), cert);
    let tag = read_text_line(&mut s, what);
    tls_finish(&mut s);
    tag
}

#[test]
fn redirect_sends_clients_that_fail_verification_elsewhere() {
    let dir = TestDir::new("redirect");
    let pki = Pki::new(&dir);
    let a = Backend::tagged("A");
    let b = Backend::tagged("B");
    let verify = format!("verifyChain = yes\nCAfile = {}", pki.ca_file.display());
    let srv = redirect_server(&dir, &pki, &a, &b, &verify);
    let entry = srv.addr("srv");

    assert_eq!(
        tag_via(entry, &pki, Some(&pki.client), "valid client"),
        "A",
        "a client with a certificate from the trusted CA must reach `connect`"
    );
    assert_eq!(
        tag_via(entry, &pki, None, "no certificate"),
        "B",
        "a client without a certificate must be redirected"
    );
    assert_eq!(
        tag_via(entry, &pki, Some(&pki.wrong_client), "wrong CA"),
        "B",
        "a client with a certificate from another CA must be redirected"
    );
    // Once more with a good one: a redirect does not stick to the service.
    assert_eq!(
        tag_via(entry, &pki, Some(&pki.client), "valid client again"),
        "A"
    );
    srv.wait_close_counts(4, T);
    let redirects = srv.wait_for_logs("Redirecting connection", 2, T);
    assert_eq!(
        redirects.len(),
        2,
        "exactly the two failing clients are redirected: {redirects:#?}"
    );
    assert_eq!((a.connections(), b.connections()), (2, 2));
}

/// One session as a client presenting `cert`, offering `resume` (a session from an earlier
/// connection): the tag the backend sent, the session to offer next time, and whether the
/// server resumed the offered one.
fn tag_via_session(
    entry: SocketAddr,
    pki: &Pki,
    cert: &LeafFiles,
    resume: Option<&SslSession>,
) -> (String, SslSession, bool) {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(&pki.ca_file).unwrap();
    b.set_verify(SslVerifyMode::PEER);
    b.set_certificate_file(&cert.cert, SslFiletype::PEM)
        .unwrap();
    b.set_private_key_file(&cert.key, SslFiletype::PEM).unwrap();
    let c = b.build();
    let mut cfg = c.configure().unwrap();
    if let Some(session) = resume {
        // SAFETY: the session comes from a connection to this same server with the same
        // protocol settings.
        unsafe { cfg.set_session(session).unwrap() };
    }
    let mut s = cfg
        .connect("localhost", connect(entry))
        .unwrap_or_else(|e| panic!("TLS handshake: {e}"));
    let tag = read_text_line(&mut s, "resumption");
    let reused = s.ssl().session_reused();
    let session = s.ssl().session().expect("a session").to_owned();
    tls_finish(&mut s);
    (tag, session, reused)
}

/// A redirected client must stay redirected when it tries to resume its TLS session: the
/// certificate check does not run again on resumption (stunnel keeps the verdict in the
/// session; rstunnel does not resume sessions of `redirect` services).
#[test]
fn redirect_survives_session_resumption() {
    let dir = TestDir::new("redirect-resume");
    let pki = Pki::new(&dir);
    let a = Backend::tagged("A");
    let b = Backend::tagged("B");
    let verify = format!("verifyChain = yes\nCAfile = {}", pki.ca_file.display());
    let srv = redirect_server(&dir, &pki, &a, &b, &verify);
    let entry = srv.addr("srv");
    for (who, cert, expect) in [
        ("wrong CA", &pki.wrong_client, "B"),
        ("valid client", &pki.client, "A"),
    ] {
        let (first, session, _) = tag_via_session(entry, &pki, cert, None);
        assert_eq!(first, expect, "{who}: first connection");
        // rstunnel does not resume sessions of `redirect` services at all, so the
        // second connection makes a full handshake and is judged again.
        let (again, _, _reused) = tag_via_session(entry, &pki, cert, Some(&session));
        assert_eq!(
            again, expect,
            "{who}: a resumed session must go where the full handshake went"
        );
    }
}

#[test]
fn redirect_with_verify_peer_sends_unpinned_clients_elsewhere() {
    let dir = TestDir::new("redirect-peer");
    let pki = Pki::new(&dir);
    let a = Backend::tagged("A");
    let b = Backend::tagged("B");
    // Pinning: only the client certificate itself is "trusted".
    let verify = format!("verifyPeer = yes\nCAfile = {}", pki.client.cert.display());
    let srv = redirect_server(&dir, &pki, &a, &b, &verify);
    let entry = srv.addr("srv");
    let other = pki
        .ca
        .issue("other.right.name", &["other.right.name"], KeyKind::EcP256)
        .write(&dir, "other-client");
    assert_eq!(
        tag_via(entry, &pki, Some(&pki.client), "pinned client"),
        "A"
    );
    assert_eq!(
        tag_via(entry, &pki, Some(&other), "valid but not pinned"),
        "B",
        "verifyPeer: a certificate that is not in CAfile must be redirected"
    );
    assert_eq!(tag_via(entry, &pki, None, "no certificate"), "B");
    srv.wait_for_logs("Redirecting connection", 2, T);
    assert_eq!((a.connections(), b.connections()), (1, 2));
}

#[test]
fn redirect_needs_verification_and_server_mode() {
    let dir = TestDir::new("redirect-check");
    let pki = Pki::new(&dir);
    let check = |name: &str, body: String| -> RunResult {
        let conf = dir.write(name, format!("foreground = yes\n{body}"));
        run(&rstunnel_bin(), &["--check", path_str(&conf)], T)
    };
    let section = |extra: &str| {
        format!(
            "[srv]\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:9\nredirect = 127.0.0.1:10\ncert = {}\nCAfile = {}\n{extra}\n",
            pki.server.combined.display(),
            pki.ca_file.display()
        )
    };
    for verify in ["verifyChain = yes", "verifyPeer = yes", "verify = 2"] {
        let r = check("ok.conf", section(verify));
        assert_eq!(
            r.status.code(),
            Some(0),
            "redirect with `{verify}` is valid\n{}",
            r.describe()
        );
    }
    for (what, extra) in [
        ("no verification at all", ""),
        ("requireCert alone", "requireCert = yes"),
        ("verify = 0", "verify = 0"),
    ] {
        let r = check("bad.conf", section(extra));
        assert_eq!(
            r.status.code(),
            Some(1),
            "redirect with {what} must be refused by --check\n{}",
            r.describe()
        );
        assert!(
            r.stderr.contains("redirect") || r.stdout.contains("redirect"),
            "the error should name `redirect`\n{}",
            r.describe()
        );
    }
    let r = check(
        "client.conf",
        format!(
            "client = yes\n[cli]\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:9\nredirect = 127.0.0.1:10\nverifyChain = yes\nCAfile = {}\n",
            pki.ca_file.display()
        ),
    );
    assert_eq!(
        r.status.code(),
        Some(1),
        "redirect in client mode must be refused\n{}",
        r.describe()
    );
}

// ---------------------------------------------------------------------------------------
// echo servers

/// A TCP echo server on a given listener (on any address, or in a namespace); records
/// every peer address.
struct Echo {
    addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    /// Listens on `bind` inside network namespace `ns`.
    fn in_ns(ns: &str, bind: &str) -> Echo {
        let bind = bind.to_string();
        Echo::on(in_named_netns(ns, move || {
            TcpListener::bind(&bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"))
        }))
    }

    fn on(listener: TcpListener) -> Echo {
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peers, stop) = (peers.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((mut s, peer)) => {
                            peers.lock().unwrap().push(peer);
                            s.set_nonblocking(false).unwrap();
                            set_timeouts(&s);
                            std::thread::spawn(move || {
                                let mut buf = [0u8; 16384];
                                while let Ok(n) = s.read(&mut buf) {
                                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                let _ = s.shutdown(Shutdown::Write);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Echo {
            addr,
            peers,
            stop,
            thread: Some(thread),
        }
    }

    fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// protocol = socks

fn socks_server(dir: &TestDir, pki: &Pki) -> Tunnel {
    let body = format!(
        "[socks]\naccept = 127.0.0.1:0\nprotocol = socks\ncert = {}\n",
        pki.server.combined.display()
    );
    start_with(dir, "socks", &body, &[], &["socks"])
}

fn socks_tls(entry: SocketAddr) -> SslStream<TcpStream> {
    let tcp = connect(entry);
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tls_over(tcp, None, None)
}

/// SOCKS 5 greeting (no authentication) and CONNECT to `addr` (address type 1 = IPv4, 3 =
/// name); returns the 10-byte reply (IPv4 bound address form).
fn socks5_connect(s: &mut SslStream<TcpStream>, atyp: u8, host: &[u8], port: u16) -> Vec<u8> {
    s.write_all(&[5, 1, 0]).unwrap();
    let mut method = [0u8; 2];
    s.read_exact(&mut method).expect("SOCKS5 method reply");
    assert_eq!(method, [5, 0], "the server must pick `no authentication`");
    let mut req = vec![5, 1, 0, atyp];
    if atyp == 3 {
        req.push(host.len() as u8);
    }
    req.extend_from_slice(host);
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).unwrap();
    let mut reply = vec![0u8; 10];
    s.read_exact(&mut reply).expect("SOCKS5 CONNECT reply");
    reply
}

fn echo_through(s: &mut SslStream<TcpStream>, what: &str) {
    let data = payload(7, 20_000);
    echo_check(s, &data).unwrap_or_else(|e| panic!("{what}: {e}"));
    tls_finish(s);
}

/// This host's own non-loopback IPv4 address (the source of its default route), for SOCKS
/// targets: stunnel refuses loopback targets (see below). `None` (the test is skipped, with
/// a message) on a host without one.
fn host_ipv4(test: &str) -> Option<Ipv4Addr> {
    let found = (|| {
        let s = UdpSocket::bind("0.0.0.0:0").ok()?;
        s.connect("198.51.100.1:9").ok()?; // no packet is sent
        match s.local_addr().ok()?.ip() {
            IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
            _ => None,
        }
    })();
    if found.is_none() {
        skipped(&format!(
            "{test}: this host has no non-loopback IPv4 address for SOCKS targets"
        ));
    }
    found
}

fn socks4_request(
    s: &mut SslStream<TcpStream>,
    port: u16,
    ip: [u8; 4],
    name: Option<&str>,
) -> [u8; 8] {
    let mut req = vec![4, 1];
    req.extend_from_slice(&port.to_be_bytes());
    req.extend_from_slice(&ip);
    req.extend_from_slice(b"tester\0");
    if let Some(name) = name {
        req.extend_from_slice(name.as_bytes());
        req.push(0);
    }
    s.write_all(&req).unwrap();
    let mut reply = [0u8; 8];
    s.read_exact(&mut reply).expect("SOCKS4 reply");
    reply
}

#[test]
fn socks_server_connects_socks5_socks4a_and_socks4_clients() {
    let Some(ip) = host_ipv4("socks_server_connects_socks5_socks4a_and_socks4_clients") else {
        return;
    };
    let dir = TestDir::new("socks");
    let pki = Pki::new(&dir);
    let echo = Echo::on(TcpListener::bind((ip, 0)).expect("bind echo on the host address"));
    let port = echo.addr.port();
    let name = ip.to_string(); // a host name the server resolves (numeric: no DNS here)
    let srv = socks_server(&dir, &pki);
    let entry = srv.addr("socks");

    // SOCKS 5, by name.
    let mut s = socks_tls(entry);
    let reply = socks5_connect(&mut s, 3, name.as_bytes(), port);
    assert_eq!(
        &reply[..2],
        &[5, 0],
        "SOCKS5 CONNECT name {name}: reply {reply:?}"
    );
    echo_through(&mut s, "SOCKS5 by name");

    // SOCKS 5, by IPv4 address.
    let mut s = socks_tls(entry);
    let reply = socks5_connect(&mut s, 1, &ip.octets(), port);
    assert_eq!(&reply[..2], &[5, 0], "SOCKS5 CONNECT {ip}: reply {reply:?}");
    echo_through(&mut s, "SOCKS5 by IPv4");

    // SOCKS 4a: 0.0.0.1 and the name after the user id.
    let mut s = socks_tls(entry);
    let reply = socks4_request(&mut s, port, [0, 0, 0, 1], Some(&name));
    assert_eq!(
        reply[0..2],
        [0, 0x5a],
        "SOCKS4a: request granted expected: {reply:?}"
    );
    echo_through(&mut s, "SOCKS4a");

    // SOCKS 4: IPv4 address.
    let mut s = socks_tls(entry);
    let reply = socks4_request(&mut s, port, ip.octets(), None);
    assert_eq!(
        reply[0..2],
        [0, 0x5a],
        "SOCKS4: request granted expected: {reply:?}"
    );
    echo_through(&mut s, "SOCKS4");

    assert_eq!(
        echo.peers().len(),
        4,
        "each SOCKS session reaches the backend once"
    );
    let counts = srv.wait_close_counts(4, T);
    for c in &counts {
        assert_eq!(
            (c.sent_to_tls, c.sent_to_socket),
            (20_000, 20_000),
            "the SOCKS exchange itself is not counted as relayed data: {counts:?}"
        );
    }
}

/// stunnel (protocol.c `validate`) refuses SOCKS targets on the loopback (127.0.0.0/8,
/// ::1): SOCKS5 reply 2 "connection not allowed by ruleset", SOCKS4 reply 91, and LOG3
/// `SOCKS connection to the IPv4 loopback rejected`. Otherwise any TLS client could reach
/// the tunnel host's local-only services.
#[test]
fn socks_refuses_loopback_targets() {
    let dir = TestDir::new("socks-loopback");
    let pki = Pki::new(&dir);
    let local_only = Backend::echo(); // 127.0.0.1
    let port = local_only.addr().port();
    let srv = socks_server(&dir, &pki);
    let entry = srv.addr("socks");
    type Request = fn(&mut SslStream<TcpStream>, u16) -> u8;
    let requests: [(&str, Request); 4] = [
        ("SOCKS5 127.0.0.1", |s, p| {
            socks5_connect(s, 1, &[127, 0, 0, 1], p)[1]
        }),
        ("SOCKS5 localhost", |s, p| {
            socks5_connect(s, 3, b"localhost", p)[1]
        }),
        ("SOCKS4 127.0.0.1", |s, p| {
            socks4_request(s, p, [127, 0, 0, 1], None)[1]
        }),
        ("SOCKS4a localhost", |s, p| {
            socks4_request(s, p, [0, 0, 0, 1], Some("localhost"))[1]
        }),
    ];
    let mut refused = Vec::new();
    for (what, request) in requests {
        let mut s = socks_tls(entry);
        refused.push((what, request(&mut s, port)));
    }
    assert_eq!(
        local_only.connections(),
        0,
        "a SOCKS client must not reach a service on the tunnel host's loopback; replies: {refused:?}"
    );
    for (what, code) in &refused {
        assert!(
            *code != 0 && *code != 0x5a,
            "{what}: the request must be refused (stunnel: 2 / 91), got {code}"
        );
    }
}

#[test]
fn socks5_connect_to_a_closed_port_gets_reply_5_and_the_session_ends() {
    let Some(ip) = host_ipv4("socks5_connect_to_a_closed_port_gets_reply_5_and_the_session_ends")
    else {
        return;
    };
    let dir = TestDir::new("socks-refused");
    let pki = Pki::new(&dir);
    let dead = DeadPort::on(IpAddr::V4(ip));
    let srv = socks_server(&dir, &pki);
    let mut s = socks_tls(srv.addr("socks"));
    let reply = socks5_connect(&mut s, 1, &ip.octets(), dead.addr.port());
    assert_eq!(
        &reply[..2],
        &[5, 5],
        "a refused target must be answered with code 5 (connection refused): {reply:?}"
    );
    let (rest, ended) = read_until_end(&mut s, "after a failed SOCKS5 CONNECT");
    ended.unwrap();
    assert!(
        rest.is_empty(),
        "nothing may follow the failure reply: {rest:?}"
    );
    srv.wait_for_log(
        &format!("s_connect: connect {}: Connection refused (111)", dead.addr),
        T,
    );
    srv.wait_close_counts(1, T);
}

#[test]
fn a_non_socks_first_byte_ends_the_session_with_a_log_line() {
    let dir = TestDir::new("socks-garbage");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let srv = socks_server(&dir, &pki);
    let mut s = socks_tls(srv.addr("socks"));
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let (got, ended) = read_until_end(&mut s, "after a non-SOCKS request");
    ended.unwrap();
    assert!(got.is_empty(), "no answer is expected: {got:?}");
    let line = srv
        .try_wait_for(T, |l| {
            daemon::is_connection_problem(l, 3) && l.contains("SOCKS")
        })
        .unwrap_or_else(|| srv.fail("no LOG3 line names the SOCKS failure"));
    assert!(
        line.contains("version"),
        "the line should say the version byte is wrong: {line}"
    );
    srv.wait_close_counts(1, T);
    assert_eq!(echo.connections(), 0);
}

// ---------------------------------------------------------------------------------------
// exec+connect

/// A client-mode exec+connect section `[ec]` running `sh <script>` against `server`.
fn exec_connect(
    dir: &TestDir,
    label: &str,
    server: SocketAddr,
    script: &Path,
    extra: &str,
) -> Tunnel {
    // `sandbox = no`: the scripts write their findings to files in the test directory and
    // run `tty` and `stty`, which the default sandbox refuses (tests/sandbox.rs).
    let body = format!(
        "client = yes\nsandbox = no\n[ec]\nexec = /bin/sh\nexecArgs = sh {}\nconnect = {server}\n{extra}\n",
        script.display()
    );
    start_with(dir, label, &body, &[], &[])
}

/// The script: sends `ping <pid>`, reads the echo, appends `got: <echo>` to `out`.
fn ping_script(dir: &TestDir, name: &str, out: &Path) -> PathBuf {
    dir.write(
        name,
        format!(
            "echo \"ping $$\"\nread line\necho \"got: $line\" >> {}\n",
            out.display()
        ),
    )
}

fn got_lines(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("got: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn exec_connect_with_retry_restarts_the_program() {
    let dir = TestDir::new("exec-connect-retry");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let server = Tunnel::server(&dir, &pki, echo.addr(), "");
    let out = dir.join("runs.txt");
    let script = ping_script(&dir, "ping.sh", &out);
    let started = Instant::now();
    let t = exec_connect(&dir, "ec", server.addr("srv"), &script, "retry = 300");
    std::thread::sleep(Duration::from_millis(2200).saturating_sub(started.elapsed()));
    let runs = got_lines(&out);
    // Each run takes a few ms, then 300 ms pass: about 7 runs in 2.2 s, never more than 8.
    assert!(
        (3..=8).contains(&runs.len()),
        "retry = 300 (ms): expected several runs, 300 ms apart, within ~2.2 s; got {}: {runs:?}\n{}",
        runs.len(),
        t.log_text()
    );
    let mut pids = Vec::new();
    for r in &runs {
        let pid = r
            .strip_prefix("got: ping ")
            .unwrap_or_else(|| panic!("the echo did not come back intact: {r:?}"));
        pids.push(pid.to_string());
    }
    pids.sort();
    pids.dedup();
    assert_eq!(
        pids.len(),
        runs.len(),
        "each run is a new program: {runs:?}"
    );
    assert!(
        echo.connections() >= runs.len(),
        "each run is a TLS session to the server"
    );
}

#[test]
fn exec_connect_without_retry_runs_once() {
    let dir = TestDir::new("exec-connect-once");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let server = Tunnel::server(&dir, &pki, echo.addr(), "");
    let out = dir.join("runs.txt");
    let script = ping_script(&dir, "ping.sh", &out);
    let mut t = exec_connect(&dir, "ec", server.addr("srv"), &script, "retry = no");
    assert!(
        wait_until(T, || !got_lines(&out).is_empty()),
        "the program did not complete one exchange\n{}",
        t.log_text()
    );
    std::thread::sleep(Duration::from_millis(2000));
    let runs = got_lines(&out);
    assert_eq!(runs.len(), 1, "retry = no: exactly one run: {runs:?}");
    assert!(runs[0].starts_with("got: ping "), "{runs:?}");
    assert_eq!(echo.connections(), 1);
    assert!(
        t.try_wait().is_none(),
        "the process stays up after the single run (it is stopped by signals)"
    );
    assert_eq!(t.stop().code(), Some(0));
}

#[test]
fn exec_connect_pty_gives_the_program_a_terminal() {
    let dir = TestDir::new("exec-connect-pty");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let server = Tunnel::server(&dir, &pki, echo.addr(), "");
    for (pty, expect_tty) in [("yes", true), ("no", false)] {
        let out = dir.join(&format!("tty-{pty}.txt"));
        // Raw mode without echo, so the terminal neither echoes the reply back nor turns
        // `\n` into `\r\n` (a no-op error without a terminal).
        let script = dir.write(
            &format!("tty-{pty}.sh"),
            format!(
                "stty raw -echo 2>/dev/null\ntty >> {o}\necho ping\nread line\necho \"got: $line\" >> {o}\n",
                o = out.display()
            ),
        );
        let t = exec_connect(
            &dir,
            &format!("ec-pty-{pty}"),
            server.addr("srv"),
            &script,
            &format!("pty = {pty}\nretry = no"),
        );
        assert!(
            wait_until(T, || std::fs::read_to_string(&out)
                .unwrap_or_default()
                .contains("got: ")),
            "pty = {pty}: the program did not complete its exchange; it wrote {:?}\n{}",
            std::fs::read_to_string(&out).unwrap_or_default(),
            t.log_text()
        );
        let text = std::fs::read_to_string(&out).unwrap();
        let first = text.lines().next().unwrap_or("");
        if expect_tty {
            assert!(
                first.starts_with("/dev/pts/"),
                "pty = yes: `tty` must name a /dev/pts device, got {first:?}"
            );
        } else {
            assert_eq!(first, "not a tty", "pty = no: stdin is a socket");
        }
        assert!(
            text.contains("got: ping"),
            "pty = {pty}: the echo came back as {text:?}"
        );
        drop(t);
    }
}

// ---------------------------------------------------------------------------------------
// transparent: network namespaces

/// Network namespaces owned by one test, named `rstx<pid>-<tag>-<role>`; deleted on drop
/// (also while panicking), after any process still in them is killed. Everything made
/// inside (veth pairs, addresses, routes, rules, iptables rules) goes with them.
struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    fn new(tag: &str, roles: &[&str]) -> Namespaces {
        remove_stale_namespaces();
        let mut ns = Namespaces { names: Vec::new() };
        for role in roles {
            let name = format!("rstx{}-{tag}-{role}", std::process::id());
            ip_words(&format!("netns add {name}"));
            ns.names.push(name.clone());
            ip_words(&format!("-n {name} link set lo up"));
        }
        ns
    }

    fn name(&self, role: &str) -> &str {
        self.names
            .iter()
            .find(|n| n.ends_with(&format!("-{role}")))
            .expect("role")
    }

    /// A veth pair between two namespaces, made directly inside them, with addresses
    /// (`a.b.c.d/len`) and up.
    fn link(
        &self,
        (ns_a, if_a, addr_a): (&str, &str, &str),
        (ns_b, if_b, addr_b): (&str, &str, &str),
    ) {
        let (na, nb) = (self.name(ns_a).to_string(), self.name(ns_b).to_string());
        ip_words(&format!(
            "link add {if_a} netns {na} type veth peer name {if_b} netns {nb}"
        ));
        for (n, i, a) in [(&na, if_a, addr_a), (&nb, if_b, addr_b)] {
            ip_words(&format!("-n {n} addr add {a} dev {i}"));
            ip_words(&format!("-n {n} link set {i} up"));
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.names {
            kill_namespace_processes(n);
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// SIGKILLs the processes left in `ns` (all started by this test), by pid.
fn kill_namespace_processes(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        if pid != std::process::id() as i32 {
            // SAFETY: kill(2) on a pid in a namespace this test created.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// Namespaces `rstx<pid>-…` left by a test process that no longer exists (killed before
/// its Drop ran).
fn remove_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("rstx") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if !pid_alive(pid) {
            kill_namespace_processes(&name);
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}

/// A TCP connection made from inside namespace `ns`.
fn connect_from(ns: &str, to: SocketAddr) -> TcpStream {
    let s = in_named_netns(ns, move || TcpStream::connect_timeout(&to, CONNECT_TIMEOUT))
        .unwrap_or_else(|e| panic!("connect {to} from the client namespace: {e}"));
    set_timeouts(&s);
    s
}

/// Client C (192.0.2.2) ── T (192.0.2.1 | 192.0.2.5) ── B (192.0.2.6); C and B route
/// everything through T.
fn three_namespaces(tag: &str) -> Namespaces {
    let ns = Namespaces::new(tag, &["c", "t", "b"]);
    ns.link(("c", "vc", "192.0.2.2/30"), ("t", "vtc", "192.0.2.1/30"));
    ns.link(("t", "vtb", "192.0.2.5/30"), ("b", "vb", "192.0.2.6/30"));
    ip_words(&format!(
        "-n {} route add default via 192.0.2.1",
        ns.name("c")
    ));
    ip_words(&format!(
        "-n {} route add default via 192.0.2.5",
        ns.name("b")
    ));
    ns
}

#[test]
fn transparent_source_backend_sees_the_client_address() {
    if !require_root("transparent_source_backend_sees_the_client_address") {
        return;
    }
    let dir = TestDir::new("transparent-source");
    let pki = Pki::new(&dir);
    let ns = three_namespaces("src");
    let (c, t, b) = (ns.name("c"), ns.name("t"), ns.name("b"));
    // Replies to the spoofed source come back to T: deliver them to the local socket.
    deliver_spoofed_replies_locally(t);

    let echo = Echo::in_ns(b, "192.0.2.6:0");
    let body = format!(
        "[tsrc]\naccept = 192.0.2.1:0\nconnect = {e}\ntransparent = source\ncert = {cert}\n\
         [plain]\naccept = 192.0.2.1:0\nconnect = {e}\ncert = {cert}\n",
        e = echo.addr,
        cert = pki.server.combined.display()
    );
    let tunnel = start_with(
        &dir,
        "tunnel-host",
        &body,
        &["ip", "netns", "exec", t],
        &["tsrc", "plain"],
    );

    // Control: without transparent the backend sees the tunnel host.
    let mut s = tls_over(connect_from(c, tunnel.addr("plain")), None, None);
    echo_check(&mut s, b"through the plain section\n").unwrap();
    tls_finish(&mut s);
    assert_eq!(
        echo.peers().last().map(|p| p.ip().to_string()),
        Some("192.0.2.5".into()),
        "control: a normal section connects from the tunnel host's own address"
    );

    let client = connect_from(c, tunnel.addr("tsrc"));
    let client_port = client.local_addr().unwrap().port();
    let mut s = tls_over(client, None, None);
    let data = payload(3, 64 * 1024);
    echo_check(&mut s, &data)
        .unwrap_or_else(|e| tunnel.fail(&format!("transparent = source: no echo: {e}")));
    tls_finish(&mut s);
    let peer = *echo.peers().last().unwrap();
    assert_eq!(
        peer.ip().to_string(),
        "192.0.2.2",
        "transparent = source: the backend must see the client's address (peers: {:?})",
        echo.peers()
    );
    // Not asserted, reported: stunnel first tries the client's own port too.
    println!(
        "transparent = source: client port {client_port}, backend saw source port {}",
        peer.port()
    );
    tunnel.wait_for_log("Service [tsrc] connected remote server from 192.0.2.2:", T);
    assert_eq!(echo.peers().len(), 2);
}

#[test]
fn transparent_source_without_cap_net_admin_logs_the_failure() {
    if !require_root("transparent_source_without_cap_net_admin_logs_the_failure") {
        return;
    }
    let dir = TestDir::new("transparent-nocap");
    let pki = Pki::new(&dir);
    let ns = three_namespaces("nocap");
    let (c, t, b) = (ns.name("c"), ns.name("t"), ns.name("b"));
    let echo = Echo::in_ns(b, "192.0.2.6:0");
    let body = format!(
        "[tsrc]\naccept = 192.0.2.1:0\nconnect = {}\ntransparent = source\ncert = {}\n",
        echo.addr,
        pki.server.combined.display()
    );
    // Root without CAP_NET_ADMIN and CAP_NET_RAW (either allows IP_TRANSPARENT).
    let prefix = [
        "ip",
        "netns",
        "exec",
        t,
        "setpriv",
        "--bounding-set=-net_admin,-net_raw",
        "--inh-caps=-net_admin,-net_raw",
    ];
    let tunnel = start_with(&dir, "tunnel-host", &body, &prefix, &["tsrc"]);
    let mut s = tls_over(connect_from(c, tunnel.addr("tsrc")), None, None);
    let _ = s.write_all(b"anyone there?\n");
    let (got, ended) = read_until_end(&mut s, "transparent = source without the capability");
    ended.unwrap();
    assert!(got.is_empty(), "nothing may come back: {got:?}");
    assert!(echo.peers().is_empty(), "the backend must not be reached");
    // The session's end reaches the client before the tunnel's stderr reader has passed
    // the lines on: wait for them rather than read the log at once.
    tunnel.wait_for_log("Connection reset", T);
    let problems = tunnel.connection_problems(3);
    assert!(
        problems
            .iter()
            .any(|l| l.contains("Operation not permitted")
                || l.contains("Cannot assign requested address")),
        "the failure must be logged with its reason: {problems:#?}"
    );
    assert!(
        problems.iter().any(|l| l.contains("IP_TRANSPARENT")),
        "the log should name IP_TRANSPARENT (stunnel: `setsockopt IP_TRANSPARENT: \
         Operation not permitted (1)`), so the missing capability is obvious: {problems:#?}"
    );
}

/// `transparent = source` needs this on the tunnel host: replies to the client's address
/// that belong to one of its sockets are delivered locally instead of being routed on.
fn deliver_spoofed_replies_locally(t: &str) {
    ip_words(&format!(
        "netns exec {t} iptables -t mangle -A PREROUTING -p tcp -m socket -j MARK --set-mark 1"
    ));
    ip_words(&format!("-n {t} rule add fwmark 1 lookup 100"));
    ip_words(&format!(
        "-n {t} route add local 0.0.0.0/0 dev lo table 100"
    ));
}

/// The destination topology with `transparent = MODE` on the tunnel host: C connects to
/// 192.0.2.6:7777; T's REDIRECT hands the connection to the client-mode tunnel, which must
/// connect to 192.0.2.6:7777 itself (a TLS server in B in front of an echo). Returns the
/// backend host's log, for the source address it saw.
fn transparent_destination_round_trip(tag: &str, mode: &str) -> String {
    let dir = TestDir::new(&format!("transparent-{tag}"));
    let pki = Pki::new(&dir);
    let ns = three_namespaces(tag);
    let (c, t, b) = (ns.name("c"), ns.name("t"), ns.name("b"));

    // B: a TLS server on 192.0.2.6:7777 in front of an echo on B's loopback.
    let echo = Echo::in_ns(b, "127.0.0.1:0");
    let server = start_with(
        &dir,
        "backend-host",
        &format!(
            "[srv]\naccept = 192.0.2.6:7777\nconnect = {}\ncert = {}\n",
            echo.addr,
            pki.server.combined.display()
        ),
        &["ip", "netns", "exec", b],
        &["srv"],
    );
    // T: a client-mode tunnel without `connect`, behind a REDIRECT of port 7777.
    let tunnel = start_with(
        &dir,
        "tunnel-host",
        &format!(
            "client = yes\n[tdst]\naccept = 192.0.2.1:0\ntransparent = {mode}\n\
             verifyChain = yes\nCAfile = {}\n",
            pki.ca_file.display()
        ),
        &["ip", "netns", "exec", t],
        &["tdst"],
    );
    let port = tunnel.port("tdst");
    ip_words(&format!(
        "netns exec {t} iptables -t nat -A PREROUTING -p tcp -d 192.0.2.6 --dport 7777 \
         -j REDIRECT --to-ports {port}"
    ));
    if mode == "both" {
        deliver_spoofed_replies_locally(t);
    }

    let original: SocketAddr = "192.0.2.6:7777".parse().unwrap();
    let mut s = connect_from(c, original);
    let data = payload(5, 100_000);
    echo_check(&mut s, &data).unwrap_or_else(|e| {
        tunnel.fail(&format!(
            "no echo through the transparent tunnel: {e}\n--- backend host ---\n{}",
            server.log_text()
        ))
    });
    s.shutdown(Shutdown::Write).unwrap();
    let (rest, ended) = read_until_end(&mut s, "after the client's EOF");
    ended.unwrap();
    assert!(rest.is_empty());
    tunnel.wait_for_log("Transparent destination: 192.0.2.6:7777", T);
    tunnel.wait_for_log("s_connect: connected 192.0.2.6:7777", T);
    // The plain bytes went through T's TLS session to B's server tunnel.
    let counts = server.wait_close_counts(1, T);
    assert_eq!(
        (counts[0].sent_to_tls, counts[0].sent_to_socket),
        (100_000, 100_000),
        "the backend host's server tunnel relayed the session"
    );
    assert_eq!(echo.peers().len(), 1);
    let tcounts = tunnel.wait_close_counts(1, T);
    assert_eq!(
        (tcounts[0].sent_to_tls, tcounts[0].sent_to_socket),
        (100_000, 100_000)
    );
    server.log_text()
}

#[test]
fn transparent_destination_connects_to_the_original_destination() {
    if !require_root("transparent_destination_connects_to_the_original_destination") {
        return;
    }
    let log = transparent_destination_round_trip("dst", "destination");
    assert!(
        log.contains("Service [srv] accepted connection from 192.0.2.5:"),
        "destination only: the TLS server sees the tunnel host's address\n{log}"
    );
}

#[test]
fn transparent_both_keeps_the_client_address_towards_the_original_destination() {
    if !require_root("transparent_both_keeps_the_client_address_towards_the_original_destination") {
        return;
    }
    let log = transparent_destination_round_trip("both", "both");
    assert!(
        log.contains("Service [srv] accepted connection from 192.0.2.2:"),
        "transparent = both: the TLS server must see the client's address\n{log}"
    );
}

/// A fresh namespace has no connection tracking, so SO_ORIGINAL_DST has nothing to say
/// about a connection that reached the listener directly. stunnel then fails the session
/// (`getsockopt SO_ORIGINAL_DST: No such file or directory (2)`); connecting to the
/// listener's own address instead would start a new session that does the same, again and
/// again, until the connection cap.
#[test]
fn transparent_destination_without_a_redirect_does_not_connect_to_itself() {
    if !require_root("transparent_destination_without_a_redirect_does_not_connect_to_itself") {
        return;
    }
    let dir = TestDir::new("transparent-no-redirect");
    let ns = Namespaces::new("loop", &["t"]);
    let t = ns.name("t");
    // A small open-file limit keeps a self-connecting loop short (the connection cap
    // follows it), should there be one.
    let tunnel = start_with(
        &dir,
        "tunnel-host",
        "client = yes\n[tdst]\naccept = 127.0.0.1:0\ntransparent = destination\n",
        &["ip", "netns", "exec", t, "prlimit", "--nofile=256"],
        &["tdst"],
    );
    let mut s = connect_from(t, tunnel.addr("tdst"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (got, ended) = read_until_end(&mut s, "a direct connection to a transparent listener");
    // Give a loop time to show.
    std::thread::sleep(Duration::from_millis(500));
    let accepted = tunnel
        .log_lines()
        .iter()
        .filter(|l| l.contains("accepted connection from"))
        .count();
    assert_eq!(
        accepted, 1,
        "the session must not connect to its own listener (sessions seen: {accepted})"
    );
    ended.unwrap();
    assert!(got.is_empty());
    tunnel.wait_close_counts(1, T);
    assert!(
        !tunnel.connection_problems(3).is_empty(),
        "the missing original destination must be logged as an error"
    );
}

/// With iptables REDIRECT (stunnel's documented setup) the listener needs no privilege:
/// stunnel 5.68 binds a `transparent = destination` service without CAP_NET_ADMIN.
#[test]
fn transparent_destination_listener_binds_without_cap_net_admin() {
    let dir = TestDir::new("transparent-dst-nocap");
    let body = "client = yes\n[tdst]\naccept = 127.0.0.1:0\ntransparent = destination\n";
    let prefix: &[&str] = if process::is_root() {
        &[
            "setpriv",
            "--bounding-set=-net_admin,-net_raw",
            "--inh-caps=-net_admin,-net_raw",
        ]
    } else {
        &[]
    };
    let _t = start_with(&dir, "tdst", body, prefix, &["tdst"]);
}
