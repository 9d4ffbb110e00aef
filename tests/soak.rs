//! The soak of issue 8: minutes of steady syslog-like streams plus churning sessions through a
//! client + server rstunnel pair, checking that every line arrives exactly once and in order per
//! connection and that neither tunnel grows. Ignored by `cargo test`; run it with
//! `make soak`, `scripts/test-faults.sh`, or
//! `SOAK_SECONDS=60 cargo test --release --test soak -- --ignored --nocapture`.
//!
//! ```text
//! 20 stream clients ─┐                                          ┌─▶ sink: checks every line,
//!                    ├─plain─▶ client [cli] ─TLS─▶ server [srv] ─┤   acks streams at EOF
//! 200 churners ──────┘          (mutual TLS, runtime PKI)       └─▶ (echoes churn lines)
//! ```
//!
//! * Lines are `<id> <seq> <padding>\n`, 200 bytes, the padding a function of `seq`, so the
//!   sink detects a lost line (gap), a repeated one (duplicate), a mangled one (corrupt) and
//!   lines of two connections mixed up. `seq` starts at 0 on every connection.
//! * Streams `s00`…`s19` stay open for the whole run and send `SOAK_RATE` lines/s each in
//!   20 ms batches; at the end they half-close and the sink answers with its counts, which must
//!   equal what was sent.
//! * Each churner loops: connect, `SOAK_CHURN_LINES` lines each echoed back and compared, half-
//!   close, read EOF, close, rest `SOAK_CHURN_PAUSE_MS`. Every session is a full TLS session
//!   (handshake, close_notify) and two relay threads in each tunnel.
//! * Warm-up burst: every churner's first session holds after its first echo until all 200
//!   are open, so the tunnels reach the run's highest concurrency (all churners and streams)
//!   during warm-up, not at some later busy moment.
//! * Every `SOAK_SAMPLE` seconds both tunnels' VmRSS, open fds (`/proc/PID/fd`) and threads are
//!   sampled twice: under load (for the table), then *quiet*: churn is paused at a session
//!   boundary and the sample waits until both tunnels are back to the fds and threads they had
//!   with only the 20 streams open (up to 15 s; a count that does not come back is recorded as
//!   it is and fails the run). Quiet samples are exact, so fds and threads must not grow at all.
//!
//! Pass criteria (all must hold):
//! * every stream line received exactly once, in order, intact (lost = duplicated = corrupt = 0)
//!   and every stream connection alive to the end;
//! * no churn session failed (connect, echo mismatch, missing EOF, error) and none was lost;
//! * quiet fds and threads of each tunnel at the last sample equal those at the first sample
//!   after warm-up (the first `SOAK_SAMPLE` seconds);
//! * The allocator's arenas (the `held` figure of SIGUSR2's `Memory:` line) at the last sample
//!   at most max(2 MiB, 5 %) above the warm-up sample: after the burst each tunnel's allocator
//!   (glibc, per-thread arenas) has seen the run's peak. VmRSS at most that much above the
//!   warm-up sample plus what the arenas held free then: `malloc_trim` gives free pages back
//!   without shrinking an arena, and reusing them brings them back into RSS (CI once saw server
//!   RSS +2,060 KiB in 600 s with the arenas unchanged at 14,536 KiB and heap in use +80 KiB).
//! * Heap in use (the `Memory:` line SIGUSR2 adds to the session listing, glibc's own count of
//!   allocated and not freed bytes) at most 1 MiB above the warm-up sample, and not rising at
//!   every interval by more than 256 KiB in total. This, not RSS, is the leak check: a
//!   per-session leak scales with the ~33,000 sessions of a 10-minute run (32 bytes a session
//!   is 1 MiB) and moves the heap in use; RSS also creeps as freed chunks scatter over glibc's
//!   per-thread arenas (measured: 80,000 sessions through a pair, server RSS +1.1 MiB, rising
//!   every round but by less and less, heap in use +96 KiB, most of it in the first 20,000), so
//!   a rise of RSS at every sample is no sign of a leak by itself (CI once failed on RSS
//!   +1,320 KiB in ten rising samples, well inside the bound above);
//! * both tunnels still running, and no LOG0–LOG4 line from a connection in their logs.
//!
//! Knobs (environment): `SOAK_SECONDS` (600), `SOAK_SAMPLE` (60, or SOAK_SECONDS/6 when that is
//! shorter, at least 5), `SOAK_STREAMS` (20), `SOAK_RATE` (500 lines/s a stream),
//! `SOAK_CHURNERS` (200), `SOAK_CHURN_LINES` (5), `SOAK_CHURN_PAUSE_MS` (3000). The defaults
//! cost about 0.8 of a core for tunnels and test together (measured: 95 s of CPU in a 120 s
//! run; 1000 lines/s a stream alone cost 0.4 core, 200 churners resting 1 s, ~140 sessions/s,
//! a whole core), so the soak can share a 2-core CI machine with other steps.
//!
//! Output: the sample table, the totals, and one `summary: soak …` line for
//! `scripts/test-faults.sh`.

mod common;

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;

/// Every line is exactly this long, newline included (a typical syslog line).
const LINE_LEN: usize = 200;
/// Stream clients write what is due every tick.
const TICK: Duration = Duration::from_millis(20);
/// How long a quiet sample waits for the tunnels to close the paused churn sessions.
const QUIET_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to wait for the stream connections to reach the sink, and for acks at the end.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the warm-up burst may take to open every churn session at once.
const BURST_TIMEOUT: Duration = Duration::from_secs(60);
/// RSS tolerance: the larger of these (see the module docs).
const RSS_SLACK_KIB: u64 = 2 * 1024;
const RSS_SLACK_PCT: u64 = 5;
/// Heap in use may end at most this far above the warm-up sample.
const HEAP_SLACK_KIB: u64 = 1024;
/// A rise of the heap in use at every interval is a leak only above this much in total.
const HEAP_MONOTONE_KIB: u64 = 256;

struct Settings {
    seconds: u64,
    sample: u64,
    streams: usize,
    rate: u64,
    churners: usize,
    churn_lines: u64,
    churn_pause: Duration,
}

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

impl Settings {
    fn from_env() -> Settings {
        let seconds = env_num("SOAK_SECONDS", 600).max(10);
        let sample = env_num("SOAK_SAMPLE", (seconds / 6).clamp(5, 60)).max(1);
        Settings {
            seconds,
            sample,
            streams: env_num("SOAK_STREAMS", 20) as usize,
            rate: env_num("SOAK_RATE", 500),
            churners: env_num("SOAK_CHURNERS", 200) as usize,
            churn_lines: env_num("SOAK_CHURN_LINES", 5).max(1),
            churn_pause: Duration::from_millis(env_num("SOAK_CHURN_PAUSE_MS", 3000)),
        }
    }

    /// The case name in the summary line, e.g. `streams20_churn200_600s`.
    fn case(&self) -> String {
        format!(
            "streams{}_churn{}_{}s",
            self.streams, self.churners, self.seconds
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Lines

/// Appends `<id> <seq> <padding>\n` (exactly [`LINE_LEN`] bytes) to `out`.
fn push_line(out: &mut Vec<u8>, id: &str, seq: u64) {
    let start = out.len();
    write!(out, "{id} {seq:010} ").unwrap();
    let pad = LINE_LEN - 1 - (out.len() - start);
    out.extend((0..pad).map(|i| pad_byte(seq, i)));
    out.push(b'\n');
}

/// The padding depends on `seq` and the position, so a byte from another line or a shifted
/// line does not pass for a good one.
fn pad_byte(seq: u64, i: usize) -> u8 {
    b'a' + ((seq as usize + i) % 26) as u8
}

/// Splits a received line into (id, seq), checking its length and padding; `None` if mangled.
fn parse_line(line: &[u8]) -> Option<(&[u8], u64)> {
    if line.len() != LINE_LEN || line[LINE_LEN - 1] != b'\n' {
        return None;
    }
    let sp1 = line.iter().position(|&b| b == b' ')?;
    let rest = &line[sp1 + 1..];
    let sp2 = rest.iter().position(|&b| b == b' ')?;
    let seq: u64 = std::str::from_utf8(&rest[..sp2]).ok()?.parse().ok()?;
    let pad = &rest[sp2 + 1..rest.len() - 1];
    if pad.iter().enumerate().any(|(i, &b)| b != pad_byte(seq, i)) {
        return None;
    }
    Some((&line[..sp1], seq))
}

// ---------------------------------------------------------------------------------------------
// The sink behind the server tunnel

/// What the sink saw on one connection.
#[derive(Clone, Debug, Default)]
struct ConnCheck {
    /// Lines that arrived in order (seq = previous + 1), and their bytes.
    in_order: u64,
    in_order_bytes: u64,
    /// Lines whose seq was not above the previous one.
    duplicated: u64,
    /// Lines skipped over (seq jumped ahead by this much in total).
    missing: u64,
    /// Lines of the wrong length or padding, or with another connection's id.
    corrupt: u64,
    /// A partial line before EOF, or an I/O error: what went wrong.
    error: Option<String>,
}

impl ConnCheck {
    fn clean(&self) -> bool {
        self.duplicated == 0 && self.missing == 0 && self.corrupt == 0 && self.error.is_none()
    }

    fn add(&mut self, o: &ConnCheck) {
        self.in_order += o.in_order;
        self.in_order_bytes += o.in_order_bytes;
        self.duplicated += o.duplicated;
        self.missing += o.missing;
        self.corrupt += o.corrupt;
        if self.error.is_none() {
            self.error.clone_from(&o.error);
        }
    }
}

/// Everything the sink saw: streams by id, churn sessions added up (there are tens of
/// thousands of them).
#[derive(Default)]
struct SinkState {
    streams: Mutex<BTreeMap<String, ConnCheck>>,
    streams_connected: AtomicUsize,
    /// Stream lines received in order so far (for the table).
    stream_lines: AtomicU64,
    churn: Mutex<(u64, ConnCheck)>,
}

/// Reads and checks one connection's lines. Stream connections (`s…`) are acked at EOF with
/// `ack <in_order> <duplicated> <missing> <corrupt>\n`; churn connections (`c…`) get every
/// good line echoed back as it arrives.
fn sink_conn(s: TcpStream, state: &SinkState) -> io::Result<()> {
    let mut out = s.try_clone()?;
    let mut r = BufReader::with_capacity(64 * 1024, s);
    let mut id: Option<Vec<u8>> = None;
    let mut next = 0u64;
    let mut check = ConnCheck::default();
    let mut line = Vec::with_capacity(LINE_LEN);
    let result: io::Result<()> = loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) => break Ok(()),
            Ok(_) if line.last() != Some(&b'\n') => {
                check.error = Some(format!("{} byte(s) of a partial line at EOF", line.len()));
                break Ok(());
            }
            Ok(_) => {}
            Err(e) => {
                check.error = Some(format!("read: {e}"));
                break Err(e);
            }
        }
        let Some((lid, seq)) = parse_line(&line) else {
            check.corrupt += 1;
            continue;
        };
        if id.is_none() {
            if lid.starts_with(b"s") {
                state.streams_connected.fetch_add(1, Ordering::SeqCst);
            }
            id = Some(lid.to_vec());
        }
        if Some(lid) != id.as_deref() {
            check.corrupt += 1;
            continue;
        }
        if seq < next {
            check.duplicated += 1;
            continue;
        }
        check.missing += seq - next;
        next = seq + 1;
        check.in_order += 1;
        check.in_order_bytes += line.len() as u64;
        if lid.starts_with(b"s") {
            state.stream_lines.fetch_add(1, Ordering::Relaxed);
        } else if let Err(e) = out.write_all(&line) {
            check.error = Some(format!("echo: {e}"));
            break Err(e);
        }
    };
    let id = String::from_utf8_lossy(id.as_deref().unwrap_or(b"?")).into_owned();
    if id.starts_with('s') {
        // Recorded before the ack is sent: a client that got its ack finds its entry here.
        state.streams.lock().unwrap().insert(id, check.clone());
        if result.is_ok() {
            let ack = format!(
                "ack {} {} {} {}\n",
                check.in_order, check.duplicated, check.missing, check.corrupt
            );
            out.write_all(ack.as_bytes())?;
        }
    } else {
        let mut churn = state.churn.lock().unwrap();
        churn.0 += 1;
        churn.1.add(&check);
    }
    out.shutdown(Shutdown::Write)?;
    // Let the tunnel see our EOF before the socket closes under it.
    let _ = r.read_to_end(&mut Vec::new());
    result
}

// ---------------------------------------------------------------------------------------------
// Load: long-lived streams

struct StreamResult {
    id: String,
    sent: u64,
    sent_bytes: u64,
    /// The sink's `ack …` line, if it came.
    ack: Option<String>,
    error: Option<String>,
}

fn connect_to(entry: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&entry, CONNECT_TIMEOUT)?;
    set_timeouts(&s);
    s.set_nodelay(true)?;
    Ok(s)
}

/// Sends `rate` lines/s until `stop`, then half-closes and reads the sink's ack.
fn stream_client(entry: SocketAddr, idx: usize, rate: u64, stop: Arc<AtomicBool>) -> StreamResult {
    let mut res = StreamResult {
        id: format!("s{idx:02}"),
        sent: 0,
        sent_bytes: 0,
        ack: None,
        error: None,
    };
    let mut s = match connect_to(entry) {
        Ok(s) => s,
        Err(e) => {
            res.error = Some(format!("connect: {e}"));
            return res;
        }
    };
    let start = Instant::now();
    let mut batch = Vec::new();
    // The first line goes out at once, so the sink sees every stream before the load starts.
    let mut due = 1u64;
    loop {
        batch.clear();
        let mut n = 0u64;
        while res.sent + n < due {
            push_line(&mut batch, &res.id, res.sent + n);
            n += 1;
        }
        if n > 0 {
            if let Err(e) = s.write_all(&batch) {
                res.error = Some(format!("write after {} line(s): {e}", res.sent));
                return res;
            }
            res.sent += n;
            res.sent_bytes += batch.len() as u64;
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        // Pacing, not waiting for a condition: the rate is set by the clock.
        std::thread::sleep(TICK);
        due = 1 + rate * start.elapsed().as_millis() as u64 / 1000;
    }
    if let Err(e) = s.shutdown(Shutdown::Write) {
        res.error = Some(format!("shutdown: {e}"));
        return res;
    }
    match read_line(&mut s, 256) {
        Ok(l) if l.ends_with(b"\n") => {
            res.ack = Some(String::from_utf8_lossy(&l).trim_end().to_string())
        }
        Ok(l) => res.error = Some(format!("no ack, got {:?}", String::from_utf8_lossy(&l))),
        Err(e) => res.error = Some(format!("reading ack: {e}")),
    }
    res
}

// ---------------------------------------------------------------------------------------------
// Load: churning sessions

/// Lets the sampler pause the churners at a session boundary. `.0` = paused, `.1` = sessions
/// open right now, `.2` = stop for good.
struct Gate {
    state: Mutex<(bool, usize, bool)>,
    cv: Condvar,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            state: Mutex::new((false, 0, false)),
            cv: Condvar::new(),
        }
    }

    /// Waits while paused; `false` once stopped. Otherwise counts a session as open.
    fn enter(&self) -> bool {
        let mut st = self.state.lock().unwrap();
        while st.0 && !st.2 {
            st = self.cv.wait(st).unwrap();
        }
        if st.2 {
            return false;
        }
        st.1 += 1;
        true
    }

    fn leave(&self) {
        self.state.lock().unwrap().1 -= 1;
        self.cv.notify_all();
    }

    /// Sleeps `d` between sessions, cut short by a stop.
    fn rest(&self, d: Duration) {
        let st = self.state.lock().unwrap();
        let _ = self.cv.wait_timeout_while(st, d, |st| !st.2).unwrap();
    }

    fn set_paused(&self, paused: bool) {
        self.state.lock().unwrap().0 = paused;
        self.cv.notify_all();
    }

    fn stop(&self) {
        self.state.lock().unwrap().2 = true;
        self.cv.notify_all();
    }

    /// After `set_paused(true)`: waits until no session is open.
    fn wait_idle(&self, timeout: Duration) -> bool {
        let st = self.state.lock().unwrap();
        let (st, _) = self
            .cv
            .wait_timeout_while(st, timeout, |st| st.1 > 0)
            .unwrap();
        st.1 == 0
    }
}

#[derive(Default)]
struct ChurnStats {
    sessions: AtomicU64,
    lines: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_echoed: AtomicU64,
    failures: AtomicU64,
    first_failures: Mutex<Vec<String>>,
}

/// One churn session (with `burst`: the warm-up one, which holds after its first echo until
/// every churner is there); `Err` says what went wrong.
fn churn_session(
    entry: SocketAddr,
    id: &str,
    lines: u64,
    burst: Option<&Rendezvous>,
    stats: &ChurnStats,
) -> Result<(), String> {
    let mut arrival = Arrival(burst);
    let s = connect_to(entry).map_err(|e| format!("connect: {e}"))?;
    let mut w = s.try_clone().map_err(|e| format!("clone: {e}"))?;
    let mut r = BufReader::new(s);
    let mut line = Vec::with_capacity(LINE_LEN);
    let mut back = Vec::with_capacity(LINE_LEN);
    for seq in 0..lines {
        line.clear();
        push_line(&mut line, id, seq);
        w.write_all(&line)
            .map_err(|e| format!("write line {seq}: {e}"))?;
        stats
            .bytes_sent
            .fetch_add(line.len() as u64, Ordering::Relaxed);
        back.clear();
        r.read_until(b'\n', &mut back)
            .map_err(|e| format!("read echo of line {seq}: {e}"))?;
        if back != line {
            return Err(format!(
                "echo of line {seq} differs: {:?}",
                String::from_utf8_lossy(&back)
            ));
        }
        stats
            .bytes_echoed
            .fetch_add(back.len() as u64, Ordering::Relaxed);
        stats.lines.fetch_add(1, Ordering::Relaxed);
        if let Some(r) = arrival.0 {
            arrival.now();
            r.wait_all(BURST_TIMEOUT)?;
        }
    }
    w.shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    let mut rest = Vec::new();
    r.read_to_end(&mut rest)
        .map_err(|e| format!("waiting for EOF: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} unexpected byte(s) before EOF", rest.len()));
    }
    Ok(())
}

/// The warm-up burst: every churner's first session holds, after its first echo, until all
/// churners got there, so the tunnels see the most concurrent sessions the run can ever have
/// (all churners + all streams) during warm-up. After that their allocators have seen their
/// peak, and RSS later can only grow from a leak, not from a busier moment.
struct Rendezvous {
    arrived: Mutex<usize>,
    cv: Condvar,
    total: usize,
}

impl Rendezvous {
    fn arrive(&self) {
        *self.arrived.lock().unwrap() += 1;
        self.cv.notify_all();
    }

    fn wait_all(&self, timeout: Duration) -> Result<(), String> {
        let n = self.arrived.lock().unwrap();
        let (n, _) = self
            .cv
            .wait_timeout_while(n, timeout, |n| *n < self.total)
            .unwrap();
        if *n < self.total {
            return Err(format!(
                "warm-up burst: only {} of {} sessions open after {timeout:?}",
                *n, self.total
            ));
        }
        Ok(())
    }
}

/// Counts a churner in at the rendezvous once, also when its session fails before (on drop),
/// so the others never wait for it in vain.
struct Arrival<'a>(Option<&'a Rendezvous>);

impl Arrival<'_> {
    fn now(&mut self) {
        if let Some(r) = self.0.take() {
            r.arrive();
        }
    }
}

impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        self.now();
    }
}

fn churner(
    entry: SocketAddr,
    idx: usize,
    settings: (u64, Duration, Duration),
    gate: Arc<Gate>,
    burst: Arc<Rendezvous>,
    stats: Arc<ChurnStats>,
) {
    let (lines, pause, offset) = settings;
    let mut burst = Some(burst);
    let mut n = 0u64;
    while gate.enter() {
        let id = format!("c{idx:03}-{n}");
        let result = churn_session(entry, &id, lines, burst.as_deref(), &stats);
        gate.leave();
        match result {
            Ok(()) => {
                stats.sessions.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                stats.failures.fetch_add(1, Ordering::SeqCst);
                let mut first = stats.first_failures.lock().unwrap();
                if first.len() < 20 {
                    first.push(format!("{id}: {e}"));
                }
            }
        }
        n += 1;
        // After the burst, spread the churners over one pause so sessions do not come in waves.
        gate.rest(if burst.take().is_some() {
            offset
        } else {
            pause
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Process sampling

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Proc {
    rss_kib: u64,
    fds: u64,
    threads: u64,
}

fn sample_proc(pid: i32) -> Proc {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e} (tunnel gone?)"));
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/fd: {e}"))
        .count() as u64;
    Proc {
        rss_kib: field("VmRSS:"),
        fds,
        threads: field("Threads:"),
    }
}

/// Heap in use of both tunnels in KiB, from the `Memory: heap N KiB in use, …` line that
/// ends each SIGUSR2 listing; `n` counts the listings asked for so far, this one included.
fn heap_both(tunnels: [&Tunnel; 2], n: usize) -> [Heap; 2] {
    tunnels.map(|t| {
        t.signal(libc::SIGUSR2);
        let lines = t.wait_for_logs("Memory: heap ", n, SETTLE_TIMEOUT);
        let line = &lines[n - 1];
        // "Memory: heap N KiB in use, M KiB held by the allocator"
        let figures: Vec<u64> = line
            .split("Memory: heap ")
            .nth(1)
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        match figures[..] {
            [in_use_kib, held_kib, ..] => Heap {
                in_use_kib,
                held_kib,
            },
            _ => panic!("no heap figures in {line:?}"),
        }
    })
}

/// One tunnel's allocator, from its SIGUSR2 listing.
#[derive(Clone, Copy, Debug, Default)]
struct Heap {
    in_use_kib: u64,
    held_kib: u64,
}

/// One row of the table.
struct Row {
    t: u64,
    /// Client and server under load.
    load: [Proc; 2],
    /// Client and server with churn paused.
    quiet: [Proc; 2],
    /// The allocator of client and server with churn paused.
    heap: [Heap; 2],
    /// How long the quiet wait took.
    quiet_ms: u128,
    sessions: u64,
    lines: u64,
}

const HEADER: &str = "  t(s) |    cli RSS    heap    fds threads |    srv RSS    heap    fds threads | cli fds* srv fds* | quiet ms |  sessions       lines";

fn table_row(r: &Row) -> String {
    format!(
        "{:>6} | {:>7}KiB {:>4}KiB {:>6} {:>7} | {:>7}KiB {:>4}KiB {:>6} {:>7} | {:>8} {:>8} | {:>8} | {:>9} {:>11}",
        r.t,
        r.quiet[0].rss_kib,
        r.heap[0].in_use_kib,
        r.quiet[0].fds,
        r.quiet[0].threads,
        r.quiet[1].rss_kib,
        r.heap[1].in_use_kib,
        r.quiet[1].fds,
        r.quiet[1].threads,
        r.load[0].fds,
        r.load[1].fds,
        r.quiet_ms,
        r.sessions,
        r.lines
    )
}

fn table(rows: &[Row]) -> String {
    let mut s = format!("{HEADER}\n");
    for r in rows {
        s.push_str(&table_row(r));
        s.push('\n');
    }
    s.push_str("(RSS, heap in use, fds, threads: quiet, churn paused; fds*: under load, churn in flight)\n");
    s
}

/// Growth checks of one tunnel's quiet samples from the warm-up row on; problems appended.
fn check_growth(name: &str, rows: &[Row], which: usize, problems: &mut Vec<String>) {
    let warm = rows[1].quiet[which];
    let last = rows[rows.len() - 1].quiet[which];
    if last.fds != warm.fds {
        problems.push(format!(
            "{name}: fds {} at the end, {} after warm-up",
            last.fds, warm.fds
        ));
    }
    if last.threads != warm.threads {
        problems.push(format!(
            "{name}: threads {} at the end, {} after warm-up",
            last.threads, warm.threads
        ));
    }
    // Pages the allocator already held at warm-up come back into RSS as they are reused
    // (a malloc_trim hands them to the kernel without shrinking the arenas): no growth.
    let warm_heap = rows[1].heap[which];
    let reusable = warm_heap.held_kib.saturating_sub(warm_heap.in_use_kib);
    let slack = RSS_SLACK_KIB.max(warm.rss_kib * RSS_SLACK_PCT / 100) + reusable;
    let growth = last.rss_kib.saturating_sub(warm.rss_kib);
    if growth > slack {
        problems.push(format!(
            "{name}: RSS grew {growth} KiB ({} -> {} KiB), more than the {slack} KiB allowed",
            warm.rss_kib, last.rss_kib
        ));
    }
    let held: Vec<u64> = rows[1..].iter().map(|r| r.heap[which].held_kib).collect();
    let held_growth = held[held.len() - 1].saturating_sub(held[0]);
    let held_slack = RSS_SLACK_KIB.max(held[0] * RSS_SLACK_PCT / 100);
    if held_growth > held_slack {
        problems.push(format!(
            "{name}: the allocator's arenas grew {held_growth} KiB ({held:?} KiB), more than the {held_slack} KiB allowed"
        ));
    }
    let heap: Vec<u64> = rows[1..].iter().map(|r| r.heap[which].in_use_kib).collect();
    let heap_growth = heap[heap.len() - 1].saturating_sub(heap[0]);
    if heap_growth > HEAP_SLACK_KIB {
        problems.push(format!(
            "{name}: heap in use grew {heap_growth} KiB ({heap:?} KiB), more than the {HEAP_SLACK_KIB} KiB allowed"
        ));
    }
    if heap.len() >= 4 && heap.windows(2).all(|w| w[1] > w[0]) && heap_growth > HEAP_MONOTONE_KIB {
        problems.push(format!(
            "{name}: heap in use rose at every sample ({heap:?} KiB), {heap_growth} KiB in total"
        ));
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
#[ignore = "minutes long: run by `make soak` / scripts/test-faults.sh"]
fn soak_streams_and_churn() {
    let cfg = Settings::from_env();
    let samples = (cfg.seconds / cfg.sample).max(2);
    println!(
        "soak: {} s, sample every {} s, {} streams x {} lines/s, {} churners x {} lines, rest {} ms",
        cfg.seconds,
        cfg.sample,
        cfg.streams,
        cfg.rate,
        cfg.churners,
        cfg.churn_lines,
        cfg.churn_pause.as_millis()
    );

    let dir = TestDir::new("soak");
    let pki = Pki::new(&dir);
    let sink_state = Arc::new(SinkState::default());
    let sink = {
        let st = sink_state.clone();
        Backend::spawn(move |s, _| sink_conn(s, &st))
    };
    // Mutual TLS as in the syslog article; connection lines below LOG4 are not logged, so the
    // logs hold only problems (the captured log would otherwise grow by the session).
    let ca = pki.ca_file.display();
    let mut pair = TunnelPair::start(
        &dir,
        &pki,
        sink.addr(),
        // pauseWhenDown as by default (the harness turns it off unless named): normal churn
        // must never pause a service (checked below).
        &format!("verifyChain = yes\nCAfile = {ca}\ndebug = 4\npauseWhenDown = yes\n"),
        &format!(
            "cert = {}\nverifyChain = yes\nCAfile = {ca}\ncheckHost = right.name\ndebug = 4\npauseWhenDown = yes\n",
            pki.client.combined.display()
        ),
    );
    let entry = pair.entry();
    let pids = [
        common::process::sole_pid_with_arg(&pair.client.conf, Duration::ZERO),
        common::process::sole_pid_with_arg(&pair.server.conf, Duration::ZERO),
    ];
    let sample_both = || [sample_proc(pids[0]), sample_proc(pids[1])];
    let idle = sample_both();
    println!("idle tunnels: client {:?}, server {:?}", idle[0], idle[1]);

    // Streams first; once every one reached the sink, both tunnels hold exactly the 20
    // sessions: that is the quiet reference.
    let stop_streams = Arc::new(AtomicBool::new(false));
    let streams: Vec<JoinHandle<StreamResult>> = (0..cfg.streams)
        .map(|i| {
            let stop = stop_streams.clone();
            let rate = cfg.rate;
            std::thread::spawn(move || stream_client(entry, i, rate, stop))
        })
        .collect();
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while sink_state.streams_connected.load(Ordering::SeqCst) < cfg.streams {
        assert!(
            Instant::now() < deadline && !streams.iter().any(|h| h.is_finished()),
            "only {} of {} streams reached the sink",
            sink_state.streams_connected.load(Ordering::SeqCst),
            cfg.streams
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let reference = sample_both();
    let reference_heap = heap_both([&pair.client, &pair.server], 1);
    let lines_so_far = || sink_state.stream_lines.load(Ordering::Relaxed);

    let gate = Arc::new(Gate::new());
    let churn = Arc::new(ChurnStats::default());
    let burst = Arc::new(Rendezvous {
        arrived: Mutex::new(0),
        cv: Condvar::new(),
        total: cfg.churners,
    });
    let churners: Vec<JoinHandle<()>> = (0..cfg.churners)
        .map(|i| {
            let gate = gate.clone();
            let burst = burst.clone();
            let stats = churn.clone();
            let offset = cfg.churn_pause * i as u32 / cfg.churners.max(1) as u32;
            let settings = (cfg.churn_lines, cfg.churn_pause, offset);
            std::thread::spawn(move || churner(entry, i, settings, gate, burst, stats))
        })
        .collect();

    let start = Instant::now();
    let mut rows = vec![Row {
        t: 0,
        load: reference,
        quiet: reference,
        heap: reference_heap,
        quiet_ms: 0,
        sessions: 0,
        lines: 0,
    }];
    println!("{HEADER}\n{}", table_row(&rows[0]));
    let mut aborted: Option<String> = None;
    for k in 1..=samples {
        // Sleep to the next sample time, looking for early failures once a second.
        let at = start + Duration::from_secs(k * cfg.sample);
        while Instant::now() < at && aborted.is_none() {
            std::thread::sleep((at - Instant::now()).min(Duration::from_secs(1)));
            if let Some(h) = streams.iter().position(|h| h.is_finished()) {
                aborted = Some(format!("stream s{h:02} ended early"));
            } else if churn.failures.load(Ordering::SeqCst) > 0 {
                aborted = Some("a churn session failed".into());
            }
        }
        if aborted.is_some() {
            break;
        }
        let load = sample_both();
        let t0 = Instant::now();
        gate.set_paused(true);
        // Longer than a socket timeout: a stuck session fails (and is counted) before this.
        assert!(
            gate.wait_idle(2 * IO_TIMEOUT),
            "churn sessions still open {:?} after the pause",
            2 * IO_TIMEOUT
        );
        // Waiting for a condition: both tunnels back at the stream-only fds and threads.
        let mut quiet = sample_both();
        while (0..2)
            .any(|i| quiet[i].fds > reference[i].fds || quiet[i].threads > reference[i].threads)
            && t0.elapsed() < QUIET_TIMEOUT
        {
            std::thread::sleep(Duration::from_millis(20));
            quiet = sample_both();
        }
        let quiet_ms = t0.elapsed().as_millis();
        let heap = heap_both([&pair.client, &pair.server], k as usize + 1);
        if k < samples {
            gate.set_paused(false);
        }
        let row = Row {
            t: start.elapsed().as_secs(),
            load,
            quiet,
            heap,
            quiet_ms,
            sessions: churn.sessions.load(Ordering::SeqCst),
            lines: lines_so_far(),
        };
        // One row as it comes, so a long run shows progress.
        println!("{}", table_row(&row));
        rows.push(row);
    }
    let elapsed = start.elapsed();

    // Wind down: churners first (they are paused or stopping), then the streams, which
    // half-close and wait for their ack.
    gate.stop();
    for h in churners {
        h.join().expect("churner panicked");
    }
    stop_streams.store(true, Ordering::SeqCst);
    let results: Vec<StreamResult> = streams
        .into_iter()
        .map(|h| h.join().expect("stream thread panicked"))
        .collect();

    // --- Judge.
    let mut problems: Vec<String> = Vec::new();
    if let Some(a) = &aborted {
        problems.push(format!("aborted after {:?}: {a}", elapsed));
    }
    let seen = sink_state.streams.lock().unwrap().clone();
    let (mut sent, mut received, mut lost, mut duplicated, mut corrupt) = (0u64, 0, 0, 0, 0);
    let mut bytes_lost = 0u64;
    for r in &results {
        let c = seen.get(&r.id).cloned().unwrap_or_default();
        sent += r.sent;
        received += c.in_order;
        lost += r.sent.saturating_sub(c.in_order);
        duplicated += c.duplicated;
        corrupt += c.corrupt;
        bytes_lost += r.sent_bytes.saturating_sub(c.in_order_bytes);
        let want_ack = format!("ack {} 0 0 0", r.sent);
        if let Some(e) = &r.error {
            problems.push(format!("stream {}: {e}", r.id));
        } else if r.ack.as_deref() != Some(want_ack.as_str()) {
            problems.push(format!(
                "stream {}: sent {} lines, sink answered {:?}",
                r.id, r.sent, r.ack
            ));
        }
        if !c.clean() || c.in_order != r.sent {
            problems.push(format!("stream {}: sent {}, sink saw {c:?}", r.id, r.sent));
        }
    }
    let (sink_churn_conns, sink_churn) = state_churn(&sink_state);
    let churn_sessions = churn.sessions.load(Ordering::SeqCst);
    let churn_failures = churn.failures.load(Ordering::SeqCst);
    let churn_lines = churn.lines.load(Ordering::SeqCst);
    bytes_lost += churn
        .bytes_sent
        .load(Ordering::SeqCst)
        .saturating_sub(churn.bytes_echoed.load(Ordering::SeqCst));
    if churn_failures > 0 {
        problems.push(format!(
            "{churn_failures} churn session(s) failed, first ones: {:#?}",
            churn.first_failures.lock().unwrap()
        ));
    }
    if churn_sessions < cfg.churners as u64 {
        problems.push(format!(
            "only {churn_sessions} churn sessions completed with {} churners",
            cfg.churners
        ));
    }
    if !sink_churn.clean() || sink_churn.in_order != churn_lines {
        problems.push(format!(
            "churn: clients had {churn_lines} lines echoed, sink saw {sink_churn:?}"
        ));
    }
    duplicated += sink_churn.duplicated;
    corrupt += sink_churn.corrupt;
    if rows.len() >= 3 {
        check_growth("client tunnel", &rows, 0, &mut problems);
        check_growth("server tunnel", &rows, 1, &mut problems);
    } else if aborted.is_none() {
        problems.push(format!(
            "only {} sample(s): too short to judge growth",
            rows.len()
        ));
    }
    for (name, t) in [("client", &mut pair.client), ("server", &mut pair.server)] {
        if let Some(st) = t.try_wait() {
            problems.push(format!("{name} tunnel exited: {st}"));
        }
        // SIGUSR2 lists every service that paused or was checked (one probe after a
        // session's far side ended abnormally) since the start: under clean churn there must
        // be none, not even a check.
        let listings = t
            .log_lines()
            .iter()
            .filter(|l| l.contains("Listed "))
            .count();
        t.signal(libc::SIGUSR2);
        t.wait_for_logs("Listed ", listings + 1, Duration::from_secs(10));
        // The service lines follow "Listed"; the Memory line ends the listing.
        t.wait_for_logs("Memory: heap ", listings + 1, Duration::from_secs(10));
        let paused: Vec<String> = t
            .log_lines()
            .into_iter()
            .filter(|l| l.contains("since the start"))
            .collect();
        if !paused.is_empty() {
            problems.push(format!(
                "{name} tunnel paused or checked under normal churn: {paused:#?}"
            ));
        }
        let bad = t.connection_problems(4);
        if !bad.is_empty() {
            problems.push(format!(
                "{name} tunnel logged {} connection problem(s), first: {:#?}",
                bad.len(),
                &bad[..bad.len().min(10)]
            ));
        }
    }

    println!("\n{}", table(&rows));
    println!(
        "streams: {sent} lines sent, {received} received in order, {lost} lost, {duplicated} duplicated, {corrupt} corrupt"
    );
    println!(
        "churn: {churn_sessions} sessions completed ({sink_churn_conns} seen by the sink), {churn_failures} failed, {churn_lines} lines echoed"
    );
    println!("ran {:.1} s", elapsed.as_secs_f64());
    println!(
        "summary: soak {} | load={} streams + {} churning, {} lines, {} sessions | faults=none | bad_inputs=0 | bytes_lost={}",
        cfg.case(),
        cfg.streams,
        cfg.churners,
        sent + churn_lines,
        churn_sessions,
        bytes_lost
    );
    assert!(
        problems.is_empty(),
        "soak failed:\n  {}",
        problems.join("\n  ")
    );
    drop(sink);
}

fn state_churn(s: &SinkState) -> (u64, ConnCheck) {
    s.churn.lock().unwrap().clone()
}
