//! Helpers for the process-level tests (daemon mode, reload, log sinks, drain): root checks,
//! free ports, a TLS client made with the `openssl` crate, config rewrites, log-file waits
//! and a guard for daemonised processes that are not our children.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use openssl::nid::Nid;
use openssl::ssl::{SslConnector, SslMethod, SslStream, SslVerifyMode};

/// Whether the test runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// True when root; otherwise prints why `test` is skipped and returns false.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    crate::common::skipped(&format!(
        "{test}: needs root (setuid/chroot/mount); run the tests as root, as CI does"
    ));
    false
}

/// A loopback port that was free a moment ago (bind port 0, read it, close). For configs
/// that must keep their port across reloads or that run without a `bound to` log.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// `127.0.0.1:port`.
pub fn lo(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Read/write timeout of the TLS test clients.
pub const TLS_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS connector that trusts `ca` and checks the host name `localhost`.
pub fn connector(ca: &Path) -> SslConnector {
    let mut b = SslConnector::builder(SslMethod::tls()).expect("SslConnector::builder");
    b.set_ca_file(ca).expect("set_ca_file");
    b.set_verify(SslVerifyMode::PEER);
    b.build()
}

/// Why a TLS client could not get a session going.
#[derive(Debug)]
pub enum ConnectError {
    /// TCP connect failed (e.g. `ConnectionRefused`).
    Tcp(io::Error),
    /// TCP was accepted but the handshake failed (closed, reset, verification error...).
    Handshake(String),
    /// The handshake made no progress within the timeout: the connection was left hanging.
    Hung,
}

/// Connects to `addr` and completes a TLS handshake as a client that trusts `ca` and expects
/// the name `localhost`. Every socket has [`TLS_IO_TIMEOUT`] read/write timeouts.
pub fn tls_connect(addr: SocketAddr, ca: &Path) -> Result<SslStream<TcpStream>, ConnectError> {
    tls_connect_with(&connector(ca), addr)
}

pub fn tls_connect_with(
    c: &SslConnector,
    addr: SocketAddr,
) -> Result<SslStream<TcpStream>, ConnectError> {
    let tcp =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(ConnectError::Tcp)?;
    tcp.set_read_timeout(Some(TLS_IO_TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(TLS_IO_TIMEOUT)).unwrap();
    let _ = tcp.set_nodelay(true);
    match c.connect("localhost", tcp) {
        Ok(s) => Ok(s),
        Err(openssl::ssl::HandshakeError::WouldBlock(_)) => Err(ConnectError::Hung),
        Err(e) => {
            let text = e.to_string();
            if let openssl::ssl::HandshakeError::Failure(mid) = &e {
                if let Some(io) = mid.error().io_error() {
                    if matches!(
                        io.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) {
                        return Err(ConnectError::Hung);
                    }
                }
            }
            Err(ConnectError::Handshake(text))
        }
    }
}

/// The subject CN of the certificate the server presented.
pub fn peer_cn(s: &SslStream<TcpStream>) -> String {
    let cert = s
        .ssl()
        .peer_certificate()
        .expect("server sent a certificate");
    let entry = cert
        .subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .expect("certificate has a CN");
    String::from_utf8_lossy(entry.data().as_slice()).into_owned()
}

/// Writes `data`, reads back exactly as many bytes and checks they are the same (an echo
/// backend behind the tunnel).
pub fn echo_check<S: Read + Write>(s: &mut S, data: &[u8]) -> Result<(), String> {
    s.write_all(data).map_err(|e| format!("write: {e}"))?;
    s.flush().map_err(|e| format!("flush: {e}"))?;
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back)
        .map_err(|e| format!("reading the echo of {} byte(s): {e}", data.len()))?;
    if back != data {
        return Err(format!("echo of {} byte(s) differs", data.len()));
    }
    Ok(())
}

/// One TLS session through a server tunnel at `addr` that echoes `data`.
pub fn tls_echo(addr: SocketAddr, ca: &std::path::Path, data: &[u8]) -> Result<(), String> {
    let mut s = tls_connect(addr, ca).map_err(|e| format!("{e:?}"))?;
    echo_check(&mut s, data)?;
    tls_close(s);
    Ok(())
}

/// Ends a TLS session politely: close_notify, then wait (briefly) for the peer's.
pub fn tls_close(mut s: SslStream<TcpStream>) {
    let _ = s.shutdown();
    let _ = s.get_ref().set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 256];
    for _ in 0..64 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// Replaces `path` atomically (write a sibling, rename over), so the tunnel never reads a
/// half-written file.
pub fn write_atomic(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp-rewrite");
    std::fs::write(&tmp, contents).unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path)
        .unwrap_or_else(|e| panic!("renaming {} to {}: {e}", tmp.display(), path.display()));
}

/// Waits until `path` exists and contains `pattern` `n` times; returns its text, or `Err`
/// with what the file held at the deadline.
pub fn wait_file_contains(
    path: &Path,
    pattern: &str,
    n: usize,
    timeout: Duration,
) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.matches(pattern).count() >= n {
            return Ok(text);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not contain {pattern:?} {n} time(s) within {timeout:?}; it holds:\n{text}",
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a process with this pid exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !stat[i + 1..].trim_start().starts_with(['Z', 'X']),
            None => false,
        },
        Err(_) => false,
    }
}

/// Pids of processes (other than this one) whose command line contains `needle` as one
/// argument: how a test finds the daemon it started when the pid file is missing.
pub fn pids_with_arg(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == needle.as_bytes())
            && pid_alive(pid)
        {
            found.push(pid);
        }
    }
    found
}

/// The pid of the running tunnel `t`: the live process whose command line has `t`'s config
/// path (unique to its test directory) as one argument.
pub fn tunnel_pid(t: &crate::common::Tunnel) -> i32 {
    match pids_with_arg(&t.conf.to_string_lossy()).first() {
        Some(&pid) => pid,
        None => t.fail("no process has this tunnel's config on its command line"),
    }
}

/// The single live process started with config `conf`, waited for up to `wait` (foreground
/// tunnels' command line holds the unique config path): fails the test unless exactly one
/// such process runs by then (`Duration::ZERO`: now).
pub fn sole_pid_with_arg(conf: &Path, wait: Duration) -> i32 {
    let deadline = Instant::now() + wait;
    loop {
        let pids = pids_with_arg(&conf.to_string_lossy());
        if pids.len() == 1 {
            return pids[0];
        }
        assert!(
            Instant::now() < deadline,
            "expected one process running {}, found {pids:?}",
            conf.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The name with id 65534 in `db`, /etc/passwd or /etc/group (`nobody`/`nogroup` on
/// Debian), else the number itself: what the privilege-drop tests write as setuid/setgid.
pub fn name_of_65534(db: &str) -> String {
    std::fs::read_to_string(db)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == "65534").then(|| f[0].to_string())
        })
        .next()
        .unwrap_or_else(|| "65534".to_string())
}

/// Makes this test process the reaper of orphaned descendants, so a daemon that forked away
/// from its parent becomes our child: `waitpid` then gives its exit status and no zombie is
/// left behind. Process-wide; harmless to call more than once.
pub fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) only sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// Waits up to `timeout` for `pid` to end. Returns `Ok(Some(status))` (a raw wait status)
/// when the process was our child (see [`become_subreaper`]), `Ok(None)` when it is gone but
/// its status is not ours to collect, `Err(())` when it is still running at the deadline.
pub fn wait_pid_exit(pid: i32, timeout: Duration) -> Result<Option<i32>, ()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on a specific pid with a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Ok(Some(status));
        }
        if r < 0 && !pid_alive(pid) {
            // Not our child (ECHILD) and gone.
            return Ok(None);
        }
        if Instant::now() >= deadline {
            return Err(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Describes a raw wait status.
pub fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status:#x}")
    }
}

/// Owns the daemonised processes of one test: on drop (also while panicking) every process
/// whose command line holds the test's unique config path, plus any pid registered with
/// [`DaemonGuard::track`], gets SIGTERM, then SIGKILL after 3 s, and is reaped if it is ours.
pub struct DaemonGuard {
    conf: PathBuf,
    pids: Vec<i32>,
}

impl DaemonGuard {
    pub fn new(conf: &Path) -> DaemonGuard {
        DaemonGuard {
            conf: conf.to_path_buf(),
            pids: Vec::new(),
        }
    }

    pub fn track(&mut self, pid: i32) {
        if !self.pids.contains(&pid) {
            self.pids.push(pid);
        }
    }

    /// Every live process of this test.
    pub fn live(&self) -> Vec<i32> {
        let mut all: Vec<i32> = self
            .pids
            .iter()
            .copied()
            .filter(|p| pid_alive(*p))
            .collect();
        for p in pids_with_arg(&self.conf.to_string_lossy()) {
            if !all.contains(&p) {
                all.push(p);
            }
        }
        all
    }
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        for pid in self.live() {
            // SAFETY: kill/waitpid on a pid this test started (found by its unique config).
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            if wait_pid_exit(pid, Duration::from_secs(3)).is_err() {
                eprintln!("[process] daemon {pid} ignored SIGTERM; sending SIGKILL");
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
                let _ = wait_pid_exit(pid, Duration::from_secs(2));
            }
        }
    }
}
