//! Helpers for the network fault tests (`tests/faults_network_peers.rs`,
//! `tests/faults_network_targets.rs`): a scriptable target whose
//! connections are served by handlers queued by the test (echo when none is queued), resets
//! (SO_LINGER 0), a private network namespace per test, `tcpdump` captures with a minimal pcap
//! reader, TLS record checks for what a tunnel answers to garbage, a captured ClientHello,
//! tunnel RSS from `/proc`, and the one-line `summary:` report each fault case prints.
//!
//! Nothing here talks to a tunnel's internals: only sockets, `/proc` and external tools.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use openssl::ssl::{
    HandshakeError, SslAcceptor, SslConnector, SslFiletype, SslMethod, SslVerifyMode,
};

use super::certs::{LeafFiles, Pki};
use super::daemon::{Tunnel, TunnelPair};
use super::net::{
    connect, echo_session, payload, read_to_end_or_timeout, AcceptThread, Digest, End,
};
pub use super::process::tunnel_pid;
use super::tools::find_program;
use super::TestDir;

/// One connection's handler, run on its own thread.
pub type Handler = Box<dyn FnOnce(TcpStream) + Send + 'static>;

/// A plain TCP target on loopback whose next connections go to handlers the test queued with
/// [`Target::push`]; a connection with no queued handler goes to the default handler (echo
/// for [`Target::echo`]), so every fault case can end with an ordinary fresh session.
pub struct Target {
    queue: Arc<Mutex<VecDeque<Handler>>>,
    accept: AcceptThread,
}

impl Target {
    /// Serves `listener`; connections without a queued handler go to `default`.
    pub fn serve(
        listener: TcpListener,
        default: impl Fn(TcpStream) + Send + Sync + 'static,
    ) -> Target {
        let queue: Arc<Mutex<VecDeque<Handler>>> = Arc::new(Mutex::new(VecDeque::new()));
        let default = Arc::new(default);
        let accept = {
            let queue = queue.clone();
            AcceptThread::spawn(listener, move |s| {
                super::net::set_timeouts(&s);
                let _ = s.set_nodelay(true);
                match queue.lock().unwrap().pop_front() {
                    Some(h) => {
                        std::thread::spawn(move || h(s));
                    }
                    None => {
                        let d = default.clone();
                        std::thread::spawn(move || d(s));
                    }
                }
            })
        };
        Target { queue, accept }
    }

    /// On `127.0.0.1:0`, echoing by default.
    pub fn echo() -> Target {
        Target::serve(TcpListener::bind("127.0.0.1:0").unwrap(), |s| {
            let _ = echo_stream(s);
        })
    }

    /// On `127.0.0.1:0`, a TLS server (the standard server certificate) that echoes inside
    /// TLS by default; queued handlers get the raw TCP socket and do their own handshake.
    pub fn tls_echo(acceptor: SslAcceptor) -> Target {
        Target::serve(TcpListener::bind("127.0.0.1:0").unwrap(), move |s| {
            if let Ok(mut tls) = acceptor.accept(s) {
                echo_until_end(&mut tls);
                let _ = tls.shutdown();
            }
        })
    }

    /// Queues `h` for the next accepted connection.
    pub fn push(&self, h: impl FnOnce(TcpStream) + Send + 'static) {
        self.queue.lock().unwrap().push_back(Box::new(h));
    }

    pub fn addr(&self) -> SocketAddr {
        self.accept.addr()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accept.accepted()
    }
}

/// Echoes until EOF, then shuts down the write side; returns the number of bytes echoed.
pub fn echo_stream(mut s: TcpStream) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n])?;
        total += n as u64;
    }
    s.shutdown(Shutdown::Write)?;
    Ok(total)
}

/// Echoes every byte back until the peer ends or an error does; how the stream is then
/// closed (close_notify, none, a reset) is the caller's.
pub fn echo_until_end(s: &mut (impl Read + Write)) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
}

/// A TLS server context with `leaf`'s certificate and key, asking no client certificate.
pub fn tls_acceptor(leaf: &LeafFiles) -> SslAcceptor {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    b.set_certificate_chain_file(&leaf.cert).unwrap();
    b.set_private_key_file(&leaf.key, SslFiletype::PEM).unwrap();
    b.build()
}

/// Arms SO_LINGER 0 on `s` and closes it: the peer gets a RST instead of a FIN.
pub fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(s);
}

/// How a read loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Eof,
    Error(io::ErrorKind),
    /// Nothing for the whole timeout: the connection was left hanging.
    Hung,
}

/// Reads `s` until EOF, an error or `timeout` without a byte; returns what was read, how it
/// ended and how long it took.
pub fn read_until_end(s: &mut impl Read, timeout: Duration) -> (Vec<u8>, Ending, Duration) {
    let start = Instant::now();
    let mut got = Vec::new();
    let end = match read_to_end_or_timeout(s, &mut got, Some(start + timeout)) {
        End::Eof => Ending::Eof,
        End::Closed(kind) => Ending::Error(kind),
        End::TimedOut => Ending::Hung,
    };
    (got, end, start.elapsed())
}

/// Connects to `addr` with a read timeout of `timeout`.
pub fn connect_with_timeout(addr: SocketAddr, timeout: Duration) -> TcpStream {
    let s = connect(addr);
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    s
}

/// Bytes that should have arrived against bytes verified to have arrived intact (equal
/// SHA-256 or equal bytes); `lost()` is what the summary line reports.
#[derive(Default, Debug)]
pub struct Ledger {
    pub expected: u64,
    pub verified: u64,
}

impl Ledger {
    /// Records one flow: `sent` bytes expected, `got` verified when it equals `sent`.
    pub fn flow(&mut self, sent: &Digest, got: &Digest) {
        self.expected += sent.bytes;
        if sent == got {
            self.verified += got.bytes;
        }
    }

    /// Records one flow of in-memory bytes.
    pub fn bytes(&mut self, sent: &[u8], got: &[u8]) {
        self.flow(&Digest::of(sent), &Digest::of(got));
    }

    pub fn lost(&self) -> u64 {
        self.expected - self.verified
    }
}

/// Prints the case's report line, which other scripts grep:
/// `summary: net <case> | load=<…> | faults=<…> | bad_inputs=<N> | bytes_lost=<N>`.
pub fn summary(case: &str, load: &str, faults: &str, bad_inputs: usize, ledger: &Ledger) {
    println!(
        "summary: net {case} | load={load} | faults={faults} | bad_inputs={bad_inputs} | bytes_lost={}",
        ledger.lost()
    );
}

/// Panics with the log if the tunnel process has exited.
pub fn assert_alive(t: &mut Tunnel) {
    if let Some(st) = t.try_wait() {
        t.fail(&format!("the tunnel process died: {st}"));
    }
}

/// A fresh plain session through `entry` to an echo target: 256 KiB out and back, compared.
/// Records the flow in `ledger`; panics (with `t`'s log) if it fails.
pub fn fresh_plain_session(entry: SocketAddr, seed: u64, t: &Tunnel, ledger: &mut Ledger) {
    let data = payload(seed, 256 * 1024);
    let got = echo_session(entry, &data)
        .unwrap_or_else(|e| t.fail(&format!("fresh session after the fault: {e}")));
    ledger.bytes(&data, &got);
    if got != data {
        t.fail(&format!(
            "fresh session after the fault: {} of {} byte(s) came back, not equal",
            got.len(),
            data.len()
        ));
    }
}

/// A plain session that streams `len` bytes through an echo target in two halves, the second
/// only after [`Bystander::finish`] is called: it is in flight while the fault happens.
/// [`Bystander::start`] returns once echoed bytes came back, so its target connection has
/// been accepted (a handler queued afterwards is not taken by it).
pub struct Bystander {
    gate: Sender<()>,
    data_len: u64,
    handle: JoinHandle<io::Result<(Digest, Digest)>>,
}

impl Bystander {
    pub fn start(entry: SocketAddr, seed: u64, len: usize) -> Bystander {
        let data = payload(seed, len);
        let (gate, open) = channel::<()>();
        let (flowing_tx, flowing) = channel::<()>();
        let mut s = connect(entry);
        let handle = std::thread::spawn(move || {
            let mut w = s.try_clone()?;
            let sent = Digest::of(&data);
            let writer = std::thread::spawn(move || -> io::Result<()> {
                let half = data.len() / 2;
                w.write_all(&data[..half])?;
                let _ = open.recv_timeout(Duration::from_secs(60));
                w.write_all(&data[half..])?;
                w.shutdown(Shutdown::Write)
            });
            let mut h = openssl::sha::Sha256::new();
            let mut total = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            let read = loop {
                match s.read(&mut buf) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        if total == 0 {
                            let _ = flowing_tx.send(());
                        }
                        h.update(&buf[..n]);
                        total += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            let wrote = writer.join().expect("bystander writer panicked");
            read?;
            wrote?;
            Ok((
                sent,
                Digest {
                    sha: h.finish(),
                    bytes: total,
                },
            ))
        });
        assert!(
            flowing.recv_timeout(Duration::from_secs(10)).is_ok(),
            "the bystander session's echo never started flowing"
        );
        Bystander {
            gate,
            data_len: len as u64,
            handle,
        }
    }

    /// Lets the second half go, waits for the echo and records it in `ledger`; panics (with
    /// `t`'s log) if the bystander's session broke.
    pub fn finish(self, t: &Tunnel, ledger: &mut Ledger) {
        let _ = self.gate.send(());
        match self.handle.join().expect("bystander panicked") {
            Ok((sent, got)) => {
                ledger.flow(&sent, &got);
                if sent != got {
                    t.fail(&format!(
                        "a bystander session was disturbed by the fault: sent {sent:?}, echoed {got:?}"
                    ));
                }
            }
            Err(e) => {
                ledger.expected += self.data_len;
                t.fail(&format!("a bystander session was broken by the fault: {e}"))
            }
        }
    }
}

/// Runs `f` on a thread of its own inside a fresh network namespace (only `lo`, up), so its
/// sockets, its child processes (tunnels, tcpdump) and its iptables rules are private and
/// vanish with it. Needs root (CAP_SYS_ADMIN); panics otherwise. A panic in `f` is re-raised.
pub fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    on_own_thread(move || {
        // SAFETY: unshare(CLONE_NEWNET) moves only the calling thread (this new one) into a
        // new network namespace; threads and children it creates afterwards inherit it.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            r,
            0,
            "unshare(CLONE_NEWNET): {} (the network fault tests run as root, as CI does)",
            io::Error::last_os_error()
        );
        ip(&["link", "set", "lo", "up"]);
        f()
    })
}

/// Runs `f` on a thread of its own that has entered the named network namespace `ns`
/// (`/run/netns/NS`, made with `ip netns add`); sockets made there stay in that namespace
/// wherever they are used later. A panic in `f` is re-raised.
pub fn in_named_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    on_own_thread(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on an open namespace file; it changes only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", io::Error::last_os_error());
        f()
    })
}

/// Runs `f` on a new thread (whose namespace changes stay its own) and returns its value;
/// a panic in `f` is re-raised here.
fn on_own_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match std::thread::spawn(f).join() {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Runs `ip ARGS…` (in the calling thread's namespace); panics on failure.
pub fn ip(args: &[&str]) {
    run_ok(&find_program("ip"), args);
}

/// [`ip`] with its arguments in one string, split on blanks (`ip_words("-n NS link set lo
/// up")`).
pub fn ip_words(args: &str) {
    ip(&args.split_whitespace().collect::<Vec<_>>());
}

/// Runs `iptables ARGS…`; panics on failure.
pub fn iptables(args: &[&str]) {
    run_ok(&find_program("iptables"), args);
}

fn run_ok(program: &Path, args: &[&str]) {
    let r = super::tools::run(program, args, Duration::from_secs(10));
    assert!(
        r.status.success(),
        "{} {args:?} failed\n{}",
        program.display(),
        r.describe()
    );
}

/// VmRSS of `pid` in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// Whether `bytes` is a (possibly empty) sequence of complete TLS alert records, i.e. what a
/// server may answer to garbage without saying anything in clear.
pub fn only_tls_alerts(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.len() < 5 || rest[0] != 0x15 || rest[1] != 0x03 {
            return false;
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len != 2 || rest.len() < 5 + len {
            return false;
        }
        rest = &rest[5 + len..];
    }
    true
}

/// Content types of the TLS records in `bytes`, or `None` if they do not parse as whole
/// records (a trailing partial record counts as not parsing).
pub fn tls_record_types(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut rest = bytes;
    let mut types = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 5 || rest[1] != 0x03 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if rest.len() < 5 + len {
            return None;
        }
        types.push(rest[0]);
        rest = &rest[5 + len..];
    }
    Some(types)
}

/// A real ClientHello (as the `openssl` crate's client sends it for `localhost`), captured
/// without a network: the handshake writes it into memory and stops waiting for a reply.
pub fn client_hello() -> Vec<u8> {
    #[derive(Debug)]
    struct Capture(Vec<u8>);
    impl Read for Capture {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }
    impl Write for Capture {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    match b.build().connect("localhost", Capture(Vec::new())) {
        Err(HandshakeError::WouldBlock(mid)) => {
            let hello = mid.get_ref().0.clone();
            assert!(
                hello.len() > 100 && hello[0] == 0x16,
                "captured ClientHello looks wrong: {} byte(s)",
                hello.len()
            );
            hello
        }
        Ok(_) => panic!("a handshake completed against nothing"),
        Err(e) => panic!("capturing a ClientHello: {e}"),
    }
}

/// A running `tcpdump -i lo` (or another interface) writing `FILE` with a BPF filter; stopped (SIGTERM, reaped) by
/// [`Capture::stop`] or on drop.
pub struct Capture {
    child: Option<Child>,
    pub file: PathBuf,
    stderr: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Capture {
    /// Starts tcpdump on `lo` with `filter` and waits until it says it is listening.
    /// `--immediate-mode` hands each packet over at once (not when a ring block fills or
    /// times out, which would lose the last packets at SIGTERM), `-U` writes each packet as
    /// it comes, `-B 65536` (a 64 MiB ring) holds bursts of 64 KiB loopback frames that
    /// the default 2 MiB ring drops, `-Z root` keeps it able to write into the root-owned test dir (Debian's
    /// tcpdump otherwise drops to its own user).
    pub fn start(file: PathBuf, filter: &str) -> Capture {
        Capture::start_on(&[], "lo", file, filter)
    }

    /// [`Capture::start`] on interface `iface`, tcpdump run behind `prefix` (`ip netns exec
    /// NS` for a veth inside a test's namespace; empty for this one).
    pub fn start_on(prefix: &[&str], iface: &str, file: PathBuf, filter: &str) -> Capture {
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(find_program(first));
                c.args(rest).arg(find_program("tcpdump"));
                c
            }
            None => Command::new(find_program("tcpdump")),
        };
        let mut child = cmd
            .args([
                "-i",
                iface,
                "-n",
                "--immediate-mode",
                "-B",
                "65536",
                "-U",
                "-s",
                "0",
                "-Z",
                "root",
                "-w",
            ])
            .arg(&file)
            .arg(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning tcpdump");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx): (Sender<()>, Receiver<()>) = channel();
        let reader = {
            let stderr = stderr.clone();
            let mut pipe = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let mut s = stderr.lock().unwrap();
                            s.push_str(&String::from_utf8_lossy(&buf[..n]));
                            if s.contains("listening on") {
                                let _ = tx.send(());
                            }
                        }
                    }
                }
            })
        };
        let mut cap = Capture {
            child: Some(child),
            file,
            stderr,
            reader: Some(reader),
        };
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            let err = cap.stop();
            panic!("tcpdump did not start listening: {err}");
        }
        cap
    }

    /// Waits until the file stops growing (tcpdump caught up), then stops tcpdump and returns
    /// what it printed (including its `packets dropped by kernel` count).
    pub fn stop(&mut self) -> String {
        let mut last = u64::MAX;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let now = std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0);
            if now == last {
                break;
            }
            last = now;
            std::thread::sleep(Duration::from_millis(300));
        }
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the tcpdump we spawned and have not reaped.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// TCP packets in a pcap file (Ethernet or Linux-cooked link layer, IPv4): for each, the
/// source and destination ports and the TCP payload length.
pub fn pcap_tcp_packets(pcap: &[u8]) -> Vec<(u16, u16, usize)> {
    assert!(
        pcap.len() >= 24,
        "pcap file too short ({} bytes)",
        pcap.len()
    );
    let le = match pcap[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => panic!("not a pcap file (magic {:02x?})", &pcap[..4]),
    };
    let u32_at = |b: &[u8], i: usize| {
        let a = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let link = u32_at(pcap, 20);
    let link_len = match link {
        1 => 14,   // Ethernet (what Linux reports for lo)
        113 => 16, // Linux cooked capture
        other => panic!("unexpected pcap link type {other}"),
    };
    let mut out = Vec::new();
    let mut i = 24;
    while i + 16 <= pcap.len() {
        let incl = u32_at(pcap, i + 8) as usize;
        let start = i + 16;
        let end = (start + incl).min(pcap.len());
        let frame = &pcap[start..end];
        i = start + incl;
        if frame.len() < link_len + 20 {
            continue;
        }
        let ip = &frame[link_len..];
        if ip[0] >> 4 != 4 || ip[9] != 6 {
            continue;
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if ip.len() < ihl + 20 {
            continue;
        }
        let tcp = &ip[ihl..];
        let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
        let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
        let doff = usize::from(tcp[12] >> 4) * 4;
        out.push((sport, dport, total.saturating_sub(ihl + doff)));
    }
    out
}

/// The `N packets dropped by kernel` count tcpdump printed when it stopped.
pub fn dropped_by_kernel(tcpdump_stderr: &str) -> Option<u64> {
    tcpdump_stderr.lines().find_map(|l| {
        l.trim()
            .strip_suffix(" packets dropped by kernel")
            .and_then(|n| n.trim().parse().ok())
    })
}

/// Whether `needle` occurs anywhere in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether `line` is the session-summary line of the session whose plain peer was `peer`.
pub fn is_summary_of(line: &str, peer: SocketAddr) -> bool {
    line.contains("Session summary:") && line.contains(&format!("peer {peer},"))
}

/// Number of session-summary lines logged so far.
pub fn summaries(t: &Tunnel) -> usize {
    t.log_lines()
        .iter()
        .filter(|l| l.contains("Session summary:"))
        .count()
}

/// Waits until `t` has logged at least `n` session summaries; panics with the log if not.
pub fn wait_summaries(t: &Tunnel, n: usize, timeout: Duration) -> Vec<String> {
    t.wait_for_logs("Session summary:", n, timeout)
}

/// Upper bound for anything that should happen "at once" on a loaded 2-core machine.
pub const PROMPT: Duration = Duration::from_secs(10);

/// Writes `data`, then reads the same number of bytes back; true when they are equal.
pub fn echo_exact(s: &mut (impl Read + Write), data: &[u8]) -> bool {
    if s.write_all(data).is_err() || s.flush().is_err() {
        return false;
    }
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back).is_ok() && back == data
}

/// Both tunnels of `pair` are still running (see [`assert_alive`]).
pub fn alive_both(pair: &mut TunnelPair) {
    assert_alive(&mut pair.client);
    assert_alive(&mut pair.server);
}

/// A TCP echo server on a given listener (on any address, or in a namespace); records
/// every peer address.
pub struct Echo {
    pub addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    /// Listens on `bind` inside network namespace `ns`.
    pub fn in_ns(ns: &str, bind: &str) -> Echo {
        let bind = bind.to_string();
        Echo::on(in_named_netns(ns, move || {
            TcpListener::bind(&bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"))
        }))
    }

    pub fn on(listener: TcpListener) -> Echo {
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peers, stop) = (peers.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((mut s, peer)) => {
                            peers.lock().unwrap().push(peer);
                            s.set_nonblocking(false).unwrap();
                            super::net::set_timeouts(&s);
                            std::thread::spawn(move || {
                                let mut buf = [0u8; 16384];
                                while let Ok(n) = s.read(&mut buf) {
                                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                let _ = s.shutdown(Shutdown::Write);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Echo {
            addr,
            peers,
            stop,
            thread: Some(thread),
        }
    }

    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What most network fault cases start from: a test directory and its [`Pki`] (returned
/// together, to be kept alive), an echo [`Target`], a rstunnel [`TunnelPair`] in front of it
/// and an empty [`Ledger`]. Bound in one `let`, they drop in reverse order (ledger, pair,
/// target, then the directory), as separate `let`s would.
pub fn fault_setup(label: &str) -> ((TestDir, Pki), Target, TunnelPair, Ledger) {
    fault_setup_with(label, "", "")
}

/// [`fault_setup`] with extra option lines in the server and the client section.
pub fn fault_setup_with(
    label: &str,
    server_extra: &str,
    client_extra: &str,
) -> ((TestDir, Pki), Target, TunnelPair, Ledger) {
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let target = Target::echo();
    let pair = TunnelPair::start(&dir, &pki, target.addr(), server_extra, client_extra);
    ((dir, pki), target, pair, Ledger::default())
}
