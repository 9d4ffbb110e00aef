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
//! * reopened: the held connections are served by `Release`: the first alone (the canary)
//!   until a session reaches the far side, then the rest, one at a time while the service
//!   stays open; new connections are accepted as usual meanwhile.
//!
//! Owns the waiting, the probing schedule and the canary. Must not change the health state
//! except through `Health::probed`, nor accept new connections (that is `accept`).

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::accounting::{registry, HeldSlot};
use crate::health::{self, Probe, Verdict};
use crate::listeners::{BoundService, Listener};
use crate::net::{self, Stream};
use crate::service::ServiceCtx;
use crate::session::spawn_session;
use crate::wake::{self, WakeFd};

/// How the connections a pause held are served once the service is open again. The first
/// is the canary: served alone, and the others wait until a session reaches the far side,
/// so a far side that answered a probe and fails again at once (a flapping link, a target
/// restarting) costs one held connection, not all of them. Only the held connections wait:
/// the listener accepts new ones as usual meanwhile, so a canary whose client stalls its
/// handshake holds up nobody else.
#[derive(Debug)]
pub(crate) enum Release {
    /// The next held connection served is a canary. Where every listener thread starts
    /// (a reload during a canary's wait picks a new one) and where a reopening returns.
    Canary,
    /// A canary is out: its session, the `reached` count before it, and how long it may
    /// take.
    Waiting {
        id: u64,
        before: health::News,
        deadline: Instant,
    },
    /// A session reached the far side (or the canary's time passed): the rest are served
    /// one at a time while the service stays open.
    Open,
}

impl Release {
    /// Serves what may be served of the held connections now. Returns how soon to call
    /// again while a canary is out (its end is not signalled, only its news), else `None`.
    pub(crate) fn step(&mut self, service: &BoundService) -> Option<Duration> {
        let ctx = &service.ctx;
        let health = &ctx.health;
        if !ctx.pauses() {
            // A reload turned the option off: nothing to wait for.
            while let Some((_, conn, peer, slot)) = next_held(service) {
                spawn_session(ctx, conn, peer, Some(slot));
            }
            self.reset(health);
            return None;
        }
        loop {
            if !health.is_open() {
                return None;
            }
            match *self {
                Release::Canary => {
                    let (conn, peer, slot) = match next_servable(service) {
                        Servable::Held(conn, peer, slot) => (conn, peer, slot),
                        Servable::Nothing => return None,
                        Servable::NoRoom => return Some(NO_ROOM_RETRY),
                    };
                    let before = health.news_count();
                    // No thread: the next one is the canary.
                    if let Some(id) = spawn_session(ctx, conn, peer, Some(slot)) {
                        log_debug!(
                            "Service [{}]: serving the first held connection alone until it reaches the far side",
                            ctx.opts.name
                        );
                        health.watch(true);
                        *self = Release::Waiting {
                            id,
                            before,
                            deadline: Instant::now() + canary_budget(ctx),
                        };
                    }
                }
                Release::Waiting {
                    id,
                    before,
                    deadline,
                } => {
                    let now = Instant::now();
                    let news = health.news_count();
                    if news.reached != before.reached {
                        self.settle(ctx, "reached the far side", Release::Open);
                    } else if news.untested != before.untested {
                        // Redirected: its session tells nothing of the `connect` targets.
                        self.settle(ctx, "was redirected", Release::Canary);
                    } else if !registry().is_live(id) {
                        // It ended without reaching the far side (its client gave up):
                        // that tells nothing, and the next held one is the canary.
                        self.settle(ctx, "ended before reaching the far side", Release::Canary);
                    } else if now >= deadline {
                        self.settle(ctx, "had no news in its time", Release::Open);
                    } else {
                        // Woken at once by news of the far side (`watch`); the end of the
                        // session is looked for every 50 ms.
                        return Some((deadline - now).min(Duration::from_millis(50)));
                    }
                }
                Release::Open => match next_servable(service) {
                    Servable::Held(conn, peer, slot) => {
                        spawn_session(ctx, conn, peer, Some(slot));
                    }
                    Servable::Nothing => return None,
                    Servable::NoRoom => return Some(NO_ROOM_RETRY),
                },
            }
        }
    }

    fn settle(&mut self, ctx: &ServiceCtx, what: &str, next: Release) {
        log_debug!(
            "Service [{}]: the first held connection {what}",
            ctx.opts.name
        );
        ctx.health.watch(false);
        *self = next;
    }

    /// Back to `Canary` (the service reopens after another pause).
    pub(crate) fn reset(&mut self, health: &health::Health) {
        health.watch(false);
        *self = Release::Canary;
    }
}

/// The oldest held connection of any of the service's listeners, with its listener.
fn next_held(service: &BoundService) -> Option<(&Listener, Stream, String, HeldSlot)> {
    service.listeners.iter().find_map(|l| {
        let (conn, peer, slot) = l.next_held()?;
        Some((l.as_ref(), conn, peer, slot))
    })
}

/// What `next_servable` found.
enum Servable {
    Held(Stream, String, HeldSlot),
    /// Nothing is held.
    Nothing,
    /// The oldest held connection would not be admitted now: it was put back at the front
    /// (kept for later rather than refused and closed).
    NoRoom,
}

/// The oldest held connection, if the connection caps have room to serve it now.
fn next_servable(service: &BoundService) -> Servable {
    let Some((listener, conn, peer, slot)) = next_held(service) else {
        return Servable::Nothing;
    };
    if registry().room_for_held(&service.ctx.slots) {
        Servable::Held(conn, peer, slot)
    } else {
        listener.hold_again(conn, peer, slot);
        Servable::NoRoom
    }
}

/// How soon to try again when the connection cap has no room to serve a held connection.
const NO_ROOM_RETRY: Duration = Duration::from_millis(100);

/// How long the held connections wait for their canary: as long as its session may take
/// to reach the far side (its handshake, TIMEOUTbusy, and each target's TIMEOUTconnect),
/// at most `CANARY_WAIT_MAX`, plus a moment for the news to arrive.
fn canary_budget(ctx: &ServiceCtx) -> Duration {
    let targets = ctx
        .connect_addrs
        .as_ref()
        .map_or(ctx.opts.connect.len(), Vec::len)
        .max(1) as u32;
    let budget = ctx
        .opts
        .timeouts
        .busy
        .saturating_add(ctx.opts.timeouts.connect.saturating_mul(targets));
    budget.min(CANARY_WAIT_MAX) + Duration::from_millis(100)
}

/// The longest held connections wait for their canary.
const CANARY_WAIT_MAX: Duration = Duration::from_secs(30);

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
    // Held connections count against the service's own maxConnections too.
    let refuse = |listeners: &[Arc<Listener>]| {
        for l in listeners {
            let held: usize = listeners.iter().map(|l| l.held_count()).sum();
            let room =
                (ctx.slots.cap != 0).then(|| ctx.slots.cap.saturating_sub(ctx.slots.live() + held));
            l.pause(name, &ctx.counters, room);
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
        connect: net::connect::Spec {
            timeout,
            // A probe is not a session: the sessions' failed connects are what is counted.
            failures: None,
            ..ctx.connect_spec()
        },
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
        let server = service(&format!(
            "[r1]\ncert = /nonexistent.pem\nTIMEOUTbusy = 2\n{two}"
        ));
        assert_eq!(canary_budget(&server), Duration::from_millis(10_100));
        let client = service(&format!("[r2]\nclient = yes\nTIMEOUTbusy = 3\n{two}"));
        assert_eq!(canary_budget(&client), Duration::from_millis(11_100));
        let slow = service("[r3]\nclient = yes\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:1\nTIMEOUTconnect = 60\nTIMEOUTbusy = 1\n");
        assert_eq!(
            canary_budget(&slow),
            CANARY_WAIT_MAX + Duration::from_millis(100)
        );
    }
}
