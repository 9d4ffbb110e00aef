//! Session resumption checked against foreign peers (OpenSSL's `s_client` and the reference
//! `stunnel4`): `s_client -sess_out`/`-sess_in`/`-reconnect` against the server (TLS 1.2 and
//! 1.3, `sessionResume = no`, `sessionCacheTimeout`), and tunnels reconnecting to each other
//! in both roles (`previous session reused` on the 2nd and 3rd connection, none with
//! `sessionResume = no` on either side).
//!
//! Checking the tests themselves: `RSTUNNEL_TEST_BIN=/usr/bin/stunnel4` runs them with the
//! reference in rstunnel's place; all pass then. Every foreign process runs under a guard
//! (killed on drop) and every wait is bounded.

mod common;

use std::time::Duration;

use common::tools::stunnel4;

use common::tls_peers::*;
use common::*;

fn s_client_resumption(label: &str, version: &str, server_extra: &str, expect_reuse: bool) {
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let backend = Backend::line_echo_once();
    let srv = Tunnel::server(&dir, &pki, backend.addr(), server_extra);
    let sess = p(&dir.join("session.pem"));
    let proto = if version == "-tls1_3" {
        "TLSv1.3"
    } else {
        "TLSv1.2"
    };
    let r = s_client(srv.port("srv"), &[version, "-sess_out", &sess]);
    if !echoed(&r) || !r.stdout.contains(&format!("New, {proto}")) {
        srv.fail(&format!(
            "first s_client {version} must be a new session\n{}",
            r.describe()
        ));
    }
    if !dir.join("session.pem").exists() {
        // No session id and no ticket (stunnel4 with `sessionResume = no` sends no TLS 1.3
        // ticket either): nothing s_client could resume.
        assert!(
            !expect_reuse && !r.stdout.contains("TLS session ticket:"),
            "s_client -sess_out wrote no session\n{}",
            r.describe()
        );
        assert!(!srv.has_log("previous session reused"));
        return;
    }
    for round in 0..2 {
        let r = s_client(srv.port("srv"), &[version, "-sess_in", &sess]);
        let reused = r.stdout.contains(&format!("Reused, {proto}"));
        if !echoed(&r) || reused != expect_reuse {
            srv.fail(&format!(
                "s_client {version} -sess_in (round {round}): expected {} with `{server_extra}`\n{}",
                if expect_reuse { "Reused" } else { "a new session" },
                r.describe()
            ));
        }
    }
    let reused_logged = srv.has_log("TLS accepted: previous session reused");
    assert_eq!(
        reused_logged, expect_reuse,
        "server log `previous session reused`"
    );
}

#[test]
fn s_client_resumes_tls13_session() {
    s_client_resumption("sess-s-client-13", "-tls1_3", "", true);
}

#[test]
fn s_client_resumes_tls12_session() {
    s_client_resumption("sess-s-client-12", "-tls1_2", "", true);
}

#[test]
fn s_client_tls13_no_resumption_with_session_resume_no() {
    s_client_resumption(
        "sess-s-client-13-off",
        "-tls1_3",
        "sessionResume = no\n",
        false,
    );
}

#[test]
fn s_client_tls12_no_resumption_with_session_resume_no() {
    s_client_resumption(
        "sess-s-client-12-off",
        "-tls1_2",
        "sessionResume = no\n",
        false,
    );
}

/// `s_client -reconnect` (TLS 1.2): five reconnections with the first session, all reused.
#[test]
fn s_client_reconnect_is_reused_tls12() {
    let dir = TestDir::new("sess-reconnect");
    let pki = Pki::new(&dir);
    let backend = Backend::line_echo_once();
    let srv = Tunnel::server(&dir, &pki, backend.addr(), "");
    let r = s_client(srv.port("srv"), &["-tls1_2", "-reconnect"]);
    let reused = r.stdout.matches("Reused, TLSv1.2").count();
    if reused < 5 {
        srv.fail(&format!(
            "s_client -reconnect: {reused} of 5 reconnections reused\n{}",
            r.describe()
        ));
    }
}

/// `sessionCacheTimeout = 3`: a session offered 5 s later is not resumed (TLS 1.2 and
/// 1.3), while one offered at once is.
#[test]
fn session_cache_timeout_expires_sessions() {
    let dir = TestDir::new("sess-timeout");
    let pki = Pki::new(&dir);
    let backend = Backend::line_echo_once();
    // 3 s, not 1: a TLS 1.2 ticket carries its session's time in whole seconds, and OpenSSL
    // 3.2 and later (4.0 here) expire it exactly TIMEOUT after that truncated time, so
    // with 1 s a resumption "at once" that crosses a second boundary already fails; 3.0
    // counts whole seconds of age and allows up to TIMEOUT + 1. The wait below is past
    // both.
    let srv = Tunnel::server(&dir, &pki, backend.addr(), "sessionCacheTimeout = 3\n");
    for (version, proto) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
        let sess = p(&dir.join(&format!("s{version}.pem")));
        let r = s_client(srv.port("srv"), &[version, "-sess_out", &sess]);
        assert!(echoed(&r), "{version}: first session\n{}", r.describe());
        let r = s_client(srv.port("srv"), &[version, "-sess_in", &sess]);
        if !r.stdout.contains(&format!("Reused, {proto}")) {
            srv.fail(&format!(
                "{version}: resumption at once must work\n{}",
                r.describe()
            ));
        }
        std::thread::sleep(Duration::from_millis(5000));
        let r = s_client(srv.port("srv"), &[version, "-sess_in", &sess]);
        if !echoed(&r) || r.stdout.contains("Reused,") {
            srv.fail(&format!(
                "{version}: a session older than sessionCacheTimeout = 3 must not be \
                 resumed\n{}",
                r.describe()
            ));
        }
    }
}

/// A client tunnel reconnecting 3 times to a server tunnel (one of them stunnel4): the
/// client's log must say whether each session was reused.
fn tunnel_resumption(
    label: &str,
    client_prog: Program,
    server_prog: Program,
    client_extra: &str,
    server_extra: &str,
    expect_reuse: bool,
) {
    stunnel4();
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let pair = TunnelPair::start_programs(
        (client_prog, server_prog),
        &dir,
        &pki,
        echo.addr(),
        (server_extra, client_extra),
    );
    for i in 0..3 {
        assert_echo_works(pair.entry(), &pair.client, &format!("connection {}", i + 1));
        // The session (a TLS 1.3 ticket arrives after the handshake) is stored by the end
        // of the session; wait for the close line so the next connection can offer it.
        pair.client.wait_close_counts(i + 1, T);
    }
    let lines = pair.client.wait_for_logs("TLS connected: ", 3, T);
    let reused: Vec<bool> = lines
        .iter()
        .map(|l| l.contains("previous session reused"))
        .collect();
    let want = [false, expect_reuse, expect_reuse];
    if reused != want {
        pair.client.fail(&format!(
            "client `{client_extra}` / server `{server_extra}`: reuse per connection {reused:?}, \
             expected {want:?}\n--- server log ---\n{}",
            pair.server.log_text()
        ));
    }
    let server_reused = pair
        .server
        .wait_for_logs("TLS accepted: ", 3, T)
        .iter()
        .filter(|l| l.contains("previous session reused"))
        .count();
    assert_eq!(
        server_reused,
        if expect_reuse { 2 } else { 0 },
        "server side reuse count"
    );
}

#[test]
fn rstunnel_client_resumes_with_stunnel4_server_tls13() {
    tunnel_resumption(
        "sess-to-s4-13",
        Program::Rstunnel,
        Program::Stunnel4,
        "sslVersionMin = TLSv1.3\n",
        "",
        true,
    );
}

#[test]
fn rstunnel_client_resumes_with_stunnel4_server_tls12_no_ticket() {
    // No tickets: the server's session-id cache does it.
    tunnel_resumption(
        "sess-to-s4-12-noticket",
        Program::Rstunnel,
        Program::Stunnel4,
        "sslVersionMax = TLSv1.2\n",
        "options = NO_TICKET\nsessionCacheSize = 10\n",
        true,
    );
}

#[test]
fn rstunnel_client_session_resume_no_with_stunnel4_server() {
    tunnel_resumption(
        "sess-to-s4-off",
        Program::Rstunnel,
        Program::Stunnel4,
        "sessionResume = no\n",
        "",
        false,
    );
}

#[test]
fn rstunnel_client_with_stunnel4_server_session_resume_no() {
    tunnel_resumption(
        "sess-to-s4-srv-off",
        Program::Rstunnel,
        Program::Stunnel4,
        "",
        "sessionResume = no\n",
        false,
    );
}

#[test]
fn stunnel4_client_resumes_with_rstunnel_server_tls13() {
    tunnel_resumption(
        "sess-from-s4-13",
        Program::Stunnel4,
        Program::Rstunnel,
        "sslVersionMin = TLSv1.3\n",
        "",
        true,
    );
}

#[test]
fn stunnel4_client_resumes_with_rstunnel_server_tls12_no_ticket() {
    tunnel_resumption(
        "sess-from-s4-12-noticket",
        Program::Stunnel4,
        Program::Rstunnel,
        "sslVersionMax = TLSv1.2\n",
        "options = NO_TICKET\nsessionCacheSize = 10\n",
        true,
    );
}

#[test]
fn stunnel4_client_with_rstunnel_server_session_resume_no() {
    tunnel_resumption(
        "sess-from-s4-off",
        Program::Stunnel4,
        Program::Rstunnel,
        "",
        "sessionResume = no\n",
        false,
    );
}
