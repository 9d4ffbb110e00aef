//! Security checks of issue 8 against the built `rstunnel`, end to end on loopback:
//!
//! 1. A client-mode service that verifies nothing logs the LOG4 "needs authentication to
//!    prevent MITM attacks" warning at startup; services that verify (verifyChain, verifyPeer,
//!    `verify = 2`) do not.
//! 2. Private key material readable by "others" (mode bits 0o007) gets LOG4 `Insecure file
//!    permissions on PATH`: a separate `key =` file and a combined `cert =` file; mode 0600
//!    and 0640 (group only, as stunnel) get no warning.
//! 3. Peer-supplied strings cannot forge log lines: a TLS client sends SNI names holding
//!    newlines, ESC, CR and C1 controls followed by a fake `LOG3[1]: …` line, and certificates
//!    whose subject CN holds the same, presented to a `verify = 2` server (accepted and
//!    rejected) and by a server to a verifying client tunnel. Every captured line must be a
//!    well-formed log line without a control character, no line may start with the forged
//!    text, and where rstunnel logs the string its sanitized form (each control character
//!    becomes `.`, see `sanitize` in src/log.rs) must be there.
//!
//! Each test prints one `summary: sec <case> | load=… | faults=… | bad_inputs=N |
//! bytes_lost=N` line. Everything is bounded by socket timeouts and log waits of [`WAIT`].

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::daemon::parse_log_line;
use common::*;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{Ssl, SslContext, SslMethod, SslVerifyMode};
use openssl::x509::X509;

const WAIT: Duration = Duration::from_secs(10);
/// Socket timeout of the hand-made TLS clients: a stalled tunnel fails the test.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

fn summary(case: &str, load: &str, faults: &str, bad_inputs: u64, bytes_lost: u64) {
    println!(
        "summary: sec {case} | load={load} | faults={faults} | bad_inputs={bad_inputs} | bytes_lost={bytes_lost}"
    );
}

/// Waits for the end of startup, after which no more startup warnings can come.
fn wait_configured(t: &Tunnel) {
    t.wait_for_log("Configuration successful", WAIT);
}

/// Lines containing `pattern`, now.
fn lines_with(t: &Tunnel, pattern: &str) -> Vec<String> {
    t.log_lines()
        .into_iter()
        .filter(|l| l.contains(pattern))
        .collect()
}

/// One line containing `pattern` must exist, at LOG4; returns its text.
fn assert_one_warning(t: &Tunnel, pattern: &str) -> String {
    t.wait_for_log(pattern, WAIT);
    let found = lines_with(t, pattern);
    if found.len() != 1 {
        t.fail(&format!(
            "expected exactly one line with {pattern:?}, got {found:#?}"
        ));
    }
    let parsed = parse_log_line(&found[0])
        .unwrap_or_else(|| t.fail(&format!("not a stunnel-format log line: {:?}", found[0])));
    if parsed.level != 4 {
        t.fail(&format!(
            "expected LOG4 (warning), got LOG{}: {:?}",
            parsed.level, found[0]
        ));
    }
    parsed.text
}

fn assert_no_line(t: &Tunnel, pattern: &str) {
    let found = lines_with(t, pattern);
    if !found.is_empty() {
        t.fail(&format!(
            "expected no line with {pattern:?}, got {found:#?}"
        ));
    }
}

/// The injection checks on every line a tunnel wrote: each is a well-formed stunnel log
/// line, none holds a control character (C0, DEL or C1), and none has `forged` at the start
/// of its text (what an injected newline would produce). Returns the lines mentioning
/// `forged`, all of which passed.
fn assert_no_forgery(t: &Tunnel, forged: &str) -> Vec<String> {
    let mut mentions = Vec::new();
    for line in t.log_lines() {
        if let Some(c) = line.chars().find(|c| c.is_control()) {
            t.fail(&format!(
                "raw control character {c:?} reached the log: {line:?}"
            ));
        }
        let Some(parsed) = parse_log_line(&line) else {
            t.fail(&format!(
                "line is not a stunnel-format log line (injected?): {line:?}"
            ));
        };
        if parsed.text.starts_with(forged) || line.starts_with(forged) {
            t.fail(&format!("forged line in the log: {line:?}"));
        }
        if line.contains(forged) {
            mentions.push(line);
        }
    }
    mentions
}

/// A TLS client made with the `openssl` crate, verifying nothing (the peer is a test
/// tunnel); `sni` and a client certificate are optional.
fn tls_client(
    addr: SocketAddr,
    sni: Option<&str>,
    cert: Option<(&X509, &PKey<Private>)>,
) -> Result<openssl::ssl::SslStream<std::net::TcpStream>, String> {
    let mut b = SslContext::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    b.set_verify(SslVerifyMode::NONE);
    if let Some((c, k)) = cert {
        b.set_certificate(c).map_err(|e| e.to_string())?;
        b.set_private_key(k).map_err(|e| e.to_string())?;
    }
    let ctx = b.build();
    let mut ssl = Ssl::new(&ctx).map_err(|e| e.to_string())?;
    if let Some(name) = sni {
        // OpenSSL only checks the length of the name it sends: control bytes go out as-is.
        ssl.set_hostname(name)
            .map_err(|e| format!("set_hostname({name:?}): {e}"))?;
    }
    let tcp = std::net::TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    ssl.connect(tcp).map_err(|e| format!("handshake: {e}"))
}

/// Sends `data` over TLS to an echo behind the tunnel and reads it back; returns how many
/// bytes did not come back (0 when all did), or the error.
fn tls_echo(
    addr: SocketAddr,
    sni: Option<&str>,
    cert: Option<(&X509, &PKey<Private>)>,
    data: &[u8],
) -> Result<u64, String> {
    let mut s = tls_client(addr, sni, cert)?;
    s.write_all(data).map_err(|e| format!("write: {e}"))?;
    s.flush().map_err(|e| format!("flush: {e}"))?;
    let mut got = vec![0u8; data.len()];
    s.read_exact(&mut got).map_err(|e| format!("read: {e}"))?;
    let _ = s.shutdown();
    let _ = s.get_ref().shutdown(Shutdown::Both);
    if got != data {
        return Err("echo differs from what was sent".into());
    }
    Ok(0)
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Copies `from` to `name` in `dir` with `mode`.
fn copy_with_mode(dir: &TestDir, from: &Path, name: &str, mode: u32) -> PathBuf {
    let to = dir.write(name, std::fs::read(from).unwrap());
    set_mode(&to, mode);
    to
}

// ---------------------------------------------------------------------------------------
// 1. client mode without verification
// ---------------------------------------------------------------------------------------

const MITM: &str = "needs authentication to prevent MITM attacks";

#[test]
fn client_without_verification_warns_at_startup() {
    let dir = TestDir::new("sec-mitm-warning");
    let pki = Pki::new(&dir);
    let target = "127.0.0.1:9"; // never contacted: only startup is under test
    let body = format!(
        "client = yes\n\
         [noverify]\naccept = 127.0.0.1:0\nconnect = {target}\n\
         [chain]\naccept = 127.0.0.1:0\nconnect = {target}\nverifyChain = yes\nCAfile = {ca}\n\
         [peer]\naccept = 127.0.0.1:0\nconnect = {target}\nverifyPeer = yes\nCAfile = {srv}\n\
         [legacy]\naccept = 127.0.0.1:0\nconnect = {target}\nverify = 2\nCAfile = {ca}\n\
         [zero]\naccept = 127.0.0.1:0\nconnect = {target}\nverify = 0\nCAfile = {ca}\n",
        ca = pki.ca_file.display(),
        srv = pki.server.cert.display(),
    );
    let t = Tunnel::start(&dir, "client", &body);
    wait_configured(&t);
    let text = assert_one_warning(&t, "Service [noverify] needs authentication");
    assert_eq!(
        text,
        "Service [noverify] needs authentication to prevent MITM attacks: the client verifies \
         no server certificate (set verifyChain or verifyPeer with CAfile)"
    );
    // `verify = 0` checks nothing either, even with a CAfile.
    assert_one_warning(&t, "Service [zero] needs authentication");
    for verified in ["chain", "peer", "legacy"] {
        assert_no_line(&t, &format!("Service [{verified}] {MITM}"));
    }
    assert_eq!(lines_with(&t, MITM).len(), 2, "{}", t.log_text());

    // A server-mode service never gets it, whatever it verifies.
    let backend = Backend::echo();
    let srv = Tunnel::server(&dir, &pki, backend.addr(), "");
    wait_configured(&srv);
    assert_no_line(&srv, MITM);
    summary(
        "mitm-warning",
        "5 client services + 1 server, startup only",
        "client services verifying nothing (none, verify = 0)",
        2,
        0,
    );
}

// ---------------------------------------------------------------------------------------
// 2. key files readable by others
// ---------------------------------------------------------------------------------------

#[test]
fn key_files_readable_by_others_are_warned_about() {
    let dir = TestDir::new("sec-key-perms");
    let pki = Pki::new(&dir);
    let backend = Backend::echo();
    let cert = pki.server.cert.display().to_string();
    let key_644 = copy_with_mode(&dir, &pki.server.key, "key-644.key", 0o644);
    let key_604 = copy_with_mode(&dir, &pki.server.key, "key-604.key", 0o604);
    let key_600 = copy_with_mode(&dir, &pki.server.key, "key-600.key", 0o600);
    let key_640 = copy_with_mode(&dir, &pki.server.key, "key-640.key", 0o640);
    let pem_644 = copy_with_mode(&dir, &pki.server.combined, "both-644.pem", 0o644);
    let pem_600 = copy_with_mode(&dir, &pki.server.combined, "both-600.pem", 0o600);
    let sections = [
        (
            "k644",
            format!("cert = {cert}\nkey = {}", key_644.display()),
        ),
        (
            "k604",
            format!("cert = {cert}\nkey = {}", key_604.display()),
        ),
        (
            "k600",
            format!("cert = {cert}\nkey = {}", key_600.display()),
        ),
        (
            "k640",
            format!("cert = {cert}\nkey = {}", key_640.display()),
        ),
        ("p644", format!("cert = {}", pem_644.display())),
        ("p600", format!("cert = {}", pem_600.display())),
    ];
    let mut body = String::new();
    for (name, tls) in &sections {
        body.push_str(&format!(
            "[{name}]\naccept = 127.0.0.1:0\nconnect = {}\n{tls}\n",
            backend.addr()
        ));
    }
    let t = Tunnel::start(&dir, "server", &body);
    wait_configured(&t);
    for insecure in [&key_644, &key_604, &pem_644] {
        let expected = format!("Insecure file permissions on {}", insecure.display());
        assert_eq!(assert_one_warning(&t, &expected), expected);
    }
    for fine in [&key_600, &key_640, &pem_600] {
        assert_no_line(
            &t,
            &format!("Insecure file permissions on {}", fine.display()),
        );
    }
    assert_eq!(lines_with(&t, "Insecure file permissions").len(), 3);
    // A warning, not a refusal: the service with the 0644 key serves TLS.
    let payload = payload(8, 4096);
    let lost = tls_echo(t.addr("k644"), None, None, &payload)
        .unwrap_or_else(|e| t.fail(&format!("TLS through [k644]: {e}")));
    summary(
        "key-permissions",
        "6 server services, 1 TLS echo of 4096 bytes",
        "key files mode 0644/0604 (key =) and 0644 (cert+key)",
        3,
        lost,
    );
}

// ---------------------------------------------------------------------------------------
// 3a. hostile SNI names
// ---------------------------------------------------------------------------------------

const FORGED_SNI: &str = "LOG3[1]: forged-sni";

/// `[srv]` (backend `a`) with a virtual host `[vh]` for `*.example.org` (backend `b`).
fn sni_server(dir: &TestDir, pki: &Pki, a: &Backend, b: &Backend) -> Tunnel {
    let body = format!(
        "[srv]\naccept = 127.0.0.1:0\nconnect = {}\ncert = {}\n\n\
         [vh]\nsni = srv:*.example.org\nconnect = {}\ncert = {}\n",
        a.addr(),
        pki.server.combined.display(),
        b.addr(),
        pki.server.combined.display()
    );
    Tunnel::start_waiting_for(Program::Rstunnel, dir, "server", &body, &["srv"])
}

#[test]
fn hostile_sni_cannot_forge_log_lines() {
    let dir = TestDir::new("sec-sni");
    let pki = Pki::new(&dir);
    let a = Backend::echo();
    let b = Backend::echo();
    let t = sni_server(&dir, &pki, &a, &b);
    // (name, goes to the virtual host)
    let names = [
        (format!("x\n{FORGED_SNI}\x1b[31m.example.org"), true),
        (format!("\r{FORGED_SNI}\x07\x7f"), false),
        (format!("y\r\n{FORGED_SNI}\u{9b}2J.example.org"), true),
    ];
    let payload = payload(3, 1000);
    let mut lost = 0;
    for (i, (name, vhost)) in names.iter().enumerate() {
        let before = (a.connections(), b.connections());
        lost += tls_echo(t.addr("srv"), Some(name), None, &payload)
            .unwrap_or_else(|e| t.fail(&format!("TLS with SNI {name:?}: {e}")));
        let after = (a.connections(), b.connections());
        let expected = if *vhost {
            (before.0, before.1 + 1)
        } else {
            (before.0 + 1, before.1)
        };
        assert_eq!(after, expected, "SNI {name:?} routed wrongly");
        t.wait_close_counts(i + 1, WAIT);
    }
    t.wait_for_logs("SNI: switched to service [vh]", 2, WAIT);
    let mentions = assert_no_forgery(&t, FORGED_SNI);
    // rstunnel does not log the name a client sent (stunnel 5.68 does, at LOG7), so there
    // is no sanitized form to find; should it start to, the checks above still hold.
    for m in &mentions {
        assert!(m.contains(&format!(".{FORGED_SNI}")), "unsanitized: {m:?}");
    }
    summary(
        "sni",
        "3 TLS sessions of 1000 bytes, debug = 7",
        "SNI with LF, CR, ESC, BEL, DEL, C1 CSI and a forged LOG3 line",
        names.len() as u64,
        lost,
    );
}

/// A multi-byte UTF-8 character where the virtual-host pattern's suffix starts: the name
/// must simply not match (and go to `[srv]`), the daemon must keep serving.
#[test]
fn sni_with_multibyte_character_does_not_stop_the_daemon() {
    let dir = TestDir::new("sec-sni-utf8");
    let pki = Pki::new(&dir);
    let a = Backend::echo();
    let b = Backend::echo();
    let mut t = sni_server(&dir, &pki, &a, &b);
    // 13 bytes; "example.org" is 11, so byte 2 (inside U+009B, a C1 control) is where the
    // suffix comparison starts.
    let name = "a\u{9b}xample.org";
    let payload = payload(4, 1000);
    let hostile = tls_echo(t.addr("srv"), Some(name), None, &payload);
    // Whatever that session did, the daemon must still be there and serve the next one.
    if let Some(st) = t.wait_exit(Duration::from_millis(300)) {
        t.fail(&format!(
            "daemon died ({st}) after a client sent SNI {name:?}; that session: {hostile:?}"
        ));
    }
    let lost = tls_echo(t.addr("srv"), Some("ok.example.org"), None, &payload)
        .unwrap_or_else(|e| t.fail(&format!("next session after hostile SNI: {e}")));
    let hostile_lost = hostile.unwrap_or_else(|e| t.fail(&format!("TLS with SNI {name:?}: {e}")));
    assert_eq!(
        (a.connections(), b.connections()),
        (1, 1),
        "the hostile name must go to [srv], ok.example.org to [vh]"
    );
    assert_no_forgery(&t, "xample.org");
    summary(
        "sni-utf8",
        "2 TLS sessions of 1000 bytes",
        "SNI with a multi-byte C1 character at the pattern suffix boundary",
        1,
        lost + hostile_lost,
    );
}

// ---------------------------------------------------------------------------------------
// 3b. hostile certificate subjects
// ---------------------------------------------------------------------------------------

const FORGED_CN: &str = "LOG3[1]: forged-cn";
/// CN with LF, ESC, CR and a C1 CSI around a forged line (UTF8String, 30 characters).
fn hostile_cn() -> String {
    format!("e\n{FORGED_CN}\x1b[31m\r\u{9b}2J")
}
/// What `sanitize` makes of [`hostile_cn`]: every control character becomes `.`.
fn sanitized_cn() -> String {
    format!("e.{FORGED_CN}.[31m..2J")
}

#[test]
fn hostile_certificate_subjects_are_sanitized() {
    let dir = TestDir::new("sec-subject");
    let pki = Pki::new(&dir);
    let good = pki.ca.issue(&hostile_cn(), &[], KeyKind::EcP256);
    let bad = pki.wrong_ca.issue(&hostile_cn(), &[], KeyKind::EcP256);
    assert_eq!(
        good.cert
            .subject_name()
            .entries_by_nid(openssl::nid::Nid::COMMONNAME)
            .next()
            .unwrap()
            .data()
            .to_string()
            .unwrap(),
        hostile_cn(),
        "the certificate must carry the raw control characters"
    );
    let backend = Backend::echo();
    let srv = Tunnel::server(
        &dir,
        &pki,
        backend.addr(),
        &format!("verify = 2\nCAfile = {}", pki.ca_file.display()),
    );
    let payload = payload(5, 2048);
    let expected = format!("O=rstunnel tests, CN={}", sanitized_cn());

    // Accepted: the subject is logged at LOG5.
    let lost = tls_echo(
        srv.addr("srv"),
        None,
        Some((&good.cert, &good.key)),
        &payload,
    )
    .unwrap_or_else(|e| srv.fail(&format!("client with hostile CN (trusted CA): {e}")));
    let accepted = srv.wait_for_log("Certificate accepted at depth=0: ", WAIT);
    assert_eq!(
        parse_log_line(&accepted).map(|l| (l.level, l.text)),
        Some((5, format!("Certificate accepted at depth=0: {expected}"))),
        "{accepted:?}"
    );

    // Rejected: the subject is logged at LOG4 with the reason.
    let refused = tls_echo(srv.addr("srv"), None, Some((&bad.cert, &bad.key)), &payload);
    assert!(
        refused.is_err(),
        "an untrusted client certificate got through"
    );
    let rejected = srv.wait_for_log("Rejected by CERT at depth=0: ", WAIT);
    let parsed = parse_log_line(&rejected).unwrap();
    assert_eq!(parsed.level, 4, "{rejected:?}");
    assert!(
        parsed
            .text
            .starts_with(&format!("Rejected by CERT at depth=0: {expected}: ")),
        "{rejected:?}"
    );
    srv.wait_close_counts(1, WAIT);
    let mentions = assert_no_forgery(&srv, FORGED_CN);
    assert!(mentions.len() >= 2, "{mentions:#?}");
    for m in &mentions {
        assert!(m.contains(&sanitized_cn()), "unsanitized subject: {m:?}");
    }

    // The other direction: a server presenting a hostile CN to a verifying client tunnel.
    let files = good.write(&dir, "hostile-server");
    let srv2 = Tunnel::start(
        &dir,
        "server2",
        &server_body(backend.addr(), &files.combined, ""),
    );
    let cli = Tunnel::start(
        &dir,
        "client",
        &client_body(
            srv2.addr("srv"),
            &format!("verifyChain = yes\nCAfile = {}", pki.ca_file.display()),
        ),
    );
    let echoed = echo_session(cli.addr("cli"), &payload)
        .unwrap_or_else(|e| cli.fail(&format!("through the client tunnel: {e}")));
    assert_eq!(echoed, payload);
    let accepted = cli.wait_for_log("Certificate accepted at depth=0: ", WAIT);
    assert!(accepted.ends_with(&expected), "{accepted:?}");
    cli.wait_close_counts(1, WAIT);
    for m in assert_no_forgery(&cli, FORGED_CN) {
        assert!(m.contains(&sanitized_cn()), "unsanitized subject: {m:?}");
    }
    assert_no_forgery(&srv2, FORGED_CN);
    summary(
        "cert-subject",
        "3 TLS sessions of 2048 bytes (client cert accepted, rejected; server cert)",
        "certificate CN with LF, CR, ESC, C1 CSI and a forged LOG3 line",
        3,
        lost + (payload.len() - echoed.len()) as u64,
    );
}
