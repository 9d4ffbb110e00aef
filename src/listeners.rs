//! The listening sockets of services, shared across reloads: a `Listener` is bound once
//! and handed to the next configuration while its address stays the same, so no
//! connection is refused during a reload. Also what a paused listener holds: the
//! connections taken out of its backlog when it stopped listening (`pauseWhenDown`, see
//! `resume`), each counted against the connection cap.
//!
//! Owns the sockets, their pause tokens and the held connections. Binding happens before
//! any thread exists (so the caller can fork). Must not accept for sessions (that is
//! `accept`) or probe.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

use crate::accounting::{registry, HeldSlot, NoRoom};
use crate::net::listen::{ListenSocket, Paused};
use crate::net::{self, Addr, Stream};
use crate::service::{ServiceCtx, StartupError};

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
    /// Counts it against the connection cap while it waits.
    slot: HeldSlot,
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
    /// far as their share of the connection cap has room (`Registry::hold`): held connections keep a
    /// descriptor each, and a reconnect storm during a pause must not fill the table.
    /// `room`: how many more the service may hold (its `maxConnections` less what is live
    /// and held), `None` for no limit of its own.
    /// `counters`: the service's, which count the connections reset for lack of room.
    pub(crate) fn pause(
        &self,
        service: &str,
        counters: &crate::metrics::ServiceCounters,
        mut room: Option<usize>,
    ) {
        let mut slot = locked(&self.paused);
        if slot.is_some() {
            return;
        }
        let mut held = locked(&self.held);
        let before = held.len();
        let mut full = None;
        let paused = self.socket.pause(|conn, peer| {
            let admitted = match room {
                Some(0) => Err(NoRoom::ServiceCap),
                _ => registry().hold(),
            };
            match admitted {
                Ok(slot) => {
                    held.push_back(Held { conn, peer, slot });
                    room = room.map(|r| r - 1);
                    true
                }
                Err(why) => {
                    full = Some(why);
                    counters.refused(crate::metrics::Refusal::HeldNoRoom);
                    net::set_linger_reset(conn.read_fd());
                    false
                }
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
        if let Some(why) = full {
            log_warning!(
                "Service [{service}]: {why}: the connections still waiting on {} are reset",
                self.bound
            );
        }
    }

    /// Listens (and accepts) again. `Ok(true)` if it was paused; on `Err` it stays paused,
    /// for the caller to retry.
    pub(crate) fn resume(&self) -> io::Result<bool> {
        let mut slot = locked(&self.paused);
        let Some(p) = *slot else {
            return Ok(false);
        };
        self.socket.resume(p)?;
        *slot = None;
        Ok(true)
    }

    pub(crate) fn listening(&self) -> bool {
        locked(&self.paused).is_none()
    }

    /// accept() said EINVAL: the socket is not listening (whatever took it out). Noted as a
    /// pause, so that `resume` listens again (with back-off) instead of accept() failing
    /// in a loop. False if that cannot be done (a Unix socket), for the caller to treat
    /// it as any other accept error.
    pub(crate) fn lost_listening(&self) -> bool {
        let mut slot = locked(&self.paused);
        if slot.is_none() {
            *slot = self.socket.not_listening();
        }
        slot.is_some()
    }

    /// The oldest held connection, with the slot that counts it (to be exchanged for a
    /// session's, `Registry::admit`).
    /// Connections whose client gave up while held (closed without sending anything) are
    /// dropped here, never made sessions: after a long outage that may be most of them.
    pub(crate) fn next_held(&self) -> Option<(Stream, String, HeldSlot)> {
        loop {
            let held = locked(&self.held).pop_front()?;
            if net::listen::client_gave_up(&held.conn) {
                log_debug!(
                    "Held connection from {} closed by its client while held: dropped",
                    held.peer
                );
                continue;
            }
            return Some((held.conn, held.peer, held.slot));
        }
    }

    /// Puts a connection `next_held` gave back at the front (there was no room to serve it).
    pub(crate) fn hold_again(&self, conn: Stream, peer: String, slot: HeldSlot) {
        locked(&self.held).push_front(Held { conn, peer, slot });
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
/// the same configured address (taken out of `reuse`). A service fails only if none of
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
