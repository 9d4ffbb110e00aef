//! Connection accounting: which sessions are live (for SIGUSR2 and draining), the
//! connection cap, the RAII `SessionGuard` that holds a session's slot, the `HeldSlot`
//! of a connection a paused listener holds (it has a descriptor too), and the budget of
//! unproven sessions (`Unproven`: accepted, handshake not completed; per source address
//! and in total, the oldest dropped to make room; docs/ARCHITECTURE.md, Admission). Knows
//! nothing about TLS; the relay reports bytes into the `LiveSession` it is handed and
//! registers what wakes it for a drain. The only socket call is the shutdown(2) that wakes
//! an unproven session dropped for room, made on a descriptor its session armed.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::repeats::SourceKey;
use crate::wake::ThreadWaker;

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
    unproven: Mutex<UnprovenTable>,
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
            unproven: Mutex::new(UnprovenTable::new()),
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
    ) -> Result<SessionGuard, TooManyClients> {
        let cap = self.cap();
        let mut live = lock(&self.live);
        if let Some(slot) = held {
            // Released here, under the lock, rather than by its Drop.
            std::mem::forget(slot);
            self.held.fetch_sub(1, Ordering::SeqCst);
        }
        if !fits(live.len() + 1, self.held_count(), cap) {
            return Err(TooManyClients { cap });
        }
        // Checked and counted under the table's lock, so two accepts cannot both take the
        // service's last slot.
        if slots.cap != 0 && slots.live() >= slots.cap {
            return Err(TooManyClients { cap: slots.cap });
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

/// The unproven-session limits (`unprovenPerSource`, `unprovenMax`; 0 = no limit), as
/// numbers of sessions. The default total follows the connection cap (`default_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnprovenLimits {
    pub per_source: usize,
    pub total: usize,
}

impl UnprovenLimits {
    /// `unprovenPerSource` by default, at most: more than a fleet behind one NAT address
    /// handshakes at once after a server restart (docs/ARCHITECTURE.md, Unproven sessions).
    pub const PER_SOURCE: usize = 256;
    /// `unprovenMax` by default, at least: with a small connection cap a quarter of it
    /// would be a handful of handshakes, fewer than a burst of legitimate clients has in
    /// flight at once; the cap itself then limits them.
    pub const MIN_TOTAL: usize = 64;

    /// The limits `unprovenPerSource` and `unprovenMax` ask for (`None`: the default) under
    /// connection cap `cap`.
    pub fn new(per_source: Option<usize>, total: Option<usize>, cap: usize) -> UnprovenLimits {
        // A quarter of the cap: unproven sessions can never take the descriptors that
        // proven ones need.
        let total = total.unwrap_or_else(|| (cap / 4).max(UnprovenLimits::MIN_TOTAL));
        // At most half of the total, so that one address alone can never fill it and
        // push out everyone else's handshakes.
        let per_source = per_source.unwrap_or(match total {
            0 => UnprovenLimits::PER_SOURCE,
            total => UnprovenLimits::PER_SOURCE.min((total / 2).max(1)),
        });
        UnprovenLimits { per_source, total }
    }
}

/// How long a session may be unproven before it counts as a suspect: a handshake with a
/// live client takes a few round trips (milliseconds, even across continents), so one
/// still unproven after a second is slow or silent. Only suspects are refused or dropped:
/// a burst of fresh handshakes (a fleet reconnecting after a restart, maybe behind one
/// NAT address) is never limited, however large, except by the cap and by `BURST`.
pub const SUSPECT_AFTER: Duration = Duration::from_secs(1);
/// Fresh handshakes may take the table this many times over `unprovenMax` before the
/// newest is refused: the bound when nobody is yet old enough to drop.
const BURST: usize = 2;

/// One unproven session in the table.
struct UnprovenEntry {
    source: SourceKey,
    /// When it was admitted (`SUSPECT_AFTER`).
    since: Instant,
    /// The descriptor its session is waiting on now, if it is waiting (`Unproven::arm`):
    /// the one a drop for room shuts down.
    armed: Option<RawFd>,
}

/// The unproven sessions by id (ids rise with time: the first is the oldest) and their
/// count per source.
struct UnprovenTable {
    limits: UnprovenLimits,
    by_id: BTreeMap<u64, UnprovenEntry>,
    /// Counted as `repeats` counts failures: an IPv4 address (an IPv4-mapped IPv6 one as
    /// IPv4), an IPv6 /64. Made at the first admission (a `HashMap` with its random keys,
    /// which peers cannot aim collisions at, cannot be made in a `const`).
    by_source: Option<HashMap<SourceKey, usize>>,
}

impl UnprovenTable {
    const fn new() -> UnprovenTable {
        UnprovenTable {
            limits: UnprovenLimits {
                per_source: 0,
                total: 0,
            },
            by_id: BTreeMap::new(),
            by_source: None,
        }
    }

    /// How many of `key`'s sessions are suspects at `now`, counting no further than
    /// `enough`. The table is in admission order, so the suspects are at its front.
    fn suspects_from(&self, key: SourceKey, now: Instant, enough: usize) -> usize {
        self.by_id
            .values()
            .take_while(|e| now.saturating_duration_since(e.since) >= SUSPECT_AFTER)
            .filter(|e| e.source == key)
            .take(enough)
            .count()
    }

    /// The session to drop for room: the oldest suspect of the source with the most
    /// unproven sessions (a flood from two addresses then cannot push out a slow but
    /// honest client elsewhere), else the oldest suspect. `None` if nobody is a suspect.
    fn suspect_to_drop(&self, now: Instant) -> Option<u64> {
        let busiest = self
            .by_source
            .as_ref()
            .and_then(|m| m.iter().max_by_key(|(_, n)| **n))
            // A source with one session is no flood: then simply the oldest.
            .filter(|(_, n)| **n > 1)
            .map(|(k, _)| *k);
        let mut oldest = None;
        for (id, entry) in self
            .by_id
            .iter()
            .take_while(|(_, e)| now.saturating_duration_since(e.since) >= SUSPECT_AFTER)
        {
            if Some(entry.source) == busiest {
                return Some(*id);
            }
            oldest = oldest.or(Some(*id));
        }
        oldest
    }

    /// Takes `id` out; its source's count goes down with it. `None` if it was not in.
    fn remove(&mut self, id: u64) -> Option<UnprovenEntry> {
        let entry = self.by_id.remove(&id)?;
        let by_source = self.by_source.get_or_insert_with(HashMap::new);
        if let Some(n) = by_source.get_mut(&entry.source) {
            *n -= 1;
            if *n == 0 {
                by_source.remove(&entry.source);
            }
        }
        Some(entry)
    }
}

/// Why `Registry::admit_unproven` refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoUnprovenRoom {
    /// Its source has `limit` suspects already (`unprovenPerSource`), or holds the whole
    /// of `unprovenMax` by itself.
    Source { limit: usize },
    /// `BURST` × `unprovenMax` are unproven and none is old enough to be dropped.
    Total { limit: usize },
}

/// An unproven session dropped to make room for a newer one (`unprovenMax` reached).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// `unprovenMax`.
    pub limit: usize,
}

/// What `admit_unproven` did to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    pub id: u64,
}

impl Registry {
    /// Sets the unproven-session limits (at startup and on reload); sessions already in the
    /// table stay.
    pub fn set_unproven_limits(&self, limits: UnprovenLimits) {
        lock(&self.unproven).limits = limits;
    }

    pub fn unproven_limits(&self) -> UnprovenLimits {
        lock(&self.unproven).limits
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
        self.admit_unproven_at(id, source, Instant::now())
    }

    fn admit_unproven_at(
        &'static self,
        id: u64,
        source: IpAddr,
        now: Instant,
    ) -> Result<(Unproven, Option<Evicted>), NoUnprovenRoom> {
        let key = SourceKey::of(Some(std::net::SocketAddr::new(source, 0)));
        let mut table = lock(&self.unproven);
        let limits = table.limits;
        let from = |table: &UnprovenTable| {
            table
                .by_source
                .as_ref()
                .and_then(|m| m.get(&key).copied())
                .unwrap_or(0)
        };
        if limits.per_source != 0
            && from(&table) >= limits.per_source
            && table.suspects_from(key, now, limits.per_source) >= limits.per_source
        {
            self.unproven_refused.fetch_add(1, Ordering::Relaxed);
            return Err(NoUnprovenRoom::Source {
                limit: limits.per_source,
            });
        }
        let full = limits.total != 0 && table.by_id.len() >= limits.total;
        let suspect = full.then(|| table.suspect_to_drop(now)).flatten();
        if full && suspect.is_none() && table.by_id.len() >= BURST * limits.total {
            self.unproven_refused.fetch_add(1, Ordering::Relaxed);
            return Err(NoUnprovenRoom::Total {
                limit: BURST * limits.total,
            });
        }
        // However fresh, one source never holds the whole budget by itself (counting the
        // room its own suspect would make).
        let own_suspect = suspect
            .and_then(|id| table.by_id.get(&id))
            .is_some_and(|e| e.source == key);
        if limits.total != 0 && from(&table) - usize::from(own_suspect) >= limits.total {
            self.unproven_refused.fetch_add(1, Ordering::Relaxed);
            return Err(NoUnprovenRoom::Source {
                limit: limits.total,
            });
        }
        let mut evicted = None;
        if let Some(oldest) = suspect {
            if let Some(entry) = table.remove(oldest) {
                if let Some(fd) = entry.armed {
                    // The session is waiting on `fd`, and cannot close it before it
                    // disarms, which takes this lock: `fd` is still its socket. The
                    // shutdown ends its poll (or blocking read) at once.
                    // SAFETY: shutdown on a live descriptor; no memory is passed.
                    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                }
                self.unproven_dropped.fetch_add(1, Ordering::Relaxed);
                evicted = Some(Evicted { id: oldest });
            }
        }
        table.by_id.insert(
            id,
            UnprovenEntry {
                source: key,
                since: now,
                armed: None,
            },
        );
        *table
            .by_source
            .get_or_insert_with(HashMap::new)
            .entry(key)
            .or_insert(0) += 1;
        Ok((Unproven { registry: self, id }, evicted))
    }

    /// Unproven sessions now.
    pub fn unproven_count(&self) -> usize {
        lock(&self.unproven).by_id.len()
    }

    /// Connections refused by `unprovenPerSource`, and unproven sessions dropped for room
    /// under `unprovenMax`, since the start.
    pub fn unproven_refused_and_dropped(&self) -> (u64, u64) {
        (
            self.unproven_refused.load(Ordering::Relaxed),
            self.unproven_dropped.load(Ordering::Relaxed),
        )
    }
}

/// A session's place in the unproven table, from admission until its handshake completes
/// (`prove`) or it ends (`Drop`). While the session waits for its peer it arms the
/// descriptor it waits on (`arm`), so that a drop for room can wake it; it must disarm
/// (drop the `Armed`) before that descriptor can be closed: the drop's shutdown(2) runs
/// under the table's lock, which disarming takes, so it never reaches a reused number.
pub struct Unproven {
    registry: &'static Registry,
    id: u64,
}

/// A descriptor armed for a drop's shutdown; disarmed when dropped.
pub struct Armed<'a> {
    unproven: &'a Unproven,
}

impl Unproven {
    /// Arms `fd` (which the caller keeps open until the `Armed` is gone) while the session
    /// waits on it. `Err` if the session was dropped for room meanwhile.
    pub fn arm(&self, fd: RawFd) -> Result<Armed<'_>, Dropped> {
        let mut table = lock(&self.registry.unproven);
        let limit = table.limits.total;
        match table.by_id.get_mut(&self.id) {
            Some(entry) => {
                entry.armed = Some(fd);
                Ok(Armed { unproven: self })
            }
            None => Err(Dropped { limit }),
        }
    }

    /// `Err` if the session was dropped for room.
    pub fn check(&self) -> Result<(), Dropped> {
        let table = lock(&self.registry.unproven);
        match table.by_id.contains_key(&self.id) {
            true => Ok(()),
            false => Err(Dropped {
                limit: table.limits.total,
            }),
        }
    }

    /// The handshake completed: the session leaves the table for good. It is proven even
    /// if it was dropped for room meanwhile (while it was not waiting, so no shutdown
    /// reached it): ending it now would free nothing, its place is already given away.
    pub fn prove(self) {
        lock(&self.registry.unproven).remove(self.id);
        std::mem::forget(self);
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        let mut table = lock(&self.unproven.registry.unproven);
        if let Some(entry) = table.by_id.get_mut(&self.unproven.id) {
            entry.armed = None;
        }
    }
}

impl Drop for Unproven {
    fn drop(&mut self) {
        lock(&self.registry.unproven).remove(self.id);
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
        let a = r.admit(1_000_001, "s", &service, "p".into(), None).unwrap();
        let b = r.admit(1_000_002, "s", &service, "p".into(), None).unwrap();
        // The service's own cap of 2 is reached; another service still has room.
        assert!(matches!(
            r.admit(1_000_003, "s", &service, "p".into(), None),
            Err(TooManyClients { cap: 2 })
        ));
        let c = r.admit(1_000_004, "o", &other, "p".into(), None).unwrap();
        // Now the process-wide cap of 3 is reached for everyone.
        assert!(matches!(
            r.admit(1_000_005, "o", &other, "p".into(), None),
            Err(TooManyClients { cap: 3 })
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
        let d = r.admit(1_000_006, "o", &other, "p".into(), None).unwrap();
        let e = r.admit(1_000_007, "o", &other, "p".into(), None).unwrap();
        assert!(matches!(
            r.admit(1_000_008, "o", &other, "p".into(), None),
            Err(TooManyClients { cap: 4 })
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
        let f = r.admit(1_000_009, "o", &other, "p".into(), Some(h1));
        assert!(
            matches!(f, Err(TooManyClients { cap: 4 })),
            "a held connection turned session needs two descriptors, not one"
        );
        drop(e);
        let g = r
            .admit(1_000_010, "o", &other, "p".into(), Some(h2))
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

    fn test_registry(per_source: usize, total: usize) -> &'static Registry {
        let r: &'static Registry = Box::leak(Box::new(Registry::new()));
        r.set_unproven_limits(UnprovenLimits { per_source, total });
        r
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The defaults under the connection caps of common open-file limits: 16 (a test's 96),
    /// 480 (1024), 9,968 (20,000), 32,736 (65,536, the shipped systemd units).
    #[test]
    fn default_limits_follow_the_cap() {
        let default = |cap| UnprovenLimits::new(None, None, cap);
        let limits = |per_source, total| UnprovenLimits { per_source, total };
        assert_eq!(default(16), limits(32, 64));
        assert_eq!(default(480), limits(60, 120));
        assert_eq!(default(9_968), limits(256, 2_492));
        assert_eq!(default(32_736), limits(256, 8_184));
        assert_eq!(UnprovenLimits::new(None, Some(0), 480), limits(256, 0));
        assert_eq!(UnprovenLimits::new(None, Some(10), 480), limits(5, 10));
        assert_eq!(UnprovenLimits::new(Some(0), None, 480), limits(0, 120));
        assert_eq!(UnprovenLimits::new(Some(7), Some(3), 480), limits(7, 3));
    }

    /// Per source: once a source's sessions are suspects (unproven for a second) the
    /// limit refuses the next one from that source (IPv6 by /64) and nobody else's; a
    /// session proven or ended gives its place back.
    #[test]
    fn per_source_limit_refuses_only_that_source() {
        let r = test_registry(2, 0);
        let t0 = Instant::now();
        let later = t0 + SUSPECT_AFTER;
        let (a, _) = r.admit_unproven_at(1, ip("2001:db8::1"), t0).unwrap();
        let (b, _) = r.admit_unproven_at(2, ip("2001:db8::2"), t0).unwrap();
        let (d, _) = r.admit_unproven_at(3, ip("127.0.0.2"), t0).unwrap();
        let (e, _) = r.admit_unproven_at(4, ip("::ffff:127.0.0.2"), t0).unwrap();
        assert_eq!(
            r.admit_unproven_at(5, ip("2001:db8::ffff"), later).err(),
            Some(NoUnprovenRoom::Source { limit: 2 }),
            "same /64"
        );
        let (c, _) = r
            .admit_unproven_at(6, ip("2001:db8:0:1::1"), later)
            .unwrap();
        assert!(
            r.admit_unproven_at(7, ip("127.0.0.2"), later).is_err(),
            "mapped counts as IPv4"
        );
        assert_eq!(r.unproven_refused_and_dropped(), (2, 0));
        a.prove();
        drop(d);
        let (f, _) = r.admit_unproven_at(8, ip("2001:db8::3"), later).unwrap();
        let (g, _) = r.admit_unproven_at(9, ip("127.0.0.2"), later).unwrap();
        assert_eq!(r.unproven_count(), 5);
        drop((b, c, e, f, g));
        assert_eq!(r.unproven_count(), 0);
        assert!(lock(&r.unproven)
            .by_source
            .as_ref()
            .is_none_or(HashMap::is_empty));
    }

    /// The defect a review found: a burst of fresh handshakes from one NAT address was
    /// refused at `unprovenPerSource` and cut at `unprovenMax` although none was stale.
    /// Fresh handshakes are never refused per source, and fill the table up to `BURST`
    /// times `unprovenMax` before the newest is refused.
    #[test]
    fn a_burst_of_fresh_handshakes_is_not_limited() {
        let r = test_registry(2, 4);
        let now = Instant::now();
        let burst: Vec<_> = (0..(BURST * 4) as u64)
            .map(|id| r.admit_unproven_at(id, ip("192.0.2.1"), now))
            .collect();
        // The source alone may hold `total` at most.
        assert_eq!(burst.iter().filter(|a| a.is_ok()).count(), 4);
        let others: Vec<_> = (100..104)
            .map(|id| r.admit_unproven_at(id, ip(&format!("192.0.2.{id}")), now))
            .collect();
        assert!(others.iter().all(|a| matches!(a, Ok((_, None)))), "no drop");
        assert_eq!(
            r.admit_unproven_at(200, ip("198.51.100.1"), now).err(),
            Some(NoUnprovenRoom::Total { limit: BURST * 4 })
        );
        assert_eq!(r.unproven_refused_and_dropped(), (5, 0));
    }

    /// Total: a suspect makes room, the oldest of the busiest source first, its armed
    /// descriptor shut down (its peer sees the end at once); it learns it was dropped when
    /// it disarms. A session whose handshake completed is proven even if dropped.
    #[test]
    fn total_limit_drops_the_busiest_sources_oldest_suspect() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let r = test_registry(0, 3);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let t0 = Instant::now();
        let later = t0 + SUSPECT_AFTER;
        let (honest, none) = r.admit_unproven_at(10, ip("10.0.0.1"), t0).unwrap();
        assert_eq!(none, None);
        let (s2, _) = r.admit_unproven_at(11, ip("10.0.0.2"), t0).unwrap();
        let (s3, _) = r.admit_unproven_at(12, ip("10.0.0.2"), t0).unwrap();
        let armed = s2.arm(server.as_raw_fd()).unwrap();
        // 10.0.0.2 holds the most: its oldest, 11, goes, not the older 10.
        let (s4, evicted) = r.admit_unproven_at(13, ip("10.0.0.4"), later).unwrap();
        assert_eq!(evicted, Some(Evicted { id: 11 }));
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(client.read(&mut [0u8; 1]).unwrap(), 0, "the peer sees EOF");
        drop(armed);
        assert_eq!(s2.check(), Err(Dropped { limit: 3 }));
        assert!(s2.arm(server.as_raw_fd()).is_err());
        // Sources now hold one each: the oldest suspect, 10, goes next.
        let (_s5, evicted) = r.admit_unproven_at(14, ip("10.0.0.5"), later).unwrap();
        assert_eq!(evicted, Some(Evicted { id: 10 }));
        honest.prove();
        assert_eq!(s4.check(), Ok(()));
        assert_eq!(s3.check(), Ok(()));
        assert_eq!(r.unproven_refused_and_dropped(), (0, 2));
        assert_eq!(r.unproven_count(), 3);
    }

    #[test]
    fn cap_follows_the_fd_limit() {
        assert!(cap_from_fd_limit() >= 1);
    }
}
