//! Regression tests for three session-shutdown defects (relay rules 6 and 8, src/relay.rs):
//!
//! * D1: `TIMEOUTclose` is an *inactivity* limit once a session is half-closed, not a
//!   deadline: a slow but live transfer after one side's close_notify is never cut.
//! * D2: after the TLS peer's close_notify, a plain peer that keeps its socket open is closed
//!   after `TIMEOUTclose` of inactivity (a normal close), not held until `TIMEOUTidle`.
//! * D3: a plain peer that half-closes and then never reads while the TLS side floods cannot
//!   hold the session forever: the blocked write to it gives up after `TIMEOUTidle` (reset).
//!
//! ```text
//! test ──plain──▶ rstunnel client [cli] ──TLS──▶ rstunnel server [srv] ──plain──▶ backend
//! test ──plain──▶ rstunnel client [cli] ──TLS──▶ in-test TLS server (D2)
//! ```
//!
//! Bounds are generous on the late side (loaded CI machines) and strict on the early side,
//! as in `timeouts.rs`.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};

use common::daemon::{parse_close_line, CloseCounts};
use common::*;

const RESULT_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits for the first `Connection …: … byte(s)` line of `t`, up to `timeout` after `since`.
/// Returns it parsed with the time from `since` until the test saw it, or `None`.
fn wait_close_since(
    t: &Tunnel,
    since: Instant,
    timeout: Duration,
) -> Option<(CloseCounts, Duration)> {
    let left = timeout.saturating_sub(since.elapsed());
    let line = t.try_wait_for(left, |l| parse_close_line(l).is_some())?;
    let elapsed = since.elapsed();
    Some((parse_close_line(&line).unwrap(), elapsed))
}

// ---------------------------------------------------------------------------------------
// D1: a slow transfer after close_notify outlives TIMEOUTclose.

const TRICKLE_CHUNK: usize = 1000;
const TRICKLE_CHUNKS: usize = 34;
const TRICKLE_PERIOD: Duration = Duration::from_millis(150);
const TRICKLE_SEED: u64 = 71;

/// Reads the request to EOF, then sends `TRICKLE_CHUNKS` × 1000 bytes, one chunk every
/// 150 ms (about 5 s in all, far below a 2 s gap at any point), and shuts down its write
/// side. Reports the digest of the request, then the digest of everything it sent.
fn trickle_backend() -> Backend {
    Backend::spawn(|mut s, r| {
        let request = read_digest(&mut s)?;
        r.report(request);
        let data = payload(TRICKLE_SEED, TRICKLE_CHUNK * TRICKLE_CHUNKS);
        for chunk in data.chunks(TRICKLE_CHUNK) {
            s.write_all(chunk)?;
            std::thread::sleep(TRICKLE_PERIOD);
        }
        s.shutdown(Shutdown::Write)?;
        r.report(Digest::of(&data));
        Ok(())
    })
}

fn slow_transfer_outlives_timeout_close(label: &str, version: &str) {
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let backend = trickle_backend();
    // Both tunnels: the client tunnel waits for TLS input after sending close_notify, the
    // server tunnel waits for backend input after receiving it.
    let extra = format!("TIMEOUTclose = 2\n{version}");
    let pair = TunnelPair::start(&dir, &pki, backend.addr(), &extra, &extra);

    let request = b"request\n";
    let mut s = connect(pair.entry());
    s.write_all(request).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let start = Instant::now();
    let got = read_digest(&mut s).expect("reading the trickled reply until EOF");
    let took = start.elapsed();

    let total = (TRICKLE_CHUNK * TRICKLE_CHUNKS) as u64;
    let expected = payload_digest(TRICKLE_SEED, total);
    if got != expected {
        pair.client.fail(&format!(
            "TIMEOUTclose = 2 cut a live half-closed transfer: the client received {got:?} of \
             {expected:?} over {took:?} (the backend sent 1000 bytes every {TRICKLE_PERIOD:?}); \
             backend errors: {:?}",
            backend.errors()
        ));
    }
    // Otherwise the test proves nothing: the transfer must have outlasted TIMEOUTclose.
    assert!(
        took >= Duration::from_secs(4),
        "the trickle took only {took:?}; it must last well over TIMEOUTclose = 2 s"
    );
    assert_eq!(
        backend.next_result(RESULT_TIMEOUT),
        Digest::of(request),
        "the backend did not get the request"
    );
    assert_eq!(
        backend.next_result(RESULT_TIMEOUT),
        expected,
        "the backend did not finish sending"
    );
    assert!(
        backend.errors().is_empty(),
        "backend errors: {:?}",
        backend.errors()
    );

    let c = &pair.client.wait_close_counts(1, LOG_TIMEOUT)[0];
    assert_eq!(
        (c.how.as_str(), c.sent_to_tls, c.sent_to_socket),
        ("closed", request.len() as u64, total),
        "client tunnel close line"
    );
    let v = &pair.server.wait_close_counts(1, LOG_TIMEOUT)[0];
    assert_eq!(
        (v.how.as_str(), v.sent_to_tls, v.sent_to_socket),
        ("closed", total, request.len() as u64),
        "server tunnel close line"
    );
}

#[test]
fn d1_slow_half_closed_transfer_outlives_timeout_close_tls13() {
    slow_transfer_outlives_timeout_close("d1-trickle-13", "sslVersionMin = TLSv1.3");
}

#[test]
fn d1_slow_half_closed_transfer_outlives_timeout_close_tls12() {
    slow_transfer_outlives_timeout_close("d1-trickle-12", "sslVersionMax = TLSv1.2");
}

// ---------------------------------------------------------------------------------------
// D2: after the TLS peer's close_notify, an open plain side is closed after TIMEOUTclose.

/// A one-connection TLS server (certificate `pki.server`): reads one line, answers
/// `bye\n`, sends close_notify and closes the TCP connection at once. Sends the line it
/// read (or what went wrong) on the returned channel. Gives up after 30 s without a client.
fn bye_tls_server(pki: &Pki) -> (SocketAddr, Receiver<Result<Vec<u8>, String>>) {
    let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    acceptor
        .set_certificate_chain_file(&pki.server.cert)
        .unwrap();
    acceptor
        .set_private_key_file(&pki.server.key, SslFiletype::PEM)
        .unwrap();
    let acceptor = acceptor.build();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind TLS server");
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let serve = || -> Result<Vec<u8>, String> {
            let deadline = Instant::now() + RESULT_TIMEOUT;
            let tcp = loop {
                match listener.accept() {
                    Ok((tcp, _)) => break tcp,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if Instant::now() >= deadline {
                            return Err("no connection".into());
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(format!("accept: {e}")),
                }
            };
            tcp.set_nonblocking(false).map_err(|e| e.to_string())?;
            set_timeouts(&tcp);
            let mut tls = acceptor
                .accept(tcp)
                .map_err(|e| format!("TLS handshake: {e}"))?;
            let line = read_line(&mut tls, 1000).map_err(|e| format!("reading: {e}"))?;
            tls.write_all(b"bye\n")
                .map_err(|e| format!("writing: {e}"))?;
            tls.shutdown()
                .map_err(|e| format!("sending close_notify: {e}"))?;
            // Dropping `tls` closes the TCP connection without waiting for the peer.
            Ok(line)
        };
        let _ = tx.send(serve());
    });
    (addr, rx)
}

#[test]
fn d2_open_plain_side_is_closed_after_timeout_close() {
    let dir = TestDir::new("d2-bye");
    let pki = Pki::new(&dir);
    let (server, server_result) = bye_tls_server(&pki);
    let client = Tunnel::start(
        &dir,
        "client",
        &client_body(server, "TIMEOUTclose = 2\nTIMEOUTidle = 60"),
    );

    let mut s = connect(client.addr("cli"));
    s.write_all(b"hi\n").unwrap();
    let got = read_line(&mut s, 1000).expect("reading the server's answer");
    assert_eq!(String::from_utf8_lossy(&got), "bye\n");
    s.set_read_timeout(Some(LOG_TIMEOUT)).unwrap();
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) if rest.is_empty() => {}
        other => client.fail(&format!(
            "after the server's close_notify the plain client must read EOF, got {other:?} \
             with {rest:?}"
        )),
    }
    let eof_at = Instant::now();
    match server_result.recv_timeout(RESULT_TIMEOUT) {
        Ok(Ok(line)) => assert_eq!(String::from_utf8_lossy(&line), "hi\n"),
        other => client.fail(&format!("the TLS server failed: {other:?}")),
    }

    // The plain client keeps its socket open (`s` lives on) and sends nothing more.
    let Some((c, waited)) = wait_close_since(&client, eof_at, Duration::from_secs(8)) else {
        client.fail(&format!(
            "the session was still open {:?} after the TLS peer's close_notify and the plain \
             side's EOF, with TIMEOUTclose = 2 (it must not wait for TIMEOUTidle = 60)",
            eof_at.elapsed()
        ));
    };
    assert_eq!(
        (c.how.as_str(), c.sent_to_tls, c.sent_to_socket),
        ("closed", 3, 4),
        "a TIMEOUTclose after close_notify is a normal close"
    );
    assert!(
        waited >= Duration::from_millis(1500),
        "the session was closed {waited:?} after the EOF, before TIMEOUTclose = 2 s"
    );
    drop(s);
}

// ---------------------------------------------------------------------------------------
// D3: a half-closed plain side that never reads cannot hold the session past TIMEOUTidle.

/// Reads the request to EOF, then writes as fast as it can until a write fails (the
/// tunnels gave up) or 30 s pass. Reports the digest of the request.
fn flood_backend() -> Backend {
    Backend::spawn(|mut s, r| {
        let request = read_digest(&mut s)?;
        r.report(request);
        let chunk = payload(81, 16 * 1024);
        let until = Instant::now() + RESULT_TIMEOUT;
        while Instant::now() < until {
            if s.write_all(&chunk).is_err() {
                return Ok(());
            }
        }
        Err(io::Error::other("flood still flowing after 30 s"))
    })
}

/// A client socket with a small receive buffer (set before connecting), so that a client
/// that does not read stops the flow early.
fn connect_small_rcvbuf(addr: SocketAddr) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    sock.connect_timeout(&addr.into(), CONNECT_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let s: TcpStream = sock.into();
    set_timeouts(&s);
    s
}

#[test]
fn d3_half_closed_plain_side_that_never_reads_is_reset_after_timeout_idle() {
    let dir = TestDir::new("d3-flood");
    let pki = Pki::new(&dir);
    let backend = flood_backend();
    let pair = TunnelPair::start(&dir, &pki, backend.addr(), "", "TIMEOUTidle = 3");

    let mut s = connect_small_rcvbuf(pair.entry());
    s.write_all(b"request\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let start = Instant::now();
    assert_eq!(
        backend.next_result(RESULT_TIMEOUT),
        Digest::of(b"request\n"),
        "the backend did not get the request"
    );

    // Never read while the far end floods. SO_SNDTIMEO bounds each blocked write to the
    // plain socket; a write that gets a few bytes accepted returns short and the next one
    // starts a new TIMEOUTidle, so on Linux loopback this takes two or three TIMEOUTidle
    // periods (6.3 or 9.4 s measured; stunnel4 5.68 ends it after one, 3.2 s).
    let Some((c, waited)) = wait_close_since(&pair.client, start, Duration::from_secs(12)) else {
        pair.client.fail(&format!(
            "the session was still open {:?} after the plain side half-closed and stopped \
             reading, with TIMEOUTidle = 3",
            start.elapsed()
        ));
    };
    assert_eq!(
        c.how, "reset",
        "a plain peer that never reads is a timeout: the session is reset"
    );
    assert!(
        waited >= Duration::from_millis(2500),
        "the session was reset {waited:?} after the half-close, before TIMEOUTidle = 3 s"
    );
    assert!(
        c.sent_to_socket > 0,
        "the flood never reached the client tunnel"
    );

    // The whole chain is torn down: the server tunnel ends its session too.
    if wait_close_since(&pair.server, Instant::now(), LOG_TIMEOUT).is_none() {
        pair.server
            .fail("the server tunnel's session did not end after the client tunnel's reset");
    }
    // And the plain client, reading at last, reaches the end of the connection.
    s.set_read_timeout(Some(LOG_TIMEOUT)).unwrap();
    // EOF or a reset: closed.
    if read_to_end_or_timeout(&mut s, &mut Vec::new(), None) == End::TimedOut {
        pair.client
            .fail("the plain connection was left open after the session's reset");
    }
}
