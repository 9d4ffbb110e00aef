//! A pausing service's listener while its far side is not open, and its reopening
//! (`pauseWhenDown`; the state is `health`):
//! * starting: the sockets are bound but do not listen yet (connects are refused, no
//!   client lands in a backlog a failed probe would reset); the first probe runs at once
//!   and they listen the moment it answers;
//! * checking (after one abnormal session end): no accept, but the sockets keep listening,
//!   so connections wait in the backlog for the length of one probe and are served when it
//!   answers (the usual case: a failed request of a live backend refuses nobody);
//! * paused (a probe failed, or a connect did): the sockets stop listening
//!   (`Listener::pause`, connects refused), the connections already in the backlog are
//!   held (as far as the connection cap has room) and the far side is probed with back-off;
//! * reopened: the first connection served is a canary, served alone until a session
//!   reaches the far side; then the held ones, one at a time while the service stays open.
//!
//! Owns the waiting, the probing schedule and the canary. Must not change the health state
//! except through `Health::probed`, nor accept new connections (that is `accept`).

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::accounting::registry;
use crate::health::{self, Probe, Verdict};
use crate::listeners::{BoundService, Listener};
use crate::net::{self, Stream};
use crate::service::ServiceCtx;
use crate::session::spawn_session;
use crate::wake::{self, WakeFd};

/// How far `serve_held` got.
pub(crate) enum Served {
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
pub(crate) fn serve_held(service: &BoundService, stop: &WakeFd, canary: &mut bool) -> Served {
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
pub(crate) enum Canary {
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
pub(crate) fn serve_canary(
    service: &BoundService,
    conn: Stream,
    peer: String,
    stop: &WakeFd,
) -> Canary {
    let ctx = &service.ctx;
    let health = &ctx.health;
    let before = health.reached_count();
    health.watch(true);
    let Some(id) = spawn_session(ctx, conn, peer) else {
        health.watch(false);
        return Canary::NoNews;
    };
    let deadline = Instant::now() + canary_budget(ctx);
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

/// How long a listener waits for its canary: as long as the session may take to reach the
/// far side (each target's TIMEOUTconnect, and in client mode its handshake, TIMEOUTbusy),
/// at most `CANARY_WAIT_MAX`, plus a moment for the news to arrive.
fn canary_budget(ctx: &ServiceCtx) -> Duration {
    let targets = ctx
        .connect_addrs
        .as_ref()
        .map_or(ctx.opts.connect.len(), Vec::len)
        .max(1) as u32;
    let mut budget = ctx.opts.timeouts.connect.saturating_mul(targets);
    if ctx.opts.client {
        budget += ctx.opts.timeouts.busy;
    }
    budget.min(CANARY_WAIT_MAX) + Duration::from_millis(100)
}

/// The longest a listener waits for its canary (a service with many slow targets would
/// otherwise make every other client wait for minutes).
const CANARY_WAIT_MAX: Duration = Duration::from_secs(15);

/// While the service is not open: do not accept, probe with back-off until the far side
/// answers. Checking or starting, the sockets stay as they are (listening, or at startup
/// bound and not listening yet), so one probe after a failed request refuses nobody; once a
/// probe has failed (paused) they stop listening, holding what waited in the backlog.
/// Returns true when the far side answers (the caller listens again and serves what was
/// held), false when the listener is to stop (its sockets stay as they are: a reload's
/// next thread carries on with them).
pub(crate) fn wait_for_far_side(
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
pub(crate) fn probe_far_side(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn service(text: &str) -> Arc<ServiceCtx> {
        let config = crate::config::parse_bytes("t.conf", text.as_bytes()).expect("valid");
        crate::service::build(&config, false)
            .expect("builds")
            .pop()
            .expect("one service")
    }

    #[test]
    fn the_canary_waits_as_long_as_its_connect_may_take_and_no_longer() {
        let two = "accept = 127.0.0.1:0\nconnect = 127.0.0.1:1\nconnect = 127.0.0.1:2\nTIMEOUTconnect = 4\n";
        let server = service(&format!("[r1]\ncert = /nonexistent.pem\n{two}"));
        assert_eq!(canary_budget(&server), Duration::from_millis(8_100));
        let client = service(&format!("[r2]\nclient = yes\nTIMEOUTbusy = 3\n{two}"));
        assert_eq!(canary_budget(&client), Duration::from_millis(11_100));
        let slow = service("[r3]\nclient = yes\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:1\nTIMEOUTconnect = 60\n");
        assert_eq!(
            canary_budget(&slow),
            CANARY_WAIT_MAX + Duration::from_millis(100)
        );
    }
}
