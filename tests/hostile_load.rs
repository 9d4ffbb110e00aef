//! Hostile load (issue 16): one host must not lock everyone else out of a server tunnel.
//! Each case floods the tunnel from a second loopback address (127.0.0.2) while ten
//! legitimate TLS clients from 127.0.0.1 connect and echo, and counts the legitimate
//! sessions served (each must complete within [`SERVED_WITHIN`]), the tunnel's RSS and
//! threads (`/proc/PID/status`) and the log lines the flood made:
//!
//! 1. `idle-12000`: 12,000 connections that never send a byte, against rstunnel with its
//!    default limits and against the reference stunnel4 under the same load (observed,
//!    never asserted; its figures go in the summary line).
//! 2. `drop-oldest`: no per-source limit, a small `unprovenMax`: every new idle connection
//!    beyond it pushes the oldest out at once (its peer sees the end), and the ten still
//!    get in.
//! 3. `slow-clienthello`: connections that dribble a ClientHello one byte at a time count
//!    as unproven all the while (one more from that address is refused), and TIMEOUTbusy
//!    ends them.
//! 4. `garbage-clienthello`: a flood of connections that send garbage instead of a
//!    ClientHello.
//! 5. `nat-500-proven`: 500 sessions from one address, all open at once, all served:
//!    proven sessions are never limited by the unproven budget.
//! 6. `proven-idle`: a session that completed its handshake and then sends nothing is not
//!    unproven (more of them than `unprovenPerSource` are served) and TIMEOUTidle ends it.
//! 7. `starttls-drop-oldest`: an SMTP STARTTLS exchange counts as unproven; the oldest
//!    idle one is woken out of its read and ended when a new connection needs its room.
//!
//! Each case prints one `summary: load <case> | load=… | faults=… | bad_inputs=N |
//! bytes_lost=N` line (scripts/test-faults.sh). The cases run one at a time (they measure
//! the tunnel's memory and share the machine's CPU); the test process raises its open-file
//! limit to the hard limit for the 12,000 connections. Loopback only; every wait is bounded.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::process::{connector, tunnel_pid, TLS_IO_TIMEOUT};
use common::*;

/// Where the floods come from; the legitimate clients use 127.0.0.1.
const FLOOD_FROM: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The goal of issue 16 for each legitimate session: connect, handshake and echo.
const SERVED_WITHIN: Duration = Duration::from_secs(1);
/// Bound of every log wait and client socket timeout.
const WAIT: Duration = Duration::from_secs(15);
/// Legitimate clients per case.
const LEGIT: usize = 10;

/// One case at a time: each measures the tunnel's memory and needs the CPU.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// One case's setup: the serial lock, the open-file limit raised, a test dir with its PKI,
/// an echo backend and rstunnel's `[srv]` in front of it (`globals` before the section,
/// `extra` in it). Fields drop in order: the tunnel first, the lock last.
struct Case {
    t: Tunnel,
    echo: Backend,
    pki: Pki,
    dir: TestDir,
    _serial: MutexGuard<'static, ()>,
}

impl Case {
    fn start(label: &str, globals: &str, extra: &str) -> Case {
        let serial = serial();
        raise_open_files();
        let dir = TestDir::new(label);
        let pki = Pki::new(&dir);
        let echo = Backend::echo();
        let body = format!(
            "{globals}{}",
            server_body(echo.addr(), &pki.server.combined, extra)
        );
        let t = Tunnel::start(&dir, "rstunnel", &body);
        Case {
            t,
            echo,
            pki,
            dir,
            _serial: serial,
        }
    }
}

fn summary(case: &str, load: &str, faults: &str, bad_inputs: usize) {
    println!(
        "summary: load {case} | load={load} | faults={faults} | bad_inputs={bad_inputs} | bytes_lost=0"
    );
}

/// Raises this process's soft open-file limit to the hard one (20,000 on the CI machine):
/// the floods hold thousands of sockets, and the tunnels started after this inherit it.
fn raise_open_files() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_cur
}

/// Opens `n` connections from [`FLOOD_FROM`] (on four threads); returns those that
/// connected and how many did not within 2 s each.
fn idle_flood(addr: SocketAddr, n: usize) -> (Vec<TcpStream>, usize) {
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let count = n / 4 + usize::from(t < n % 4);
            std::thread::spawn(move || {
                let mut open = Vec::with_capacity(count);
                let mut failed = 0;
                for _ in 0..count {
                    match connect_from(FLOOD_FROM, addr, Duration::from_secs(2), WAIT) {
                        Ok(s) => open.push(s),
                        Err(_) => failed += 1,
                    }
                }
                (open, failed)
            })
        })
        .collect();
    let mut open = Vec::with_capacity(n);
    let mut failed = 0;
    for t in threads {
        let (o, f) = t.join().expect("flood thread");
        open.extend(o);
        failed += f;
    }
    (open, failed)
}

/// What the legitimate clients got.
#[derive(Debug, Default)]
struct Legit {
    /// Sessions that connected, handshook and echoed within [`SERVED_WITHIN`].
    served: usize,
    /// Slowest of those that were served at all.
    slowest: Duration,
    /// Why the others failed.
    failures: Vec<String>,
}

/// Ten TLS clients from 127.0.0.1, one after the other, each echoing a line.
fn legit_clients(addr: SocketAddr, pki: &Pki) -> Legit {
    let tls = connector(&pki.ca_file);
    let mut legit = Legit::default();
    for i in 0..LEGIT {
        let started = Instant::now();
        let result = (|| -> Result<(), String> {
            let tcp = connect_from(Ipv4Addr::LOCALHOST, addr, Duration::from_secs(5), WAIT)
                .map_err(|e| format!("connect: {e}"))?;
            tcp.set_read_timeout(Some(TLS_IO_TIMEOUT)).unwrap();
            let mut s = tls
                .connect("localhost", tcp)
                .map_err(|e| format!("handshake: {e}"))?;
            let line = format!("legitimate client {i}\n");
            process::echo_check(&mut s, line.as_bytes())?;
            let _ = s.shutdown();
            Ok(())
        })();
        let took = started.elapsed();
        match result {
            Ok(()) if took <= SERVED_WITHIN => {
                legit.served += 1;
                legit.slowest = legit.slowest.max(took);
            }
            Ok(()) => {
                legit.slowest = legit.slowest.max(took);
                legit
                    .failures
                    .push(format!("client {i}: served in {took:?}, too slow"));
            }
            Err(e) => legit
                .failures
                .push(format!("client {i}: {e} after {took:?}")),
        }
    }
    legit
}

/// The connection id of a log line (`LOG5[12]: …` → `12`).
fn line_id(line: &str) -> Option<&str> {
    let start = line.find("LOG")? + 3;
    let rest = &line[start..];
    let open = rest.find('[')?;
    let close = rest.find("]:")?;
    rest.get(open + 1..close)
}

/// Log lines the flood made: all of `lines` except those of the legitimate clients'
/// sessions (from 127.0.0.1), which are logged in full as they should be.
fn flood_lines(lines: &[String]) -> usize {
    let legit: std::collections::HashSet<&str> = lines
        .iter()
        .filter(|l| l.contains("accepted connection from 127.0.0.1:"))
        .filter_map(|l| line_id(l))
        .collect();
    lines
        .iter()
        .filter(|l| line_id(l).is_none_or(|id| !legit.contains(id)))
        .count()
}

/// The unproven limits the tunnel logged at startup: (per source, in all).
fn unproven_limits(t: &Tunnel) -> (usize, usize) {
    let line = t.wait_for_log("Unproven sessions (handshake not completed): at most", WAIT);
    let number_before = |marker: &str| -> usize {
        let head = line.split(marker).next().expect("the startup line");
        head.rsplit(' ').next().unwrap().parse().expect("a number")
    };
    (
        number_before(" per source address"),
        number_before(" in all"),
    )
}

/// VmRSS (KiB) and Threads of process `pid`.
fn rss_and_threads(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"))
}

/// How many of `conns` the tunnel has ended (EOF or reset) within `within`, reading each
/// without blocking once the time is up.
fn ended_by_tunnel(conns: &mut [TcpStream], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    let mut ended = vec![false; conns.len()];
    loop {
        for (i, c) in conns.iter_mut().enumerate() {
            if ended[i] {
                continue;
            }
            c.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 64];
            match c.read(&mut buf) {
                Ok(0) => ended[i] = true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => ended[i] = true,
            }
        }
        if ended.iter().all(|e| *e) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ended.iter().filter(|e| **e).count()
}

/// What one flood did to one tunnel.
struct Flood {
    opened: usize,
    /// Flood connections the tunnel had ended (refused) while the legitimate clients ran.
    ended: usize,
    connect_failed: usize,
    legit: Legit,
    rss_before_kib: u64,
    rss_kib: u64,
    threads: u64,
    log_lines: usize,
}

impl Flood {
    fn describe(&self) -> String {
        format!(
            "{}/{LEGIT} served within 1 s (slowest {:.0} ms), RSS {} MiB (before {} MiB), {} threads, {} log lines, {} flood connections ended by the tunnel, {} flood connects failed",
            self.legit.served,
            self.legit.slowest.as_secs_f64() * 1000.0,
            self.rss_kib / 1024,
            self.rss_before_kib / 1024,
            self.threads,
            self.log_lines,
            self.ended,
            self.connect_failed
        )
    }
}

/// Floods `t` with `n` idle connections, runs the legitimate clients while they are held,
/// measures, then lets the flood go.
fn idle_flood_against(t: &Tunnel, pki: &Pki, n: usize) -> Flood {
    let addr = t.addr("srv");
    let pid = tunnel_pid(t);
    let (rss_before_kib, _) = rss_and_threads(pid);
    let lines_before = t.log_lines().len();
    let (mut open, connect_failed) = idle_flood(addr, n);
    // Let the tunnel take in what it accepted before the legitimate clients come.
    std::thread::sleep(Duration::from_secs(1));
    let legit = legit_clients(addr, pki);
    let (rss_kib, threads) = rss_and_threads(pid);
    let log_lines = flood_lines(&t.log_lines()[lines_before..]);
    let ended = ended_by_tunnel(&mut open, Duration::ZERO);
    let opened = open.len();
    drop(open);
    Flood {
        opened,
        ended,
        connect_failed,
        legit,
        rss_before_kib,
        rss_kib,
        threads,
        log_lines,
    }
}

/// Issue 16's measurement: 12,000 idle connections from one address. rstunnel with its
/// default limits must serve at least 9 of 10 within 1 s each, in at most 100 MiB; stunnel4
/// under the same flood is observed.
#[test]
fn idle_flood_of_12000_from_one_address() {
    let n = 12_000;
    let limit = raise_open_files();
    if limit < n as u64 + 1000 {
        skipped(&format!(
            "hostile_load idle-12000: the hard open-file limit {limit} is below {}",
            n + 1000
        ));
        return;
    }
    // Every field bound: `..` would drop the rest (the lock among them) here.
    let Case {
        t,
        echo,
        pki,
        dir,
        _serial,
    } = Case::start("hostile-idle", "", "");
    let (_, total) = unproven_limits(&t);
    let ours = {
        let flood = idle_flood_against(&t, &pki, n);
        eprintln!("rstunnel: {}", flood.describe());
        assert!(
            flood.legit.served >= 9,
            "rstunnel served {}/{LEGIT} within 1 s: {:?}\n{}",
            flood.legit.served,
            flood.legit.failures,
            t.log_text()
        );
        assert!(
            flood.rss_kib <= 100 * 1024,
            "rstunnel held {} MiB under the flood",
            flood.rss_kib / 1024
        );
        // One address may hold `unprovenMax` fresh handshakes at most, and once they are
        // suspects no more than `unprovenPerSource`: the rest are refused at once (their log
        // lines are summarised, so they are counted by what the flood's sockets saw).
        assert!(
            flood.ended + total + LEGIT >= flood.opened,
            "only {} of {} flood connections were refused",
            flood.ended,
            flood.opened
        );
        assert!(
            flood.log_lines <= 100,
            "the flood wrote {} log lines",
            flood.log_lines
        );
        drop(t);
        flood
    };
    let theirs = {
        let body = server_body(echo.addr(), &pki.server.combined, "");
        let t = Tunnel::start_program(Program::Stunnel4, &dir, "stunnel4", &body);
        let flood = idle_flood_against(&t, &pki, n);
        eprintln!("stunnel4: {}", flood.describe());
        flood
    };
    summary(
        "idle-12000",
        &format!(
            "{n} idle connections from {FLOOD_FROM} ({} opened), {LEGIT} TLS echo clients from 127.0.0.1",
            ours.opened
        ),
        &format!(
            "rstunnel: {}; stunnel4 5.68 same flood: {}",
            ours.describe(),
            theirs.describe()
        ),
        LEGIT - ours.legit.served,
    );
}

/// `unprovenMax` with no per-source limit: the flood pushes its own oldest connections
/// out, each ended at once, and the legitimate clients get in.
#[test]
fn the_oldest_unproven_session_makes_room() {
    let (max, n) = (50, 500);
    let c = Case::start(
        "hostile-oldest",
        &format!("unprovenPerSource = 0\nunprovenMax = {max}\n"),
        "",
    );
    let (t, pki) = (&c.t, &c.pki);
    let pid = tunnel_pid(t);
    // The first `max` wait until they are suspects (unproven for a second); each of the
    // rest then pushes the oldest suspect out, and no fresh one is touched.
    let (mut old, mut connect_failed) = idle_flood(t.addr("srv"), max);
    std::thread::sleep(Duration::from_millis(2000));
    let (mut fresh, failed) = idle_flood(t.addr("srv"), n - max);
    connect_failed += failed;
    let old_ended = ended_by_tunnel(&mut old, Duration::from_secs(5));
    let fresh_ended = ended_by_tunnel(&mut fresh, Duration::from_millis(500));
    let ended = old_ended + fresh_ended;
    let (rss_kib, threads) = rss_and_threads(pid);
    let legit = legit_clients(t.addr("srv"), pki);
    // The drops are logged, the first of them one by one, the rest summarised.
    t.wait_for_log("dropped before its handshake completed", WAIT);
    let dropped = t
        .log_lines()
        .iter()
        .filter(|l| l.contains("LOG4[") && l.contains("dropped before its handshake completed"))
        .count();
    eprintln!(
        "drop-oldest: {n} idle, {ended} ended by the tunnel, {dropped} logged dropped, {} legit served, RSS {} MiB, {threads} threads",
        legit.served,
        rss_kib / 1024
    );
    assert_eq!(connect_failed, 0);
    assert_eq!(old_ended, max, "every suspect made room");
    // One address holds `max` fresh ones at most (never all of unprovenMax by itself
    // beyond that); the rest are refused at once.
    assert!(
        ended + 2 * max >= n && ended < n,
        "{old_ended} suspects and {fresh_ended} fresh ones ended of {n}"
    );
    assert!(
        threads < (2 * max + 20) as u64,
        "{threads} threads: only BURST × {max} unproven sessions may wait"
    );
    assert!(
        legit.served >= 9,
        "{}/{LEGIT}: {:?}",
        legit.served,
        legit.failures
    );
    summary(
        "drop-oldest",
        &format!("{n} idle connections from {FLOOD_FROM}, unprovenMax = {max}"),
        &format!(
            "{ended} oldest ended at once, {}/{LEGIT} legitimate served within 1 s, RSS {} MiB, {threads} threads",
            legit.served,
            rss_kib / 1024
        ),
        LEGIT - legit.served,
    );
}

/// The first bytes of a TLS handshake record announcing 512 bytes of ClientHello: a server
/// must wait for the rest, which never comes in time.
const CLIENT_HELLO_START: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
];

/// Connections that dribble a ClientHello one byte every 200 ms count as unproven all the
/// while (one more than `unprovenPerSource` from their address is refused, while they are
/// sending) and are ended by TIMEOUTbusy; the legitimate clients are served meanwhile.
#[test]
fn slow_clienthellos_stay_unproven_until_timeoutbusy() {
    let (per_source, busy) = (40, 4);
    let c = Case::start(
        "hostile-slow",
        &format!("unprovenPerSource = {per_source}\n"),
        &format!("TIMEOUTbusy = {busy}"),
    );
    let (t, pki) = (&c.t, &c.pki);
    let addr = t.addr("srv");
    let pid = tunnel_pid(t);
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..per_source)
        .map(|_| connect_from(FLOOD_FROM, addr, Duration::from_secs(2), WAIT).expect("connect"))
        .collect();
    // Dribble from a thread of its own while the rest of the test runs.
    let dribbler = {
        let mut writers: Vec<TcpStream> = slow.iter().map(|s| s.try_clone().unwrap()).collect();
        std::thread::spawn(move || {
            for byte in CLIENT_HELLO_START.iter().cycle().take(40) {
                for w in &mut writers {
                    let _ = w.write_all(&[*byte]);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    // Past SUSPECT_AFTER (1 s) they are suspects, still dribbling: the next one is refused
    // at once, not ended later by TIMEOUTbusy (a review found the first version of this
    // test passing on the latter).
    std::thread::sleep(Duration::from_millis(2000));
    let mut extra = connect_from(FLOOD_FROM, addr, Duration::from_secs(2), WAIT).expect("connect");
    extra
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut buf = [0u8; 1];
    let asked = Instant::now();
    let read = extra.read(&mut buf);
    let extra_refused = (matches!(read, Ok(0))
        || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset))
        && asked.elapsed() < Duration::from_secs(1);
    let legit = legit_clients(addr, pki);
    let (rss_kib, threads) = rss_and_threads(pid);
    let ended = ended_by_tunnel(&mut slow, Duration::from_secs(busy + 4));
    let took = started.elapsed();
    let timed_out = t
        .log_lines()
        .iter()
        .filter(|l| l.contains("TIMEOUTbusy exceeded"))
        .count();
    dribbler.join().unwrap();
    // With them gone, their address may start a session again.
    let again = process::tls_echo(addr, &pki.ca_file, b"after\n");
    eprintln!(
        "slow: {per_source} dribbling, extra refused {extra_refused}, {ended} ended after {took:?}, {timed_out} TIMEOUTbusy lines, {} legit, RSS {} MiB, {threads} threads",
        legit.served,
        rss_kib / 1024
    );
    assert!(
        extra_refused,
        "one more from {FLOOD_FROM} was not refused at once"
    );
    assert!(
        t.has_log("(unprovenPerSource)"),
        "the refusal was not logged"
    );
    assert_eq!(ended, per_source, "TIMEOUTbusy ends every dribbler");
    assert!(
        took >= Duration::from_secs(busy - 1) && took <= Duration::from_secs(busy + 4),
        "ended after {took:?}, TIMEOUTbusy = {busy}"
    );
    assert!(
        legit.served >= 9,
        "{}/{LEGIT}: {:?}",
        legit.served,
        legit.failures
    );
    again.expect("a session after the slow ones ended");
    summary(
        "slow-clienthello",
        &format!(
            "{per_source} connections from {FLOOD_FROM} dribbling a ClientHello, 1 byte / 200 ms, TIMEOUTbusy = {busy}"
        ),
        &format!(
            "one more refused while they dribbled; all ended by TIMEOUTbusy after {:.1} s; {}/{LEGIT} legitimate served within 1 s",
            took.as_secs_f64(),
            legit.served
        ),
        LEGIT - legit.served,
    );
}

/// A flood of connections that send garbage where the ClientHello belongs, on four
/// threads, while the legitimate clients connect.
#[test]
fn garbage_clienthellos_do_not_keep_others_out() {
    let c = Case::start("hostile-garbage", "", "");
    let (t, pki) = (&c.t, &c.pki);
    let addr = t.addr("srv");
    let pid = tunnel_pid(t);
    let lines_before = t.log_lines().len();
    let per_thread = 500;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooders: Vec<_> = (0..4u64)
        .map(|seed| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let garbage = payload(seed, 300);
                let mut sent = 0;
                for _ in 0..per_thread {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let Ok(mut s) = connect_from(FLOOD_FROM, addr, Duration::from_secs(2), WAIT)
                    else {
                        continue;
                    };
                    let _ = s.write_all(&garbage);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = read_to_end_or_timeout(&mut s, &mut Vec::new(), None);
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let legit = legit_clients(addr, pki);
    let (rss_kib, threads) = rss_and_threads(pid);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent: usize = flooders.into_iter().map(|f| f.join().unwrap()).sum();
    let log_lines = flood_lines(&t.log_lines()[lines_before..]);
    eprintln!(
        "garbage: {sent} garbage ClientHellos, {} legit, RSS {} MiB, {threads} threads, {log_lines} log lines",
        legit.served,
        rss_kib / 1024
    );
    assert!(sent > 0);
    assert!(
        log_lines <= 100,
        "{sent} garbage connections wrote {log_lines} lines"
    );
    assert!(
        legit.served >= 9,
        "{}/{LEGIT}: {:?}",
        legit.served,
        legit.failures
    );
    summary(
        "garbage-clienthello",
        &format!("{sent} connections from {FLOOD_FROM} sending 300 bytes of garbage, 4 at a time"),
        &format!(
            "{}/{LEGIT} legitimate served within 1 s, RSS {} MiB, {threads} threads, {log_lines} log lines",
            legit.served,
            rss_kib / 1024
        ),
        LEGIT - legit.served,
    );
}

/// Hundreds of clients behind one NAT address: 500 sessions from 127.0.0.2 (ten clients
/// connecting at a time), all open at once, each echoes; none is refused (only sessions
/// still in their handshake for a second count against `unprovenPerSource`).
#[test]
fn five_hundred_proven_sessions_from_one_address() {
    // The default limits: a handshake the client sees as done (TLS 1.3: after the server's
    // flight) is still unproven until the tunnel has read the client's Finished, so on a
    // busy machine more sessions than the clients' own concurrency are unproven at once.
    let c = Case::start("hostile-nat", "", "");
    let (t, pki) = (&c.t, &c.pki);
    let addr = t.addr("srv");
    let n = 500;
    let threads: Vec<_> = (0..10)
        .map(|th| {
            let ca = pki.ca_file.clone();
            std::thread::spawn(move || {
                let tls = connector(&ca);
                let mut open = Vec::new();
                let mut failed = Vec::new();
                for i in 0..n / 10 {
                    let tcp = match connect_from(FLOOD_FROM, addr, Duration::from_secs(5), WAIT) {
                        Ok(tcp) => tcp,
                        Err(e) => {
                            failed.push(format!("{th}/{i}: connect: {e}"));
                            continue;
                        }
                    };
                    match tls.connect("localhost", tcp) {
                        Ok(s) => open.push(s),
                        Err(e) => failed.push(format!("{th}/{i}: handshake: {e}")),
                    }
                }
                (open, failed)
            })
        })
        .collect();
    let mut open = Vec::new();
    let mut failed = Vec::new();
    for th in threads {
        let (o, f) = th.join().unwrap();
        open.extend(o);
        failed.extend(f);
    }
    let established = open.len();
    let mut echoed = 0;
    for (i, s) in open.iter_mut().enumerate() {
        match process::echo_check(s, format!("nat client {i}\n").as_bytes()) {
            Ok(()) => echoed += 1,
            Err(e) => failed.push(format!("echo {i}: {e}")),
        }
    }
    let (rss_kib, threads) = rss_and_threads(tunnel_pid(t));
    drop(open);
    eprintln!(
        "nat: {established} established, {echoed} echoed, RSS {} MiB, {threads} threads",
        rss_kib / 1024
    );
    if !failed.is_empty() {
        t.fail(&format!(
            "{} failed: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        ));
    }
    assert_eq!(echoed, n);
    assert!(
        !t.has_log("(unprovenPerSource)"),
        "a proven session was counted"
    );
    summary(
        "nat-500-proven",
        &format!("{n} TLS sessions from {FLOOD_FROM}, all open at once, default limits"),
        &format!("{echoed}/{n} served and echoed, RSS {} MiB", rss_kib / 1024),
        n - echoed,
    );
}

/// A session that completed its handshake and then idles is proven: more of them than
/// `unprovenPerSource` are served from one address, and TIMEOUTidle ends them.
#[test]
fn proven_idle_sessions_are_ended_by_timeoutidle_not_counted() {
    let idle = 2;
    let c = Case::start(
        "hostile-proven-idle",
        "unprovenPerSource = 2\n",
        &format!("TIMEOUTidle = {idle}"),
    );
    let (t, pki) = (&c.t, &c.pki);
    let addr = t.addr("srv");
    let tls = connector(&pki.ca_file);
    let mut open: Vec<_> = (0..5)
        .map(|i| {
            let tcp =
                connect_from(FLOOD_FROM, addr, Duration::from_secs(5), WAIT).expect("connect");
            let mut s = tls.connect("localhost", tcp).expect("handshake");
            process::echo_check(&mut s, format!("idle {i}\n").as_bytes()).expect("echo");
            s
        })
        .collect();
    let started = Instant::now();
    let mut ended = 0;
    for s in &mut open {
        let mut buf = [0u8; 16];
        // The tunnel's close_notify (or a reset) after TIMEOUTidle.
        if matches!(s.ssl_read(&mut buf), Ok(0) | Err(_)) {
            ended += 1;
        }
    }
    let took = started.elapsed();
    t.wait_for_logs("TIMEOUTidle", 5, WAIT);
    assert_eq!(ended, 5);
    assert!(
        took >= Duration::from_millis(idle * 1000 - 500) && took <= Duration::from_secs(idle + 3),
        "ended after {took:?}, TIMEOUTidle = {idle}"
    );
    assert!(!t.has_log("(unprovenPerSource)"));
    summary(
        "proven-idle",
        &format!("5 TLS sessions from {FLOOD_FROM} idle after their handshake, unprovenPerSource = 2, TIMEOUTidle = {idle}"),
        &format!("all 5 served, all ended by TIMEOUTidle after {:.1} s", took.as_secs_f64()),
        5 - ended,
    );
}

/// A STARTTLS exchange before the handshake is unproven too: SMTP clients that take the
/// greeting and then say nothing wait in the tunnel's blocking read, and the oldest is
/// woken out of it and dropped at once when a new connection needs its room.
#[test]
fn a_starttls_exchange_counts_as_unproven() {
    let max = 3;
    let c = Case::start(
        "hostile-starttls",
        &format!("unprovenPerSource = 0\nunprovenMax = {max}\n"),
        "protocol = smtp",
    );
    let t = &c.t;
    let addr = t.addr("srv");
    let greeted = |s: &mut TcpStream| {
        let mut greeting = [0u8; 3];
        s.read_exact(&mut greeting).expect("SMTP greeting");
        assert_eq!(&greeting, b"220");
    };
    let mut first = connect_from(FLOOD_FROM, addr, Duration::from_secs(2), WAIT).expect("connect");
    greeted(&mut first);
    let mut rest: Vec<TcpStream> = (1..max)
        .map(|_| {
            let mut s =
                connect_from(FLOOD_FROM, addr, Duration::from_secs(2), WAIT).expect("connect");
            greeted(&mut s);
            s
        })
        .collect();
    // Only a suspect (unproven for a second) is dropped for room.
    std::thread::sleep(Duration::from_millis(2000));
    let started = Instant::now();
    let mut newest = connect_from(FLOOD_FROM, addr, Duration::from_secs(2), WAIT).expect("connect");
    greeted(&mut newest);
    let first_ended = ended_by_tunnel(std::slice::from_mut(&mut first), Duration::from_secs(5));
    let took = started.elapsed();
    let rest_ended = ended_by_tunnel(&mut rest, Duration::from_millis(500));
    let line = t.wait_for_log("dropped before its handshake completed", WAIT);
    assert_eq!(first_ended, 1, "the oldest was not ended");
    assert!(took < Duration::from_secs(2), "ended after {took:?}");
    assert_eq!(rest_ended, 0, "only the oldest makes room");
    assert!(line.contains("LOG4["), "{line}");
    assert!(!t.has_log("protocol smtp:"), "logged as a failed exchange");
    summary(
        "starttls-drop-oldest",
        &format!(
            "{} idle SMTP clients after the greeting, unprovenMax = {max}",
            max + 1
        ),
        &format!(
            "the oldest woken out of its read and ended after {} ms, the others kept",
            took.as_millis()
        ),
        0,
    );
}

/// The defect a review found: with the open-file limit at 1,024 (cap 480, so 60 unproven
/// per source and 120 in all by default) a burst of 200 simultaneous handshakes from one
/// address — a fleet behind NAT reconnecting after a restart — lost 41 to the per-source
/// limit, and one from 400 addresses lost 50 to drops for room. Fresh handshakes are no
/// suspects: a burst of `unprovenMax` from one address (all one source may have in
/// flight) and one of 400 from many are served in full.
#[test]
fn a_burst_of_fresh_handshakes_is_served_under_a_small_cap() {
    let _serial = serial();
    let dir = TestDir::new("hostile-burst");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let t = Tunnel::start_with_open_files(
        &dir,
        "rstunnel",
        1024,
        &server_body(echo.addr(), &pki.server.combined, ""),
    );
    let (per_source, total) = unproven_limits(&t);
    let addr = t.addr("srv");
    // One address may have `total` handshakes in flight at once (never all of unprovenMax
    // by itself); many addresses, more than the cap's quarter.
    for (label, n, spread) in [("one address", total, false), ("many", 400, true)] {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
        let clients: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, ca) = (barrier.clone(), pki.ca_file.clone());
                // 127.0.1.x: loopback addresses of their own, one per client.
                let from = if spread {
                    Ipv4Addr::new(127, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8)
                } else {
                    FLOOD_FROM
                };
                std::thread::spawn(move || -> Result<(), String> {
                    let tls = connector(&ca);
                    barrier.wait();
                    let tcp = connect_from(from, addr, Duration::from_secs(10), WAIT)
                        .map_err(|e| format!("connect: {e}"))?;
                    tcp.set_read_timeout(Some(WAIT)).unwrap();
                    let mut s = tls
                        .connect("localhost", tcp)
                        .map_err(|e| format!("handshake: {e}"))?;
                    process::echo_check(&mut s, format!("burst {i}\n").as_bytes())?;
                    let _ = s.shutdown();
                    Ok(())
                })
            })
            .collect();
        let failed: Vec<String> = clients
            .into_iter()
            .filter_map(|c| c.join().unwrap().err())
            .collect();
        assert!(
            failed.is_empty(),
            "{label}: {} of {n} failed (limits {per_source} per source, {total} in all): {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
        summary(
            &format!("burst-{n}-{}", if spread { "many" } else { "one" }),
            &format!("{n} simultaneous handshakes from {label}, open-file limit 1024 (limits {per_source} per source, {total} in all)"),
            &format!("{n}/{n} served"),
            0,
        );
    }
}
