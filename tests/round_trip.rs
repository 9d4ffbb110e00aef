//! Bulk data through a client tunnel and a server tunnel arrives intact, in both directions,
//! and each tunnel's `Connection closed: …` line reports the bytes it actually moved.
//!
//! ```text
//! test ──plain──▶ rstunnel client [cli] ──TLS──▶ rstunnel server [srv] ──plain──▶ backend
//! ```

mod common;

use std::io::Read;
use std::net::Shutdown;
use std::time::Duration;

use common::daemon::CloseCounts;
use common::*;

const RESULT_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits for the one close line of each tunnel and checks its byte counts: the client tunnel
/// sent `up` bytes to TLS and `down` to its socket, the server tunnel the other way round.
fn assert_close_lines(pair: &TunnelPair, up: u64, down: u64) -> (CloseCounts, CloseCounts) {
    let c = pair.client.wait_close_counts(1, LOG_TIMEOUT).remove(0);
    assert_eq!(
        (c.sent_to_tls, c.sent_to_socket),
        (up, down),
        "client tunnel close line: {up} byte(s) should have gone to TLS, {down} to the socket"
    );
    let s = pair.server.wait_close_counts(1, LOG_TIMEOUT).remove(0);
    assert_eq!(
        (s.sent_to_tls, s.sent_to_socket),
        (down, up),
        "server tunnel close line: {down} byte(s) should have gone to TLS, {up} to the socket"
    );
    (c, s)
}

/// Uploads `len` bytes to a sink behind both tunnels; checks what the sink got and the close
/// lines of both tunnels.
fn upload(label: &str, seed: u64, len: u64) {
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let sink = Backend::sink();
    let pair = TunnelPair::start(&dir, &pki, sink.addr(), "", "");

    let mut s = connect(pair.entry());
    let sent = send_payload(&mut s, seed, len).expect("sending into the client tunnel");
    s.shutdown(Shutdown::Write).unwrap();
    // The sink closes after our EOF; that close must travel back to us.
    let back = read_digest(&mut s).expect("reading until the tunnels close the connection");
    assert_eq!(
        back.bytes, 0,
        "the sink sends nothing, yet the client received data"
    );

    let got = sink.next_result(RESULT_TIMEOUT);
    assert_eq!(
        got, sent,
        "the sink did not receive exactly what the client sent"
    );
    assert_eq!(
        sink.connections(),
        1,
        "exactly one backend connection per session"
    );

    let (c, s) = assert_close_lines(&pair, len, 0);
    assert_eq!(
        (c.how.as_str(), s.how.as_str()),
        ("closed", "closed"),
        "an orderly close is logged as `closed`"
    );
}

#[test]
fn upload_1mib_arrives_intact() {
    upload("upload-1mib", 1, MIB);
}

#[test]
fn upload_64mib_arrives_intact() {
    upload("upload-64mib", 64, 64 * MIB);
}

/// The other direction: a backend sends 64 MiB and closes; the client reads it all.
#[test]
fn download_64mib_arrives_intact() {
    let len = 64 * MIB;
    let dir = TestDir::new("download-64mib");
    let pki = Pki::new(&dir);
    let source = Backend::source(65, len);
    let pair = TunnelPair::start(&dir, &pki, source.addr(), "", "");

    let mut s = connect(pair.entry());
    let got = read_digest(&mut s).expect("reading the download until EOF");
    let sent = source.next_result(RESULT_TIMEOUT);
    assert_eq!(
        got, sent,
        "the client did not receive exactly what the backend sent"
    );
    assert_eq!(got, payload_digest(65, len));
    drop(s);

    assert_close_lines(&pair, 0, len);
}

/// 16 MiB echoed while it is still being sent: both directions of both tunnels busy at once,
/// with back-pressure (nothing can be buffered whole).
#[test]
fn echo_16mib_both_directions_at_once() {
    let len = 16 * MIB;
    let dir = TestDir::new("echo-16mib");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let pair = TunnelPair::start(&dir, &pki, echo.addr(), "", "");

    let mut s = connect(pair.entry());
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let d = send_payload(&mut w, 16, len);
        let _ = w.shutdown(Shutdown::Write);
        d
    });
    let got = read_digest(&mut s).expect("reading the echo");
    let sent = writer.join().unwrap().expect("sending");
    assert_eq!(
        got, sent,
        "the echo through both tunnels differs from what was sent"
    );
    assert_eq!(echo.next_result(RESULT_TIMEOUT), sent);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);

    assert_close_lines(&pair, len, len);
}
