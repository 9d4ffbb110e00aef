//! Half-close passes through both tunnels in both directions (relay rule 6, src/relay.rs): a
//! side that has finished sending still receives, and the other side can keep sending.
//!
//! ```text
//! test ──plain──▶ rstunnel client [cli] ──TLS──▶ rstunnel server [srv] ──plain──▶ backend
//! ```
//!
//! Each case runs with TLS 1.3 and with TLS 1.2 (the close_notify handling differs: TLS 1.3
//! defines half-close, with TLS 1.2 OpenSSL still lets the side that received close_notify
//! write).

mod common;

use std::net::Shutdown;
use std::time::Duration;

use common::*;

const RESULT_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

const TLS13: &str = "sslVersionMin = TLSv1.3";
const TLS12: &str = "sslVersionMax = TLSv1.2";

/// The client sends 1 MiB and shuts down its write side; the backend replies only after that
/// EOF (with the digest of what it read); the reply must still reach the client.
fn client_closes_first(label: &str, version: &str) {
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let backend = Backend::digest_reply();
    let pair = TunnelPair::start(&dir, &pki, backend.addr(), "", version);

    let mut s = connect(pair.entry());
    let sent = send_payload(&mut s, 21, MIB).expect("sending into the client tunnel");
    s.shutdown(Shutdown::Write).unwrap();
    let reply = read_line(&mut s, 200).expect("reading the backend's reply after our EOF");
    let expected = format!("{}\n", sent.line());
    assert_eq!(
        String::from_utf8_lossy(&reply),
        expected,
        "after the client's EOF the backend's reply must still come back through both tunnels"
    );
    let rest = read_digest(&mut s).expect("reading until the tunnels close");
    assert_eq!(rest.bytes, 0, "nothing may follow the reply");
    assert_eq!(
        backend.next_result(RESULT_TIMEOUT),
        sent,
        "the backend did not get the client's bytes"
    );

    let n = expected.len() as u64;
    let c = &pair.client.wait_close_counts(1, LOG_TIMEOUT)[0];
    assert_eq!(
        (c.sent_to_tls, c.sent_to_socket),
        (MIB, n),
        "client tunnel close line"
    );
    let s = &pair.server.wait_close_counts(1, LOG_TIMEOUT)[0];
    assert_eq!(
        (s.sent_to_tls, s.sent_to_socket),
        (n, MIB),
        "server tunnel close line"
    );
}

/// The backend sends 256 KiB and shuts down its write side first; the client reads that to
/// EOF, *then* sends 1 MiB and shuts down; the backend must receive all of it.
fn backend_closes_first(label: &str, version: &str) {
    let greeting = 256 * KIB;
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let backend = Backend::greeter(31, greeting);
    let pair = TunnelPair::start(&dir, &pki, backend.addr(), "", version);

    let mut s = connect(pair.entry());
    let got = read_digest(&mut s).expect("reading the backend's data until its EOF");
    assert_eq!(
        got,
        payload_digest(31, greeting),
        "the backend's data did not arrive intact"
    );
    // Our write side is still open: the tunnels must keep carrying this direction.
    let sent = send_payload(&mut s, 32, MIB).expect("sending after the backend's EOF");
    s.shutdown(Shutdown::Write).unwrap();
    let got = backend.next_result(RESULT_TIMEOUT);
    assert_eq!(
        got, sent,
        "data sent after the backend's EOF must still reach the backend"
    );

    let c = &pair.client.wait_close_counts(1, LOG_TIMEOUT)[0];
    assert_eq!(
        (c.sent_to_tls, c.sent_to_socket),
        (MIB, greeting),
        "client tunnel close line"
    );
    let s = &pair.server.wait_close_counts(1, LOG_TIMEOUT)[0];
    assert_eq!(
        (s.sent_to_tls, s.sent_to_socket),
        (greeting, MIB),
        "server tunnel close line"
    );
}

#[test]
fn client_closes_first_tls13() {
    client_closes_first("hc-client-first-13", TLS13);
}

#[test]
fn client_closes_first_tls12() {
    client_closes_first("hc-client-first-12", TLS12);
}

#[test]
fn backend_closes_first_tls13() {
    backend_closes_first("hc-backend-first-13", TLS13);
}

#[test]
fn backend_closes_first_tls12() {
    backend_closes_first("hc-backend-first-12", TLS12);
}
