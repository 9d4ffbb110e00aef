//! rstunnel against GnuTLS's own command-line peers (Debian 12's gnutls-bin, 3.7.9), both
//! roles, TLS 1.2 and TLS 1.3:
//!
//! ```text
//! gnutls-cli ──TLS──▶ rstunnel server [srv] ──plain──▶ backend
//! test ──plain──▶ rstunnel client [cli] ──TLS──▶ gnutls-serv --echo
//! ```
//!
//! * close_notify and half-close: gnutls-cli sends close_notify at its stdin's EOF and keeps
//!   reading; the backend replies only after that EOF, and the reply must reach gnutls-cli,
//!   followed by rstunnel's close_notify (gnutls-cli: "Peer has closed the GnuTLS
//!   connection", not "terminated abnormally"). The other way, the test shuts down its write
//!   side into the client tunnel, which sends close_notify to gnutls-serv and must still
//!   deliver every echoed line after it. Neither rstunnel logs a close without close_notify.
//! * mutual TLS: the server with `verify = 2` (TLS 1.2) and with `verifyChain` +
//!   `requireCert` (TLS 1.3) lets in gnutls-cli's certificate from its CA and refuses none
//!   and one from another CA (no data, backend never contacted, a logged refusal);
//!   gnutls-serv `--require-client-cert --verify-client-cert` lets the client tunnel in with
//!   its `cert` and refuses it without one or with one from another CA.
//! * resumption: gnutls-cli `--resume` resumes with the server ("*** This is a resumed
//!   session"; the server logs "previous session reused"); the client tunnel's 2nd and 3rd
//!   connections to gnutls-serv resume (logged by both).
//! * 64 MiB each way at once, checked by SHA-256: gnutls-cli through the server to an echo
//!   backend (binary, TLS 1.3), and through the client tunnel to gnutls-serv's echo (text
//!   lines, which is what its echo carries; TLS 1.2).
//!
//! gnutls-cli and gnutls-serv are installed by scripts/deps.sh; their absence fails these
//! tests. Checking the tests themselves: with `RSTUNNEL_TEST_BIN=/usr/bin/stunnel4` (the
//! reference in rstunnel's place) all of them pass too. See tests/common/gnutls_cli.rs for how they are driven.

mod common;

use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use common::gnutls_cli::{self as gnutls, Input, Serv, TLS12, TLS13};
use common::tls_peers::{assert_refused, wait_new_log};
use common::*;

/// Bound on a small gnutls-cli run.
const RUN: Duration = Duration::from_secs(30);
/// Bound on a 64 MiB transfer (twice that on the wire) on a loaded 2-CPU machine.
const BIG_RUN: Duration = Duration::from_secs(300);
/// Bound on a log line or a backend's result.
const T: Duration = Duration::from_secs(20);
const BIG: u64 = 64 * MIB;
const LINE: &[u8] = b"hello from gnutls-cli\n";

fn priority(p: &str) -> String {
    format!("--priority={p}")
}

/// The version rstunnel's `… ciphersuite:` line names for a GnuTLS priority string.
fn openssl_version(p: &str) -> &'static str {
    if p == TLS13 {
        "TLSv1.3"
    } else {
        "TLSv1.2"
    }
}

/// The GnuTLS name of the version in gnutls-cli's `- Description:` line.
fn gnutls_version(p: &str) -> &'static str {
    if p == TLS13 {
        "TLS1.3"
    } else {
        "TLS1.2"
    }
}

/// `t` logged that it sent close_notify (rstunnel's words, or the reference stunnel's, so
/// that `RSTUNNEL_TEST_BIN=/usr/bin/stunnel4` checks these tests themselves).
fn assert_close_notify_sent(t: &Tunnel) {
    let sent = |l: &str| {
        l.contains("TLS close_notify sent") || l.contains("successfully sent close_notify alert")
    };
    if t.try_wait_for(T, sent).is_none() {
        t.fail("no log line says close_notify was sent");
    }
}

/// Neither end's close_notify may be missing, and no session may fail.
fn assert_clean_close(t: &Tunnel) {
    for bad in [
        "closed without close_notify",
        "close_notify not sent",
        "Connection reset",
    ] {
        if t.has_log(bad) {
            t.fail(&format!("the log has {bad:?}"));
        }
    }
    let problems = t.connection_problems(4);
    if !problems.is_empty() {
        t.fail(&format!("connection problems: {problems:?}"));
    }
}

/// gnutls-cli (verifying the server as `localhost` against the CA) sends [`LINE`] and
/// closes its sending side with close_notify; the backend replies with the digest of what
/// it read only after that EOF. The reply must reach gnutls-cli, then rstunnel's
/// close_notify.
fn cli_half_close(label: &str, prio: &str) {
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let backend = Backend::digest_reply();
    let srv = Tunnel::server(&dir, &pki, backend.addr(), "");
    let mut args = gnutls::verifying(&pki.ca_file);
    args.push(priority(prio));
    let r = gnutls::cli(&dir, "cli", srv.port("srv"), &args, Input::Bytes(LINE), RUN);
    let reply = format!("{}\n", Digest::of(LINE).line());
    if !r.status.success() || r.head != reply {
        srv.fail(&format!(
            "gnutls-cli must get the backend's reply sent after its close_notify\n{}",
            r.describe()
        ));
    }
    assert!(
        r.server_trusted(),
        "gnutls-cli must trust the chain\n{}",
        r.describe()
    );
    assert_eq!(
        r.version().as_deref(),
        Some(gnutls_version(prio)),
        "negotiated version\n{}",
        r.describe()
    );
    assert!(
        r.log.contains("- Peer has closed the GnuTLS connection"),
        "rstunnel must end with close_notify\n{}",
        r.describe()
    );
    assert_eq!(
        backend.next_result(T),
        Digest::of(LINE),
        "the backend's input"
    );
    let c = &srv.wait_close_counts(1, T)[0];
    assert_eq!(
        (c.sent_to_tls, c.sent_to_socket),
        (reply.len() as u64, LINE.len() as u64),
        "server close line"
    );
    srv.wait_for_log(&format!("{} ciphersuite:", openssl_version(prio)), T);
    assert_close_notify_sent(&srv);
    assert_clean_close(&srv);
}

#[test]
fn gnutls_cli_to_server_half_close_tls13() {
    cli_half_close("gnutls-cli-13", TLS13);
}

#[test]
fn gnutls_cli_to_server_half_close_tls12() {
    cli_half_close("gnutls-cli-12", TLS12);
}

/// A server with `verify_lines` in front of an echo backend, reached by gnutls-cli with
/// `prio`: the client certificate from the CA gets its line echoed; no certificate, and one
/// from the wrong CA, are refused (gnutls-cli gets the TLS alert for the case and no data,
/// the backend is never contacted, the server logs why).
/// `verify_lines` names the CA file as `{ca}`.
fn server_mutual_tls(label: &str, prio: &str, verify_lines: &str) {
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let verify_lines = &verify_lines.replace("{ca}", &pki.ca_file.to_string_lossy());
    let backend = Backend::echo();
    let srv = Tunnel::server(&dir, &pki, backend.addr(), verify_lines);
    let port = srv.port("srv");
    let base = {
        let mut a = gnutls::verifying(&pki.ca_file);
        a.push(priority(prio));
        a
    };

    let mut args = base.clone();
    args.extend(gnutls::cert_args(&pki.client));
    let r = gnutls::cli(&dir, "right-cert", port, &args, Input::Bytes(LINE), RUN);
    if !r.status.success() || r.head.as_bytes() != LINE {
        srv.fail(&format!(
            "a client certificate from the CA must get through ({verify_lines:?})\n{}",
            r.describe()
        ));
    }
    assert_eq!(backend.next_result(T), Digest::of(LINE));

    let wrong = {
        let mut a = base.clone();
        a.extend(gnutls::cert_args(&pki.wrong_client));
        a
    };
    // The alert gnutls-cli gets without a certificate: TLS 1.3 has certificate_required
    // (116); TLS 1.2 only handshake_failure (40). A certificate from another CA gets
    // unknown_ca (48) either way.
    let no_cert_alert = if prio == TLS13 { "[116]" } else { "[40]" };
    let cases = [
        (
            "no-cert",
            &base,
            no_cert_alert,
            "peer did not return a certificate",
        ),
        ("wrong-ca-cert", &wrong, "[48]", "certificate verify failed"),
    ];
    for (case, args, alert, logged) in cases {
        let from = srv.log_lines().len();
        let r = gnutls::cli(&dir, case, port, args, Input::Bytes(LINE), RUN);
        let alerted = r.log.contains(&format!("*** Received alert {alert}"));
        if r.out.bytes != 0 || r.status.success() || !alerted {
            srv.fail(&format!(
                "{case}: must be refused by {verify_lines:?} with alert {alert}\n{}",
                r.describe()
            ));
        }
        if wait_new_log(&srv, from, |l| l.contains(logged)).is_none() {
            srv.fail(&format!(
                "{case}: refused, but the server did not log {logged:?}"
            ));
        }
    }
    assert_eq!(
        backend.connections(),
        1,
        "only the session with the right certificate may reach the backend"
    );
}

#[test]
fn server_verify2_mutual_tls_tls12() {
    server_mutual_tls("gnutls-mtls-verify2", TLS12, "verify = 2\nCAfile = {ca}\n");
}

#[test]
fn server_verifychain_requirecert_mutual_tls_tls13() {
    server_mutual_tls(
        "gnutls-mtls-chain",
        TLS13,
        "verifyChain = yes\nrequireCert = yes\nCAfile = {ca}\n",
    );
}

/// gnutls-cli `--resume` (with `--waitresumption`, so that under TLS 1.3 it waits for the
/// ticket): the second connection is resumed, gnutls-cli says so and so does the server.
fn cli_resumes(label: &str, prio: &str) {
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let backend = Backend::line_echo_once();
    let srv = Tunnel::server(&dir, &pki, backend.addr(), "");
    let mut args = gnutls::verifying(&pki.ca_file);
    args.extend([priority(prio), "--resume".into(), "--waitresumption".into()]);
    let r = gnutls::cli(
        &dir,
        "resume",
        srv.port("srv"),
        &args,
        Input::Bytes(LINE),
        RUN,
    );
    if !r.status.success() || !r.resumed() || r.head.as_bytes() != LINE {
        srv.fail(&format!(
            "gnutls-cli --resume must resume and get its line echoed\n{}",
            r.describe()
        ));
    }
    srv.wait_for_log("TLS accepted: new session negotiated", T);
    srv.wait_for_log("TLS accepted: previous session reused", T);
    let reused = srv.wait_for_logs("TLS accepted:", 2, T);
    assert_eq!(reused.len(), 2, "two handshakes: {reused:?}");
    srv.wait_close_counts(2, T);
    assert_clean_close(&srv);
}

#[test]
fn gnutls_cli_resumes_with_server_tls13() {
    cli_resumes("gnutls-resume-13", TLS13);
}

#[test]
fn gnutls_cli_resumes_with_server_tls12() {
    cli_resumes("gnutls-resume-12", TLS12);
}

/// 64 MiB of binary data from gnutls-cli through the server to an echo backend and back, at
/// the same time, each direction checked by SHA-256 (TLS 1.3).
#[test]
fn gnutls_cli_64_mib_each_way_through_server() {
    let dir = TestDir::new("gnutls-big-cli");
    let pki = Pki::new(&dir);
    let backend = Backend::echo();
    let srv = Tunnel::server(&dir, &pki, backend.addr(), "");
    let mut args = gnutls::verifying(&pki.ca_file);
    args.push(priority(TLS13));
    let r = gnutls::cli(
        &dir,
        "big",
        srv.port("srv"),
        &args,
        Input::Binary(181, BIG),
        BIG_RUN,
    );
    let sent = payload_digest(181, BIG);
    if r.sent != Some(sent) || r.out != sent || !r.status.success() {
        srv.fail(&format!(
            "64 MiB each way: sent {:?}, got back {:?}, expected {sent:?}\n{}",
            r.sent,
            r.out,
            r.describe()
        ));
    }
    assert_eq!(backend.next_result(T), sent, "what the backend echoed");
    let c = &srv.wait_close_counts(1, T)[0];
    assert_eq!(
        (c.sent_to_tls, c.sent_to_socket),
        (BIG, BIG),
        "server close line"
    );
    assert_clean_close(&srv);
}

/// A client tunnel (verifying gnutls-serv as `localhost` against the CA, plus `extra`) in
/// front of `serv`.
fn client_to(dir: &TestDir, label: &str, pki: &Pki, serv: &Serv, extra: &str) -> Tunnel {
    let verify = format!(
        "verifyChain = yes\nCAfile = {}\ncheckHost = localhost\n{extra}",
        pki.ca_file.display()
    );
    Tunnel::start(dir, label, &client_body(serv.addr(), &verify))
}

/// Sends `input` into `entry` from a second thread and shuts down the write side, while
/// reading everything that comes back until EOF; returns (sent, received) digests.
fn stream_session(entry: SocketAddr, input: Input<'static>) -> (Digest, Digest) {
    let mut s = connect(entry);
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let d = gnutls::stream_input(&input, &mut w).expect("sending into the client tunnel");
        w.flush().unwrap();
        w.shutdown(Shutdown::Write).unwrap();
        d
    });
    let got = read_digest(&mut s).expect("reading the echo until EOF");
    (writer.join().unwrap(), got)
}

/// Text lines through the client tunnel to gnutls-serv's echo, the test's write side shut
/// down after them: rstunnel sends close_notify and must still deliver every echoed line,
/// then end on gnutls-serv's close_notify.
fn client_half_close(label: &str, prio: &str) {
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let serv = Serv::start("gnutls-serv", &pki.server, &["--echo", &priority(prio)]);
    let cli = client_to(&dir, "client", &pki, &serv, "");
    let len = 256 * KIB;
    let (sent, got) = stream_session(cli.addr("cli"), Input::Text(7, len));
    assert_eq!(sent, gnutls::text_digest(7, len));
    if got != sent {
        serv.fail(&format!(
            "echo through the client tunnel after its close_notify: got {got:?}, sent {sent:?}"
        ));
    }
    cli.wait_for_log("TLS connected: new session negotiated", T);
    cli.wait_for_log(&format!("{} ciphersuite:", openssl_version(prio)), T);
    assert_close_notify_sent(&cli);
    let c = &cli.wait_close_counts(1, T)[0];
    assert_eq!(
        (c.sent_to_tls, c.sent_to_socket),
        (len, len),
        "client close line"
    );
    assert_clean_close(&cli);
}

#[test]
fn client_tunnel_to_gnutls_serv_half_close_tls13() {
    client_half_close("gnutls-serv-13", TLS13);
}

#[test]
fn client_tunnel_to_gnutls_serv_half_close_tls12() {
    client_half_close("gnutls-serv-12", TLS12);
}

/// gnutls-serv `--require-client-cert --verify-client-cert` trusting the CA: the client
/// tunnel with a `cert` from it gets through; without one, and with one from another CA,
/// it is refused (nothing back, the connection closed, the client tunnel logs a LOG3 line
/// of that session) and gnutls-serv reports why.
fn client_mutual_tls(label: &str, prio: &str) {
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let serv = Serv::start(
        "gnutls-serv",
        &pki.server,
        &[
            "--echo",
            &priority(prio),
            "--require-client-cert",
            "--verify-client-cert",
            &gnutls::ca_arg(&pki.ca_file),
        ],
    );
    let right = format!("cert = {}\n", pki.client.combined.display());
    let cli = client_to(&dir, "client-right", &pki, &serv, &right);
    let data = b"a line with the right certificate\n";
    let got = echo_session(cli.addr("cli"), data)
        .unwrap_or_else(|e| serv.fail(&format!("the client tunnel with its certificate: {e}")));
    if got != data {
        serv.fail(&format!(
            "the client tunnel with a certificate from the CA must get through, got {:?}",
            String::from_utf8_lossy(&got)
        ));
    }
    drop(cli);

    // What gnutls-serv says: without a certificate GnuTLS 3.7.9 answers TLS 1.3 with
    // certificate_required and TLS 1.2 with a decode_error alert; a certificate from
    // another CA fails its verification.
    let no_cert = if prio == TLS13 {
        "Error in handshake: Certificate is required."
    } else {
        "Error in handshake: No certificate was found."
    };
    let wrong = format!("cert = {}\n", pki.wrong_client.combined.display());
    let cases = [
        ("client-no-cert", String::new(), no_cert),
        (
            "client-wrong-ca",
            wrong,
            "Error in handshake: Error in the certificate.",
        ),
    ];
    for (case, extra, said) in cases {
        let cli = client_to(&dir, case, &pki, &serv, &extra);
        assert_refused(cli.addr("cli"), &cli, 0, "", case);
        serv.wait_for(said, 1, T);
    }
}

#[test]
fn client_tunnel_mutual_tls_with_gnutls_serv_tls13() {
    client_mutual_tls("gnutls-serv-mtls-13", TLS13);
}

#[test]
fn client_tunnel_mutual_tls_with_gnutls_serv_tls12() {
    client_mutual_tls("gnutls-serv-mtls-12", TLS12);
}

/// Three sessions through one client tunnel to gnutls-serv: the 2nd and 3rd resume the
/// session of the 1st (rstunnel's client session cache), as both ends report.
fn client_resumes(label: &str, prio: &str) {
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let serv = Serv::start("gnutls-serv", &pki.server, &["--echo", &priority(prio)]);
    let cli = client_to(&dir, "client", &pki, &serv, "");
    for i in 0..3 {
        let data = format!("session {i}\n");
        let got = echo_session(cli.addr("cli"), data.as_bytes())
            .unwrap_or_else(|e| cli.fail(&format!("session {i}: {e}")));
        assert_eq!(got, data.as_bytes(), "session {i} echoed");
        // One at a time: a session is cached once its handshake is done (and, under TLS
        // 1.3, once its ticket arrived), so wait for its end before the next one.
        cli.wait_close_counts(i + 1, T);
    }
    let lines = cli.wait_for_logs("TLS connected:", 3, T);
    let reused = lines
        .iter()
        .filter(|l| l.contains("previous session reused"))
        .count();
    if reused != 2 {
        cli.fail(&format!(
            "expected the 2nd and 3rd session resumed: {lines:?}"
        ));
    }
    serv.wait_for("*** This is a resumed session", 2, T);
    if serv.count("*** This is a resumed session") != 2 {
        serv.fail("gnutls-serv must see exactly two resumed sessions");
    }
    assert_clean_close(&cli);
}

#[test]
fn client_tunnel_resumes_with_gnutls_serv_tls13() {
    client_resumes("gnutls-serv-resume-13", TLS13);
}

#[test]
fn client_tunnel_resumes_with_gnutls_serv_tls12() {
    client_resumes("gnutls-serv-resume-12", TLS12);
}

/// 64 MiB of text lines through the client tunnel to gnutls-serv's echo and back, at the
/// same time, each direction checked by SHA-256 (TLS 1.2).
#[test]
fn client_tunnel_64_mib_each_way_to_gnutls_serv() {
    let dir = TestDir::new("gnutls-big-serv");
    let pki = Pki::new(&dir);
    let serv = Serv::start("gnutls-serv", &pki.server, &["--echo", &priority(TLS12)]);
    let cli = client_to(&dir, "client", &pki, &serv, "");
    let (sent, got) = stream_session(cli.addr("cli"), Input::Text(99, BIG));
    assert_eq!(sent, gnutls::text_digest(99, BIG));
    if got != sent {
        serv.fail(&format!("64 MiB each way: got back {got:?}, sent {sent:?}"));
    }
    let c = &cli.wait_close_counts(1, T)[0];
    assert_eq!(
        (c.sent_to_tls, c.sent_to_socket),
        (BIG, BIG),
        "client close line"
    );
    assert_clean_close(&cli);
}
