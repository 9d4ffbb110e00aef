//! Unix-domain sockets, `exec` programs and inetd mode, checked by what users see:
//!
//! * `connect = /path`: a server tunnel relays a TLS client to a Unix-socket echo backend.
//! * `accept = /path`: a client tunnel listens on a Unix socket; a `UnixStream` client's data
//!   goes through TLS to a server tunnel and a TCP echo backend and comes back intact. A
//!   socket file left at the path by an earlier run is replaced, a regular file there is not
//!   (startup fails, the file is kept), and a clean stop removes the socket file (as stunnel
//!   does). Section `setuid`/`setgid`
//!   (root only) make 65534:65534 the owner of the socket file and leave the process alone.
//! * A real rsyslogd (`imptcp` on a Unix *stream* socket) behind `connect = /path` receives
//!   100 newline-framed syslog lines sent through client tunnel → TLS → server tunnel.
//! * `exec = /bin/cat`: 1 MiB from a TLS client comes back intact. A script run by
//!   `exec = /bin/sh` sees REMOTE_HOST, REMOTE_PORT, SSL_CLIENT_DN and SSL_CLIENT_I_DN.
//!   Parallel sessions each get their own program, a child of the tunnel holding no extra
//!   sockets; after the sessions end no child (zombie or not) is left.
//! * Inetd mode (a config with no `[section]`): one session on fd 0/1 (a socketpair here),
//!   then exit 0, logging to `output` and not to stderr; in server mode (TLS on the pair) and
//!   in client mode (plain on the pair, TLS to a server tunnel).
//!
//! ```text
//! TLS client ──▶ server [srv] ──▶ /tmp/…/backend.sock (echo) | exec program
//! UnixStream ──▶ /tmp/…/in.sock client [cli] ──TLS──▶ server [srv] ──▶ TCP echo
//! TCP ──▶ client [cli] ──TLS──▶ server [srv] ──▶ /tmp/…/syslog.sock (rsyslogd imptcp)
//! socketpair ══ rstunnel (inetd) ──▶ TCP echo | server [srv]
//! ```

mod common;

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use openssl::ssl::SslStream;

use common::daemon::{parse_close_line, rstunnel_bin, START_TIMEOUT};
use common::tls::{tls_over, tls_to};
use common::tools::{find_program, ChildGuard};
use common::*;

const T: Duration = Duration::from_secs(10);
const RESULT_TIMEOUT: Duration = Duration::from_secs(20);
/// Bytes written per step of a lock-step echo (write a chunk, read it back).
const STEP: usize = 16 * 1024;

// ---------------------------------------------------------------------------------------
// helpers

/// Read and write timeouts on a Unix stream, so a stalled tunnel fails the test.
fn unix_timeouts(s: &UnixStream) {
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
}

/// A Unix-domain stream server at `path`, echoing every connection (thread per connection)
/// until EOF, then shutting down its write side. Stops accepting and removes the socket file
/// when dropped.
struct UnixEcho {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl UnixEcho {
    fn start(path: &Path) -> UnixEcho {
        let listener = UnixListener::bind(path)
            .unwrap_or_else(|e| panic!("binding the Unix echo backend {}: {e}", path.display()));
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let thread = {
            let stop = stop.clone();
            let accepted = accepted.clone();
            std::thread::spawn(move || {
                accept_until_stopped(listener.incoming(), &stop, |mut s| {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    unix_timeouts(&s);
                    std::thread::spawn(move || -> io::Result<()> {
                        let mut buf = vec![0; 64 * 1024];
                        loop {
                            let n = s.read(&mut buf)?;
                            if n == 0 {
                                break;
                            }
                            s.write_all(&buf[..n])?;
                        }
                        s.shutdown(Shutdown::Write)
                    });
                });
            })
        };
        UnixEcho {
            path: path.to_path_buf(),
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for UnixEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path); // wakes the blocking accept
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts the binary under test with `body` after the standard global lines, and waits until
/// every section in `tcp_sections` logged its `bound to IP:PORT` line and every path in
/// `unix_paths` its `bound to localhost:/path` line (the harness's `Tunnel::start` only
/// understands IP addresses).
fn start_tunnel(
    dir: &TestDir,
    label: &str,
    body: &str,
    tcp_sections: &[&str],
    unix_paths: &[&Path],
) -> Tunnel {
    let bin = rstunnel_bin();
    let conf_path = common::daemon::write_test_conf(dir, label, &bin, body);
    let mut t = Tunnel::spawn(&bin, &[conf_path.as_os_str()], label, conf_path.clone());
    let sections: Vec<String> = tcp_sections.iter().map(|s| s.to_string()).collect();
    t.wait_bound(&sections, START_TIMEOUT);
    for p in unix_paths {
        t.wait_for_log(
            &format!("bound to localhost:{}", p.display()),
            START_TIMEOUT,
        );
    }
    t
}

/// Sends the payload (`seed`, `len`) in [`STEP`]-byte chunks, reading each chunk back before
/// the next (an echo never has more than one chunk in flight, so nothing can deadlock).
/// Panics naming the first differing chunk.
fn lockstep_echo<S: Read + Write>(s: &mut S, seed: u64, len: usize, what: &str) {
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

/// Sends close_notify, then reads until the peer closes; returns what arrived meanwhile.
fn tls_close<S: Read + Write>(s: &mut SslStream<S>, what: &str) -> Vec<u8> {
    let _ = s.shutdown();
    let mut rest = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => rest.extend_from_slice(&buf[..n]),
            Err(e) => panic!("{what}: waiting for the peer to close after close_notify: {e}"),
        }
    }
    rest
}

/// (state, ppid) of process `pid` from /proc/PID/stat, if it exists.
fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold blanks and parentheses; split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// (pid, state) of every process whose parent is `ppid`.
fn children_of(ppid: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("reading /proc") {
        let Some(pid) = entry
            .unwrap()
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((state, parent)) = proc_state(pid) {
            if parent == ppid {
                out.push((pid, state));
            }
        }
    }
    out
}

/// Descriptors above 2 of process `pid` that are sockets (`socket:[inode]`).
fn extra_sockets(pid: u32) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    rd.filter_map(|e| {
        let e = e.ok()?;
        let fd: u32 = e.file_name().to_str()?.parse().ok()?;
        let target = std::fs::read_link(e.path()).ok()?;
        let target = target.to_string_lossy().into_owned();
        (fd > 2 && target.starts_with("socket:")).then(|| format!("fd {fd} -> {target}"))
    })
    .collect()
}

/// Waits up to `timeout` for `cond`; returns whether it held.
fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `child` until it exits or `timeout` passes.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------
// connect = /path, accept = /path

#[test]
fn server_tunnel_connects_to_a_unix_socket_backend() {
    let dir = TestDir::new("unix-connect");
    let pki = Pki::new(&dir);
    let sock = dir.join("backend.sock");
    let echo = UnixEcho::start(&sock);
    let server = start_tunnel(
        &dir,
        "server",
        &format!(
            "[srv]\naccept = 127.0.0.1:0\nconnect = {}\ncert = {}\n",
            sock.display(),
            pki.server.combined.display()
        ),
        &["srv"],
        &[],
    );
    for seed in 0..2u64 {
        let mut s = tls_to(server.addr("srv"), None, None);
        lockstep_echo(
            &mut s,
            seed,
            256 * 1024,
            &format!("session {seed} to connect = /path"),
        );
        let rest = tls_close(&mut s, "connect = /path");
        assert!(rest.is_empty(), "unexpected bytes after the echo: {rest:?}");
    }
    assert_eq!(
        echo.connections(),
        2,
        "the Unix backend did not see one connection per session"
    );
    let closes = server.wait_close_counts(2, T);
    for c in &closes {
        assert_eq!(
            (c.sent_to_tls, c.sent_to_socket),
            (256 * 1024, 256 * 1024),
            "byte counts of a session through connect = /path: {c:?}"
        );
    }
    // The target is logged in stunnel's form for Unix sockets.
    server.wait_for_log(
        &format!("s_connect: connected localhost:{}", sock.display()),
        T,
    );
}

/// A `[cli]` client-mode section listening on the Unix socket `path` and connecting to
/// `server`, with `extra` lines.
fn unix_client_body(path: &Path, server: SocketAddr, extra: &str) -> String {
    format!(
        "client = yes\n[cli]\naccept = {}\nconnect = {server}\n{extra}\n",
        path.display()
    )
}

/// One echo session through the Unix socket `path`: writes `data` from a second thread,
/// half-closes, and reads everything back until EOF.
fn unix_echo_session(path: &Path, data: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(path)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", path.display()));
    unix_timeouts(&s);
    let mut w = s.try_clone().unwrap();
    let out = data.to_vec();
    let writer = std::thread::spawn(move || -> io::Result<()> {
        w.write_all(&out)?;
        w.shutdown(Shutdown::Write)
    });
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .unwrap_or_else(|e| panic!("reading the echo through {}: {e}", path.display()));
    writer
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("writing through {}: {e}", path.display()));
    got
}

#[test]
fn client_tunnel_accepts_on_a_unix_socket() {
    let dir = TestDir::new("unix-accept");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let server = Tunnel::server(&dir, &pki, echo.addr(), "");
    let path = dir.join("in.sock");
    let client = start_tunnel(
        &dir,
        "client",
        &unix_client_body(&path, server.addr("srv"), ""),
        &[],
        &[&path],
    );
    let meta = std::fs::symlink_metadata(&path).expect("the accept socket file exists");
    assert!(
        meta.file_type().is_socket(),
        "{} is not a socket",
        path.display()
    );
    for seed in 0..2u64 {
        let data = payload(seed, 300 * 1024);
        let got = unix_echo_session(&path, &data);
        assert!(
            got == data,
            "session {seed}: echoed {} bytes differ from the {} sent",
            got.len(),
            data.len()
        );
        assert_eq!(echo.next_result(RESULT_TIMEOUT), Digest::of(&data));
    }
    let closes = client.wait_close_counts(2, T);
    assert!(
        closes
            .iter()
            .all(|c| c.sent_to_tls == 300 * 1024 && c.sent_to_socket == 300 * 1024),
        "byte counts of sessions accepted on a Unix socket: {closes:?}"
    );
    assert!(
        client.has_log("Service [cli] accepted connection from"),
        "no accept line for the Unix socket session"
    );
}

/// rstunnel's own rule (stunnel 5.68 instead fails with `Binding service [cli] to
/// localhost:/path: Address already in use (98)`, so this test fails under
/// `RSTUNNEL_TEST_BIN=stunnel4`).
#[test]
fn unix_accept_replaces_a_stale_socket_file() {
    let dir = TestDir::new("unix-stale");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let server = Tunnel::server(&dir, &pki, echo.addr(), "");
    let path = dir.join("in.sock");
    // What an earlier run that was killed leaves behind: a socket file nobody listens on.
    drop(UnixListener::bind(&path).unwrap());
    assert!(
        std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket(),
        "test setup: no stale socket file"
    );
    assert_eq!(
        UnixStream::connect(&path).map_err(|e| e.kind()).err(),
        Some(io::ErrorKind::ConnectionRefused),
        "test setup: the stale socket should refuse connections"
    );
    let _client = start_tunnel(
        &dir,
        "client",
        &unix_client_body(&path, server.addr("srv"), ""),
        &[],
        &[&path],
    );
    let data = payload(7, 64 * 1024);
    assert!(
        unix_echo_session(&path, &data) == data,
        "echo through the re-bound Unix socket differs"
    );
}

/// Only a *socket* file is stale: a regular file at the accept path is never deleted; the
/// bind fails and the process exits 1 (as stunnel 5.68 does).
#[test]
fn unix_accept_keeps_a_regular_file_at_the_path() {
    let dir = TestDir::new("unix-regular-file");
    let path = dir.write("in.sock", "precious data\n");
    let bin = rstunnel_bin();
    let mut conf = String::from("foreground = yes\ndebug = 7\n");
    if bin
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("stunnel"))
    {
        conf.push_str("pid =\nsyslog = no\n");
    }
    conf.push_str(&format!(
        "client = yes\n[cli]\naccept = {}\nconnect = 127.0.0.1:9\n",
        path.display()
    ));
    let conf_path = dir.write("client.conf", conf);
    let mut t = Tunnel::spawn(&bin, &[conf_path.as_os_str()], "client", conf_path.clone());
    let st = t.wait_exit(T);
    if st.map(|s| s.code()) != Some(Some(1)) {
        t.fail(&format!(
            "binding over a regular file must fail with exit 1, got {st:?}"
        ));
    }
    assert_eq!(
        std::fs::read_to_string(&path).ok().as_deref(),
        Some("precious data\n"),
        "the regular file at the accept path was removed or changed"
    );
    t.wait_for_log("Binding service [cli]", T);
}

/// stunnel 5.68 (checked on Debian's binary) unlinks its Unix accept socket when it exits on
/// SIGTERM, so a clean stop leaves nothing at the path.
#[test]
fn unix_accept_socket_file_is_removed_on_sigterm() {
    let dir = TestDir::new("unix-unlink");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let server = Tunnel::server(&dir, &pki, echo.addr(), "");
    let path = dir.join("in.sock");
    let mut client = start_tunnel(
        &dir,
        "client",
        &unix_client_body(&path, server.addr("srv"), ""),
        &[],
        &[&path],
    );
    let data = payload(5, 4 * 1024);
    assert!(unix_echo_session(&path, &data) == data);
    let st = client.stop();
    assert_eq!(st.code(), Some(0), "exit status after SIGTERM");
    assert!(
        std::fs::symlink_metadata(&path).is_err(),
        "the Unix accept socket {} is left behind after a clean SIGTERM exit (stunnel \
         removes it)",
        path.display()
    );
}

#[test]
fn section_setuid_setgid_own_the_unix_accept_socket() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        common::skipped(
            "section_setuid_setgid_own_the_unix_accept_socket: chown of the socket file \
             needs root; run the tests as root, as CI does",
        );
        return;
    }
    let dir = TestDir::new("unix-owner");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let server = Tunnel::server(&dir, &pki, echo.addr(), "");
    let path = dir.join("owned.sock");
    let client = start_tunnel(
        &dir,
        "client",
        &unix_client_body(&path, server.addr("srv"), "setuid = 65534\nsetgid = 65534"),
        &[],
        &[&path],
    );
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (65534, 65534),
        "section setuid/setgid must make 65534:65534 the owner of {}",
        path.display()
    );
    // In a section they are only the socket's owner: the process keeps its user.
    let status = std::fs::read_to_string(format!(
        "/proc/{}/status",
        common::process::tunnel_pid(&client)
    ))
    .unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|f| f == "0"),
        "a section setuid must not drop the process's user: {uid_line}"
    );
    let data = payload(3, 16 * 1024);
    assert!(
        unix_echo_session(&path, &data) == data,
        "echo through the owned socket differs"
    );
}

// ---------------------------------------------------------------------------------------
// rsyslog behind connect = /path

/// A private rsyslogd whose `imptcp` input listens on a Unix *stream* socket and writes each
/// message as `TAG MSG` lines to a file. Stopped with SIGTERM (then SIGKILL) on drop.
struct Rsyslog {
    guard: ChildGuard,
    socket: PathBuf,
    out: PathBuf,
    log: PathBuf,
}

impl Rsyslog {
    fn start(dir: &TestDir) -> Rsyslog {
        let bin = find_program("rsyslogd");
        let socket = dir.join("syslog.sock");
        let out = dir.join("rsyslog-out.log");
        let work = dir.join("rsyslog-work");
        std::fs::create_dir_all(&work).unwrap();
        let conf = dir.write(
            "rsyslog.conf",
            format!(
                "global(workDirectory=\"{work}\")\n\
                 module(load=\"imptcp\")\n\
                 template(name=\"lines\" type=\"string\" string=\"%syslogtag%%msg%\\n\")\n\
                 ruleset(name=\"tunnel\") {{\n  action(type=\"omfile\" file=\"{out}\" \
                 template=\"lines\" asyncWriting=\"off\" flushOnTXEnd=\"on\")\n}}\n\
                 input(type=\"imptcp\" path=\"{sock}\" unlink=\"on\" ruleset=\"tunnel\")\n",
                work = work.display(),
                out = out.display(),
                sock = socket.display(),
            ),
        );
        let log = dir.join("rsyslogd.stderr");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(&bin)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file.try_clone().unwrap()))
            .stderr(Stdio::from(log_file))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
        let mut r = Rsyslog {
            guard: ChildGuard(Some(child)),
            socket,
            out,
            log,
        };
        let up = wait_for(T, || {
            r.socket.exists() || r.guard.child().try_wait().ok().flatten().is_some()
        });
        if !up || !r.socket.exists() {
            panic!(
                "rsyslogd did not create its imptcp socket {} within {T:?} (exit: {:?}); its \
                 output:\n{}",
                r.socket.display(),
                r.guard.child().try_wait().ok().flatten(),
                std::fs::read_to_string(&r.log).unwrap_or_default()
            );
        }
        r
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(c) = self.guard.0.as_mut() {
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
            if wait_child(c, Duration::from_secs(5)).is_some() {
                self.guard.0 = None;
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "--- rsyslogd output ---\n{}--- rsyslogd file {} ---\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default(),
                self.out.display(),
                std::fs::read_to_string(&self.out).unwrap_or_default()
            );
        }
        // The guard kills and reaps it if SIGTERM was not enough.
    }
}

#[test]
fn syslog_lines_reach_rsyslog_through_a_unix_socket() {
    let dir = TestDir::new("unix-rsyslog");
    let pki = Pki::new(&dir);
    let rsyslog = Rsyslog::start(&dir);
    let server = start_tunnel(
        &dir,
        "server",
        &format!(
            "[srv]\naccept = 127.0.0.1:0\nconnect = {}\ncert = {}\n",
            rsyslog.socket.display(),
            pki.server.combined.display()
        ),
        &["srv"],
        &[],
    );
    let client = Tunnel::start(&dir, "client", &client_body(server.addr("srv"), ""));

    let expected: Vec<String> = (0..100).map(|i| format!("test: line {i}")).collect();
    let mut wire = Vec::new();
    for i in 0..100 {
        wire.extend_from_slice(format!("<13>test: line {i}\n").as_bytes());
    }
    let mut s = connect(client.addr("cli"));
    // In pieces, so lines straddle TLS records.
    for piece in wire.chunks(333) {
        s.write_all(piece)
            .expect("writing syslog lines into the client tunnel");
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back)
        .expect("waiting for the session to end");
    assert!(back.is_empty(), "rsyslog does not answer, yet got {back:?}");

    let arrived = wait_for(RESULT_TIMEOUT, || rsyslog.lines().len() >= expected.len());
    let got = rsyslog.lines();
    assert!(
        arrived && got == expected,
        "rsyslog wrote {} of 100 lines (in order, exactly `test: line N`); first differences: {:?}",
        got.len(),
        got.iter()
            .zip(expected.iter())
            .filter(|(a, b)| a != b)
            .take(3)
            .collect::<Vec<_>>()
    );
    let closes = server.wait_close_counts(1, T);
    assert_eq!(
        closes[0].sent_to_socket,
        wire.len() as u64,
        "server tunnel's count of bytes written to the syslog socket"
    );
}

// ---------------------------------------------------------------------------------------
// exec

/// A `[srv]` server section on 127.0.0.1:0 running `exec` with `exec_args`.
fn exec_body(cert: &Path, exec: &str, exec_args: &str, extra: &str) -> String {
    format!(
        "[srv]\naccept = 127.0.0.1:0\nexec = {exec}\nexecArgs = {exec_args}\ncert = {}\n{extra}\n",
        cert.display()
    )
}

#[test]
fn exec_cat_echoes_a_mebibyte() {
    let dir = TestDir::new("exec-cat");
    let pki = Pki::new(&dir);
    let server = Tunnel::start(
        &dir,
        "server",
        &exec_body(&pki.server.combined, "/bin/cat", "cat", ""),
    );
    let mut s = tls_to(server.addr("srv"), None, None);
    lockstep_echo(&mut s, 11, MIB as usize, "1 MiB through exec = /bin/cat");
    let rest = tls_close(&mut s, "exec = /bin/cat");
    assert!(rest.is_empty(), "bytes after the echo: {}", rest.len());
    let closes = server.wait_close_counts(1, T);
    assert_eq!(
        (closes[0].sent_to_tls, closes[0].sent_to_socket),
        (MIB, MIB),
        "byte counts of the exec session: {:?}",
        closes[0]
    );
}

/// `KEY=VALUE` lines printed by the env script, as pairs.
fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn env_value<'a>(env: &'a [(String, String)], key: &str) -> &'a str {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("the script printed no {key}= line: {env:?}"))
}

#[test]
fn exec_program_sees_the_peer_in_its_environment() {
    let dir = TestDir::new("exec-env");
    let pki = Pki::new(&dir);
    // execArgs has no quoting, so the shell code lives in a file.
    let script = dir.write(
        "env.sh",
        "echo \"REMOTE_HOST=$REMOTE_HOST\"\n\
         echo \"REMOTE_PORT=$REMOTE_PORT\"\n\
         echo \"SSL_CLIENT_DN=$SSL_CLIENT_DN\"\n\
         echo \"SSL_CLIENT_I_DN=$SSL_CLIENT_I_DN\"\n\
         echo END\n",
    );
    let server = Tunnel::start(
        &dir,
        "server",
        &exec_body(
            &pki.server.combined,
            "/bin/sh",
            &format!("sh {}", script.display()),
            &format!("CAfile = {}\nverifyChain = yes", pki.ca_file.display()),
        ),
    );
    let mut s = tls_to(server.addr("srv"), None, Some(&pki.client));
    let local_port = s.get_ref().local_addr().unwrap().port();
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("reading the script's output through TLS");
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(
        text.ends_with("END\n"),
        "the script's output is incomplete: {text:?}"
    );
    let env = parse_env(&text);
    assert_eq!(env_value(&env, "REMOTE_HOST"), "127.0.0.1", "{text}");
    assert_eq!(
        env_value(&env, "REMOTE_PORT"),
        local_port.to_string(),
        "REMOTE_PORT must be the client's source port\n{text}"
    );
    let dn = env_value(&env, "SSL_CLIENT_DN");
    assert!(
        dn.contains("CN=client.right.name"),
        "SSL_CLIENT_DN does not name the client certificate's CN: {dn:?}"
    );
    let idn = env_value(&env, "SSL_CLIENT_I_DN");
    assert!(
        idn.contains("CN=rstunnel test CA"),
        "SSL_CLIENT_I_DN does not name the issuing CA: {idn:?}"
    );
}

#[test]
fn parallel_exec_sessions_get_their_own_programs_and_leave_no_zombies() {
    const N: usize = 6;
    let dir = TestDir::new("exec-parallel");
    let pki = Pki::new(&dir);
    let script = dir.write("pid-cat.sh", "echo \"PID=$$\"\nexec cat\n");
    // `sandbox = no`: the script runs `cat`, a program the configuration does not name,
    // which the default sandbox refuses to execute (tests/sandbox.rs).
    let server = Tunnel::start(
        &dir,
        "server",
        &format!(
            "sandbox = no\n{}",
            exec_body(
                &pki.server.combined,
                "/bin/sh",
                &format!("sh {}", script.display()),
                "",
            )
        ),
    );
    let tunnel_pid = common::process::tunnel_pid(&server) as u32;
    let addr = server.addr("srv");

    // Each thread opens a session, reports its program's pid, waits for "go" (so all N are
    // open at once), echoes its own payload and closes.
    let (pid_tx, pid_rx) = channel::<(usize, u32)>();
    let mut go = Vec::new();
    let mut threads = Vec::new();
    for i in 0..N {
        let (go_tx, go_rx) = channel::<()>();
        go.push(go_tx);
        let pid_tx = pid_tx.clone();
        threads.push(std::thread::spawn(move || {
            let mut s = tls_to(addr, None, None);
            let line = read_line(&mut s, 100).expect("reading the program's PID line");
            let text = String::from_utf8_lossy(&line).into_owned();
            let pid: u32 = text
                .trim_end()
                .strip_prefix("PID=")
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("session {i}: bad first line {text:?}"));
            pid_tx.send((i, pid)).unwrap();
            go_rx.recv_timeout(RESULT_TIMEOUT).expect("no go signal");
            lockstep_echo(
                &mut s,
                100 + i as u64,
                128 * 1024,
                &format!("parallel session {i}"),
            );
            let rest = tls_close(&mut s, "parallel exec session");
            assert!(rest.is_empty(), "session {i}: bytes after the echo");
        }));
    }
    drop(pid_tx);
    let mut pids = Vec::new();
    for _ in 0..N {
        let (i, pid) = pid_rx.recv_timeout(RESULT_TIMEOUT).unwrap_or_else(|_| {
            panic!("only {} of {N} sessions reported a program pid", pids.len())
        });
        pids.push((i, pid));
    }
    let distinct: BTreeSet<u32> = pids.iter().map(|(_, p)| *p).collect();
    assert_eq!(distinct.len(), N, "sessions shared a program: {pids:?}");
    for &(i, pid) in &pids {
        let st = proc_state(pid);
        assert!(
            matches!(st, Some((s, ppid)) if ppid == tunnel_pid && s != 'Z'),
            "session {i}: program {pid} should be a live child of the tunnel {tunnel_pid}: {st:?}"
        );
        let leaked = extra_sockets(pid);
        assert!(
            leaked.is_empty(),
            "session {i}: program {pid} holds sockets besides its stdio (leaked from the \
             tunnel): {leaked:?}"
        );
    }
    for g in &go {
        g.send(()).unwrap();
    }
    for (i, t) in threads.into_iter().enumerate() {
        if t.join().is_err() {
            panic!("parallel session {i} failed (see its panic above)");
        }
    }
    server.wait_close_counts(N, T);

    // The programs have exited (cat saw EOF) and were reaped: no zombies, no children.
    let clean = wait_for(Duration::from_secs(5), || {
        children_of(tunnel_pid).is_empty()
    });
    let left = children_of(tunnel_pid);
    assert!(
        clean,
        "children of the tunnel {tunnel_pid} left after the sessions ended (state Z = zombie): \
         {left:?}"
    );
    for &(i, pid) in &pids {
        assert!(
            !matches!(proc_state(pid), Some((_, ppid)) if ppid == tunnel_pid),
            "session {i}: program {pid} is still around"
        );
    }
}

// ---------------------------------------------------------------------------------------
// inetd mode

/// A running inetd-mode rstunnel: `conf` (no sections) with fd 0 and 1 on one end of a
/// socketpair; `ours` is the other end. stderr is captured.
struct Inetd {
    guard: ChildGuard,
    ours: Option<UnixStream>,
    stderr: Option<JoinHandle<String>>,
    output: PathBuf,
}

impl Inetd {
    fn start(dir: &TestDir, label: &str, body: &str) -> Inetd {
        let output = dir.join(&format!("{label}.log"));
        let conf = dir.write(
            &format!("{label}.conf"),
            format!(
                "; {label}: inetd mode\nsyslog = no\noutput = {}\ndebug = 7\n{body}\n",
                output.display()
            ),
        );
        let (ours, theirs) = UnixStream::pair().unwrap();
        unix_timeouts(&ours);
        let theirs_out = theirs.try_clone().unwrap();
        let mut cmd = Command::new(rstunnel_bin());
        cmd.arg(&conf)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::from(OwnedFd::from(theirs_out)))
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning rstunnel in inetd mode");
        // Our copies of the child's end close with the Command, so only the child holds it.
        drop(cmd);
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Inetd {
            guard: ChildGuard(Some(child)),
            ours: Some(ours),
            stderr: Some(stderr),
            output,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Waits up to `timeout` for the process to exit; returns its status and stderr, or
    /// panics with the log file.
    fn wait(&mut self, timeout: Duration) -> (ExitStatus, String) {
        let st = wait_child(self.guard.child(), timeout);
        let Some(st) = st else {
            panic!(
                "inetd-mode rstunnel still running {timeout:?} after the session ended\n--- {} ---\n{}",
                self.output.display(),
                self.log()
            );
        };
        self.guard.0 = None;
        let err = self.stderr.take().unwrap().join().unwrap();
        (st, err)
    }
}

impl Drop for Inetd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.output.display(), self.log());
        }
    }
}

#[test]
fn inetd_server_mode_serves_one_tls_session_on_stdio_and_exits_0() {
    let dir = TestDir::new("inetd-server");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let mut inetd = Inetd::start(
        &dir,
        "inetd",
        &format!(
            "cert = {}\nconnect = {}",
            pki.server.combined.display(),
            echo.addr()
        ),
    );
    let ours = inetd.ours.take().unwrap();
    let mut s = tls_over(ours, None, None);
    lockstep_echo(&mut s, 21, 200 * 1024, "inetd server-mode session");
    let rest = tls_close(&mut s, "inetd server mode");
    assert!(rest.is_empty(), "bytes after the echo: {}", rest.len());
    assert_eq!(
        echo.next_result(RESULT_TIMEOUT),
        payload_digest(21, 200 * 1024)
    );
    drop(s);

    let (st, stderr) = inetd.wait(T);
    assert_eq!(
        st.code(),
        Some(0),
        "inetd mode must exit 0 after its session: {st}"
    );
    assert!(
        stderr.trim().is_empty(),
        "inetd mode must not log to stderr (it may be the client's connection): {stderr:?}"
    );
    let log = inetd.log();
    let closes: Vec<_> = log.lines().filter_map(parse_close_line).collect();
    assert_eq!(
        closes.len(),
        1,
        "the output file should show exactly one session summary:\n{log}"
    );
    assert_eq!(
        (closes[0].sent_to_tls, closes[0].sent_to_socket),
        (200 * 1024, 200 * 1024),
        "byte counts of the inetd session:\n{log}"
    );
    assert!(
        log.contains("accepted connection"),
        "no accept line:\n{log}"
    );
}

#[test]
fn inetd_client_mode_relays_plain_stdio_to_a_tls_server() {
    let dir = TestDir::new("inetd-client");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let server = Tunnel::server(&dir, &pki, echo.addr(), "");
    let mut inetd = Inetd::start(
        &dir,
        "inetd",
        &format!("client = yes\nconnect = {}", server.addr("srv")),
    );
    let mut ours = inetd.ours.take().unwrap();
    let data = payload(31, 300 * 1024);
    let mut w = ours.try_clone().unwrap();
    let out = data.clone();
    let writer = std::thread::spawn(move || -> io::Result<()> {
        w.write_all(&out)?;
        w.shutdown(Shutdown::Write)
    });
    let mut got = Vec::new();
    ours.read_to_end(&mut got)
        .expect("reading the echo from the inetd client's stdout");
    writer
        .join()
        .unwrap()
        .expect("writing to the inetd client's stdin");
    assert!(
        got == data,
        "inetd client mode: got {} bytes back for {} sent, or they differ",
        got.len(),
        data.len()
    );
    assert_eq!(echo.next_result(RESULT_TIMEOUT), Digest::of(&data));
    drop(ours);

    let (st, stderr) = inetd.wait(T);
    assert_eq!(
        st.code(),
        Some(0),
        "inetd client mode must exit 0 after its session: {st}"
    );
    assert!(
        stderr.trim().is_empty(),
        "inetd mode logged to stderr: {stderr:?}"
    );
    let log = inetd.log();
    let closes: Vec<_> = log.lines().filter_map(parse_close_line).collect();
    assert_eq!(closes.len(), 1, "expected one session summary:\n{log}");
    assert_eq!(
        (closes[0].sent_to_tls, closes[0].sent_to_socket),
        (300 * 1024, 300 * 1024),
        "byte counts of the inetd client session:\n{log}"
    );
    server.wait_close_counts(1, T);
}
