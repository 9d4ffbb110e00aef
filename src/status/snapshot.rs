//! Fills a `StatusDoc` from what the running process publishes: the services the runtime
//! runs now (`Published`, replaced at each reload), their counters (`metrics`), their
//! far-side state (`health`, through the service), the live sessions (the registry, read
//! under its lock together with the counters, so byte totals never go back), and the
//! process's own figures (`/proc/self`).
//!
//! Must not: hold any lock of the data path longer than a copy takes, or change anything.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock, Weak};

use crate::accounting::registry;
use crate::health::State;
use crate::listeners::Listener;
use crate::metrics::{self, CountersNow};
use crate::service::ServiceCtx;

use super::doc::{self, StatusDoc};

/// One running service as the runtime hands it over. Its listeners are held weakly: the
/// endpoint must not keep a socket open that the runtime closed (a removed service, or all
/// of them at SIGTERM, where the ports must refuse during the drain).
#[derive(Clone)]
pub struct Running {
    pub ctx: Arc<ServiceCtx>,
    pub listeners: Vec<Weak<Listener>>,
}

/// The services running now; the runtime replaces them after startup and each reload.
#[derive(Clone, Default)]
pub struct Published(Arc<RwLock<Vec<Running>>>);

impl Published {
    pub fn set(&self, running: Vec<Running>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = running;
    }

    fn get(&self) -> Vec<Running> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What the process looks like now.
pub fn take(published: &Published) -> StatusDoc {
    let running = published.get();
    let (sessions, counters) = registry().snapshot_with(|| {
        metrics::all()
            .into_iter()
            .map(|(name, c)| (name, c.read()))
            .collect::<BTreeMap<String, CountersNow>>()
    });
    let mut live: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    let listed: Vec<doc::Session> = sessions
        .iter()
        .map(|s| {
            let to_tls = s.sent_to_tls.load(Relaxed);
            let to_socket = s.sent_to_socket.load(Relaxed);
            let entry = live.entry(s.service.as_str()).or_default();
            *entry = (entry.0 + 1, entry.1 + to_tls, entry.2 + to_socket);
            doc::Session {
                id: s.id,
                service: s.service.clone(),
                peer: s.peer.clone(),
                bytes_to_tls: to_tls,
                bytes_to_socket: to_socket,
                age_seconds: s.started.elapsed().as_secs_f64(),
            }
        })
        .collect();
    let mut services = Vec::new();
    let mut unhealthy = Vec::new();
    let mut certificates = Vec::new();
    for r in &running {
        let name = r.ctx.opts.name.as_str();
        let now = counters
            .get(name)
            .cloned()
            .unwrap_or_else(|| r.ctx.counters.read());
        let (live_count, live_tls, live_socket) = live.get(name).copied().unwrap_or_default();
        let service = service_status(r, &now, (live_count, live_tls, live_socket));
        if let Some(why) = not_serving(&service) {
            unhealthy.push(why);
        }
        services.push(service);
        certificates.extend(certificates_of(name, &r.ctx));
    }
    let p = metrics::process();
    let last_ok = p.last_reload_ok_unix.load(Relaxed);
    StatusDoc {
        version: env!("CARGO_PKG_VERSION").to_string(),
        openssl_compiled: crate::openssl_names::built_version(),
        openssl_running: crate::openssl_names::running_version().to_string(),
        pid: std::process::id(),
        started_unix: p.started_unix,
        uptime_seconds: p.started.elapsed().as_secs_f64(),
        healthy: unhealthy.is_empty(),
        unhealthy,
        process: process(sessions.len()),
        reloads: doc::Reloads {
            ok: p.reloads_ok.load(Relaxed),
            failed: p.reloads_failed.load(Relaxed),
            last_ok_unix: (last_ok != 0).then_some(last_ok),
            certificates_ok: p.certificate_reloads_ok.load(Relaxed),
            certificates_failed: p.certificate_reloads_failed.load(Relaxed),
        },
        services,
        certificates,
        sessions: listed,
    }
}

fn service_status(r: &Running, now: &CountersNow, live: (u64, u64, u64)) -> doc::ServiceStatus {
    let ctx = &r.ctx;
    let listeners: Vec<Arc<Listener>> = r.listeners.iter().filter_map(Weak::upgrade).collect();
    let listening = !listeners.is_empty() && listeners.iter().all(|l| l.listening());
    let (state, reason, since) = match (ctx.pauses(), ctx.health.state()) {
        _ if registry().draining() => ("stopping", None, None),
        (true, State::Paused { since, reason }) => ("paused", Some(reason), Some(since)),
        (true, State::Checking { since, reason }) => ("checking", Some(reason), Some(since)),
        (true, State::Starting) => ("starting", None, None),
        _ if listening => ("listening", None, None),
        _ => ("not listening", None, None),
    };
    let (live_count, live_tls, live_socket) = live;
    let connect = match (&ctx.opts.exec, ctx.opts.connect.is_empty()) {
        (Some(program), true) => vec![format!("exec {}", program.display())],
        _ => ctx.opts.connect.clone(),
    };
    doc::ServiceStatus {
        name: ctx.opts.name.clone(),
        client: ctx.opts.client,
        accept: listeners.iter().map(|l| l.bound.to_string()).collect(),
        connect,
        state: state.to_string(),
        state_reason: reason,
        state_seconds: since.map(|s| s.elapsed().as_secs_f64()),
        pauses: ctx.health.pauses(),
        checks: ctx.health.checks(),
        held: listeners.iter().map(|l| l.held_count() as u64).sum(),
        sessions_live: live_count,
        sessions_total: now.sessions,
        bytes_to_tls: now.ended_to_tls + live_tls,
        bytes_to_socket: now.ended_to_socket + live_socket,
        handshakes_ok: now.handshakes_ok,
        handshakes_resumed: now.handshakes_resumed,
        handshakes_failed: now
            .handshakes_failed
            .iter()
            .map(|(r, n)| (r.label().to_string(), *n))
            .collect(),
        connect_failed: now.connect_failed.clone(),
        refused: now
            .refused
            .iter()
            .map(|(r, n)| (r.label().to_string(), *n))
            .collect(),
    }
}

/// Why `/healthz` fails for this service, if it does: paused (its far side is down), not
/// yet listening, or a listener not listening. Checking (one probe after a far side ended
/// badly, at most a few seconds, connections wait in the backlog) is still serving.
fn not_serving(s: &doc::ServiceStatus) -> Option<String> {
    match s.state.as_str() {
        "listening" | "checking" => None,
        "stopping" => Some(format!(
            "service [{}] stopping: the process is shutting down (SIGTERM), draining its sessions",
            s.name
        )),
        "paused" => Some(format!(
            "service [{}] paused: {}",
            s.name,
            s.state_reason.as_deref().unwrap_or("its far side is down")
        )),
        "starting" => Some(format!(
            "service [{}] not listening yet: its far side has not answered",
            s.name
        )),
        other => Some(format!("service [{}] {other}", s.name)),
    }
}

/// The process's figures from `/proc/self` (readable under the sandbox, which allows it).
fn process(sessions_live: usize) -> doc::Process {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given, nothing else.
    let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        0
    };
    doc::Process {
        rss_bytes: field("VmRSS:") * 1024,
        // The read_dir's own descriptor is among those it listed.
        open_fds: open_fds.saturating_sub(1),
        max_fds,
        threads: field("Threads:"),
        sessions_live: sessions_live as u64,
        connection_cap: registry().cap() as u64,
        unproven: registry().unproven_count() as u64,
    }
}

/// The certificates of the service and its SNI virtual hosts, as loaded when it was built.
fn certificates_of(_name: &str, ctx: &ServiceCtx) -> Vec<doc::Certificate> {
    ctx.all_certificates()
        .map(|c| doc::Certificate {
            service: c.service.clone(),
            role: c.role.label().to_string(),
            file: c.file.display().to_string(),
            subject: c.subject.clone(),
            not_after_unix: c.not_after_unix,
            serial: c.serial.clone(),
        })
        .collect()
}
