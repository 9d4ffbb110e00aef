//! Plain TCP on loopback for the tests: backends the tunnels connect to, client helpers, and
//! deterministic payloads with their SHA-256.
//!
//! Every socket made here has read and write timeouts ([`IO_TIMEOUT`]), so a tunnel that
//! stalls makes a test fail with a timeout error instead of hanging. Backends listen on
//! `127.0.0.1:0`, serve each connection on its own thread, report what they saw through a
//! channel ([`Backend::next_result`]) and stop accepting when dropped.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use openssl::sha::Sha256;

use super::hex;

/// Read/write timeout on every test socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Connect timeout for test clients.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Chunk size for writing payloads.
const CHUNK: usize = 64 * 1024;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;

/// Sets [`IO_TIMEOUT`] for reads and writes on `s`.
pub fn set_timeouts(s: &TcpStream) {
    s.set_read_timeout(Some(IO_TIMEOUT))
        .expect("set_read_timeout");
    s.set_write_timeout(Some(IO_TIMEOUT))
        .expect("set_write_timeout");
}

/// A TCP connection to `addr` from the loopback address `from` (127.0.0.2 …, a second
/// host for the flood tests) within `timeout`, with `io` read and write timeouts. The
/// port is chosen at connect time (IP_BIND_ADDRESS_NO_PORT), so that thousands of them
/// do not exhaust the ports of `from`. A SYN answered with RST is tried again twice:
/// after a flood, thousands of closed connections wait in TIME_WAIT, and a listener bound
/// to port 0 later may get the port of one of them, so the kernel may pick a 4-tuple one
/// of those still holds.
pub fn connect_from(
    from: Ipv4Addr,
    addr: SocketAddr,
    timeout: Duration,
    io: Duration,
) -> io::Result<TcpStream> {
    let mut tries = 0;
    loop {
        match connect_once_from(from, addr, timeout, io) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && tries < 2 => tries += 1,
            other => return other,
        }
    }
}

fn connect_once_from(
    from: Ipv4Addr,
    addr: SocketAddr,
    timeout: Duration,
    io: Duration,
) -> io::Result<TcpStream> {
    use std::os::fd::AsRawFd;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a pointer to a c_int that lives across the call.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    socket.bind(&SocketAddr::new(IpAddr::V4(from), 0).into())?;
    socket.connect_timeout(&addr.into(), timeout)?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(io))?;
    stream.set_write_timeout(Some(io))?;
    Ok(stream)
}

/// Connects to `addr` with [`CONNECT_TIMEOUT`] and [`IO_TIMEOUT`]s; panics on failure.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    set_timeouts(&s);
    let _ = s.set_nodelay(true);
    s
}

/// SHA-256 and length of a byte stream.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    pub sha: [u8; 32],
    pub bytes: u64,
}

impl Digest {
    pub fn of(data: &[u8]) -> Digest {
        let mut h = Sha256::new();
        h.update(data);
        Digest {
            sha: h.finish(),
            bytes: data.len() as u64,
        }
    }

    /// `<hex sha256> <bytes>` — also the wire format of [`Backend::digest_reply`].
    pub fn line(&self) -> String {
        format!("{} {}", hex(&self.sha), self.bytes)
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digest({} bytes, sha256 {})", self.bytes, hex(&self.sha))
    }
}

/// Deterministic pseudo-random bytes (xorshift64*): the same (seed, len) gives the same
/// stream, different seeds give unrelated streams. Streams large payloads without holding
/// them in memory.
pub struct Payload {
    state: u64,
    remaining: u64,
    /// The unused tail of the last 8-byte word, so that the stream does not depend on the
    /// sizes of the pieces it is read in.
    spare: [u8; 8],
    spare_len: usize,
}

impl Payload {
    pub fn new(seed: u64, len: u64) -> Payload {
        // splitmix64 of the seed, so small seeds (0, 1, 2…) start far apart; never 0.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Payload {
            state: z | 1,
            remaining: len,
            spare: [0; 8],
            spare_len: 0,
        }
    }

    /// Fills the front of `buf` with the next bytes; returns how many (0 at the end).
    pub fn fill(&mut self, buf: &mut [u8]) -> usize {
        let n = (buf.len() as u64).min(self.remaining) as usize;
        let from_spare = self.spare_len.min(n);
        let start = 8 - self.spare_len;
        buf[..from_spare].copy_from_slice(&self.spare[start..start + from_spare]);
        self.spare_len -= from_spare;
        for chunk in buf[from_spare..n].chunks_mut(8) {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let v = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
            if chunk.len() < 8 {
                self.spare = v;
                self.spare_len = 8 - chunk.len();
            }
        }
        self.remaining -= n as u64;
        n
    }
}

/// The whole payload for (`seed`, `len`) in memory.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    Payload::new(seed, len as u64).fill(&mut v);
    v
}

/// Digest of the payload for (`seed`, `len`), without sending it.
pub fn payload_digest(seed: u64, len: u64) -> Digest {
    send_payload(&mut io::sink(), seed, len).expect("writing to io::sink cannot fail")
}

/// Writes the payload (`seed`, `len`) to `w` in 64 KiB chunks; returns its digest.
pub fn send_payload(w: &mut impl Write, seed: u64, len: u64) -> io::Result<Digest> {
    let mut p = Payload::new(seed, len);
    let mut h = Sha256::new();
    let mut buf = vec![0; CHUNK];
    loop {
        let n = p.fill(&mut buf);
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        w.write_all(&buf[..n])?;
    }
    w.flush()?;
    Ok(Digest {
        sha: h.finish(),
        bytes: len,
    })
}

/// Reads `r` to EOF, hashing; returns the digest of everything read.
pub fn read_digest(r: &mut impl Read) -> io::Result<Digest> {
    let mut h = Sha256::new();
    let mut buf = vec![0; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok(Digest {
        sha: h.finish(),
        bytes: total,
    })
}

/// Reads up to and including the first `\n` (or to EOF), at most `max` bytes.
pub fn read_line(r: &mut impl Read, max: usize) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < max {
        match r.read(&mut b) {
            Ok(0) => break,
            Ok(_) => {
                line.push(b[0]);
                if b[0] == b'\n' {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(line)
}

/// What a backend connection handler can report back to the test.
#[derive(Clone)]
pub struct Reporter {
    tx: Arc<Mutex<Sender<Digest>>>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Reporter {
    pub fn report(&self, d: Digest) {
        let _ = self.tx.lock().unwrap().send(d);
    }
}

/// Hands every connection `incoming` yields (`TcpListener::incoming`,
/// `UnixListener::incoming`) to `each` until `stop` is set, which is checked after each
/// accept: whoever sets it then connects once to wake the blocking accept. A failed accept
/// (EMFILE, ECONNABORTED…) is retried after 5 ms.
pub fn accept_until_stopped<S>(
    incoming: impl Iterator<Item = io::Result<S>>,
    stop: &AtomicBool,
    mut each: impl FnMut(S),
) {
    for conn in incoming {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match conn {
            Ok(s) => each(s),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// A thread that accepts on a TCP listener and runs `each` on every connection
/// ([`accept_until_stopped`]), counting them; dropping it stops the thread: it sets the
/// stop flag, connects once to wake the blocking accept, and joins.
pub struct AcceptThread {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AcceptThread {
    pub fn spawn(listener: TcpListener, mut each: impl FnMut(TcpStream) + Send + 'static) -> Self {
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::spawn(move || {
                accept_until_stopped(listener.incoming(), &stop, |s| {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    each(s)
                })
            })
        };
        AcceptThread {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for AcceptThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Handler = dyn Fn(TcpStream, &Reporter) -> io::Result<()> + Send + Sync + 'static;

/// A plain TCP server on `127.0.0.1:0` running `handler` on a thread per connection.
pub struct Backend {
    accept: AcceptThread,
    reporter: Reporter,
    rx: Mutex<Receiver<Digest>>,
}

impl Backend {
    /// Starts a server whose connections are served by `handler` (sockets already have
    /// timeouts). A handler error is recorded (see [`Backend::errors`]), not fatal.
    pub fn spawn(
        handler: impl Fn(TcpStream, &Reporter) -> io::Result<()> + Send + Sync + 'static,
    ) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let (tx, rx) = channel();
        let reporter = Reporter {
            tx: Arc::new(Mutex::new(tx)),
            errors: Arc::new(Mutex::new(Vec::new())),
        };
        let handler: Arc<Handler> = Arc::new(handler);
        let accept = {
            let reporter = reporter.clone();
            AcceptThread::spawn(listener, move |s| {
                set_timeouts(&s);
                let _ = s.set_nodelay(true);
                let h = handler.clone();
                let r = reporter.clone();
                std::thread::spawn(move || {
                    if let Err(e) = h(s, &r) {
                        r.errors.lock().unwrap().push(e.to_string());
                    }
                });
            })
        };
        Backend {
            accept,
            reporter,
            rx: Mutex::new(rx),
        }
    }

    /// Answers every connection with `<tag>\n` (reported as its digest), then waits for the
    /// client's EOF: which of several backends a tunnel connected to.
    pub fn tagged(tag: &'static str) -> Backend {
        Backend::tagged_lines(tag, false)
    }

    /// Like [`Backend::tagged`], with the peer's IP: `<tag> <peer ip>\n` (which source
    /// address a tunnel connected from).
    pub fn tagged_with_peer(tag: &'static str) -> Backend {
        Backend::tagged_lines(tag, true)
    }

    fn tagged_lines(tag: &'static str, with_peer: bool) -> Backend {
        Backend::spawn(move |mut s, r| {
            let line = if with_peer {
                format!("{tag} {}\n", s.peer_addr()?.ip())
            } else {
                format!("{tag}\n")
            };
            r.report(Digest::of(line.as_bytes()));
            s.write_all(line.as_bytes())?;
            s.shutdown(Shutdown::Write)?;
            // Let the tunnel see our EOF before the socket is closed under it.
            let _ = read_digest(&mut s);
            Ok(())
        })
    }

    /// Echoes everything back as it arrives; after EOF from the peer, shuts down its write
    /// side and reports the digest of what it echoed.
    pub fn echo() -> Backend {
        Backend::spawn(|mut s, r| {
            let mut h = Sha256::new();
            let mut total = 0u64;
            let mut buf = vec![0; CHUNK];
            loop {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                s.write_all(&buf[..n])?;
                h.update(&buf[..n]);
                total += n as u64;
            }
            s.shutdown(Shutdown::Write)?;
            r.report(Digest {
                sha: h.finish(),
                bytes: total,
            });
            Ok(())
        })
    }

    /// Reads everything to EOF, reports its digest, then closes without sending anything.
    pub fn sink() -> Backend {
        Backend::spawn(|mut s, r| {
            let d = read_digest(&mut s)?;
            r.report(d);
            Ok(())
        })
    }

    /// Reads everything to EOF, reports its digest, then *replies* `<hex sha256> <bytes>\n`
    /// and closes: the reply can only reach the client if half-close works.
    pub fn digest_reply() -> Backend {
        Backend::spawn(|mut s, r| {
            let d = read_digest(&mut s)?;
            r.report(d);
            s.write_all(format!("{}\n", d.line()).as_bytes())?;
            s.shutdown(Shutdown::Write)?;
            Ok(())
        })
    }

    /// Sends the payload (`seed`, `len`) first and shuts down its write side, then reads what
    /// the client sends until EOF and reports its digest: the client's data can only arrive
    /// if half-close works in this direction.
    pub fn greeter(seed: u64, len: u64) -> Backend {
        Backend::spawn(move |mut s, r| {
            send_payload(&mut s, seed, len)?;
            s.shutdown(Shutdown::Write)?;
            let d = read_digest(&mut s)?;
            r.report(d);
            Ok(())
        })
    }

    /// Sends the payload (`seed`, `len`), reports its digest and closes (reading nothing).
    pub fn source(seed: u64, len: u64) -> Backend {
        Backend::spawn(move |mut s, r| {
            let d = send_payload(&mut s, seed, len)?;
            s.shutdown(Shutdown::Write)?;
            r.report(d);
            Ok(())
        })
    }

    /// Reads one line, writes it back, closes.
    pub fn line_echo_once() -> Backend {
        Backend::spawn(|mut s, r| {
            let line = read_line(&mut s, 64 * 1024)?;
            r.report(Digest::of(&line));
            s.write_all(&line)?;
            s.shutdown(Shutdown::Write)?;
            // Let the tunnel see our EOF before the socket is closed under it.
            let _ = read_digest(&mut s);
            Ok(())
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.accept.addr()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accept.accepted()
    }

    /// The next digest a connection handler reported; panics after `timeout`.
    pub fn next_result(&self, timeout: Duration) -> Digest {
        match self.try_next_result(timeout) {
            Some(d) => d,
            None => panic!(
                "backend {} reported no result within {timeout:?} ({} connection(s) accepted, handler errors: {:?})",
                self.addr(),
                self.connections(),
                self.errors()
            ),
        }
    }

    pub fn try_next_result(&self, timeout: Duration) -> Option<Digest> {
        match self.rx.lock().unwrap().recv_timeout(timeout) {
            Ok(d) => Some(d),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Errors returned by connection handlers so far.
    pub fn errors(&self) -> Vec<String> {
        self.reporter.errors.lock().unwrap().clone()
    }
}

/// Sends `data` on a fresh connection to `addr` from a second thread, shuts down the write
/// side, and reads everything that comes back until EOF. Sending and receiving run at the same
/// time, so echoing any amount cannot deadlock.
pub fn echo_session(addr: SocketAddr, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut s = connect(addr);
    let mut w = s.try_clone()?;
    let out = data.to_vec();
    let writer = std::thread::spawn(move || -> io::Result<()> {
        w.write_all(&out)?;
        w.shutdown(Shutdown::Write)
    });
    let mut got = Vec::new();
    let read = s.read_to_end(&mut got);
    let wrote = writer.join().expect("writer thread panicked");
    read?;
    wrote?;
    Ok(got)
}

/// How a connection ended for [`probe`] and [`read_to_end_or_timeout`].
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// Orderly EOF.
    Eof,
    /// Reset, broken pipe or another error that means the peer closed.
    Closed(io::ErrorKind),
    /// Nothing happened before the timeout: the connection was left hanging.
    TimedOut,
}

/// What [`probe`] saw.
#[derive(Debug)]
pub struct Probe {
    pub received: Vec<u8>,
    pub end: End,
}

/// Connects to `addr`, writes `data` (write errors are ignored: the peer may already have
/// closed) without shutting down, then reads until EOF, error or `timeout`.
///
/// A tunnel that resets a session within a millisecond of accepting it can have its RST reach
/// the client before the client's non-blocking connect has been polled: the connect itself
/// then reports the reset, and that is an end like any other, not a failure to connect.
pub fn probe(addr: SocketAddr, data: &[u8], timeout: Duration) -> Probe {
    let mut s = match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
            return Probe {
                received: Vec::new(),
                end: End::Closed(e.kind()),
            }
        }
        Err(e) => panic!("connect {addr}: {e}"),
    };
    set_timeouts(&s);
    let _ = s.set_nodelay(true);
    s.set_read_timeout(Some(timeout)).unwrap();
    let _ = s.write_all(data);
    let mut received = Vec::new();
    let end = read_to_end_or_timeout(&mut s, &mut received, None);
    Probe { received, end }
}

/// Reads `s` until EOF ([`End::Eof`]), an error such as a reset ([`End::Closed`]) or a read
/// that times out ([`End::TimedOut`]: the stream's own read timeout), retrying `EINTR`, and
/// appends what came to `got`. With a `deadline`, also [`End::TimedOut`] once it has passed
/// (checked before each read), however steadily bytes come.
pub fn read_to_end_or_timeout(
    s: &mut impl Read,
    got: &mut Vec<u8>,
    deadline: Option<std::time::Instant>,
) -> End {
    let mut buf = vec![0u8; CHUNK];
    loop {
        if deadline.is_some_and(|d| std::time::Instant::now() > d) {
            return End::TimedOut;
        }
        match s.read(&mut buf) {
            Ok(0) => return End::Eof,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return End::TimedOut
            }
            Err(e) => return End::Closed(e.kind()),
        }
    }
}

/// A TCP port that refuses connections: bound (so nobody else takes it while the guard
/// lives) but not listening, so a SYN to it is answered with RST.
pub struct DeadPort {
    _socket: socket2::Socket,
    pub addr: SocketAddr,
}

impl DeadPort {
    /// A dead port on `ip`.
    pub fn on(ip: std::net::IpAddr) -> DeadPort {
        use socket2::{Domain, Protocol, Socket, Type};
        let any_port = SocketAddr::new(ip, 0);
        let socket = Socket::new(
            Domain::for_address(any_port),
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .unwrap();
        socket.bind(&any_port.into()).expect("bind dead port");
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        DeadPort {
            _socket: socket,
            addr,
        }
    }

    /// A dead port on 127.0.0.1.
    pub fn loopback() -> DeadPort {
        DeadPort::on(std::net::Ipv4Addr::LOCALHOST.into())
    }
}

/// A loopback listener with a backlog of one that nobody accepts from unless the test does
/// (`accept_all`): with its queue full the kernel drops SYNs, so a connect to it hangs as
/// to a dead host, and making room lets exactly one more in. Non-blocking.
pub struct BacklogOfOne {
    pub socket: socket2::Socket,
    pub addr: SocketAddr,
}

impl BacklogOfOne {
    pub fn new() -> BacklogOfOne {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        socket.listen(0).unwrap();
        socket.set_nonblocking(true).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        BacklogOfOne { socket, addr }
    }

    /// Accepts what waits, until EAGAIN.
    pub fn accept_all(&self) -> Vec<TcpStream> {
        let mut v = Vec::new();
        while let Ok((s, _)) = self.socket.accept() {
            v.push(TcpStream::from(s));
        }
        v
    }
}

/// The chunk of [`lockstep_echo`]: an echo never has more than one in flight.
const STEP: usize = 16 * 1024;

/// Sends the payload (`seed`, `len`) in [`STEP`]-byte chunks, reading each chunk back before
/// the next (an echo never has more than one chunk in flight, so nothing can deadlock).
/// Panics naming the first differing chunk.
pub fn lockstep_echo<S: Read + Write>(s: &mut S, seed: u64, len: usize, what: &str) {
    let data = payload(seed, len);
    let mut back = vec![0u8; STEP];
    for (i, chunk) in data.chunks(STEP).enumerate() {
        s.write_all(chunk)
            .unwrap_or_else(|e| panic!("{what}: writing chunk {i} (offset {}): {e}", i * STEP));
        s.flush().unwrap();
        s.read_exact(&mut back[..chunk.len()]).unwrap_or_else(|e| {
            panic!(
                "{what}: reading echo of chunk {i} (offset {}): {e}",
                i * STEP
            )
        });
        assert!(
            back[..chunk.len()] == *chunk,
            "{what}: the echo of chunk {i} (offset {}) differs from what was sent",
            i * STEP
        );
    }
}

/// Reads until the session ends. Returns what came and whether it ended (EOF or an error
/// such as a reset) rather than hanging until `timeout`.
pub fn read_to_session_end<S: Read>(
    s: &mut S,
    timeout_hint: &str,
) -> (Vec<u8>, Result<(), String>) {
    let mut got = Vec::new();
    // A reset (reset = yes) or a TLS error ends the session as an EOF does.
    match read_to_end_or_timeout(s, &mut got, None) {
        End::Eof | End::Closed(_) => (got, Ok(())),
        End::TimedOut => (
            got,
            Err(format!("{timeout_hint}: still open after the timeout")),
        ),
    }
}

/// Read and write timeouts on a Unix stream, so a stalled tunnel fails the test.
pub fn unix_timeouts(s: &UnixStream) {
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
}

/// Polls `cond` every 20 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
