//! The relay: moves bytes both ways between a plain socket and a TLS stream after the
//! handshake, with one thread per direction sharing one SSL object.
//!
//! Invariants, the relay rules (tests and comments cite them by number):
//! 1. The handshake is done before `relay` is called; the TLS socket is non-blocking for good.
//! 2. The `SslStream` sits behind a mutex held only around single non-blocking SSL calls —
//!    never across `poll`, never across plain-side I/O.
//! 3. TLS→plain: `ssl_read` until WANT_*, or the buffer is full (then again without
//!    polling, since OpenSSL may hold more than `poll` can see); write it out unlocked.
//! 4. plain→TLS: read the plain side (poll only when nothing is waiting), outside the lock;
//!    `ssl_write` the same bytes until all are taken, polling for what WANT_READ/WANT_WRITE
//!    asks in between.
//! 5. No lost wake-ups: each pump has a `ThreadWaker` (a signal, no fd). Before sleeping on
//!    an SSL condition a pump raises `parked_on_ssl` and re-checks `ssl_seq`, which the
//!    other pump bumps (and kicks) after any SSL call that may have changed that condition:
//!    for the reader, any call of the writer's that took input off the TLS socket (counted
//!    by `Stream::input_reads`; SSL_write reads while a post-handshake message is in
//!    progress and may pull application records in behind it, which the reader's poll can
//!    no longer see); for the writer, any progress by a read.
//! 6. Closing: plain EOF → close_notify once; TLS close_notify or EOF → SHUT_WR on the
//!    plain side. Either way the other direction keeps running (half-close), and from then
//!    on TIMEOUTclose, not TIMEOUTidle, limits how long it may wait for input with no
//!    traffic, as stunnel does: counted from the moment closing started and restarted by
//!    any traffic, so neither a quiet spell before the close nor a slow but live
//!    half-closed transfer is ever cut. SSL_shutdown refused while a post-handshake message
//!    is half received is retried when the reader completes it (rule 5), and logged if it
//!    never is. EOF without close_notify (OpenSSL 1.1.1 and 3.x report it differently, see
//!    `tls::compat::classify_read_end`) ends the stream and is logged once. After a fatal
//!    SSL error (of SSL_read, SSL_write or SSL_shutdown; not the in-init refusal above, which
//!    leaves the session usable) no SSL call of any kind is made: `ssl_dead` is set and
//!    tested under the SSL lock, by every pump, before every call.
//! 7. Renegotiation is refused by the context (`tls::context`), not here.
//! 8. TIMEOUTidle: a shared last-activity stamp; a pump that wakes with no traffic for that
//!    long stops the session. No pump ever blocks outside `Shared::wait`: plain-side reads
//!    and writes are non-blocking (sockets per call, pipes and pseudo-terminals by
//!    O_NONBLOCK, since those have no send timeout and ignore `shutdown()`), and a write
//!    that does not fit waits for room like any other wait, under TIMEOUTidle. So an error
//!    on either direction or a timeout always ends both pumps (`fail` sets `stop` and kicks
//!    them), and a drain always reaches them (the writer is kicked, closes, and kicks the
//!    reader, which then ends under TIMEOUTclose or TIMEOUTidle).
//! 9. One 64 KiB buffer per direction (four TLS records), held only while data moves: a pump
//!    lets go of it before it sleeps waiting for input, so an idle session owns no buffer
//!    and memory follows the active sessions, not the open ones. Never zero-filled.
//!
//! A pump that has waited out a whole quiet second (not one cut short by a kick) gives
//! back the stack pages its last burst touched and lets the heap be trimmed.

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
/// time, which is what bounds a relay's throughput once AES-NI does the crypto. The number
/// itself is `tls::context::READ_AHEAD_SIZE`, the context's read-ahead buffer, so the two
/// cannot drift apart (and `tls`, built below the relay, need not import it).
pub const BUFFER_SIZE: usize = crate::tls::context::READ_AHEAD_SIZE;

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

/// The two pumps of a session, one per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pump {
    /// TLS → plain.
    Reader,
    /// plain → TLS.
    Writer,
}

impl Pump {
    fn other(self) -> Pump {
        match self {
            Pump::Reader => Pump::Writer,
            Pump::Writer => Pump::Reader,
        }
    }
}

/// One value per pump, indexed by `Pump`.
struct PerPump<T>([T; 2]);

impl<T> std::ops::Index<Pump> for PerPump<T> {
    type Output = T;
    fn index(&self, p: Pump) -> &T {
        &self.0[p as usize]
    }
}

/// How a relay ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Both directions ended normally (EOF or close_notify, possibly a close timeout).
    Closed,
    /// The session was cut.
    Cut(Cut),
}

/// Why the relay cut a session. Displayed as the reason of its summary line (and given
/// to `health` as what broke, `FarSide`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// No traffic either way for TIMEOUTidle.
    IdleTimeout,
    /// The far TLS side went away without close_notify before it sent anything and before
    /// the near side ended (`FarSide`).
    FarSideVanished,
    /// SSL_read failed (OpenSSL's words, when it gave any).
    SslRead(Option<String>),
    /// SSL_write failed.
    SslWrite(String),
    /// Reading the plain side failed.
    PlainRead(String),
    /// Writing the plain side failed.
    PlainWrite(String),
    /// poll() itself failed.
    Poll(String),
    /// No thread for the second pump.
    NoThread,
    /// A pump could not set up its wake-up signal.
    WakeSignal(String),
    /// The plain side could not be made non-blocking (rule 8).
    NonBlockingPlain(String),
    /// The shared state went away without a summary (a pump unwound).
    Abnormal,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cut::IdleTimeout => write!(f, "TIMEOUTidle exceeded"),
            Cut::FarSideVanished => {
                write!(f, "TLS socket closed without close_notify (SSL_read)")
            }
            Cut::SslRead(None) => write!(f, "SSL_read failed"),
            Cut::SslRead(Some(why)) => write!(f, "SSL_read: {why}"),
            Cut::SslWrite(why) => write!(f, "SSL_write: {why}"),
            Cut::PlainRead(why) => write!(f, "read from socket: {why}"),
            Cut::PlainWrite(why) => write!(f, "write to socket: {why}"),
            Cut::Poll(why) => write!(f, "poll: {why}"),
            Cut::NoThread => write!(f, "cannot create a thread"),
            Cut::WakeSignal(why) => write!(f, "cannot set up the wake signal: {why}"),
            Cut::NonBlockingPlain(why) => write!(f, "non-blocking plain side: {why}"),
            Cut::Abnormal => write!(f, "relay ended abnormally"),
        }
    }
}

/// What a relay did: the numbers of stunnel's `Connection closed` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub sent_to_tls: u64,
    pub sent_to_socket: u64,
    pub outcome: Outcome,
}

/// One of the relay's two streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Tls,
    Plain,
}

/// What ends a session: the closing lines, then its slot released. Called exactly once,
/// by whichever pump stops last.
pub type Finish = Box<dyn FnOnce(Summary) + Send>;

pub struct RelaySettings {
    pub idle: Duration,
    pub close: Duration,
    /// `reset = yes`: a session that fails ends with RST on both sockets.
    pub reset: bool,
    /// `pauseWhenDown`: which stream is the far side, and the state to tell. `None`: no
    /// such rule (the relay as before `pauseWhenDown`).
    pub far: Option<FarSide>,
}

/// The far side of a session whose service pauses while it is down (`health`).
///
/// Reported the moment the relay sees it, before the near peer learns anything (so that
/// the listener refuses before the near peer can reconnect):
/// * the far side ends abnormally (a reset, a read or write error): the session is also cut
///   at once, so the near peer is not left writing into a session that cannot deliver;
/// * the far side ends the session first, cleanly or (TLS) without close_notify, while the
///   near side is still open, having never sent a byte: a syslog receiver (or the far
///   tunnel in front of it) going away.
///
/// Normal churn is none of these: a far side that answered before closing (a server's
/// reply, even one ended without close_notify), or that closes after the near side ended
/// (answering our close, with or without its own close_notify), or a TLS alert (the far
/// side refusing us: a configuration problem, logged as an error).
pub struct FarSide {
    /// TLS in client mode, the plain target in server mode.
    pub side: Side,
    pub health: Arc<crate::health::Health>,
}

struct Shared {
    tls: Mutex<SslStream<Stream>>,
    /// The TLS stream's descriptors for input and output (the same for a socket).
    tls_fds: (i32, i32),
    plain: Stream,
    wake: PerPump<Arc<ThreadWaker>>,
    parked_on_ssl: PerPump<AtomicBool>,
    ssl_seq: PerPump<AtomicU64>,
    /// Set when the session must end now (error or timeout); both pumps return.
    stop: AtomicBool,
    /// An SSL call failed fatally: no further SSL call of any kind (rule 6). Set and
    /// tested under the SSL lock.
    ssl_dead: AtomicBool,
    /// One direction has ended (close_notify sent or received): input waits are now
    /// limited by TIMEOUTclose of inactivity (rule 6).
    closing: AtomicBool,
    /// The near side ended (its EOF or close_notify was seen), or this tunnel began ending
    /// the session itself (a drain, a failure). Set before that end is forwarded to the far
    /// side, so the far side's answering close can never be seen first: from then on a far
    /// side that closes is answering ours, normal churn (`FarSide`). `closing` is no
    /// substitute: it is set only after the forwarding, and the far side may win that race.
    near_ended: AtomicBool,
    last_activity_ms: AtomicU64,
    started: Instant,
    /// This session's entry in the registry: byte counters, drain wake-up.
    live: Arc<LiveSession>,
    reset_reason: Mutex<Option<Cut>>,
    /// The far side's news was reported (once per session is enough).
    far_reported: AtomicBool,
    settings: RelaySettings,
    /// Per pump: its stack was trimmed since it last had work (see `wait`).
    stack_settled: PerPump<AtomicBool>,
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
    fn new(
        tls: SslStream<Stream>,
        plain: Stream,
        settings: RelaySettings,
        live: Arc<LiveSession>,
        finish: Finish,
    ) -> Arc<Shared> {
        let tls_fds = (tls.get_ref().read_fd(), tls.get_ref().write_fd());
        let (wake_reader, wake_writer) =
            (Arc::new(ThreadWaker::new()), Arc::new(ThreadWaker::new()));
        live.set_drain_wake(Arc::clone(&wake_writer));
        Arc::new(Shared {
            tls: Mutex::new(tls),
            tls_fds,
            plain,
            wake: PerPump([wake_reader, wake_writer]),
            parked_on_ssl: PerPump([AtomicBool::new(false), AtomicBool::new(false)]),
            ssl_seq: PerPump([AtomicU64::new(0), AtomicU64::new(0)]),
            stop: AtomicBool::new(false),
            ssl_dead: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            near_ended: AtomicBool::new(false),
            last_activity_ms: AtomicU64::new(0),
            started: Instant::now(),
            live,
            reset_reason: Mutex::new(None),
            far_reported: AtomicBool::new(false),
            settings,
            stack_settled: PerPump([AtomicBool::new(false), AtomicBool::new(false)]),
            pumps_running: AtomicUsize::new(2),
            closer: Closer {
                finish: Mutex::new(Some(finish)),
                summary: Mutex::new(None),
            },
        })
    }

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
    fn fail(&self, reason: Cut) {
        // Our own shutdown below may show up as an EOF on the far side's socket: no news.
        self.near_ended.store(true, SeqCst);
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
        // `reset = yes`. No pump needs it to be freed: neither ever blocks outside `wait`.
        if !self.settings.reset {
            self.plain.shutdown_both();
        }
        self.wake[Pump::Reader].kick();
        self.wake[Pump::Writer].kick();
    }

    /// `side` ended abnormally: if it is the far side, report it (`FarSide`).
    fn broke(&self, side: Side, reason: &Cut) {
        self.far_news(side, || reason.to_string());
    }

    /// `side` ended cleanly; called before its end is forwarded to the other side. The near
    /// side: note it (`near_ended`). The far side: report it if it closed first (the near
    /// side had not ended) having never sent a byte (`FarSide`).
    fn ended(&self, side: Side) {
        if !self.is_far(side) {
            self.near_ended.store(true, SeqCst);
            return;
        }
        if !self.far_sent_anything() && !self.near_ended.load(SeqCst) {
            self.far_news(side, || {
                "the far side closed a session first, having sent nothing".into()
            });
        }
    }

    /// Whether `side` is the far side of a service that pauses (`FarSide`).
    fn is_far(&self, side: Side) -> bool {
        self.settings.far.as_ref().is_some_and(|f| f.side == side)
    }

    /// Whether the far side has sent a byte in this session (that reached the near side).
    fn far_sent_anything(&self) -> bool {
        let from_far = match self.settings.far.as_ref().map(|f| f.side) {
            Some(Side::Tls) => self.live.sent_to_socket.load(SeqCst),
            Some(Side::Plain) => self.live.sent_to_tls.load(SeqCst),
            None => 0,
        };
        from_far > 0
    }

    fn far_news(&self, side: Side, reason: impl FnOnce() -> String) {
        if let Some(far) = &self.settings.far {
            if far.side == side && !self.far_reported.swap(true, SeqCst) {
                far.health.report(crate::health::Trigger::Broken(reason()));
            }
        }
    }

    /// After an SSL call by `me`: tell the other pump if it may now proceed (rule 5).
    fn notify_other(&self, me: Pump, affects_other: bool) {
        if affects_other {
            let other = me.other();
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
        me: Pump,
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
        let slept_from = Instant::now();
        let result = self.wake[me].poll(&mut fds, Some(timeout));
        self.parked_on_ssl[me].store(false, SeqCst);
        if self.stop.load(SeqCst) {
            return Woke::Stop;
        }
        match result {
            Err(e) => {
                self.fail(Cut::Poll(e.to_string()));
                Woke::Stop
            }
            Ok(_) if fds[0].revents != 0 => {
                self.stack_settled[me].store(false, SeqCst);
                Woke::Ready
            }
            Ok(_) => {
                // Only a second that really passed in quiet settles the pump: a kick or
                // a signal ends the poll early and says nothing about the spell's length.
                if settling && quiet_spell_over(slept_from.elapsed()) {
                    crate::memory::release_unused_stack();
                    self.stack_settled[me].store(true, SeqCst);
                    crate::memory::trim_after_quiet();
                }
                self.check_timers(awaiting_input)
            }
        }
    }

    /// `wait` for the TLS socket to be ready for what an SSL call by `me` asked, with data
    /// in hand (so under TIMEOUTidle, rule 8).
    fn wait_for_tls(&self, me: Pump, events: libc::c_short, seq_before: u64) -> Woke {
        self.wait(me, self.tls_fd(events), events, Some(seq_before), false)
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
            self.near_ended.store(true, SeqCst);
            self.stop.store(true, SeqCst);
            self.plain.shutdown_both();
            self.wake[Pump::Reader].kick();
            self.wake[Pump::Writer].kick();
        } else {
            log_info!("TIMEOUTidle exceeded: sending reset");
            self.fail(Cut::IdleTimeout);
        }
        Woke::Stop
    }

    /// Marks one direction finished and wakes the other so that it re-arms its timer.
    /// TIMEOUTclose counts from now (and from any later traffic), never from the last data
    /// before the close: a session quiet for longer than TIMEOUTclose before it started
    /// closing must still get the reply its close asked for (rule 6). The stamp is moved
    /// before `closing` is set, so a pump that sees `closing` also sees the new stamp.
    fn start_closing(&self, other: Pump) {
        self.touch();
        self.closing.store(true, SeqCst);
        self.wake[other].kick();
    }
}

/// Whether a wait that lasted `slept` was the whole quiet second a pump waits out before it
/// gives back its stack (`Shared::wait`).
fn quiet_spell_over(slept: Duration) -> bool {
    slept >= IDLE_SETTLE
}

/// Starts relaying until both directions are done or the session is cut. `tls` must have
/// finished its handshake on a non-blocking socket (rule 1); `plain` may be in either mode
/// (its reads and writes here never block, rule 8).
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
    // Rule 8: plain-side writes never block, so a plain peer that stops reading (and sends
    // nothing) cannot hold the session past TIMEOUTidle, whatever the descriptor is.
    if let Err(e) = plain.set_output_nonblocking() {
        log_err!("Cannot make the plain side non-blocking: {e}");
        // The closing lines come after the descriptors are closed, as in `Closer`.
        drop((tls, plain));
        finish(Summary {
            sent_to_tls: 0,
            sent_to_socket: 0,
            outcome: Outcome::Cut(Cut::NonBlockingPlain(e.to_string())),
        });
        return;
    }
    let shared = Shared::new(tls, plain, settings, live, finish);
    let spawn_pump = |me: Pump, pump: fn(&Shared)| {
        let shared = Arc::clone(&shared);
        let log_context = log_context.clone();
        std::thread::Builder::new()
            .stack_size(stack)
            .spawn(move || {
                crate::memory::release_unused_stack();
                crate::log::set_thread_context(&log_context.0, log_context.1);
                run_pump(&shared, me, pump);
            })
    };
    if spawn_pump(Pump::Writer, plain_to_tls).is_err() {
        shared.fail(Cut::NoThread);
        pump_ended(&shared);
    }
    if spawn_pump(Pump::Reader, tls_to_plain).is_err() {
        // No thread to spare: this one carries the direction itself.
        run_pump(&shared, Pump::Reader, tls_to_plain);
    }
}

/// Runs one pump on the calling thread, attached to its waker for the duration.
fn run_pump(s: &Shared, me: Pump, pump: fn(&Shared)) {
    /// Detaches the waker and counts the pump out even if the pump unwinds: a waker left
    /// attached to an exited thread would be signalled by the next drain.
    struct Stopped<'a>(&'a Shared, Pump);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            self.0.wake[self.1].detach();
            pump_ended(self.0);
        }
    }
    let _stopped = Stopped(s, me);
    match s.wake[me].attach() {
        Ok(()) => pump(s),
        Err(e) => s.fail(Cut::WakeSignal(e.to_string())),
    }
}

/// Called once by each pump as it stops; the second one closes the session.
fn pump_ended(s: &Shared) {
    if s.pumps_running.fetch_sub(1, SeqCst) != 1 {
        return;
    }
    let outcome = match lock(&s.reset_reason).take() {
        Some(reason) => Outcome::Cut(reason),
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
            outcome: Outcome::Cut(Cut::Abnormal),
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
        let seq_before = s.ssl_seq[Pump::Reader].load(SeqCst);
        buf.clear();
        let status = {
            let mut tls = lock(&s.tls);
            // The writer may have failed between our last look at `stop` and this lock:
            // after a fatal error no SSL call of any kind (rule 6).
            if s.ssl_dead.load(SeqCst) {
                return;
            }
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
            s.notify_other(Pump::Reader, progressed);
            status
        };
        if !buf.filled().is_empty() {
            s.touch();
            if !write_all_plain(s, buf.filled()) {
                return;
            }
        }
        match status {
            ReadStatus::Full => continue,
            ReadStatus::Want(events) => {
                buf.release();
                match s.wait(
                    Pump::Reader,
                    s.tls_fd(events),
                    events,
                    Some(seq_before),
                    true,
                ) {
                    Woke::Ready | Woke::Retry => continue,
                    Woke::Stop => return,
                }
            }
            ReadStatus::End(ReadEnd::CloseNotify, _) => {
                log_debug!("TLS closed (SSL_read)");
                s.ended(Side::Tls);
                s.plain.shutdown_write();
                s.start_closing(Pump::Writer);
                return;
            }
            ReadStatus::End(ReadEnd::Truncated, _)
                if s.is_far(Side::Tls) && !s.far_sent_anything() && !s.near_ended.load(SeqCst) =>
            {
                // The far tunnel went away before it said anything and before we closed:
                // the sign of a far tunnel whose own target is down, or that was killed.
                // Cut the plain client off now, rather than let it write on into a
                // session that cannot deliver.
                let reason = Cut::FarSideVanished;
                log_info!("{reason}");
                s.broke(Side::Tls, &reason);
                s.fail(reason);
                return;
            }
            ReadStatus::End(ReadEnd::Truncated, _) => {
                // Many servers end a response this way (no close_notify after their data, or
                // in answer to ours): an end of stream like any other. The plain peer gets
                // a FIN after every byte already written to it, never a reset that would
                // throw away what is still in its socket's buffers.
                // The SSL object is unusable now; the writer must not touch it (rule 6).
                log_info!("TLS socket closed without close_notify (SSL_read)");
                if !s.is_far(Side::Tls) {
                    s.near_ended.store(true, SeqCst);
                }
                s.plain.shutdown_write();
                s.stop.store(true, SeqCst);
                s.wake[Pump::Writer].kick();
                return;
            }
            ReadStatus::End(ReadEnd::Failed, e) => {
                let alert = e.as_ref().is_some_and(compat::is_alert_from_peer);
                let reason = Cut::SslRead(e.map(|e| describe_ssl_error(&e)));
                log_err!("{reason}");
                // An alert is the peer refusing us (a client certificate it does not
                // take): it is up, and waiting will not fix it. No pause for it.
                if !alert {
                    s.broke(Side::Tls, &reason);
                }
                s.fail(reason);
                return;
            }
        }
    }
}

/// Writes `data` to the plain side without ever blocking in the kernel (rule 8): what does
/// not fit now waits in `wait` for room, a kick or TIMEOUTidle, like every other wait, so
/// an error on the other direction, a timeout or a drain always ends it — also on a pipe
/// or a pseudo-terminal, where no send timeout and no `shutdown()` could. Returns false
/// when the session is ending.
fn write_all_plain(s: &Shared, data: &[u8]) -> bool {
    let fd = s.plain.write_fd();
    let mut offset = 0;
    while offset < data.len() {
        if s.stop.load(SeqCst) {
            return false;
        }
        match s.plain.try_write(&data[offset..]) {
            Ok(Some(k)) => {
                offset += k;
                // A plain peer that reads slowly is still live (rule 8).
                s.touch();
                s.live.sent_to_socket.fetch_add(k as u64, SeqCst);
            }
            Ok(None) => {
                if let Woke::Stop = s.wait(Pump::Reader, fd, libc::POLLOUT, None, false) {
                    return false;
                }
            }
            Err(e) => {
                let reason = Cut::PlainWrite(e.to_string());
                s.broke(Side::Plain, &reason);
                s.fail(reason);
                return false;
            }
        }
    }
    true
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
            // We end the session: the far side's answer to it is no news.
            s.near_ended.store(true, SeqCst);
            send_close_notify(s);
            return;
        }
        buf.clear();
        // Read first and poll only when nothing is waiting: a steady stream (syslog lines
        // one write() each) then costs one syscall per read instead of two.
        let n = match s.plain.try_read_uninit(buf.room()) {
            Ok(Some(0)) => {
                log_debug!("Socket closed (read)");
                s.ended(Side::Plain);
                send_close_notify(s);
                return;
            }
            Ok(None) => {
                buf.release();
                match s.wait(Pump::Writer, plain_fd, libc::POLLIN, None, true) {
                    Woke::Ready | Woke::Retry => continue,
                    Woke::Stop => return,
                }
            }
            Ok(Some(n)) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let reason = Cut::PlainRead(e.to_string());
                s.broke(Side::Plain, &reason);
                s.fail(reason);
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
        let seq_before = s.ssl_seq[Pump::Writer].load(SeqCst);
        let result = {
            let mut tls = lock(&s.tls);
            if s.ssl_dead.load(SeqCst) {
                return false;
            }
            let reads_before = tls.get_ref().input_reads();
            let result = tls.ssl_write(&data[offset..]);
            if result
                .as_ref()
                .is_err_and(|e| want_events(e.code()).is_none())
            {
                s.ssl_dead.store(true, SeqCst);
            }
            // SSL_write reads the socket while a post-handshake message is in progress,
            // and with read-ahead it can pull in application records behind it. The
            // reader parks only after OpenSSL asked it for more input and then polls the
            // socket, which no longer shows what this call took: so any input taken here
            // wakes it. Whether data was already buffered says nothing (rule 5).
            s.notify_other(Pump::Writer, tls.get_ref().input_reads() != reads_before);
            result
        };
        match result {
            Ok(k) => {
                offset += k;
                s.live.sent_to_tls.fetch_add(k as u64, SeqCst);
            }
            Err(e) => match want_events(e.code()) {
                Some(events) => {
                    if let Woke::Stop = s.wait_for_tls(Pump::Writer, events, seq_before) {
                        return false;
                    }
                }
                None => {
                    let reason = Cut::SslWrite(describe_ssl_error(&e));
                    log_err!("{reason}");
                    // As for SSL_read: an alert is a refusal, not an outage.
                    if !compat::is_alert_from_peer(&e) {
                        s.broke(Side::Tls, &reason);
                    }
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
    // Set once SSL_shutdown was refused for a post-handshake message in progress.
    let mut deferred = false;
    loop {
        if s.stop.load(SeqCst) {
            if deferred {
                log_info!(
                    "TLS close_notify not sent: the session ended inside a post-handshake message"
                );
            }
            break;
        }
        let seq_before = s.ssl_seq[Pump::Writer].load(SeqCst);
        let (result, in_handshake) = {
            let mut tls = lock(&s.tls);
            if s.ssl_dead.load(SeqCst) {
                break;
            }
            let result = tls.shutdown();
            let in_handshake = compat::in_handshake(tls.ssl());
            if result
                .as_ref()
                .is_err_and(|e| want_events(e.code()).is_none() && !in_handshake)
            {
                s.ssl_dead.store(true, SeqCst);
            }
            (result, in_handshake)
        };
        let e = match result {
            Ok(_) => {
                log_debug!("TLS close_notify sent");
                break;
            }
            Err(e) => e,
        };
        if let Some(events) = want_events(e.code()) {
            if let Woke::Stop = s.wait_for_tls(Pump::Writer, events, seq_before) {
                break;
            }
        } else if in_handshake {
            // OpenSSL refuses SSL_shutdown while a post-handshake message (a session
            // ticket, a KeyUpdate) is half received, an error that leaves the session
            // usable. Only the reader may read on, and it bumps our `ssl_seq` when the
            // message completes (rule 5): wait for that (no descriptor, only the kick),
            // then try again. Not a wait for input: a peer that never ends the message is
            // the reader's to time out under TIMEOUTclose, and the reader may still be
            // delivering data under TIMEOUTidle meanwhile.
            if !deferred {
                log_debug!("TLS close_notify deferred: a post-handshake message is in progress");
                deferred = true;
                s.start_closing(Pump::Reader);
            }
            if let Woke::Stop = s.wait(Pump::Writer, -1, 0, Some(seq_before), false) {
                log_info!(
                    "TLS close_notify not sent: the session ended inside a post-handshake message"
                );
                break;
            }
        } else {
            log_info!("TLS close_notify not sent: {}", describe_ssl_error(&e));
            break;
        }
    }
    s.start_closing(Pump::Reader);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The reasons of the summary line, as they read before `Cut` was typed: operators
    /// and tests grep for these words.
    #[test]
    fn cuts_read_as_before() {
        let cases = [
            (Cut::IdleTimeout, "TIMEOUTidle exceeded"),
            (
                Cut::FarSideVanished,
                "TLS socket closed without close_notify (SSL_read)",
            ),
            (Cut::SslRead(None), "SSL_read failed"),
            (Cut::SslRead(Some("x".into())), "SSL_read: x"),
            (Cut::SslWrite("x".into()), "SSL_write: x"),
            (Cut::PlainRead("x".into()), "read from socket: x"),
            (Cut::PlainWrite("x".into()), "write to socket: x"),
            (Cut::Poll("x".into()), "poll: x"),
            (Cut::NoThread, "cannot create a thread"),
            (
                Cut::WakeSignal("x".into()),
                "cannot set up the wake signal: x",
            ),
            (
                Cut::NonBlockingPlain("x".into()),
                "non-blocking plain side: x",
            ),
            (Cut::Abnormal, "relay ended abnormally"),
        ];
        for (cut, text) in cases {
            assert_eq!(cut.to_string(), text);
        }
        assert_eq!(Pump::Reader.other(), Pump::Writer);
        assert_eq!(Pump::Writer.other(), Pump::Reader);
    }
    use crate::accounting::ServiceSlots;
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::ssl::ErrorCode;
    use openssl::ssl::{SslAcceptor, SslConnector, SslMethod, SslVerifyMode};
    use openssl::x509::{X509Name, X509};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    /// A finished TLS session over a socketpair: the relay's side (a client, non-blocking
    /// as rule 1 requires) and its peer (a blocking server).
    fn tls_session() -> (SslStream<Stream>, SslStream<UnixStream>) {
        let (cert, key) = self_signed("relay unit test", false);

        let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        acceptor.set_certificate(&cert).unwrap();
        acceptor.set_private_key(&key).unwrap();
        let acceptor = acceptor.build();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || acceptor.accept(theirs).unwrap());
        let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
        connector.set_verify(SslVerifyMode::NONE);
        let client = connector
            .build()
            .configure()
            .unwrap()
            .verify_hostname(false)
            .use_server_name_indication(false)
            .connect("unit", Stream::from_unix(ours))
            .unwrap();
        let server = server.join().unwrap();
        client.get_ref().set_nonblocking(true).unwrap();
        (client, server)
    }

    /// Relay state for a session whose plain peer is the returned socket. The session's
    /// slot is held by the returned guard.
    fn relay_state(
        tls: SslStream<Stream>,
    ) -> (Arc<Shared>, UnixStream, crate::accounting::SessionGuard) {
        static NEXT_ID: AtomicU64 = AtomicU64::new(u64::MAX / 2);
        let slots = Arc::new(ServiceSlots::new(0));
        let guard = registry()
            .admit(
                NEXT_ID.fetch_add(1, SeqCst),
                "unit",
                &slots,
                "unit".into(),
                None,
                Default::default(),
            )
            .unwrap();
        let (plain, plain_peer) = UnixStream::pair().unwrap();
        let settings = RelaySettings {
            idle: Duration::from_secs(10),
            close: Duration::from_secs(10),
            reset: false,
            far: None,
        };
        let shared = Shared::new(
            tls,
            Stream::from_unix(plain),
            settings,
            Arc::clone(guard.session()),
            Box::new(|_| {}),
        );
        (shared, plain_peer, guard)
    }

    fn wait_readable(fd: i32) {
        let mut fds = [wake::pollfd(fd, libc::POLLIN)];
        assert_eq!(
            wake::poll(&mut fds, Some(Duration::from_secs(5))).unwrap(),
            1
        );
    }

    /// Rule 6 (relay-defects issue, defect 5): once an SSL call has failed fatally, the
    /// reader makes no SSL call, even though it looks at `stop` only before taking the lock.
    #[test]
    fn rule_6_reader_makes_no_ssl_call_after_a_fatal_error() {
        let (tls, mut peer) = tls_session();
        peer.write_all(b"sent after the failure").unwrap();
        let (shared, plain_peer, _slot) = relay_state(tls);
        wait_readable(shared.tls_fds.0);
        // What the writer does, under the lock, when its SSL_write fails; `fail` (which
        // sets `stop`) comes after it has let go of the lock.
        shared.ssl_dead.store(true, SeqCst);
        tls_to_plain(&shared);

        plain_peer.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        let delivered = (&plain_peer).read(&mut buf);
        assert!(
            matches!(&delivered, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the reader called SSL_read after the fatal error and delivered {delivered:?}"
        );
        assert!(
            readable_now(shared.tls_fds.0),
            "the record was read off the TLS socket"
        );
    }

    /// A self-signed certificate for `cn` with a new key (RSA makes it large).
    fn self_signed(cn: &str, rsa: bool) -> (X509, PKey<openssl::pkey::Private>) {
        let key = if rsa {
            PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap()
        } else {
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap())
                .and_then(PKey::from_ec_key)
                .unwrap()
        };
        let mut name = X509Name::builder().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut cert = X509::builder().unwrap();
        cert.set_version(2).unwrap();
        cert.set_subject_name(&name).unwrap();
        cert.set_issuer_name(&name).unwrap();
        cert.set_pubkey(&key).unwrap();
        cert.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        cert.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        cert.sign(&key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        (cert.build(), key)
    }

    /// Moves what `from` has to read into `to` (both non-blocking); returns the bytes.
    fn pass(from: &UnixStream, to: Option<&UnixStream>) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match (&*from).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        if let Some(to) = to {
            (&*to).write_all(&all).unwrap();
        }
        all
    }

    /// The TLS records in `bytes`, whole.
    fn records(bytes: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 5 <= bytes.len() {
            let len = 5 + usize::from(u16::from_be_bytes([bytes[at + 3], bytes[at + 4]]));
            out.push(&bytes[at..at + len]);
            at += len;
        }
        out
    }

    /// Rule 5 (relay-defects issue, defect 2): a TLS 1.3 session ticket arrives in several
    /// records; the reader has taken the first (the client is now inside a post-handshake
    /// message) and the start of the second's header, and parked. The rest arrives with an application
    /// record behind it, and the writer's SSL_write, which reads the socket to finish the
    /// message, pulls it all in. The socket is now empty and the record sits in OpenSSL's
    /// buffer, as something was buffered before: only a wake-up can get the reader to it.
    #[test]
    fn rule_5_records_the_writer_pulls_in_wake_the_reader() {
        use openssl::ssl::{Ssl, SslContext};
        // The server: TLS 1.3, records of at most 512 bytes, a client certificate
        // required, so each ticket (which carries the certificate) spans several records.
        let (server_cert, server_key) = self_signed("server", false);
        let mut server_ctx = SslContext::builder(SslMethod::tls()).unwrap();
        server_ctx.set_certificate(&server_cert).unwrap();
        server_ctx.set_private_key(&server_key).unwrap();
        server_ctx
            .set_min_proto_version(Some(openssl::ssl::SslVersion::TLS1_3))
            .unwrap();
        server_ctx.set_verify_callback(
            SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
            |_, _| true,
        );
        server_ctx.set_session_id_context(b"unit").unwrap();
        const SSL_CTRL_SET_MAX_SEND_FRAGMENT: libc::c_int = 52;
        // SAFETY: a valid SSL_CTX; this control takes a length and no pointer.
        let ok = unsafe {
            openssl_sys::SSL_CTX_ctrl(
                server_ctx.as_ptr(),
                SSL_CTRL_SET_MAX_SEND_FRAGMENT,
                512,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(ok, 1);
        let server_ctx = server_ctx.build();
        // The relay's side: a client with read-ahead, as `tls::context` makes it.
        let (client_cert, client_key) = self_signed("client", true);
        let mut client_ctx = SslContext::builder(SslMethod::tls()).unwrap();
        client_ctx.set_certificate(&client_cert).unwrap();
        client_ctx.set_private_key(&client_key).unwrap();
        client_ctx.set_verify(SslVerifyMode::NONE);
        client_ctx.set_read_ahead(true);
        let client_ctx = client_ctx.build();

        // client ⇄ wire_c … (this test) … wire_s ⇄ server: nothing passes unless moved here.
        let (client_sock, wire_c) = UnixStream::pair().unwrap();
        let (server_sock, wire_s) = UnixStream::pair().unwrap();
        for s in [&client_sock, &wire_c, &server_sock, &wire_s] {
            s.set_nonblocking(true).unwrap();
        }
        let mut client = SslStream::new(
            Ssl::new(&client_ctx).unwrap(),
            Stream::from_unix(client_sock),
        )
        .unwrap();
        let mut server = SslStream::new(Ssl::new(&server_ctx).unwrap(), server_sock).unwrap();
        let (mut client_done, mut server_done) = (false, false);
        for _ in 0..100 {
            if !client_done {
                client_done = client.connect().is_ok();
            }
            pass(&wire_c, Some(&wire_s));
            if !server_done {
                server_done = server.accept().is_ok();
            }
            if client_done && server_done {
                break;
            }
            // The server's output reaches the client only during the handshake.
            pass(&wire_s, Some(&wire_c));
        }
        assert!(client_done && server_done, "the handshake did not finish");
        let tickets = pass(&wire_s, None);
        server.ssl_write(b"TAIL").unwrap();
        let tail = pass(&wire_s, None);
        let held = records(&tickets);
        assert!(
            held.len() >= 2 && held[0].len() + held[1].len() <= tickets.len(),
            "expected a ticket over several records, got {} record(s), {} bytes",
            held.len(),
            tickets.len()
        );
        // Record 1 and two bytes of record 2's header. OpenSSL reads the rest of a record
        // body it has begun exactly, but a header with read-ahead: as much as has arrived.
        let split = held[0].len() + 2;

        let (shared, _plain_peer, _slot) = relay_state(client);
        (&wire_c).write_all(&tickets[..split]).unwrap();
        wait_readable(shared.tls_fds.0);
        let seen_by_reader = shared.ssl_seq[Pump::Reader].load(SeqCst);
        {
            // The reader's SSL_read: nothing for it yet, and it would park.
            let mut tls = lock(&shared.tls);
            let mut buf = [0u8; 64];
            let err = tls.ssl_read(&mut buf).unwrap_err();
            assert_eq!(err.code(), ErrorCode::WANT_READ);
            assert!(compat::in_handshake(tls.ssl()), "not inside the ticket");
            assert!(compat::has_pending(tls.ssl()), "no partial record buffered");
        }
        (&wire_c).write_all(&tickets[split..]).unwrap();
        (&wire_c).write_all(&tail).unwrap();
        wait_readable(shared.tls_fds.0);

        assert!(write_all_tls(&shared, b"from the plain side"));

        assert!(
            !readable_now(shared.tls_fds.0),
            "the writer left input on the socket: no stall possible"
        );
        assert_ne!(
            shared.ssl_seq[Pump::Reader].load(SeqCst),
            seen_by_reader,
            "the writer pulled the reader's records in and did not wake it"
        );
        let mut buf = [0u8; 64];
        let n = lock(&shared.tls).ssl_read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"TAIL", "the record was not in OpenSSL's buffer");
    }

    /// The stack is trimmed only after a whole quiet second: a kick in that second ends the
    /// wait early and must not count as settled (relay-defects issue, "Also").
    #[test]
    fn a_kick_in_the_first_quiet_second_does_not_settle_the_pump() {
        let (tls, _peer) = tls_session();
        let (shared, _plain_peer, _slot) = relay_state(tls);
        let plain_fd = shared.plain.read_fd();
        shared.wake[Pump::Reader].attach().unwrap();
        let kicker = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                shared.wake[Pump::Reader].kick();
            })
        };
        let woke = shared.wait(Pump::Reader, plain_fd, libc::POLLIN, None, true);
        kicker.join().unwrap();
        assert!(matches!(woke, Woke::Retry));
        assert!(
            !shared.stack_settled[Pump::Reader].load(SeqCst),
            "a wait cut short by a kick counted as a quiet second"
        );
        let woke = shared.wait(Pump::Reader, plain_fd, libc::POLLIN, None, true);
        shared.wake[Pump::Reader].detach();
        assert!(matches!(woke, Woke::Retry));
        assert!(
            shared.stack_settled[Pump::Reader].load(SeqCst),
            "a whole quiet second did not settle the pump"
        );
    }

    #[test]
    fn a_quiet_spell_is_a_whole_second() {
        assert!(!quiet_spell_over(Duration::from_millis(999)));
        assert!(quiet_spell_over(IDLE_SETTLE));
    }
}
