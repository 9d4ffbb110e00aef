//! Timeouts end sessions that would otherwise hold resources forever:
//!
//! * `TIMEOUTidle` (relay rule 8, src/relay.rs): an established session with no traffic is closed
//!   after that many seconds, not before;
//! * `TIMEOUTbusy` (relay rule 1): a client that connects to a TLS port and never completes
//!   the handshake is dropped after that many seconds.
//!
//! Bounds are generous on the late side (loaded CI machines) and strict on the early side.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;

const LATE: Duration = Duration::from_secs(10);

/// Reads until the connection ends; returns how long that took, or fails at [`LATE`].
fn time_until_closed(s: &mut std::net::TcpStream, what: &str, t: &Tunnel) -> Duration {
    let start = Instant::now();
    s.set_read_timeout(Some(LATE)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(n) => t.fail(&format!(
                "{what}: unexpected {n} byte(s) on a session that should be idle"
            )),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                t.fail(&format!("{what}: session still open after {LATE:?}"))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return start.elapsed(), // reset: closed
        }
    }
}

#[test]
fn idle_session_is_closed_after_timeout_idle() {
    let dir = TestDir::new("idle");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let pair = TunnelPair::start(&dir, &pki, echo.addr(), "TIMEOUTidle = 2", "");
    let mut s = connect(pair.entry());
    s.write_all(b"ping\n").unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).expect("echo through both tunnels");
    assert_eq!(&buf, b"ping\n");
    let idle = time_until_closed(&mut s, "TIMEOUTidle = 2", &pair.server);
    assert!(
        idle >= Duration::from_millis(1500),
        "an idle session was closed after {idle:?}, before TIMEOUTidle = 2 s"
    );
}

#[test]
fn stalled_handshake_is_dropped_after_timeout_busy() {
    let dir = TestDir::new("busy");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let srv = Tunnel::server(&dir, &pki, echo.addr(), "TIMEOUTbusy = 2");
    // Connect to the TLS port and send nothing: no ClientHello ever comes.
    let mut s = connect(srv.addr("srv"));
    let waited = time_until_closed(&mut s, "TIMEOUTbusy = 2", &srv);
    assert!(
        waited >= Duration::from_millis(1500),
        "a stalled handshake was dropped after {waited:?}, before TIMEOUTbusy = 2 s"
    );
    assert_eq!(
        echo.connections(),
        0,
        "the backend must not be contacted before the handshake"
    );
}
