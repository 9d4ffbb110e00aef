//! Certificate verification on both ends decides who gets through:
//!
//! * server with `verifyChain = yes` + `CAfile`: a client certificate from that CA is let
//!   through (given as separate `cert` and `key` files); one from another CA, or none at all,
//!   is refused: the client gets no data and an EOF or reset, the backend is never contacted,
//!   and the server logs the refusal (a LOG4-or-worse line of that connection);
//! * client with `verifyChain = yes` + `CAfile` + `checkHost`: the right host name works, a
//!   wrong one or a server certificate from another CA is refused the same way;
//! * server with `verifyPeer = yes`: only the client certificate listed in `CAfile` gets in.
//!
//! ```text
//! test ──plain──▶ rstunnel client [cli] ──TLS──▶ rstunnel server [srv] ──plain──▶ echo
//! ```

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(10);

fn server_requires_client_cert(pki: &Pki) -> String {
    format!("verifyChain = yes\nCAfile = {}\n", pki.ca_file.display())
}

fn client_verifies_server(pki: &Pki, host: &str) -> String {
    format!(
        "verifyChain = yes\nCAfile = {}\ncheckHost = {host}\n",
        pki.ca_file.display()
    )
}

/// A session through `pair` must work end to end.
fn assert_session_works(pair: &TunnelPair, echo: &Backend) {
    let data = payload(77, 100_000);
    let got = echo_session(pair.entry(), &data).expect("session through both tunnels");
    assert!(
        got == data,
        "echoed data differs ({} bytes back, {} sent)",
        got.len(),
        data.len()
    );
    assert_eq!(echo.connections(), 1);
}

/// A session through `pair` must be refused: no data back, the connection ends (not left
/// hanging), the backend is never contacted, and `refuser` logs why.
fn assert_session_refused(pair: &TunnelPair, echo: &Backend, refuser: &Tunnel) {
    let p = probe(pair.entry(), b"must not get through\n", T);
    assert!(
        p.received.is_empty(),
        "refused session still delivered {} byte(s): {:?}",
        p.received.len(),
        String::from_utf8_lossy(&p.received)
    );
    assert_ne!(
        p.end,
        End::TimedOut,
        "refused session was left hanging instead of being closed"
    );
    assert_eq!(
        echo.connections(),
        0,
        "the backend must never see a refused session"
    );
    let logged = refuser.try_wait_for(T, |l| daemon::is_connection_problem(l, 4));
    if logged.is_none() {
        refuser.fail("refused the session without logging an error or warning for it");
    }
}

/// What a [`pair_case`] must come to.
enum Expect {
    Works,
    RefusedByServer,
    RefusedByClient,
}

/// A tunnel pair from the usual [`Pki`] with the (server, client) option lines `extras`
/// gives, and one session through it that must end as `expect` says.
fn pair_case(label: &str, expect: Expect, extras: impl Fn(&Pki) -> (String, String)) {
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let (server_extra, client_extra) = extras(&pki);
    let pair = TunnelPair::start(&dir, &pki, echo.addr(), &server_extra, &client_extra);
    match expect {
        Expect::Works => assert_session_works(&pair, &echo),
        Expect::RefusedByServer => assert_session_refused(&pair, &echo, &pair.server),
        Expect::RefusedByClient => assert_session_refused(&pair, &echo, &pair.client),
    }
}

#[test]
fn client_cert_from_trusted_ca_is_accepted() {
    pair_case("mtls-ok", Expect::Works, |pki| {
        let client = format!(
            "cert = {}\nkey = {}\n",
            pki.client.cert.display(),
            pki.client.key.display()
        );
        (server_requires_client_cert(pki), client)
    });
}

#[test]
fn client_cert_from_other_ca_is_refused() {
    pair_case("mtls-wrong-ca", Expect::RefusedByServer, |pki| {
        let client = format!("cert = {}\n", pki.wrong_client.combined.display());
        (server_requires_client_cert(pki), client)
    });
}

#[test]
fn client_without_cert_is_refused() {
    pair_case("mtls-no-cert", Expect::RefusedByServer, |pki| {
        (server_requires_client_cert(pki), String::new())
    });
}

#[test]
fn client_accepts_server_with_right_host_name() {
    pair_case("checkhost-ok", Expect::Works, |pki| {
        (String::new(), client_verifies_server(pki, "right.name"))
    });
}

#[test]
fn client_refuses_server_with_wrong_host_name() {
    pair_case("checkhost-wrong", Expect::RefusedByClient, |pki| {
        (String::new(), client_verifies_server(pki, "wrong.name"))
    });
}

#[test]
fn client_refuses_server_cert_from_other_ca() {
    let dir = TestDir::new("server-wrong-ca");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    // Same names, but the server presents the certificate signed by the other CA.
    let server = Tunnel::start(
        &dir,
        "server",
        &server_body(echo.addr(), &pki.wrong_server.combined, ""),
    );
    let client = Tunnel::start(
        &dir,
        "client",
        &client_body(
            server.addr("srv"),
            &client_verifies_server(&pki, "right.name"),
        ),
    );
    let pair = TunnelPair { client, server };
    assert_session_refused(&pair, &echo, &pair.client);
}

/// Both checks at once, with RSA keys and the server's key in its own file: the full mutual
/// setup people deploy.
#[test]
fn mutual_verification_both_ways_rsa() {
    let dir = TestDir::new("mtls-rsa");
    let pki = Pki::with_kind(&dir, KeyKind::Rsa2048);
    let echo = Backend::echo();
    let server_extra = format!(
        "key = {}\n{}",
        pki.server.key.display(),
        server_requires_client_cert(&pki)
    );
    let server = Tunnel::start(
        &dir,
        "server",
        &server_body(echo.addr(), &pki.server.cert, &server_extra),
    );
    let client_extra = format!(
        "cert = {}\n{}",
        pki.client.combined.display(),
        client_verifies_server(&pki, "right.name")
    );
    let client = Tunnel::start(
        &dir,
        "client",
        &client_body(server.addr("srv"), &client_extra),
    );
    assert_session_works(&TunnelPair { client, server }, &echo);
}

/// `verifyPeer = yes` pins certificates: `CAfile` holds the one client certificate that is let
/// in. That client gets through; another client certificate from the same CA does not.
fn verify_peer(label: &str, pinned: bool) {
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let other = pki
        .ca
        .issue("other.right.name", &["other.right.name"], KeyKind::EcP256)
        .write(&dir, "other-client");
    let echo = Backend::echo();
    let server_extra = format!("verifyPeer = yes\nCAfile = {}\n", pki.client.cert.display());
    let presented = if pinned { &pki.client } else { &other };
    let client_extra = format!("cert = {}\n", presented.combined.display());
    let pair = TunnelPair::start(&dir, &pki, echo.addr(), &server_extra, &client_extra);
    if pinned {
        assert_session_works(&pair, &echo);
    } else {
        assert_session_refused(&pair, &echo, &pair.server);
    }
}

#[test]
fn verify_peer_accepts_the_pinned_client_cert() {
    verify_peer("verify-peer-ok", true);
}

#[test]
fn verify_peer_refuses_other_cert_from_same_ca() {
    verify_peer("verify-peer-other", false);
}
