//! `rstunnel-loadgen`: the load generator behind `scripts/bench.sh`.
//!
//! Plain TCP only: it drives a tunnel pair from the outside (plain side in,
//! plain side out) and never speaks TLS itself. Std threads, blocking I/O.
//!
//! Subcommands:
//! * `sink --listen ADDR` — accept connections; per connection read and discard
//!   until EOF, then write back one line `<bytes>\n` (the count received) and
//!   close. A bulk sender uses that line as an end-to-end acknowledgement.
//! * `echo --listen ADDR` — accept connections and echo every byte back.
//! * `bulk --connect ADDR --bytes N --streams K` — K connections send N bytes
//!   in total (split evenly), half-close, and wait for the sink's count; prints
//!   `bulk: bytes=N streams=K seconds=S mib_per_s=X`.
//! * `idle --connect ADDR --count N --hold SECS` — open N connections, send one
//!   byte on each and read its echo (so every session is established end to
//!   end), print `idle: established=N`, then hold them for SECS seconds.
//!
//! Servers print `listening on ADDR` once bound (port 0 picks a free port and
//! the real one is printed), and run until killed. Every failure is reported
//! on stderr with the address involved; the exit code is 1.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use clap::{value_parser, Arg, ArgMatches, Command};

/// Size of every read and write buffer: one maximal TLS record of payload.
const BUF: usize = 16 * 1024;
/// Stack for per-connection server threads; they only hold a `BUF` on the heap.
const THREAD_STACK: usize = 64 * 1024;
/// How long a client waits for any single read before calling the run failed.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

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
    Command::new("rstunnel-loadgen")
        .about("Plain-TCP load generator for benchmarking TLS tunnels")
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
            Command::new("idle")
                .about("Open idle sessions through an echo server and hold them")
                .arg(connect)
                .arg(
                    Arg::new("count")
                        .long("count")
                        .value_name("N")
                        .default_value("1000")
                        .value_parser(value_parser!(u64).range(1..=1_000_000))
                        .help("number of connections"),
                )
                .arg(
                    Arg::new("hold")
                        .long("hold")
                        .value_name("SECS")
                        .default_value("60")
                        .value_parser(value_parser!(u64))
                        .help("seconds to keep the connections open once established"),
                )
                .arg(
                    Arg::new("batch")
                        .long("batch")
                        .value_name("B")
                        .default_value("50")
                        .value_parser(value_parser!(u64).range(1..=10_000))
                        .help("connections opened before their echoes are awaited"),
                ),
        )
}

fn main() -> ExitCode {
    let matches = cli().get_matches();
    let result = match matches.subcommand() {
        Some(("sink", m)) => serve(m, handle_sink),
        Some(("echo", m)) => serve(m, handle_echo),
        Some(("bulk", m)) => bulk(m),
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
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no byte count from the sink at {addr} (got {line:?}); is it a loadgen sink?"),
        )
    })?;
    if got != bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("sink at {addr} received {got} bytes, {bytes} were sent"),
        ));
    }
    Ok(got)
}

fn bulk(m: &ArgMatches) -> io::Result<()> {
    let addr = resolve(m.get_one::<String>("connect").expect("required"))?;
    let total = *m.get_one::<u64>("bytes").expect("defaulted");
    let streams = *m.get_one::<u64>("streams").expect("defaulted");
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
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
    let secs = start.elapsed().as_secs_f64();
    if let Some(e) = first_err {
        return Err(io::Error::new(
            e.kind(),
            format!(
                "bulk to {addr}: {e} ({} bytes sent)",
                sent.load(Ordering::Relaxed)
            ),
        ));
    }
    let mibps = confirmed as f64 / (1024.0 * 1024.0) / secs;
    println!("bulk: bytes={confirmed} streams={streams} seconds={secs:.3} mib_per_s={mibps:.1}");
    Ok(())
}

fn idle(m: &ArgMatches) -> io::Result<()> {
    let addr = resolve(m.get_one::<String>("connect").expect("required"))?;
    let count = *m.get_one::<u64>("count").expect("defaulted");
    let hold = *m.get_one::<u64>("hold").expect("defaulted");
    let batch = *m.get_one::<u64>("batch").expect("defaulted");
    let start = Instant::now();
    let mut held: Vec<TcpStream> = Vec::with_capacity(count as usize);
    let mut opened = 0u64;
    while opened < count {
        let n = batch.min(count - opened);
        // Open a batch and write one byte on each, so the tunnels work on
        // the handshakes in parallel; then collect the echoes in order.
        let mut pending = Vec::with_capacity(n as usize);
        for i in 0..n {
            let idx = opened + i;
            let mut s = TcpStream::connect(addr)
                .map_err(|e| context(&format!("connect #{idx} to"), &addr, e))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            s.write_all(&[(idx % 256) as u8])?;
            pending.push((idx, s));
        }
        for (idx, mut s) in pending {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("echo on connection #{idx} via {addr}: {e}"),
                )
            })?;
            if b[0] != (idx % 256) as u8 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "connection #{idx}: echoed byte {} != sent {}",
                        b[0],
                        idx % 256
                    ),
                ));
            }
            held.push(s);
        }
        opened += n;
    }
    println!(
        "idle: established={} seconds={:.3}",
        held.len(),
        start.elapsed().as_secs_f64()
    );
    io::stdout().flush()?;
    thread::sleep(Duration::from_secs(hold));
    drop(held);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        cli().debug_assert();
    }

    #[test]
    fn sink_counts_and_echo_echoes() {
        let sink = TcpListener::bind("127.0.0.1:0").unwrap();
        let sink_addr = sink.local_addr().unwrap();
        thread::spawn(move || {
            for s in sink.incoming() {
                let s = s.unwrap();
                thread::spawn(move || handle_sink(s));
            }
        });
        let sent = AtomicU64::new(0);
        let n = 3 * BUF as u64 + 17;
        assert_eq!(bulk_stream(sink_addr, n, &sent).unwrap(), n);
        assert_eq!(sent.load(Ordering::Relaxed), n);

        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let echo_addr = echo.local_addr().unwrap();
        thread::spawn(move || {
            let (s, _) = echo.accept().unwrap();
            handle_echo(s)
        });
        let mut c = TcpStream::connect(echo_addr).unwrap();
        c.write_all(b"hello").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"hello");
    }
}
