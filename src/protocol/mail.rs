//! STARTTLS of the mail and news protocols, `smtp`, `pop3`, `imap` and `nntp`. Client side,
//! on the far connection: the server's greeting is passed to the local client, then the
//! protocol's STARTTLS. Server side (smtp, pop3, imap), on the accepted connection:
//! rstunnel greets, offers STARTTLS and refuses anything else; once the far connection is
//! made, the backend's own greeting is consumed (the client already had one). Line based,
//! on `line`; no TLS byte is read here.

use super::hook::{Exchange, Settings};
use super::line::{
    expect_code, forward_lines, read_line, read_reply, send, MAX_REPLY_LINES, TOO_MANY_LINES,
};

/// SMTP: the server's greeting goes to the local client; EHLO and STARTTLS are ours.
pub(super) fn smtp_client(x: &Exchange<'_>) -> Result<(), String> {
    let far = x.far()?;
    let greeting = read_reply(far)?;
    expect_code(&greeting, "220", "SMTP greeting")?;
    forward_lines(x.local, &greeting)?;
    let helo = greeting_host(&x.settings);
    send(far, &format!("EHLO {helo}\r\n"))?;
    expect_code(&read_reply(far)?, "250", "SMTP EHLO")?;
    send(far, "STARTTLS\r\n")?;
    expect_code(&read_reply(far)?, "220", "SMTP STARTTLS")
}

/// POP3 (RFC 2595): greeting forwarded, then STLS.
pub(super) fn pop3_client(x: &Exchange<'_>) -> Result<(), String> {
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
pub(super) fn imap_client(x: &Exchange<'_>) -> Result<(), String> {
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
pub(super) fn nntp_client(x: &Exchange<'_>) -> Result<(), String> {
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

/// The name we greet (or say EHLO) with: `protocolHost`, else `localhost`.
fn greeting_host<'a>(settings: &Settings<'a>) -> &'a str {
    settings.host.unwrap_or("localhost")
}

/// Commands a client may send before STARTTLS; more are refused and end the session.
const MAX_COMMANDS_BEFORE_TLS: usize = 16;

/// SMTP server side (RFC 3207): greet, answer EHLO/HELO offering STARTTLS, refuse
/// anything else until STARTTLS.
pub(super) fn smtp_server(x: &Exchange<'_>) -> Result<(), String> {
    let host = greeting_host(&x.settings);
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

pub(super) fn skip_smtp_greeting(x: &Exchange<'_>) -> Result<(), String> {
    expect_code(&read_reply(x.far()?)?, "220", "SMTP backend greeting")
}

/// POP3 server side (RFC 2595): greet, offer STLS in CAPA, refuse the rest until STLS.
pub(super) fn pop3_server(x: &Exchange<'_>) -> Result<(), String> {
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

pub(super) fn skip_pop3_greeting(x: &Exchange<'_>) -> Result<(), String> {
    let greeting = read_line(x.far()?)?;
    if greeting.starts_with("+OK") {
        Ok(())
    } else {
        Err(format!("POP3 backend greeting: {greeting}"))
    }
}

/// IMAP server side (RFC 3501): greet with STARTTLS in the capabilities, answer
/// CAPABILITY and NOOP, refuse the rest until STARTTLS.
pub(super) fn imap_server(x: &Exchange<'_>) -> Result<(), String> {
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

pub(super) fn skip_imap_greeting(x: &Exchange<'_>) -> Result<(), String> {
    let greeting = read_line(x.far()?)?;
    if greeting.starts_with("* OK") || greeting.starts_with("* PREAUTH") {
        Ok(())
    } else {
        Err(format!("IMAP backend greeting: {greeting}"))
    }
}
#[cfg(test)]
mod tests {
    use super::super::line::pair;
    use super::*;

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
        let settings = Settings::default();
        smtp_client(&Exchange {
            settings,
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
        let settings = Settings::default();
        let e = imap_client(&Exchange {
            settings,
            local: &local_ours,
            far: Some(&far_ours),
        })
        .unwrap_err();
        assert!(e.contains("NO not now"), "{e}");
        server.join().unwrap();
    }
}
