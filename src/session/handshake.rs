//! The TLS handshake of a session (`handshake`) and every wait before the relay starts: the
//! handshake's waits for its peer within TIMEOUTbusy, each armed for a drop for room while
//! the session is unproven (`handshake_wait`, `wait_for_peer`), blocking reads and writes
//! inside TLS for protocols spoken there (`BlockingTls`), and `reset = yes` on a failure.
//! A leaf of `session`: it must not reach the far side, relay, or log a session's end.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use openssl::ssl::{ErrorCode, HandshakeError, Ssl, SslStream};

use super::error::{HandshakeFailure, SessionError, Setup};
use crate::accounting::{Dropped, Unproven};
use crate::net::{self, Stream};
use crate::relay::describe_ssl_error;
use crate::service::ServiceCtx;
use crate::wake;

/// `reset = yes`: a session that fails ends with RST, so the peer sees an error rather
/// than a clean end of stream.
pub(super) fn reset_if_configured(svc: &ServiceCtx, fd: std::os::fd::RawFd) {
    if svc.opts.reset {
        net::set_linger_reset(fd);
    }
}

/// Blocking reads and writes over the (non-blocking) TLS session before the relay starts,
/// each waiting at most until `deadline` (TIMEOUTbusy), for protocols spoken inside TLS.
pub(super) struct BlockingTls<'a> {
    pub(super) tls: &'a mut SslStream<Stream>,
    pub(super) deadline: Option<Instant>,
}

impl BlockingTls<'_> {
    fn wait(&self, code: ErrorCode) -> std::io::Result<()> {
        let stream = self.tls.get_ref();
        let (fd, events) = if code == ErrorCode::WANT_WRITE {
            (stream.write_fd(), libc::POLLOUT)
        } else {
            (stream.read_fd(), libc::POLLIN)
        };
        let left = self
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        match wake::poll(&mut [wake::pollfd(fd, events)], left)? {
            0 => Err(std::io::ErrorKind::TimedOut.into()),
            _ => Ok(()),
        }
    }

    /// Repeats a non-blocking SSL call until it moves bytes; close_notify reads as 0.
    fn retry(
        &mut self,
        mut op: impl FnMut(&mut SslStream<Stream>) -> Result<usize, openssl::ssl::Error>,
    ) -> std::io::Result<usize> {
        loop {
            match op(self.tls) {
                Ok(n) => return Ok(n),
                Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {
                    self.wait(e.code())?
                }
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => return Ok(0),
                Err(e) => return Err(std::io::Error::other(describe_ssl_error(&e))),
            }
        }
    }
}

impl std::io::Read for BlockingTls<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.retry(|tls| tls.ssl_read(buf))
    }
}

impl std::io::Write for BlockingTls<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.retry(|tls| tls.ssl_write(buf))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(super) fn dropped_for_room(Dropped { limit }: Dropped) -> SessionError {
    SessionError::DroppedForRoom { limit }
}

/// `Err` if the session was dropped for room while it was not waiting.
pub(super) fn still_unproven(unproven: Option<&Unproven>) -> Result<(), SessionError> {
    unproven.map_or(Ok(()), |u| u.check().map_err(dropped_for_room))
}

/// One wait of an unproven session for its peer: `fd` armed for a drop for room (and
/// disarmed before the caller can close it), then whether the session is still wanted.
/// The number of ready descriptors, as `wake::poll`.
fn wait_for_peer(
    unproven: Option<&Unproven>,
    fd: std::os::fd::RawFd,
    events: libc::c_short,
    left: Option<std::time::Duration>,
) -> Result<std::io::Result<usize>, SessionError> {
    let polled = {
        let _armed = unproven
            .map(|u| u.arm(fd))
            .transpose()
            .map_err(dropped_for_room)?;
        wake::poll(&mut [wake::pollfd(fd, events)], left)
    };
    still_unproven(unproven)?;
    Ok(polled)
}

/// One wait of the handshake for `fd` to be ready for `events`, until `deadline`
/// (TIMEOUTbusy). A timeout, a failed poll or a drop for room ends the handshake; a timeout
/// or a drop also sets `reset_fd` to close with RST under `reset = yes`.
fn handshake_wait(
    svc: &ServiceCtx,
    op: &'static str,
    unproven: Option<&Unproven>,
    (fd, events): (std::os::fd::RawFd, libc::c_short),
    reset_fd: std::os::fd::RawFd,
    deadline: Option<Instant>,
) -> Result<(), SessionError> {
    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
    let polled = wait_for_peer(unproven, fd, events, left)
        .inspect_err(|_| reset_if_configured(svc, reset_fd))?;
    match polled {
        Ok(0) => {
            reset_if_configured(svc, reset_fd);
            svc.counters
                .handshake_failed(crate::metrics::HandshakeReason::Timeout);
            Err(SessionError::Handshake {
                op,
                why: HandshakeFailure::TimedOut,
            })
        }
        Ok(_) => Ok(()),
        Err(e) => {
            svc.counters
                .handshake_failed(crate::metrics::HandshakeReason::Other);
            Err(SessionError::Handshake {
                op,
                why: HandshakeFailure::Poll(e),
            })
        }
    }
}

/// Runs the TLS handshake on `stream` within TIMEOUTbusy (relay rule 1, src/relay.rs): the
/// stream is made non-blocking here and stays so. `sni` (client side) is the name to send.
/// `unproven` (server side): every wait is armed for a drop for room (`wait_for_peer`).
pub(super) fn handshake(
    svc: &ServiceCtx,
    stream: Stream,
    sni: Option<&str>,
    unproven: Option<&Unproven>,
) -> Result<SslStream<Stream>, SessionError> {
    let server = !svc.opts.client;
    let op = if server { "SSL_accept" } else { "SSL_connect" };
    // A huge TIMEOUTbusy means no deadline rather than an overflow.
    let deadline = Instant::now().checked_add(svc.opts.timeouts.busy);
    if server {
        // The client speaks first: until it does, the connection costs no `SSL` (nor its
        // buffers), which is what an idle flood is made of (docs/ARCHITECTURE.md, Unproven
        // sessions), and its thread holds only the stack pages the wait needs (this
        // thread's stack may be an exited session's, a handshake's pages still in it).
        crate::memory::release_unused_stack();
        let fd = stream.read_fd();
        handshake_wait(svc, op, unproven, (fd, libc::POLLIN), fd, deadline)?;
    }
    let mut ssl = Ssl::new(&svc.tls.ctx).map_err(|e| SessionError::Setup(Setup::SslNew(e)))?;
    if !svc.opts.redirect.is_empty() {
        if let Some(index) = crate::tls::verify::redirect_index() {
            ssl.set_ex_data(index, AtomicBool::new(false));
        }
    }
    if let Some(name) = sni {
        ssl.set_hostname(name).map_err(|error| {
            SessionError::Setup(Setup::Sni {
                name: name.to_string(),
                error,
            })
        })?;
    }
    if !server {
        svc.tls.offer_cached_session(&mut ssl);
    }
    stream
        .set_nonblocking(true)
        .map_err(|error| SessionError::Setup(Setup::NonBlocking { op, error }))?;
    let reset_fd = stream.read_fd();
    let fds = (stream.read_fd(), stream.write_fd());
    let mut attempt = if server {
        ssl.accept(stream)
    } else {
        ssl.connect(stream)
    };
    loop {
        match attempt {
            Ok(tls) => {
                for line in crate::tls::describe_session(tls.ssl(), server) {
                    log_info!("{line}");
                }
                svc.counters.handshake_done(tls.ssl().session_reused());
                return Ok(tls);
            }
            Err(HandshakeError::WouldBlock(mid)) => {
                let (fd, events) = if mid.error().code() == ErrorCode::WANT_WRITE {
                    (fds.1, libc::POLLOUT)
                } else {
                    (fds.0, libc::POLLIN)
                };
                // `mid` owns the socket until this arm ends: the armed fd stays open.
                handshake_wait(svc, op, unproven, (fd, events), reset_fd, deadline)?;
                attempt = mid.handshake();
            }
            Err(HandshakeError::Failure(mid)) => {
                reset_if_configured(svc, reset_fd);
                let msg = describe_ssl_error(mid.error());
                svc.counters
                    .handshake_failed(crate::tls::compat::handshake_failure_reason(mid.error()));
                let why = if crate::tls::compat::is_transport_failure(mid.error()) {
                    HandshakeFailure::Disconnected(msg)
                } else {
                    HandshakeFailure::Refused(msg)
                };
                return Err(SessionError::Handshake { op, why });
            }
            Err(HandshakeError::SetupFailure(e)) => {
                return Err(SessionError::Setup(Setup::Ssl { op, error: e }))
            }
        }
    }
}
