//! Nothing a peer sends can make the log grow without bound (src/repeats/): a source whose
//! sessions keep failing before they relay gets a few logged in full, then a count.
//!
//! A server tunnel at `debug = 7` (the harness's level, the noisiest) takes `FLOOD`
//! connections from 127.0.0.2 that each send an HTTP request instead of a ClientHello. The
//! test checks that the log stays small, that the count written on SIGUSR2 adds up with the
//! failures logged in full to exactly `FLOOD`, that a proven session from the same source
//! still has every line (held while it was unproven, written when it relayed), and that a
//! failure from another source is logged in full meanwhile. The same flood against stunnel4
//! in the same run gives its figure (it logs every failure: about 15 lines each at debug 7).

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::daemon::summary_count;
use common::process::{connector, echo_check, tls_close};
use common::*;

const FLOOD: usize = 200;
const WAIT: Duration = Duration::from_secs(10);
const FLOODER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A client that speaks HTTP to the TLS port and waits until the tunnel ends it.
fn wrong_protocol(from: Ipv4Addr, addr: SocketAddr) {
    let mut tcp = connect_from(from, addr, WAIT, WAIT).expect("connect");
    let _ = tcp.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest);
}

/// Sends `FLOOD` failed handshakes from 127.0.0.2 to a server tunnel run by `program`;
/// returns the tunnel (still running) and how many log lines the flood wrote.
fn flood(program: Program, dir: &TestDir, pki: &Pki, backend: &Backend) -> (Tunnel, usize) {
    let label = format!("{program:?}").to_lowercase();
    let body = server_body(backend.addr(), &pki.server.combined, "");
    let tunnel = Tunnel::start_program(program, dir, &label, &body);
    let addr = tunnel.addr("srv");
    tunnel.wait_for_log("Configuration successful", WAIT);
    let before = tunnel.log_lines().len();
    for _ in 0..FLOOD {
        wrong_protocol(FLOODER, addr);
    }
    // stunnel writes some lines after the client has seen the reset.
    std::thread::sleep(Duration::from_millis(300));
    let written = tunnel.log_lines().len() - before;
    (tunnel, written)
}

#[test]
fn failures_from_one_source_are_logged_as_a_count() {
    let dir = TestDir::new("log-flood");
    let pki = Pki::new(&dir);
    let backend = Backend::echo();
    let (_, stunnel_lines) = flood(Program::Stunnel4, &dir, &pki, &backend);
    let (tunnel, flood_lines) = flood(Program::Rstunnel, &dir, &pki, &backend);
    let addr = tunnel.addr("srv");
    let before = tunnel
        .log_lines()
        .iter()
        .position(|l| l.contains("accepted connection from 127.0.0.2:"))
        .expect("the flood was logged");

    // A client of the same source that completes its handshake is served, and none of
    // its lines is lost: they were held, then written once it relayed.
    let tcp = connect_from(FLOODER, addr, WAIT, WAIT).expect("connect");
    let mut tls = connector(&pki.ca_file)
        .connect("localhost", tcp)
        .expect("a proven client from the flooding address is served");
    echo_check(&mut tls, b"still served\n").expect("echo");
    tls_close(tls);
    let connected = tunnel.wait_for_logs("connected remote server from", 1, WAIT);
    assert_eq!(connected.len(), 1, "{connected:?}");

    // Another source is not affected by the first one's count.
    wrong_protocol(Ipv4Addr::LOCALHOST, addr);
    tunnel.wait_for_log("accepted connection from 127.0.0.1:", WAIT);

    tunnel.signal(libc::SIGUSR2);
    let summary = tunnel.wait_for_log(
        "more connection(s) from 127.0.0.2 failed before relaying",
        WAIT,
    );
    let lines = tunnel.log_lines();
    let accepted_from_flooder = lines[before..]
        .iter()
        .filter(|l| l.contains("accepted connection from 127.0.0.2:"))
        .count();
    // Every failure is either logged in full (its accepted line) or counted, once; the
    // one proven session has its accepted line too.
    assert_eq!(
        summary_count(&summary).expect("a count") + accepted_from_flooder - 1,
        FLOOD,
        "{summary}"
    );
    assert!(
        summary.contains("the last: SSL_accept:"),
        "the summary says why: {summary}"
    );
    println!(
        "summary: log flood-{FLOOD}-wrong-protocol | load={FLOOD} failed handshakes from one source at debug 7 | faults=wrong protocol | bad_inputs={FLOOD} | bytes_lost=0"
    );
    println!(
        "log lines written during the flood: rstunnel {flood_lines}, stunnel4 {stunnel_lines}"
    );
    assert!(
        flood_lines <= 100,
        "{flood_lines} lines for {FLOOD} failures: {:#?}",
        &lines[before..]
    );
}
