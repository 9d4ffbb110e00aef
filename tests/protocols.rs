//! `protocol = NAME`: what is said in clear before TLS, end to end against scripted peers
//! written here (std threads + the `openssl` crate), the reference `stunnel4` and
//! `openssl s_client -starttls`.
//!
//! * Client-side STARTTLS (`client = yes`, `protocol = smtp | imap | pop3 | nntp | pgsql |
//!   ldap`, `verifyChain` + `CAfile`): a scripted server speaks the clear-text part of the
//!   protocol, then TLS with a certificate of the test CA, then echoes. The plain local
//!   client gets the server's greeting first, verbatim and in clear (smtp, imap, pop3,
//!   nntp), then its data crosses TLS to the server and back; the server checks the
//!   commands (`EHLO localhost` or `EHLO <protocolHost>`, `STARTTLS`, `STLS`, the
//!   SSLRequest, the LDAP ExtendedRequest for 1.3.6.1.4.1.1466.20037). A server that
//!   refuses STARTTLS (454, NO, -ERR, 580, `N`, resultCode 2) ends the session: the log
//!   says `protocol NAME: …` quoting the refusal, and not one more byte (no ClientHello)
//!   reaches the server. A server certificate of another CA fails the handshake.
//! * STARTTLS between tunnels (`protocol = smtp | imap | pop3 | pgsql` on both sides, with a
//!   backend that greets and echoes): rstunnel client → stunnel4 server, stunnel4 client →
//!   rstunnel server, rstunnel → rstunnel; and `openssl s_client -starttls smtp | imap |
//!   pop3 | postgres -verify_return_error` → rstunnel server.
//! * `protocol = connect`: a scripted HTTP proxy checks the `CONNECT host:port` request, the
//!   `Host` header, `Proxy-Authorization: Basic …` and `protocolHeader` lines, answers 200
//!   and splices to the real target (a TLS echo server, or an rstunnel server tunnel); a
//!   `407` answer ends the session with the status in the log and nothing more sent. The
//!   target behind the proxy gets the `protocolHost` name as SNI.
//! * `protocol = proxy` (server side): the backend's first line is exactly
//!   `PROXY TCP4 127.0.0.1 127.0.0.1 <client port> <tunnel port>\r\n`; the data after it is
//!   intact (also when it looks like a PROXY header itself). IPv6: `PROXY TCP6 ::1 ::1 …`.
//! * Configuration: `protocol = nntp | ldap` on a server section and `protocol = proxy` on a
//!   client section are refused by `--check` (exit 1, `… is not supported on the … side`),
//!   an unknown name is a line error `Unsupported protocol`; every implemented side passes.
//!
//! With `RSTUNNEL_TEST_BIN=/usr/bin/stunnel4` only the wire behaviour is checked (see
//! [`rstunnel_wording`]); the imap cases then differ on purpose (stunnel 5.68 sends its own
//! `* OK Connected.` instead of the server's greeting).
//!
//! ```text
//! test ──plain──▶ client [cli] (protocol = X) ──clear, then TLS──▶ scripted X server (echo)
//! test ──plain──▶ client [cli] (connect) ──▶ scripted proxy ──▶ TLS target
//! test ──TLS──▶ server [srv] (protocol = proxy) ──PROXY line + plain──▶ backend
//! ```

mod common;

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use openssl::ssl::{
    NameType, SslAcceptor, SslConnector, SslFiletype, SslMethod, SslStream, SslVerifyMode,
};

use common::daemon::{is_connection_problem, rstunnel_bin};
use common::tools::{run, RunResult};
use common::*;

/// Deadline for log lines, results and every socket read of the scripted peers.
const T: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// A generic threaded TCP server that reports one value per connection.

/// A TCP server on `127.0.0.1:0` (or `[::1]:0`) that runs `handler` on a thread per
/// connection (sockets with [`T`] read/write timeouts) and sends its result to the test.
struct Server<R> {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    rx: Mutex<Receiver<R>>,
    thread: Option<JoinHandle<()>>,
}

impl<R: Send + 'static> Server<R> {
    fn spawn(handler: impl Fn(TcpStream) -> R + Send + Sync + 'static) -> Server<R> {
        Server::spawn_on("127.0.0.1:0", handler)
    }

    fn spawn_on(bind: &str, handler: impl Fn(TcpStream) -> R + Send + Sync + 'static) -> Server<R> {
        let listener = TcpListener::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = channel();
        let handler = Arc::new(handler);
        let thread = {
            let stop = stop.clone();
            let accepted = accepted.clone();
            std::thread::spawn(move || {
                accept_until_stopped(listener.incoming(), &stop, |s| {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    s.set_read_timeout(Some(T)).unwrap();
                    s.set_write_timeout(Some(T)).unwrap();
                    let _ = s.set_nodelay(true);
                    let handler = handler.clone();
                    let tx = tx.clone();
                    std::thread::spawn(move || {
                        let _ = tx.send(handler(s));
                    });
                });
            })
        };
        Server {
            addr,
            stop,
            accepted,
            rx: Mutex::new(rx),
            thread: Some(thread),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The result of the next connection that ended; panics after `timeout`.
    fn next(&self, timeout: Duration) -> R {
        match self.rx.lock().unwrap().recv_timeout(timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => panic!(
                "server {} reported no finished connection within {timeout:?} ({} accepted)",
                self.addr,
                self.connections()
            ),
        }
    }
}

impl<R> Drop for Server<R> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Small I/O helpers for the scripted peers.

fn fail<T>(msg: impl Into<String>) -> io::Result<T> {
    Err(io::Error::other(msg.into()))
}

/// One CRLF (or LF) terminated line, without the terminator; EOF before it is an error.
fn line(s: &mut impl Read) -> io::Result<String> {
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
fn drain(s: &mut impl Read) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let end = read_to_end_or_timeout(s, &mut got, None);
    (got, end != End::TimedOut)
}

/// Reads exactly `n` bytes or what came before EOF / error / timeout.
fn read_up_to(s: &mut impl Read, n: usize) -> Vec<u8> {
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
fn acceptor(leaf: &LeafFiles) -> Arc<SslAcceptor> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    b.set_certificate_chain_file(&leaf.cert).unwrap();
    b.set_private_key_file(&leaf.key, SslFiletype::PEM).unwrap();
    b.check_private_key().unwrap();
    Arc::new(b.build())
}

/// A TLS client to a server tunnel that trusts `ca` (no host name check: we test the
/// plain side here).
fn tls_client(addr: SocketAddr, ca: &Path) -> SslStream<TcpStream> {
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
fn rstunnel_wording() -> bool {
    !rstunnel_bin()
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("stunnel"))
}

/// Waits for rstunnel's `Protocol NAME negotiated` line (see [`rstunnel_wording`]).
fn wait_negotiated(t: &Tunnel, name: &str) {
    if rstunnel_wording() {
        t.wait_for_log(&format!("Protocol {name} negotiated"), T);
    }
}

fn client_extra(protocol: &str, ca: &Path, more: &str) -> String {
    format!(
        "protocol = {protocol}\nverifyChain = yes\nCAfile = {}\nTIMEOUTbusy = 10\n{more}",
        ca.display()
    )
}

// ---------------------------------------------------------------------------------------
// Scripted STARTTLS servers.

/// What a scripted server saw on one connection.
#[derive(Debug, Default)]
struct Seen {
    /// The client's clear-text commands, normalised (`EHLO localhost`, `TAG STARTTLS`, …).
    commands: Vec<String>,
    /// The TLS handshake completed.
    tls: bool,
    /// The SNI name the client sent.
    sni: Option<String>,
    /// What was echoed inside TLS.
    echoed: Vec<u8>,
    /// After a refusal: the bytes that still came in clear (a ClientHello would be here).
    after_refusal: Vec<u8>,
    /// After a refusal: the client closed (rather than leaving the connection hanging).
    closed_after_refusal: bool,
    /// The script or the handshake failed.
    error: Option<String>,
}

/// The clear-text part: records the client's commands, answers; `Ok(true)` when it agreed
/// to start TLS, `Ok(false)` when it refused.
type Script = Arc<dyn Fn(&mut TcpStream, &mut Vec<String>) -> io::Result<bool> + Send + Sync>;

/// A server that runs `script`, then (if it agreed) TLS with `tls` and echoes until the
/// client's close_notify or EOF.
fn scripted_server(tls: Arc<SslAcceptor>, script: Script) -> Server<Seen> {
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

fn tls_echo(tls: &SslAcceptor, s: TcpStream, seen: &mut Seen) {
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
fn tls_echo_server(leaf: &LeafFiles) -> Server<Seen> {
    scripted_server(acceptor(leaf), Arc::new(|_, _| Ok(true)))
}

const SMTP_GREETING: &str = "220-mail.test ESMTP scripted\r\n220 mail.test ready\r\n";
const IMAP_GREETING: &str = "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] scripted IMAP\r\n";
const POP3_GREETING: &str = "+OK scripted POP3 ready\r\n";
const NNTP_GREETING: &str = "200 news.test scripted NNTP, posting allowed\r\n";

fn smtp_script(agree: bool) -> Script {
    Arc::new(move |s, commands| {
        s.write_all(SMTP_GREETING.as_bytes())?;
        let ehlo = line(s)?;
        commands.push(ehlo.clone());
        if !ehlo.starts_with("EHLO ") {
            return fail(format!("expected EHLO, got {ehlo:?}"));
        }
        s.write_all(
            b"250-mail.test greets you\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 STARTTLS\r\n",
        )?;
        let starttls = line(s)?;
        commands.push(starttls.clone());
        if starttls != "STARTTLS" {
            return fail(format!("expected STARTTLS, got {starttls:?}"));
        }
        if agree {
            s.write_all(b"220 2.0.0 Ready to start TLS\r\n")?;
        } else {
            s.write_all(b"454 4.7.0 TLS not available due to temporary reason\r\n")?;
        }
        Ok(agree)
    })
}

fn imap_script(agree: bool) -> Script {
    Arc::new(move |s, commands| {
        s.write_all(IMAP_GREETING.as_bytes())?;
        // A CAPABILITY query is answered (as a real server would) and not recorded.
        for _ in 0..4 {
            let l = line(s)?;
            let Some((tag, command)) = l.split_once(' ') else {
                return fail(format!("expected `TAG STARTTLS`, got {l:?}"));
            };
            let atom = !tag.is_empty()
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]+".contains(&b));
            if !atom {
                return fail(format!("the IMAP tag {tag:?} is not an atom"));
            }
            if command.eq_ignore_ascii_case("CAPABILITY") {
                s.write_all(
                    format!("* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n{tag} OK done\r\n")
                        .as_bytes(),
                )?;
                continue;
            }
            commands.push(format!("TAG {command}"));
            if !command.eq_ignore_ascii_case("STARTTLS") {
                return fail(format!("expected STARTTLS, got {l:?}"));
            }
            if agree {
                // An untagged line before the tagged answer must be skipped.
                s.write_all(
                    format!(
                        "* CAPABILITY IMAP4rev1 STARTTLS\r\n{tag} OK Begin TLS negotiation now\r\n"
                    )
                    .as_bytes(),
                )?;
            } else {
                s.write_all(format!("{tag} NO STARTTLS disabled here\r\n").as_bytes())?;
            }
            return Ok(agree);
        }
        fail("no STARTTLS after 4 commands")
    })
}

fn pop3_script(agree: bool) -> Script {
    Arc::new(move |s, commands| {
        s.write_all(POP3_GREETING.as_bytes())?;
        let l = line(s)?;
        commands.push(l.clone());
        if l != "STLS" {
            return fail(format!("expected STLS, got {l:?}"));
        }
        if agree {
            s.write_all(b"+OK Begin TLS negotiation\r\n")?;
        } else {
            s.write_all(b"-ERR TLS disabled here\r\n")?;
        }
        Ok(agree)
    })
}

fn nntp_script(agree: bool) -> Script {
    Arc::new(move |s, commands| {
        s.write_all(NNTP_GREETING.as_bytes())?;
        let l = line(s)?;
        commands.push(l.clone());
        if l != "STARTTLS" {
            return fail(format!("expected STARTTLS, got {l:?}"));
        }
        if agree {
            s.write_all(b"382 Continue with TLS negotiation\r\n")?;
        } else {
            s.write_all(b"580 Can not initiate TLS negotiation\r\n")?;
        }
        Ok(agree)
    })
}

/// PostgreSQL's SSLRequest: length 8, code 80877103.
const PG_SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

fn pgsql_script(agree: bool) -> Script {
    Arc::new(move |s, commands| {
        let mut req = [0u8; 8];
        s.read_exact(&mut req)?;
        if req != PG_SSL_REQUEST {
            return fail(format!("expected an SSLRequest, got {req:02x?}"));
        }
        commands.push("SSLRequest".into());
        s.write_all(if agree { b"S" } else { b"N" })?;
        Ok(agree)
    })
}

const LDAP_STARTTLS_OID: &[u8] = b"1.3.6.1.4.1.1466.20037";

fn ldap_script(agree: bool) -> Script {
    Arc::new(move |s, commands| {
        // LDAPMessage ::= SEQUENCE { messageID INTEGER, protocolOp [APPLICATION 23]
        //   ExtendedRequest { requestName [0] LDAPOID } }
        let mut head = [0u8; 2];
        s.read_exact(&mut head)?;
        if head[0] != 0x30 || head[1] >= 0x80 {
            return fail(format!("not a short LDAPMessage: {head:02x?}"));
        }
        let mut body = vec![0u8; usize::from(head[1])];
        s.read_exact(&mut body)?;
        let bad = || fail(format!("malformed ExtendedRequest: {body:02x?}"));
        if body.len() < 3 || body[0] != 0x02 {
            return bad();
        }
        let id_len = usize::from(body[1]);
        let Some(id) = body.get(2..2 + id_len) else {
            return bad();
        };
        let op = &body[2 + id_len..];
        if op.len() < 4 || op[0] != 0x77 || usize::from(op[1]) != op.len() - 2 || op[2] != 0x80 {
            return bad();
        }
        let oid = &op[4..4 + usize::from(op[3]).min(op.len() - 4)];
        commands.push(format!("ExtendedRequest {}", String::from_utf8_lossy(oid)));
        if oid != LDAP_STARTTLS_OID {
            return fail("ExtendedRequest for another OID");
        }
        // ExtendedResponse [APPLICATION 24] { resultCode, matchedDN, diagnosticMessage,
        //   responseName [10] }, with the request's message id.
        let (code, diag): (u8, &[u8]) = if agree {
            (0, b"")
        } else {
            (2, b"StartTLS not configured")
        };
        let mut inner = vec![0x0a, 0x01, code, 0x04, 0x00, 0x04, diag.len() as u8];
        inner.extend_from_slice(diag);
        inner.extend_from_slice(&[0x8a, LDAP_STARTTLS_OID.len() as u8]);
        inner.extend_from_slice(LDAP_STARTTLS_OID);
        let mut msg = vec![0x02, id_len as u8];
        msg.extend_from_slice(id);
        msg.extend_from_slice(&[0x78, inner.len() as u8]);
        msg.extend_from_slice(&inner);
        let mut full = vec![0x30, msg.len() as u8];
        full.extend_from_slice(&msg);
        s.write_all(&full)?;
        Ok(agree)
    })
}

/// One STARTTLS protocol as the tests drive it.
struct Case {
    name: &'static str,
    /// What the local client must receive in clear before anything else.
    greeting: &'static str,
    /// The clear-text commands the server must have received (normalised by its script).
    commands: &'static [&'static str],
    /// Text of the refusal that the log line must quote.
    refusal: &'static str,
    script: fn(bool) -> Script,
}

const SMTP: Case = Case {
    name: "smtp",
    greeting: SMTP_GREETING,
    commands: &["EHLO localhost", "STARTTLS"],
    refusal: "454 4.7.0 TLS not available",
    script: smtp_script,
};
const IMAP: Case = Case {
    name: "imap",
    greeting: IMAP_GREETING,
    commands: &["TAG STARTTLS"],
    refusal: "NO STARTTLS disabled here",
    script: imap_script,
};
const POP3: Case = Case {
    name: "pop3",
    greeting: POP3_GREETING,
    commands: &["STLS"],
    refusal: "-ERR TLS disabled here",
    script: pop3_script,
};
const NNTP: Case = Case {
    name: "nntp",
    greeting: NNTP_GREETING,
    commands: &["STARTTLS"],
    refusal: "580 Can not initiate TLS negotiation",
    script: nntp_script,
};
const PGSQL: Case = Case {
    name: "pgsql",
    greeting: "",
    commands: &["SSLRequest"],
    refusal: "'N'",
    script: pgsql_script,
};
const LDAP: Case = Case {
    name: "ldap",
    greeting: "",
    commands: &["ExtendedRequest 1.3.6.1.4.1.1466.20037"],
    refusal: "resultCode 2",
    script: ldap_script,
};

/// Client tunnel `protocol = NAME` in front of the scripted server that agrees: greeting in
/// clear first, then data echoed through TLS; the server checked the clear-text commands.
fn starttls_round_trip(case: &Case) {
    let dir = TestDir::new(&format!("starttls-{}", case.name));
    let pki = Pki::new(&dir);
    let server = scripted_server(acceptor(&pki.server), (case.script)(true));
    let tunnel = Tunnel::start(
        &dir,
        "client",
        &client_body(server.addr(), &client_extra(case.name, &pki.ca_file, "")),
    );

    let mut c = connect(tunnel.addr("cli"));
    c.set_read_timeout(Some(T)).unwrap();
    let greeting = read_up_to(&mut c, case.greeting.len());
    assert_eq!(
        String::from_utf8_lossy(&greeting),
        case.greeting,
        "[{}] the local client must first get the server's greeting, verbatim and in clear",
        case.name
    );
    let mut data = format!("{} data after STARTTLS\r\nQUIT\r\n", case.name).into_bytes();
    data.extend_from_slice(&payload(7, 20_000));
    c.write_all(&data).unwrap();
    let back = read_up_to(&mut c, data.len());
    assert!(
        back == data,
        "[{}] {} of {} byte(s) came back through the STARTTLS session; server saw: {:?}",
        case.name,
        back.len(),
        data.len(),
        server.next(T)
    );
    c.shutdown(Shutdown::Write).unwrap();
    let (rest, closed) = drain(&mut c);
    assert!(
        rest.is_empty() && closed,
        "[{}] after the echo: {} stray byte(s), closed: {closed}",
        case.name,
        rest.len()
    );

    let seen = server.next(T);
    assert_eq!(
        seen.error, None,
        "[{}] scripted server: {seen:?}",
        case.name
    );
    assert_eq!(
        seen.commands, case.commands,
        "[{}] clear-text commands the server received",
        case.name
    );
    assert!(seen.tls, "[{}] no TLS handshake after STARTTLS", case.name);
    assert!(
        seen.echoed == data,
        "[{}] the server echoed {} byte(s) inside TLS, {} were sent",
        case.name,
        seen.echoed.len(),
        data.len()
    );
    wait_negotiated(&tunnel, case.name);
    assert!(
        tunnel.connection_problems(3).is_empty(),
        "[{}] errors in a successful session: {:?}",
        case.name,
        tunnel.connection_problems(3)
    );
}

/// The scripted server refuses STARTTLS: the local client gets the greeting and then the
/// end of the connection, the log quotes the refusal, and no TLS byte reaches the server.
fn starttls_refused(case: &Case) {
    let dir = TestDir::new(&format!("starttls-refused-{}", case.name));
    let pki = Pki::new(&dir);
    let server = scripted_server(acceptor(&pki.server), (case.script)(false));
    let tunnel = Tunnel::start(
        &dir,
        "client",
        &client_body(server.addr(), &client_extra(case.name, &pki.ca_file, "")),
    );

    let p = probe(tunnel.addr("cli"), b"", T);
    assert!(
        p.received.starts_with(case.greeting.as_bytes()),
        "[{}] the local client must get the greeting before the session ends; got {:?}",
        case.name,
        String::from_utf8_lossy(&p.received)
    );
    assert_ne!(
        p.end,
        End::TimedOut,
        "[{}] the session must end when the server refuses STARTTLS, not hang",
        case.name
    );

    let seen = server.next(T);
    assert_eq!(
        seen.error, None,
        "[{}] scripted server: {seen:?}",
        case.name
    );
    assert_eq!(seen.commands, case.commands, "[{}]", case.name);
    assert!(
        seen.after_refusal.is_empty(),
        "[{}] after the refusal the tunnel still sent {} byte(s) (first {:02x?}): a TLS \
         handshake must not start",
        case.name,
        seen.after_refusal.len(),
        &seen.after_refusal[..seen.after_refusal.len().min(8)]
    );
    assert!(
        seen.closed_after_refusal,
        "[{}] the tunnel left the server connection open after the refusal",
        case.name
    );

    tunnel.wait_close_counts(1, T);
    if !rstunnel_wording() {
        return;
    }
    let why = format!("protocol {}:", case.name);
    let line = tunnel.wait_for_log(&why, T);
    assert!(
        line.contains(case.refusal),
        "[{}] the log line must quote the refusal {:?}: {line}",
        case.name,
        case.refusal
    );
    assert!(
        is_connection_problem(&line, 3),
        "[{}] the refusal must be logged as an error (LOG3 or worse): {line}",
        case.name
    );
    assert!(
        !tunnel.has_log(&format!("Protocol {} negotiated", case.name)),
        "[{}] a refused STARTTLS was logged as negotiated",
        case.name
    );
}

#[test]
fn smtp_starttls_round_trip() {
    starttls_round_trip(&SMTP);
}

#[test]
fn imap_starttls_round_trip() {
    starttls_round_trip(&IMAP);
}

#[test]
fn pop3_stls_round_trip() {
    starttls_round_trip(&POP3);
}

#[test]
fn nntp_starttls_round_trip() {
    starttls_round_trip(&NNTP);
}

#[test]
fn pgsql_ssl_request_round_trip() {
    starttls_round_trip(&PGSQL);
}

#[test]
fn ldap_starttls_round_trip() {
    starttls_round_trip(&LDAP);
}

#[test]
fn smtp_refused_starttls_ends_the_session() {
    starttls_refused(&SMTP);
}

#[test]
fn imap_refused_starttls_ends_the_session() {
    starttls_refused(&IMAP);
}

#[test]
fn pop3_refused_stls_ends_the_session() {
    starttls_refused(&POP3);
}

#[test]
fn nntp_refused_starttls_ends_the_session() {
    starttls_refused(&NNTP);
}

#[test]
fn pgsql_refused_ssl_request_ends_the_session() {
    starttls_refused(&PGSQL);
}

#[test]
fn ldap_refused_starttls_ends_the_session() {
    starttls_refused(&LDAP);
}

/// `protocolHost` is the SMTP HELO name.
#[test]
fn smtp_ehlo_uses_protocol_host() {
    let dir = TestDir::new("smtp-ehlo-name");
    let pki = Pki::new(&dir);
    let server = scripted_server(acceptor(&pki.server), smtp_script(true));
    let tunnel = Tunnel::start(
        &dir,
        "client",
        &client_body(
            server.addr(),
            &client_extra("smtp", &pki.ca_file, "protocolHost = relay.example.org\n"),
        ),
    );
    let mut c = connect(tunnel.addr("cli"));
    assert_eq!(
        read_up_to(&mut c, SMTP_GREETING.len()),
        SMTP_GREETING.as_bytes()
    );
    c.write_all(b"ping\r\n").unwrap();
    assert_eq!(read_up_to(&mut c, 6), b"ping\r\n");
    drop(c);
    let seen = server.next(T);
    assert_eq!(seen.commands, ["EHLO relay.example.org", "STARTTLS"]);
}

/// After STARTTLS the server certificate is still checked (`verifyChain` + `CAfile`): a
/// server with a certificate of another CA gets no data.
#[test]
fn smtp_starttls_checks_the_server_certificate() {
    let dir = TestDir::new("smtp-wrong-cert");
    let pki = Pki::new(&dir);
    let server = scripted_server(acceptor(&pki.wrong_server), smtp_script(true));
    let tunnel = Tunnel::start(
        &dir,
        "client",
        &client_body(server.addr(), &client_extra("smtp", &pki.ca_file, "")),
    );
    let p = probe(tunnel.addr("cli"), b"secret\r\n", T);
    assert!(
        p.received.starts_with(SMTP_GREETING.as_bytes()) && !p.received.ends_with(b"secret\r\n"),
        "got {:?}",
        String::from_utf8_lossy(&p.received)
    );
    assert_ne!(p.end, End::TimedOut);
    let seen = server.next(T);
    assert!(
        !seen.tls && seen.echoed.is_empty(),
        "the server with an untrusted certificate completed TLS: {seen:?}"
    );
    let line = tunnel.wait_for_log("SSL_connect", T);
    assert!(is_connection_problem(&line, 3), "{line}");
    assert!(
        line.to_lowercase().contains("certificate"),
        "the handshake error must be about the certificate: {line}"
    );
}

// ---------------------------------------------------------------------------------------
// STARTTLS between two tunnels: rstunnel and stunnel4 in either role, and openssl s_client.

/// A backend that sends `greeting` first, then echoes until EOF; reports what it echoed.
fn greeting_echo_backend(greeting: &'static str) -> Server<Result<Vec<u8>, String>> {
    Server::spawn(move |mut s| {
        s.write_all(greeting.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut echoed = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    s.write_all(&buf[..n]).map_err(|e| e.to_string())?;
                    echoed.extend_from_slice(&buf[..n]);
                }
                Err(e) => return Err(format!("after {} byte(s): {e}", echoed.len())),
            }
        }
        let _ = s.shutdown(Shutdown::Write);
        Ok(echoed)
    })
}

/// What a backend behind a server-side STARTTLS tunnel says first (the tunnel consumes
/// it: its client already had the tunnel's own greeting), and how the greeting the local
/// client gets starts; pgsql has none.
fn greetings(name: &str) -> (&'static str, &'static str) {
    match name {
        "smtp" => ("220 backend.test ESMTP\r\n", "220"),
        "imap" => ("* OK backend IMAP ready\r\n", "* OK"),
        "pop3" => ("+OK backend POP3 ready\r\n", "+OK"),
        _ => ("", ""),
    }
}

/// Client tunnel (`client_prog`, `protocol = NAME`) → server tunnel (`server_prog`, same
/// protocol) → a backend that greets and echoes. The local client's first line starts
/// with the protocol's greeting code, then 100 kB go both ways through TLS.
fn starttls_between(client_prog: Program, server_prog: Program, name: &str) {
    if client_prog == Program::Stunnel4 || server_prog == Program::Stunnel4 {
        tools::stunnel4();
    }
    let (backend_greeting, greeting_prefix) = greetings(name);
    let dir = TestDir::new(&format!("starttls-{client_prog:?}-{server_prog:?}-{name}"));
    let pki = Pki::new(&dir);
    let backend = greeting_echo_backend(backend_greeting);
    let server = Tunnel::start_program(
        server_prog,
        &dir,
        "server",
        &server_body(
            backend.addr(),
            &pki.server.combined,
            &format!("protocol = {name}\n"),
        ),
    );
    let client = Tunnel::start_program(
        client_prog,
        &dir,
        "client",
        &client_body(server.addr("srv"), &client_extra(name, &pki.ca_file, "")),
    );
    let logs = || {
        format!(
            "\n--- client log ---\n{}--- server log ---\n{}",
            client.log_text(),
            server.log_text()
        )
    };
    let mut c = connect(client.addr("cli"));
    c.set_read_timeout(Some(T)).unwrap();
    if !greeting_prefix.is_empty() {
        let l = line(&mut c).unwrap_or_else(|e| {
            panic!(
                "[{name}] no greeting line for the local client: {e}{}",
                logs()
            )
        });
        assert!(
            l.starts_with(greeting_prefix),
            "[{name}] greeting {l:?} does not start with {greeting_prefix:?}{}",
            logs()
        );
    }
    let data = payload(11, 100_000);
    let writer = {
        let mut w = c.try_clone().unwrap();
        let data = data.clone();
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
            let _ = w.shutdown(Shutdown::Write);
        })
    };
    let mut back = Vec::new();
    let _ = c.read_to_end(&mut back);
    writer.join().unwrap();
    assert!(
        back == data,
        "[{name}] {} of {} byte(s) came back{}",
        back.len(),
        data.len(),
        logs()
    );
    let echoed = backend.next(T).expect("backend");
    assert!(echoed == data, "[{name}] the backend saw other data");
    for (prog, t) in [(client_prog, &client), (server_prog, &server)] {
        if prog == Program::Rstunnel {
            wait_negotiated(t, name);
        }
    }
}

#[test]
fn smtp_rstunnel_client_to_stunnel4_server() {
    starttls_between(Program::Rstunnel, Program::Stunnel4, "smtp");
}

#[test]
fn imap_rstunnel_client_to_stunnel4_server() {
    starttls_between(Program::Rstunnel, Program::Stunnel4, "imap");
}

#[test]
fn pop3_rstunnel_client_to_stunnel4_server() {
    starttls_between(Program::Rstunnel, Program::Stunnel4, "pop3");
}

#[test]
fn pgsql_rstunnel_client_to_stunnel4_server() {
    starttls_between(Program::Rstunnel, Program::Stunnel4, "pgsql");
}

#[test]
fn smtp_stunnel4_client_to_rstunnel_server() {
    starttls_between(Program::Stunnel4, Program::Rstunnel, "smtp");
}

#[test]
fn imap_stunnel4_client_to_rstunnel_server() {
    starttls_between(Program::Stunnel4, Program::Rstunnel, "imap");
}

#[test]
fn pop3_stunnel4_client_to_rstunnel_server() {
    starttls_between(Program::Stunnel4, Program::Rstunnel, "pop3");
}

#[test]
fn pgsql_stunnel4_client_to_rstunnel_server() {
    starttls_between(Program::Stunnel4, Program::Rstunnel, "pgsql");
}

#[test]
fn smtp_rstunnel_client_to_rstunnel_server() {
    starttls_between(Program::Rstunnel, Program::Rstunnel, "smtp");
}

#[test]
fn imap_rstunnel_client_to_rstunnel_server() {
    starttls_between(Program::Rstunnel, Program::Rstunnel, "imap");
}

#[test]
fn pop3_rstunnel_client_to_rstunnel_server() {
    starttls_between(Program::Rstunnel, Program::Rstunnel, "pop3");
}

#[test]
fn pgsql_rstunnel_client_to_rstunnel_server() {
    starttls_between(Program::Rstunnel, Program::Rstunnel, "pgsql");
}

/// `openssl s_client -starttls X` → rstunnel server `protocol = X` → a backend that greets,
/// answers one line with `echo: LINE` and closes. s_client checks the certificate
/// (`-verify_return_error`) and prints the answer.
fn s_client_to_rstunnel_server(name: &str, starttls: &str) {
    let (backend_greeting, _) = greetings(name);
    let dir = TestDir::new(&format!("s-client-{name}"));
    let pki = Pki::new(&dir);
    let backend = Server::spawn(move |mut s| -> Result<String, String> {
        s.write_all(backend_greeting.as_bytes())
            .map_err(|e| e.to_string())?;
        let l = line(&mut s).map_err(|e| e.to_string())?;
        s.write_all(format!("echo: {l}\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        let _ = s.shutdown(Shutdown::Write);
        let _ = drain(&mut s);
        Ok(l)
    });
    let server = Tunnel::server(&dir, &pki, backend.addr(), &format!("protocol = {name}\n"));
    let args = [
        OsStr::new("-starttls"),
        OsStr::new(starttls),
        OsStr::new("-CAfile"),
        pki.ca_file.as_os_str(),
        OsStr::new("-verify_return_error"),
        OsStr::new("-quiet"),
    ];
    let r = openssl_cli::s_client(
        server.port("srv"),
        &args,
        b"hello from s_client\n",
        Duration::from_secs(20),
    );
    let got = backend.next(T);
    assert_eq!(
        got.as_deref(),
        Ok("hello from s_client"),
        "[{name}] the backend did not get s_client's line\n{}\n--- server log ---\n{}",
        r.describe(),
        server.log_text()
    );
    assert!(
        r.stdout.contains("echo: hello from s_client"),
        "[{name}] s_client did not print the backend's answer\n{}\n--- server log ---\n{}",
        r.describe(),
        server.log_text()
    );
    wait_negotiated(&server, name);
}

#[test]
fn smtp_openssl_s_client_to_rstunnel_server() {
    s_client_to_rstunnel_server("smtp", "smtp");
}

#[test]
fn imap_openssl_s_client_to_rstunnel_server() {
    s_client_to_rstunnel_server("imap", "imap");
}

#[test]
fn pop3_openssl_s_client_to_rstunnel_server() {
    s_client_to_rstunnel_server("pop3", "pop3");
}

#[test]
fn pgsql_openssl_s_client_to_rstunnel_server() {
    s_client_to_rstunnel_server("pgsql", "postgres");
}

// ---------------------------------------------------------------------------------------
// protocol = connect

/// What the scripted HTTP proxy saw on one connection.
#[derive(Debug, Default)]
struct ProxySeen {
    /// Request line and header lines, without the blank line.
    request: Vec<String>,
    /// The `Proxy-Authorization` credentials, as `scheme token` with the scheme in lower
    /// case (it is case-insensitive, RFC 9110 §11.1).
    auth: Option<String>,
    /// The status line it answered with.
    status: String,
    /// After a refusal: bytes that still came (a ClientHello would be here).
    after_refusal: Vec<u8>,
    error: Option<String>,
}

/// A scripted HTTP proxy: reads `CONNECT host:port HTTP/1.1` and its headers; when
/// `expected_auth` is set, a request without exactly that `Proxy-Authorization` value is
/// answered 407; otherwise connects to host:port, answers 200 and splices.
fn http_proxy(expected_auth: Option<String>) -> Server<ProxySeen> {
    Server::spawn(move |mut s| {
        let mut seen = ProxySeen::default();
        loop {
            match line(&mut s) {
                Ok(l) if l.is_empty() => break,
                Ok(l) => seen.request.push(l),
                Err(e) => {
                    seen.error = Some(format!("reading the request: {e}"));
                    return seen;
                }
            }
        }
        let target = seen
            .request
            .first()
            .and_then(|r| r.strip_prefix("CONNECT "))
            .and_then(|r| r.strip_suffix(" HTTP/1.1").or(r.strip_suffix(" HTTP/1.0")))
            .map(str::to_string);
        let Some(target) = target else {
            seen.error = Some(format!("not a CONNECT request: {:?}", seen.request));
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
            return seen;
        };
        seen.auth = proxy_authorization(&seen.request);
        if let Some(want) = &expected_auth {
            let given = seen.auth.clone();
            if given.as_deref() != Some(want.as_str()) {
                seen.status = "HTTP/1.1 407 Proxy Authentication Required".into();
                let _ = s.write_all(
                    format!(
                        "{}\r\nProxy-Authenticate: Basic realm=\"tests\"\r\nContent-Length: 0\r\n\r\n",
                        seen.status
                    )
                    .as_bytes(),
                );
                let (after, _) = drain(&mut s);
                seen.after_refusal = after;
                return seen;
            }
        }
        let addr = target
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.find(SocketAddr::is_ipv4));
        let up = addr.and_then(|a| TcpStream::connect_timeout(&a, T).ok());
        let Some(up) = up else {
            seen.status = "HTTP/1.1 502 Bad Gateway".into();
            let _ = s.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
            seen.error = Some(format!("cannot reach {target}"));
            return seen;
        };
        seen.status = "HTTP/1.1 200 Connection established".into();
        if let Err(e) =
            s.write_all(format!("{}\r\nProxy-Agent: scripted\r\n\r\n", seen.status).as_bytes())
        {
            seen.error = Some(format!("answering: {e}"));
            return seen;
        }
        splice(s, up);
        seen
    })
}

/// Copies both ways until both directions ended (half-close passed on).
fn splice(a: TcpStream, b: TcpStream) {
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let _ = from.set_read_timeout(Some(Duration::from_secs(20)));
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        })
    };
    let one = copy(a.try_clone().unwrap(), b.try_clone().unwrap());
    let two = copy(b, a);
    let _ = one.join();
    let _ = two.join();
}

/// The `Proxy-Authorization` header of a request, normalised as in [`ProxySeen::auth`].
fn proxy_authorization(request: &[String]) -> Option<String> {
    request.iter().find_map(|h| {
        let (name, value) = h.split_once(':')?;
        if !name.eq_ignore_ascii_case("Proxy-Authorization") {
            return None;
        }
        let (scheme, token) = value.trim().split_once(' ')?;
        Some(format!("{} {}", scheme.to_ascii_lowercase(), token.trim()))
    })
}

/// Basic credentials as [`ProxySeen::auth`] holds them.
fn basic(user: &str, password: &str) -> String {
    format!(
        "basic {}",
        openssl::base64::encode_block(format!("{user}:{password}").as_bytes())
    )
}

/// Client tunnel → scripted proxy (Basic auth) → TLS echo server: the proxy saw the
/// CONNECT line, Host, Proxy-Authorization and the protocolHeader; data flows both ways.
#[test]
fn connect_through_an_authenticating_proxy() {
    let dir = TestDir::new("connect-auth");
    let pki = Pki::new(&dir);
    let target = tls_echo_server(&pki.server);
    let proxy = http_proxy(Some(basic("alice", "0pen:Sesame")));
    let target_name = format!("127.0.0.1:{}", target.addr().port());
    let tunnel = Tunnel::start(
        &dir,
        "client",
        &client_body(
            proxy.addr(),
            &client_extra(
                "connect",
                &pki.ca_file,
                &format!(
                    "protocolHost = {target_name}\nprotocolUsername = alice\n\
                     protocolPassword = 0pen:Sesame\nprotocolHeader = X-Tunnel-Test: yes\n"
                ),
            ),
        ),
    );
    let data = payload(21, 300_000);
    let back = echo_session(tunnel.addr("cli"), &data).expect("session through the proxy");
    assert!(
        back == data,
        "{} of {} byte(s) came back through the proxy",
        back.len(),
        data.len()
    );

    let seen = proxy.next(T);
    assert_eq!(seen.error, None, "{seen:?}");
    assert_eq!(seen.status, "HTTP/1.1 200 Connection established");
    assert_eq!(
        seen.request[0],
        format!("CONNECT {target_name} HTTP/1.1"),
        "request line: {:?}",
        seen.request
    );
    assert_eq!(
        seen.auth,
        Some(basic("alice", "0pen:Sesame")),
        "Proxy-Authorization: {:?}",
        seen.request
    );
    for want in [
        format!("Host: {target_name}"),
        "X-Tunnel-Test: yes".to_string(),
    ] {
        assert!(
            seen.request.contains(&want),
            "the CONNECT request lacks {want:?}: {:?}",
            seen.request
        );
    }
    let t = target.next(T);
    assert!(
        t.tls && t.echoed == data && t.error.is_none(),
        "target: tls {} echoed {} error {:?}",
        t.tls,
        t.echoed.len(),
        t.error
    );
    wait_negotiated(&tunnel, "connect");
}

/// Client tunnel → scripted proxy (no auth) → rstunnel server tunnel → echo: the usual
/// two-tunnel chain with a proxy in the middle; the request carries no Proxy-Authorization.
#[test]
fn connect_through_a_proxy_to_an_rstunnel_server() {
    let dir = TestDir::new("connect-rstunnel");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let server = Tunnel::server(&dir, &pki, echo.addr(), "");
    let proxy = http_proxy(None);
    let target_name = format!("localhost:{}", server.port("srv"));
    let client = Tunnel::start(
        &dir,
        "client",
        &client_body(
            proxy.addr(),
            &client_extra(
                "connect",
                &pki.ca_file,
                &format!("protocolHost = {target_name}\ncheckHost = localhost\n"),
            ),
        ),
    );
    let data = payload(22, 1_000_000);
    let back = echo_session(client.addr("cli"), &data).expect("session through the proxy");
    assert!(
        back == data,
        "{} of {} byte(s) came back",
        back.len(),
        data.len()
    );
    let seen = proxy.next(T);
    assert_eq!(seen.request[0], format!("CONNECT {target_name} HTTP/1.1"));
    assert!(
        seen.auth.is_none(),
        "no protocolUsername, yet credentials were sent: {:?}",
        seen.request
    );
    assert_eq!(
        echo.next_result(T),
        Digest::of(&data),
        "the backend behind the server tunnel saw other data"
    );
}

/// The proxy refuses (407): the session ends, the log has the status, the target gets no
/// connection and the proxy no TLS byte.
#[test]
fn connect_proxy_407_ends_the_session() {
    let dir = TestDir::new("connect-407");
    let pki = Pki::new(&dir);
    let target = tls_echo_server(&pki.server);
    let proxy = http_proxy(Some(basic("alice", "right")));
    let target_name = format!("127.0.0.1:{}", target.addr().port());
    let tunnel = Tunnel::start(
        &dir,
        "client",
        &client_body(
            proxy.addr(),
            &client_extra(
                "connect",
                &pki.ca_file,
                &format!(
                    "protocolHost = {target_name}\nprotocolUsername = alice\nprotocolPassword = wrong\n"
                ),
            ),
        ),
    );
    let p = probe(tunnel.addr("cli"), b"hello?\r\n", T);
    assert_ne!(p.end, End::TimedOut, "the session must end after a 407");
    assert!(
        p.received.is_empty(),
        "the local client got {:?}",
        String::from_utf8_lossy(&p.received)
    );
    let seen = proxy.next(T);
    assert_eq!(seen.status, "HTTP/1.1 407 Proxy Authentication Required");
    assert_eq!(
        seen.auth,
        Some(basic("alice", "wrong")),
        "{:?}",
        seen.request
    );
    assert!(
        seen.after_refusal.is_empty(),
        "after the 407 the tunnel still sent {} byte(s) to the proxy",
        seen.after_refusal.len()
    );
    if rstunnel_wording() {
        let line = tunnel.wait_for_log("protocol connect:", T);
        assert!(
            line.contains("407"),
            "the log must give the proxy's status: {line}"
        );
        assert!(is_connection_problem(&line, 3), "{line}");
    }
    assert_eq!(
        target.connections(),
        0,
        "the target was reached despite the 407"
    );
    tunnel.wait_close_counts(1, T);
}

/// `sni`: a client's default SNI is the host of `protocolHost`, else of the first
/// `connect`. Behind a proxy (`connect` = the proxy's IP) the target must see the name of
/// `protocolHost`.
#[test]
fn connect_sends_the_protocol_host_name_as_sni() {
    let dir = TestDir::new("connect-sni");
    let pki = Pki::new(&dir);
    let target = tls_echo_server(&pki.server);
    let proxy = http_proxy(None);
    let tunnel = Tunnel::start(
        &dir,
        "client",
        &client_body(
            proxy.addr(),
            &client_extra(
                "connect",
                &pki.ca_file,
                &format!("protocolHost = localhost:{}\n", target.addr().port()),
            ),
        ),
    );
    let back = echo_session(tunnel.addr("cli"), b"sni?\n").expect("session");
    assert_eq!(back, b"sni?\n");
    let seen = target.next(T);
    assert!(seen.tls, "{seen:?}");
    assert_eq!(
        seen.sni.as_deref(),
        Some("localhost"),
        "SNI sent to the target behind the proxy (protocolHost = localhost:PORT, connect = \
         an IP)"
    );
}

// ---------------------------------------------------------------------------------------
// protocol = proxy (server side)

/// A backend that reads the first line (the PROXY header, at most 107 bytes + CRLF in v1),
/// then echoes until EOF; reports (header, echoed).
fn proxy_header_backend(bind: &str) -> Server<Result<(String, Vec<u8>), String>> {
    Server::spawn_on(bind, |mut s| {
        let raw = read_line(&mut s, 108).map_err(|e| e.to_string())?;
        let header = String::from_utf8_lossy(&raw).into_owned();
        let mut echoed = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    s.write_all(&buf[..n]).map_err(|e| e.to_string())?;
                    echoed.extend_from_slice(&buf[..n]);
                }
                Err(e) => return Err(format!("{header:?} then {} byte(s): {e}", echoed.len())),
            }
        }
        let _ = s.shutdown(Shutdown::Write);
        Ok((header, echoed))
    })
}

/// TLS client → server tunnel `protocol = proxy` (accepting on `accept`) → backend.
/// Returns (expected header, backend's result).
fn proxy_header_session(
    label: &str,
    accept: &str,
    ip: &str,
    family: &str,
) -> (String, (String, Vec<u8>)) {
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let backend = proxy_header_backend("127.0.0.1:0");
    let tunnel = Tunnel::start(
        &dir,
        "server",
        &format!(
            "[srv]\naccept = {accept}\nconnect = {}\ncert = {}\nprotocol = proxy\n",
            backend.addr(),
            pki.server.combined.display()
        ),
    );
    let mut tls = tls_client(tunnel.addr("srv"), &pki.ca_file);
    let client_port = tls.get_ref().local_addr().unwrap().port();
    let expected = format!(
        "PROXY {family} {ip} {ip} {client_port} {}\r\n",
        tunnel.port("srv")
    );
    // Data that looks like a PROXY header itself must pass through verbatim.
    let mut data = b"PROXY TCP4 10.9.8.7 10.9.8.6 1 2\r\n".to_vec();
    data.extend_from_slice(&payload(31, 96 * 1024));
    for chunk in data.chunks(16 * 1024) {
        tls.write_all(chunk).unwrap();
        let mut back = vec![0u8; chunk.len()];
        tls.read_exact(&mut back)
            .unwrap_or_else(|e| panic!("reading the echo through the proxy tunnel: {e}"));
        assert!(back == chunk, "the echo differs");
    }
    let _ = tls.shutdown();
    let got = backend.next(T).unwrap_or_else(|e| panic!("backend: {e}"));
    assert!(
        got.1 == data,
        "the data after the PROXY header is not intact ({} byte(s), {} sent)",
        got.1.len(),
        data.len()
    );
    tunnel.wait_close_counts(1, T);
    (expected, got)
}

#[test]
fn proxy_protocol_header_tcp4() {
    let (expected, (header, _)) =
        proxy_header_session("proxy-v1-tcp4", "127.0.0.1:0", "127.0.0.1", "TCP4");
    assert_eq!(header, expected, "PROXY v1 header the backend received");
}

#[test]
fn proxy_protocol_header_tcp6() {
    if TcpListener::bind("[::1]:0").is_err() {
        skipped("proxy_protocol_header_tcp6: no IPv6 loopback (::1) on this host");
        return;
    }
    let (expected, (header, _)) = proxy_header_session("proxy-v1-tcp6", "::1:0", "::1", "TCP6");
    assert_eq!(header, expected, "PROXY v1 header the backend received");
}

// ---------------------------------------------------------------------------------------
// Configuration checks

fn check(dir: &TestDir, name: &str, conf: &str) -> (std::path::PathBuf, RunResult) {
    let path = dir.write(name, conf);
    let r = run(
        &rstunnel_bin(),
        &["--check", path.to_str().expect("utf-8 path")],
        T,
    );
    (path, r)
}

/// nntp and ldap have no server side (neither in stunnel 5.68).
#[test]
fn check_refuses_nntp_and_ldap_on_the_server_side() {
    let dir = TestDir::new("check-server-side");
    let pki = Pki::new(&dir);
    for name in ["nntp", "ldap"] {
        let (_, r) = check(
            &dir,
            &format!("{name}-server.conf"),
            &format!(
                "foreground = yes\n[news]\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:119\ncert = {}\nprotocol = {name}\n",
                pki.server.combined.display()
            ),
        );
        tools::assert_config_refused(
            &r,
            &format!("protocol = {name} is not supported on the server side yet"),
        );
        assert!(
            r.stderr.contains("[news]"),
            "the message must name the section\n{}",
            r.describe()
        );
    }
}

#[test]
fn check_refuses_proxy_on_the_client_side() {
    let dir = TestDir::new("check-proxy-client");
    let (_, r) = check(
        &dir,
        "proxy-client.conf",
        "foreground = yes\nclient = yes\n[p]\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:9\nprotocol = proxy\n",
    );
    tools::assert_config_refused(&r, "protocol = proxy is not supported on the client side");
}

#[test]
fn check_refuses_an_unknown_protocol_with_its_line() {
    let dir = TestDir::new("check-protocol-nonsense");
    let (path, r) = check(
        &dir,
        "nonsense.conf",
        "foreground = yes\nclient = yes\n[n]\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:9\nprotocol = nonsense\n",
    );
    tools::assert_config_refused(
        &r,
        &format!(
            "{}:6: \"protocol = nonsense\": Unsupported protocol",
            path.display()
        ),
    );
}

/// Control for the refusals above: every implemented side passes `--check`.
#[test]
fn check_accepts_every_implemented_side() {
    let dir = TestDir::new("check-protocols-ok");
    let pki = Pki::new(&dir);
    let mut conf = String::from("foreground = yes\n");
    for (i, p) in ["smtp", "imap", "pop3", "nntp", "pgsql", "ldap", "connect"]
        .iter()
        .enumerate()
    {
        conf.push_str(&format!(
            "[c-{p}]\nclient = yes\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:{}\nprotocol = {p}\nprotocolHost = localhost:9\n",
            1000 + i
        ));
    }
    for p in ["proxy", "smtp", "imap", "pop3", "pgsql"] {
        conf.push_str(&format!(
            "[s-{p}]\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:9\ncert = {}\nprotocol = {p}\n",
            pki.server.combined.display()
        ));
    }
    let (_, r) = check(&dir, "ok.conf", &conf);
    assert_eq!(r.status.code(), Some(0), "{}", r.describe());
    assert!(
        r.stdout.contains("configuration OK") || r.stderr.contains("configuration OK"),
        "{}",
        r.describe()
    );
}
