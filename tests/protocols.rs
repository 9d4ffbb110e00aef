//! `protocol = NAME` on the client side: what is said in clear before TLS, end to end
//! against scripted servers (std threads + the `openssl` crate, `tests/common/scripted.rs`);
//! and the `--check` verdicts on which protocol runs on which side. STARTTLS between real
//! tunnels is in `tests/protocols_tunnels.rs`, `protocol = connect` and `proxy` in
//! `tests/protocols_connect_proxy.rs`.
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
//! ```

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

use common::daemon::{is_connection_problem, rstunnel_bin};
use common::scripted::*;
use common::tools::{run, RunResult};
use common::*;

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
