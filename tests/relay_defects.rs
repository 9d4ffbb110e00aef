//! Regression tests for the relay defects found in its second read (each failed against the
//! relay before the fix). Rule numbers are those at the top of `src/relay.rs`.
//!
//! * `quiet_session_gets_the_reply_to_its_half_close` (rule 6): TIMEOUTclose counts from
//!   the moment a session starts closing, not from its last data: a session quiet for longer
//!   than TIMEOUTclose before the client half-closes still gets the backend's reply, also
//!   when the close is a SIGTERM drain.
//! * `records_pulled_in_by_the_writer_wake_the_reader` (rule 5): while a TLS 1.3 session
//!   ticket arrives in several small records, the writer's SSL_write reads the socket and can
//!   pull application records in behind it; the reader must be woken for them.
//! * `close_notify_waits_for_a_post_handshake_message` (rule 6): a plain EOF while a ticket
//!   is half received still ends in close_notify once the ticket is complete.
//! * `program_that_never_reads_its_pty_cannot_hold_the_session` (rule 8): a `pty = yes`
//!   program that reads nothing is ended by TIMEOUTidle like a socket peer (writes to the
//!   pseudo-terminal are non-blocking and polled).
//!
//! The fifth defect (an SSL_read after a fatal error, rule 6) and the quiet-second rule of
//! stack trimming are unit tests in `src/relay.rs`.
//!
//! ```text
//! test ──plain──▶ rstunnel client [cli] ──TLS──▶ rstunnel server [srv] ──plain──▶ backend
//! test ──plain──▶ rstunnel client [cli] ──TLS──▶ HoldProxy ──▶ in-test TLS 1.3 server
//! test ──TLS──▶ rstunnel server [srv] ──pty──▶ a program that never reads
//! ```

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use openssl::ssl::{
    ErrorCode, SslAcceptor, SslConnector, SslFiletype, SslMethod, SslStream, SslVerifyMode,
    SslVersion,
};

use common::daemon::{parse_close_line, rstunnel_bin};
use common::*;

const LOG_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------
// Rule 6: TIMEOUTclose counts from the start of the close.

/// How the client ends its request in [`quiet_session_gets_the_reply_to_its_half_close`].
#[derive(Clone, Copy, Debug)]
enum CloseBy {
    /// The plain client shuts down its write side.
    HalfClose,
    /// The client tunnel is told to stop (SIGTERM): it drains the session.
    Drain,
}

/// A backend that reads the request to EOF, waits 200 ms and sends its reply.
fn replies_after_eof(reply: &'static [u8]) -> Backend {
    Backend::spawn(move |mut s, r| {
        let request = read_digest(&mut s)?;
        r.report(request);
        std::thread::sleep(Duration::from_millis(200));
        s.write_all(reply)?;
        s.shutdown(Shutdown::Write)?;
        Ok(())
    })
}

#[test]
fn quiet_session_gets_the_reply_to_its_half_close() {
    for close_by in [CloseBy::HalfClose, CloseBy::Drain] {
        let dir = TestDir::new(&format!("quiet-close-{close_by:?}"));
        let pki = Pki::new(&dir);
        let reply: &'static [u8] = b"the reply to a request sent 3 s ago\n";
        let backend = replies_after_eof(reply);
        let extra = "TIMEOUTclose = 2";
        let mut pair = TunnelPair::start(&dir, &pki, backend.addr(), extra, extra);

        let mut s = connect(pair.entry());
        s.write_all(b"request\n").unwrap();
        // Quiet for longer than TIMEOUTclose before the close.
        std::thread::sleep(Duration::from_secs(3));
        match close_by {
            CloseBy::HalfClose => s.shutdown(Shutdown::Write).unwrap(),
            CloseBy::Drain => pair.client.signal(libc::SIGTERM),
        }
        let mut got = Vec::new();
        let read = s.read_to_end(&mut got);
        if got != reply {
            pair.client.fail(&format!(
                "{close_by:?} after 3 quiet seconds with TIMEOUTclose = 2: the reply was lost \
                 (got {got:?}, read ended with {read:?}); server tunnel log:\n{}",
                pair.server.log_text()
            ));
        }
        let c = &pair.client.wait_close_counts(1, LOG_TIMEOUT)[0];
        assert_eq!(c.sent_to_socket, reply.len() as u64, "{close_by:?}: {c:?}");
        assert!(
            !pair.client.has_log("TIMEOUTclose exceeded"),
            "{close_by:?}: the client tunnel gave up on a reply 200 ms away"
        );
        if let CloseBy::Drain = close_by {
            let status = pair.client.wait_exit(LOG_TIMEOUT);
            assert!(
                status.is_some_and(|s| s.success()),
                "the drained client tunnel exited with {status:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// A proxy that holds back what a TLS server sends after the handshake.

/// What [`HoldProxy`] holds back for one connection.
struct HeldState {
    /// Server bytes are kept here instead of being forwarded.
    holding: bool,
    /// Bytes have gone from the server to the client (the server's first flight).
    forwarded: bool,
    /// The client's second flight passed: everything the server sends from now on is held.
    armed: bool,
    bytes: Vec<u8>,
    server_eof: bool,
}

/// One proxied connection: the client's socket and what the server sent that is held.
#[derive(Clone)]
struct Held {
    state: Arc<(Mutex<HeldState>, Condvar)>,
    client: Arc<TcpStream>,
}

impl Held {
    /// Waits until at least `n` bytes are held and no more came for 100 ms: all that the
    /// server has sent so far.
    fn wait_settled(&self, n: usize, timeout: Duration) -> usize {
        let mut seen = self.wait_for(n, timeout);
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.state.0.lock().unwrap().bytes.len();
            if now == seen {
                return now;
            }
            seen = now;
        }
    }

    /// Waits until at least `n` bytes are held.
    fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        let (lock, cond) = &*self.state;
        let deadline = Instant::now() + timeout;
        let mut st = lock.lock().unwrap();
        while st.bytes.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the server sent {} byte(s) after the handshake, {n} expected",
                st.bytes.len()
            );
            st = cond.wait_timeout(st, left).unwrap().0;
        }
        st.bytes.len()
    }

    /// Sends the first `n` held bytes on to the client in pieces of the sizes in `pieces`
    /// (cycled), `gap` apart, and keeps holding the rest.
    fn release(&self, n: usize, pieces: &[usize], gap: Duration) {
        let (lock, _) = &*self.state;
        let mut st = lock.lock().unwrap();
        let n = n.min(st.bytes.len());
        let data: Vec<u8> = st.bytes.drain(..n).collect();
        let mut at = 0;
        for size in pieces.iter().cycle() {
            if at >= data.len() {
                break;
            }
            let end = (at + size).min(data.len());
            (&*self.client).write_all(&data[at..end]).unwrap();
            at = end;
            if at < data.len() && !gap.is_zero() {
                spin(gap);
            }
        }
    }

    /// Waits until the client has read everything sent to it so far: the receive queue of
    /// its socket, as /proc/net/tcp shows it, is empty.
    fn wait_client_read(&self, timeout: Duration) {
        let (ours, theirs) = (
            self.client.local_addr().unwrap(),
            self.client.peer_addr().unwrap(),
        );
        let hex = |a: SocketAddr| match a {
            SocketAddr::V4(a) => format!(
                "{:08X}:{:04X}",
                u32::from_le_bytes(a.ip().octets()),
                a.port()
            ),
            SocketAddr::V6(_) => unreachable!("the proxy listens on 127.0.0.1"),
        };
        let (local, remote) = (hex(theirs), hex(ours));
        let deadline = Instant::now() + timeout;
        loop {
            let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
            let queued = table.lines().find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() > 4 && f[1] == local && f[2] == remote)
                    .then(|| f[4].split(':').nth(1).unwrap_or("0").to_string())
            });
            if queued
                .as_deref()
                .is_some_and(|q| u64::from_str_radix(q, 16) == Ok(0))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the client tunnel did not read what the proxy sent ({queued:?} queued)"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends everything held and everything the server sends later straight on.
    fn release_all(&self, pieces: &[usize], gap: Duration) {
        self.release(usize::MAX, pieces, gap);
        let (lock, _) = &*self.state;
        let mut st = lock.lock().unwrap();
        let rest: Vec<u8> = st.bytes.drain(..).collect();
        (&*self.client).write_all(&rest).unwrap();
        st.holding = false;
        if st.server_eof {
            let _ = self.client.shutdown(Shutdown::Write);
        }
    }
}

/// Busy-waits `d`: sleeps are too coarse for the gaps between pieces.
fn spin(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// A TCP proxy to `server` that forwards the handshake both ways, then holds back all the
/// server sends after the client's second flight (TLS 1.3: the session tickets and later
/// data) until the test releases it, in pieces it chooses. Client bytes always pass.
struct HoldProxy {
    addr: SocketAddr,
    conns: Receiver<Held>,
}

impl HoldProxy {
    fn start(server: SocketAddr) -> HoldProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, conns) = channel();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(upstream) = TcpStream::connect(server) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let held = Held {
                    state: Arc::new((
                        Mutex::new(HeldState {
                            holding: false,
                            forwarded: false,
                            armed: false,
                            bytes: Vec::new(),
                            server_eof: false,
                        }),
                        Condvar::new(),
                    )),
                    client: Arc::new(client),
                };
                HoldProxy::pump_up(held.clone(), upstream.try_clone().unwrap());
                HoldProxy::pump_down(held.clone(), upstream);
                if tx.send(held).is_err() {
                    break;
                }
            }
        });
        HoldProxy { addr, conns }
    }

    /// Client → server. The first client bytes after the server's first flight are the
    /// client's second flight: from then on the server's output is held.
    fn pump_up(held: Held, mut upstream: TcpStream) {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match (&*held.client).read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                {
                    let mut st = held.state.0.lock().unwrap();
                    if st.forwarded && !st.armed {
                        st.armed = true;
                        st.holding = true;
                    }
                }
                if upstream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = upstream.shutdown(Shutdown::Write);
        });
    }

    /// Server → client, holding what must be held.
    fn pump_down(held: Held, mut upstream: TcpStream) {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = upstream.read(&mut buf).unwrap_or(0);
                let (lock, cond) = &*held.state;
                let mut st = lock.lock().unwrap();
                if n == 0 {
                    st.server_eof = true;
                    if !st.holding {
                        let _ = held.client.shutdown(Shutdown::Write);
                    }
                    break;
                }
                if st.holding {
                    st.bytes.extend_from_slice(&buf[..n]);
                    cond.notify_all();
                } else {
                    st.forwarded = true;
                    if (&*held.client).write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        });
    }

    fn next(&self) -> Held {
        self.conns
            .recv_timeout(Duration::from_secs(10))
            .expect("the client tunnel did not connect through the proxy")
    }
}

/// A TLS 1.3 server that requires a client certificate (so that each session ticket
/// carries one and is large) and sends records of at most 512 bytes: its tickets span
/// several records, and a client that has read the first is inside a post-handshake
/// message until it has read the last.
fn small_record_server(pki: &Pki) -> SslAcceptor {
    let mut b = SslAcceptor::mozilla_modern_v5(SslMethod::tls()).unwrap();
    b.set_min_proto_version(Some(SslVersion::TLS1_3)).unwrap();
    b.set_certificate_chain_file(&pki.server.cert).unwrap();
    b.set_private_key_file(&pki.server.key, SslFiletype::PEM)
        .unwrap();
    b.set_ca_file(&pki.ca_file).unwrap();
    b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    // Resumed sessions with a client certificate need a session id context.
    b.set_session_id_context(b"relay_defects").unwrap();
    // SSL_CTX_set_max_send_fragment is a macro over SSL_CTX_ctrl (ssl.h), unbound in the
    // openssl crate.
    const SSL_CTRL_SET_MAX_SEND_FRAGMENT: libc::c_int = 52;
    // SAFETY: a valid SSL_CTX; this control takes a length and no pointer.
    let ok = unsafe {
        openssl_sys::SSL_CTX_ctrl(
            b.as_ptr(),
            SSL_CTRL_SET_MAX_SEND_FRAGMENT,
            512,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(ok, 1, "SSL_CTX_set_max_send_fragment(512)");
    b.build()
}

/// What the in-test server does with each session once its handshake is done.
type Script = dyn Fn(SslStream<TcpStream>, &Sender<String>) + Send + Sync;

/// Runs `script` on a thread per accepted TLS session; the script reports through the
/// returned channel (one line per event).
fn serve_tls(acceptor: SslAcceptor, script: Arc<Script>) -> (SocketAddr, Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            let _ = tcp.set_nodelay(true);
            tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let (acceptor, script, tx) = (acceptor.clone(), Arc::clone(&script), tx.clone());
            std::thread::spawn(move || match acceptor.accept(tcp) {
                Ok(tls) => {
                    let _ = tx.send("handshake done".into());
                    script(tls, &tx);
                }
                Err(e) => {
                    let _ = tx.send(format!("handshake failed: {e}"));
                }
            });
        }
    });
    (addr, rx)
}

fn expect_event(rx: &Receiver<String>, what: &str, timeout: Duration) {
    match rx.recv_timeout(timeout) {
        Ok(line) if line == what => {}
        Ok(line) => panic!("the in-test server reported {line:?}, expected {what:?}"),
        Err(_) => panic!("the in-test server did not report {what:?} within {timeout:?}"),
    }
}

/// A client tunnel to `server` that presents the client certificate and trusts the CA.
fn client_tunnel(dir: &TestDir, pki: &Pki, label: &str, server: SocketAddr, extra: &str) -> Tunnel {
    Tunnel::start(
        dir,
        label,
        &client_body(
            server,
            &format!(
                "cert = {}\nkey = {}\nCAfile = {}\nverifyChain = yes\ncheckHost = localhost\n{extra}",
                pki.client.cert.display(),
                pki.client.key.display(),
                pki.ca_file.display()
            ),
        ),
    )
}

// ---------------------------------------------------------------------------------------
// Rule 5: records the writer pulls in wake the reader.

const TAIL: &[u8] = b"TAIL";
/// Sessions tried. Before the fix about one in four stalled.
const STALL_TRIALS: usize = 12;
/// Tunnels (each with its own proxy and server) trying sessions side by side.
const STALL_RIGS: usize = 2;
/// Far above a loopback round trip, far below the stall (until the peer sends more or
/// TIMEOUTidle, 12 h by default).
const STALL_LIMIT: Duration = Duration::from_secs(10);

/// Piece sizes that cut `bytes` (whole TLS records) two bytes into each record's header.
fn header_split_pieces(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at + 5 <= bytes.len() {
        starts.push(at);
        at += 5 + usize::from(u16::from_be_bytes([bytes[at + 3], bytes[at + 4]]));
    }
    let mut cuts: Vec<usize> = starts.iter().skip(1).map(|s| s + 2).collect();
    cuts.push(bytes.len());
    let mut last = 0;
    cuts.iter()
        .map(|&c| {
            let size = c - last;
            last = c;
            size
        })
        .collect()
}

/// A small deterministic generator for the piece sizes and gaps of each trial.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// One session: the handshake, 1.2 s of quiet from the server while the client writes a
/// steady trickle (so the reader has settled and only a wake-up can end its wait), then
/// the tickets and TAIL released in small pieces that split records. Returns how long TAIL
/// took to come out of the tunnel after the release, or `None` if it never did.
fn stall_trial(
    entry: SocketAddr,
    proxy: &HoldProxy,
    server: &Receiver<String>,
    go: &Sender<()>,
    rng: &mut Lcg,
) -> Option<Duration> {
    let mut plain = connect(entry);
    let held = proxy.next();
    expect_event(server, "handshake done", Duration::from_secs(10));

    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (writing, mut out) = (Arc::clone(&writing), plain.try_clone().unwrap());
        std::thread::spawn(move || {
            while writing.load(SeqCst) {
                if out.write_all(b"client keeps writing\n").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1200));
    go.send(()).unwrap();
    expect_event(server, "TAIL sent", Duration::from_secs(10));
    // The tickets (each over a few records), then TAIL's record.
    held.wait_settled(1000, Duration::from_secs(10));
    // Each piece ends two bytes into a record header: OpenSSL completes a record body it
    // has begun by reading exactly what it lacks, but a header with read-ahead, taking all
    // that has arrived. So at every piece the client parks with a partial header buffered,
    // and a writer that reads the next piece pulls whole records in behind it.
    let pieces = {
        let st = held.state.0.lock().unwrap();
        header_split_pieces(&st.bytes)
    };
    let gap = Duration::from_micros(rng.below(150));

    let released = Instant::now();
    held.release_all(&pieces, gap);
    plain
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    let arrived = loop {
        if got.windows(TAIL.len()).any(|w| w == TAIL) {
            break Some(released.elapsed());
        }
        if released.elapsed() > STALL_LIMIT {
            break None;
        }
        match plain.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break None,
        }
    };
    writing.store(false, SeqCst);
    writer.join().unwrap();
    arrived
}

#[test]
fn records_pulled_in_by_the_writer_wake_the_reader() {
    let rigs: Vec<_> = (0..STALL_RIGS)
        .map(|rig| {
            std::thread::spawn(move || {
                let dir = TestDir::new(&format!("writer-wakes-reader-{rig}"));
                let pki = Pki::with_kind(&dir, KeyKind::Rsa2048);
                let (go_tx, go_rx) = channel::<()>();
                let go_rx = Arc::new(Mutex::new(go_rx));
                let script: Arc<Script> = Arc::new(move |mut tls, tx| {
                    let _ = go_rx.lock().unwrap().recv();
                    tls.ssl_write(TAIL).unwrap();
                    let _ = tx.send("TAIL sent".into());
                    // Keep the session open, taking what the client sends, until it goes.
                    let mut buf = [0u8; 4096];
                    while tls.ssl_read(&mut buf).is_ok_and(|n| n > 0) {}
                });
                let (server, events) = serve_tls(small_record_server(&pki), script);
                let proxy = HoldProxy::start(server);
                let tunnel = client_tunnel(&dir, &pki, "client", proxy.addr, "");
                let mut rng = Lcg(rig as u64 + 1);
                let mut results = Vec::new();
                for _ in 0..STALL_TRIALS / STALL_RIGS {
                    results.push(stall_trial(
                        tunnel.addr("cli"),
                        &proxy,
                        &events,
                        &go_tx,
                        &mut rng,
                    ));
                }
                (results, tunnel.log_text())
            })
        })
        .collect();
    let mut stalled = 0;
    let mut slowest = Duration::ZERO;
    let mut logs = String::new();
    for rig in rigs {
        let (results, log) = rig.join().unwrap();
        for r in &results {
            match r {
                Some(d) => slowest = slowest.max(*d),
                None => stalled += 1,
            }
        }
        if results.iter().any(Option::is_none) {
            logs.push_str(&log);
        }
    }
    assert_eq!(
        stalled, 0,
        "{stalled} of {STALL_TRIALS} sessions left TAIL inside the client tunnel for over \
         {STALL_LIMIT:?} (the reader slept while the writer had pulled its record in); log:\n{logs}"
    );
    eprintln!("{STALL_TRIALS} sessions, TAIL out within {slowest:?} at the slowest");
}

// ---------------------------------------------------------------------------------------
// Rule 6: close_notify after a post-handshake message completes.

#[test]
fn close_notify_waits_for_a_post_handshake_message() {
    let dir = TestDir::new("close-notify-in-init");
    let pki = Pki::with_kind(&dir, KeyKind::Rsa2048);
    let script: Arc<Script> = Arc::new(|mut tls, tx| {
        let mut buf = [0u8; 4096];
        let end = loop {
            match tls.ssl_read(&mut buf) {
                Ok(0) => break "close_notify".to_string(),
                Ok(_) => continue,
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => break "close_notify".into(),
                Err(e) => break format!("no close_notify: {e}"),
            }
        };
        let _ = tx.send(end);
    });
    let (server, events) = serve_tls(small_record_server(&pki), script);
    let proxy = HoldProxy::start(server);
    // TIMEOUTclose far beyond the test's wait: only the retried close_notify can pass it.
    let tunnel = client_tunnel(&dir, &pki, "client", proxy.addr, "TIMEOUTclose = 30");

    let plain = connect(tunnel.addr("cli"));
    let held = proxy.next();
    expect_event(&events, "handshake done", Duration::from_secs(10));
    held.wait_settled(1000, Duration::from_secs(10));
    // The first record of the first ticket and part of the second: the client is now inside
    // a post-handshake message.
    held.release(700, &[700], Duration::ZERO);
    // The client tunnel has read them (and its reader taken the first record: both happen
    // in one SSL_read, under its lock), however slow the machine is.
    held.wait_client_read(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(100));
    plain.shutdown(Shutdown::Write).unwrap();
    tunnel.wait_for_log("close_notify deferred", LOG_TIMEOUT);
    std::thread::sleep(Duration::from_millis(300));
    let released = Instant::now();
    held.release_all(&[4096], Duration::ZERO);
    match events.recv_timeout(Duration::from_secs(5)) {
        Ok(end) => assert_eq!(
            end,
            "close_notify",
            "the server saw the session end without close_notify; log:\n{}",
            tunnel.log_text()
        ),
        Err(_) => tunnel.fail(&format!(
            "no close_notify reached the server within 5 s of the ticket's completion (it \
             would come with TIMEOUTclose's FIN, 30 s later); released at {released:?}"
        )),
    }
    // The server has it, so the line is written; the log is read from a pipe.
    tunnel.wait_for_log("TLS close_notify sent", LOG_TIMEOUT);
}

// ---------------------------------------------------------------------------------------
// Rule 8: a program that never reads its pseudo-terminal.

#[test]
fn program_that_never_reads_its_pty_cannot_hold_the_session() {
    let dir = TestDir::new("pty-never-reads");
    let pki = Pki::new(&dir);
    // Raw mode, so the terminal takes bytes without echoing or editing them, then never
    // reads.
    let program = dir.write(
        "never-reads.sh",
        "#!/bin/sh\nstty raw -echo\nexec sleep 1000\n",
    );
    std::fs::set_permissions(
        &program,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let tunnel = Tunnel::start(
        &dir,
        "server",
        &format!(
            // `sandbox = no`: the program runs `stty` and `sleep`, programs the
            // configuration does not name, which the default sandbox refuses to execute.
            "sandbox = no\n[srv]\naccept = 127.0.0.1:0\ncert = {}\nexec = {}\npty = yes\nTIMEOUTidle = 3\n",
            pki.server.combined.display(),
            program.display()
        ),
    );
    let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
    connector.set_verify(SslVerifyMode::NONE);
    let connector = connector.build();
    let tcp = connect(tunnel.addr("srv"));
    let mut tls = connector
        .configure()
        .unwrap()
        .verify_hostname(false)
        .connect("localhost", tcp)
        .unwrap();
    let child: i32 = {
        let line = tunnel.wait_for_log("Local mode child started (PID=", LOG_TIMEOUT);
        let start = line.find("PID=").unwrap() + 4;
        line[start..].trim_end_matches(')').parse().unwrap()
    };
    let pushed = Instant::now();
    // 2 MB towards a terminal nobody reads: far more than the pty and socket buffers hold.
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0usize;
    while sent < 2_000_000 && pushed.elapsed() < Duration::from_secs(20) {
        match tls.ssl_write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    let line = tunnel
        .try_wait_for(LOG_TIMEOUT, |l| parse_close_line(l).is_some())
        .unwrap_or_else(|| {
            tunnel.fail("the session was not closed: the reader is stuck writing to the pty")
        });
    assert!(
        tunnel.has_log("TIMEOUTidle exceeded"),
        "the session ended, but not by TIMEOUTidle: {line}"
    );
    let took = pushed.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "the session outlived TIMEOUTidle = 3 by far: {took:?}"
    );
    // Its pseudo-terminal closed, the program is hung up.
    let deadline = Instant::now() + LOG_TIMEOUT;
    // SAFETY: kill with signal 0 only checks that the process exists.
    while unsafe { libc::kill(child, 0) } == 0
        && std::fs::read_to_string(format!("/proc/{child}/stat")).is_ok_and(|s| !s.contains(") Z "))
    {
        assert!(
            Instant::now() < deadline,
            "the program (PID {child}) still runs after its session ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills the child on drop (a failed test leaves nothing running).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The same in inetd mode with pipes for stdin and stdout (as from a shell pipeline or a
/// supervisor): the client tunnel's plain side is a pipe nobody reads.
#[test]
fn inetd_stdout_pipe_nobody_reads_cannot_hold_the_session() {
    let dir = TestDir::new("inetd-pipe-never-read");
    let pki = Pki::new(&dir);
    let source = Backend::source(5, 16 * MIB);
    let server = Tunnel::server(&dir, &pki, source.addr(), "");
    let output = dir.join("inetd.log");
    let conf = dir.write(
        "inetd.conf",
        format!(
            "syslog = no\noutput = {}\ndebug = 7\nclient = yes\nconnect = {}\nCAfile = {}\nverifyChain = yes\nTIMEOUTidle = 3\n",
            output.display(),
            server.addr("srv"),
            pki.ca_file.display()
        ),
    );
    let pipe = || {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two new descriptors into `fds`, which we then own.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both are new descriptors owned by nobody else.
        unsafe {
            use std::os::fd::FromRawFd;
            (
                std::os::fd::OwnedFd::from_raw_fd(fds[0]),
                std::os::fd::OwnedFd::from_raw_fd(fds[1]),
            )
        }
    };
    let (stdin_read, _stdin_write) = pipe();
    let (_stdout_read, stdout_write) = pipe();
    let started = Instant::now();
    let mut child = KillOnDrop(
        std::process::Command::new(rstunnel_bin())
            .arg(&conf)
            .stdin(std::process::Stdio::from(stdin_read))
            .stdout(std::process::Stdio::from(stdout_write))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawning rstunnel in inetd mode"),
    );
    let exited = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(20) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = std::fs::read_to_string(&output).unwrap_or_default();
    assert!(
        exited.is_some(),
        "inetd mode still runs 20 s after a session with TIMEOUTidle = 3 whose stdout \
         nobody reads:\n{log}"
    );
    assert!(
        log.contains("TIMEOUTidle exceeded"),
        "the session ended, but not by TIMEOUTidle:\n{log}"
    );
}
