//! rstunnel against OpenSSL's own command-line peers:
//!
//! * `openssl s_client` → rstunnel server → backend: TLS 1.3 by default, the certificate chain
//!   verifies against the CA, the configured `ciphers`/`ciphersuites`/`sslVersionMin`/
//!   `sslVersionMax` are what is negotiated (or refused);
//! * rstunnel client → `openssl s_server -rev`: the client tunnel verifies s_server's
//!   certificate (`verifyChain`, `checkHost`) and carries a line both ways.
//!
//! `openssl` is installed by scripts/deps.sh; its absence fails these tests.

mod common;

use std::ffi::OsStr;
use std::time::Duration;

use common::tools::RunResult;
use common::*;

const RUN_TIMEOUT: Duration = Duration::from_secs(20);
const LINE: &str = "hello through rstunnel\n";

/// `openssl s_client` to `port` with `args`, verifying the chain against the CA and the host
/// name `localhost`; sends [`LINE`] and (with `-ign_eof`) reads until the server closes.
fn s_client(pki: &Pki, port: u16, args: &[&str]) -> RunResult {
    let verify = ["-servername", "localhost", "-CAfile"].map(OsStr::new);
    let rest = [
        "-verify_return_error",
        "-verify_hostname",
        "localhost",
        "-ign_eof",
    ];
    let all: Vec<&OsStr> = verify
        .into_iter()
        .chain([pki.ca_file.as_os_str()])
        .chain(rest.iter().chain(args).map(OsStr::new))
        .collect();
    openssl_cli::s_client(port, &all, LINE.as_bytes(), RUN_TIMEOUT)
}

fn assert_echoed(r: &RunResult, server: &Tunnel) {
    if !r.stdout.contains(LINE.trim_end()) || !r.status.success() {
        server.fail(&format!(
            "s_client did not get its line echoed back\n{}",
            r.describe()
        ));
    }
    assert!(
        r.stdout.contains("Verify return code: 0 (ok)"),
        "the certificate chain must verify\n{}",
        r.describe()
    );
}

#[test]
fn s_client_tls13_line_is_echoed() {
    let dir = TestDir::new("s-client-13");
    let pki = Pki::new(&dir);
    let backend = Backend::line_echo_once();
    let srv = Tunnel::server(&dir, &pki, backend.addr(), "");
    let r = s_client(&pki, srv.port("srv"), &["-tls1_3"]);
    assert_echoed(&r, &srv);
    assert!(
        r.stdout.contains("New, TLSv1.3, Cipher is "),
        "expected a TLSv1.3 session\n{}",
        r.describe()
    );
    assert_eq!(
        backend.next_result(RUN_TIMEOUT),
        Digest::of(LINE.as_bytes()),
        "backend got the line"
    );
}

#[test]
fn s_client_tls12_gets_configured_cipher() {
    let dir = TestDir::new("s-client-12");
    let pki = Pki::new(&dir); // EC keys, hence ECDSA
    let backend = Backend::line_echo_once();
    let srv = Tunnel::server(
        &dir,
        &pki,
        backend.addr(),
        "sslVersionMax = TLSv1.2\nciphers = ECDHE-ECDSA-AES128-GCM-SHA256\n",
    );
    let r = s_client(&pki, srv.port("srv"), &[]);
    assert_echoed(&r, &srv);
    assert!(
        r.stdout
            .contains("New, TLSv1.2, Cipher is ECDHE-ECDSA-AES128-GCM-SHA256"),
        "sslVersionMax = TLSv1.2 and ciphers must decide the session\n{}",
        r.describe()
    );
}

#[test]
fn s_client_tls13_gets_configured_ciphersuite() {
    let dir = TestDir::new("s-client-suite");
    let pki = Pki::new(&dir);
    let backend = Backend::line_echo_once();
    let srv = Tunnel::server(
        &dir,
        &pki,
        backend.addr(),
        "ciphersuites = TLS_CHACHA20_POLY1305_SHA256\n",
    );
    let r = s_client(&pki, srv.port("srv"), &["-tls1_3"]);
    assert_echoed(&r, &srv);
    assert!(
        r.stdout
            .contains("New, TLSv1.3, Cipher is TLS_CHACHA20_POLY1305_SHA256"),
        "ciphersuites must decide the TLS 1.3 suite\n{}",
        r.describe()
    );
}

#[test]
fn tls13_only_server_refuses_tls12_client() {
    let dir = TestDir::new("s-client-refused");
    let pki = Pki::new(&dir);
    let backend = Backend::line_echo_once();
    let srv = Tunnel::server(&dir, &pki, backend.addr(), "sslVersionMin = TLSv1.3\n");
    let r = s_client(&pki, srv.port("srv"), &["-tls1_2"]);
    assert!(
        !r.status.success(),
        "a TLS 1.2 client must be refused by sslVersionMin = TLSv1.3\n{}",
        r.describe()
    );
    assert!(
        !r.stdout.contains(LINE.trim_end()),
        "no data may pass\n{}",
        r.describe()
    );
    assert_eq!(
        backend.connections(),
        0,
        "the backend must not be contacted for a refused handshake"
    );
}

#[test]
fn client_tunnel_to_s_server() {
    let dir = TestDir::new("s-server");
    let pki = Pki::new(&dir);
    let cert = pki.server.combined.to_string_lossy().into_owned();
    let args = ["-cert", &cert, "-naccept", "1", "-rev"];
    let (s_server, port) = openssl_cli::s_server(&dir, "s_server", &args);
    let verify = format!(
        "verifyChain = yes\nCAfile = {}\ncheckHost = localhost\n",
        pki.ca_file.display()
    );
    let client = Tunnel::start(
        &dir,
        "client",
        &client_body(([127, 0, 0, 1], port).into(), &verify),
    );
    let mut s = connect(client.addr("cli"));
    use std::io::Write;
    s.write_all(LINE.as_bytes()).unwrap();
    let got = read_line(&mut s, 1000).expect("reading s_server's answer");
    let reversed: String = LINE.trim_end().chars().rev().collect();
    if String::from_utf8_lossy(&got) != format!("{reversed}\n") {
        client.fail(&format!(
            "expected s_server -rev to answer {reversed:?}, got {:?}\n--- s_server ---\n{}",
            String::from_utf8_lossy(&got),
            s_server.log_text()
        ));
    }
}
