//! Peer identity checked against foreign peers (OpenSSL's `s_client`/`s_server` and the
//! reference `stunnel4`), each with a case that must work and one that must be refused:
//!
//! 1. `verifyPeer` (pinning) on both sides: the pinned certificate works, another one from
//!    the same CA is refused; `verify = 0…4` mapped as stunnel maps it.
//! 2. `checkHost` (several lines, one matching), `checkIP`, `checkEmail` (client and server
//!    side).
//!
//! Checking the tests themselves: `RSTUNNEL_TEST_BIN=/usr/bin/stunnel4` runs them with the
//! reference in rstunnel's place; all pass then. Every foreign process runs under a guard
//! (killed on drop) and every wait is bounded.

mod common;

use std::path::Path;

use common::certs::leaf;
use common::tools::stunnel4;

use common::tls_peers::*;
use common::*;

// ---------------------------------------------------------------------------------------
// verifyPeer: pinning
// ---------------------------------------------------------------------------------------

/// rstunnel client `verifyPeer = yes`, `CAfile = <the server's own cert>`: s_server and
/// stunnel4 presenting it work; presenting another cert from the same CA is refused.
#[test]
fn verify_peer_client_pins_the_server_certificate() {
    stunnel4();
    let dir = TestDir::new("verify-peer-client");
    let pki = Pki::new(&dir);
    let other = pki
        .ca
        .issue("right.name", common::certs::SERVER_NAMES, KeyKind::EcP256)
        .write(&dir, "other-server");
    let pin = format!("verifyPeer = yes\nCAfile = {}\n", pki.server.cert.display());
    for (leaf, ok) in [(&pki.server, true), (&other, false)] {
        let state = if ok { "pinned" } else { "unpinned" };
        client_against_both_servers(&dir, leaf, &pin, ok, "Rejected by CERT", &|peer| {
            format!("{state} {peer}")
        });
    }
}

/// rstunnel server `verifyPeer = yes`, `CAfile = <one client cert>`: a stunnel4 client and
/// s_client presenting it get through; with another cert of the same CA they are refused.
#[test]
fn verify_peer_server_pins_the_client_certificate() {
    stunnel4();
    let dir = TestDir::new("verify-peer-server");
    let pki = Pki::new(&dir);
    let other = pki
        .ca
        .issue("client.right.name", &["client.right.name"], KeyKind::EcP256)
        .write(&dir, "other-client");
    let echo = Backend::echo();
    let srv = Tunnel::server(
        &dir,
        &pki,
        echo.addr(),
        &format!("verifyPeer = yes\nCAfile = {}\n", pki.client.cert.display()),
    );
    let good = client(
        Program::Stunnel4,
        &dir,
        "s4-pinned",
        srv.addr("srv"),
        &format!("cert = {}\n", pki.client.combined.display()),
    );
    assert_echo_works(good.addr("cli"), &srv, "pinned stunnel4 client");
    let conns = echo.connections();
    let bad = client(
        Program::Stunnel4,
        &dir,
        "s4-other",
        srv.addr("srv"),
        &format!("cert = {}\n", other.combined.display()),
    );
    let before = srv.log_lines().len();
    assert_refused(
        bad.addr("cli"),
        &srv,
        before,
        "Rejected by CERT",
        "unpinned stunnel4 client",
    );
    assert_eq!(
        echo.connections(),
        conns,
        "the backend must not see the unpinned client"
    );
    drop(srv);

    // The same with s_client (one line echoed, then the backend closes).
    let line = Backend::line_echo_once();
    let srv = server(
        Program::Rstunnel,
        &dir,
        "server2",
        line.addr(),
        &pki.server.combined,
        &format!("verifyPeer = yes\nCAfile = {}\n", pki.client.cert.display()),
    );
    let r = s_client(
        srv.port("srv"),
        &["-cert", &p(&pki.client.cert), "-key", &p(&pki.client.key)],
    );
    if !echoed(&r) {
        srv.fail(&format!(
            "pinned s_client must get through\n{}",
            r.describe()
        ));
    }
    let before = srv.log_lines().len();
    let r = s_client(
        srv.port("srv"),
        &["-cert", &p(&other.cert), "-key", &p(&other.key)],
    );
    if echoed(&r) || line.connections() != 1 {
        srv.fail(&format!(
            "unpinned s_client must be refused\n{}",
            r.describe()
        ));
    }
    if wait_new_log(&srv, before, |l| l.contains("Rejected by CERT")).is_none() {
        srv.fail("the refusal of the unpinned s_client must be logged (`Rejected by CERT`)");
    }
}
/// `verify = 0…4` on the server, against s_client presenting no certificate,
/// the pinned client certificate, another one from the same CA, or one from another CA.
#[test]
fn verify_levels_map_to_chain_peer_and_require() {
    let dir = TestDir::new("verify-levels");
    let pki = Pki::new(&dir);
    let other = pki
        .ca
        .issue("other.client", &["other.client"], KeyKind::EcP256)
        .write(&dir, "other-client");
    // CAfile for 3: the CA and the pinned client; for 4: the pinned client alone.
    let mut both = std::fs::read(&pki.ca_file).unwrap();
    both.extend(std::fs::read(&pki.client.cert).unwrap());
    let ca_and_pin = dir.write("ca-and-pin.crt", both);
    let none: Option<&LeafFiles> = None;
    let presented = [
        ("no certificate", none),
        ("pinned client", Some(&pki.client)),
        ("other client, same CA", Some(&other)),
        ("client of another CA", Some(&pki.wrong_client)),
    ];
    // Expected outcome per presented certificate, in the order above.
    let levels: [(u8, &Path, [bool; 4]); 5] = [
        (0, &pki.ca_file, [true, true, true, true]),
        (1, &pki.ca_file, [true, true, true, false]),
        (2, &pki.ca_file, [false, true, true, false]),
        (3, &ca_and_pin, [false, true, false, false]),
        (4, &pki.client.cert, [false, true, false, false]),
    ];
    for (level, ca, want) in levels {
        let backend = Backend::line_echo_once();
        let srv = server(
            Program::Rstunnel,
            &dir,
            &format!("server-verify{level}"),
            backend.addr(),
            &pki.server.combined,
            &format!("verify = {level}\nCAfile = {}\n", ca.display()),
        );
        for ((what, leaf), ok) in presented.iter().zip(want) {
            let mut args = vec!["-tls1_3".to_string()];
            if let Some(l) = leaf {
                args.extend(["-cert".into(), p(&l.cert), "-key".into(), p(&l.key)]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let n = backend.connections();
            let r = s_client(srv.port("srv"), &args);
            let through = echoed(&r) && backend.connections() == n + 1;
            if through != ok {
                srv.fail(&format!(
                    "verify = {level}, {what}: expected {}\n{}",
                    if ok { "to get through" } else { "a refusal" },
                    r.describe()
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// checkHost / checkIP / checkEmail
// ---------------------------------------------------------------------------------------

/// The identity checks of an rstunnel client against `s_server` and a stunnel4 server
/// presenting `leaf`: `checks` (option lines) must give `ok`.
fn client_checks(dir: &TestDir, pki: &Pki, leaf: &LeafFiles, checks: &str, ok: bool) {
    let verify = format!(
        "verifyChain = yes\nCAfile = {}\n{checks}",
        pki.ca_file.display()
    );
    client_against_both_servers(dir, leaf, &verify, ok, "Rejected by CERT", &|peer| {
        format!("{peer}, {checks:?}")
    });
}

/// The `identity.example.org` leaf (DNS SANs identity.example.org and alt.example.org, IP
/// SAN 127.0.0.1, email SAN a@example.org) against [`client_checks`] of each row:
/// (check lines, whether they let the session through).
fn identity_checks(label: &str, rows: &[(&str, bool)]) {
    stunnel4();
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let id = leaf(
        &pki.ca,
        "identity.example.org",
        &["identity.example.org", "alt.example.org"],
        &["127.0.0.1"],
        &["a@example.org"],
    )
    .write(&dir, "identity");
    for (checks, ok) in rows {
        client_checks(&dir, &pki, &id, checks, *ok);
    }
}

#[test]
fn check_ip_matches_the_ip_san() {
    identity_checks(
        "check-ip",
        &[
            ("checkIP = 127.0.0.1\n", true),
            ("checkIP = 127.0.0.2\n", false),
        ],
    );
}

#[test]
fn check_email_matches_the_email_san() {
    identity_checks(
        "check-email",
        &[
            ("checkEmail = a@example.org\n", true),
            ("checkEmail = b@example.org\n", false),
        ],
    );
}

#[test]
fn several_check_host_lines_any_one_matches() {
    identity_checks(
        "check-host-many",
        &[
            (
                "checkHost = nope.example.org\ncheckHost = alt.example.org\ncheckHost = other.name\n",
                true,
            ),
            ("checkHost = nope.example.org\ncheckHost = other.name\n", false),
            // An IP check that matches makes up for host checks that do not (any one passes).
            ("checkHost = nope.example.org\ncheckIP = 127.0.0.1\n", true),
        ],
    );
}

/// Server side: rstunnel server with `checkEmail`, stunnel4 clients with matching and
/// other email SANs.
#[test]
fn check_email_on_the_server_side_with_stunnel4_clients() {
    stunnel4();
    let dir = TestDir::new("check-email-server");
    let pki = Pki::new(&dir);
    let a = leaf(&pki.ca, "a client", &[], &[], &["a@example.org"]).write(&dir, "a");
    let b = leaf(&pki.ca, "b client", &[], &[], &["b@example.org"]).write(&dir, "b");
    let echo = Backend::echo();
    let srv = Tunnel::server(
        &dir,
        &pki,
        echo.addr(),
        &format!(
            "verifyChain = yes\nCAfile = {}\ncheckEmail = a@example.org\n",
            pki.ca_file.display()
        ),
    );
    let good = client(
        Program::Stunnel4,
        &dir,
        "s4-a",
        srv.addr("srv"),
        &format!("cert = {}\n", a.combined.display()),
    );
    assert_echo_works(good.addr("cli"), &srv, "stunnel4 client with a@example.org");
    let conns = echo.connections();
    let bad = client(
        Program::Stunnel4,
        &dir,
        "s4-b",
        srv.addr("srv"),
        &format!("cert = {}\n", b.combined.display()),
    );
    let before = srv.log_lines().len();
    assert_refused(
        bad.addr("cli"),
        &srv,
        before,
        "Rejected by CERT",
        "stunnel4 client with b@example.org",
    );
    assert_eq!(echo.connections(), conns);
}
