//! Stopping: SIGTERM and SIGINT end the process with exit code 0 (stunnel's behaviour, which
//! service managers rely on), the listener goes away, and open sessions do not keep the
//! process alive.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

fn assert_stops_with_0(sig: libc::c_int, name: &str) {
    let dir = TestDir::new(name);
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let mut t = Tunnel::server(&dir, &pki, echo.addr(), "");
    let addr = t.addr("srv");
    let (status, killed) = t.stop_with(sig);
    if killed {
        t.fail(&format!("did not exit within 5 s of {name}"));
    }
    if status.code() != Some(0) {
        t.fail(&format!(
            "{name} must end the process with exit code 0, got {status}"
        ));
    }
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "the listener {addr} must be gone after {name}"
    );
}

#[test]
fn sigterm_exits_0() {
    assert_stops_with_0(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sigint_exits_0() {
    assert_stops_with_0(libc::SIGINT, "SIGINT");
}

/// A live session (with `TIMEOUTclose = 0`) must not hold up SIGTERM, and its client must see
/// the connection end rather than hang.
#[test]
fn sigterm_with_open_session_exits_0() {
    let dir = TestDir::new("sigterm-live");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let mut srv = Tunnel::server(&dir, &pki, echo.addr(), "TIMEOUTclose = 0");
    let client = Tunnel::start(
        &dir,
        "client",
        &client_body(srv.addr("srv"), "TIMEOUTclose = 0"),
    );
    let mut s = connect(client.addr("cli"));
    s.write_all(b"ping\n").unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).expect("echo before the signal");
    assert_eq!(&buf, b"ping\n");

    let status = srv.stop();
    if status.code() != Some(0) {
        srv.fail(&format!(
            "SIGTERM with a live session must exit 0, got {status}"
        ));
    }
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            client.fail("the session was left hanging after the server tunnel stopped")
        }
        Err(_) => {} // reset: ended
    }
    assert!(
        rest.is_empty(),
        "no data may arrive after the server stopped"
    );
}
