//! `protocol = NAME`: what is said in clear before TLS starts (STARTTLS and proxies), as
//! one table of hooks per protocol: no `if protocol == …` anywhere else.
//!
//! Client side (`client = yes`), run on the far connection before the handshake:
//! `smtp`, `imap`, `pop3`, `nntp` (greeting passed to the local client, then STARTTLS),
//! `pgsql` and `ldap` (their binary StartTLS requests), `connect` (HTTP CONNECT through
//! a proxy, with Basic authentication). Server side, on the accepted connection before
//! the handshake: `smtp`, `imap`, `pop3` (rstunnel greets and offers STARTTLS; the
//! backend's own greeting is consumed once it is connected, since the client already had
//! one) and `pgsql` (SSLRequest answered `S`); after the far connection is made: `proxy`
//! (a PROXY protocol v1 header to the target). Reads exactly what each exchange
//! needs (line by line), so no TLS byte is ever consumed here. Blocking, under
//! TIMEOUTbusy as a socket timeout.

use std::io::{self, Read, Write};

use crate::config::ServiceOptions;
use crate::net::Stream;

/// What a protocol hook gets.
pub struct Exchange<'a> {
    pub opts: &'a ServiceOptions,
    /// The accepted connection (client side: the local plain client).
    pub local: &'a Stream,
    /// The far connection, still in clear; `None` before it is made (server side, before
    /// the handshake).
    pub far: Option<&'a Stream>,
}

impl Exchange<'_> {
    fn far(&self) -> Result<&Stream, String> {
        self.far.ok_or_else(|| "no far connection yet".to_string())
    }
}

pub type Hook = fn(&Exchange<'_>) -> Result<(), String>;

/// A protocol's name and its hooks; `None`: nothing to do at that point.
pub struct Protocol {
    pub name: &'static str,
    /// Client side, after connecting, before the TLS handshake on `far`.
    pub client_before_tls: Option<Hook>,
    /// Server side, on the accepted connection before the TLS handshake.
    pub server_before_tls: Option<Hook>,
    /// Server side, after the handshake and the far connection, before relaying.
    pub server_before_relay: Option<Hook>,
    /// Server side, after the handshake: the client names the target inside TLS (SOCKS);
    /// the hook connects there and answers. Replaces `connect`.
    pub server_chooses_target: Option<TargetHook>,
}

/// A blocking byte stream over the TLS session (reads and writes wait as needed).
pub trait Channel: Read + Write {}
impl<T: Read + Write> Channel for T {}

pub type TargetHook = fn(&ServiceOptions, &mut dyn Channel) -> Result<Stream, String>;

/// Every protocol stunnel 5.68 knows but `socks` (below: its hook has another shape). Those
/// without a hook for a side are refused for that side when the configuration is checked,
/// by `config::protocol_names` (a test below keeps its table in step with this one).
#[rustfmt::skip]
pub static PROTOCOLS: &[Protocol] = &[
    proto("cifs", None, None, None),
    proto("capwin", None, None, None),
    proto("capwinctrl", None, None, None),
    proto("connect", Some(http_connect), None, None),
    proto("imap", Some(imap_client), Some(imap_server), Some(skip_imap_greeting)),
    proto("ldap", Some(ldap_client), None, None),
    proto("nntp", Some(nntp_client), None, None),
    proto("pgsql", Some(pgsql_client), Some(pgsql_server), None),
    proto("pop3", Some(pop3_client), Some(pop3_server), Some(skip_pop3_greeting)),
    proto("proxy", None, None, Some(proxy_header)),
    proto("smtp", Some(smtp_client), Some(smtp_server), Some(skip_smtp_greeting)),
];

/// SOCKS (server side) is the one protocol that picks the target itself.
pub static SOCKS: Protocol = Protocol {
    name: "socks",
    client_before_tls: None,
    server_before_tls: None,
    server_before_relay: None,
    server_chooses_target: Some(socks_server),
};

const fn proto(
    name: &'static str,
    client: Option<Hook>,
    server_before_tls: Option<Hook>,
    server_before_relay: Option<Hook>,
) -> Protocol {
    Protocol {
        name,
        client_before_tls: client,
        server_before_tls,
        server_before_relay,
        server_chooses_target: None,
    }
}

/// Looks a protocol up by name (case-insensitive).
pub fn find(name: &str) -> Option<&'static Protocol> {
    if SOCKS.name.eq_ignore_ascii_case(name) {
        return Some(&SOCKS);
    }
    PROTOCOLS.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// Longest line accepted from a peer during an exchange: a longer one is an error, not
/// a memory sink.
const MAX_LINE: usize = 4096;

/// Most lines accepted in one reply (a multi-line SMTP reply, IMAP's untagged lines
/// before the tagged answer, a proxy's headers). TIMEOUTbusy only limits silence, so
/// without a count a peer that keeps talking would hold the session (and, for SMTP,
/// grow its memory) for ever.
const MAX_REPLY_LINES: usize = 128;
const TOO_MANY_LINES: &str = "protocol negotiation: too many lines in one reply";

/// Reads one line ending in LF (CR LF kept out), one byte at a time so that nothing after
/// it (the peer's TLS records) is consumed.
fn read_line(stream: &Stream) -> Result<String, String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match (&*stream).read(&mut byte) {
            Ok(0) => return Err("connection closed during protocol negotiation".into()),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if line.len() >= MAX_LINE => return Err("protocol line too long".into()),
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("protocol negotiation: {e}")),
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn send(stream: &Stream, text: &str) -> Result<(), String> {
    (&*stream)
        .write_all(text.as_bytes())
        .map_err(|e| format!("protocol negotiation: {e}"))
}

/// Reads a (possibly multi-line, `CODE-…` … `CODE …`) reply of a line-based protocol
/// such as SMTP; returns its lines.
fn read_reply(stream: &Stream) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    while lines.len() < MAX_REPLY_LINES {
        let line = read_line(stream)?;
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line);
        if last {
            return Ok(lines);
        }
    }
    Err(TOO_MANY_LINES.into())
}

fn expect_code(lines: &[String], code: &str, what: &str) -> Result<(), String> {
    match lines.last() {
        Some(last) if last.starts_with(code) => Ok(()),
        Some(last) => Err(format!("{what}: unexpected reply: {last}")),
        None => Err(format!("{what}: no reply")),
    }
}

fn forward_lines(local: &Stream, lines: &[String]) -> Result<(), String> {
    let text: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
    send(local, &text)
}

/// SMTP: the server's greeting goes to the local client; EHLO and STARTTLS are ours.
fn smtp_client(x: &Exchange<'_>) -> Result<(), String> {
    let far = x.far()?;
    let greeting = read_reply(far)?;
    expect_code(&greeting, "220", "SMTP greeting")?;
    forward_lines(x.local, &greeting)?;
    let helo = greeting_host(x.opts);
    send(far, &format!("EHLO {helo}\r\n"))?;
    expect_code(&read_reply(far)?, "250", "SMTP EHLO")?;
    send(far, "STARTTLS\r\n")?;
    expect_code(&read_reply(far)?, "220", "SMTP STARTTLS")
}

/// POP3 (RFC 2595): greeting forwarded, then STLS.
fn pop3_client(x: &Exchange<'_>) -> Result<(), String> {
    let far = x.far()?;
    let greeting = read_line(far)?;
    if !greeting.starts_with("+OK") {
        return Err(format!("POP3 greeting: unexpected reply: {greeting}"));
    }
    forward_lines(x.local, &[greeting])?;
    send(far, "STLS\r\n")?;
    let reply = read_line(far)?;
    if reply.starts_with("+OK") {
        Ok(())
    } else {
        Err(format!("POP3 STLS: unexpected reply: {reply}"))
    }
}

/// IMAP (RFC 3501): greeting forwarded, then a tagged STARTTLS.
fn imap_client(x: &Exchange<'_>) -> Result<(), String> {
    let far = x.far()?;
    let greeting = read_line(far)?;
    if !greeting.starts_with("* OK") {
        return Err(format!("IMAP greeting: unexpected reply: {greeting}"));
    }
    forward_lines(x.local, &[greeting])?;
    send(far, "rstunnel STARTTLS\r\n")?;
    for _ in 0..MAX_REPLY_LINES {
        let line = read_line(far)?;
        if let Some(status) = line.strip_prefix("rstunnel ") {
            return if status.starts_with("OK") {
                Ok(())
            } else {
                Err(format!("IMAP STARTTLS: {line}"))
            };
        }
        // Untagged lines (capabilities) before the tagged answer are skipped.
    }
    Err(format!("IMAP STARTTLS: {TOO_MANY_LINES}"))
}

/// NNTP (RFC 4642): greeting forwarded, then STARTTLS, answered 382.
fn nntp_client(x: &Exchange<'_>) -> Result<(), String> {
    let far = x.far()?;
    let greeting = read_line(far)?;
    if !(greeting.starts_with("200") || greeting.starts_with("201")) {
        return Err(format!("NNTP greeting: unexpected reply: {greeting}"));
    }
    forward_lines(x.local, &[greeting])?;
    send(far, "STARTTLS\r\n")?;
    let reply = read_line(far)?;
    if reply.starts_with("382") {
        Ok(())
    } else {
        Err(format!("NNTP STARTTLS: unexpected reply: {reply}"))
    }
}

/// PostgreSQL: the 8-byte SSLRequest; the server answers `S` to go on with TLS.
fn pgsql_client(x: &Exchange<'_>) -> Result<(), String> {
    let far = x.far()?;
    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    (&*far)
        .write_all(&SSL_REQUEST)
        .map_err(|e| format!("pgsql SSLRequest: {e}"))?;
    let mut answer = [0u8; 1];
    (&*far)
        .read_exact(&mut answer)
        .map_err(|e| format!("pgsql SSLRequest: {e}"))?;
    match answer[0] {
        b'S' => Ok(()),
        other => Err(format!(
            "pgsql: the server refused TLS (answered {:?})",
            other as char
        )),
    }
}

/// The OID of LDAP's StartTLS extended operation (RFC 4511, 4513).
const LDAP_STARTTLS_OID: &[u8] = b"1.3.6.1.4.1.1466.20037";

/// LDAP: an ExtendedRequest for StartTLS (message id 1); the ExtendedResponse's
/// resultCode must be success (0).
fn ldap_client(x: &Exchange<'_>) -> Result<(), String> {
    let far = x.far()?;
    let oid_len = LDAP_STARTTLS_OID.len() as u8; // 22
    let mut request = vec![
        0x30,
        5 + 2 + oid_len,
        0x02,
        0x01,
        0x01,
        0x77,
        2 + oid_len,
        0x80,
        oid_len,
    ];
    request.extend_from_slice(LDAP_STARTTLS_OID);
    (&*far)
        .write_all(&request)
        .map_err(|e| format!("LDAP StartTLS: {e}"))?;
    let response = read_ber_message(far)?;
    // SEQUENCE { INTEGER msgid, [APPLICATION 24] { ENUMERATED resultCode, … } }
    let code = response
        .windows(3)
        .position(|w| w[0] == 0x0a && w[1] == 0x01)
        .and_then(|i| response.get(i + 2).copied())
        .ok_or("LDAP StartTLS: no resultCode in the response")?;
    if code == 0 {
        Ok(())
    } else {
        Err(format!(
            "LDAP StartTLS: the server answered resultCode {code}"
        ))
    }
}

/// Reads one BER-encoded LDAP message (tag, length, content), at most 64 KiB.
fn read_ber_message(stream: &Stream) -> Result<Vec<u8>, String> {
    let read = |buf: &mut [u8]| (&*stream).read_exact(buf).map_err(|e| format!("LDAP: {e}"));
    let mut head = [0u8; 2];
    read(&mut head)?;
    if head[0] != 0x30 {
        return Err("LDAP: the response is not a message".into());
    }
    let len = if head[1] & 0x80 == 0 {
        usize::from(head[1])
    } else {
        let count = usize::from(head[1] & 0x7f);
        if count == 0 || count > 2 {
            return Err("LDAP: response length out of range".into());
        }
        let mut bytes = [0u8; 2];
        read(&mut bytes[..count])?;
        bytes[..count]
            .iter()
            .fold(0usize, |n, b| (n << 8) | usize::from(*b))
    };
    let mut body = vec![0u8; len];
    read(&mut body)?;
    Ok(body)
}

/// HTTP CONNECT (client side): `connect` is the proxy, `protocolHost` the destination.
fn http_connect(x: &Exchange<'_>) -> Result<(), String> {
    let far = x.far()?;
    let target = x
        .opts
        .protocol_host
        .as_deref()
        .ok_or("protocol = connect needs protocolHost = host:port")?;
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(user) = &x.opts.protocol_username {
        let password = x.opts.protocol_password.as_deref().unwrap_or("");
        let token = openssl::base64::encode_block(format!("{user}:{password}").as_bytes());
        request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    for header in &x.opts.protocol_headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    send(far, &request)?;
    let status = read_line(far)?;
    let ok = status.starts_with("HTTP/") && status.split_whitespace().nth(1) == Some("200");
    // Headers up to the blank line belong to the proxy's answer.
    let mut headers = 0;
    while !read_line(far)?.is_empty() {
        headers += 1;
        if headers >= MAX_REPLY_LINES {
            return Err(format!("CONNECT {target}: {TOO_MANY_LINES}"));
        }
    }
    if ok {
        Ok(())
    } else {
        Err(format!("CONNECT {target}: the proxy answered: {status}"))
    }
}

/// PROXY protocol v1 (server side): tells the target who the client really is.
fn proxy_header(x: &Exchange<'_>) -> Result<(), String> {
    let far = x.far()?;
    let header = match (x.local.peer_addr(), x.local.local_addr()) {
        (Some(src), Some(dst)) if src.is_ipv4() == dst.is_ipv4() => format!(
            "PROXY {} {} {} {} {}\r\n",
            if src.is_ipv4() { "TCP4" } else { "TCP6" },
            src.ip(),
            dst.ip(),
            src.port(),
            dst.port()
        ),
        _ => "PROXY UNKNOWN\r\n".to_string(),
    };
    send(far, &header)
}

/// The name we greet (or say EHLO) with: `protocolHost`, else `localhost`.
fn greeting_host(opts: &ServiceOptions) -> &str {
    opts.protocol_host.as_deref().unwrap_or("localhost")
}

/// Commands a client may send before STARTTLS; more are refused and end the session.
const MAX_COMMANDS_BEFORE_TLS: usize = 16;

/// SMTP server side (RFC 3207): greet, answer EHLO/HELO offering STARTTLS, refuse
/// anything else until STARTTLS.
fn smtp_server(x: &Exchange<'_>) -> Result<(), String> {
    let host = greeting_host(x.opts);
    send(x.local, &format!("220 {host} ESMTP\r\n"))?;
    for _ in 0..MAX_COMMANDS_BEFORE_TLS {
        let line = read_line(x.local)?;
        let verb = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => send(x.local, &format!("250-{host}\r\n250 STARTTLS\r\n"))?,
            "HELO" => send(x.local, &format!("250 {host}\r\n"))?,
            "NOOP" | "RSET" => send(x.local, "250 OK\r\n")?,
            "STARTTLS" => return send(x.local, "220 Go ahead\r\n"),
            "QUIT" => {
                send(x.local, "221 Bye\r\n")?;
                return Err("the client quit before STARTTLS".into());
            }
            _ => send(x.local, "530 Must issue a STARTTLS command first\r\n")?,
        }
    }
    Err("no STARTTLS from the client".into())
}

fn skip_smtp_greeting(x: &Exchange<'_>) -> Result<(), String> {
    expect_code(&read_reply(x.far()?)?, "220", "SMTP backend greeting")
}

/// POP3 server side (RFC 2595): greet, offer STLS in CAPA, refuse the rest until STLS.
fn pop3_server(x: &Exchange<'_>) -> Result<(), String> {
    send(x.local, "+OK POP3 server ready\r\n")?;
    for _ in 0..MAX_COMMANDS_BEFORE_TLS {
        let line = read_line(x.local)?;
        match line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase()
            .as_str()
        {
            "CAPA" => send(x.local, "+OK Capability list follows\r\nSTLS\r\n.\r\n")?,
            "STLS" => return send(x.local, "+OK Begin TLS negotiation\r\n"),
            "QUIT" => {
                send(x.local, "+OK Bye\r\n")?;
                return Err("the client quit before STLS".into());
            }
            _ => send(x.local, "-ERR Must issue STLS first\r\n")?,
        }
    }
    Err("no STLS from the client".into())
}

fn skip_pop3_greeting(x: &Exchange<'_>) -> Result<(), String> {
    let greeting = read_line(x.far()?)?;
    if greeting.starts_with("+OK") {
        Ok(())
    } else {
        Err(format!("POP3 backend greeting: {greeting}"))
    }
}

/// IMAP server side (RFC 3501): greet with STARTTLS in the capabilities, answer
/// CAPABILITY and NOOP, refuse the rest until STARTTLS.
fn imap_server(x: &Exchange<'_>) -> Result<(), String> {
    send(
        x.local,
        "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n",
    )?;
    for _ in 0..MAX_COMMANDS_BEFORE_TLS {
        let line = read_line(x.local)?;
        let mut words = line.split_whitespace();
        let tag = words.next().unwrap_or("*");
        match words.next().unwrap_or("").to_ascii_uppercase().as_str() {
            "CAPABILITY" => send(
                x.local,
                &format!("* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n{tag} OK CAPABILITY completed\r\n"),
            )?,
            "NOOP" => send(x.local, &format!("{tag} OK NOOP completed\r\n"))?,
            "STARTTLS" => return send(x.local, &format!("{tag} OK Begin TLS negotiation now\r\n")),
            "LOGOUT" => {
                send(x.local, &format!("* BYE\r\n{tag} OK LOGOUT completed\r\n"))?;
                return Err("the client logged out before STARTTLS".into());
            }
            _ => send(x.local, &format!("{tag} BAD STARTTLS first\r\n"))?,
        }
    }
    Err("no STARTTLS from the client".into())
}

fn skip_imap_greeting(x: &Exchange<'_>) -> Result<(), String> {
    let greeting = read_line(x.far()?)?;
    if greeting.starts_with("* OK") || greeting.starts_with("* PREAUTH") {
        Ok(())
    } else {
        Err(format!("IMAP backend greeting: {greeting}"))
    }
}

/// PostgreSQL server side: the client's SSLRequest is answered `S`; what follows is TLS.
fn pgsql_server(x: &Exchange<'_>) -> Result<(), String> {
    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let mut request = [0u8; 8];
    (&*x.local)
        .read_exact(&mut request)
        .map_err(|e| format!("pgsql: {e}"))?;
    if request != SSL_REQUEST {
        return Err("pgsql: the client did not ask for TLS (no SSLRequest)".into());
    }
    (&*x.local)
        .write_all(b"S")
        .map_err(|e| format!("pgsql: {e}"))
}

/// SOCKS 4, 4a and 5 (CONNECT only, no authentication) inside the TLS session: read the
/// request, connect to the named target within TIMEOUTconnect, answer, and hand the
/// connection back as the session's far side.
fn socks_server(opts: &ServiceOptions, channel: &mut dyn Channel) -> Result<Stream, String> {
    let io = |e: io::Error| format!("SOCKS: {e}");
    let mut version = [0u8; 1];
    channel.read_exact(&mut version).map_err(io)?;
    match version[0] {
        4 => socks4(opts, channel),
        5 => socks5(opts, channel),
        v => Err(format!("SOCKS: unknown version {v}")),
    }
}

fn read_until_nul(channel: &mut dyn Channel, what: &str) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        channel
            .read_exact(&mut byte)
            .map_err(|e| format!("SOCKS: {e}"))?;
        if byte[0] == 0 {
            return Ok(bytes);
        }
        if bytes.len() >= 255 {
            return Err(format!("SOCKS: {what} too long"));
        }
        bytes.push(byte[0]);
    }
}

/// Why a SOCKS target was refused before connecting.
enum SocksRefusal {
    /// 127.0.0.0/8 or ::1: the tunnel host's own local services are not for its clients.
    Loopback(String),
    Failed(String),
}

fn connect_target(opts: &ServiceOptions, host: &str, port: u16) -> Result<Stream, SocksRefusal> {
    let endpoint = crate::net::Endpoint::Tcp {
        host: Some(host.to_string()),
        port,
    };
    let addrs = endpoint.resolve_connect().map_err(SocksRefusal::Failed)?;
    let loopback =
        |a: &crate::net::Addr| matches!(a, crate::net::Addr::Inet(ip) if ip.ip().is_loopback());
    if addrs.iter().any(loopback) {
        let family = if addrs.iter().any(|a| a.is_ipv6() && loopback(a)) {
            "IPv6"
        } else {
            "IPv4"
        };
        return Err(SocksRefusal::Loopback(format!(
            "SOCKS connection to the {family} loopback rejected"
        )));
    }
    crate::net::connect::connect_first(
        &addrs,
        opts.timeouts.connect,
        &opts.socket_options,
        opts.local.map(|ip| crate::net::connect::Source {
            ip,
            transparent: false,
        }),
    )
    .map(|(stream, _)| stream)
    .map_err(|_| SocksRefusal::Failed(format!("SOCKS: cannot connect to {host}:{port}")))
}

fn socks4(opts: &ServiceOptions, channel: &mut dyn Channel) -> Result<Stream, String> {
    let io = |e: io::Error| format!("SOCKS4: {e}");
    let mut head = [0u8; 7]; // command, port, IPv4
    channel.read_exact(&mut head).map_err(io)?;
    let port = u16::from_be_bytes([head[1], head[2]]);
    let ip = std::net::Ipv4Addr::new(head[3], head[4], head[5], head[6]);
    read_until_nul(channel, "user id")?;
    // SOCKS 4a: 0.0.0.x (x ≠ 0) means "the host name follows".
    let host = if head[3..6] == [0, 0, 0] && head[6] != 0 {
        String::from_utf8_lossy(&read_until_nul(channel, "host name")?).into_owned()
    } else {
        ip.to_string()
    };
    let answer = |granted: bool| {
        let code = if granted { 0x5a } else { 0x5b };
        [
            0, code, head[1], head[2], head[3], head[4], head[5], head[6],
        ]
    };
    if head[0] != 1 {
        let _ = channel.write_all(&answer(false));
        return Err("SOCKS4: only CONNECT is supported".into());
    }
    match connect_target(opts, &host, port) {
        Ok(stream) => {
            channel.write_all(&answer(true)).map_err(io)?;
            Ok(stream)
        }
        Err(SocksRefusal::Loopback(e) | SocksRefusal::Failed(e)) => {
            let _ = channel.write_all(&answer(false));
            Err(e)
        }
    }
}

fn socks5(opts: &ServiceOptions, channel: &mut dyn Channel) -> Result<Stream, String> {
    let io = |e: io::Error| format!("SOCKS5: {e}");
    let mut count = [0u8; 1];
    channel.read_exact(&mut count).map_err(io)?;
    let mut methods = vec![0u8; usize::from(count[0])];
    channel.read_exact(&mut methods).map_err(io)?;
    if !methods.contains(&0) {
        let _ = channel.write_all(&[5, 0xff]);
        return Err("SOCKS5: the client offers no method without authentication".into());
    }
    channel.write_all(&[5, 0]).map_err(io)?;
    let mut head = [0u8; 4]; // version, command, reserved, address type
    channel.read_exact(&mut head).map_err(io)?;
    let host = match head[3] {
        1 => {
            let mut ip = [0u8; 4];
            channel.read_exact(&mut ip).map_err(io)?;
            std::net::Ipv4Addr::from(ip).to_string()
        }
        3 => {
            let mut len = [0u8; 1];
            channel.read_exact(&mut len).map_err(io)?;
            let mut name = vec![0u8; usize::from(len[0])];
            channel.read_exact(&mut name).map_err(io)?;
            String::from_utf8_lossy(&name).into_owned()
        }
        4 => {
            let mut ip = [0u8; 16];
            channel.read_exact(&mut ip).map_err(io)?;
            std::net::Ipv6Addr::from(ip).to_string()
        }
        _ => {
            let _ = channel.write_all(&[5, 8, 0, 1, 0, 0, 0, 0, 0, 0]);
            return Err("SOCKS5: unknown address type".into());
        }
    };
    let mut port = [0u8; 2];
    channel.read_exact(&mut port).map_err(io)?;
    let port = u16::from_be_bytes(port);
    if head[1] != 1 {
        let _ = channel.write_all(&[5, 7, 0, 1, 0, 0, 0, 0, 0, 0]);
        return Err("SOCKS5: only CONNECT is supported".into());
    }
    match connect_target(opts, &host, port) {
        Ok(stream) => {
            // The bound address is not something clients use; zeros are allowed.
            channel
                .write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0])
                .map_err(io)?;
            Ok(stream)
        }
        // Reply 2: "connection not allowed by ruleset".
        Err(SocksRefusal::Loopback(e)) => {
            let _ = channel.write_all(&[5, 2, 0, 1, 0, 0, 0, 0, 0, 0]);
            Err(e)
        }
        Err(SocksRefusal::Failed(e)) => {
            let _ = channel.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::protocol_names::PROTOCOL_NAMES;

    #[test]
    fn every_protocol_of_stunnel_is_known() {
        for name in [
            "cifs",
            "capwin",
            "capwinctrl",
            "connect",
            "imap",
            "ldap",
            "nntp",
            "pgsql",
            "pop3",
            "proxy",
            "smtp",
            "socks",
        ] {
            assert!(find(name).is_some(), "{name}");
        }
        assert!(find("SMTP").is_some());
        assert!(find("http").is_none());
    }

    /// `config::protocol_names` (what the parser accepts, on which side) says what this
    /// table's hooks do: the same names, and a side is accepted where a hook speaks it.
    #[test]
    fn the_parsers_names_and_sides_match_the_hooks() {
        let ours: Vec<&Protocol> = PROTOCOLS.iter().chain([&SOCKS]).collect();
        assert_eq!(ours.len(), PROTOCOL_NAMES.len());
        for (p, names) in ours.iter().zip(PROTOCOL_NAMES) {
            let server = p.server_before_tls.is_some()
                || p.server_before_relay.is_some()
                || p.server_chooses_target.is_some();
            assert_eq!(
                (p.name, p.client_before_tls.is_some(), server),
                (names.name, names.client, names.server)
            );
        }
    }

    fn pair() -> (Stream, Stream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        (Stream::from_unix(a), Stream::from_unix(b))
    }

    #[test]
    fn smtp_starttls_exchange() {
        let (far_ours, far_server) = pair();
        let (local_ours, local_client) = pair();
        let server = std::thread::spawn(move || {
            send(&far_server, "220-mail.example ESMTP\r\n220 ready\r\n").unwrap();
            assert_eq!(read_line(&far_server).unwrap(), "EHLO localhost");
            send(&far_server, "250-mail.example\r\n250 STARTTLS\r\n").unwrap();
            assert_eq!(read_line(&far_server).unwrap(), "STARTTLS");
            send(&far_server, "220 go ahead\r\n").unwrap();
        });
        let opts = ServiceOptions::default();
        smtp_client(&Exchange {
            opts: &opts,
            local: &local_ours,
            far: Some(&far_ours),
        })
        .unwrap();
        server.join().unwrap();
        assert_eq!(read_line(&local_client).unwrap(), "220-mail.example ESMTP");
        assert_eq!(read_line(&local_client).unwrap(), "220 ready");
    }

    #[test]
    fn imap_refusal_is_an_error() {
        let (far_ours, far_server) = pair();
        let (local_ours, _local_client) = pair();
        let server = std::thread::spawn(move || {
            send(&far_server, "* OK IMAP ready\r\n").unwrap();
            assert_eq!(read_line(&far_server).unwrap(), "rstunnel STARTTLS");
            send(
                &far_server,
                "* CAPABILITY IMAP4rev1\r\nrstunnel NO not now\r\n",
            )
            .unwrap();
        });
        let opts = ServiceOptions::default();
        let e = imap_client(&Exchange {
            opts: &opts,
            local: &local_ours,
            far: Some(&far_ours),
        })
        .unwrap_err();
        assert!(e.contains("NO not now"), "{e}");
        server.join().unwrap();
    }

    #[test]
    fn ldap_starttls_request_and_success() {
        let (far_ours, far_server) = pair();
        let (local_ours, _l) = pair();
        let server = std::thread::spawn(move || {
            let mut req = [0u8; 31];
            (&far_server).read_exact(&mut req).unwrap();
            assert_eq!(&req[..9], &[0x30, 29, 0x02, 0x01, 0x01, 0x77, 24, 0x80, 22]);
            assert_eq!(&req[9..], LDAP_STARTTLS_OID);
            // ExtendedResponse: success, empty matchedDN and message.
            (&far_server)
                .write_all(&[
                    0x30, 0x0c, 0x02, 0x01, 0x01, 0x78, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04,
                    0x00,
                ])
                .unwrap();
        });
        let opts = ServiceOptions::default();
        ldap_client(&Exchange {
            opts: &opts,
            local: &local_ours,
            far: Some(&far_ours),
        })
        .unwrap();
        server.join().unwrap();
    }

    /// A far server that never ends its reply is cut off after MAX_REPLY_LINES lines
    /// instead of being read (and, for SMTP, kept in memory) for ever. Found while
    /// writing the fuzz targets (fuzz/, issue 8).
    #[test]
    fn endless_replies_are_refused() {
        let endless = |line: &'static str| {
            let (ours, theirs) = pair();
            let writer = std::thread::spawn(move || {
                // Stops when the negotiator gives up and the socket closes.
                while send(&theirs, line).is_ok() {}
            });
            (ours, writer)
        };
        let opts = ServiceOptions {
            protocol_host: Some("db.example:5432".into()),
            ..ServiceOptions::default()
        };
        let cases: [(&'static str, Hook, &'static str); 3] = [
            ("220-more\r\n", skip_smtp_greeting, "too many lines"),
            ("* OK ready\r\n", imap_client, "too many lines"),
            ("HTTP/1.1 200 OK\r\n", http_connect, "too many lines"),
        ];
        for (line, hook, expected) in cases {
            let (far, writer) = endless(line);
            let (local, _client) = pair();
            let e = hook(&Exchange {
                opts: &opts,
                local: &local,
                far: Some(&far),
            })
            .unwrap_err();
            assert!(e.contains(expected), "{line:?}: {e}");
            drop(far);
            writer.join().unwrap();
        }
    }

    #[test]
    fn http_connect_with_basic_auth() {
        let (far_ours, far_proxy) = pair();
        let (local_ours, _l) = pair();
        let proxy = std::thread::spawn(move || {
            let mut lines = Vec::new();
            loop {
                let l = read_line(&far_proxy).unwrap();
                if l.is_empty() {
                    break;
                }
                lines.push(l);
            }
            send(
                &far_proxy,
                "HTTP/1.1 200 Connection established\r\nX: y\r\n\r\n",
            )
            .unwrap();
            lines
        });
        let opts = ServiceOptions {
            protocol_host: Some("db.example:5432".into()),
            protocol_username: Some("u".into()),
            protocol_password: Some("p".into()),
            ..ServiceOptions::default()
        };
        http_connect(&Exchange {
            opts: &opts,
            local: &local_ours,
            far: Some(&far_ours),
        })
        .unwrap();
        let lines = proxy.join().unwrap();
        assert_eq!(lines[0], "CONNECT db.example:5432 HTTP/1.1");
        assert!(
            lines.contains(&"Proxy-Authorization: Basic dTpw".to_string()),
            "{lines:?}"
        );
    }
}
