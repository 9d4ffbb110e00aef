//! The process lifecycle (docs/ARCHITECTURE.md, Startup, Reload and Drain): startup in
//! stunnel's order, then the main thread waits for signals on a channel:
//! SIGHUP reloads (keeping unchanged listening sockets), SIGUSR1 reopens the log file,
//! SIGUSR2 lists live sessions, SIGTERM/SIGINT/SIGQUIT drain and exit 0. Besides signals it
//! takes changed certificate files (`watchCertificates`: the services are rebuilt from the
//! configuration in memory) and an hourly tick for the expiry warnings.
//!
//! Owns the running services and the pid file. Never touches a session's sockets: live
//! sessions keep the `ServiceCtx` they started with, whatever a reload does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crossbeam_channel::{select, tick, unbounded, Receiver, Sender};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};

use crate::accept::{self, RunningService};
use crate::accounting::{self, registry};
use crate::certs::{self, Watcher};
use crate::config::{self, Config, Foreground};
use crate::daemon::{self, PidFile};
use crate::listeners::{self, BoundService, Listener};
use crate::log::{self, LogSetup};
use crate::net::Stream;
use crate::sandbox;
use crate::service::{self, StartupError};
use crate::status;

/// Ends a startup that failed (the configuration, or what was built from it): the buffered
/// startup log to stderr, then the error, its cause and `Configuration failed`, as stunnel
/// prints them. Returns the exit code, 1.
pub(crate) fn configuration_failed(e: &StartupError) -> i32 {
    log::dump_startup_to_stderr();
    if let StartupError::Config(config_error) = e {
        if let Some(cause) = config_error.cause() {
            log::startup_error(cause);
        }
    }
    log::startup_error(&e.to_string());
    log::startup_error("Configuration failed");
    1
}

fn log_setup(config: &Config) -> LogSetup<'_> {
    let global = &config.global;
    LogSetup {
        stderr: global.foreground == Foreground::Yes,
        output: global.output.as_deref().map(|p| (p, global.log_overwrite)),
        syslog: global
            .syslog
            .then_some((global.service_name.as_str(), global.facility)),
        level: config.defaults.debug_level,
    }
}

/// Runs the configuration until a terminating signal; returns the exit code.
/// `source` is the file to re-read on SIGHUP (`None`: read from a descriptor, no reload).
pub fn run(config: Config, source: Option<PathBuf>) -> i32 {
    // The start time the status endpoint reports (uptime, process_start_time_seconds).
    crate::metrics::process();
    crate::memory::tune_malloc();
    if config.is_inetd_mode() {
        return run_inetd(&config);
    }
    // Startup step 3 (docs/ARCHITECTURE.md, Startup): stderr and syslog now (syslog must
    // be opened before chroot); the output file only after the privilege drop, so that it
    // belongs to the dropped user.
    let early = LogSetup {
        output: None,
        ..log_setup(&config)
    };
    if let Err(e) = log::configure(&early) {
        return configuration_failed(&StartupError::Io {
            what: "Cannot open syslog".into(),
            error: e,
        });
    }
    log_notice!(
        "rstunnel {} on {}",
        env!("CARGO_PKG_VERSION"),
        crate::openssl_names::running_version()
    );
    log_notice!("Reading configuration from {}", config.source);
    // Startup steps 4 and 5: certificates and keys are loaded, then every listener is bound.
    let bound = match service::build(&config, true)
        .and_then(|s| listeners::bind_all(&s, &mut Vec::new()))
    {
        Ok(bound) => bound,
        Err(e) => return configuration_failed(&e),
    };
    // The status endpoint is bound with the listeners, before the privileges go.
    let status_bound = match bind_status(config.global.status.as_ref()) {
        Ok(bound) => bound,
        Err(e) => return configuration_failed(&e),
    };
    daemon::prepare_systemd_notify();
    let dev_null = match daemon::DevNull::open() {
        Ok(null) => null,
        Err(e) => {
            return configuration_failed(&StartupError::Io {
                what: "/dev/null".into(),
                error: e,
            })
        }
    };
    if let Err(e) = drop_privileges(&config) {
        return configuration_failed(&e);
    }
    if let Err(e) = log::configure(&log_setup(&config)) {
        return configuration_failed(&StartupError::Io {
            what: format!(
                "Cannot open log file {}",
                config
                    .global
                    .output
                    .as_deref()
                    .map_or(PathBuf::new(), Path::to_path_buf)
                    .display()
            ),
            error: e,
        });
    }
    log_notice!("Configuration successful");
    // Under systemd's Type=notify the service manager tracks this process: never fork.
    if config.global.foreground == Foreground::No && !daemon::under_systemd_notify() {
        if let Err(e) = daemon::daemonize(&dev_null) {
            log_err!("daemon: {e}");
            return 1;
        }
        log::set_thread_id("main");
    }
    drop(dev_null);
    log::end_startup();
    let _pid_file = match config
        .global
        .pid
        .as_deref()
        .map(PidFile::create)
        .transpose()
    {
        Ok(pid) => pid,
        Err(e) => {
            log_err!(
                "Cannot create pid file {}: {e}",
                config
                    .global
                    .pid
                    .as_deref()
                    .map_or(PathBuf::new(), Path::to_path_buf)
                    .display()
            );
            return 1;
        }
    };
    // Startup step 11 (docs/ARCHITECTURE.md, Startup and Sandbox): the ruleset now, while
    // this is the only thread; every thread and `exec` child started later inherits it.
    let sandbox = confine(&config, source.as_deref());
    let signals = match signal_channel() {
        Ok(rx) => rx,
        Err(e) => {
            log_err!("Cannot install signal handlers: {e}");
            return 1;
        }
    };
    registry().set_cap(accounting::cap_from_fd_limit());
    log_info!(
        "Connection cap: {} concurrent sessions (from the open-file limit)",
        registry().cap()
    );
    set_unproven_limits(&config.global);
    let running = match accept::start(bound) {
        Ok(running) => running,
        Err(e) => {
            log_err!("Cannot start listener threads: {e}");
            return 1;
        }
    };
    log_info!("Accepting new connections");
    daemon::notify_systemd("READY=1");
    let published = status::Published::default();
    published.set(status_view(&running));
    let status = match status_bound
        .map(|b| serve_status(b, &published))
        .transpose()
    {
        Ok(status) => status,
        Err(e) => {
            log_err!("{e}");
            return 1;
        }
    };
    let (changed_tx, changed) = unbounded();
    let mut state = State {
        config,
        running,
        sandbox,
        published,
        status,
        certs: Certs {
            expiry: certs::Tracker::default(),
            watcher: None,
            changed: changed_tx,
        },
    };
    state.watch_and_warn();
    let hourly = tick(EXPIRY_CHECK_EVERY);
    loop {
        let signal = select! {
            recv(signals) -> signal => match signal {
                Ok(signal) => signal,
                Err(_) => break,
            },
            recv(changed) -> files => {
                state.reload_certificates(files.unwrap_or_default());
                continue;
            }
            recv(hourly) -> _ => {
                state.check_expiry();
                continue;
            }
        };
        match signal {
            SIGHUP => state.reload(source.as_deref()),
            SIGUSR1 => reopen_log(&state.config),
            SIGUSR2 => list_sessions(&state.running),
            SIGTERM => {
                log_notice!("Terminated");
                break;
            }
            _ => {
                let name = if signal == SIGINT {
                    "SIGINT"
                } else {
                    "SIGQUIT"
                };
                log_err!("Received {name}; terminating");
                break;
            }
        }
    }
    daemon::notify_systemd("STOPPING=1");
    state.shut_down();
    0
}

/// `unprovenPerSource` and `unprovenMax` under the connection cap (docs/ARCHITECTURE.md,
/// Connection flow, Admission); at startup and after each reload.
fn set_unproven_limits(global: &config::types::GlobalOptions) {
    let limits = accounting::UnprovenLimits::new(
        global.unproven_per_source,
        global.unproven_max,
        registry().cap(),
    );
    registry().set_unproven_limits(limits);
    log_info!(
        "Unproven sessions (handshake not completed): at most {} per source address, {} in all (0 = no limit)",
        limits.per_source,
        limits.total
    );
}

/// Inetd mode (a file without sections): one session on stdin/stdout, then exit. As in
/// stunnel: no fork, no pid file, no signal handling, no log on stderr (it is the peer).
fn run_inetd(config: &Config) -> i32 {
    use std::os::fd::{FromRawFd, OwnedFd};
    let setup = LogSetup {
        stderr: false,
        ..log_setup(config)
    };
    if let Err(e) = log::configure(&setup) {
        return configuration_failed(&StartupError::Io {
            what: "Cannot open the log".into(),
            error: e,
        });
    }
    if config.global.status.is_some() {
        log_warning!(
            "status is not served in inetd mode: the process serves one connection and exits"
        );
    }
    let service = match service::build(config, true) {
        Ok(mut services) if services.len() == 1 => services.remove(0),
        Ok(_) => return 1,
        Err(e) => return configuration_failed(&e),
    };
    if let Err(e) = drop_privileges(config) {
        return configuration_failed(&e);
    }
    confine(config, None);
    log::end_startup();
    // SAFETY: inetd hands us the connection as descriptors 0 and 1; nothing else in this
    // process uses them, and the stream takes ownership.
    let stdio = unsafe { Stream::from_pair(OwnedFd::from_raw_fd(0), OwnedFd::from_raw_fd(1)) };
    let peer = stdio.peer_description();
    crate::session::spawn_session_here(&service, stdio, peer);
    0
}

/// Startup step 7 (docs/ARCHITECTURE.md, Startup): chroot, then group, then user.
fn drop_privileges(config: &Config) -> Result<(), StartupError> {
    let global = &config.global;
    if let Some(dir) = &global.chroot {
        daemon::enter_chroot(dir).map_err(|error| StartupError::Io {
            what: format!("Failed to chroot to {}", dir.display()),
            error,
        })?;
        log_info!("Switched to chroot directory: {}", dir.display());
    }
    daemon::drop_privileges(global.setgid, global.setuid).map_err(|error| StartupError::Io {
        what: "Failed to drop privileges (setgid/setuid)".into(),
        error,
    })
}

/// `sandbox = yes`: applies the ruleset built from `config` to this thread (and so to
/// everything it starts), logging what was applied or why not, once.
fn confine(config: &Config, source: Option<&Path>) -> sandbox::Outcome {
    if !config.global.sandbox {
        let outcome = sandbox::Outcome::Off;
        log_info!("{outcome}");
        return outcome;
    }
    let others = sandbox::other_threads();
    if others > 0 {
        log_warning!("Sandbox: {others} thread(s) started before it are not restricted");
    }
    let mut plan = sandbox::plan(config, source);
    for g in &plan.grants {
        log_debug!(
            "Sandbox allows {:?} on {} ({})",
            g.right,
            g.path.display(),
            g.why
        );
    }
    let warnings = std::mem::take(&mut plan.warnings);
    let outcome = sandbox::apply(plan);
    match &outcome {
        sandbox::Outcome::Applied {
            partial: false,
            no_new_privs: true,
            ..
        } => log_notice!("{outcome}"),
        _ => log_warning!("{outcome}"),
    }
    if outcome.enforced().is_some() {
        for warning in &warnings {
            log_warning!("{warning}");
        }
    }
    // The one place where a stunnel.conf that worked under stunnel can stop working here:
    // an `exec` program inherits the sandbox. Said at startup, where the admin looks first.
    let setuid = "and it gains no privileges from set-user-ID programs (a set-user-ID pppd runs as the user rstunnel runs as)";
    for s in config.services.iter() {
        let Some(program) = &s.exec else { continue };
        if outcome.enforced().is_some() {
            log_notice!(
                "Service [{}]: exec {} runs inside the sandbox: it can run no other program and open only the files the sandbox allows (listed at debug level), {setuid}; if it needs more, set sandbox = no",
                s.name,
                program.display()
            );
        } else if outcome.no_new_privs() {
            log_notice!(
                "Service [{}]: exec {} runs with no new privileges: {setuid}; if it needs them, set sandbox = no",
                s.name,
                program.display()
            );
        }
    }
    outcome
}

/// The signals the main thread handles, as a channel.
fn signal_channel() -> std::io::Result<Receiver<i32>> {
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2])?;
    let (tx, rx) = unbounded();
    std::thread::Builder::new()
        .name("signals".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            for signal in signals.forever() {
                if tx.send(signal).is_err() {
                    return;
                }
            }
        })?;
    Ok(rx)
}

fn reopen_log(config: &Config) {
    match log::configure(&log_setup(config)) {
        Ok(()) => log_notice!("Log file reopened"),
        Err(e) => log_err!("Failed to reopen the log file: {e}"),
    }
}

/// SIGUSR2: one line per live session, as stunnel's listing.
fn list_sessions(running: &[RunningService]) {
    crate::repeats::summarise_now();
    let sessions = registry().snapshot();
    log_at!(crate::log::Level::Emerg, "Active connections:");
    for s in &sessions {
        log_at!(
            crate::log::Level::Emerg,
            "Active connection {}: Service [{}], peer {}, {} byte(s) sent to TLS, {} byte(s) sent to socket, {:.0} s",
            s.id,
            s.service,
            s.peer,
            s.sent_to_tls.load(std::sync::atomic::Ordering::Relaxed),
            s.sent_to_socket.load(std::sync::atomic::Ordering::Relaxed),
            s.started.elapsed().as_secs_f64()
        );
    }
    log_at!(
        crate::log::Level::Emerg,
        "Listed {} active connection(s)",
        sessions.len()
    );
    // pauseWhenDown: services refusing connections now and why, and every service that
    // has paused or been checked since the start.
    for crate::health::Listed {
        name,
        state,
        pauses,
        checks,
    } in crate::health::listing()
    {
        let now = match state {
            crate::health::State::Paused { since, reason } => format!(
                "paused for {:.1} s: {reason}",
                since.elapsed().as_secs_f64()
            ),
            crate::health::State::Checking { since, reason } => format!(
                "checking its far side for {:.1} s: {reason}",
                since.elapsed().as_secs_f64()
            ),
            _ => "accepting".into(),
        };
        log_at!(
            crate::log::Level::Emerg,
            "Service [{name}] {now}; {pauses} pause(s), {checks} check(s) since the start"
        );
    }
    // Connections paused listeners hold, waiting for their far side.
    for r in running {
        for l in &r.listeners {
            let held = l.held_count();
            if held > 0 {
                log_at!(
                    crate::log::Level::Emerg,
                    "Service [{}]: {held} connection(s) held on {} until it resumes",
                    r.ctx.opts.name,
                    l.bound
                );
            }
        }
    }
    if let Some(h) = crate::memory::heap_usage() {
        log_at!(
            crate::log::Level::Emerg,
            "Memory: heap {} KiB in use, {} KiB held by the allocator",
            h.in_use / 1024,
            h.held / 1024
        );
    }
}

/// A reload refused by the sandbox, as the reload's error.
fn outside_error(outside: sandbox::OutsideSandbox) -> StartupError {
    StartupError::Io {
        what: outside.to_string(),
        error: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
    }
}

/// How often the loaded certificates are checked against the expiry thresholds.
const EXPIRY_CHECK_EVERY: Duration = Duration::from_secs(3600);

/// What the main thread keeps between signals.
struct State {
    config: Config,
    running: Vec<RunningService>,
    /// What the startup's sandbox allows; a reload must stay inside it.
    sandbox: sandbox::Outcome,
    /// What the status endpoint reads: the services running now.
    published: status::Published,
    /// The status endpoint, if `status` is set.
    status: Option<status::server::Server>,
    certs: Certs,
}

/// The expiry warnings said so far and the certificate watch.
struct Certs {
    expiry: certs::Tracker,
    /// Watching the running configuration's files (`watchCertificates = yes`).
    watcher: Option<Watcher>,
    /// Where the watcher sends the files that changed; the main loop receives.
    changed: Sender<Vec<PathBuf>>,
}

/// Binds `status = ADDRESS` if set (startup, and a reload that changes it).
fn bind_status(
    address: Option<&config::types::StatusAddress>,
) -> Result<Option<status::server::Bound>, StartupError> {
    let Some(address) = address else {
        return Ok(None);
    };
    let bound = status::server::bind(address).map_err(|e| {
        StartupError::Unsupported(format!(
            "Cannot serve the status endpoint (status = {address}): {e}"
        ))
    })?;
    if let Some(warning) = bound.warning() {
        log_warning!("{warning}");
    }
    Ok(Some(bound))
}

/// Starts answering on a bound status endpoint.
fn serve_status(
    bound: status::server::Bound,
    published: &status::Published,
) -> Result<status::server::Server, StartupError> {
    let at = bound.local_addr().to_string();
    let server = bound
        .serve(status::handler(published.clone()))
        .map_err(|error| StartupError::Io {
            what: format!("Cannot start the status endpoint on {at}"),
            error,
        })?;
    log_notice!("Status endpoint on {at}: /metrics, /status, /healthz");
    Ok(server)
}

/// The running services as the status endpoint sees them.
fn status_view(running: &[RunningService]) -> Vec<status::Running> {
    running
        .iter()
        .map(|r| status::Running {
            ctx: std::sync::Arc::clone(&r.ctx),
            listeners: r.listeners.iter().map(std::sync::Arc::downgrade).collect(),
        })
        .collect()
}

impl State {
    /// SIGHUP: build the new configuration completely before touching the running one;
    /// on any error log it and keep running the old one. Listening sockets whose address
    /// did not change are handed over open; live sessions are never cut.
    fn reload(&mut self, source: Option<&Path>) {
        let Some(path) = source else {
            log_err!("Failed to reload the configuration file: it was read from a descriptor");
            return;
        };
        daemon::notify_systemd("RELOADING=1");
        let reloaded = self.try_reload(path);
        crate::metrics::process().reloaded(reloaded.is_ok());
        match reloaded {
            Ok(()) => log_notice!("Configuration reloaded from {}", path.display()),
            Err(e) => {
                log_err!("{e}");
                log_err!("Failed to reload the configuration file");
            }
        }
        self.watch_and_warn();
        daemon::notify_systemd("READY=1");
    }

    /// A certificate, key, CA or CRL file changed (docs/ARCHITECTURE.md, Certificates):
    /// every service is built again from the configuration in memory (stunnel.conf is not
    /// read: it may be half-edited) and swapped in on the same listening sockets, as a
    /// reload would; if a file does not load, the running services keep their contexts.
    fn reload_certificates(&mut self, changed: Vec<PathBuf>) {
        let names: Vec<String> = changed.iter().map(|p| p.display().to_string()).collect();
        let names = names.join(", ");
        daemon::notify_systemd("RELOADING=1");
        match self.try_reload_certificates() {
            Ok(()) => {
                log_notice!("Certificates reloaded: {names} changed");
                crate::metrics::process().certificates_reloaded(true);
            }
            Err(e) => {
                log_err!("{e}");
                log_err!("Failed to reload certificates after {names} changed: keeping the current certificates");
                crate::metrics::process().certificates_reloaded(false);
            }
        }
        self.watch_and_warn();
        daemon::notify_systemd("READY=1");
    }

    fn try_reload_certificates(&mut self) -> Result<(), StartupError> {
        if let Some(plan) = self.sandbox.enforced() {
            sandbox::check(plan, &self.config, None).map_err(outside_error)?;
        }
        // The same configuration: each service keeps its own listeners (port 0 too).
        let bound = service::build(&self.config, true)?
            .into_iter()
            .map(|ctx| BoundService {
                listeners: self
                    .running
                    .iter()
                    .find(|r| r.ctx.opts.name == ctx.opts.name)
                    .map(|r| r.listeners.clone())
                    .unwrap_or_default(),
                ctx,
            })
            .collect();
        self.swap_in(bound, Vec::new())
    }

    /// After startup and each reload: watch the files of the configuration now running
    /// (a new watcher before the old one goes, so no change falls in between), and say
    /// which of its certificates expire soon or have.
    fn watch_and_warn(&mut self) {
        let watcher = if self.config.global.watch_certificates {
            certs::watch::start(
                certs::WatchSet::of(&self.config),
                self.certs.changed.clone(),
            )
        } else {
            None
        };
        self.certs.watcher = watcher;
        let now = crate::metrics::unix_now() as i64;
        let all = self.running.iter().flat_map(|r| r.ctx.all_certificates());
        for warning in self.certs.expiry.announce(now, all) {
            log_warning!("{warning}");
        }
    }

    /// The hourly check: a warning for each certificate that crossed a threshold since.
    fn check_expiry(&mut self) {
        let now = crate::metrics::unix_now() as i64;
        let all = self.running.iter().flat_map(|r| r.ctx.all_certificates());
        for warning in self.certs.expiry.check(now, all) {
            log_warning!("{warning}");
        }
    }

    fn try_reload(&mut self, path: &Path) -> Result<(), StartupError> {
        let config = config::load(path).map_err(|e| {
            // Under the sandbox a file or include directory beyond it cannot be opened:
            // say so by name rather than with the bare "Permission denied" of the read.
            match self
                .sandbox
                .enforced()
                .and_then(|p| sandbox::refused_load(p, &e, path))
            {
                Some(outside) => outside_error(outside),
                None => StartupError::Config(e),
            }
        })?;
        if config.is_inetd_mode() {
            return Err(StartupError::Unsupported(
                "the new configuration has no [section]".into(),
            ));
        }
        // The ruleset cannot be widened or lifted: a path outside it fails the reload
        // here, with its name, rather than as "Permission denied" in OpenSSL or a session.
        if let Some(plan) = self.sandbox.enforced() {
            sandbox::check(plan, &config, Some(path)).map_err(outside_error)?;
            if !config.global.sandbox {
                log_warning!("sandbox = no takes effect at the next start, not at a reload");
            }
        } else if config.global.sandbox && matches!(self.sandbox, sandbox::Outcome::Off) {
            log_warning!("sandbox = yes takes effect at the next start, not at a reload");
        }
        let services = service::build(&config, true)?;
        // Bind what is new while the old listeners still run: a failure leaves them be.
        let mut reusable: Vec<std::sync::Arc<Listener>> = self
            .running
            .iter()
            .flat_map(|r| r.listeners.iter().cloned())
            .collect();
        let bound = listeners::bind_all(&services, &mut reusable)?;
        // A status address that changed is bound now, while everything old still runs.
        // Compared as the endpoint is bound (`9101` is `127.0.0.1:9101`), so that respelling
        // the line does not bind the same port twice.
        let status_changed = config.global.status.as_ref().map(ToString::to_string)
            != self.config.global.status.as_ref().map(ToString::to_string);
        let new_status = if status_changed {
            bind_status(config.global.status.as_ref())?
        } else {
            None
        };
        self.swap_in(bound, reusable)?;
        if let Err(e) = log::configure(&log_setup(&config)) {
            log_err!("Failed to reopen the log after reload: {e}");
        }
        set_unproven_limits(&config.global);
        if status_changed {
            if let Some(old) = self.status.take() {
                old.stop();
            }
            // The services are swapped already: a thread that cannot start is logged, not
            // a failed reload.
            self.status = new_status
                .map(|b| serve_status(b, &self.published))
                .transpose()
                .unwrap_or_else(|e| {
                    log_err!("{e}");
                    None
                });
        }
        self.config = config;
        Ok(())
    }

    /// Stops the old listener threads (their sockets stay open: queued connections wait in
    /// the kernel's backlog) and starts the new ones on the same sockets; `unused` are the
    /// old listeners no service took, closed here.
    fn swap_in(
        &mut self,
        bound: Vec<BoundService>,
        unused: Vec<std::sync::Arc<Listener>>,
    ) -> Result<(), StartupError> {
        for old in self.running.drain(..) {
            old.stop();
        }
        drop(unused); // listeners of removed services or changed addresses close here
        let pausing: Vec<&str> = bound
            .iter()
            .filter(|s| s.ctx.pauses())
            .map(|s| s.ctx.opts.name.as_str())
            .collect();
        crate::health::keep_only(&pausing);
        let names: Vec<&str> = bound.iter().map(|s| s.ctx.opts.name.as_str()).collect();
        crate::metrics::keep_only(&names);
        self.running = accept::start(bound).map_err(|error| StartupError::Io {
            what: "Cannot start listener threads".into(),
            error,
        })?;
        self.published.set(status_view(&self.running));
        Ok(())
    }

    /// Stop accepting, let live sessions finish (each closes gracefully: what is in flight
    /// is delivered, then close_notify) for up to the longest TIMEOUTclose, then exit.
    fn shut_down(self) {
        drop(self.certs.watcher);
        let grace = self
            .config
            .services
            .iter()
            .map(|s| s.timeouts.close)
            .max()
            .unwrap_or(Duration::ZERO);
        for service in self.running {
            drop(service.stop());
        }
        let live = registry().live_count();
        if live > 0 {
            log_notice!(
                "Closing {live} active connection(s), waiting up to {} s",
                grace.as_secs()
            );
            registry().start_drain();
            if !registry().wait_empty(grace) {
                log_notice!(
                    "{} connection(s) still open at exit",
                    registry().live_count()
                );
            }
        }
        // What `repeats` counted and has not yet written (its minute is not over).
        crate::repeats::summarise_now();
        // Last: a monitor sees the drain through to its end.
        if let Some(status) = self.status {
            status.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        config::parse_bytes("t.conf", text.as_bytes()).expect("valid")
    }

    /// The log sinks as stunnel picks them: stderr only in the foreground, the `output`
    /// file (appended to unless `log = overwrite`), syslog unless `syslog = no` or in the
    /// foreground without it, at the global part's `debug` level.
    #[test]
    fn the_log_goes_where_the_configuration_says() {
        let fg =
            config("foreground = yes\ndebug = 6\n[s]\nclient = yes\naccept = 1\nconnect = 2\n");
        let setup = log_setup(&fg);
        assert!(setup.stderr);
        assert!(setup.output.is_none());
        assert_eq!(setup.level, crate::log::Level::Info);
        let daemon = config(
            "output = /var/log/t.log\nlog = overwrite\nsyslog = no\n[s]\nclient = yes\naccept = 1\nconnect = 2\n",
        );
        let setup = log_setup(&daemon);
        assert!(!setup.stderr);
        assert_eq!(
            setup.output,
            Some((std::path::Path::new("/var/log/t.log"), true))
        );
        assert!(setup.syslog.is_none());
        let default = config("[s]\nclient = yes\naccept = 1\nconnect = 2\n");
        let (ident, _) = log_setup(&default).syslog.expect("syslog by default");
        assert_eq!(ident, "stunnel");
    }
}
