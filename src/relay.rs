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
//! 5. No lost wake-ups: each pump has a `ThreadWaker` (a signal, no fd). Before sleeping on an SSL condition a pump
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
//! 9. One 64 KiB buffer per direction (four TLS records), held only while data moves: a pump
//!    lets go of it before it sleeps waiting for input, so an idle session owns no buffer
//!    and memory follows the active sessions, not the open ones. Never zero-filled.

use std::io::Write;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use openssl::ssl::{ErrorCode, SslStream};

use crate::accounting::{registry, LiveSession};
use crate::net::Stream;
use crate::tls::compat::{self, ReadEnd};
use crate::wake::{self, ThreadWaker};

/// Plaintext moved per step: four full TLS records. One read(2) of the plain side feeds
/// four records to SSL_write, and four records decrypted (OpenSSL reads ahead into a
/// buffer as large) leave in one write(2): fewer syscalls per byte than one record at a
/// time, which is what bounds a relay's throughput once AES-NI does the crypto.
pub const BUFFER_SIZE: usize = 64 * 1024;

/// A pump's record buffer (rule 9): allocated when data is about to arrive, released before
/// the pump sleeps. Filled only through APIs that report how many bytes they initialised,
/// so it is never zeroed first (zeroing 64 KiB per wake-up would cost more than the malloc).
struct RecordBuf {
    bytes: Vec<u8>,
}

impl RecordBuf {
    fn new() -> RecordBuf {
        RecordBuf { bytes: Vec::new() }
    }

    fn filled(&self) -> &[u8] {
        &self.bytes
    }

    fn is_full(&self) -> bool {
        self.bytes.len() == BUFFER_SIZE
    }

    /// The room left, allocating the buffer if it was released.
    fn room(&mut self) -> &mut [MaybeUninit<u8>] {
        if self.bytes.capacity() == 0 {
            self.bytes.reserve_exact(BUFFER_SIZE);
        }
        let room = BUFFER_SIZE - self.bytes.len();
        &mut self.bytes.spare_capacity_mut()[..room]
    }

    /// Records that the first `n` bytes of [`room`](Self::room) were initialised.
    ///
    /// # Safety
    /// The caller's last `room()` slice must have had its first `n` bytes written.
    unsafe fn advance(&mut self, n: usize) {
        debug_assert!(self.bytes.len() + n <= BUFFER_SIZE);
        // SAFETY: per the contract those bytes are initialised and within capacity.
        unsafe { self.bytes.set_len(self.bytes.len() + n) };
    }

    fn clear(&mut self) {
        self.bytes.clear();
    }

    /// Gives the memory back before a wait for input.
    fn release(&mut self) {
        self.bytes = Vec::new();
    }
}

/// How long a pump waits with nothing to do before it trims its stack (see `Shared::wait`).
const IDLE_SETTLE: Duration = Duration::from_secs(1);

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

/// What ends a session: the closing lines, then its slot released. Called exactly once,
/// by whichever pump stops last.
pub type Finish = Box<dyn FnOnce(Summary) + Send>;

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
    wake: [Arc<ThreadWaker>; 2],
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
    /// Per pump: its stack was trimmed since it last had work (see `wait`).
    stack_settled: [AtomicBool; 2],
    /// Pumps not yet stopped; the one that takes it to zero ends the session.
    pumps_running: AtomicUsize,
    /// Must stay the last field (see [`Closer`]).
    closer: Closer,
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
        let mut timeout = self.poll_timeout(awaiting_input);
        // The first second of each quiet spell is waited out on its own, so that a pump
        // going idle can hand back the stack pages its last burst of work touched.
        let settling = awaiting_input && !self.stack_settled[me].load(SeqCst);
        if settling {
            timeout = timeout.min(IDLE_SETTLE);
        }
        let mut fds = [wake::pollfd(fd, events)];
        let result = self.wake[me].poll(&mut fds, Some(timeout));
        self.parked_on_ssl[me].store(false, SeqCst);
        if self.stop.load(SeqCst) {
            return Woke::Stop;
        }
        match result {
            Err(e) => {
                self.fail(format!("poll: {e}"));
                Woke::Stop
            }
            Ok(_) if fds[0].revents != 0 => {
                self.stack_settled[me].store(false, SeqCst);
                Woke::Ready
            }
            Ok(_) => {
                if settling {
                    release_unused_stack();
                    self.stack_settled[me].store(true, SeqCst);
                    crate::accounting::trim_memory_after_quiet();
                }
                self.check_timers(awaiting_input)
            }
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

/// Starts relaying until both directions are done or the session is cut. `tls` must have
/// finished its handshake on a non-blocking socket (rule 1); `plain` must be blocking.
/// Each direction gets a new thread with `stack` bytes, and the caller returns at once:
/// the thread that did the handshake can exit, and with it the stack pages and glibc's
/// per-thread cache of freed blocks that the handshake left behind (about 17 KiB a
/// session). The last pump to stop shuts the plain socket down and calls `finish` with
/// the summary; the sockets close right after, when the shared state drops.
pub fn relay(
    tls: SslStream<Stream>,
    plain: Stream,
    settings: RelaySettings,
    stack: usize,
    log_context: (String, crate::log::Level),
    live: Arc<LiveSession>,
    finish: Finish,
) {
    let tls_fds = (tls.get_ref().read_fd(), tls.get_ref().write_fd());
    // Rule 8: a plain peer that stops reading cannot hold the session past TIMEOUTidle.
    plain.set_write_timeout(settings.idle);
    let (wake_reader, wake_writer) = (Arc::new(ThreadWaker::new()), Arc::new(ThreadWaker::new()));
    live.set_drain_wake(Arc::clone(&wake_writer));
    let shared = Arc::new(Shared {
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
        stack_settled: [AtomicBool::new(false), AtomicBool::new(false)],
        pumps_running: AtomicUsize::new(2),
        closer: Closer {
            finish: Mutex::new(Some(finish)),
            summary: Mutex::new(None),
        },
    });
    let spawn_pump = |me: usize, pump: fn(&Shared)| {
        let shared = Arc::clone(&shared);
        let log_context = log_context.clone();
        std::thread::Builder::new()
            .stack_size(stack)
            .spawn(move || {
                release_unused_stack();
                crate::log::set_thread_context(&log_context.0, log_context.1);
                run_pump(&shared, me, pump);
            })
    };
    if spawn_pump(WRITER, plain_to_tls).is_err() {
        shared.fail("cannot create a thread".into());
        pump_ended(&shared);
    }
    if spawn_pump(READER, tls_to_plain).is_err() {
        // No thread to spare: this one carries the direction itself.
        run_pump(&shared, READER, tls_to_plain);
    }
}

/// Gives back the pages of this thread's stack below the current frame. glibc reuses the
/// stacks of exited threads, still holding whatever the previous owner (often a session
/// thread deep in a handshake) touched, and a pump's own deepest moments (parsing TLS 1.3
/// tickets, logging) touch more than its idle self needs: called when a pump starts and
/// when it settles into a quiet spell, this keeps an idle pump at two or three pages.
#[inline(never)] // its own frame must be the deepest live one (see MARGIN)
fn release_unused_stack() {
    // Below the current frame, leave room for the calls made from here (madvise's own
    // frame included): nothing lives there.
    const MARGIN: usize = 2 * 1024;
    let page = 4096;
    let here = std::ptr::addr_of!(page) as usize;
    // SAFETY: pthread_getattr_np fills `attr` for the calling thread, which is destroyed
    // after use; the range passed to madvise lies inside this thread's own stack mapping,
    // below the live frames, where MADV_DONTNEED only drops pages nothing refers to.
    unsafe {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
        if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) != 0 {
            return;
        }
        let mut attr = attr.assume_init();
        let mut low: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let got = libc::pthread_attr_getstack(&attr, &mut low, &mut size);
        let mut guard: libc::size_t = 0;
        let _ = libc::pthread_attr_getguardsize(&attr, &mut guard);
        libc::pthread_attr_destroy(&mut attr);
        if got != 0 {
            return;
        }
        // pthread_attr_getstack reports the usable stack, above the guard page.
        let low = (low as usize + page - 1) & !(page - 1);
        let high = here.saturating_sub(MARGIN) & !(page - 1);
        if high > low {
            libc::madvise(low as *mut libc::c_void, high - low, libc::MADV_DONTNEED);
        }
    }
}

/// Runs one pump on the calling thread, attached to its waker for the duration.
fn run_pump(s: &Shared, me: usize, pump: fn(&Shared)) {
    /// Detaches the waker and counts the pump out even if the pump unwinds: a waker left
    /// attached to an exited thread would be signalled by the next drain.
    struct Stopped<'a>(&'a Shared, usize);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            self.0.wake[self.1].detach();
            pump_ended(self.0);
        }
    }
    let _stopped = Stopped(s, me);
    match s.wake[me].attach() {
        Ok(()) => pump(s),
        Err(e) => s.fail(format!("cannot set up the wake signal: {e}")),
    }
}

/// Called once by each pump as it stops; the second one closes the session.
fn pump_ended(s: &Shared) {
    if s.pumps_running.fetch_sub(1, SeqCst) != 1 {
        return;
    }
    let outcome = match lock(&s.reset_reason).take() {
        Some(reason) => Outcome::Reset(reason),
        None => Outcome::Closed,
    };
    // A clean end closes with FIN; a reset one (with `reset = yes`) is closed by the
    // final drop with the RST that `fail` armed.
    if outcome == Outcome::Closed || !s.settings.reset {
        s.plain.shutdown_both();
    }
    let summary = Summary {
        sent_to_tls: s.live.sent_to_tls.load(SeqCst),
        sent_to_socket: s.live.sent_to_socket.load(SeqCst),
        outcome,
    };
    *lock(&s.closer.summary) = Some(summary);
}

/// Calls the session's `finish` once the shared state is dropped. It is the last field of
/// [`Shared`], so by then the SSL object and both sockets are closed: the closing lines
/// follow the FIN or RST, and a released slot never still holds descriptors.
struct Closer {
    finish: Mutex<Option<Finish>>,
    summary: Mutex<Option<Summary>>,
}

impl Drop for Closer {
    fn drop(&mut self) {
        let finish = lock(&self.finish).take();
        let summary = lock(&self.summary).take().unwrap_or(Summary {
            sent_to_tls: 0,
            sent_to_socket: 0,
            outcome: Outcome::Reset("relay ended abnormally".into()),
        });
        if let Some(finish) = finish {
            finish(summary);
        }
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
    let mut buf = RecordBuf::new();
    loop {
        if s.stop.load(SeqCst) {
            return;
        }
        let seq_before = s.ssl_seq[READER].load(SeqCst);
        buf.clear();
        let status = {
            let mut tls = lock(&s.tls);
            // A post-handshake message that completes here may be what a writer parked on
            // WANT_READ is waiting for (rule 5).
            let was_in_handshake = compat::in_handshake(tls.ssl());
            let status = loop {
                match tls.ssl_read_uninit(buf.room()) {
                    Ok(0) => break ReadStatus::End(ReadEnd::CloseNotify, None),
                    Ok(k) => {
                        // SAFETY: SSL_read initialised the first k bytes of `room()`.
                        unsafe { buf.advance(k) };
                        if buf.is_full() {
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
            let progressed = !buf.filled().is_empty()
                || !matches!(status, ReadStatus::Want(libc::POLLIN))
                || (was_in_handshake && !compat::in_handshake(tls.ssl()));
            s.notify_other(READER, progressed);
            status
        };
        let n = buf.filled().len();
        if n > 0 {
            s.touch();
            s.writing_plain.store(true, SeqCst);
            if s.stop.load(SeqCst) {
                // `fail` may have looked at `writing_plain` just before it was set and
                // left the socket open: a blocking write now could outlive the session.
                s.writing_plain.store(false, SeqCst);
                return;
            }
            let written = (&s.plain).write_all(buf.filled());
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
                buf.release();
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
    let mut buf = RecordBuf::new();
    let plain_fd = s.plain.as_raw_fd();
    loop {
        if registry().draining() && !readable_now(plain_fd) {
            // Shutting down (SIGTERM): what the plain side already sent has been passed on;
            // close the TLS side gracefully and let the reader finish under TIMEOUTclose.
            log_debug!("Draining: closing");
            send_close_notify(s);
            return;
        }
        buf.clear();
        // Read first and poll only when nothing is waiting: a steady stream (syslog lines
        // one write() each) then costs one syscall per read instead of two.
        let n = match s.plain.try_read_uninit(buf.room()) {
            Ok(Some(0)) => {
                log_debug!("Socket closed (read)");
                send_close_notify(s);
                return;
            }
            Ok(None) => {
                buf.release();
                match s.wait(WRITER, plain_fd, libc::POLLIN, None, true) {
                    Woke::Ready | Woke::Retry => continue,
                    Woke::Stop => return,
                }
            }
            Ok(Some(n)) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                s.fail(format!("read from socket: {e}"));
                return;
            }
        };
        // SAFETY: read(2) initialised the first n bytes of `room()`.
        unsafe { buf.advance(n) };
        s.touch();
        if !write_all_tls(s, buf.filled()) {
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
            let pending_before = compat::has_pending(tls.ssl());
            let result = tls.ssl_write(&data[offset..]);
            if result
                .as_ref()
                .is_err_and(|e| want_events(e.code()).is_none())
            {
                s.ssl_dead.store(true, SeqCst);
            }
            // Only news wakes the reader: read-ahead often leaves part of a record buffered,
            // which the reader knew about when it parked.
            let pending = compat::has_pending(tls.ssl());
            s.notify_other(WRITER, pending && !pending_before);
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
