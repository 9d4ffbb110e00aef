//! Probes of a paused (or checking) service's far side (`pauseWhenDown`, see `health`): does
//! a `connect` target answer right now?
//!
//! A probe is a real connection, made the way a session would make it: a TCP (or Unix)
//! connect to each target in the service's order; in client mode also a full TLS handshake
//! with the service's context and SNI name, then close_notify, then a wait for the far
//! side's answer. A far rstunnel answers with its own close_notify once its target took and
//! closed the probe's (empty) session; many servers (nginx) just close without one, which
//! is an answer too. A far tunnel whose own target is down resets the session (`reset =
//! yes`, the default) or, with `pauseWhenDown`, refuses the connect: not answering. Every
//! step is bounded by the probe timeout and given up when `cancel` (the listener's stop
//! signal) fires.
//!
//! "Down" is only: a connect refused, unreachable or timed out, a reset, a handshake that
//! failed for a transport reason, a wait that timed out before the handshake finished.
//! Anything the far side *said* (an alert: our certificate refused, or a certificate of
//! its that does not verify) is a configuration problem, logged as an error, and counts as
//! "answering", since waiting will not fix it.
//!
//! Owns nothing but the probe connection, which it closes before returning. Marks its
//! `Ssl` (`tls::verify::mark_probe`) so that the verify callback logs at debug: a paused
//! service probing every few seconds must not fill the log. Logs at debug only, except the
//! configuration problems above. Must not touch service state.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use openssl::ssl::{ErrorCode, HandshakeError, Ssl, SslContext, SslStream};

use crate::net::connect::{self, Source};
use crate::net::sockopt::SocketOption;
use crate::net::{Addr, Stream};
use crate::relay::describe_ssl_error;
use crate::tls::compat::{self, ReadEnd};
use crate::wake;

/// What to probe and how.
pub struct Target<'a> {
    pub service: &'a str,
    pub addrs: &'a [Addr],
    /// For each step (connect, handshake, the wait for the close reply).
    pub timeout: Duration,
    pub options: &'a [SocketOption],
    pub source: Option<Source>,
    /// Client mode: the TLS context and the SNI name to send.
    pub tls: Option<(&'a SslContext, Option<&'a str>)>,
    /// Readable when the probe must give up (the listener is stopping).
    pub cancel: RawFd,
}

/// `Ok` if a target answered; `Err` says how the last one failed.
pub fn far_side(t: &Target<'_>) -> Result<(), String> {
    let mut last = String::from("no address to probe");
    for addr in t.addrs {
        match probe_one(t, addr) {
            Ok(()) => {
                log_debug!("Service [{}]: probe of {addr}: answered", t.service);
                return Ok(());
            }
            Err(why) => {
                log_debug!("Service [{}]: probe of {addr}: {why}", t.service);
                last = format!("{addr}: {why}");
            }
        }
    }
    Err(last)
}

fn probe_one(t: &Target<'_>, addr: &Addr) -> Result<(), String> {
    let stream = connect::probe_connect(addr, t.timeout, t.options, t.source, t.cancel)
        .map_err(|e| format!("connect: {}", connect::describe(&e)))?;
    let Some((ctx, sni)) = t.tls else {
        // A plain target: connecting is answering. Dropping the stream closes it (FIN).
        return Ok(());
    };
    let mut ssl = Ssl::new(ctx).map_err(|e| format!("SSL_new: {e}"))?;
    crate::tls::verify::mark_probe(&mut ssl);
    if let Some(name) = sni {
        ssl.set_hostname(name)
            .map_err(|e| format!("SNI {name}: {e}"))?;
    }
    let deadline = Instant::now() + t.timeout;
    let fds = (stream.read_fd(), stream.write_fd());
    let mut attempt = ssl.connect(stream);
    let mut tls = loop {
        match attempt {
            Ok(tls) => break tls,
            Err(HandshakeError::WouldBlock(mid)) => {
                wait(t, fds, mid.error().code(), deadline)?;
                attempt = mid.handshake();
            }
            Err(HandshakeError::Failure(mid)) => {
                let why = describe_ssl_error(mid.error());
                if compat::is_transport_failure(mid.error()) {
                    return Err(format!("TLS handshake: {why}"));
                }
                log_err!(
                    "Service [{}]: probe of {addr}: TLS handshake refused: {why} (a configuration problem, not an outage: not pausing for it)",
                    t.service
                );
                return Ok(());
            }
            Err(HandshakeError::SetupFailure(e)) => return Err(format!("SSL_connect: {e}")),
        }
    };
    close_and_wait_for_reply(t, addr, &mut tls, fds, deadline)
}

/// Sends close_notify and reads until the far side's answer. Data before it is dropped.
/// Its close_notify, or an EOF without one after ours (nginx), is an answer; so is an
/// alert (a refusal: a configuration problem, logged) and no reply within the deadline
/// (the far side is up and holds the session open: its target may not close on EOF). A
/// reset (or another socket error) means the far tunnel could not pass the session on.
fn close_and_wait_for_reply(
    t: &Target<'_>,
    addr: &Addr,
    tls: &mut SslStream<Stream>,
    fds: (RawFd, RawFd),
    deadline: Instant,
) -> Result<(), String> {
    loop {
        match tls.shutdown() {
            Ok(_) => break,
            Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {
                wait(t, fds, e.code(), deadline)?;
            }
            // The far side may have refused us and closed already (its alert then
            // waits unread ahead of the reset): look before calling it down.
            Err(e) if has_pending_alert(tls) => {
                log_err!(
                    "Service [{}]: probe of {addr}: the far side refused the session (a configuration problem, not an outage: not pausing for it); close_notify: {}",
                    t.service,
                    describe_ssl_error(&e)
                );
                return Ok(());
            }
            Err(e) => return far_side_said(t, addr, "close_notify", &e),
        }
    }
    let mut buf = [0u8; 4096];
    loop {
        match tls.ssl_read(&mut buf) {
            Ok(_) => {}
            Err(e) if e.code() == ErrorCode::ZERO_RETURN => return Ok(()),
            Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {
                match wait(t, fds, e.code(), deadline) {
                    Err(Timeout::Expired) => return Ok(()),
                    Err(other) => return Err(other.into()),
                    Ok(()) => {}
                }
            }
            Err(e) if compat::classify_read_end(&e) == ReadEnd::Truncated => {
                log_debug!(
                    "Service [{}]: probe of {addr}: closed without close_notify after ours: answering",
                    t.service
                );
                return Ok(());
            }
            Err(e) => return far_side_said(t, addr, "reading the answer to close_notify", &e),
        }
    }
}

/// Whether what the far side already sent (read now, without waiting) ends in an alert.
fn has_pending_alert(tls: &mut SslStream<Stream>) -> bool {
    let mut buf = [0u8; 4096];
    // Bounded: a far side streaming data must not keep the listener here.
    for _ in 0..64 {
        match tls.ssl_read(&mut buf) {
            Ok(_) => {}
            Err(e) => return compat::is_alert_from_peer(&e),
        }
    }
    false
}

/// A failed SSL call after the handshake: an alert from the far side is a refusal (it is
/// up; logged as the configuration problem it is), anything else (a reset) is down.
fn far_side_said(
    t: &Target<'_>,
    addr: &Addr,
    step: &str,
    e: &openssl::ssl::Error,
) -> Result<(), String> {
    let why = describe_ssl_error(e);
    if compat::is_alert_from_peer(e) {
        log_err!(
            "Service [{}]: probe of {addr}: the far side refused the session: {why} (a configuration problem, not an outage: not pausing for it)",
            t.service
        );
        return Ok(());
    }
    Err(format!("{step}: {why}"))
}

/// Why a wait ended without the descriptor being ready.
enum Timeout {
    Expired,
    Cancelled,
    Poll(std::io::Error),
}

impl From<Timeout> for String {
    fn from(t: Timeout) -> String {
        match t {
            Timeout::Expired => "timed out".into(),
            Timeout::Cancelled => "given up (stopping)".into(),
            Timeout::Poll(e) => format!("poll: {e}"),
        }
    }
}

fn wait(
    t: &Target<'_>,
    fds: (RawFd, RawFd),
    code: ErrorCode,
    deadline: Instant,
) -> Result<(), Timeout> {
    let (fd, events) = if code == ErrorCode::WANT_WRITE {
        (fds.1, libc::POLLOUT)
    } else {
        (fds.0, libc::POLLIN)
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let mut poll_fds = [
        wake::pollfd(fd, events),
        wake::pollfd(t.cancel, libc::POLLIN),
    ];
    match wake::poll(&mut poll_fds, Some(left)) {
        Ok(0) => Err(Timeout::Expired),
        Ok(_) if poll_fds[1].revents != 0 => Err(Timeout::Cancelled),
        Ok(_) => Ok(()),
        Err(e) => Err(Timeout::Poll(e)),
    }
}
