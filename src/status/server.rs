//! The status endpoint's sockets and threads: `bind` (at startup, before privileges are
//! dropped), then `Bound::serve`, which runs one thread ("status") that accepts and reads
//! request heads for every connection at once with `poll`, within `http::DEADLINE`, and
//! hands each complete GET to a short-lived worker thread that calls the handler and
//! writes the answer. `Server::stop` (or dropping it) ends the thread and closes the
//! listener; a Unix socket's file goes with it.
//!
//! Bounds, so that a flood of status connections costs the process a fixed amount: at
//! most `MAX_PENDING` connections being read (the oldest is closed for a new one, so idle
//! connections cannot lock out a real client), at most `MAX_WORKERS` answers being made
//! (more GETs are answered 503 at once). Idle connections take no thread. None of this
//! counts against the sessions' caps: these are not sessions.
//!
//! Must not: touch sessions, block the data path, or wait on a client past its deadline.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::http::{self, Head, Refusal, TimedStream};
use super::Handler;
use crate::config::types::StatusAddress;
use crate::wake::{self, WakeFd};

/// Connections whose request is still being read.
pub const MAX_PENDING: usize = 64;
/// Answers being made at once (handler calls and their writes).
pub const MAX_WORKERS: usize = 8;
/// After a refusal or an answer, how long what the client still sends is read and dropped
/// (`http::drain_until`).
const LINGER: Duration = Duration::from_secs(1);
/// Back-off after EMFILE and the like, doubling up to a second, so that a full descriptor
/// table does not turn the accept thread into a busy loop.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Why `status = ADDRESS` could not be bound.
#[derive(Debug)]
pub enum BindError {
    /// HOST did not resolve (or to nothing).
    Resolve {
        address: String,
        error: io::Error,
    },
    Bind {
        address: String,
        error: io::Error,
    },
    /// The Unix path is taken by something that is not a socket: it is left alone.
    NotASocket(PathBuf),
    /// The Unix socket answers: another process serves it.
    InUse(PathBuf),
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::Resolve { address, error } => {
                write!(f, "Status endpoint {address}: cannot resolve: {error}")
            }
            BindError::Bind { address, error } => write!(f, "Status endpoint {address}: {error}"),
            BindError::NotASocket(path) => write!(
                f,
                "Status endpoint {}: exists and is not a socket (not removed)",
                path.display()
            ),
            BindError::InUse(path) => write!(
                f,
                "Status endpoint {}: another process is listening on it",
                path.display()
            ),
        }
    }
}

impl std::error::Error for BindError {}

enum Socket {
    Tcp(TcpListener),
    /// `inode` is the (device, inode) of the socket file as bound: on drop, the file is
    /// removed only if it is still that one.
    Unix {
        listener: UnixListener,
        path: PathBuf,
        inode: (u64, u64),
    },
}

/// The bound, not yet served, status socket.
pub struct Bound {
    socket: Socket,
    shown: String,
    warning: Option<String>,
}

/// Binds `address`: TCP (HOST resolved now; no host is 127.0.0.1) or a Unix socket (a
/// stale socket file is replaced, anything else is refused; mode 0660). Blocks only for
/// the name lookup.
pub fn bind(address: &StatusAddress) -> Result<Bound, BindError> {
    match address {
        StatusAddress::Tcp { host, port } => bind_tcp(host.as_deref(), *port, address),
        StatusAddress::Unix(path) => bind_unix(path.clone()),
    }
}

fn bind_tcp(host: Option<&str>, port: u16, written: &StatusAddress) -> Result<Bound, BindError> {
    let address = written.to_string();
    let candidates: Vec<SocketAddr> = match host {
        None => vec![SocketAddr::from(([127, 0, 0, 1], port))],
        Some(host) => (host, port)
            .to_socket_addrs()
            .map_err(|error| BindError::Resolve {
                address: address.clone(),
                error,
            })?
            .collect(),
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for candidate in candidates {
        match TcpListener::bind(candidate) {
            Ok(listener) => {
                let local = listener.local_addr().unwrap_or(candidate);
                let warning = (!local.ip().is_loopback()).then(|| {
                    format!(
                        "status endpoint on {local} is not loopback: anyone who can reach it reads the metrics and the session list"
                    )
                });
                return Ok(Bound {
                    socket: Socket::Tcp(listener),
                    shown: local.to_string(),
                    warning,
                });
            }
            Err(e) => last = e,
        }
    }
    Err(match host {
        Some(_) if last.kind() == io::ErrorKind::NotFound => BindError::Resolve {
            address,
            error: last,
        },
        _ => BindError::Bind {
            address,
            error: last,
        },
    })
}

fn bind_unix(path: PathBuf) -> Result<Bound, BindError> {
    let failed = |error| BindError::Bind {
        address: path.display().to_string(),
        error,
    };
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if !meta.file_type().is_socket() => return Err(BindError::NotASocket(path)),
        Ok(_) if someone_listens(&path) => return Err(BindError::InUse(path)),
        // A socket nobody listens on: left by a process that ended without removing it.
        Ok(_) => std::fs::remove_file(&path).map_err(failed)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(e)),
    }
    let listener = UnixListener::bind(&path).map_err(failed)?;
    let meta = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))
        .and_then(|()| std::fs::symlink_metadata(&path));
    let meta = match meta {
        Ok(meta) => meta,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(failed(e));
        }
    };
    Ok(Bound {
        shown: path.display().to_string(),
        socket: Socket::Unix {
            listener,
            path,
            inode: (meta.dev(), meta.ino()),
        },
        warning: None,
    })
}

/// Whether a process accepts on the socket at `path`. The connect does not block: a live
/// listener with a full backlog (EAGAIN) is in use too; only "refused" means stale.
fn someone_listens(path: &std::path::Path) -> bool {
    let attempt = socket2::Socket::new(
        socket2::Domain::UNIX,
        socket2::Type::STREAM.nonblocking(),
        None,
    )
    .and_then(|socket| socket.connect(&socket2::SockAddr::unix(path)?));
    match attempt {
        Ok(()) => true,
        Err(e) => e.raw_os_error() == Some(libc::EAGAIN),
    }
}

impl Bound {
    /// The address as bound (`127.0.0.1:9101`, a path), for logs.
    pub fn local_addr(&self) -> &str {
        &self.shown
    }

    /// Set when the endpoint listens beyond loopback: the caller logs it as a warning.
    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }

    fn fd(&self) -> RawFd {
        match &self.socket {
            Socket::Tcp(l) => l.as_raw_fd(),
            Socket::Unix { listener, .. } => listener.as_raw_fd(),
        }
    }

    fn set_nonblocking(&self) -> io::Result<()> {
        match &self.socket {
            Socket::Tcp(l) => l.set_nonblocking(true),
            Socket::Unix { listener, .. } => listener.set_nonblocking(true),
        }
    }

    fn accept(&self) -> io::Result<Stream> {
        match &self.socket {
            Socket::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            Socket::Unix { listener, .. } => listener.accept().map(|(s, _)| Stream::Unix(s)),
        }
    }

    /// Starts the accept thread; `handler` answers every GET for one of `http::PATHS`, on
    /// a worker thread. The thread owns the socket from here on.
    pub fn serve(self, handler: Handler) -> io::Result<Server> {
        self.set_nonblocking()?;
        let stop = Arc::new(WakeFd::new()?);
        let thread_stop = Arc::clone(&stop);
        let shown = self.shown.clone();
        let thread = std::thread::Builder::new()
            .name("status".into())
            .stack_size(128 * 1024)
            .spawn(move || serve_loop(&self, &thread_stop, &handler))?;
        Ok(Server {
            stop,
            thread: Some(thread),
            shown,
        })
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        if let Socket::Unix { path, inode, .. } = &self.socket {
            // Someone may have replaced the file since (another instance): leave theirs.
            let ours = std::fs::symlink_metadata(path)
                .map(|m| (m.dev(), m.ino()) == *inode)
                .unwrap_or(false);
            if ours {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// The running endpoint. Dropping it stops it as `stop` does.
pub struct Server {
    stop: Arc<WakeFd>,
    thread: Option<JoinHandle<()>>,
    shown: String,
}

impl Server {
    pub fn local_addr(&self) -> &str {
        &self.shown
    }

    /// Ends the accept thread (waking it), closes the listener and the connections still
    /// being read, and removes a Unix socket's file. Answers already handed to a worker
    /// finish on their own, within their deadline.
    pub fn stop(self) {}
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.kick();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An accepted connection.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(on),
            Stream::Unix(s) => s.set_nonblocking(on),
        }
    }

    fn shutdown_write(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TimedStream for Stream {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_timeouts(timeout),
            Stream::Unix(s) => s.set_timeouts(timeout),
        }
    }
}

/// Where a connection the accept thread holds is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Its request head is being read.
    Reading,
    /// It was refused; what it still sends is dropped until it closes or the deadline.
    Draining,
}

struct Pending {
    stream: Stream,
    head: Vec<u8>,
    deadline: Instant,
    phase: Phase,
}

/// What one read did to a pending connection.
enum Step {
    Keep,
    Close,
    Answer(&'static str),
}

impl Pending {
    fn new(stream: Stream) -> Pending {
        Pending {
            stream,
            head: Vec::new(),
            deadline: Instant::now() + http::DEADLINE,
            phase: Phase::Reading,
        }
    }

    /// Sends a refusal (non-blocking: it is small and the socket's buffer is empty) and
    /// starts draining.
    fn refuse(&mut self, refusal: Refusal) {
        let _ = self.stream.write(&refusal.encode());
        self.stream.shutdown_write();
        self.phase = Phase::Draining;
        self.deadline = self.deadline.min(Instant::now() + LINGER);
    }

    /// Reads what is there (the socket is non-blocking) and judges the head. A draining
    /// client gets a few reads per turn, so that one sending without pause cannot keep
    /// the thread from the others and from their deadlines.
    fn step(&mut self) -> Step {
        let mut buf = [0u8; 2048];
        let mut drain_turns = 16;
        loop {
            let room = match self.phase {
                Phase::Reading => buf.len().min(http::MAX_HEAD - self.head.len()),
                Phase::Draining => buf.len(),
            };
            match self.stream.read(&mut buf[..room]) {
                Ok(0) => return Step::Close,
                Ok(n) if self.phase == Phase::Reading => self.head.extend_from_slice(&buf[..n]),
                Ok(_) if drain_turns == 0 => return Step::Keep,
                Ok(_) => {
                    drain_turns -= 1;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Keep,
                Err(_) => return Step::Close,
            }
            match http::judge(&self.head) {
                Head::Partial => {}
                Head::Get(path) => return Step::Answer(path),
                Head::Refuse(refusal) => {
                    self.refuse(refusal);
                    return Step::Keep;
                }
            }
        }
    }
}

/// The accept thread: one `poll` over the stop signal, the listener and every pending
/// connection, woken at the nearest deadline.
fn serve_loop(bound: &Bound, stop: &WakeFd, handler: &Handler) {
    let workers = Arc::new(AtomicUsize::new(0));
    let mut pending: Vec<Pending> = Vec::new();
    let mut accept_after: Option<Instant> = None;
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let now = Instant::now();
        pending.retain_mut(|p| {
            if p.deadline > now {
                return true;
            }
            if p.phase == Phase::Reading {
                let _ = p.stream.write(&Refusal::Timeout.encode());
            }
            false
        });
        let accepting = accept_after.is_none_or(|t| t <= now);
        let mut fds = vec![
            wake::pollfd(stop.as_raw_fd(), libc::POLLIN),
            // A negative fd is skipped by poll: not accepting while backing off.
            wake::pollfd(if accepting { bound.fd() } else { -1 }, libc::POLLIN),
        ];
        fds.extend(
            pending
                .iter()
                .map(|p| wake::pollfd(p.stream.as_raw_fd(), libc::POLLIN)),
        );
        let wake_at = pending
            .iter()
            .map(|p| p.deadline)
            .chain(accept_after.filter(|_| !accepting))
            .min();
        let timeout = wake_at.map(|t| t.saturating_duration_since(now));
        if wake::poll(&mut fds, timeout).is_err() {
            // Only EINVAL or ENOMEM: nothing a retry at once would change.
            std::thread::sleep(ACCEPT_BACKOFF_MIN);
            continue;
        }
        if fds[0].revents != 0 {
            return;
        }
        // Connections first (their order matches `fds` until the list changes).
        let ready: Vec<bool> = fds[2..].iter().map(|f| f.revents != 0).collect();
        for (mut p, was_ready) in std::mem::take(&mut pending).into_iter().zip(ready) {
            if !was_ready {
                pending.push(p);
                continue;
            }
            match p.step() {
                Step::Keep => pending.push(p),
                Step::Close => {}
                Step::Answer(path) => match answer(p.stream, p.deadline, path, handler, &workers) {
                    Ok(()) => {}
                    Err(stream) => {
                        p.stream = stream;
                        p.refuse(Refusal::Busy);
                        pending.push(p);
                    }
                },
            }
        }
        if accepting && fds[1].revents != 0 {
            accept_all(bound, &mut pending, &mut accept_after, &mut backoff);
        }
    }
}

fn accept_all(
    bound: &Bound,
    pending: &mut Vec<Pending>,
    accept_after: &mut Option<Instant>,
    backoff: &mut Duration,
) {
    // Bounded per round, so that a flood cannot keep the loop from its deadlines.
    for _ in 0..MAX_PENDING {
        match bound.accept() {
            Ok(stream) => {
                *accept_after = None;
                *backoff = ACCEPT_BACKOFF_MIN;
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                if pending.len() >= MAX_PENDING {
                    // The oldest has had the longest to send its request.
                    pending.remove(0);
                }
                pending.push(Pending::new(stream));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS, ENOMEM: wait before trying again. Errors
                // about one connection (ECONNABORTED) end only this round.
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                ) {
                    *accept_after = Some(Instant::now() + *backoff);
                    *backoff = (*backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
                return;
            }
        }
    }
}

/// Frees a worker's slot when its thread ends, however it ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Hands `stream` to a worker thread that answers `path`; gives it back (to be answered
/// 503) when `MAX_WORKERS` are at work or no thread can be started.
fn answer(
    stream: Stream,
    deadline: Instant,
    path: &'static str,
    handler: &Handler,
    workers: &Arc<AtomicUsize>,
) -> Result<(), Stream> {
    if workers.fetch_add(1, Ordering::SeqCst) >= MAX_WORKERS {
        workers.fetch_sub(1, Ordering::SeqCst);
        return Err(stream);
    }
    let slot = Slot(Arc::clone(workers));
    let handler = Arc::clone(handler);
    // The thread gets the socket through this cell, so that a failed spawn gives it back.
    let cell = Arc::new(std::sync::Mutex::new(Some(stream)));
    let theirs = Arc::clone(&cell);
    let spawned = std::thread::Builder::new()
        .name("status request".into())
        // The handler fills and serialises a document: more than the accept thread needs.
        .stack_size(256 * 1024)
        .spawn(move || {
            let _slot = slot;
            let taken = theirs.lock().map(|mut s| s.take());
            let Ok(Some(mut stream)) = taken else {
                return;
            };
            let response = handler(path);
            if stream.set_nonblocking(false).is_err() {
                return;
            }
            if http::write_until(&mut stream, &http::encode(&response), deadline).is_ok() {
                stream.shutdown_write();
                http::drain_until(&mut stream, deadline.min(Instant::now() + LINGER));
            }
        });
    match spawned {
        Ok(_) => Ok(()),
        // The closure (and with it the slot) was dropped unrun: the socket is still here.
        Err(_) => match cell.lock().map(|mut s| s.take()) {
            Ok(Some(stream)) => Err(stream),
            _ => Ok(()),
        },
    }
}
