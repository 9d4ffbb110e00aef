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
//! `Lookup` resolves the targets of a service whose names are looked up per connection
//! (`delay = yes`): one lookup in flight per service, its last answer kept.
//!
//! Owns nothing but the probe connection, which it closes before returning. Marks its
//! `Ssl` (`tls::verify::mark_probe`) so that the verify callback logs at debug: a paused
//! service probing every few seconds must not fill the log. Logs at debug only, except the
//! configuration problems above. Must not touch service state.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use openssl::ssl::{ErrorCode, HandshakeError, Ssl, SslContext, SslStream};

use crate::health::Probe;
use crate::net::connect;
use crate::net::{Addr, Stream};
use crate::relay::describe_ssl_error;
use crate::tls::compat::{self, ReadEnd};
use crate::wake;

/// What to probe and how.
pub struct Target<'a> {
    pub service: &'a str,
    pub addrs: &'a [Addr],
    /// How to connect; its timeout bounds each step (connect, handshake, the wait for the
    /// close reply).
    pub connect: connect::Spec<'a>,
    /// Client mode: the TLS context and the SNI name to send.
    pub tls: Option<(&'a SslContext, Option<&'a str>)>,
    /// Readable when the probe must give up (the listener is stopping).
    pub cancel: RawFd,
}

/// Whether a target answered: `Answered` as soon as one does; `Unknown` if none did and
/// some could not be probed for a reason of this host (see `health::Probe`); else `Down`
/// with how the last one failed.
pub fn far_side(t: &Target<'_>) -> Probe {
    let mut last = String::from("no address to probe");
    let mut shortage = None;
    for addr in t.addrs {
        match probe_one(t, addr) {
            Ok(()) => {
                log_debug!("Service [{}]: probe of {addr}: answered", t.service);
                return Probe::Answered;
            }
            Err(Failed::Down(why)) => {
                log_debug!("Service [{}]: probe of {addr}: {why}", t.service);
                last = format!("{addr}: {why}");
            }
            Err(Failed::Here(why)) => {
                log_debug!("Service [{}]: probe of {addr}: {why}", t.service);
                shortage = Some(format!("{addr}: {why}"));
            }
        }
    }
    match shortage {
        Some(why) => Probe::Unknown(why),
        None => Probe::Down(last),
    }
}

/// How one target's probe failed.
enum Failed {
    /// The far side did not answer.
    Down(String),
    /// The probe could not be made here (descriptors, memory).
    Here(String),
}

impl From<String> for Failed {
    fn from(why: String) -> Failed {
        Failed::Down(why)
    }
}

fn probe_one(t: &Target<'_>, addr: &Addr) -> Result<(), Failed> {
    let stream = connect::probe_connect(addr, &t.connect, t.cancel).map_err(|e| {
        let why = format!("connect: {}", connect::describe(&e));
        if connect::is_local_shortage(&e) {
            Failed::Here(why)
        } else {
            Failed::Down(why)
        }
    })?;
    let Some((ctx, sni)) = t.tls else {
        // A plain target: connecting is answering. Dropping the stream closes it (FIN).
        return Ok(());
    };
    // SSL_new fails only for want of memory: nothing learnt about the far side.
    let mut ssl = Ssl::new(ctx).map_err(|e| Failed::Here(format!("SSL_new: {e}")))?;
    crate::tls::verify::mark_probe(&mut ssl);
    if let Some(name) = sni {
        if let Err(e) = ssl.set_hostname(name) {
            // A name OpenSSL refuses (too long, say) fails every session the same way.
            log_err!(
                "Service [{}]: probe of {addr}: SNI {name}: {e} (a configuration problem, not an outage: not pausing for it)",
                t.service
            );
            return Ok(());
        }
    }
    let deadline = Instant::now() + t.connect.timeout;
    let fds = (stream.read_fd(), stream.write_fd());
    let mut attempt = ssl.connect(stream);
    let mut tls = loop {
        match attempt {
            Ok(tls) => break tls,
            Err(HandshakeError::WouldBlock(mid)) => {
                wait(t, fds, mid.error().code(), deadline).map_err(String::from)?;
                attempt = mid.handshake();
            }
            Err(HandshakeError::Failure(mid)) => {
                let why = describe_ssl_error(mid.error());
                if compat::is_transport_failure(mid.error()) {
                    return Err(Failed::Down(format!("TLS handshake: {why}")));
                }
                log_err!(
                    "Service [{}]: probe of {addr}: TLS handshake refused: {why} (a configuration problem, not an outage: not pausing for it)",
                    t.service
                );
                return Ok(());
            }
            Err(HandshakeError::SetupFailure(e)) => {
                return Err(Failed::Here(format!("SSL_connect: {e}")))
            }
        }
    };
    Ok(close_and_wait_for_reply(t, addr, &mut tls, fds, deadline)?)
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

/// A name lookup that does not resolve.
pub type Resolve = fn(&[String]) -> Result<Vec<Addr>, String>;

/// The name lookups of one service's probes (`delay = yes`, or a `connect` name that did
/// not resolve at startup): getaddrinfo cannot be interrupted, so it runs on a helper
/// thread, and the listener waits for it at most as long as a probe step (and not at all
/// once stopped: SIGHUP and SIGTERM never wait for a DNS server).
///
/// At most one lookup is in flight per service: a probe that finds one running waits for
/// it instead of starting another, so a slow DNS server costs one thread, not one per
/// probe. The last answer is kept: while a newer lookup runs, the probe uses the
/// addresses it had; with none yet, a lookup still running is `Unknown` (nothing learnt
/// about the far side), never `Down`, so a slow resolver does not keep a live far side
/// paused. A lookup that fails (the name does not resolve) is `Down`: a session would
/// fail the same way.
pub struct Lookup {
    names: Vec<String>,
    resolve: Resolve,
    in_flight: Option<InFlight>,
    last: Option<Vec<Addr>>,
}

struct InFlight {
    done: std::sync::Arc<crate::wake::WakeFd>,
    answer: std::sync::mpsc::Receiver<Result<Vec<Addr>, String>>,
}

impl Lookup {
    pub fn new(names: Vec<String>, resolve: Resolve) -> Lookup {
        Lookup {
            names,
            resolve,
            in_flight: None,
            last: None,
        }
    }

    /// The addresses to probe now, waiting at most `wait` (or until `cancel` is readable)
    /// for a fresh answer.
    pub fn addrs(&mut self, wait: Duration, cancel: RawFd) -> Result<Vec<Addr>, Probe> {
        if self.in_flight.is_none() {
            match self.start() {
                Ok(f) => self.in_flight = Some(f),
                Err(why) => return self.last_or(why),
            }
        }
        let Some(f) = &self.in_flight else {
            unreachable!("started above")
        };
        let mut fds = [
            wake::pollfd(f.done.as_raw_fd(), libc::POLLIN),
            wake::pollfd(cancel, libc::POLLIN),
        ];
        let _ = wake::poll(&mut fds, Some(wait));
        match f.answer.try_recv() {
            Ok(answer) => {
                self.in_flight = None;
                let addrs = answer.map_err(Probe::Down)?;
                self.last = Some(addrs.clone());
                Ok(addrs)
            }
            Err(std::sync::mpsc::TryRecvError::Empty) if fds[1].revents != 0 => {
                Err(Probe::Unknown("name resolution given up (stopping)".into()))
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                self.last_or("name resolution still running".into())
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                self.in_flight = None;
                self.last_or("the resolver thread ended without an answer".into())
            }
        }
    }

    fn last_or(&self, why: String) -> Result<Vec<Addr>, Probe> {
        self.last.clone().ok_or(Probe::Unknown(why))
    }

    fn start(&self) -> Result<InFlight, String> {
        let done =
            std::sync::Arc::new(crate::wake::WakeFd::new().map_err(|e| format!("eventfd: {e}"))?);
        let (tx, answer) = std::sync::mpsc::sync_channel(1);
        let names = self.names.clone();
        let resolve = self.resolve;
        let kick = std::sync::Arc::clone(&done);
        std::thread::Builder::new()
            .name("probe resolver".into())
            .stack_size(512 * 1024)
            .spawn(move || {
                let _ = tx.send(resolve(&names));
                kick.kick();
            })
            .map_err(|e| format!("cannot start a resolver thread: {e}"))?;
        Ok(InFlight { done, answer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static SLOW_CALLS: AtomicUsize = AtomicUsize::new(0);

    /// A DNS server that takes 300 ms to answer (counted: one test uses it).
    fn slow(_: &[String]) -> Result<Vec<Addr>, String> {
        SLOW_CALLS.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        Ok(vec![Addr::Inet("127.0.0.1:514".parse().unwrap())])
    }

    fn slow_uncounted(_: &[String]) -> Result<Vec<Addr>, String> {
        std::thread::sleep(Duration::from_millis(300));
        Ok(Vec::new())
    }

    fn never_resolves(_: &[String]) -> Result<Vec<Addr>, String> {
        Err("Name or service not known".into())
    }

    /// Issue 14's third read, F3: with `delay = yes` and a lookup slower than the probe's
    /// wait, every probe started a thread of its own and counted the far side as down, so
    /// the service stayed paused for as long as DNS was slow. Now one lookup is in flight
    /// at a time, a probe waiting for it learns nothing (`Unknown`), and its answer is kept
    /// for the probes after it.
    #[test]
    fn a_slow_lookup_runs_once_is_unknown_meanwhile_and_is_kept() {
        let no_cancel = crate::wake::WakeFd::new().unwrap();
        let mut l = Lookup::new(vec!["logs.example:514".into()], slow);
        let short = Duration::from_millis(20);
        for _ in 0..3 {
            assert!(matches!(
                l.addrs(short, no_cancel.as_raw_fd()),
                Err(Probe::Unknown(_))
            ));
        }
        assert_eq!(SLOW_CALLS.load(Ordering::SeqCst), 1, "one lookup in flight");
        std::thread::sleep(Duration::from_millis(400));
        let first = l.addrs(short, no_cancel.as_raw_fd()).expect("answered");
        assert_eq!(first.len(), 1);
        // The next probe starts a fresh lookup and, while it runs, uses the last answer.
        assert_eq!(l.addrs(short, no_cancel.as_raw_fd()), Ok(first));
        let started = std::time::Instant::now();
        while SLOW_CALLS.load(Ordering::SeqCst) < 2 && started.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            SLOW_CALLS.load(Ordering::SeqCst),
            2,
            "a fresh lookup started"
        );
    }

    #[test]
    fn a_name_that_does_not_resolve_is_down_and_stopping_gives_up_at_once() {
        let no_cancel = crate::wake::WakeFd::new().unwrap();
        let mut l = Lookup::new(vec!["nowhere.invalid:514".into()], never_resolves);
        assert!(matches!(
            l.addrs(Duration::from_secs(5), no_cancel.as_raw_fd()),
            Err(Probe::Down(_))
        ));
        let cancel = crate::wake::WakeFd::new().unwrap();
        cancel.kick();
        let mut l = Lookup::new(vec!["logs.example:514".into()], slow_uncounted);
        let started = std::time::Instant::now();
        assert!(matches!(
            l.addrs(Duration::from_secs(5), cancel.as_raw_fd()),
            Err(Probe::Unknown(_))
        ));
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
