//! Protocol versions and algorithms checked against foreign peers (OpenSSL's `s_client` and
//! the reference `stunnel4`), each with a case that must work and one that must be refused:
//! `sslVersionMin`/`sslVersionMax`, `ciphers`, `ciphersuites`, `options = NO_TLSv1_3`,
//! `curves`.
//!
//! Checking the tests themselves: `RSTUNNEL_TEST_BIN=/usr/bin/stunnel4` runs them with the
//! reference in rstunnel's place; all pass then. Every foreign process runs under a guard
//! (killed on drop) and every wait is bounded.

mod common;

use common::tools::stunnel4;

use common::tls_peers::*;
use common::*;

/// A stunnel4 client (`client_extra`) → rstunnel server (`server_extra`) → echo. With
/// `want = Some(text)` the session must work and the server log `text`; with `None` it
/// must be refused, logged by the server, and the backend never contacted.
fn stunnel4_to_rstunnel(label: &str, server_extra: &str, client_extra: &str, want: Option<&str>) {
    stunnel4();
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let pair = TunnelPair::start_programs(
        (Program::Stunnel4, Program::Rstunnel),
        &dir,
        &pki,
        echo.addr(),
        (server_extra, client_extra),
    );
    let what = format!("server `{server_extra}` / stunnel4 client `{client_extra}`");
    match want {
        Some(text) => {
            assert_echo_works(pair.entry(), &pair.server, &what);
            if wait_new_log(&pair.server, 0, |l| l.contains(text)).is_none() {
                pair.server
                    .fail(&format!("{what}: expected a log line with {text:?}"));
            }
        }
        None => {
            assert_refused(pair.entry(), &pair.server, 0, "", &what);
            assert_eq!(echo.connections(), 0, "{what}: backend contacted");
        }
    }
}

#[test]
fn version_max_tls12_refuses_stunnel4_min_tls13() {
    stunnel4_to_rstunnel(
        "ver-refused",
        "sslVersionMax = TLSv1.2\n",
        "sslVersionMin = TLSv1.3\n",
        None,
    );
}

#[test]
fn version_max_tls12_accepts_stunnel4_min_tls12() {
    stunnel4_to_rstunnel(
        "ver-ok",
        "sslVersionMax = TLSv1.2\n",
        "sslVersionMin = TLSv1.2\n",
        Some("TLSv1.2 ciphersuite: "),
    );
}

#[test]
fn cipher_mismatch_with_stunnel4_is_refused() {
    stunnel4_to_rstunnel(
        "cipher-mismatch",
        "sslVersionMax = TLSv1.2\nciphers = ECDHE-ECDSA-AES128-GCM-SHA256\n",
        "sslVersionMax = TLSv1.2\nciphers = ECDHE-ECDSA-AES256-GCM-SHA384\n",
        None,
    );
}

#[test]
fn cipher_match_with_stunnel4_works() {
    stunnel4_to_rstunnel(
        "cipher-match",
        "sslVersionMax = TLSv1.2\nciphers = ECDHE-ECDSA-AES128-GCM-SHA256\n",
        "sslVersionMax = TLSv1.2\nciphers = ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256\n",
        Some("TLSv1.2 ciphersuite: ECDHE-ECDSA-AES128-GCM-SHA256"),
    );
}

#[test]
fn ciphersuites_mismatch_with_stunnel4_is_refused() {
    stunnel4_to_rstunnel(
        "suites-mismatch",
        "ciphersuites = TLS_CHACHA20_POLY1305_SHA256\n",
        "sslVersionMin = TLSv1.3\nciphersuites = TLS_AES_128_GCM_SHA256\n",
        None,
    );
}

#[test]
fn ciphersuites_match_with_stunnel4_works() {
    stunnel4_to_rstunnel(
        "suites-match",
        "ciphersuites = TLS_CHACHA20_POLY1305_SHA256\n",
        "sslVersionMin = TLSv1.3\nciphersuites = TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256\n",
        Some("TLSv1.3 ciphersuite: TLS_CHACHA20_POLY1305_SHA256"),
    );
}

#[test]
fn no_tlsv1_3_option_refuses_stunnel4_min_tls13() {
    stunnel4_to_rstunnel(
        "no-tls13-s4",
        "options = NO_TLSv1_3\n",
        "sslVersionMin = TLSv1.3\n",
        None,
    );
}

#[test]
fn curves_mismatch_with_stunnel4_is_refused() {
    stunnel4_to_rstunnel(
        "curves-s4-refused",
        "curves = P-384\n",
        "sslVersionMin = TLSv1.3\ncurves = X25519\n",
        None,
    );
}

#[test]
fn curves_match_with_stunnel4_works() {
    stunnel4_to_rstunnel(
        "curves-s4-ok",
        "curves = P-384\n",
        "sslVersionMin = TLSv1.3\ncurves = X25519:P-384\n",
        Some("TLSv1.3 ciphersuite: "),
    );
}

/// The reverse direction: an rstunnel client whose `ciphers` / versions do not fit a
/// stunnel4 server is refused; matching ones work.
#[test]
fn rstunnel_client_cipher_and_version_against_stunnel4_server() {
    stunnel4();
    let dir = TestDir::new("client-cipher-s4");
    let pki = Pki::new(&dir);
    for (client_extra, server_extra, ok) in [
        (
            "sslVersionMax = TLSv1.2\nciphers = ECDHE-ECDSA-AES256-GCM-SHA384\n",
            "sslVersionMax = TLSv1.2\nciphers = ECDHE-ECDSA-AES128-GCM-SHA256\n",
            false,
        ),
        (
            "sslVersionMax = TLSv1.2\nciphers = ECDHE-ECDSA-AES128-GCM-SHA256\n",
            "sslVersionMax = TLSv1.2\nciphers = ECDHE-ECDSA-AES128-GCM-SHA256\n",
            true,
        ),
        (
            "sslVersionMin = TLSv1.3\n",
            "sslVersionMax = TLSv1.2\n",
            false,
        ),
        (
            "sslVersionMax = TLSv1.2\n",
            "sslVersionMin = TLSv1.2\n",
            true,
        ),
    ] {
        let echo = Backend::echo();
        let pair = TunnelPair::start_programs(
            (Program::Rstunnel, Program::Stunnel4),
            &dir,
            &pki,
            echo.addr(),
            (server_extra, client_extra),
        );
        let what = format!("rstunnel client `{client_extra}` / stunnel4 server `{server_extra}`");
        if ok {
            assert_echo_works(pair.entry(), &pair.client, &what);
        } else {
            assert_refused(pair.entry(), &pair.client, 0, "", &what);
            assert_eq!(echo.connections(), 0, "{what}");
        }
    }
}

/// `options = NO_TLSv1_3` and `curves = P-384` on the server against `s_client`.
#[test]
fn no_tlsv1_3_and_curves_against_s_client() {
    let dir = TestDir::new("no-tls13-curves-s-client");
    let pki = Pki::new(&dir);
    let backend = Backend::line_echo_once();
    let srv = Tunnel::server(&dir, &pki, backend.addr(), "options = NO_TLSv1_3\n");
    let r = s_client(srv.port("srv"), &["-tls1_3"]);
    if echoed(&r) || r.status.success() || backend.connections() != 0 {
        srv.fail(&format!(
            "NO_TLSv1_3: s_client -tls1_3 must be refused\n{}",
            r.describe()
        ));
    }
    let r = s_client(srv.port("srv"), &[]);
    if !echoed(&r) || !r.stdout.contains("New, TLSv1.2") {
        srv.fail(&format!(
            "NO_TLSv1_3: s_client must get TLS 1.2\n{}",
            r.describe()
        ));
    }
    drop(srv);

    let backend = Backend::line_echo_once();
    let srv = server(
        Program::Rstunnel,
        &dir,
        "server2",
        backend.addr(),
        &pki.server.combined,
        "curves = P-384\n",
    );
    // TLS 1.2 also needs the ECDSA certificate's curve (P-256) among the client's groups.
    for (version, refused, accepted) in [
        ("-tls1_3", "X25519", "P-384"),
        ("-tls1_2", "X25519:P-256", "P-384:P-256"),
    ] {
        let n = backend.connections();
        let r = s_client(srv.port("srv"), &[version, "-groups", refused]);
        if echoed(&r) || r.status.success() || backend.connections() != n {
            srv.fail(&format!(
                "curves = P-384: s_client {version} -groups {refused} must be refused\n{}",
                r.describe()
            ));
        }
        let r = s_client(srv.port("srv"), &[version, "-groups", accepted]);
        if !echoed(&r) {
            srv.fail(&format!(
                "curves = P-384: s_client {version} -groups {accepted} must work\n{}",
                r.describe()
            ));
        }
        // s_client names the group of the key exchange: "Server Temp Key: ECDH, secp384r1"
        // (OpenSSL 3) or "ECDH, P-384" (1.1.1).
        assert!(
            r.stdout.contains("Server Temp Key: ECDH, secp384r1")
                || r.stdout.contains("Server Temp Key: ECDH, P-384"),
            "{version}: the key exchange must use P-384\n{}",
            r.describe()
        );
    }
}
