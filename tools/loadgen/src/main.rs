//! `rstunnel-loadgen`: the load generator behind `scripts/bench.sh`.
//!
//! A package of its own (`tools/loadgen`, a member of the root workspace), so
//! that `cargo install` and the .deb/.rpm ship only `rstunnel`; it uses nothing
//! from the rstunnel library.
//!
//! It drives a tunnel pair from the outside (plain side in, plain side out);
//! only `handshakes` speaks TLS itself, to load a server tunnel alone. Std
//! threads, blocking I/O: the work per byte here is a copy, so one generator
//! thread outruns a TLS tunnel by a wide margin, and every client subcommand
//! prints its own CPU time (`cpu_s`, user + system from getrusage) and CPU
//! share (`cpu_share` = cpu_s / wall seconds, in cores) so the report can
//! show that the generator was not the bottleneck.
//!
//! Servers (print `listening on ADDR` once bound; port 0 picks a free port and
//! the real one is printed; run until killed):
//! * `sink` — per connection read and discard until EOF, then write back one
//!   line `<bytes>\n` (the count received) and close: an end-to-end
//!   acknowledgement for `bulk`.
//! * `echo` — echo every byte back.
//! * `syslog-sink` — per connection parse syslog lines from `syslog`, check
//!   each one's sequence number and full content, and at EOF write back
//!   `lines=N bad=B first_bad=...`.
//!
//! Clients (print one `NAME: key=value ...` line; exit 1 on failure):
//! * `bulk` — K streams send N bytes in total to a `sink` and wait for its count.
//! * `syslog` — N numbered ~200-byte lines over one connection to a
//!   `syslog-sink`, one `write()` per line or batched into whole-line writes
//!   of up to B bytes; fails unless the sink saw every line, in order, intact.
//! * `sessions` — T threads open N short sessions through an `echo` in total
//!   (connect, one byte echoed, close); failures are counted, not fatal.
//! * `handshakes` — like `sessions` but over TLS straight into a server
//!   tunnel: full handshakes with a client certificate, never resumed.
//! * `latency` — one session, C ping-pongs of S bytes, p50/p99 round trip.
//! * `idle` — open N sessions through an `echo` (one byte echoed each), check
//!   they all still answer, report, then hold them until stdin is closed (or
//!   `--hold` seconds) and close them all. Stops opening at the first refusal
//!   and reports how many were held: a refusal is a result, not an error.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::{value_parser, Arg, ArgAction, ArgMatches, Command};
use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};

/// Size of every read and write buffer: one maximal TLS record of payload.
const BUF: usize = 16 * 1024;
/// Stack for per-connection server threads; they only hold a `BUF` on the heap.
const THREAD_STACK: usize = 64 * 1024;
/// How long a client waits for any single read before calling the run failed.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Read timeout of short sessions and idle sessions: a tunnel that stops
/// answering is counted as a failure well before the bench gives up.
const SESSION_TIMEOUT: Duration = Duration::from_secs(20);

fn cli() -> Command {
    let listen = Arg::new("listen")
        .long("listen")
        .value_name("ADDR")
        .required(true)
        .help("address to listen on, e.g. 127.0.0.1:7000 (port 0 = any free port)");
    let connect = Arg::new("connect")
        .long("connect")
        .value_name("ADDR")
        .required(true)
        .help("address to connect to, e.g. 127.0.0.1:7000");
    let count = |default: &'static str, help: &'static str| {
        Arg::new("count")
            .long("count")
            .value_name("N")
            .default_value(default)
            .value_parser(value_parser!(u64).range(1..=100_000_000))
            .help(help)
    };
    let threads = Arg::new("threads")
        .long("threads")
        .value_name("T")
        .default_value("16")
        .value_parser(value_parser!(u64).range(1..=1024))
        .help("concurrent client threads");
    let file = |name: &'static str, help: &'static str| {
        Arg::new(name)
            .long(name)
            .value_name("PEM")
            .required(true)
            .help(help)
    };
    Command::new("rstunnel-loadgen")
        .about("Load generator for benchmarking TLS tunnels")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            Command::new("sink")
                .about("Accept connections, discard input, reply with the byte count at EOF")
                .arg(listen.clone()),
        )
        .subcommand(
            Command::new("echo")
                .about("Accept connections and echo everything back")
                .arg(listen.clone()),
        )
        .subcommand(
            Command::new("syslog-sink")
                .about("Accept syslog streams from `syslog`, verify order and content")
                .arg(listen),
        )
        .subcommand(
            Command::new("bulk")
                .about("Send bytes to a sink and report the throughput")
                .arg(connect.clone())
                .arg(
                    Arg::new("bytes")
                        .long("bytes")
                        .value_name("N")
                        .default_value("1073741824")
                        .value_parser(value_parser!(u64).range(1..))
                        .help("total bytes to send, split over the streams"),
                )
                .arg(
                    Arg::new("streams")
                        .long("streams")
                        .value_name("K")
                        .default_value("1")
                        .value_parser(value_parser!(u64).range(1..=4096))
                        .help("parallel connections"),
                ),
        )
        .subcommand(
            Command::new("syslog")
                .about("Send numbered syslog lines over one connection to a syslog-sink")
                .arg(connect.clone())
                .arg(count("1000000", "lines to send"))
                .arg(
                    Arg::new("batch")
                        .long("batch")
                        .value_name("BYTES")
                        .default_value("0")
                        .value_parser(value_parser!(u64).range(0..=16 * 1024 * 1024))
                        .help("0 = one write() per line; else whole lines per write, up to BYTES"),
                ),
        )
        .subcommand(
            Command::new("sessions")
                .about("Open short sessions (one byte echoed) through an echo server")
                .arg(connect.clone())
                .arg(count("2000", "sessions in total"))
                .arg(threads.clone()),
        )
        .subcommand(
            Command::new("handshakes")
                .about("Full TLS handshakes (client certificate, no resumption) into a server")
                .arg(connect.clone())
                .arg(count("2000", "handshakes in total"))
                .arg(threads)
                .arg(file("ca", "CA certificates to verify the server with"))
                .arg(file("cert", "client certificate (chain)"))
                .arg(file("key", "client private key"))
                .arg(
                    Arg::new("servername")
                        .long("servername")
                        .value_name("NAME")
                        .default_value("localhost")
                        .help("SNI and the name checked in the server certificate"),
                ),
        )
        .subcommand(
            Command::new("latency")
                .about("Round trips of a small message on one established session")
                .arg(connect.clone())
                .arg(count("20000", "measured round trips"))
                .arg(
                    Arg::new("size")
                        .long("size")
                        .value_name("BYTES")
                        .default_value("100")
                        .value_parser(value_parser!(u64).range(1..=65536))
                        .help("message size"),
                )
                .arg(
                    Arg::new("warmup")
                        .long("warmup")
                        .value_name("N")
                        .default_value("1000")
                        .value_parser(value_parser!(u64))
                        .help("round trips before measuring"),
                ),
        )
        .subcommand(
            Command::new("idle")
                .about("Open idle sessions through an echo server and hold them")
                .arg(connect)
                .arg(count("1000", "number of connections"))
                .arg(
                    Arg::new("hold")
                        .long("hold")
                        .value_name("SECS")
                        .value_parser(value_parser!(u64))
                        .help("hold for SECS seconds instead of until stdin is closed"),
                )
                .arg(
                    Arg::new("batch")
                        .long("batch")
                        .value_name("B")
                        .default_value("50")
                        .value_parser(value_parser!(u64).range(1..=10_000))
                        .help("connections opened before their echoes are awaited"),
                )
                .arg(
                    Arg::new("no-check")
                        .long("no-check")
                        .action(ArgAction::SetTrue)
                        .help("skip the second echo on every session once all are open"),
                ),
        )
}

fn main() -> ExitCode {
    let matches = cli().get_matches();
    let result = match matches.subcommand() {
        Some(("sink", m)) => serve(m, handle_sink),
        Some(("echo", m)) => serve(m, handle_echo),
        Some(("syslog-sink", m)) => serve(m, handle_syslog_sink),
        Some(("bulk", m)) => bulk(m),
        Some(("syslog", m)) => syslog(m),
        Some(("sessions", m)) => sessions(m),
        Some(("handshakes", m)) => handshakes(m),
        Some(("latency", m)) => latency(m),
        Some(("idle", m)) => idle(m),
        _ => unreachable!("clap enforces a subcommand"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rstunnel-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn resolve(addr: &str) -> io::Result<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("{addr}: {e}")))?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address")))
}

fn context(what: &str, addr: &SocketAddr, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {addr}: {e}"))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn connect_arg(m: &ArgMatches) -> io::Result<SocketAddr> {
    resolve(m.get_one::<String>("connect").expect("required"))
}

/// CPU seconds (user + system) this process has used so far, all threads.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Wall clock and CPU time of one measured run, from `start()` to `line()`.
struct Meter {
    wall: Instant,
    cpu: f64,
}

impl Meter {
    fn start() -> Self {
        Meter {
            wall: Instant::now(),
            cpu: cpu_seconds(),
        }
    }
    fn secs(&self) -> f64 {
        self.wall.elapsed().as_secs_f64()
    }
    /// ` seconds=S cpu_s=C cpu_share=X`: appended to every client's result line.
    fn suffix(&self) -> String {
        let secs = self.secs();
        let cpu = cpu_seconds() - self.cpu;
        format!(
            "seconds={secs:.3} cpu_s={cpu:.3} cpu_share={:.3}",
            cpu / secs.max(1e-9)
        )
    }
}

/// Binds `--listen`, prints the bound address, and runs `handler` on a small
/// thread per accepted connection until the process is killed. Accept errors
/// (EMFILE and the like) are reported and retried after a pause.
fn serve(m: &ArgMatches, handler: fn(TcpStream) -> io::Result<()>) -> io::Result<()> {
    let addr = resolve(m.get_one::<String>("listen").expect("required"))?;
    let listener = TcpListener::bind(addr).map_err(|e| context("bind", &addr, e))?;
    let local = listener.local_addr()?;
    println!("listening on {local}");
    io::stdout().flush()?;
    loop {
        match listener.accept() {
            Ok((stream, _peer)) => {
                let spawned = thread::Builder::new()
                    .stack_size(THREAD_STACK)
                    .spawn(move || {
                        // A reset from the far side is routine under load.
                        let _ = handler(stream);
                    });
                if let Err(e) = spawned {
                    eprintln!("rstunnel-loadgen: cannot spawn a thread: {e}");
                    thread::sleep(Duration::from_millis(50));
                }
            }
            Err(e) => {
                eprintln!("rstunnel-loadgen: accept on {local}: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn handle_sink(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; BUF];
    let mut total: u64 = 0;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    stream.write_all(format!("{total}\n").as_bytes())?;
    stream.shutdown(Shutdown::Write)
}

fn handle_echo(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; BUF];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return stream.shutdown(Shutdown::Write),
            Ok(n) => stream.write_all(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

// ---------------------------------------------------------------- bulk

/// One bulk stream: send `bytes`, half-close, then read the sink's count line
/// and check it. Returns the bytes the sink confirmed.
fn bulk_stream(addr: SocketAddr, bytes: u64, sent: &AtomicU64) -> io::Result<u64> {
    let mut stream = TcpStream::connect(addr).map_err(|e| context("connect", &addr, e))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    // Vary the content a little so nothing on the path can shortcut zeros.
    let buf: Vec<u8> = (0..BUF).map(|i| (i % 251) as u8).collect();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(BUF as u64) as usize;
        stream.write_all(&buf[..n])?;
        sent.fetch_add(n as u64, Ordering::Relaxed);
        left -= n as u64;
    }
    stream.shutdown(Shutdown::Write)?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let got: u64 = line.trim().parse().map_err(|_| {
        invalid(format!(
            "no byte count from the sink at {addr} (got {line:?}); is it a loadgen sink?"
        ))
    })?;
    if got != bytes {
        return Err(invalid(format!(
            "sink at {addr} received {got} bytes, {bytes} were sent"
        )));
    }
    Ok(got)
}

fn bulk(m: &ArgMatches) -> io::Result<()> {
    let addr = connect_arg(m)?;
    let total = *m.get_one::<u64>("bytes").expect("defaulted");
    let streams = *m.get_one::<u64>("streams").expect("defaulted");
    let sent = Arc::new(AtomicU64::new(0));
    let meter = Meter::start();
    let handles: Vec<_> = (0..streams)
        .map(|i| {
            // The first `total % streams` streams carry one extra byte.
            let share = total / streams + u64::from(i < total % streams);
            let sent = Arc::clone(&sent);
            thread::spawn(move || bulk_stream(addr, share, &sent))
        })
        .collect();
    let mut confirmed = 0u64;
    let mut first_err = None;
    for h in handles {
        match h.join().expect("bulk stream thread panicked") {
            Ok(n) => confirmed += n,
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(io::Error::new(
            e.kind(),
            format!(
                "bulk to {addr}: {e} ({} bytes sent)",
                sent.load(Ordering::Relaxed)
            ),
        ));
    }
    let mibps = confirmed as f64 / (1024.0 * 1024.0) / meter.secs();
    println!(
        "bulk: bytes={confirmed} streams={streams} mib_per_s={mibps:.1} {}",
        meter.suffix()
    );
    Ok(())
}

// ---------------------------------------------------------------- syslog

/// Filler the lines are cut from; each line starts at a different offset so
/// a line swapped or shifted by a byte does not compare equal.
const FILLER: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_\
abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_\
abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
/// Bytes of filler per line: with the header the line is 200 bytes with its `\n`.
const FILLER_LEN: usize = 120;

/// Writes line number `seq` (an RFC 5424-shaped syslog line, 200 bytes
/// including the newline) into `out`, replacing its contents.
fn syslog_line(seq: u64, out: &mut Vec<u8>) {
    out.clear();
    // 79 bytes of header: fixed width because seq is zero-padded.
    let mut head = String::with_capacity(80);
    let _ = write!(
        head,
        "<134>1 2026-01-01T00:00:00.000000Z bench loadgen 4242 - - seq={seq:012} msg="
    );
    out.extend_from_slice(head.as_bytes());
    let off = (seq % 64) as usize;
    out.extend_from_slice(&FILLER[off..off + FILLER_LEN]);
    out.push(b'\n');
}

/// The sequence number of a line from `syslog_line`, if it has one.
fn syslog_seq(line: &[u8]) -> Option<u64> {
    let pos = line.windows(4).position(|w| w == b"seq=")? + 4;
    let digits = line.get(pos..pos + 12)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Checks every line of one `syslog` stream: sequence numbers consecutive
/// from 0 and each line byte-for-byte what `syslog_line` makes for it. At EOF
/// replies `lines=N bad=B first_bad=SEQ|-`.
fn handle_syslog_sink(stream: TcpStream) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(64 * 1024, &stream);
    let mut line = Vec::with_capacity(256);
    let mut want = Vec::with_capacity(256);
    let (mut lines, mut bad) = (0u64, 0u64);
    let mut first_bad: Option<u64> = None;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        syslog_line(lines, &mut want);
        if line != want {
            bad += 1;
            first_bad.get_or_insert(syslog_seq(&line).unwrap_or(u64::MAX));
        }
        lines += 1;
    }
    let first = first_bad.map_or_else(|| "-".to_string(), |s| s.to_string());
    (&stream).write_all(format!("lines={lines} bad={bad} first_bad={first}\n").as_bytes())?;
    stream.shutdown(Shutdown::Write)
}

fn syslog(m: &ArgMatches) -> io::Result<()> {
    let addr = connect_arg(m)?;
    let count = *m.get_one::<u64>("count").expect("defaulted");
    let batch = *m.get_one::<u64>("batch").expect("defaulted") as usize;
    let mut stream = TcpStream::connect(addr).map_err(|e| context("connect", &addr, e))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let meter = Meter::start();
    let mut line = Vec::with_capacity(256);
    let mut out = Vec::with_capacity(batch.max(256));
    let mut writes = 0u64;
    for seq in 0..count {
        syslog_line(seq, &mut line);
        if batch == 0 {
            stream.write_all(&line)?;
            writes += 1;
        } else {
            // Whole lines only: flush before a line would cross the limit.
            if !out.is_empty() && out.len() + line.len() > batch {
                stream.write_all(&out)?;
                writes += 1;
                out.clear();
            }
            out.extend_from_slice(&line);
        }
    }
    if !out.is_empty() {
        stream.write_all(&out)?;
        writes += 1;
    }
    stream.shutdown(Shutdown::Write)?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .map_err(|e| context("reading the verdict of the syslog sink at", &addr, e))?;
    let reply = reply.trim();
    if reply != format!("lines={count} bad=0 first_bad=-") {
        return Err(invalid(format!(
            "syslog sink at {addr} reports {reply:?} for {count} lines sent"
        )));
    }
    let secs = meter.secs();
    println!(
        "syslog: lines={count} writes={writes} lines_per_s={:.0} {}",
        count as f64 / secs,
        meter.suffix()
    );
    Ok(())
}

// ---------------------------------------------------------------- sessions

/// Runs `count` jobs on `threads` threads, each job `one(index)`; returns
/// (successes, failures, first failure message).
fn run_jobs<F>(count: u64, threads: u64, one: F) -> (u64, u64, Option<String>)
where
    F: Fn(u64) -> io::Result<()> + Send + Sync + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_err = Arc::new(Mutex::new(None::<String>));
    let one = Arc::new(one);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (next, ok, failed, first_err, one) = (
                Arc::clone(&next),
                Arc::clone(&ok),
                Arc::clone(&failed),
                Arc::clone(&first_err),
                Arc::clone(&one),
            );
            thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                match one(i) {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        let mut first = first_err.lock().unwrap_or_else(|p| p.into_inner());
                        first.get_or_insert_with(|| format!("#{i}: {e}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            })
        })
        .collect();
    for h in handles {
        h.join().expect("session thread panicked");
    }
    let first = first_err.lock().unwrap_or_else(|p| p.into_inner()).take();
    (
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        first,
    )
}

/// One byte out, the same byte back: proof that the session works end to end.
fn echo_byte<S: Read + Write>(s: &mut S, b: u8) -> io::Result<()> {
    s.write_all(&[b])?;
    let mut back = [0u8; 1];
    s.read_exact(&mut back)?;
    if back[0] != b {
        return Err(invalid(format!("echoed byte {} != sent {b}", back[0])));
    }
    Ok(())
}

fn report_jobs(name: &str, ok: u64, failed: u64, first: Option<String>, meter: &Meter) {
    println!(
        "{name}: ok={ok} failed={failed} per_s={:.1} {}",
        ok as f64 / meter.secs(),
        meter.suffix()
    );
    if let Some(e) = first {
        eprintln!("rstunnel-loadgen: {name}: first failure {e}");
    }
}

fn sessions(m: &ArgMatches) -> io::Result<()> {
    let addr = connect_arg(m)?;
    let count = *m.get_one::<u64>("count").expect("defaulted");
    let threads = *m.get_one::<u64>("threads").expect("defaulted");
    let meter = Meter::start();
    let (ok, failed, first) = run_jobs(count, threads, move |i| {
        let mut s = TcpStream::connect(addr).map_err(|e| context("connect", &addr, e))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(SESSION_TIMEOUT))?;
        echo_byte(&mut s, (i % 256) as u8).map_err(|e| context("echo via", &addr, e))
    });
    report_jobs("sessions", ok, failed, first, &meter);
    Ok(())
}

fn handshakes(m: &ArgMatches) -> io::Result<()> {
    let addr = connect_arg(m)?;
    let count = *m.get_one::<u64>("count").expect("defaulted");
    let threads = *m.get_one::<u64>("threads").expect("defaulted");
    let path = |k: &str| m.get_one::<String>(k).expect("required").clone();
    let name = m
        .get_one::<String>("servername")
        .expect("defaulted")
        .clone();
    let ssl_err = |what: String| move |e| io::Error::other(format!("{what}: {e}"));
    let mut b = SslConnector::builder(SslMethod::tls_client())
        .map_err(ssl_err("TLS client context".into()))?;
    b.set_ca_file(path("ca"))
        .map_err(ssl_err(format!("CA file {}", path("ca"))))?;
    b.set_certificate_chain_file(path("cert"))
        .map_err(ssl_err(format!("certificate {}", path("cert"))))?;
    b.set_private_key_file(path("key"), SslFiletype::PEM)
        .map_err(ssl_err(format!("key {}", path("key"))))?;
    b.set_verify(SslVerifyMode::PEER);
    let connector = b.build();
    let reused = Arc::new(AtomicU64::new(0));
    let reused_in = Arc::clone(&reused);
    let meter = Meter::start();
    // A fresh SSL per connection and no SSL_set_session: every handshake is
    // a full one; `reused` proves it.
    let (ok, failed, first) = run_jobs(count, threads, move |i| {
        let tcp = TcpStream::connect(addr).map_err(|e| context("connect", &addr, e))?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(SESSION_TIMEOUT))?;
        let mut tls = connector
            .connect(&name, tcp)
            .map_err(|e| io::Error::other(format!("TLS handshake with {addr}: {e}")))?;
        if tls.ssl().session_reused() {
            reused_in.fetch_add(1, Ordering::Relaxed);
        }
        echo_byte(&mut tls, (i % 256) as u8).map_err(|e| context("echo via", &addr, e))?;
        // close_notify; the server's reply is not waited for.
        let _ = tls.shutdown();
        Ok(())
    });
    report_jobs("handshakes", ok, failed, first, &meter);
    let reused = reused.load(Ordering::Relaxed);
    if reused != 0 {
        return Err(invalid(format!(
            "{reused} handshakes were resumptions; the measure needs full handshakes"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------- latency

fn latency(m: &ArgMatches) -> io::Result<()> {
    let addr = connect_arg(m)?;
    let count = *m.get_one::<u64>("count").expect("defaulted");
    let size = *m.get_one::<u64>("size").expect("defaulted") as usize;
    let warmup = *m.get_one::<u64>("warmup").expect("defaulted");
    let mut s = TcpStream::connect(addr).map_err(|e| context("connect", &addr, e))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(SESSION_TIMEOUT))?;
    let mut msg = vec![0u8; size];
    let mut back = vec![0u8; size];
    let mut rtt_ns = Vec::with_capacity(count as usize);
    let mut meter = Meter::start();
    for i in 0..warmup + count {
        if i == warmup {
            meter = Meter::start();
        }
        msg.fill((i % 251) as u8);
        let t = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut back)
            .map_err(|e| context(&format!("echo #{i} via"), &addr, e))?;
        let ns = t.elapsed().as_nanos() as u64;
        if back != msg {
            return Err(invalid(format!("echo #{i} via {addr} came back altered")));
        }
        if i >= warmup {
            rtt_ns.push(ns);
        }
    }
    rtt_ns.sort_unstable();
    let pct = |p: f64| {
        let idx = ((rtt_ns.len() as f64 * p).ceil() as usize).clamp(1, rtt_ns.len()) - 1;
        rtt_ns[idx] as f64 / 1000.0
    };
    println!(
        "latency: count={count} size={size} p50_us={:.1} p99_us={:.1} max_us={:.1} {}",
        pct(0.50),
        pct(0.99),
        pct(1.0),
        meter.suffix()
    );
    Ok(())
}

// ---------------------------------------------------------------- idle

fn idle(m: &ArgMatches) -> io::Result<()> {
    let addr = connect_arg(m)?;
    let count = *m.get_one::<u64>("count").expect("defaulted");
    let hold = m.get_one::<u64>("hold").copied();
    let batch = *m.get_one::<u64>("batch").expect("defaulted");
    let meter = Meter::start();
    let mut held: Vec<TcpStream> = Vec::with_capacity(count as usize);
    let mut refused: Option<String> = None;
    'open: while (held.len() as u64) < count {
        let base = held.len() as u64;
        let n = batch.min(count - base);
        // Open a batch and write one byte on each, so the tunnels work on
        // the handshakes in parallel; then collect the echoes in order.
        let mut pending = Vec::with_capacity(n as usize);
        for idx in base..base + n {
            let opened = TcpStream::connect(addr).and_then(|mut s| {
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(SESSION_TIMEOUT))?;
                s.write_all(&[(idx % 256) as u8])?;
                Ok(s)
            });
            match opened {
                Ok(s) => pending.push((idx, s)),
                Err(e) => {
                    refused = Some(format!("connect #{idx}: {e}"));
                    break;
                }
            }
        }
        for (idx, mut s) in pending {
            let mut b = [0u8; 1];
            match s.read_exact(&mut b) {
                Ok(()) if b[0] == (idx % 256) as u8 => held.push(s),
                Ok(()) => {
                    refused.get_or_insert(format!("echo #{idx}: wrong byte {}", b[0]));
                }
                Err(e) => {
                    refused.get_or_insert(format!("echo #{idx}: {e}"));
                }
            }
        }
        if refused.is_some() {
            break 'open;
        }
    }
    let setup = meter.secs();
    // Every session answers again once all are open: held, not just opened.
    let mut answering = 0u64;
    if !m.get_flag("no-check") {
        for (i, s) in held.iter_mut().enumerate() {
            if echo_byte(s, (i % 251) as u8).is_ok() {
                answering += 1;
            }
        }
    }
    let reason = refused.as_deref().unwrap_or("-").replace(' ', "_");
    println!(
        "idle: established={} answering={answering} seconds={setup:.3} refused={reason}",
        held.len()
    );
    io::stdout().flush()?;
    match hold {
        Some(secs) => thread::sleep(Duration::from_secs(secs)),
        // Until the bench closes our stdin (EOF) or writes a line.
        None => {
            let mut l = String::new();
            io::stdin().read_line(&mut l)?;
        }
    }
    let n = held.len();
    drop(held);
    println!("idle: closed={n}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawn_server(handler: fn(TcpStream) -> io::Result<()>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            for s in l.incoming() {
                let s = s.unwrap();
                thread::spawn(move || handler(s));
            }
        });
        addr
    }

    #[test]
    fn cli_is_consistent() {
        cli().debug_assert();
    }

    #[test]
    fn sink_counts_and_echo_echoes() {
        let sink_addr = spawn_server(handle_sink);
        let sent = AtomicU64::new(0);
        let n = 3 * BUF as u64 + 17;
        assert_eq!(bulk_stream(sink_addr, n, &sent).unwrap(), n);
        assert_eq!(sent.load(Ordering::Relaxed), n);

        let echo_addr = spawn_server(handle_echo);
        let mut c = TcpStream::connect(echo_addr).unwrap();
        c.write_all(b"hello").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"hello");
    }

    #[test]
    fn syslog_lines_are_200_bytes_and_numbered() {
        let mut l = Vec::new();
        for seq in [0, 1, 63, 64, 999_999] {
            syslog_line(seq, &mut l);
            assert_eq!(l.len(), 200, "{}", String::from_utf8_lossy(&l));
            assert_eq!(syslog_seq(&l), Some(seq));
        }
    }

    /// Sends `lines` to a syslog sink and returns its verdict line.
    fn sink_verdict(lines: &[Vec<u8>]) -> String {
        let addr = spawn_server(handle_syslog_sink);
        let mut c = TcpStream::connect(addr).unwrap();
        for l in lines {
            c.write_all(l).unwrap();
        }
        c.shutdown(Shutdown::Write).unwrap();
        let mut r = String::new();
        BufReader::new(&c).read_line(&mut r).unwrap();
        r.trim().to_string()
    }

    #[test]
    fn syslog_sink_accepts_order_and_catches_swaps() {
        let lines: Vec<Vec<u8>> = (0..10)
            .map(|s| {
                let mut l = Vec::new();
                syslog_line(s, &mut l);
                l
            })
            .collect();
        assert_eq!(sink_verdict(&lines), "lines=10 bad=0 first_bad=-");
        let mut swapped = lines.clone();
        swapped.swap(3, 4);
        assert_eq!(sink_verdict(&swapped), "lines=10 bad=2 first_bad=4");
        let mut dropped = lines;
        dropped.remove(7);
        assert_eq!(sink_verdict(&dropped), "lines=9 bad=2 first_bad=8");
    }
}
