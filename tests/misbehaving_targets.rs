//! Targets that misbehave never take the process down and never hold a session past its
//! timeout: a black-holed target (SYNs unanswered) is given up after TIMEOUTconnect, a
//! target that accepts and says nothing leaves the session to TIMEOUTidle, and the
//! process keeps serving other sessions meanwhile.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::process::*;
use common::*;

/// A loopback "black hole": a listener with a backlog of 0 that never accepts, filled
/// up, so that further SYNs are dropped and connect() hangs as with a dead host.
struct BlackHole {
    addr: SocketAddr,
    _listener: common::net::BacklogOfOne,
    _fillers: Vec<TcpStream>,
}

impl BlackHole {
    fn new() -> BlackHole {
        let socket = common::net::BacklogOfOne::new();
        let addr = socket.addr;
        // Fill the accept queue; once full, SYNs to it are dropped.
        let mut fillers = Vec::new();
        for _ in 0..4 {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            let _ = s.connect(&addr.into());
            fillers.push(TcpStream::from(s));
        }
        std::thread::sleep(Duration::from_millis(200));
        BlackHole {
            addr,
            _listener: socket,
            _fillers: fillers,
        }
    }

    /// Whether a plain connect really hangs (the environment drops the SYN).
    fn hangs(&self) -> bool {
        TcpStream::connect_timeout(&self.addr, Duration::from_millis(500)).is_err()
    }
}

#[test]
fn a_black_holed_target_is_given_up_after_timeout_connect_and_others_still_work() {
    let dir = TestDir::new("blackhole");
    let pki = Pki::new(&dir);
    let hole = BlackHole::new();
    if !hole.hangs() {
        skipped(
            "a_black_holed_target_is_given_up_after_timeout_connect_and_others_still_work: \
             this kernel answers SYNs to a full accept queue; no black hole",
        );
        return;
    }
    let echo = Backend::echo();
    let body = format!(
        "cert = {cert}\n[dead]\naccept = 127.0.0.1:0\nconnect = {hole}\nTIMEOUTconnect = 2\n\
         [alive]\naccept = 127.0.0.1:0\nconnect = {echo}\n",
        cert = pki.server.combined.display(),
        hole = hole.addr,
        echo = echo.addr()
    );
    let t = Tunnel::start(&dir, "blackhole", &body);
    let started = Instant::now();
    let dead = std::thread::spawn({
        let addr = t.addr("dead");
        let ca = pki.ca_file.clone();
        move || {
            // The handshake completes (server side first); then the session waits for the
            // target and must be closed once TIMEOUTconnect passes.
            if let Ok(mut s) = tls_connect(addr, &ca) {
                s.get_ref()
                    .set_read_timeout(Some(Duration::from_secs(15)))
                    .unwrap();
                let mut buf = [0u8; 16];
                let _ = s.read(&mut buf);
            }
        }
    });
    // Meanwhile another service of the same process answers at once.
    let mut s =
        tls_connect(t.addr("alive"), &pki.ca_file).unwrap_or_else(|e| t.fail(&format!("{e:?}")));
    echo_check(&mut s, b"still served\n").unwrap_or_else(|e| t.fail(&e));
    dead.join().unwrap();
    let waited = started.elapsed();
    t.wait_for_log("No more addresses to connect", Duration::from_secs(10));
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(10),
        "the black-holed session ended after {waited:?}; TIMEOUTconnect is 2 s"
    );
    assert!(
        t.has_log("s_connect: connect"),
        "the failed target is logged"
    );
}

#[test]
fn a_silent_target_is_closed_by_timeout_idle() {
    let dir = TestDir::new("silent");
    let pki = Pki::new(&dir);
    // Accepts, never reads or writes.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let holder = std::thread::spawn(move || {
        let conn = silent.accept().map(|(c, _)| c);
        std::thread::sleep(Duration::from_secs(8));
        drop(conn);
    });
    let t = Tunnel::start(
        &dir,
        "silent",
        &server_body(silent_addr, &pki.server.combined, "TIMEOUTidle = 2"),
    );
    let started = Instant::now();
    let mut s =
        tls_connect(t.addr("srv"), &pki.ca_file).unwrap_or_else(|e| t.fail(&format!("{e:?}")));
    s.get_ref()
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buf = [0u8; 16];
    let _ = s.read(&mut buf);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(7),
        "a session whose target never answers ended after {waited:?}; TIMEOUTidle is 2 s"
    );
    t.wait_for_log("TIMEOUTidle exceeded", Duration::from_secs(5));
    holder.join().unwrap();
}
