//! Connection accounting: which sessions are live (for SIGUSR2 and draining), the
//! connection cap, the RAII `SessionGuard` that holds a session's slot, the `HeldSlot`
//! of a connection a paused listener holds (it has a descriptor too), and the budget of
//! unproven sessions (`Unproven`: accepted, handshake not completed; per source address
//! and in total, the oldest dropped to make room; docs/ARCHITECTURE.md, Admission). Knows
//! nothing about TLS; the relay reports bytes into the `LiveSession` it is handed and
//! registers what wakes it for a drain. The only socket call is the shutdown(2) that wakes
//! an unproven session dropped for room, made on a descriptor its session armed.
//!
//! This file holds the registry, the caps and the slots; `unproven.rs` (a leaf) the
//! unproven-session table and its rules, which the registry holds and counts.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::metrics::ServiceCounters;
use crate::wake::ThreadWaker;

mod unproven;

use unproven::Budget;
pub use unproven::{
    Armed, Dropped, Evicted, NoUnprovenRoom, Unproven, UnprovenLimits, SUSPECT_AFTER,
};

/// File descriptors one session holds: its two sockets (the relay wakes its pumps with
/// signals, not descriptors; see `wake::ThreadWaker`). A `pty` exec session holds one
/// more (the pty and its clone); the EMFILE back-off on accept covers that overshoot.
pub const FDS_PER_SESSION: usize = 2;
/// Descriptors kept back for listeners, logs, signals and reloads.
const RESERVED_FDS: usize = 64;

/// One live session, shared by its threads and the registry.
pub struct LiveSession {
    pub id: u64,
    pub service: String,
    pub peer: String,
    pub started: Instant,
    pub sent_to_tls: AtomicU64,
    pub sent_to_socket: AtomicU64,
    /// Kicked to make the relay notice a drain.
    wake: Mutex<Option<Arc<ThreadWaker>>>,
    /// Its service's counters, which get its bytes when it ends (`SessionGuard`'s drop).
    counters: Arc<ServiceCounters>,
}

impl LiveSession {
    /// The relay registers what wakes its plain→TLS pump.
    pub fn set_drain_wake(&self, wake: Arc<ThreadWaker>) {
        *lock(&self.wake) = Some(wake);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The process-wide table of live sessions.
pub struct Registry {
    live: Mutex<BTreeMap<u64, Arc<LiveSession>>>,
    emptied: Condvar,
    count: AtomicUsize,
    cap: AtomicUsize,
    /// Connections held by paused listeners (`HeldSlot`s): each holds a descriptor, so
    /// they count against `cap` with the live sessions.
    held: AtomicUsize,
    draining: AtomicBool,
    /// Sessions that have proven nothing yet (see `Unproven`).
    unproven: Budget,
    /// Connections refused because their source had `unprovenPerSource` unproven ones,
    /// and unproven sessions dropped to make room under `unprovenMax`, since the start.
    unproven_refused: AtomicU64,
    unproven_dropped: AtomicU64,
}

static REGISTRY: Registry = Registry::new();

impl Registry {
    /// An empty registry with no cap. The process has one (`registry`); tests make their
    /// own, so that changing a cap cannot race other tests' sessions.
    const fn new() -> Registry {
        Registry {
            live: Mutex::new(BTreeMap::new()),
            emptied: Condvar::new(),
            count: AtomicUsize::new(0),
            cap: AtomicUsize::new(usize::MAX),
            held: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            unproven: Budget::new(),
            unproven_refused: AtomicU64::new(0),
            unproven_dropped: AtomicU64::new(0),
        }
    }
}

pub fn registry() -> &'static Registry {
    &REGISTRY
}

/// The default cap, like stunnel's: what the fd limit (RLIMIT_NOFILE) can hold.
pub fn cap_from_fd_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
    } else {
        1024
    };
    (soft.saturating_sub(RESERVED_FDS) / FDS_PER_SESSION).max(1)
}

/// Refusal: the process-wide cap, or the service's own, is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyClients {
    pub cap: usize,
    /// The service's `maxConnections`, not the process-wide cap.
    pub per_service: bool,
}

/// One service's share: how many of its sessions are live, and how many may be
/// (`maxConnections`; 0 means only the process-wide cap applies).
#[derive(Debug, Default)]
pub struct ServiceSlots {
    pub cap: usize,
    live: AtomicUsize,
}

impl ServiceSlots {
    pub fn new(cap: usize) -> ServiceSlots {
        ServiceSlots {
            cap,
            live: AtomicUsize::new(0),
        }
    }

    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }
}

impl Registry {
    pub fn set_cap(&self, cap: usize) {
        self.cap.store(cap.max(1), Ordering::SeqCst);
    }

    pub fn cap(&self) -> usize {
        self.cap.load(Ordering::SeqCst)
    }

    /// Takes a slot for a new session, or refuses when the cap is reached. A connection a
    /// paused listener held gives its `HeldSlot` back in the same step, under the table's
    /// lock, so that nobody can take the room it had between the two.
    pub fn admit(
        &'static self,
        id: u64,
        service: &str,
        slots: &Arc<ServiceSlots>,
        peer: String,
        held: Option<HeldSlot>,
        counters: Arc<ServiceCounters>,
    ) -> Result<SessionGuard, TooManyClients> {
        let cap = self.cap();
        let mut live = lock(&self.live);
        if let Some(slot) = held {
            // Released here, under the lock, rather than by its Drop.
            std::mem::forget(slot);
            self.held.fetch_sub(1, Ordering::SeqCst);
        }
        if !fits(live.len() + 1, self.held_count(), cap) {
            return Err(TooManyClients {
                cap,
                per_service: false,
            });
        }
        // Checked and counted under the table's lock, so two accepts cannot both take the
        // service's last slot.
        if slots.cap != 0 && slots.live() >= slots.cap {
            return Err(TooManyClients {
                cap: slots.cap,
                per_service: true,
            });
        }
        slots.live.fetch_add(1, Ordering::SeqCst);
        let session = Arc::new(LiveSession {
            id,
            service: service.to_string(),
            peer,
            started: Instant::now(),
            sent_to_tls: AtomicU64::new(0),
            sent_to_socket: AtomicU64::new(0),
            wake: Mutex::new(None),
            counters,
        });
        live.insert(id, Arc::clone(&session));
        self.count.store(live.len(), Ordering::SeqCst);
        crate::memory::sessions_rose_to(live.len());
        Ok(SessionGuard {
            registry: self,
            session,
            slots: Arc::clone(slots),
        })
    }

    pub fn live_count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Room for a connection a paused listener takes out of its backlog to hold (see
    /// `listeners`), or `None`: a reconnect storm during a pause must not fill the
    /// descriptor table, nor take the room of services that are up. A held connection has
    /// one descriptor where a session has `FDS_PER_SESSION`, and all held connections
    /// together may use at most a quarter of the descriptors the cap allows. Checked under
    /// the table's lock, as `admit` is.
    pub fn hold(&'static self) -> Result<HeldSlot, NoRoom> {
        let live = lock(&self.live);
        let cap = self.cap();
        let held = self.held_count();
        let share = (cap.saturating_mul(FDS_PER_SESSION) / 4).max(1);
        if held >= share {
            return Err(NoRoom::HeldShare { held });
        }
        if !fits(live.len(), held + 1, cap) {
            return Err(NoRoom::Cap {
                live: live.len(),
                held,
            });
        }
        self.held.fetch_add(1, Ordering::SeqCst);
        Ok(HeldSlot { registry: self })
    }

    /// Whether a held connection served now would be admitted: its session's descriptors
    /// fit beside the others (its own held one counted as given back), and its service
    /// has a slot left. A listener serving held connections stops at the first that would
    /// not, rather than see it refused and closed; it tries again later.
    pub fn room_for_held(&self, slots: &ServiceSlots) -> bool {
        let live = lock(&self.live);
        let held = self.held_count().saturating_sub(1);
        fits(live.len() + 1, held, self.cap()) && (slots.cap == 0 || slots.live() < slots.cap)
    }

    /// Connections held by paused listeners now.
    pub fn held_count(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// Whether session `id` is still live.
    pub fn is_live(&self, id: u64) -> bool {
        lock(&self.live).contains_key(&id)
    }

    /// A snapshot of the live sessions, oldest first.
    pub fn snapshot(&self) -> Vec<Arc<LiveSession>> {
        lock(&self.live).values().cloned().collect()
    }

    /// The live sessions, and what `read` reads, both under the table's lock: an ending
    /// session adds its bytes to its service's counters under it, so counters read by
    /// `read` plus the bytes of the sessions listed count every session once (a scrape's
    /// byte totals never go back).
    pub fn snapshot_with<R>(&self, read: impl FnOnce() -> R) -> (Vec<Arc<LiveSession>>, R) {
        let live = lock(&self.live);
        let read = read();
        (live.values().cloned().collect(), read)
    }

    /// Whether the process is shutting down: relays finish what they have and close.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Starts a drain: every live relay is woken to close gracefully.
    pub fn start_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        for session in self.snapshot() {
            if let Some(wake) = lock(&session.wake).as_ref() {
                wake.kick();
            }
        }
    }

    /// Waits until no session is live or `timeout` has passed; true if none is live.
    pub fn wait_empty(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut live = lock(&self.live);
        while !live.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            live = self
                .emptied
                .wait_timeout(live, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// Why `Registry::hold` refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRoom {
    /// Held connections already take their share, a quarter of the cap's descriptors.
    HeldShare { held: usize },
    /// Sessions and held connections fill the connection cap.
    Cap { live: usize, held: usize },
    /// The service's own `maxConnections` is reached (decided by the caller, which knows
    /// the service).
    ServiceCap,
}

impl std::fmt::Display for NoRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoRoom::HeldShare { held } => write!(
                f,
                "held connections take their share of the connection cap ({held} held, a quarter of its descriptors)"
            ),
            NoRoom::Cap { live, held } => {
                write!(f, "connection cap reached ({live} live, {held} held)")
            }
            NoRoom::ServiceCap => write!(f, "maxConnections reached for the service"),
        }
    }
}

/// Whether `live` sessions and `held` connections fit the descriptors of `cap` sessions.
fn fits(live: usize, held: usize, cap: usize) -> bool {
    live.saturating_mul(FDS_PER_SESSION).saturating_add(held) <= cap.saturating_mul(FDS_PER_SESSION)
}

/// The slot of a held connection; dropping it (the connection is served, which takes a
/// session slot in its place, or closed) frees it.
pub struct HeldSlot {
    registry: &'static Registry,
}

impl Drop for HeldSlot {
    fn drop(&mut self) {
        self.registry.held.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A session's slot; dropping it frees the slot and removes the session from the table.
pub struct SessionGuard {
    registry: &'static Registry,
    session: Arc<LiveSession>,
    slots: Arc<ServiceSlots>,
}

impl SessionGuard {
    pub fn session(&self) -> &Arc<LiveSession> {
        &self.session
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let remaining = {
            let mut live = lock(&self.registry.live);
            live.remove(&self.session.id);
            // Under the lock that `snapshot_with` reads under: a scrape sees this session's
            // bytes either among the live or among the ended, never both or neither.
            let s = &self.session;
            s.counters.add_ended_bytes(
                s.sent_to_tls.load(Ordering::SeqCst),
                s.sent_to_socket.load(Ordering::SeqCst),
            );
            self.slots.live.fetch_sub(1, Ordering::SeqCst);
            self.registry.count.store(live.len(), Ordering::SeqCst);
            if live.is_empty() {
                self.registry.emptied.notify_all();
            }
            live.len()
        };
        crate::memory::sessions_fell_to(remaining);
    }
}

impl Registry {
    /// Sets the unproven-session limits (at startup and on reload); sessions already in the
    /// table stay.
    pub fn set_unproven_limits(&self, limits: UnprovenLimits) {
        self.unproven.set_limits(limits);
    }

    pub fn unproven_limits(&self) -> UnprovenLimits {
        self.unproven.limits()
    }

    /// Counts session `id` from `source` as unproven until its `Unproven` is proven or
    /// dropped (docs/ARCHITECTURE.md, Unproven sessions). Only suspects (unproven for
    /// `SUSPECT_AFTER`) are held against anyone: refused if its source has `per_source`
    /// suspects (or alone holds `total`); if `total` are unproven a suspect is dropped
    /// first (taken out of the table, its armed descriptor shut down so that its wait
    /// ends at once) and returned so the caller can say so; with no suspect to drop, fresh
    /// handshakes may fill `BURST` × `total` before the newest is refused.
    pub fn admit_unproven(
        &'static self,
        id: u64,
        source: IpAddr,
    ) -> Result<(Unproven, Option<Evicted>), NoUnprovenRoom> {
        self.admit_unproven_with(id, source, Instant::now)
    }

    #[cfg(test)]
    fn admit_unproven_at(
        &'static self,
        id: u64,
        source: IpAddr,
        now: Instant,
    ) -> Result<(Unproven, Option<Evicted>), NoUnprovenRoom> {
        self.admit_unproven_with(id, source, move || now)
    }

    fn admit_unproven_with(
        &'static self,
        id: u64,
        source: IpAddr,
        now: impl FnOnce() -> Instant,
    ) -> Result<(Unproven, Option<Evicted>), NoUnprovenRoom> {
        let admitted = self.unproven.admit(id, source, now);
        // Counted here, the table only decides.
        match &admitted {
            Err(_) => {
                self.unproven_refused.fetch_add(1, Ordering::Relaxed);
            }
            Ok((_, Some(_))) => {
                self.unproven_dropped.fetch_add(1, Ordering::Relaxed);
            }
            Ok((_, None)) => {}
        }
        admitted
    }

    /// Unproven sessions now.
    pub fn unproven_count(&self) -> usize {
        self.unproven.count()
    }

    /// Connections refused by the unproven budget (per source, or all of it in flight),
    /// and unproven sessions dropped for room
    /// under `unprovenMax`, since the start.
    pub fn unproven_refused_and_dropped(&self) -> (u64, u64) {
        (
            self.unproven_refused.load(Ordering::Relaxed),
            self.unproven_dropped.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A registry of the test's own: the process-wide one is shared with every other test
    // that opens sessions, and a cap set here would refuse theirs.
    #[test]
    fn admit_cap_release_and_wait() {
        let r: &'static Registry = Box::leak(Box::new(Registry::new()));
        r.set_cap(3);
        let service = Arc::new(ServiceSlots::new(2));
        let other = Arc::new(ServiceSlots::new(0));
        let a = r
            .admit(
                1_000_001,
                "s",
                &service,
                "p".into(),
                None,
                Default::default(),
            )
            .unwrap();
        let b = r
            .admit(
                1_000_002,
                "s",
                &service,
                "p".into(),
                None,
                Default::default(),
            )
            .unwrap();
        // The service's own cap of 2 is reached; another service still has room.
        assert!(matches!(
            r.admit(
                1_000_003,
                "s",
                &service,
                "p".into(),
                None,
                Default::default()
            ),
            Err(TooManyClients {
                cap: 2,
                per_service: true
            })
        ));
        let c = r
            .admit(1_000_004, "o", &other, "p".into(), None, Default::default())
            .unwrap();
        // Now the process-wide cap of 3 is reached for everyone.
        assert!(matches!(
            r.admit(1_000_005, "o", &other, "p".into(), None, Default::default()),
            Err(TooManyClients {
                cap: 3,
                per_service: false
            })
        ));
        assert_eq!(r.live_count(), 3);
        assert_eq!(
            r.snapshot().iter().map(|s| s.id).collect::<Vec<_>>(),
            vec![1_000_001, 1_000_002, 1_000_004]
        );
        drop(a);
        drop(c);
        assert_eq!(service.live(), 1);
        // Connections a paused listener holds count against the cap by their descriptors
        // (one each, a session two), and together take at most a quarter of them (issue
        // 14's third read, F1: they were not counted, and a reconnect storm during a pause
        // could fill the descriptor table; a second read: nor may they starve the other
        // services).
        r.set_cap(4);
        let h1 = r.hold().expect("room for a held connection");
        let h2 = r.hold().expect("room for a second");
        assert_eq!(
            r.hold().err(),
            Some(NoRoom::HeldShare { held: 2 }),
            "two held use the quarter of 4 × 2 descriptors"
        );
        assert!(
            r.room_for_held(&other),
            "one served: 2 sessions + 1 held fit 8"
        );
        // b and two held (2 + 2 of 8 descriptors): room for two more sessions, not three.
        let d = r
            .admit(1_000_006, "o", &other, "p".into(), None, Default::default())
            .unwrap();
        let e = r
            .admit(1_000_007, "o", &other, "p".into(), None, Default::default())
            .unwrap();
        assert!(matches!(
            r.admit(1_000_008, "o", &other, "p".into(), None, Default::default()),
            Err(TooManyClients {
                cap: 4,
                per_service: false
            })
        ));
        assert!(
            !r.room_for_held(&other),
            "3 sessions + 1 held: no room to serve one"
        );
        assert!(
            !r.room_for_held(&other),
            "3 sessions + 1 held: no room to serve one"
        );
        // A held connection served gives its room to its own session, in one step.
        let f = r.admit(
            1_000_009,
            "o",
            &other,
            "p".into(),
            Some(h1),
            Default::default(),
        );
        assert!(
            matches!(
                f,
                Err(TooManyClients {
                    cap: 4,
                    per_service: false
                })
            ),
            "a held connection turned session needs two descriptors, not one"
        );
        drop(e);
        let g = r
            .admit(
                1_000_010,
                "o",
                &other,
                "p".into(),
                Some(h2),
                Default::default(),
            )
            .expect("room again");
        drop((d, g));
        r.set_cap(3);
        assert_eq!(r.held_count(), 0);
        assert!(!r.wait_empty(Duration::from_millis(20)));
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(b);
        });
        assert!(r.wait_empty(Duration::from_secs(5)));
        t.join().unwrap();
        assert_eq!(service.live(), 0);
        r.set_cap(usize::MAX);
    }

    #[test]
    fn cap_follows_the_fd_limit() {
        assert!(cap_from_fd_limit() >= 1);
    }
}
