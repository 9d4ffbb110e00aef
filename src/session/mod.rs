//! One connection from accept to close, as a straight pipeline:
//! server mode `handshake → far side → relay`, client mode `far side → handshake → relay`;
//! then the closing lines. The far side is a `connect` target or an `exec` program. A
//! `protocol` adds its exchanges in clear (server: before the handshake, and after the far
//! side is reached; client: on the far connection before the handshake), and `socks` lets
//! the client name the far side inside TLS (docs/ARCHITECTURE.md, Connection flow).
//!
//! `spawn_session` admits an accepted connection (a sequential id, a slot under the
//! connection caps) and starts its thread; `spawn_session_here` runs it on the calling
//! thread (inetd mode, exec+connect services).
//!
//! Runs on its own thread (spawned by the service's listener thread, `accept`) and owns
//! both streams: they are closed when `run` returns, whatever happened. Never panics on
//! anything a peer sends; every failure ends this session only and is logged once.
//!
//! The TLS handshake and the waits before the relay are in `handshake.rs` (a leaf), the
//! error types in `error.rs`, the closing lines in `end.rs`.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use openssl::ssl::SslStream;

use crate::accounting::{
    registry, HeldSlot, LiveSession, NoUnprovenRoom, SessionGuard, TooManyClients, Unproven,
};
use crate::config::sockopt::Which;
use crate::config::types::LogId;
use crate::exec::{self, PeerInfo};
use crate::health::Trigger;
use crate::metrics::Refusal;
use crate::net::{self, Stream};
use crate::protocol;
use crate::relay::{self, FarSide, RelaySettings, Side};
use crate::repeats::{self, Watch};
use crate::service::ServiceCtx;

mod end;
mod error;
mod handshake;
use end::{log_session_end, End, Finish};
pub use error::{HandshakeFailure, SessionError, Setup};
use handshake::{dropped_for_room, handshake, reset_if_configured, still_unproven, BlockingTls};

/// Whether [`run`] returns once the relay threads own the session, or only when it ends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// A session thread: hand the relay to its two pump threads and exit, so the memory
    /// the handshake left behind (this thread's stack pages and glibc's per-thread cache
    /// of freed blocks) goes back while the session lives on.
    HandOff,
    /// inetd mode and exec+connect services: the caller moves on only after the session.
    Wait,
}

/// Serves one accepted connection: protocol, handshake, target, then the relay. `guard`
/// holds the session's slot and counters; it is released after the closing line.
/// `unproven`: its place among the sessions that have not completed a handshake (server
/// mode), given up once it has.
pub fn run(
    svc: Arc<ServiceCtx>,
    accepted: Stream,
    guard: SessionGuard,
    unproven: Option<Unproven>,
    completion: Completion,
) {
    let live = Arc::clone(guard.session());
    // Counted here, past every refusal (the caps, the unproven budget, no thread).
    svc.counters.session_admitted();
    let log_id = connection_log_id(svc.opts.log_id, live.id);
    crate::log::set_thread_context(&log_id, svc.opts.debug_level);
    // From here until it relays, a session from a source that keeps failing has its lines
    // held, and dropped if it fails too (`repeats`).
    let mut watch = Watch::begin(&svc.opts.name, accepted.peer_addr());
    log_notice!(
        "Service [{}] accepted connection from {}",
        svc.opts.name,
        live.peer
    );
    net::sockopt::apply_all(accepted.as_raw_fd(), &svc.opts.socket_options, Which::Local);
    let _ = accepted.set_nonblocking(false);
    let (ended_tx, ended_rx) = std::sync::mpsc::sync_channel::<()>(1);
    let closing_svc = Arc::clone(&svc);
    let mut finish: Option<Finish> = Some(Box::new(move |end| {
        log_session_end(&closing_svc, &guard, &end);
        drop(guard);
        let _ = ended_tx.send(());
    }));
    let to_relay = HandOff {
        live: &live,
        finish: &mut finish,
        watch: &mut watch,
    };
    let result = if svc.opts.client {
        client_session(&svc, accepted, to_relay)
    } else {
        server_session(&svc, accepted, unproven, to_relay)
    };
    if let Err(e) = result {
        let reason = e.to_string();
        match e {
            SessionError::ConnectFailed => {}
            // What a flood makes many of: a warning, not an error of this host.
            SessionError::DroppedForRoom { .. } => {
                svc.counters.refused(Refusal::UnprovenDropped);
                log_warning!(
                    "Service [{}]: connection from {} {reason}",
                    svc.opts.name,
                    live.peer
                )
            }
            _ => log_err!("{reason}"),
        }
        if let Some(finish) = finish.take() {
            finish(End::Failed(e));
        }
        watch.failed(&reason);
    }
    if completion == Completion::Wait {
        // Err only if the closure was dropped uncalled, which also means the end.
        let _ = ended_rx.recv();
    }
}

/// The id in this connection's log lines, by `logId`.
fn connection_log_id(kind: LogId, sequence: u64) -> String {
    match kind {
        LogId::Sequential => sequence.to_string(),
        LogId::Unique => random_base62_id(),
        // SAFETY: gettid has no arguments and cannot fail.
        LogId::Thread => unsafe { libc::gettid() }.to_string(),
        LogId::Process => std::process::id().to_string(),
    }
}

/// 22 base62 characters (about 131 random bits), the form stunnel uses for `logId = unique`.
fn random_base62_id() -> String {
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut bytes = [0u8; 22];
    let _ = openssl::rand::rand_bytes(&mut bytes);
    // 256 = 4 × 62 + 8: the slight bias is irrelevant for a log id.
    bytes
        .iter()
        .map(|b| DIGITS[usize::from(*b) % 62] as char)
        .collect()
}

fn server_session(
    svc: &ServiceCtx,
    accepted: Stream,
    unproven: Option<Unproven>,
    to_relay: HandOff<'_>,
) -> Result<(), SessionError> {
    // STARTTLS-style protocols talk in clear on the accepted connection first: unproven
    // still, and woken like the handshake's waits if dropped for room meanwhile.
    let negotiated = {
        let _armed = unproven
            .as_ref()
            .map(|u| u.arm(accepted.read_fd()))
            .transpose()
            .map_err(dropped_for_room)?;
        negotiate(svc, &accepted, None, |p| p.server_before_tls)
    };
    // Dropped for room: the exchange failed because of that shutdown, and says so.
    still_unproven(unproven.as_ref())
        .and(negotiated)
        .inspect_err(|_| reset_if_configured(svc, accepted.read_fd()))?;
    let mut tls = handshake(svc, accepted, None, unproven.as_ref())?;
    // The handshake (and the client certificate check inside it) is done: the session is
    // proven, and no longer limited by the unproven budget.
    if let Some(u) = unproven {
        u.prove();
    }
    // A client that named a virtual host (server `sni`) is served by that section: its
    // target, timeouts and logging level.
    let svc = match svc.virtual_host_for(tls.ssl()) {
        Some(host) => {
            log_info!("SNI: switched to service [{}]", host.opts.name);
            host.as_ref()
        }
        None => svc,
    };
    let redirected = needs_redirect(svc, tls.ssl());
    let mut peer = PeerInfo::from_peer(&to_relay.live.peer);
    if let Some(cert) = tls.ssl().peer_certificate() {
        peer.subject = Some(crate::tls::names::name_line(cert.subject_name()));
        peer.issuer = Some(crate::tls::names::name_line(cert.issuer_name()));
    }
    let chooser = svc
        .opts
        .protocol
        .and_then(protocol::find)
        .and_then(|p| p.server_chooses_target);
    let far = match chooser {
        // SOCKS: the client names the target inside TLS.
        Some(choose) if !redirected => {
            let deadline = Instant::now().checked_add(svc.opts.timeouts.busy);
            choose(
                &protocol_settings(svc),
                &mut BlockingTls {
                    tls: &mut tls,
                    deadline,
                },
            )
            .map_err(|why| SessionError::Protocol { name: None, why })
        }
        _ => far_side(svc, &peer, redirected, tls.get_ref()),
    }
    .inspect_err(|_| reset_if_configured(svc, tls.get_ref().read_fd()))?;
    negotiate(svc, tls.get_ref(), Some(&far), |p| p.server_before_relay)
        .inspect_err(|_| reset_if_configured(svc, tls.get_ref().read_fd()))?;
    relay_session(svc, tls, far, to_relay);
    Ok(())
}

fn client_session(
    svc: &ServiceCtx,
    accepted: Stream,
    to_relay: HandOff<'_>,
) -> Result<(), SessionError> {
    let far = far_side(
        svc,
        &PeerInfo::from_peer(&to_relay.live.peer),
        false,
        &accepted,
    )
    .inspect_err(|_| reset_if_configured(svc, accepted.read_fd()))?;
    negotiate(svc, &accepted, Some(&far), |p| p.client_before_tls)
        .inspect_err(|_| reset_if_configured(svc, accepted.read_fd()))?;
    let tls = handshake(svc, far, svc.sni.as_deref(), None).inspect_err(|e| {
        reset_if_configured(svc, accepted.read_fd());
        // The far side took the connection but could not hold a handshake: as good as
        // down. A refusal (certificate, alert) is a configuration problem, no pause.
        if e.far_side_gone() {
            svc.far_side_news(Trigger::Unreachable(e.to_string()));
        }
    })?;
    svc.far_side_reached();
    relay_session(svc, tls, accepted, to_relay);
    Ok(())
}

/// A `redirect` service whose client failed verification (or sent no certificate when
/// one is required) is sent to the redirect targets instead of `connect`.
fn needs_redirect(svc: &ServiceCtx, ssl: &openssl::ssl::SslRef) -> bool {
    if svc.opts.redirect.is_empty() {
        return false;
    }
    let failed = crate::tls::verify::redirect_index()
        .and_then(|index| ssl.ex_data(index))
        .is_none_or(|flag| flag.load(Ordering::SeqCst));
    let missing = svc.opts.tls.verify.require_cert && ssl.peer_certificate().is_none();
    failed || missing
}
/// Runs the `protocol` hook that `pick` selects for this side, if any, with TIMEOUTbusy
/// bounding every read of the exchange. `far` is `None` before the far side exists.
fn negotiate(
    svc: &ServiceCtx,
    local: &Stream,
    far: Option<&Stream>,
    pick: fn(&protocol::Protocol) -> Option<protocol::Hook>,
) -> Result<(), SessionError> {
    let Some(hook) = svc.opts.protocol.and_then(protocol::find).and_then(pick) else {
        return Ok(());
    };
    let reader = far.unwrap_or(local);
    reader.set_read_timeout(Some(svc.opts.timeouts.busy));
    let result = hook(&protocol::Exchange {
        settings: protocol_settings(svc),
        local,
        far,
    });
    reader.set_read_timeout(None);
    let name = svc.opts.protocol.unwrap_or("");
    result.map_err(|why| SessionError::Protocol {
        name: Some(name.to_string()),
        why,
    })?;
    log_info!("Protocol {name} negotiated");
    Ok(())
}

/// What `protocol` reads of a service's configuration.
fn protocol_settings(svc: &ServiceCtx) -> protocol::Settings<'_> {
    let opts = &svc.opts;
    protocol::Settings {
        host: opts.protocol_host.as_deref(),
        username: opts.protocol_username.as_deref(),
        password: opts.protocol_password.as_deref(),
        headers: &opts.protocol_headers,
        connect: svc.connect_spec(),
    }
}

/// The other end of the session: the `exec` program, or the first `connect` target that
/// answers.
fn far_side(
    svc: &ServiceCtx,
    peer: &PeerInfo,
    redirected: bool,
    accepted: &Stream,
) -> Result<Stream, SessionError> {
    if let Some(program) = svc
        .program()
        .filter(|_| !redirected && svc.opts.connect.is_empty())
    {
        return exec::spawn(&program, peer).map_err(|error| {
            SessionError::Setup(Setup::Exec {
                program: program.path.display().to_string(),
                error,
            })
        });
    }
    let addrs = if redirected {
        log_notice!("Redirecting connection: the client failed authentication");
        crate::service::resolve_all(&svc.opts.redirect)
            .inspect_err(|e| log_err!("{e}"))
            .map_err(|_| SessionError::ConnectFailed)?
    } else if svc.opts.transparent_destination {
        // transparent = destination: where the client meant to go before the firewall
        // sent it here.
        let original = accepted
            .original_destination()
            .map_err(|e| SessionError::Setup(Setup::OriginalDestination(e)))?;
        log_info!("Transparent destination: {}", net::display_addr(&original));
        vec![net::Addr::Inet(original)]
    } else {
        svc.target_addrs().ok_or(SessionError::ConnectFailed)?
    };
    // transparent = source: the target sees the client's address, not ours.
    let source = match accepted.peer_addr() {
        Some(client) if svc.opts.transparent_source => Some(net::connect::Source {
            ip: client.ip(),
            transparent: true,
        }),
        _ => svc.connect_spec().source,
    };
    let spec = net::connect::Spec {
        source,
        ..svc.connect_spec()
    };
    let (stream, from) = net::connect::connect_first(&addrs, &spec).map_err(|failure| {
        // A shortage here (EMFILE…) says nothing about the far side: no pause for it.
        if !redirected && !svc.opts.transparent_destination && !failure.local {
            svc.far_side_news(Trigger::Unreachable(failure.why));
        }
        SessionError::ConnectFailed
    })?;
    // A redirected session reached the `redirect` targets, which say nothing of `connect`.
    if redirected {
        svc.far_side_untested();
    } else if !svc.opts.client {
        svc.far_side_reached();
    }
    log_notice!(
        "Service [{}] connected remote server from {from}",
        svc.opts.name
    );
    Ok(stream)
}

/// What `run` gives a session for the relay hand-off: its registry entry, what ends it
/// (taken by the relay), and its place in the log tallies (told when it relays).
struct HandOff<'a> {
    live: &'a Arc<LiveSession>,
    finish: &'a mut Option<Finish>,
    watch: &'a mut Watch,
}

/// Hands the session to the relay's pump threads; `finish` goes with it.
fn relay_session(
    svc: &ServiceCtx,
    tls: SslStream<Stream>,
    plain: Stream,
    HandOff {
        live,
        finish,
        watch,
    }: HandOff<'_>,
) {
    let Some(finish) = finish.take() else {
        return;
    };
    // Proven: the lines held so far are written, before the pumps write theirs.
    watch.relayed();
    let finish: relay::Finish = Box::new(move |summary| finish(End::Relayed(summary)));
    let settings = RelaySettings {
        idle: svc.opts.timeouts.idle,
        close: svc.opts.timeouts.close,
        reset: svc.opts.reset,
        far: svc.pauses().then(|| FarSide {
            side: if svc.opts.client {
                Side::Tls
            } else {
                Side::Plain
            },
            health: Arc::clone(&svc.health),
        }),
    };
    relay::relay(
        tls,
        plain,
        settings,
        svc.opts.stack,
        (crate::log::thread_log_id(), svc.opts.debug_level),
        Arc::clone(live),
        finish,
    );
}
/// Connection ids as stunnel's `logId = sequential`: 0, 1, 2… across all services.
static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(0);

/// Takes a slot for a connection from `peer`, or logs the refusal (dropping `conn`
/// closes it). A server-mode TCP connection also takes a place among the unproven
/// sessions of its source (docs/ARCHITECTURE.md, Connection flow, Admission): refused if
/// its source has `unprovenPerSource` already (with RST under `reset = yes`); the oldest
/// unproven session makes room if `unprovenMax` are. A client-mode session is not counted:
/// its accepted side speaks in clear and its handshake is with the far side, so it has
/// nothing to prove; inetd and exec+connect sessions have no listener to flood.
fn admit(
    ctx: &ServiceCtx,
    conn: &Stream,
    peer: String,
    held: Option<HeldSlot>,
    counted: bool,
) -> Option<(SessionGuard, Option<Unproven>)> {
    let id = NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed);
    let admitted = registry().admit(
        id,
        &ctx.opts.name,
        &ctx.slots,
        peer.clone(),
        held,
        Arc::clone(&ctx.counters),
    );
    let guard = match admitted {
        Ok(guard) => guard,
        Err(TooManyClients { cap, per_service }) => {
            ctx.counters.refused(if per_service {
                Refusal::MaxConnections
            } else {
                Refusal::ConnectionCap
            });
            let why = format!("too many clients (>={cap})");
            if repeats::refused(&ctx.opts.name, conn.peer_addr(), &why) {
                log_warning!(
                    "Service [{}]: connection from {peer} rejected: {why}",
                    ctx.opts.name,
                );
            }
            return None;
        }
    };
    let source = conn.peer_addr().filter(|_| counted && !ctx.opts.client);
    let Some(source) = source else {
        return Some((guard, None));
    };
    match registry().admit_unproven(id, source.ip()) {
        // A session dropped to make room says so itself, through `repeats`.
        Ok((unproven, _dropped)) => Some((guard, Some(unproven))),
        Err(refusal) => {
            ctx.counters.refused(match refusal {
                NoUnprovenRoom::Source { .. } => Refusal::UnprovenPerSource,
                _ => Refusal::UnprovenMax,
            });
            let why = match refusal {
                NoUnprovenRoom::Source { limit } => format!(
                    "{limit} connections from {} have not completed a handshake for a second (unprovenPerSource)",
                    source.ip()
                ),
                NoUnprovenRoom::Total { limit } => format!(
                    "{limit} connections are completing a handshake, none yet for a second (unprovenMax)"
                ),
                NoUnprovenRoom::SourceHoldsAll { limit } => format!(
                    "{limit} connections from {} are completing a handshake, all there may be (unprovenMax)",
                    source.ip()
                ),
            };
            if repeats::refused(&ctx.opts.name, Some(source), &why) {
                log_warning!(
                    "Service [{}]: connection from {peer} rejected: {why}",
                    ctx.opts.name,
                );
            }
            reset_if_configured(ctx, conn.read_fd());
            None
        }
    }
}

/// Serves one connection on the calling thread (inetd mode, exec+connect services).
pub fn spawn_session_here(ctx: &Arc<ServiceCtx>, conn: Stream, peer: String) {
    if let Some((guard, unproven)) = admit(ctx, &conn, peer, None, false) {
        crate::session::run(Arc::clone(ctx), conn, guard, unproven, Completion::Wait);
    }
}

/// Takes a slot and hands the connection to a new session thread (or refuses it).
/// `held`: the slot it had while a paused listener held it, exchanged for the session's.
/// Returns the session's id if it started.
pub fn spawn_session(
    ctx: &Arc<ServiceCtx>,
    conn: Stream,
    peer: String,
    held: Option<HeldSlot>,
) -> Option<u64> {
    let (guard, unproven) = admit(ctx, &conn, peer, held, true)?;
    let id = guard.session().id;
    let source = conn.peer_addr();
    let ctx_for_thread = Arc::clone(ctx);
    let spawned = std::thread::Builder::new()
        .stack_size(ctx.opts.stack)
        .spawn(move || {
            crate::session::run(ctx_for_thread, conn, guard, unproven, Completion::HandOff)
        });
    match spawned {
        Ok(_) => Some(id),
        Err(e) => {
            ctx.counters.refused(Refusal::NoThread);
            let why = format!("cannot create a thread for a connection: {e}");
            if repeats::refused(&ctx.opts.name, source, &why) {
                log_err!("Service [{}]: {why}", ctx.opts.name);
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `logId`: the forms stunnel logs in the `[ID]` field of a connection's lines.
    #[test]
    fn log_ids_take_the_configured_form() {
        assert_eq!(connection_log_id(LogId::Sequential, 41), "41");
        assert_eq!(
            connection_log_id(LogId::Process, 0),
            std::process::id().to_string()
        );
        let unique = connection_log_id(LogId::Unique, 0);
        assert_eq!(unique.len(), 22);
        assert!(
            unique.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{unique}"
        );
        assert_ne!(unique, connection_log_id(LogId::Unique, 0));
        let thread: i64 = connection_log_id(LogId::Thread, 0).parse().unwrap();
        assert!(thread > 0);
    }
}
