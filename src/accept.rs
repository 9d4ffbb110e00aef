//! The listener thread of each service: it polls the service's listening sockets and its
//! stop signal, accepts, and hands each connection to a session thread
//! (`session::spawn`). An exec+connect service (no `accept`) runs its program instead.
//!
//! `pauseWhenDown`: while the service's `health` is not open the thread does not accept; it
//! waits for the far side in `resume` (probing, holding the backlog) and, once open again,
//! serves what was held first. A socket that cannot listen again (listen() refused, or
//! accept() says it is not listening) keeps its pause token and is retried with the probe
//! back-off (`listen_all`).
//!
//! Owns the thread and its stop signal; never touches a session's sockets after handing
//! them over.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::health;
use crate::listeners::{BoundService, Listener};
use crate::net;
use crate::resume::{wait_for_far_side, Release};
use crate::service::{resolve_all, ServiceCtx};
use crate::session::{spawn_session, spawn_session_here};
use crate::wake::{self, WakeFd};

/// One service's running listener thread.
pub struct RunningService {
    pub ctx: Arc<ServiceCtx>,
    pub listeners: Vec<Arc<Listener>>,
    stop: Arc<WakeFd>,
    thread: Option<JoinHandle<()>>,
}

impl RunningService {
    /// Stops accepting and returns the listening sockets (still open, for a reload to
    /// keep). Live sessions are not touched.
    pub fn stop(mut self) -> Vec<Arc<Listener>> {
        self.stop.kick();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        std::mem::take(&mut self.listeners)
    }
}

/// Starts one listener thread per service.
pub fn start(services: Vec<BoundService>) -> io::Result<Vec<RunningService>> {
    let mut running = Vec::new();
    for service in services {
        let stop = Arc::new(WakeFd::new()?);
        let thread_stop = Arc::clone(&stop);
        let ctx = Arc::clone(&service.ctx);
        let listeners = service.listeners.clone();
        let exec_connect = service.listeners.is_empty();
        let thread = std::thread::Builder::new()
            .name(format!("service {}", service.ctx.opts.name))
            .stack_size(256 * 1024)
            .spawn(move || {
                if exec_connect {
                    exec_connect_loop(&service.ctx, &thread_stop);
                } else {
                    accept_loop(&service, &thread_stop);
                }
            })?;
        running.push(RunningService {
            ctx,
            listeners,
            stop,
            // An exec+connect session may run for ever: stopping must not wait for it.
            thread: (!exec_connect).then_some(thread),
        });
    }
    Ok(running)
}

/// An exec+connect service (`exec` and `connect`, no `accept`): the program is one side,
/// the target the other, for one session; with `retry` it starts again after the delay,
/// until the process stops.
fn exec_connect_loop(ctx: &Arc<ServiceCtx>, stop: &WakeFd) {
    loop {
        let started = match ctx.program() {
            Some(program) => crate::exec::spawn(&program, &crate::exec::PeerInfo::default()),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no exec program",
            )),
        };
        match started {
            Ok(program) => spawn_session_here(ctx, program, "local program".into()),
            Err(e) => log_err!("Service [{}]: exec: {e}", ctx.opts.name),
        }
        let Some(delay) = ctx.opts.retry else {
            log_info!("Service [{}] finished (no retry)", ctx.opts.name);
            return;
        };
        let mut fds = [wake::pollfd(stop.as_raw_fd(), libc::POLLIN)];
        if matches!(wake::poll(&mut fds, Some(delay)), Ok(n) if n > 0) {
            return;
        }
        log_info!("Service [{}]: retrying", ctx.opts.name);
    }
}

/// Back-off after EMFILE/ENFILE, doubling up to a second, so that a full fd table does
/// not turn into a busy loop.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

fn accept_loop(service: &BoundService, stop: &WakeFd) {
    let name = &service.ctx.opts.name;
    let health = &service.ctx.health;
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut relisten = Relisten::default();
    let mut lookup = crate::probe::Lookup::new(service.ctx.opts.connect.clone(), resolve_all);
    // What a pause held is served by `release`, starting with a canary; this thread may
    // start with held connections (a reload handed them over), so it starts there too.
    // The thread before this one (a reload) switched `watch` off as it ended (`Unwatch`).
    let mut release = Release::Canary;
    /// A canary's wait ends with the thread (SIGHUP, SIGTERM): sessions stop kicking.
    struct Unwatch<'a>(&'a crate::health::Health);
    impl Drop for Unwatch<'_> {
        fn drop(&mut self) {
            self.0.watch(false);
        }
    }
    let _unwatch = Unwatch(health);
    loop {
        if service.ctx.pauses() && !health.is_open() {
            if !wait_for_far_side(service, stop, &mut lookup) {
                return;
            }
            release.reset(health);
        }
        // Accepting (or not pausing, any more after a reload that turned it off): every
        // socket listens; the held connections go first, oldest first, as `release` allows.
        let retry_in = listen_all(service, &mut relisten);
        let held_in = release.step(service);
        if service.ctx.pauses() && !health.is_open() {
            continue;
        }
        let retry_in = match (retry_in, held_in) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let active: Vec<&Arc<Listener>> =
            service.listeners.iter().filter(|l| l.listening()).collect();
        let mut fds: Vec<libc::pollfd> = active
            .iter()
            .map(|l| wake::pollfd(l.socket.as_raw_fd(), libc::POLLIN))
            .collect();
        let listeners = fds.len();
        fds.push(wake::pollfd(stop.as_raw_fd(), libc::POLLIN));
        if let Some(fd) = health.wake_fd() {
            fds.push(wake::pollfd(fd, libc::POLLIN));
        }
        if let Err(e) = wake::poll(&mut fds, retry_in) {
            log_err!("Service [{name}]: poll: {e}");
            std::thread::sleep(backoff);
            continue;
        }
        if fds[listeners].revents != 0 {
            return;
        }
        if fds.get(listeners + 1).is_some_and(|p| p.revents != 0) {
            health.drain();
        }
        for (i, listener) in active.iter().enumerate() {
            if fds[i].revents == 0 {
                continue;
            }
            // A session may have just reported the far side down: stop accepting at once.
            if service.ctx.pauses() && !health.is_open() {
                break;
            }
            match listener.socket.accept() {
                Ok((conn, peer)) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    spawn_session(&service.ctx, conn, peer, None);
                }
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && listener.lost_listening() => {
                    log_notice!(
                        "Service [{name}]: {} is not listening (accept: EINVAL): listening again",
                        listener.bound
                    );
                }
                Err(e) => {
                    log_err!(
                        "Service [{name}]: accept: {} ({})",
                        net::connect::describe(&e),
                        e.raw_os_error().unwrap_or(0)
                    );
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }
    }
}

/// Retrying listen() on sockets that could not listen again after a pause (another socket
/// took the port meanwhile, say): with the probe back-off, the first failure logged as an
/// error, the rest at debug, the recovery as a notice.
#[derive(Default)]
struct Relisten {
    /// When to try next; `None` while every socket listens.
    next: Option<Instant>,
    delay: Duration,
}

/// Makes every socket of `service` listen. Returns how long the caller may wait before
/// calling again, if some could not (so its poll wakes up for the retry).
fn listen_all(service: &BoundService, r: &mut Relisten) -> Option<Duration> {
    let name = &service.ctx.opts.name;
    let now = Instant::now();
    if let Some(next) = r.next {
        if now < next {
            return Some(next - now);
        }
    }
    let retrying = r.next.is_some();
    let mut failed = false;
    for l in &service.listeners {
        match l.resume() {
            Ok(true) if retrying => log_notice!("Service [{name}]: listening on {} again", l.bound),
            Ok(_) => {}
            Err(e) if retrying => {
                failed = true;
                log_debug!("Service [{name}]: still cannot listen on {}: {e}", l.bound);
            }
            Err(e) => {
                failed = true;
                log_err!(
                    "Service [{name}]: cannot listen on {} again: {e} (retrying)",
                    l.bound
                );
            }
        }
    }
    if !failed {
        *r = Relisten::default();
        return None;
    }
    let delay = if retrying {
        (r.delay * 2).min(health::PROBE_BACKOFF_MAX)
    } else {
        health::PROBE_BACKOFF_MIN
    };
    *r = Relisten {
        next: Some(now + delay),
        delay,
    };
    Some(delay)
}
