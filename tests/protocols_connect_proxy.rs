//! `protocol = connect` (client side) and `protocol = proxy` (server side), end to end
//! against scripted peers (`tests/common/scripted.rs`).
//!
//! * `protocol = connect`: a scripted HTTP proxy checks the `CONNECT host:port` request, the
//!   `Host` header, `Proxy-Authorization: Basic …` and `protocolHeader` lines, answers 200
//!   and splices to the real target (a TLS echo server, or an rstunnel server tunnel); a
//!   `407` answer ends the session with the status in the log and nothing more sent. The
//!   target behind the proxy gets the `protocolHost` name as SNI.
//! * `protocol = proxy` (server side): the backend's first line is exactly
//!   `PROXY TCP4 127.0.0.1 127.0.0.1 <client port> <tunnel port>\r\n`; the data after it is
//!   intact (also when it looks like a PROXY header itself). IPv6: `PROXY TCP6 ::1 ::1 …`.
//!
//! With `RSTUNNEL_TEST_BIN=/usr/bin/stunnel4` only the wire behaviour is checked (see
//! [`rstunnel_wording`]).
//!
//! ```text
//! test ──plain──▶ client [cli] (connect) ──▶ scripted proxy ──▶ TLS target
//! test ──TLS──▶ server [srv] (protocol = proxy) ──PROXY line + plain──▶ backend
//! ```

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

use common::daemon::is_connection_problem;
use common::scripted::*;
use common::*;

// ---------------------------------------------------------------------------------------
// protocol = connect

/// What the scripted HTTP proxy saw on one connection.
#[derive(Debug, Default)]
struct ProxySeen {
    /// Request line and header lines, without the blank line.
    request: Vec<String>,
    /// The `Proxy-Authorization` credentials, as `scheme token` with the scheme in lower
    /// case (it is case-insensitive, RFC 9110 §11.1).
    auth: Option<String>,
    /// The status line it answered with.
    status: String,
    /// After a refusal: bytes that still came (a ClientHello would be here).
    after_refusal: Vec<u8>,
    error: Option<String>,
}

/// A scripted HTTP proxy: reads `CONNECT host:port HTTP/1.1` and its headers; when
/// `expected_auth` is set, a request without exactly that `Proxy-Authorization` value is
/// answered 407; otherwise connects to host:port, answers 200 and splices.
fn http_proxy(expected_auth: Option<String>) -> Server<ProxySeen> {
    Server::spawn(move |mut s| {
        let mut seen = ProxySeen::default();
        loop {
            match line(&mut s) {
                Ok(l) if l.is_empty() => break,
                Ok(l) => seen.request.push(l),
                Err(e) => {
                    seen.error = Some(format!("reading the request: {e}"));
                    return seen;
                }
            }
        }
        let target = seen
            .request
            .first()
            .and_then(|r| r.strip_prefix("CONNECT "))
            .and_then(|r| r.strip_suffix(" HTTP/1.1").or(r.strip_suffix(" HTTP/1.0")))
            .map(str::to_string);
        let Some(target) = target else {
            seen.error = Some(format!("not a CONNECT request: {:?}", seen.request));
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
            return seen;
        };
        seen.auth = proxy_authorization(&seen.request);
        if let Some(want) = &expected_auth {
            let given = seen.auth.clone();
            if given.as_deref() != Some(want.as_str()) {
                seen.status = "HTTP/1.1 407 Proxy Authentication Required".into();
                let _ = s.write_all(
                    format!(
                        "{}\r\nProxy-Authenticate: Basic realm=\"tests\"\r\nContent-Length: 0\r\n\r\n",
                        seen.status
                    )
                    .as_bytes(),
                );
                let (after, _) = drain(&mut s);
                seen.after_refusal = after;
                return seen;
            }
        }
        let addr = target
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.find(SocketAddr::is_ipv4));
        let up = addr.and_then(|a| TcpStream::connect_timeout(&a, T).ok());
        let Some(up) = up else {
            seen.status = "HTTP/1.1 502 Bad Gateway".into();
            let _ = s.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
            seen.error = Some(format!("cannot reach {target}"));
            return seen;
        };
        seen.status = "HTTP/1.1 200 Connection established".into();
        if let Err(e) =
            s.write_all(format!("{}\r\nProxy-Agent: scripted\r\n\r\n", seen.status).as_bytes())
        {
            seen.error = Some(format!("answering: {e}"));
            return seen;
        }
        splice(s, up);
        seen
    })
}

/// Copies both ways until both directions ended (half-close passed on).
fn splice(a: TcpStream, b: TcpStream) {
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = from.set_read_timeout(Some(Duration::from_secs(20)));
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        })
    };
    let one = copy(a.try_clone().unwrap(), b.try_clone().unwrap());
    let two = copy(b, a);
    let _ = one.join();
    let _ = two.join();
}

/// The `Proxy-Authorization` header of a request, normalised as in [`ProxySeen::auth`].
fn proxy_authorization(request: &[String]) -> Option<String> {
    request.iter().find_map(|h| {
        let (name, value) = h.split_once(':')?;
        if !name.eq_ignore_ascii_case("Proxy-Authorization") {
            return None;
        }
        let (scheme, token) = value.trim().split_once(' ')?;
        Some(format!("{} {}", scheme.to_ascii_lowercase(), token.trim()))
    })
}

/// A client tunnel `[cli]` with `protocol = connect` through `proxy`, verifying the far
/// end against the test CA, with `more` lines (protocolHost and the rest).
fn connect_client(dir: &TestDir, pki: &Pki, proxy: &Server<ProxySeen>, more: &str) -> Tunnel {
    let extra = client_extra("connect", &pki.ca_file, more);
    Tunnel::start(dir, "client", &client_body(proxy.addr(), &extra))
}

/// Basic credentials as [`ProxySeen::auth`] holds them.
fn basic(user: &str, password: &str) -> String {
    format!(
        "basic {}",
        openssl::base64::encode_block(format!("{user}:{password}").as_bytes())
    )
}

/// A TLS echo server (the target) and a scripted proxy that wants alice's `password`;
/// returns the test directory and PKI, both servers and the target's `host:port`, to be
/// bound in one `let` (they drop in reverse order).
fn proxy_to_tls_target(
    label: &str,
    password: &str,
) -> ((TestDir, Pki), Server<Seen>, Server<ProxySeen>, String) {
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let target = tls_echo_server(&pki.server);
    let proxy = http_proxy(Some(basic("alice", password)));
    let target_name = format!("127.0.0.1:{}", target.addr().port());
    ((dir, pki), target, proxy, target_name)
}

/// Client tunnel → scripted proxy (Basic auth) → TLS echo server: the proxy saw the
/// CONNECT line, Host, Proxy-Authorization and the protocolHeader; data flows both ways.
#[test]
fn connect_through_an_authenticating_proxy() {
    let ((dir, pki), target, proxy, target_name) =
        proxy_to_tls_target("connect-auth", "0pen:Sesame");
    let tunnel = connect_client(
        &dir,
        &pki,
        &proxy,
        &format!(
            "protocolHost = {target_name}\nprotocolUsername = alice\n\
                     protocolPassword = 0pen:Sesame\nprotocolHeader = X-Tunnel-Test: yes\n"
        ),
    );
    let data = payload(21, 300_000);
    let back = echo_session(tunnel.addr("cli"), &data).expect("session through the proxy");
    assert!(
        back == data,
        "{} of {} byte(s) came back through the proxy",
        back.len(),
        data.len()
    );

    let seen = proxy.next(T);
    assert_eq!(seen.error, None, "{seen:?}");
    assert_eq!(seen.status, "HTTP/1.1 200 Connection established");
    assert_eq!(
        seen.request[0],
        format!("CONNECT {target_name} HTTP/1.1"),
        "request line: {:?}",
        seen.request
    );
    assert_eq!(
        seen.auth,
        Some(basic("alice", "0pen:Sesame")),
        "Proxy-Authorization: {:?}",
        seen.request
    );
    for want in [
        format!("Host: {target_name}"),
        "X-Tunnel-Test: yes".to_string(),
    ] {
        assert!(
            seen.request.contains(&want),
            "the CONNECT request lacks {want:?}: {:?}",
            seen.request
        );
    }
    let t = target.next(T);
    assert!(
        t.tls && t.echoed == data && t.error.is_none(),
        "target: tls {} echoed {} error {:?}",
        t.tls,
        t.echoed.len(),
        t.error
    );
    wait_negotiated(&tunnel, "connect");
}

/// Client tunnel → scripted proxy (no auth) → rstunnel server tunnel → echo: the usual
/// two-tunnel chain with a proxy in the middle; the request carries no Proxy-Authorization.
#[test]
fn connect_through_a_proxy_to_an_rstunnel_server() {
    let ((dir, pki), echo, server) = echo_server("connect-rstunnel");
    let proxy = http_proxy(None);
    let target_name = format!("localhost:{}", server.port("srv"));
    let client = connect_client(
        &dir,
        &pki,
        &proxy,
        &format!("protocolHost = {target_name}\ncheckHost = localhost\n"),
    );
    let data = payload(22, 1_000_000);
    let back = echo_session(client.addr("cli"), &data).expect("session through the proxy");
    assert!(
        back == data,
        "{} of {} byte(s) came back",
        back.len(),
        data.len()
    );
    let seen = proxy.next(T);
    assert_eq!(seen.request[0], format!("CONNECT {target_name} HTTP/1.1"));
    assert!(
        seen.auth.is_none(),
        "no protocolUsername, yet credentials were sent: {:?}",
        seen.request
    );
    assert_eq!(
        echo.next_result(T),
        Digest::of(&data),
        "the backend behind the server tunnel saw other data"
    );
}

/// The proxy refuses (407): the session ends, the log has the status, the target gets no
/// connection and the proxy no TLS byte.
#[test]
fn connect_proxy_407_ends_the_session() {
    let ((dir, pki), target, proxy, target_name) = proxy_to_tls_target("connect-407", "right");
    let tunnel = connect_client(
        &dir,
        &pki,
        &proxy,
        &format!(
            "protocolHost = {target_name}\nprotocolUsername = alice\nprotocolPassword = wrong\n"
        ),
    );
    let p = probe(tunnel.addr("cli"), b"hello?\r\n", T);
    assert_ne!(p.end, End::TimedOut, "the session must end after a 407");
    assert!(
        p.received.is_empty(),
        "the local client got {:?}",
        String::from_utf8_lossy(&p.received)
    );
    let seen = proxy.next(T);
    assert_eq!(seen.status, "HTTP/1.1 407 Proxy Authentication Required");
    assert_eq!(
        seen.auth,
        Some(basic("alice", "wrong")),
        "{:?}",
        seen.request
    );
    assert!(
        seen.after_refusal.is_empty(),
        "after the 407 the tunnel still sent {} byte(s) to the proxy",
        seen.after_refusal.len()
    );
    if rstunnel_wording() {
        let line = tunnel.wait_for_log("protocol connect:", T);
        assert!(
            line.contains("407"),
            "the log must give the proxy's status: {line}"
        );
        assert!(is_connection_problem(&line, 3), "{line}");
    }
    assert_eq!(
        target.connections(),
        0,
        "the target was reached despite the 407"
    );
    tunnel.wait_close_counts(1, T);
}

/// `sni`: a client's default SNI is the host of `protocolHost`, else of the first
/// `connect`. Behind a proxy (`connect` = the proxy's IP) the target must see the name of
/// `protocolHost`.
#[test]
fn connect_sends_the_protocol_host_name_as_sni() {
    let dir = TestDir::new("connect-sni");
    let pki = Pki::new(&dir);
    let target = tls_echo_server(&pki.server);
    let proxy = http_proxy(None);
    let tunnel = connect_client(
        &dir,
        &pki,
        &proxy,
        &format!("protocolHost = localhost:{}\n", target.addr().port()),
    );
    let back = echo_session(tunnel.addr("cli"), b"sni?\n").expect("session");
    assert_eq!(back, b"sni?\n");
    let seen = target.next(T);
    assert!(seen.tls, "{seen:?}");
    assert_eq!(
        seen.sni.as_deref(),
        Some("localhost"),
        "SNI sent to the target behind the proxy (protocolHost = localhost:PORT, connect = \
         an IP)"
    );
}

// ---------------------------------------------------------------------------------------
// protocol = proxy (server side)

/// A backend that reads the first line (the PROXY header, at most 107 bytes + CRLF in v1),
/// then echoes until EOF; reports (header, echoed).
fn proxy_header_backend(bind: &str) -> Server<Result<(String, Vec<u8>), String>> {
    Server::spawn_on(bind, |mut s| {
        let raw = read_line(&mut s, 108).map_err(|e| e.to_string())?;
        let header = String::from_utf8_lossy(&raw).into_owned();
        match echo_until_eof(&mut s) {
            Ok(echoed) => Ok((header, echoed)),
            Err((n, e)) => Err(format!("{header:?} then {n} byte(s): {e}")),
        }
    })
}

/// TLS client → server tunnel `protocol = proxy` (accepting on `accept`) → backend.
/// Returns (expected header, backend's result).
fn proxy_header_session(
    label: &str,
    accept: &str,
    ip: &str,
    family: &str,
) -> (String, (String, Vec<u8>)) {
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let backend = proxy_header_backend("127.0.0.1:0");
    let tunnel = Tunnel::start(
        &dir,
        "server",
        &format!(
            "[srv]\naccept = {accept}\nconnect = {}\ncert = {}\nprotocol = proxy\n",
            backend.addr(),
            pki.server.combined.display()
        ),
    );
    let mut tls = tls_client(tunnel.addr("srv"), &pki.ca_file);
    let client_port = tls.get_ref().local_addr().unwrap().port();
    let expected = format!(
        "PROXY {family} {ip} {ip} {client_port} {}\r\n",
        tunnel.port("srv")
    );
    // Data that looks like a PROXY header itself must pass through verbatim.
    let mut data = b"PROXY TCP4 10.9.8.7 10.9.8.6 1 2\r\n".to_vec();
    data.extend_from_slice(&payload(31, 96 * 1024));
    for chunk in data.chunks(16 * 1024) {
        tls.write_all(chunk).unwrap();
        let mut back = vec![0u8; chunk.len()];
        tls.read_exact(&mut back)
            .unwrap_or_else(|e| panic!("reading the echo through the proxy tunnel: {e}"));
        assert!(back == chunk, "the echo differs");
    }
    let _ = tls.shutdown();
    let got = backend.next(T).unwrap_or_else(|e| panic!("backend: {e}"));
    assert!(
        got.1 == data,
        "the data after the PROXY header is not intact ({} byte(s), {} sent)",
        got.1.len(),
        data.len()
    );
    tunnel.wait_close_counts(1, T);
    (expected, got)
}

#[test]
fn proxy_protocol_header_tcp4() {
    let (expected, (header, _)) =
        proxy_header_session("proxy-v1-tcp4", "127.0.0.1:0", "127.0.0.1", "TCP4");
    assert_eq!(header, expected, "PROXY v1 header the backend received");
}

#[test]
fn proxy_protocol_header_tcp6() {
    if TcpListener::bind("[::1]:0").is_err() {
        skipped("proxy_protocol_header_tcp6: no IPv6 loopback (::1) on this host");
        return;
    }
    let (expected, (header, _)) = proxy_header_session("proxy-v1-tcp6", "::1:0", "::1", "TCP6");
    assert_eq!(header, expected, "PROXY v1 header the backend received");
}
