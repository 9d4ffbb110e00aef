//! The budget of unproven sessions (accepted, handshake not completed; docs/ARCHITECTURE.md,
//! Unproven sessions): the limits (`UnprovenLimits`), the table by id and by source, who
//! is a suspect (`SUSPECT_AFTER`) and who is dropped for room, and a session's place in it
//! (`Unproven`, `Armed`). A leaf of `accounting`: the registry holds one `Budget` and
//! counts its refusals and drops. Must not know about TLS or sessions; the only socket call
//! is the shutdown(2) of a dropped session's armed descriptor.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::repeats::SourceKey;

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
    /// The session's id (what a drop for room reports).
    id: u64,
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
    /// By admission number, given under the lock with `since`, so that the front of the
    /// map is the oldest (session ids are taken before admission, on several threads, and
    /// need not arrive in order).
    by_seq: BTreeMap<u64, UnprovenEntry>,
    next_seq: u64,
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
            by_seq: BTreeMap::new(),
            next_seq: 0,
            by_source: None,
        }
    }

    /// How many of `key`'s sessions are suspects at `now`, counting no further than
    /// `enough`. The table is in admission order, so the suspects are at its front.
    fn suspects_from(&self, key: SourceKey, now: Instant, enough: usize) -> usize {
        self.suspects(now)
            .filter(|(_, e)| e.source == key)
            .take(enough)
            .count()
    }

    /// The suspects at `now`, oldest first: the front of the table.
    fn suspects(&self, now: Instant) -> impl Iterator<Item = (&u64, &UnprovenEntry)> {
        self.by_seq
            .iter()
            .take_while(move |(_, e)| now.saturating_duration_since(e.since) >= SUSPECT_AFTER)
    }

    /// The suspect to drop for room: the oldest of the source with the most suspects (a
    /// flood from a few addresses pushes out its own, not a slow honest client elsewhere,
    /// nor is a fresh burst's source taken for the flood), else the oldest suspect.
    /// `None` if nobody is a suspect. One pass over the suspects, only when the table is
    /// full.
    fn suspect_to_drop(&self, now: Instant) -> Option<u64> {
        let mut per_source: HashMap<SourceKey, (usize, u64)> = HashMap::new();
        let mut oldest = None;
        for (seq, entry) in self.suspects(now) {
            oldest = oldest.or(Some(*seq));
            per_source.entry(entry.source).or_insert((0, *seq)).0 += 1;
        }
        per_source
            .into_values()
            .filter(|(n, _)| *n > 1)
            .max_by_key(|(n, first)| (*n, std::cmp::Reverse(*first)))
            .map(|(_, first)| first)
            .or(oldest)
    }

    /// With no suspect and the table at `BURST` × `total`: the oldest session of a source
    /// holding more than `per_source`, fresh or not (two addresses reconnecting before
    /// their sessions become suspects would otherwise fill the table and lock everyone
    /// out). `None` if no source holds that many.
    fn crowding_to_drop(&self, per_source: usize) -> Option<u64> {
        let (busiest, n) = self
            .by_source
            .as_ref()?
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(k, n)| (*k, *n))?;
        if per_source == 0 || n <= per_source {
            return None;
        }
        self.by_seq
            .iter()
            .find(|(_, e)| e.source == busiest)
            .map(|(seq, _)| *seq)
    }

    /// Takes `id` out; its source's count goes down with it. `None` if it was not in.
    fn remove(&mut self, seq: u64) -> Option<UnprovenEntry> {
        let entry = self.by_seq.remove(&seq)?;
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
    /// Its source alone holds all of `unprovenMax` (`limit`), however fresh.
    SourceHoldsAll { limit: usize },
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

/// The unproven table behind its lock, as the registry holds it (`Registry::admit_unproven`
/// and the other `unproven` methods go through it).
pub(super) struct Budget {
    table: Mutex<UnprovenTable>,
}

impl Budget {
    pub(super) const fn new() -> Budget {
        Budget {
            table: Mutex::new(UnprovenTable::new()),
        }
    }

    fn table(&self) -> MutexGuard<'_, UnprovenTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn set_limits(&self, limits: UnprovenLimits) {
        self.table().limits = limits;
    }

    pub(super) fn limits(&self) -> UnprovenLimits {
        self.table().limits
    }

    pub(super) fn count(&self) -> usize {
        self.table().by_seq.len()
    }

    /// `Registry::admit_unproven` at `now`, without the counting.
    pub(super) fn admit(
        &'static self,
        id: u64,
        source: IpAddr,
        now: impl FnOnce() -> Instant,
    ) -> Result<(Unproven, Option<Evicted>), NoUnprovenRoom> {
        let key = SourceKey::of(Some(std::net::SocketAddr::new(source, 0)));
        let mut table = self.table();
        // Read under the lock, as the admission number is: the table stays in time order.
        let now = now();
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
            return Err(NoUnprovenRoom::Source {
                limit: limits.per_source,
            });
        }
        let full = limits.total != 0 && table.by_seq.len() >= limits.total;
        let mut victim = full.then(|| table.suspect_to_drop(now)).flatten();
        if full && victim.is_none() && table.by_seq.len() >= BURST * limits.total {
            victim = table.crowding_to_drop(limits.per_source);
            if victim.is_none() {
                return Err(NoUnprovenRoom::Total {
                    limit: BURST * limits.total,
                });
            }
        }
        // However fresh, one source never holds the whole budget by itself (counting the
        // room its own session would make).
        let own_victim = victim
            .and_then(|seq| table.by_seq.get(&seq))
            .is_some_and(|e| e.source == key);
        if limits.total != 0 && from(&table) - usize::from(own_victim) >= limits.total {
            return Err(NoUnprovenRoom::SourceHoldsAll {
                limit: limits.total,
            });
        }
        let mut evicted = None;
        if let Some(seq) = victim {
            if let Some(entry) = table.remove(seq) {
                if let Some(fd) = entry.armed {
                    // The session is waiting on `fd`, and cannot close it before it
                    // disarms, which takes this lock: `fd` is still its socket. The
                    // shutdown ends its poll (or blocking read) at once.
                    // SAFETY: shutdown on a live descriptor; no memory is passed.
                    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                }
                evicted = Some(Evicted { id: entry.id });
            }
        }
        let seq = table.next_seq;
        table.next_seq += 1;
        table.by_seq.insert(
            seq,
            UnprovenEntry {
                id,
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
        Ok((Unproven { budget: self, seq }, evicted))
    }
}

/// A session's place in the unproven table, from admission until its handshake completes
/// (`prove`) or it ends (`Drop`). While the session waits for its peer it arms the
/// descriptor it waits on (`arm`), so that a drop for room can wake it; it must disarm
/// (drop the `Armed`) before that descriptor can be closed: the drop's shutdown(2) runs
/// under the table's lock, which disarming takes, so it never reaches a reused number.
pub struct Unproven {
    budget: &'static Budget,
    /// Its admission number, the table's key.
    seq: u64,
}

/// A descriptor armed for a drop's shutdown; disarmed when dropped.
pub struct Armed<'a> {
    unproven: &'a Unproven,
}

impl Unproven {
    /// Arms `fd` (which the caller keeps open until the `Armed` is gone) while the session
    /// waits on it. `Err` if the session was dropped for room meanwhile.
    pub fn arm(&self, fd: RawFd) -> Result<Armed<'_>, Dropped> {
        let mut table = self.budget.table();
        let limit = table.limits.total;
        match table.by_seq.get_mut(&self.seq) {
            Some(entry) => {
                entry.armed = Some(fd);
                Ok(Armed { unproven: self })
            }
            None => Err(Dropped { limit }),
        }
    }

    /// `Err` if the session was dropped for room.
    pub fn check(&self) -> Result<(), Dropped> {
        let table = self.budget.table();
        match table.by_seq.contains_key(&self.seq) {
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
        self.budget.table().remove(self.seq);
        std::mem::forget(self);
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        let mut table = self.unproven.budget.table();
        if let Some(entry) = table.by_seq.get_mut(&self.unproven.seq) {
            entry.armed = None;
        }
    }
}

impl Drop for Unproven {
    fn drop(&mut self) {
        self.budget.table().remove(self.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::super::Registry;
    use super::*;

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
        assert!(r
            .unproven
            .table()
            .by_source
            .as_ref()
            .is_none_or(HashMap::is_empty));
    }

    /// The defect a review found: a burst of fresh handshakes from one NAT address was
    /// refused at `unprovenPerSource` and cut at `unprovenMax` although none was stale.
    /// Fresh handshakes are never refused per source (one source may hold `total`), and
    /// fill the table up to `BURST` times `unprovenMax`; then the oldest of a source
    /// holding more than `per_source` makes room (two addresses reconnecting before their
    /// sessions are suspects must not lock everyone out), and with no such source the
    /// newest is refused.
    #[test]
    fn a_burst_of_fresh_handshakes_is_not_limited() {
        let r = test_registry(2, 4);
        let now = Instant::now();
        let burst: Vec<_> = (0..(BURST * 4) as u64)
            .map(|id| r.admit_unproven_at(id, ip("192.0.2.1"), now))
            .collect();
        assert_eq!(burst.iter().filter(|a| a.is_ok()).count(), 4);
        assert_eq!(
            burst[4].as_ref().err(),
            Some(&NoUnprovenRoom::SourceHoldsAll { limit: 4 })
        );
        let others: Vec<_> = (100..104)
            .map(|id| r.admit_unproven_at(id, ip(&format!("192.0.2.{id}")), now))
            .collect();
        assert!(others.iter().all(|a| matches!(a, Ok((_, None)))), "no drop");
        let (_, evicted) = r
            .admit_unproven_at(200, ip("198.51.100.1"), now)
            .expect("room made");
        assert_eq!(
            evicted,
            Some(Evicted { id: 0 }),
            "the crowding source's oldest"
        );
        assert_eq!(r.unproven_refused_and_dropped(), (4, 1));

        let r = test_registry(4, 2);
        let spread: Vec<_> = (0..(BURST * 2) as u64)
            .map(|id| r.admit_unproven_at(id, ip(&format!("203.0.113.{id}")), now))
            .collect();
        assert!(spread.iter().all(Result::is_ok));
        assert_eq!(
            r.admit_unproven_at(9, ip("203.0.113.99"), now).err(),
            Some(NoUnprovenRoom::Total { limit: BURST * 2 })
        );
    }

    /// The defect a review found: the busiest source was counted over all its sessions,
    /// so a fresh NAT burst made the fallback drop the oldest suspect overall, an honest
    /// slow client. It is the source with the most suspects that gives one up.
    #[test]
    fn the_source_with_most_suspects_gives_one_up() {
        let r = test_registry(0, 10);
        let t0 = Instant::now();
        let later = t0 + SUSPECT_AFTER;
        let _honest = r.admit_unproven_at(1, ip("192.0.2.50"), t0).unwrap();
        let _flood: Vec<_> = (2..5)
            .map(|id| r.admit_unproven_at(id, ip("198.51.100.7"), t0).unwrap())
            .collect();
        let _nat: Vec<_> = (10..16)
            .map(|id| r.admit_unproven_at(id, ip("203.0.113.1"), later).unwrap())
            .collect();
        let (_, evicted) = r.admit_unproven_at(20, ip("192.0.2.99"), later).unwrap();
        assert_eq!(
            evicted,
            Some(Evicted { id: 2 }),
            "the flood's oldest, not 1"
        );
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
}
