//! rstunnel interoperates with the real stunnel (Debian 12 `stunnel4` 5.68) in both roles, with
//! certificates checked on both ends (server: `verifyChain` + `CAfile`; client: `cert`,
//! `verifyChain`, `CAfile`, `checkHost`), over TLS 1.3 and TLS 1.2:
//!
//! ```text
//! test ──▶ rstunnel client ──TLS──▶ stunnel4 server ──▶ echo
//! test ──▶ stunnel4 client ──TLS──▶ rstunnel server ──▶ echo
//! ```
//!
//! Data is checked both ways (an echoed 4 MiB payload, then half-close with a reply after EOF).
//! `stunnel4` is installed by scripts/deps.sh; its absence fails these tests.

mod common;

use std::net::Shutdown;
use std::time::Duration;

use common::*;

const RESULT_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

fn run(label: &str, client: Program, server: Program, version: &str) {
    // Resolve stunnel4 first, so a missing one fails with the install hint.
    tools::stunnel4();
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let server_extra = format!("verifyChain = yes\nCAfile = {}\n", pki.ca_file.display());
    let client_extra = format!(
        "cert = {}\nverifyChain = yes\nCAfile = {}\ncheckHost = right.name\n{version}\n",
        pki.client.combined.display(),
        pki.ca_file.display()
    );

    // Echo, 4 MiB, both directions at once.
    let echo = Backend::echo();
    let pair = TunnelPair::start_programs(
        (client, server),
        &dir,
        &pki,
        echo.addr(),
        (&server_extra, &client_extra),
    );
    let data = payload(4, 4 * MIB as usize);
    let got = echo_session(pair.entry(), &data).expect("echo session across implementations");
    assert!(
        got == data,
        "echo across implementations differs ({} bytes back, {} sent)",
        got.len(),
        data.len()
    );
    for (name, t) in [("client", &pair.client), ("server", &pair.server)] {
        let c = &t.wait_close_counts(1, LOG_TIMEOUT)[0];
        assert_eq!(
            (c.sent_to_tls, c.sent_to_socket),
            (4 * MIB, 4 * MIB),
            "{name} close line"
        );
    }
    drop(pair);

    // Half-close: the reply comes after the client's EOF.
    let digest = Backend::digest_reply();
    let pair = TunnelPair::start_programs(
        (client, server),
        &dir,
        &pki,
        digest.addr(),
        (&server_extra, &client_extra),
    );
    let mut s = connect(pair.entry());
    let sent = send_payload(&mut s, 5, MIB).expect("sending");
    s.shutdown(Shutdown::Write).unwrap();
    let reply = read_line(&mut s, 200).expect("reading the reply after EOF");
    assert_eq!(
        String::from_utf8_lossy(&reply),
        format!("{}\n", sent.line()),
        "reply after half-close"
    );
    assert_eq!(digest.next_result(RESULT_TIMEOUT), sent);
}

#[test]
fn rstunnel_client_to_stunnel4_server_tls13() {
    run(
        "to-stunnel4-13",
        Program::Rstunnel,
        Program::Stunnel4,
        "sslVersionMin = TLSv1.3",
    );
}

#[test]
fn rstunnel_client_to_stunnel4_server_tls12() {
    run(
        "to-stunnel4-12",
        Program::Rstunnel,
        Program::Stunnel4,
        "sslVersionMax = TLSv1.2",
    );
}

#[test]
fn stunnel4_client_to_rstunnel_server_tls13() {
    run(
        "from-stunnel4-13",
        Program::Stunnel4,
        Program::Rstunnel,
        "sslVersionMin = TLSv1.3",
    );
}

#[test]
fn stunnel4_client_to_rstunnel_server_tls12() {
    run(
        "from-stunnel4-12",
        Program::Stunnel4,
        Program::Rstunnel,
        "sslVersionMax = TLSv1.2",
    );
}
