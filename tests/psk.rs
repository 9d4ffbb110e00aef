//! Pre-shared keys: `PSKsecrets = FILE` (lines `IDENTITY:KEY`, the key hex when it is valid
//! hex, ASCII otherwise, at least 16 bytes) and `PSKidentity = ID` (client; default: the
//! file's first line). No certificate anywhere: a PSK server needs no `cert`.
//!
//! ```text
//! test ──plain──▶ client [cli] ──TLS (PSK)──▶ server [srv] ──plain──▶ echo
//! ```
//!
//! * rstunnel ↔ rstunnel over TLS 1.2 (a `…PSK…` suite is logged) and TLS 1.3;
//! * interop with the reference `stunnel4` in both roles, TLS 1.2 and 1.3;
//! * `PSKidentity` picks the line; without it the first line is used; ASCII keys work;
//! * a wrong key or an unknown identity fails the handshake: no data, the backend is never
//!   contacted, and an unknown identity is logged as `PSK identity not found`;
//! * a key shorter than 16 bytes makes `rstunnel --check` exit 1 naming the file and line;
//! * a secrets file others can read is warned about (`Insecure file permissions on FILE`).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::daemon::rstunnel_bin;
use common::*;

const T: Duration = Duration::from_secs(10);
const RESULT_TIMEOUT: Duration = Duration::from_secs(20);

/// 16 bytes as hex.
const ALICE_KEY: &str = "00112233445566778899aabbccddeeff";
/// Another 32-hex-digit key.
const OTHER_KEY: &str = "ffeeddccbbaa99887766554433221100";
/// An ASCII key (not valid hex), 24 bytes.
const BOB_KEY: &str = "this is a long ascii key";

/// The server's secrets: alice (hex), then bob (ASCII).
fn server_secrets_text() -> String {
    format!("alice:{ALICE_KEY}\nbob:{BOB_KEY}\n")
}

/// Writes a secrets file with permissions `mode`.
fn write_secrets(dir: &TestDir, name: &str, text: &str, mode: u32) -> PathBuf {
    let p = dir.write(name, text);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
    p
}

/// `[srv]` on 127.0.0.1:0 → `backend`, PSK only (no `cert`, no CA).
fn psk_server_body(backend: std::net::SocketAddr, secrets: &Path, extra: &str) -> String {
    format!(
        "[srv]\naccept = 127.0.0.1:0\nconnect = {backend}\nPSKsecrets = {}\n{extra}\n",
        secrets.display()
    )
}

/// Starts `server_prog` with a PSK-only server section, then `client_prog` with a PSK client
/// section in front of it.
#[allow(clippy::too_many_arguments)]
fn start_psk_pair(
    client_prog: Program,
    server_prog: Program,
    dir: &TestDir,
    backend: std::net::SocketAddr,
    server_secrets: &Path,
    client_secrets: &Path,
    server_extra: &str,
    client_extra: &str,
) -> TunnelPair {
    TunnelPair::start_with_server_body(
        client_prog,
        server_prog,
        dir,
        &psk_server_body(backend, server_secrets, server_extra),
        &format!(
            "PSKsecrets = {}\n{client_extra}\n",
            client_secrets.display()
        ),
    )
}

/// An echoed payload comes back intact; the backend saw exactly it.
fn assert_echo_works(pair: &TunnelPair, echo: &Backend, seed: u64) {
    let data = payload(seed, 256 * 1024);
    let got = echo_session(pair.entry(), &data).expect("echo session over PSK");
    assert!(
        got == data,
        "data echoed over PSK differs ({} bytes back, {} sent)",
        got.len(),
        data.len()
    );
    assert_eq!(echo.next_result(RESULT_TIMEOUT), Digest::of(&data));
    for (name, t) in [("client", &pair.client), ("server", &pair.server)] {
        let c = &t.wait_close_counts(1, T)[0];
        assert_eq!(
            (c.sent_to_tls, c.sent_to_socket),
            (data.len() as u64, data.len() as u64),
            "{name} close line"
        );
    }
}

/// The `TLSvX ciphersuite: NAME (…)` line of `t`'s first session.
fn ciphersuite_line(t: &Tunnel, version: &str) -> String {
    t.wait_for_log(&format!("{version} ciphersuite: "), T)
}

/// A session must be refused by the handshake: no data back, the connection is closed (not
/// left hanging), the server ends its session as `reset` and never contacts the backend.
fn assert_handshake_refused(pair: &TunnelPair, echo: &Backend) {
    let p = probe(pair.entry(), b"must not get through\n", T);
    assert!(
        p.received.is_empty(),
        "a refused PSK session still delivered {} byte(s): {:?}",
        p.received.len(),
        String::from_utf8_lossy(&p.received)
    );
    assert_ne!(
        p.end,
        End::TimedOut,
        "a refused PSK session was left hanging instead of being closed"
    );
    let s = &pair.server.wait_close_counts(1, T)[0];
    // rstunnel says `reset`; stunnel4 says `reset/closed` here.
    assert!(
        s.how.starts_with("reset") && (s.sent_to_tls, s.sent_to_socket) == (0, 0),
        "the server's close line for a failed handshake: {s:?}"
    );
    assert!(
        pair.server
            .connection_problems(3)
            .iter()
            .any(|l| l.contains("SSL_accept")),
        "the server logs no LOG3 `SSL_accept: …` line for the failed handshake\n{}",
        pair.server.log_text()
    );
    assert_eq!(
        echo.connections(),
        0,
        "the backend was contacted although the PSK handshake failed"
    );
}

fn round_trip(label: &str, client: Program, server: Program, version: &str) {
    if client == Program::Stunnel4 || server == Program::Stunnel4 {
        tools::stunnel4();
    }
    let dir = TestDir::new(label);
    let secrets = write_secrets(&dir, "psk.txt", &server_secrets_text(), 0o600);
    let echo = Backend::echo();
    let pair = start_psk_pair(
        client,
        server,
        &dir,
        echo.addr(),
        &secrets,
        &secrets,
        version,
        version,
    );
    assert_echo_works(&pair, &echo, 11);
    let tls12 = version.contains("TLSv1.2");
    let v = if tls12 { "TLSv1.2" } else { "TLSv1.3" };
    for (name, t) in [("client", &pair.client), ("server", &pair.server)] {
        let line = ciphersuite_line(t, v);
        // TLS 1.2 names the key exchange; TLS 1.3 suites do not, but with no certificate on
        // either side the handshake can only have been authenticated by the PSK.
        if tls12 {
            assert!(
                line.contains("PSK-"),
                "{name}: the TLS 1.2 suite is not a PSK suite: {line}"
            );
        }
    }
    for t in [&pair.client, &pair.server] {
        assert!(
            !t.has_log("PSK identity not found"),
            "identity lookup failed although the session worked\n{}",
            t.log_text()
        );
    }
}

#[test]
fn psk_only_tls12_round_trip() {
    round_trip(
        "psk-12",
        Program::Rstunnel,
        Program::Rstunnel,
        "sslVersionMax = TLSv1.2",
    );
}

#[test]
fn psk_only_tls13_round_trip() {
    round_trip(
        "psk-13",
        Program::Rstunnel,
        Program::Rstunnel,
        "sslVersionMin = TLSv1.3",
    );
}

#[test]
fn stunnel4_client_to_rstunnel_psk_server_tls12() {
    round_trip(
        "psk-from-st4-12",
        Program::Stunnel4,
        Program::Rstunnel,
        "sslVersionMax = TLSv1.2",
    );
}

#[test]
fn stunnel4_client_to_rstunnel_psk_server_tls13() {
    round_trip(
        "psk-from-st4-13",
        Program::Stunnel4,
        Program::Rstunnel,
        "sslVersionMin = TLSv1.3",
    );
}

#[test]
fn rstunnel_psk_client_to_stunnel4_server_tls12() {
    round_trip(
        "psk-to-st4-12",
        Program::Rstunnel,
        Program::Stunnel4,
        "sslVersionMax = TLSv1.2",
    );
}

#[test]
fn rstunnel_psk_client_to_stunnel4_server_tls13() {
    round_trip(
        "psk-to-st4-13",
        Program::Rstunnel,
        Program::Stunnel4,
        "sslVersionMin = TLSv1.3",
    );
}

/// The client's file has a wrong key for alice (its first line) and the right ASCII key for
/// bob: `PSKidentity = bob` works, so the identity picks the line and the ASCII key is used
/// as is; without `PSKidentity` the first line (alice, wrong key) is used and fails.
#[test]
fn psk_identity_selects_the_line_and_defaults_to_the_first() {
    let dir = TestDir::new("psk-identity");
    let server_secrets = write_secrets(&dir, "server.psk", &server_secrets_text(), 0o600);
    let client_secrets = write_secrets(
        &dir,
        "client.psk",
        &format!("alice:{OTHER_KEY}\nbob:{BOB_KEY}\n"),
        0o600,
    );

    let echo = Backend::echo();
    let pair = start_psk_pair(
        Program::Rstunnel,
        Program::Rstunnel,
        &dir,
        echo.addr(),
        &server_secrets,
        &client_secrets,
        "",
        "PSKidentity = bob",
    );
    assert_echo_works(&pair, &echo, 12);
    drop(pair);
    drop(echo);

    let echo = Backend::echo();
    let pair = start_psk_pair(
        Program::Rstunnel,
        Program::Rstunnel,
        &dir,
        echo.addr(),
        &server_secrets,
        &client_secrets,
        "",
        "",
    );
    assert_handshake_refused(&pair, &echo);
}

/// An rstunnel pair with the usual server secrets and a client whose secrets file is
/// `client_line`, both with `version` lines: the handshake must fail (see
/// [`assert_handshake_refused`]). Returns what must outlive the checks that follow, in the
/// order of a `let` that drops the pair first.
fn refused_client(label: &str, client_line: &str, version: &str) -> (TestDir, Backend, TunnelPair) {
    let dir = TestDir::new(label);
    let server_secrets = write_secrets(&dir, "server.psk", &server_secrets_text(), 0o600);
    let client_secrets = write_secrets(&dir, "client.psk", client_line, 0o600);
    let echo = Backend::echo();
    let pair = start_psk_pair(
        Program::Rstunnel,
        Program::Rstunnel,
        &dir,
        echo.addr(),
        &server_secrets,
        &client_secrets,
        version,
        version,
    );
    assert_handshake_refused(&pair, &echo);
    (dir, echo, pair)
}

fn wrong_key(label: &str, version: &str) {
    let (_dir, _echo, pair) = refused_client(label, &format!("alice:{OTHER_KEY}\n"), version);
    assert!(
        !pair.server.has_log("PSK identity not found"),
        "alice is known to the server; only her key is wrong\n{}",
        pair.server.log_text()
    );
}

#[test]
fn wrong_key_fails_the_handshake_tls12() {
    wrong_key("psk-wrong-key-12", "sslVersionMax = TLSv1.2");
}

#[test]
fn wrong_key_fails_the_handshake_tls13() {
    wrong_key("psk-wrong-key-13", "sslVersionMin = TLSv1.3");
}

fn unknown_identity(label: &str, version: &str) {
    let (_dir, _echo, pair) = refused_client(label, &format!("carol:{ALICE_KEY}\n"), version);
    // rstunnel adds the identity (`…: carol`); stunnel4 adds `(session resumption?)`.
    pair.server.wait_for_log("PSK identity not found", T);
}

#[test]
fn unknown_identity_fails_and_is_logged_tls12() {
    unknown_identity("psk-unknown-id-12", "sslVersionMax = TLSv1.2");
}

#[test]
fn unknown_identity_fails_and_is_logged_tls13() {
    unknown_identity("psk-unknown-id-13", "sslVersionMin = TLSv1.3");
}

/// A 5-byte key on line 2: `rstunnel --check` refuses the config, exit 1, naming the file
/// and the line.
#[test]
fn short_key_is_a_config_error_naming_file_and_line() {
    let dir = TestDir::new("psk-short-key");
    let secrets = write_secrets(
        &dir,
        "short.psk",
        &format!("alice:{ALICE_KEY}\nshorty:0123456789\n"),
        0o600,
    );
    let conf = dir.write(
        "short.conf",
        format!(
            "foreground = yes\n[srv]\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:9\nPSKsecrets = {}\n",
            secrets.display()
        ),
    );
    let r = tools::run(
        &rstunnel_bin(),
        &["--check", conf.to_str().expect("utf-8 path")],
        T,
    );
    assert_eq!(
        r.status.code(),
        Some(1),
        "--check with a 5-byte PSK key must exit 1\n{}",
        r.describe()
    );
    let out = format!("{}{}", r.stdout, r.stderr);
    let want = format!("{}:2", secrets.display());
    assert!(
        out.contains(&want),
        "the error does not name the secrets file and line ({want:?})\n{}",
        r.describe()
    );

    // The same file with the short line removed is accepted: the key length was the reason.
    write_secrets(&dir, "short.psk", &format!("alice:{ALICE_KEY}\n"), 0o600);
    let r = tools::run(
        &rstunnel_bin(),
        &["--check", conf.to_str().expect("utf-8 path")],
        T,
    );
    assert_eq!(
        r.status.code(),
        Some(0),
        "--check with a valid PSK file must exit 0\n{}",
        r.describe()
    );
}

fn start_with_secrets_mode(label: &str, mode: u32) -> (TestDir, PathBuf, Tunnel) {
    let dir = TestDir::new(label);
    let secrets = write_secrets(&dir, "psk.txt", &server_secrets_text(), mode);
    let t = Tunnel::start(
        &dir,
        "server",
        &psk_server_body("127.0.0.1:9".parse().unwrap(), &secrets, ""),
    );
    // Startup is complete (files read) once this line is out.
    t.wait_for_log("Configuration successful", T);
    (dir, secrets, t)
}

#[test]
fn world_readable_secrets_file_is_warned_about() {
    let (_dir, secrets, t) = start_with_secrets_mode("psk-mode-644", 0o644);
    let want = format!("Insecure file permissions on {}", secrets.display());
    let line = t.wait_for_log(&want, T);
    let parsed = daemon::parse_log_line(&line).expect("a stunnel-format log line");
    assert_eq!(
        parsed.level, 4,
        "the permissions warning is LOG4 as in stunnel: {line}"
    );
}

#[test]
fn private_secrets_file_is_not_warned_about() {
    let (_dir, _secrets, t) = start_with_secrets_mode("psk-mode-600", 0o600);
    assert!(
        !t.has_log("Insecure file permissions"),
        "a 0600 secrets file was reported as insecure\n{}",
        t.log_text()
    );
}
