//! Services at run time: building each `[section]` into a `ServiceCtx` (TLS context loaded,
//! addresses resolved), binding its listeners, and one listener thread per service that
//! accepts and hands each connection to a session thread.
//!
//! Owns listener sockets and the stop signal; never touches a session's sockets after
//! handing them over. Binding happens before any thread exists (so the caller can fork).
//!
//! `pauseWhenDown`: the listener thread also carries out its service's `health` state:
//! * starting: the sockets are bound but do not listen yet (connects are refused, no
//!   client lands in a backlog a failed probe would reset); the first probe runs at once
//!   and they listen the moment it answers;
//! * checking (after one abnormal session end): no accept, but the sockets keep listening,
//!   so connections wait in the backlog for the length of one probe and are served when it
//!   answers (the usual case: a failed request of a live backend refuses nobody);
//! * paused (a probe failed, or a connect did): the sockets stop listening
//!   (`ListenSocket::pause`, connects refused), the connections already in the backlog are
//!   held (as far as the connection cap has room) and the far side is probed with back-off;
//! * reopened: the first connection served is a canary, served alone until a session
//!   reaches the far side; then the held ones, one at a time while the service stays open.
//!
//! A socket that cannot listen again (listen() refused, or accept() says it is not
//! listening) keeps its pause token and is retried with the probe back-off.

use crate::net::listen::{ListenSocket, Paused};
use crate::net::{Addr, Stream};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::accounting::{registry, HeldSlot, ServiceSlots, SessionGuard, TooManyClients};
use crate::config::{Config, ConfigError, ServiceOptions};
use crate::health::{self, Health, Probe, Trigger, Verdict};
use crate::net::{self, Endpoint};
use crate::session::Completion;
use crate::tls::{self, ServiceTls, TlsSetupError, VirtualHost};
use crate::wake::{self, WakeFd};

/// Everything a session of one service needs, shared read-only by its sessions.
pub struct ServiceCtx {
    pub opts: ServiceOptions,
    pub tls: ServiceTls,
    /// Their addresses resolved at startup; `None` with `delay = yes` or when a target
    /// did not resolve then, so that each connection resolves again (stunnel's "delaying
    /// DNS lookup").
    pub connect_addrs: Option<Vec<Addr>>,
    /// Listening addresses (before binding; port 0 stays 0 here).
    pub accept_addrs: Vec<Addr>,
    /// Client side: the SNI name to send, if any.
    pub sni: Option<String>,
    /// `failover = rr`: where the next connection starts in the target list.
    next_target: AtomicUsize,
    /// Server side: sections that are virtual hosts of this one (`sni = THIS:PATTERN`).
    pub virtual_hosts: Vec<(String, Arc<ServiceCtx>)>,
    /// This service's live sessions against its `maxConnections`.
    pub slots: Arc<ServiceSlots>,
    /// Whether the far side answers (`pauseWhenDown`); shared by every configuration of
    /// the service's name, so it outlives a reload.
    pub health: Arc<Health>,
}

/// Why the process could not start. Each displays as the one line stunnel would print.
#[derive(Debug)]
pub enum StartupError {
    Config(ConfigError),
    Tls {
        service: String,
        error: TlsSetupError,
    },
    Resolve {
        service: String,
        what: &'static str,
        detail: String,
    },
    Bind {
        service: String,
    },
    Unsupported(String),
    Io {
        what: String,
        error: io::Error,
    },
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartupError::Config(e) => write!(f, "{e}"),
            StartupError::Tls { service, error } => {
                write!(
                    f,
                    "Service [{service}]: Failed to initialize TLS context: {error}"
                )
            }
            StartupError::Resolve {
                service,
                what,
                detail,
            } => write!(
                f,
                "Service [{service}]: Cannot resolve {what} target: {detail}"
            ),
            StartupError::Bind { service } => write!(f, "Binding service [{service}] failed"),
            StartupError::Unsupported(what) => write!(f, "{what}"),
            StartupError::Io { what, error } => write!(f, "{what}: {error}"),
        }
    }
}

impl std::error::Error for StartupError {}

impl From<ConfigError> for StartupError {
    fn from(e: ConfigError) -> Self {
        StartupError::Config(e)
    }
}

/// Builds every service: TLS contexts (certificates and keys are read here unless
/// `load_files` is false) and addresses.
pub fn build(config: &Config, load_files: bool) -> Result<Vec<Arc<ServiceCtx>>, StartupError> {
    if config.is_inetd_mode() {
        // The global part is the one service, served on stdin/stdout (inetd mode).
        let mut opts = config.defaults.clone();
        opts.name = config.global.service_name.clone();
        return Ok(vec![Arc::new(build_service(
            &opts,
            load_files,
            Vec::new(),
        )?)]);
    }
    // Virtual hosts first: their contexts go into their primary's SNI callback.
    let mut virtual_hosts: Vec<(String, String, Arc<ServiceCtx>)> = Vec::new();
    for opts in &config.services {
        if let Some(Ok((primary, pattern))) = opts.server_sni() {
            let ctx = Arc::new(build_service(opts, load_files, Vec::new())?);
            virtual_hosts.push((primary.to_string(), pattern.to_string(), ctx));
        }
    }
    let mut services = Vec::new();
    for opts in config.services.iter().filter(|o| o.server_sni().is_none()) {
        let mine: Vec<(String, Arc<ServiceCtx>)> = virtual_hosts
            .iter()
            .filter(|(primary, _, _)| *primary == opts.name)
            .map(|(_, pattern, ctx)| (pattern.clone(), Arc::clone(ctx)))
            .collect();
        services.push(Arc::new(build_service(opts, load_files, mine)?));
    }
    Ok(services)
}

fn build_service(
    opts: &ServiceOptions,
    load_files: bool,
    virtual_hosts: Vec<(String, Arc<ServiceCtx>)>,
) -> Result<ServiceCtx, StartupError> {
    let resolve_error = |what: &'static str, detail: String| StartupError::Resolve {
        service: opts.name.clone(),
        what,
        detail,
    };
    let mut accept_addrs = Vec::new();
    for value in &opts.accept {
        let addrs = Endpoint::parse(value)
            .and_then(|e| e.resolve_accept())
            .map_err(|detail| resolve_error("accept", detail))?;
        accept_addrs.extend(addrs);
    }
    // The default SNI name: the host of protocolHost (the real destination behind a
    // proxy), else of the first connect target.
    let first_host = opts
        .protocol_host
        .iter()
        .chain(opts.connect.first())
        .find_map(|value| {
            Endpoint::parse(value)
                .ok()
                .and_then(|e| e.host().map(str::to_string))
        });
    let connect_addrs = if opts.delay {
        None
    } else {
        match resolve_all(&opts.connect) {
            Ok(addrs) => Some(addrs),
            Err(detail) => {
                log_err!("{detail}");
                log_info!("Cannot resolve connect target - delaying DNS lookup");
                None
            }
        }
    };
    let tls_hosts = virtual_hosts
        .iter()
        .map(|(pattern, ctx)| VirtualHost::new(pattern, &ctx.tls))
        .collect();
    let tls =
        tls::build_context(opts, load_files, tls_hosts).map_err(|error| StartupError::Tls {
            service: opts.name.clone(),
            error,
        })?;
    if opts.client && !opts.verify.any_check() && opts.psk_secrets.is_none() {
        log_warning!(
            "Service [{}] needs authentication to prevent MITM attacks: the client verifies no server certificate (set verifyChain or verifyPeer with CAfile)",
            opts.name
        );
    }
    Ok(ServiceCtx {
        sni: client_sni(opts, first_host),
        opts: opts.clone(),
        tls,
        connect_addrs,
        accept_addrs,
        // stunnel starts round robin at a random target, so that restarted clients do
        // not all hit the first server.
        next_target: AtomicUsize::new(random_index()),
        virtual_hosts,
        slots: Arc::new(ServiceSlots::new(opts.max_connections)),
        health: health::for_service(&opts.name),
    })
}

/// Every address of the `connect` values, in order.
pub fn resolve_all(values: &[String]) -> Result<Vec<Addr>, String> {
    let mut addrs = Vec::new();
    for value in values {
        addrs.extend(Endpoint::parse(value).and_then(|e| e.resolve_connect())?);
    }
    Ok(addrs)
}

impl ServiceCtx {
    /// Whether this service pauses while its far side is down: `pauseWhenDown = yes` and a
    /// fixed `connect` target behind a listener. Not for `exec` (a local program), not
    /// where each client picks the target (`transparent = destination`, SOCKS), not for
    /// inetd mode or exec+connect services (nothing to refuse).
    pub fn pauses(&self) -> bool {
        let o = &self.opts;
        o.pause_when_down
            && !o.connect.is_empty()
            && o.exec.is_none()
            && !o.accept.is_empty()
            && !o.transparent_destination
            && o.protocol
                .and_then(crate::protocol::find)
                .is_none_or(|p| p.server_chooses_target.is_none())
    }

    /// What a session of this service saw of its far side (ignored unless it `pauses`).
    pub fn far_side_news(&self, trigger: Trigger) {
        if self.pauses() {
            self.health.report(trigger);
        }
    }

    /// A session of this service reached its far side (connected; in client mode, its TLS
    /// handshake done): what a listener resuming after a pause waits for before it serves
    /// more than one connection.
    pub fn far_side_reached(&self) {
        if self.pauses() {
            self.health.reached();
        }
    }

    /// After a server handshake: the virtual host the client's SNI name selected, if any
    /// (the same match the ClientHello callback made).
    pub fn virtual_host_for(&self, ssl: &openssl::ssl::SslRef) -> Option<&Arc<ServiceCtx>> {
        let name = ssl.servername(openssl::ssl::NameType::HOST_NAME)?;
        self.virtual_hosts
            .iter()
            .find(|(pattern, _)| tls::sni_matches(pattern, name))
            .map(|(_, ctx)| ctx)
    }

    /// The addresses to try for a new connection: those resolved at startup, or a fresh
    /// lookup if startup could not resolve them. `None` (logged) if none resolve now.
    /// With `failover = rr` (and no `delay`, which forces prio as in stunnel) each call
    /// starts one target further.
    pub fn target_addrs(&self) -> Option<Vec<Addr>> {
        let mut addrs = match &self.connect_addrs {
            Some(addrs) => addrs.clone(),
            None => match resolve_all(&self.opts.connect) {
                Ok(addrs) => addrs,
                Err(detail) => {
                    log_err!("{detail}");
                    return None;
                }
            },
        };
        if self.opts.failover_rr && !self.opts.delay && !addrs.is_empty() {
            let start = self.next_target.fetch_add(1, Ordering::Relaxed) % addrs.len();
            addrs.rotate_left(start);
        }
        Some(addrs)
    }
}

fn random_index() -> usize {
    let mut bytes = [0u8; 8];
    let _ = openssl::rand::rand_bytes(&mut bytes);
    usize::from_ne_bytes(bytes) % 1024
}

/// The SNI name a client sends: `sni` if set (empty: none), else the host of
/// `protocolHost` or of the first `connect` when it is a name (an IP literal is not a
/// valid SNI name), else none.
fn client_sni(opts: &ServiceOptions, first_host: Option<String>) -> Option<String> {
    if !opts.client {
        return None;
    }
    match &opts.sni {
        Some(name) if name.is_empty() => None,
        Some(name) => Some(name.clone()),
        None => first_host.filter(|h| h.parse::<std::net::IpAddr>().is_err()),
    }
}

/// Port 0 means "any free port": a new one on every bind, so never the same socket.
fn reusable_address(addr: &Addr) -> bool {
    !matches!(addr, Addr::Inet(inet) if inet.port() == 0)
}

/// A bound listening socket, shared so that a reload can hand it to the new service
/// without closing it (no connection is refused during a reload). Dropped when no service
/// uses it any more; a Unix socket's file goes with it, as in stunnel.
pub struct Listener {
    pub socket: ListenSocket,
    /// The address as configured (port 0 stays 0): what a reload matches on.
    pub configured: Addr,
    /// The address the kernel gave it.
    pub bound: Addr,
    /// Set while it does not listen or is not accepted from (`pauseWhenDown`: paused, or
    /// bound but not yet listening); kept across a reload with the socket, and kept when
    /// listen() fails, so that it is retried.
    pub paused: Mutex<Option<Paused>>,
    /// Connections taken out of the backlog when it paused (`ListenSocket::pause`), oldest
    /// first, served first when the service accepts again. Handed over with the listener
    /// by a reload that keeps its address; reset (and logged) with it if the process stops
    /// or a reload removes the service meanwhile, as the kernel would reset its backlog.
    held: Mutex<VecDeque<Held>>,
}

/// A connection a paused listener holds.
struct Held {
    conn: Stream,
    peer: String,
    /// Its receive buffer before it was shrunk (`net::listen::shrink_receive_buffer`).
    receive_buffer: Option<usize>,
    /// Counts it against the connection cap while it waits.
    _slot: HeldSlot,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Listener {
    fn new(socket: ListenSocket, configured: Addr, bound: Addr, paused: Option<Paused>) -> Self {
        Listener {
            socket,
            configured,
            bound,
            paused: Mutex::new(paused),
            held: Mutex::new(VecDeque::new()),
        }
    }

    /// Stops listening (see `ListenSocket::pause`), holding what waited in the backlog as
    /// far as the connection cap has room (`Registry::hold`): held connections keep a
    /// descriptor each, and a reconnect storm during a pause must not fill the table.
    fn pause(&self, service: &str) {
        let mut slot = locked(&self.paused);
        if slot.is_some() {
            return;
        }
        let mut held = locked(&self.held);
        let before = held.len();
        let mut full = false;
        let paused = self.socket.pause(|conn, peer| match registry().hold() {
            Some(held_slot) => {
                let receive_buffer = net::listen::shrink_receive_buffer(&conn);
                held.push_back(Held {
                    conn,
                    peer,
                    receive_buffer,
                    _slot: held_slot,
                });
                true
            }
            None => {
                full = true;
                net::set_linger_reset(conn.read_fd());
                false
            }
        });
        match paused {
            Ok(p) => *slot = Some(p),
            Err(e) => log_err!("Service [{service}]: cannot pause {}: {e}", self.bound),
        }
        if held.len() > before {
            log_info!(
                "Service [{service}]: {} connection(s) waiting on {} held until it resumes",
                held.len() - before,
                self.bound
            );
        }
        if full {
            log_warning!(
                "Service [{service}]: connection cap reached ({} live, {} held): the connections still waiting on {} are reset",
                registry().live_count(),
                registry().held_count(),
                self.bound
            );
        }
    }

    /// Listens (and accepts) again. `Ok(true)` if it was paused; on `Err` it stays paused,
    /// for the caller to retry.
    fn resume(&self) -> io::Result<bool> {
        let mut slot = locked(&self.paused);
        let Some(p) = *slot else {
            return Ok(false);
        };
        self.socket.resume(p)?;
        *slot = None;
        Ok(true)
    }

    fn listening(&self) -> bool {
        locked(&self.paused).is_none()
    }

    /// accept() said EINVAL: the socket is not listening (whatever took it out). Noted as a
    /// pause, so that `resume` listens again (with back-off) instead of accept() failing
    /// in a loop. False if that cannot be done (a Unix socket), for the caller to treat
    /// it as any other accept error.
    fn lost_listening(&self) -> bool {
        let mut slot = locked(&self.paused);
        if slot.is_none() {
            *slot = self.socket.not_listening();
        }
        slot.is_some()
    }

    /// The oldest held connection, its receive buffer given back and its held slot freed
    /// (serving it takes a session slot instead).
    fn next_held(&self) -> Option<(Stream, String)> {
        let held = locked(&self.held).pop_front()?;
        if let Some(size) = held.receive_buffer {
            net::listen::restore_receive_buffer(&held.conn, size);
        }
        Some((held.conn, held.peer))
    }

    /// How many connections it holds now (SIGUSR2).
    pub fn held_count(&self) -> usize {
        locked(&self.held).len()
    }
}

/// The process stops, or a reload removed the service, while connections are still held:
/// they are reset (never closed as if served: their senders must learn their data was not
/// delivered), and said so.
impl Drop for Listener {
    /// A Unix socket's file goes with the socket, as in stunnel.
    fn drop(&mut self) {
        let held = std::mem::take(&mut *locked(&self.held));
        if !held.is_empty() {
            for h in &held {
                net::set_linger_reset(h.conn.read_fd());
            }
            log_notice!(
                "{} held connection(s) on {} reset: the service stopped before its far side came back",
                held.len(),
                self.bound
            );
        }
        if let (ListenSocket::Unix(_), Addr::Unix(path)) = (&self.socket, &self.bound) {
            match std::fs::remove_file(path) {
                Ok(()) => log_debug!("Socket removed: {}", path.display()),
                Err(e) => log_debug!("Socket {}: {e}", path.display()),
            }
        }
    }
}

/// A service with its bound listening sockets.
pub struct BoundService {
    pub ctx: Arc<ServiceCtx>,
    pub listeners: Vec<Arc<Listener>>,
}

/// Binds every service's addresses, reusing a socket from `reuse` when one is bound to
/// the same configured address (taken out of the map). A service fails only if none of
/// its addresses bound (as stunnel); each failed address is logged.
pub fn bind_all(
    services: &[Arc<ServiceCtx>],
    reuse: &mut Vec<Arc<Listener>>,
) -> Result<Vec<BoundService>, StartupError> {
    let mut bound = Vec::new();
    for ctx in services {
        let mut listeners = Vec::new();
        if ctx.opts.accept.is_empty() {
            // exec+connect: no socket to listen on; `start` runs it instead.
            bound.push(BoundService {
                ctx: Arc::clone(ctx),
                listeners,
            });
            continue;
        }
        for addr in &ctx.accept_addrs {
            let reusable = reusable_address(addr)
                .then(|| reuse.iter().position(|l| l.configured == *addr))
                .flatten();
            if let Some(index) = reusable {
                let listener = reuse.swap_remove(index);
                log_info!(
                    "Service [{}] (FD={}) kept listening on {}",
                    ctx.opts.name,
                    listener.socket.as_raw_fd(),
                    listener.bound
                );
                listeners.push(listener);
                continue;
            }
            // A service that pauses and is not open (new: not probed yet; or paused) binds
            // without listening: a client must not land in a backlog that a failed probe
            // would then reset. Its listener thread listens once the far side answers.
            let listen_now = !ctx.pauses() || ctx.health.is_open();
            match net::listen::bind(
                addr,
                &ctx.opts.socket_options,
                ctx.opts.unix_owner,
                ctx.opts.transparent_destination,
                listen_now,
            ) {
                Ok((socket, real, paused)) => {
                    if paused.is_some() {
                        log_debug!(
                            "Service [{}]: {real} not listening until its far side answers",
                            ctx.opts.name
                        );
                    }
                    log_info!(
                        "Service [{}] (FD={}) bound to {}",
                        ctx.opts.name,
                        socket.as_raw_fd(),
                        real
                    );
                    listeners.push(Arc::new(Listener::new(socket, addr.clone(), real, paused)));
                }
                Err(e) => log_notice!(
                    "Binding service [{}] to {}: {} ({})",
                    ctx.opts.name,
                    addr,
                    net::connect::describe(&e),
                    e.raw_os_error().unwrap_or(0)
                ),
            }
        }
        if listeners.is_empty() {
            log_err!("Binding service [{}] failed", ctx.opts.name);
            // Give back what this attempt took over, so that the caller can go on with it.
            for b in bound
                .drain(..)
                .map(|b: BoundService| b.listeners)
                .chain(std::iter::once(listeners))
            {
                reuse.extend(b.into_iter().filter(|l| reusable_address(&l.configured)));
            }
            return Err(StartupError::Bind {
                service: ctx.opts.name.clone(),
            });
        }
        bound.push(BoundService {
            ctx: Arc::clone(ctx),
            listeners,
        });
    }
    Ok(bound)
}

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

/// Connection ids as stunnel's `logId = sequential`: 0, 1, 2… across all services.
static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(0);

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
        match crate::exec::spawn(&ctx.opts, &crate::exec::PeerInfo::default()) {
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
    // After the service opens again the first connection served is a canary (`canary`).
    let mut canary = false;
    loop {
        if service.ctx.pauses() && !health.is_open() {
            if !wait_for_far_side(service, stop, &mut lookup) {
                return;
            }
            canary = true;
        }
        // Accepting (or not pausing, any more after a reload that turned it off): every
        // socket listens, and what a pause held is served first, oldest first.
        let retry_in = listen_all(service, &mut relisten);
        match serve_held(service, stop, &mut canary) {
            Served::All => {}
            Served::Interrupted => continue,
            Served::Stopping => return,
        }
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
                    if canary {
                        canary = false;
                        if serve_canary(service, conn, peer, stop) == Canary::Stopping {
                            return;
                        }
                    } else {
                        spawn_session(&service.ctx, conn, peer);
                    }
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

/// How far `serve_held` got.
enum Served {
    /// Nothing is held any more.
    All,
    /// The far side went down again (or is being checked): the rest stay held.
    Interrupted,
    /// The listener is stopping (the rest stay held: a reload hands them over).
    Stopping,
}

/// Serves the held connections one at a time, oldest first, each only while the service
/// is open (a pausing service's far side can fail again while they start); the first one
/// after a reopening is the canary.
fn serve_held(service: &BoundService, stop: &WakeFd, canary: &mut bool) -> Served {
    let pausing = service.ctx.pauses();
    for listener in &service.listeners {
        loop {
            if pausing && !service.ctx.health.is_open() {
                return Served::Interrupted;
            }
            let Some((conn, peer)) = listener.next_held() else {
                break;
            };
            if pausing && *canary {
                *canary = false;
                match serve_canary(service, conn, peer, stop) {
                    Canary::Stopping => return Served::Stopping,
                    Canary::Failed => return Served::Interrupted,
                    Canary::Reached | Canary::NoNews => {}
                }
            } else {
                spawn_session(&service.ctx, conn, peer);
            }
        }
    }
    Served::All
}

/// What became of the canary.
#[derive(Debug, PartialEq, Eq)]
enum Canary {
    /// A session reached the far side: serve the rest.
    Reached,
    /// The service is not open any more (the canary's connect failed: paused; or its
    /// far side broke it: checking).
    Failed,
    /// No news within the canary's time (its session is still connecting, or ended
    /// before reaching the far side for a reason of its own): carry on as usual.
    NoNews,
    Stopping,
}

/// The first connection served after the service opens again (a probe just answered) is
/// served alone: the listener waits until its session reaches the far side before it
/// serves the next one, so a far side that answered a probe and fails again at once (a
/// flapping link, a target restarting) costs one session, not every connection held
/// or waiting in the backlog.
fn serve_canary(service: &BoundService, conn: Stream, peer: String, stop: &WakeFd) -> Canary {
    let ctx = &service.ctx;
    let health = &ctx.health;
    let before = health.reached_count();
    health.watch(true);
    let Some(id) = spawn_session(ctx, conn, peer) else {
        health.watch(false);
        return Canary::NoNews;
    };
    // As long as the session may take to get there: each target's TIMEOUTconnect, and in
    // client mode its handshake (TIMEOUTbusy).
    let targets = ctx
        .connect_addrs
        .as_ref()
        .map_or(ctx.opts.connect.len(), Vec::len)
        .max(1) as u32;
    let mut budget = ctx.opts.timeouts.connect.saturating_mul(targets);
    if ctx.opts.client {
        budget += ctx.opts.timeouts.busy;
    }
    let deadline = Instant::now() + budget.min(CANARY_WAIT_MAX) + Duration::from_millis(100);
    let outcome = loop {
        if health.reached_count() != before {
            break Canary::Reached;
        }
        if !health.is_open() {
            break Canary::Failed;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        // A canary that ended without reaching the far side (its client failed the
        // handshake, say) tells nothing: the others need not wait out its time.
        if left.is_zero() || !registry().is_live(id) {
            break Canary::NoNews;
        }
        let mut fds = vec![wake::pollfd(stop.as_raw_fd(), libc::POLLIN)];
        if let Some(fd) = health.wake_fd() {
            fds.push(wake::pollfd(fd, libc::POLLIN));
        }
        // Woken at once by news of the far side; the end of the session is looked for
        // every 50 ms.
        let _ = wake::poll(&mut fds, Some(left.min(Duration::from_millis(50))));
        if fds[0].revents != 0 {
            break Canary::Stopping;
        }
        health.drain();
    };
    health.watch(false);
    log_debug!(
        "Service [{}]: first connection after resuming: {outcome:?}",
        ctx.opts.name
    );
    outcome
}

/// The longest a listener waits for its canary (a service with many slow targets would
/// otherwise make every other client wait for minutes).
const CANARY_WAIT_MAX: Duration = Duration::from_secs(15);

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

/// While the service is not open: do not accept, probe with back-off until the far side
/// answers. Checking or starting, the sockets stay as they are (listening, or at startup
/// bound and not listening yet), so one probe after a failed request refuses nobody; once a
/// probe has failed (paused) they stop listening, holding what waited in the backlog.
/// Returns true when the far side answers (the caller listens again and serves what was
/// held), false when the listener is to stop (its sockets stay as they are: a reload's
/// next thread carries on with them).
fn wait_for_far_side(
    service: &BoundService,
    stop: &WakeFd,
    lookup: &mut crate::probe::Lookup,
) -> bool {
    let ctx = &service.ctx;
    let name = &ctx.opts.name;
    let refuse = |listeners: &[Arc<Listener>]| {
        for l in listeners {
            l.pause(name);
        }
    };
    let mut backoff = health::PROBE_BACKOFF_MIN;
    loop {
        if matches!(ctx.health.state(), health::State::Paused { .. }) {
            refuse(&service.listeners);
        }
        ctx.health.drain();
        let result = probe_far_side(ctx, lookup, stop.as_raw_fd());
        if stopping(stop, Duration::ZERO) {
            return false;
        }
        // A failed probe always keeps (or makes) the service paused, one that answers
        // always reopens it: act on the sockets before `probed` logs "paused" or "resumed",
        // so that the line is true when it is written. (A listen() that fails here is
        // retried and logged by the accept loop.) A probe that learnt nothing changes
        // nothing.
        match &result {
            Probe::Down(_) => refuse(&service.listeners),
            Probe::Answered => {
                for l in &service.listeners {
                    let _ = l.resume();
                }
            }
            Probe::Unknown(_) => {}
        }
        if ctx.health.probed(result) == Verdict::Accept {
            return true;
        }
        // A reload (or a stop) ends the wait early.
        let mut fds = vec![wake::pollfd(stop.as_raw_fd(), libc::POLLIN)];
        if let Some(fd) = ctx.health.wake_fd() {
            fds.push(wake::pollfd(fd, libc::POLLIN));
        }
        let _ = wake::poll(&mut fds, Some(backoff));
        if fds[0].revents != 0 {
            return false;
        }
        backoff = (backoff * 2).min(health::PROBE_BACKOFF_MAX);
    }
}

fn stopping(stop: &WakeFd, wait: Duration) -> bool {
    let mut fds = [wake::pollfd(stop.as_raw_fd(), libc::POLLIN)];
    matches!(wake::poll(&mut fds, Some(wait)), Ok(n) if n > 0)
}

/// One probe of the service's targets, in the configured order (never rotated: a probe
/// asks whether any target answers). Names looked up per connection (`delay = yes`) go
/// through the listener's `lookup`.
fn probe_far_side(
    ctx: &ServiceCtx,
    lookup: &mut crate::probe::Lookup,
    cancel: std::os::fd::RawFd,
) -> Probe {
    let timeout = ctx.opts.timeouts.connect.min(health::PROBE_TIMEOUT_MAX);
    let addrs = match &ctx.connect_addrs {
        Some(addrs) => addrs.clone(),
        None => match lookup.addrs(timeout, cancel) {
            Ok(addrs) => addrs,
            Err(probe) => return probe,
        },
    };
    // A `protocol` exchange before TLS (STARTTLS…) is not repeated by a probe: for those
    // the far side answers when it accepts a connection.
    let tls = (ctx.opts.client && ctx.opts.protocol.is_none())
        .then_some((&ctx.tls.ctx, ctx.sni.as_deref()));
    crate::probe::far_side(&crate::probe::Target {
        service: &ctx.opts.name,
        addrs: &addrs,
        timeout,
        options: &ctx.opts.socket_options,
        source: ctx.opts.local.map(|ip| net::connect::Source {
            ip,
            transparent: false,
        }),
        tls,
        cancel,
    })
}

/// Takes a slot for a connection from `peer`, or logs the refusal (dropping `conn`
/// closes it).
fn admit(ctx: &ServiceCtx, peer: String) -> Option<SessionGuard> {
    let id = NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed);
    match registry().admit(id, &ctx.opts.name, &ctx.slots, peer.clone()) {
        Ok(guard) => Some(guard),
        Err(TooManyClients { cap }) => {
            log_warning!(
                "Service [{}]: connection from {peer} rejected: too many clients (>={cap})",
                ctx.opts.name,
            );
            None
        }
    }
}

/// Serves one connection on the calling thread (inetd mode, exec+connect services).
pub fn spawn_session_here(ctx: &Arc<ServiceCtx>, conn: Stream, peer: String) {
    if let Some(guard) = admit(ctx, peer) {
        crate::session::run(Arc::clone(ctx), conn, guard, Completion::Wait);
    }
}

/// Takes a slot and hands the connection to a new session thread (or refuses it).
/// Returns the session's id if it started.
pub fn spawn_session(ctx: &Arc<ServiceCtx>, conn: Stream, peer: String) -> Option<u64> {
    let guard = admit(ctx, peer)?;
    let id = guard.session().id;
    let ctx_for_thread = Arc::clone(ctx);
    let spawned = std::thread::Builder::new()
        .stack_size(ctx.opts.stack)
        .spawn(move || crate::session::run(ctx_for_thread, conn, guard, Completion::HandOff));
    match spawned {
        Ok(_) => Some(id),
        Err(e) => {
            log_err!(
                "Service [{}]: cannot create a thread for a connection: {e}",
                ctx.opts.name,
            );
            None
        }
    }
}
