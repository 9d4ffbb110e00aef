//! Line I/O for the clear-text exchanges: one line at a time, one byte at a time, so that
//! nothing after the exchange (the peer's first TLS record) is consumed; bounded line
//! length and reply size. Knows no protocol: the exchanges in `mail`, `binary` and
//! `proxy` are built on it.

use std::io::{self, Read, Write};

use crate::net::Stream;

/// Longest line accepted from a peer during an exchange: a longer one is an error, not
/// a memory sink.
pub(super) const MAX_LINE: usize = 4096;

/// Most lines accepted in one reply (a multi-line SMTP reply, IMAP's untagged lines
/// before the tagged answer, a proxy's headers). TIMEOUTbusy only limits silence, so
/// without a count a peer that keeps talking would hold the session (and, for SMTP,
/// grow its memory) for ever.
pub(super) const MAX_REPLY_LINES: usize = 128;
pub(super) const TOO_MANY_LINES: &str = "protocol negotiation: too many lines in one reply";

/// Reads one line ending in LF (CR LF kept out), one byte at a time so that nothing after
/// it (the peer's TLS records) is consumed.
pub(super) fn read_line(stream: &Stream) -> Result<String, String> {
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

pub(super) fn send(stream: &Stream, text: &str) -> Result<(), String> {
    (&*stream)
        .write_all(text.as_bytes())
        .map_err(|e| format!("protocol negotiation: {e}"))
}

/// Reads a (possibly multi-line, `CODE-…` … `CODE …`) reply of a line-based protocol
/// such as SMTP; returns its lines.
pub(super) fn read_reply(stream: &Stream) -> Result<Vec<String>, String> {
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

pub(super) fn expect_code(lines: &[String], code: &str, what: &str) -> Result<(), String> {
    match lines.last() {
        Some(last) if last.starts_with(code) => Ok(()),
        Some(last) => Err(format!("{what}: unexpected reply: {last}")),
        None => Err(format!("{what}: no reply")),
    }
}

pub(super) fn forward_lines(local: &Stream, lines: &[String]) -> Result<(), String> {
    let text: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
    send(local, &text)
}

/// Two connected streams, for the exchanges' tests.
#[cfg(test)]
pub(super) fn pair() -> (Stream, Stream) {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    (Stream::from_unix(a), Stream::from_unix(b))
}
