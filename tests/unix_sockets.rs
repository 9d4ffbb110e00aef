//! Unix-domain sockets, checked by what users see (`exec` and inetd mode are in
//! `tests/exec_inetd.rs`):
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
//!
//! ```text
//! TLS client ──▶ server [srv] ──▶ /tmp/…/backend.sock (echo)
//! UnixStream ──▶ /tmp/…/in.sock client [cli] ──TLS──▶ server [srv] ──▶ TCP echo
//! TCP ──▶ client [cli] ──TLS──▶ server [srv] ──▶ /tmp/…/syslog.sock (rsyslogd imptcp)
//! ```

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::daemon::{rstunnel_bin, start_with, START_TIMEOUT};
use common::tls::tls_close;
use common::tls::tls_to;
use common::tools::wait_child;
use common::tools::{rsyslogd, ChildGuard};
use common::*;

const T: Duration = Duration::from_secs(10);
const RESULT_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// helpers

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
    let t = start_with(dir, label, body, &[], tcp_sections);
    for p in unix_paths {
        t.wait_for_log(
            &format!("bound to localhost:{}", p.display()),
            START_TIMEOUT,
        );
    }
    t
}

/// A server tunnel `[srv]` (TLS on 127.0.0.1:0, `pki.server`) whose `connect` is the Unix
/// socket `path`.
fn unix_backend_server(dir: &TestDir, pki: &Pki, path: &Path) -> Tunnel {
    let body = format!(
        "[srv]\naccept = 127.0.0.1:0\nconnect = {}\ncert = {}\n",
        path.display(),
        pki.server.combined.display()
    );
    start_tunnel(dir, "server", &body, &["srv"], &[])
}

// ---------------------------------------------------------------------------------------
// connect = /path, accept = /path

#[test]
fn server_tunnel_connects_to_a_unix_socket_backend() {
    let dir = TestDir::new("unix-connect");
    let pki = Pki::new(&dir);
    let sock = dir.join("backend.sock");
    let echo = UnixEcho::start(&sock);
    let server = unix_backend_server(&dir, &pki, &sock);
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

/// A client tunnel `[cli]` accepting on the Unix socket `path` and connecting to `server`'s
/// `[srv]`, with `extra` lines; returns once the socket is bound.
fn unix_client(dir: &TestDir, path: &Path, server: &Tunnel, extra: &str) -> Tunnel {
    let body = unix_client_body(path, server.addr("srv"), extra);
    start_tunnel(dir, "client", &body, &[], &[path])
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
    let ((dir, _pki), echo, server) = echo_server("unix-accept");
    let path = dir.join("in.sock");
    let client = unix_client(&dir, &path, &server, "");
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
    let ((dir, _pki), _echo, server) = echo_server("unix-stale");
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
    let _client = unix_client(&dir, &path, &server, "");
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
    let ((dir, _pki), _echo, server) = echo_server("unix-unlink");
    let path = dir.join("in.sock");
    let mut client = unix_client(&dir, &path, &server, "");
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
    let ((dir, _pki), _echo, server) = echo_server("unix-owner");
    let path = dir.join("owned.sock");
    let client = unix_client(&dir, &path, &server, "setuid = 65534\nsetgid = 65534");
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
        let socket = dir.join("syslog.sock");
        let out = dir.join("rsyslog-out.log");
        let rules = format!(
            "module(load=\"imptcp\")\n\
             template(name=\"lines\" type=\"string\" string=\"%syslogtag%%msg%\\n\")\n\
             ruleset(name=\"tunnel\") {{\n  action(type=\"omfile\" file=\"{out}\" \
             template=\"lines\" asyncWriting=\"off\" flushOnTXEnd=\"on\")\n}}\n\
             input(type=\"imptcp\" path=\"{sock}\" unlink=\"on\" ruleset=\"tunnel\")\n",
            out = out.display(),
            sock = socket.display(),
        );
        let (guard, log) = rsyslogd(dir, &rules, &socket, T);
        Rsyslog {
            guard,
            socket,
            out,
            log,
        }
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
    let server = unix_backend_server(&dir, &pki, &rsyslog.socket);
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

    let arrived = wait_until(RESULT_TIMEOUT, || rsyslog.lines().len() >= expected.len());
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
