//! Scripted peers for the protocol tests (`tests/protocols*.rs`): a threaded TCP server that
//! reports one value per connection ([`Server`]), line helpers for the clear-text part,
//! servers that run a clear-text script and then TLS-echo ([`scripted_server`]), TLS
//! contexts of the test PKI, and the checks of rstunnel's own log wording. Every socket has
//! [`T`] read and write timeouts, so no peer can hang a test. Nothing here starts a tunnel.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use openssl::ssl::{
    NameType, SslAcceptor, SslConnector, SslFiletype, SslMethod, SslStream, SslVerifyMode,
};

use super::daemon::rstunnel_bin;
use super::*;

/// Deadline for log lines, results and every socket read of the scripted peers.
pub const T: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// A generic threaded TCP server that reports one value per connection.

/// A TCP server on `127.0.0.1:0` (or `[::1]:0`) that runs `handler` on a thread per
/// connection (sockets with [`T`] read/write timeouts) and sends its result to the test.
pub struct Server<R> {
    accept: AcceptThread,
    rx: Mutex<Receiver<R>>,
}

impl<R: Send + 'static> Server<R> {
    pub fn spawn(handler: impl Fn(TcpStream) -> R + Send + Sync + 'static) -> Server<R> {
        Server::spawn_on("127.0.0.1:0", handler)
    }

    pub fn spawn_on(
        bind: &str,
        handler: impl Fn(TcpStream) -> R + Send + Sync + 'static,
    ) -> Server<R> {
        let listener = TcpListener::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        let (tx, rx) = channel();
        let handler = Arc::new(handler);
        let accept = AcceptThread::spawn(listener, move |s| {
            s.set_read_timeout(Some(T)).unwrap();
            s.set_write_timeout(Some(T)).unwrap();
            let _ = s.set_nodelay(true);
            let handler = handler.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = tx.send(handler(s));
            });
        });
        Server {
            accept,
            rx: Mutex::new(rx),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.accept.addr()
    }

    pub fn connections(&self) -> usize {
        self.accept.accepted()
    }

    /// The result of the next connection that ended; panics after `timeout`.
    pub fn next(&self, timeout: Duration) -> R {
        match self.rx.lock().unwrap().recv_timeout(timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => panic!(
                "server {} reported no finished connection within {timeout:?} ({} accepted)",
                self.addr(),
                self.connections()
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Small I/O helpers for the scripted peers.

pub fn fail<T>(msg: impl Into<String>) -> io::Result<T> {
    Err(io::Error::other(msg.into()))
}

/// One CRLF (or LF) terminated line, without the terminator; EOF before it is an error.
pub fn line(s: &mut impl Read) -> io::Result<String> {
    let raw = read_line(s, 4096)?;
    if raw.last() != Some(&b'\n') {
        return fail(format!(
            "connection ended inside a line: {:?}",
            String::from_utf8_lossy(&raw)
        ));
    }
    let text = String::from_utf8_lossy(&raw);
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

/// Reads until EOF, error or timeout; returns what came and whether the peer closed
/// (EOF or reset) rather than leaving the connection hanging.
pub fn drain(s: &mut impl Read) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let end = read_to_end_or_timeout(s, &mut got, None);
    (got, end != End::TimedOut)
}

/// Reads exactly `n` bytes or what came before EOF / error / timeout.
pub fn read_up_to(s: &mut impl Read, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    let mut have = 0;
    while have < n {
        match s.read(&mut got[have..]) {
            Ok(0) => break,
            Ok(k) => have += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    got.truncate(have);
    got
}

/// A TLS server context with `leaf` (certificate, key).
pub fn acceptor(leaf: &LeafFiles) -> Arc<SslAcceptor> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    b.set_certificate_chain_file(&leaf.cert).unwrap();
    b.set_private_key_file(&leaf.key, SslFiletype::PEM).unwrap();
    b.check_private_key().unwrap();
    Arc::new(b.build())
}

/// A TLS client to a server tunnel that trusts `ca` (no host name check: we test the
/// plain side here).
pub fn tls_client(addr: SocketAddr, ca: &Path) -> SslStream<TcpStream> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(ca).unwrap();
    b.set_verify(SslVerifyMode::PEER);
    let mut cfg = b.build().configure().unwrap();
    cfg.set_verify_hostname(false);
    cfg.connect("localhost", connect(addr))
        .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"))
}

/// Whether the binary under test is rstunnel, whose log wording the tests check
/// (`Protocol X negotiated`, `protocol X: …`). With `RSTUNNEL_TEST_BIN` pointing at the
/// reference stunnel only what users see on the wire is checked, to validate the tests.
pub fn rstunnel_wording() -> bool {
    !rstunnel_bin()
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("stunnel"))
}

/// Waits for rstunnel's `Protocol NAME negotiated` line (see [`rstunnel_wording`]).
pub fn wait_negotiated(t: &Tunnel, name: &str) {
    if rstunnel_wording() {
        t.wait_for_log(&format!("Protocol {name} negotiated"), T);
    }
}

pub fn client_extra(protocol: &str, ca: &Path, more: &str) -> String {
    format!(
        "protocol = {protocol}\nverifyChain = yes\nCAfile = {}\nTIMEOUTbusy = 10\n{more}",
        ca.display()
    )
}

// ---------------------------------------------------------------------------------------
// Scripted STARTTLS servers.

/// What a scripted server saw on one connection.
#[derive(Debug, Default)]
pub struct Seen {
    /// The client's clear-text commands, normalised (`EHLO localhost`, `TAG STARTTLS`, …).
    pub commands: Vec<String>,
    /// The TLS handshake completed.
    pub tls: bool,
    /// The SNI name the client sent.
    pub sni: Option<String>,
    /// What was echoed inside TLS.
    pub echoed: Vec<u8>,
    /// After a refusal: the bytes that still came in clear (a ClientHello would be here).
    pub after_refusal: Vec<u8>,
    /// After a refusal: the client closed (rather than leaving the connection hanging).
    pub closed_after_refusal: bool,
    /// The script or the handshake failed.
    pub error: Option<String>,
}

/// The clear-text part: records the client's commands, answers; `Ok(true)` when it agreed
/// to start TLS, `Ok(false)` when it refused.
pub type Script = Arc<dyn Fn(&mut TcpStream, &mut Vec<String>) -> io::Result<bool> + Send + Sync>;

/// A server that runs `script`, then (if it agreed) TLS with `tls` and echoes until the
/// client's close_notify or EOF.
pub fn scripted_server(tls: Arc<SslAcceptor>, script: Script) -> Server<Seen> {
    Server::spawn(move |mut s| {
        let mut seen = Seen::default();
        match script(&mut s, &mut seen.commands) {
            Err(e) => seen.error = Some(format!("clear-text part: {e}")),
            Ok(false) => {
                let (after, closed) = drain(&mut s);
                seen.after_refusal = after;
                seen.closed_after_refusal = closed;
            }
            Ok(true) => tls_echo(&tls, s, &mut seen),
        }
        seen
    })
}

pub fn tls_echo(tls: &SslAcceptor, s: TcpStream, seen: &mut Seen) {
    let mut tls = match tls.accept(s) {
        Ok(t) => t,
        Err(e) => {
            seen.error = Some(format!("TLS handshake: {e}"));
            return;
        }
    };
    seen.tls = true;
    seen.sni = tls
        .ssl()
        .servername(NameType::HOST_NAME)
        .map(str::to_string);
    let mut buf = [0u8; 16384];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if let Err(e) = tls.write_all(&buf[..n]) {
                    seen.error = Some(format!("TLS write: {e}"));
                    return;
                }
                seen.echoed.extend_from_slice(&buf[..n]);
            }
            Err(e) => {
                // A FIN without close_notify is an ending too; a timeout is not.
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) {
                    seen.error = Some(format!("TLS read: {e}"));
                }
                break;
            }
        }
    }
    let _ = tls.shutdown();
}

/// A TLS echo server with no clear-text part (the target behind a proxy).
pub fn tls_echo_server(leaf: &LeafFiles) -> Server<Seen> {
    scripted_server(acceptor(leaf), Arc::new(|_, _| Ok(true)))
}

/// Echoes `s` until EOF, then shuts down its write side; returns what was echoed, or on a
/// read or write error the byte count echoed before it and the error.
pub fn echo_until_eof(s: &mut TcpStream) -> Result<Vec<u8>, (usize, io::Error)> {
    let mut echoed = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                s.write_all(&buf[..n]).map_err(|e| (echoed.len(), e))?;
                echoed.extend_from_slice(&buf[..n]);
            }
            Err(e) => return Err((echoed.len(), e)),
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    Ok(echoed)
}
