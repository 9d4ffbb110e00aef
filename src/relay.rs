//! The relay: moves bytes both ways between a plain socket and a TLS stream after the
//! handshake, with one thread per direction sharing one SSL object (DESIGN.md).
//!
//! Invariants, numbered as DESIGN.md's relay rules; tests and comments cite them:
//! 1. The handshake is done before `relay` is called; the TLS socket is non-blocking for good.
//! 2. The `SslStream` sits behind a mutex held only around single non-blocking SSL calls —
//!    never across `poll`, never across plain-side I/O.
//! 3. TLS→plain: `ssl_read` until WANT_*, or the buffer is full (then again without
//!    polling, since OpenSSL may hold more than `poll` can see); write it out unlocked.
//! 4. plain→TLS: poll the plain socket, read outside the lock, `ssl_write` the same bytes
//!    until all are taken, polling for what WANT_READ/WANT_WRITE asks in between.
//! 5. No lost wake-ups: each pump has a `WakeFd`. Before sleeping on an SSL condition a pump
//!    raises `parked_on_ssl` and re-checks `ssl_seq`, which the other pump bumps (and kicks)
//!    after any SSL call that may have changed that condition: for the reader, data left
//!    buffered inside OpenSSL (`SSL_has_pending`); for the writer, any progress by a read.
//! 6. Closing: plain EOF → close_notify once; TLS close_notify or EOF → SHUT_WR on the
//!    plain socket. Either way the other direction keeps running (half-close), and from then
//!    on TIMEOUTclose, not TIMEOUTidle, limits how long it may wait for input with no
//!    traffic, as stunnel does: a slow but live half-closed transfer is never cut. EOF without close_notify (OpenSSL 1.1.1 and 3.x
//!    report it differently, see `tls::compat::classify_read_end`) ends the stream and is
//!    logged once; after an SSL error `shutdown()` is never called.
//! 7. Renegotiation is refused by the context (`tls::context`), not here.
//! 8. TIMEOUTidle: a shared last-activity stamp; a pump that wakes with no traffic for that
//!    long stops the session. Writes to the plain socket block (back-pressure) but time out
//!    after TIMEOUTidle (SO_SNDTIMEO). Either pump stopping for an error wakes the other and
//!    shuts the plain socket down, which also frees a pump blocked writing to it.
//! 9. One 16 KiB buffer per direction (one TLS record), allocated once per session.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use openssl::ssl::{ErrorCode, SslStream};

use crate::accounting::{registry, LiveSession};
use crate::net::Stream;
use crate::tls::compat::{self, ReadEnd};
use crate::wake::{self, WakeFd};

/// One TLS record's worth of plaintext.
pub const RECORD_SIZE: usize = 16 * 1024;

const READER: usize = 0; // TLS → plain
const WRITER: usize = 1; // plain → TLS

/// How a relay ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Both directions ended normally (EOF or close_notify, possibly a close timeout).
    Closed,
    /// The session was cut: an error, a timeout, or a truncated TLS stream.
    Reset(String),
}

/// What a relay did: the numbers of stunnel's `Connection closed` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub sent_to_tls: u64,
    pub sent_to_socket: u64,
    pub outcome: Outcome,
}

pub struct RelaySettings {
    pub idle: Duration,
    pub close: Duration,
    /// `reset = yes`: a session that fails ends with RST on both sockets.
    pub reset: bool,
}

struct Shared {
    tls: Mutex<SslStream<Stream>>,
    /// The TLS stream's descriptors for input and output (the same for a socket).
    tls_fds: (i32, i32),
    plain: Stream,
    wake: [Arc<WakeFd>; 2],
    parked_on_ssl: [AtomicBool; 2],
    ssl_seq: [AtomicU64; 2],
    /// Set when the session must end now (error or timeout); both pumps return.
    stop: AtomicBool,
    /// An SSL call failed fatally: no further SSL call of any kind (rule 6). Set and
    /// tested under the SSL lock.
    ssl_dead: AtomicBool,
    /// One direction has ended (close_notify sent or received): input waits are now
    /// limited by TIMEOUTclose of inactivity (rule 6).
    closing: AtomicBool,
    last_activity_ms: AtomicU64,
    started: Instant,
    /// The reader is inside a (blocking) write to the plain socket.
    writing_plain: AtomicBool,
    /// This session's entry in the registry: byte counters, drain wake-up.
    live: Arc<LiveSession>,
    reset_reason: Mutex<Option<String>>,
    settings: RelaySettings,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a pump found when it woke up.
enum Woke {
    Ready,
    /// The other pump changed something; retry the SSL call.
    Retry,
    /// The session is ending.
    Stop,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The TLS descriptor to poll for `events`.
    fn tls_fd(&self, events: libc::c_short) -> i32 {
        if events == libc::POLLOUT {
            self.tls_fds.1
        } else {
            self.tls_fds.0
        }
    }

    fn touch(&self) {
        self.last_activity_ms.store(self.now_ms(), SeqCst);
    }

    /// Ends the session for both pumps (rule 8). The first reason is kept.
    fn fail(&self, reason: String) {
        {
            let mut slot = lock(&self.reset_reason);
            if slot.is_none() {
                *slot = Some(reason);
            }
        }
        if self.settings.reset {
            crate::net::set_linger_reset(self.plain.as_raw_fd());
            crate::net::set_linger_reset(self.tls_fds.0);
        }
        self.stop.store(true, SeqCst);
        // shutdown() sends a FIN, which a peer may read as a clean end before the RST of
        // `reset = yes`; it is only needed to free a reader blocked writing to the plain
        // socket (whose peer then has unread data queued ahead of that FIN anyway).
        if !self.settings.reset || self.writing_plain.load(SeqCst) {
            self.plain.shutdown_both();
        }
        self.wake[READER].kick();
        self.wake[WRITER].kick();
    }

    /// After an SSL call by `me`: tell the other pump if it may now proceed (rule 5).
    fn notify_other(&self, me: usize, affects_other: bool) {
        if affects_other {
            let other = 1 - me;
            self.ssl_seq[other].fetch_add(1, SeqCst);
            if self.parked_on_ssl[other].load(SeqCst) {
                self.wake[other].kick();
            }
        }
    }

    /// The inactivity limit for a wait: TIMEOUTclose for input once closing (rule 6),
    /// TIMEOUTidle otherwise (rule 8).
    fn limit(&self, awaiting_input: bool) -> Duration {
        if awaiting_input && self.closing.load(SeqCst) {
            self.settings.close
        } else {
            self.settings.idle
        }
    }

    /// How long `poll` may sleep before the inactivity limit is reached.
    fn poll_timeout(&self, awaiting_input: bool) -> Duration {
        let limit_ms = u64::try_from(self.limit(awaiting_input).as_millis()).unwrap_or(u64::MAX);
        let left = self
            .last_activity_ms
            .load(SeqCst)
            .saturating_add(limit_ms)
            .saturating_sub(self.now_ms());
        Duration::from_millis(left)
    }

    /// Sleeps until `fd` has `events`, the pump is kicked, or the inactivity limit.
    /// `ssl_wait` carries the `ssl_seq` value read before the SSL call that asked for this
    /// wait (rule 5); `awaiting_input` is false for waits with data in hand.
    fn wait(
        &self,
        me: usize,
        fd: i32,
        events: libc::c_short,
        ssl_wait: Option<u64>,
        awaiting_input: bool,
    ) -> Woke {
        if let Some(seen) = ssl_wait {
            self.parked_on_ssl[me].store(true, SeqCst);
            if self.ssl_seq[me].load(SeqCst) != seen {
                self.parked_on_ssl[me].store(false, SeqCst);
                return Woke::Retry;
            }
        }
        if self.stop.load(SeqCst) {
            self.parked_on_ssl[me].store(false, SeqCst);
            return Woke::Stop;
        }
        let mut fds = [
            wake::pollfd(fd, events),
            wake::pollfd(self.wake[me].as_raw_fd(), libc::POLLIN),
        ];
        let result = wake::poll(&mut fds, Some(self.poll_timeout(awaiting_input)));
        self.parked_on_ssl[me].store(false, SeqCst);
        if fds[1].revents != 0 {
            self.wake[me].drain();
        }
        if self.stop.load(SeqCst) {
            return Woke::Stop;
        }
        match result {
            Err(e) => {
                self.fail(format!("poll: {e}"));
                Woke::Stop
            }
            Ok(_) if fds[0].revents != 0 => Woke::Ready,
            Ok(_) => self.check_timers(awaiting_input),
        }
    }

    fn check_timers(&self, awaiting_input: bool) -> Woke {
        let limit = self.limit(awaiting_input);
        let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        if self
            .now_ms()
            .saturating_sub(self.last_activity_ms.load(SeqCst))
            < limit_ms
        {
            return Woke::Retry; // kicked, or woke early: the caller retries
        }
        if awaiting_input && self.closing.load(SeqCst) {
            // The end of a half-closed session: a normal close, not a reset.
            log_info!("TIMEOUTclose exceeded: closing");
            self.stop.store(true, SeqCst);
            self.plain.shutdown_both();
            self.wake[READER].kick();
            self.wake[WRITER].kick();
        } else {
            log_info!("TIMEOUTidle exceeded: sending reset");
            self.fail("TIMEOUTidle exceeded".into());
        }
        Woke::Stop
    }

    /// Marks one direction finished and wakes the other so that it re-arms its timer.
    fn start_closing(&self, other: usize) {
        self.closing.store(true, SeqCst);
        self.wake[other].kick();
    }
}

/// Relays until both directions are done or the session is cut. `tls` must have finished
/// its handshake on a non-blocking socket (rule 1); `plain` must be blocking. Spawns the
/// plain→TLS pump on a thread with `stack` bytes and runs TLS→plain on the calling thread.
/// Both sockets are shut down when it returns; the caller closes them by dropping.
pub fn relay(
    tls: SslStream<Stream>,
    plain: Stream,
    settings: RelaySettings,
    stack: usize,
    log_context: (String, crate::log::Level),
    live: Arc<LiveSession>,
) -> Summary {
    let tls_fds = (tls.get_ref().read_fd(), tls.get_ref().write_fd());
    // Rule 8: a plain peer that stops reading cannot hold the session past TIMEOUTidle.
    plain.set_write_timeout(settings.idle);
    let make_wake = || WakeFd::new().map(Arc::new);
    let (Ok(wake_reader), Ok(wake_writer)) = (make_wake(), make_wake()) else {
        return Summary {
            sent_to_tls: 0,
            sent_to_socket: 0,
            outcome: Outcome::Reset("eventfd failed".into()),
        };
    };
    live.set_drain_wake(Arc::clone(&wake_writer));
    let shared = Shared {
        tls: Mutex::new(tls),
        tls_fds,
        plain,
        wake: [wake_reader, wake_writer],
        parked_on_ssl: [AtomicBool::new(false), AtomicBool::new(false)],
        ssl_seq: [AtomicU64::new(0), AtomicU64::new(0)],
        stop: AtomicBool::new(false),
        ssl_dead: AtomicBool::new(false),
        closing: AtomicBool::new(false),
        last_activity_ms: AtomicU64::new(0),
        started: Instant::now(),
        writing_plain: AtomicBool::new(false),
        live,
        reset_reason: Mutex::new(None),
        settings,
    };
    std::thread::scope(|scope| {
        let writer = std::thread::Builder::new()
            .stack_size(stack)
            .spawn_scoped(scope, || {
                crate::log::set_thread_context(&log_context.0, log_context.1);
                plain_to_tls(&shared);
            });
        if writer.is_err() {
            shared.fail("cannot create a thread".into());
        }
        tls_to_plain(&shared);
    });
    let outcome = match lock(&shared.reset_reason).take() {
        Some(reason) => Outcome::Reset(reason),
        None => Outcome::Closed,
    };
    // A clean end closes with FIN; a reset one (with `reset = yes`) is closed by the
    // caller's drop with the RST that `fail` armed.
    if outcome == Outcome::Closed || !shared.settings.reset {
        shared.plain.shutdown_both();
    }
    Summary {
        sent_to_tls: shared.live.sent_to_tls.load(SeqCst),
        sent_to_socket: shared.live.sent_to_socket.load(SeqCst),
        outcome,
    }
}

/// What one locked round of `ssl_read` calls produced.
enum ReadStatus {
    /// The buffer filled up; OpenSSL may hold more (rule 3).
    Full,
    Want(libc::c_short),
    End(ReadEnd, Option<openssl::ssl::Error>),
}

fn want_events(code: ErrorCode) -> Option<libc::c_short> {
    match code {
        ErrorCode::WANT_READ => Some(libc::POLLIN),
        ErrorCode::WANT_WRITE => Some(libc::POLLOUT),
        _ => None,
    }
}

/// The TLS→plain pump (rule 3). Returns when the TLS side has ended or the session stops.
fn tls_to_plain(s: &Shared) {
    let mut buf = vec![0u8; RECORD_SIZE];
    loop {
        if s.stop.load(SeqCst) {
            return;
        }
        let seq_before = s.ssl_seq[READER].load(SeqCst);
        let (n, status) = {
            let mut tls = lock(&s.tls);
            // A post-handshake message that completes here may be what a writer parked on
            // WANT_READ is waiting for (rule 5).
            let was_in_handshake = compat::in_handshake(tls.ssl());
            let mut n = 0;
            let status = loop {
                match tls.ssl_read(&mut buf[n..]) {
                    Ok(0) => break ReadStatus::End(ReadEnd::CloseNotify, None),
                    Ok(k) => {
                        n += k;
                        if n == buf.len() {
                            break ReadStatus::Full;
                        }
                    }
                    Err(e) => match want_events(e.code()) {
                        Some(events) => break ReadStatus::Want(events),
                        None => break ReadStatus::End(compat::classify_read_end(&e), Some(e)),
                    },
                }
            };
            if matches!(
                status,
                ReadStatus::End(ReadEnd::Truncated | ReadEnd::Failed, _)
            ) {
                s.ssl_dead.store(true, SeqCst);
            }
            let progressed = n > 0
                || !matches!(status, ReadStatus::Want(libc::POLLIN))
                || (was_in_handshake && !compat::in_handshake(tls.ssl()));
            s.notify_other(READER, progressed);
            (n, status)
        };
        if n > 0 {
            s.touch();
            s.writing_plain.store(true, SeqCst);
            let written = (&s.plain).write_all(&buf[..n]);
            s.writing_plain.store(false, SeqCst);
            if let Err(e) = written {
                let timed_out = matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
                if timed_out {
                    log_info!("TIMEOUTidle exceeded: sending reset");
                }
                s.fail(if timed_out {
                    "TIMEOUTidle exceeded (socket not reading)".into()
                } else {
                    format!("write to socket: {e}")
                });
                return;
            }
            s.live.sent_to_socket.fetch_add(n as u64, SeqCst);
        }
        match status {
            ReadStatus::Full => continue,
            ReadStatus::Want(events) => {
                match s.wait(READER, s.tls_fd(events), events, Some(seq_before), true) {
                    Woke::Ready | Woke::Retry => continue,
                    Woke::Stop => return,
                }
            }
            ReadStatus::End(ReadEnd::CloseNotify, _) => {
                log_debug!("TLS closed (SSL_read)");
                s.plain.shutdown_write();
                s.start_closing(WRITER);
                return;
            }
            ReadStatus::End(ReadEnd::Truncated, _) => {
                // The SSL object is unusable now; the writer must not touch it (rule 6).
                log_info!("TLS socket closed without close_notify (SSL_read)");
                s.plain.shutdown_write();
                s.stop.store(true, SeqCst);
                s.wake[WRITER].kick();
                return;
            }
            ReadStatus::End(ReadEnd::Failed, e) => {
                let reason = e.map_or_else(
                    || "SSL_read failed".into(),
                    |e| format!("SSL_read: {}", describe_ssl_error(&e)),
                );
                log_err!("{reason}");
                s.fail(reason);
                return;
            }
        }
    }
}

/// The plain→TLS pump (rule 4).
fn plain_to_tls(s: &Shared) {
    let mut buf = vec![0u8; RECORD_SIZE];
    let plain_fd = s.plain.as_raw_fd();
    loop {
        if registry().draining() && !readable_now(plain_fd) {
            // Shutting down (SIGTERM): what the plain side already sent has been passed on;
            // close the TLS side gracefully and let the reader finish under TIMEOUTclose.
            log_debug!("Draining: closing");
            send_close_notify(s);
            return;
        }
        match s.wait(WRITER, plain_fd, libc::POLLIN, None, true) {
            Woke::Ready => {}
            Woke::Retry => continue,
            Woke::Stop => return,
        }
        let n = match (&s.plain).read(&mut buf) {
            Ok(0) => {
                log_debug!("Socket closed (read)");
                send_close_notify(s);
                return;
            }
            Ok(n) => n,
            Err(e)
                if e.kind() == std::io::ErrorKind::Interrupted
                    || e.kind() == std::io::ErrorKind::WouldBlock =>
            {
                continue
            }
            Err(e) => {
                s.fail(format!("read from socket: {e}"));
                return;
            }
        };
        s.touch();
        if !write_all_tls(s, &buf[..n]) {
            return;
        }
    }
}

/// Whether `fd` has input (or EOF) waiting right now.
fn readable_now(fd: i32) -> bool {
    let mut fds = [wake::pollfd(fd, libc::POLLIN)];
    matches!(wake::poll(&mut fds, Some(Duration::ZERO)), Ok(n) if n > 0)
}

/// Pushes `data` through `ssl_write` (partial writes allowed), waiting as OpenSSL asks.
/// Returns false when the session is ending.
fn write_all_tls(s: &Shared, data: &[u8]) -> bool {
    let mut offset = 0;
    while offset < data.len() {
        if s.stop.load(SeqCst) || s.ssl_dead.load(SeqCst) {
            return false;
        }
        let seq_before = s.ssl_seq[WRITER].load(SeqCst);
        let result = {
            let mut tls = lock(&s.tls);
            if s.ssl_dead.load(SeqCst) {
                return false;
            }
            let result = tls.ssl_write(&data[offset..]);
            if result
                .as_ref()
                .is_err_and(|e| want_events(e.code()).is_none())
            {
                s.ssl_dead.store(true, SeqCst);
            }
            let pending = compat::has_pending(tls.ssl());
            s.notify_other(WRITER, pending);
            result
        };
        match result {
            Ok(k) => {
                offset += k;
                s.live.sent_to_tls.fetch_add(k as u64, SeqCst);
            }
            Err(e) => match want_events(e.code()) {
                Some(events) => {
                    if let Woke::Stop =
                        s.wait(WRITER, s.tls_fd(events), events, Some(seq_before), false)
                    {
                        return false;
                    }
                }
                None => {
                    let reason = format!("SSL_write: {}", describe_ssl_error(&e));
                    log_err!("{reason}");
                    s.fail(reason);
                    return false;
                }
            },
        }
    }
    true
}

/// Sends close_notify once (rule 6), then lets the reader finish under TIMEOUTclose.
fn send_close_notify(s: &Shared) {
    loop {
        if s.stop.load(SeqCst) {
            break;
        }
        let seq_before = s.ssl_seq[WRITER].load(SeqCst);
        let result = {
            let mut tls = lock(&s.tls);
            if s.ssl_dead.load(SeqCst) {
                break;
            }
            tls.shutdown()
        };
        match result {
            Ok(_) => {
                log_debug!("TLS close_notify sent");
                break;
            }
            Err(e) => match want_events(e.code()) {
                Some(events) => {
                    if let Woke::Stop =
                        s.wait(WRITER, s.tls_fd(events), events, Some(seq_before), false)
                    {
                        break;
                    }
                }
                None => break,
            },
        }
    }
    s.start_closing(READER);
}

/// OpenSSL's error queue as one line, or the socket error.
pub fn describe_ssl_error(e: &openssl::ssl::Error) -> String {
    if let Some(stack) = e.ssl_error() {
        let reasons: Vec<String> = stack
            .errors()
            .iter()
            .map(|err| err.reason().unwrap_or("unknown error").to_string())
            .collect();
        if !reasons.is_empty() {
            return reasons.join(", ");
        }
    }
    match e.io_error() {
        Some(io) => io.to_string(),
        None if e.code() == ErrorCode::SYSCALL => "Peer suddenly disconnected".into(),
        None => format!("{e}"),
    }
}
