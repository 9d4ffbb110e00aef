//! Transport extras, checked by what users see: `redirect` and `protocol = socks`
//! (`transparent` is in `tests/transport_transparent.rs`, exec+connect in
//! `tests/exec_inetd.rs`):
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

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslSession, SslStream, SslVerifyMode};

use common::daemon::rstunnel_bin;
use common::daemon::start_with;
use common::faults::Echo;
use common::process::echo_check;
use common::tls::tls_finish;
use common::tls::tls_over;
use common::tools::{run, RunResult};
use common::*;

const T: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// helpers

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

// ---------------------------------------------------------------------------------------
// redirect

/// A server tunnel `[srv]` with `connect` = backend A (tag `A`), `redirect` = backend B
/// (tag `B`) and the option lines `verify(pki)`. Returns the test directory and PKI, the
/// backends (A, B) and the tunnel, to be bound in one `let` (they drop in reverse order).
fn redirect_setup(
    label: &str,
    verify: impl Fn(&Pki) -> String,
) -> ((TestDir, Pki), (Backend, Backend), Tunnel) {
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let (a, b) = (Backend::tagged("A"), Backend::tagged("B"));
    let body = format!(
        "[srv]\naccept = 127.0.0.1:0\nconnect = {}\nredirect = {}\ncert = {}\n{}\n",
        a.addr(),
        b.addr(),
        pki.server.combined.display(),
        verify(&pki),
    );
    let srv = start_with(&dir, "server", &body, &[], &["srv"]);
    ((dir, pki), (a, b), srv)
}

/// Verification against the test CA: what sends a client without a valid certificate to B.
fn verify_chain(pki: &Pki) -> String {
    format!("verifyChain = yes\nCAfile = {}", pki.ca_file.display())
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
    let ((_dir, pki), (a, b), srv) = redirect_setup("redirect", verify_chain);
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
    let ((_dir, pki), _backends, srv) = redirect_setup("redirect-resume", verify_chain);
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
    // Pinning: only the client certificate itself is "trusted".
    let ((dir, pki), (a, b), srv) = redirect_setup("redirect-peer", |pki| {
        format!("verifyPeer = yes\nCAfile = {}", pki.client.cert.display())
    });
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
    let (rest, ended) = read_to_session_end(&mut s, "after a failed SOCKS5 CONNECT");
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
    let (got, ended) = read_to_session_end(&mut s, "after a non-SOCKS request");
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
