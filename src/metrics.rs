//! The counters behind the status endpoint (docs/ARCHITECTURE.md, Monitoring): one
//! `ServiceCounters` per service name in a process-wide table that outlives reloads (a
//! reload keeps the counters of the services that stay, `keep_only`), and the process's
//! own (`process()`: reloads, certificate reloads, the start time).
//!
//! Cheap on purpose: every counter is an atomic bumped with `Relaxed` where the event
//! happens, and nothing here is touched per record — a session's bytes are its own
//! `accounting::LiveSession` counters while it lives (the relay already keeps them) and
//! are added to its service's here once, when it ends (`add_ended_bytes`, under the
//! registry's lock, so a scrape that sums both never counts a session twice or not at all).
//! The one lock, `ServiceCounters::connect_failed`'s, is taken only for a failed connect.
//!
//! A leaf: imports nothing of the crate. Must not log, do I/O or know what a session is.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Why a TLS handshake failed, as the metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeReason {
    /// A certificate was refused: ours by the peer (its alert), or the peer's by us.
    Verify,
    /// No common protocol version, cipher or group, or a message that breaks the protocol
    /// (a plain-text client on a TLS port).
    Protocol,
    /// TIMEOUTbusy passed.
    Timeout,
    /// The connection was reset or closed mid-handshake.
    Reset,
    /// Anything else (dropped for room, a poll error).
    Other,
}

impl HandshakeReason {
    pub const ALL: [HandshakeReason; 5] = [
        HandshakeReason::Verify,
        HandshakeReason::Protocol,
        HandshakeReason::Timeout,
        HandshakeReason::Reset,
        HandshakeReason::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            HandshakeReason::Verify => "verify",
            HandshakeReason::Protocol => "protocol",
            HandshakeReason::Timeout => "timeout",
            HandshakeReason::Reset => "reset",
            HandshakeReason::Other => "other",
        }
    }
}

/// Why a connection was refused (or dropped) before it could be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The process-wide connection cap (from the open-file limit).
    ConnectionCap,
    /// The service's `maxConnections`.
    MaxConnections,
    /// `unprovenPerSource`: its source has that many sessions stuck before their handshake.
    UnprovenPerSource,
    /// `unprovenMax`: too many sessions before their handshake in all.
    UnprovenMax,
    /// Dropped before its handshake completed, to make room (`unprovenMax`).
    UnprovenDropped,
    /// A paused listener had no room to hold it (reset).
    HeldNoRoom,
    /// No thread could be created for it.
    NoThread,
}

impl Refusal {
    pub const ALL: [Refusal; 7] = [
        Refusal::ConnectionCap,
        Refusal::MaxConnections,
        Refusal::UnprovenPerSource,
        Refusal::UnprovenMax,
        Refusal::UnprovenDropped,
        Refusal::HeldNoRoom,
        Refusal::NoThread,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::ConnectionCap => "connection_cap",
            Refusal::MaxConnections => "max_connections",
            Refusal::UnprovenPerSource => "unproven_per_source",
            Refusal::UnprovenMax => "unproven_max",
            Refusal::UnprovenDropped => "unproven_dropped",
            Refusal::HeldNoRoom => "held_no_room",
            Refusal::NoThread => "no_thread",
        }
    }
}

/// Targets tallied per service; a service with more (`redirect` to many, `transparent =
/// destination` to anywhere) counts the rest under [`OTHER_TARGETS`].
pub const MAX_TARGETS: usize = 64;
/// The label of the targets past [`MAX_TARGETS`].
pub const OTHER_TARGETS: &str = "other";

/// One service's counters (by name: a reload that keeps the name keeps them).
#[derive(Debug, Default)]
pub struct ServiceCounters {
    /// Sessions admitted (each gets a slot and a session id).
    sessions: AtomicU64,
    /// Bytes of the sessions that ended, each way.
    ended_to_tls: AtomicU64,
    ended_to_socket: AtomicU64,
    handshakes_ok: AtomicU64,
    /// Of `handshakes_ok`, those that resumed a session (a ticket or the cache).
    handshakes_resumed: AtomicU64,
    handshakes_failed: [AtomicU64; HandshakeReason::ALL.len()],
    refused: [AtomicU64; Refusal::ALL.len()],
    /// Failed connects to the far side, by target as the log names it.
    connect_failed: Mutex<BTreeMap<String, u64>>,
}

impl ServiceCounters {
    pub fn session_admitted(&self) {
        self.sessions.fetch_add(1, Relaxed);
    }

    /// A session ended having moved these bytes. Called under the registry's lock (see
    /// the header), once per session.
    pub fn add_ended_bytes(&self, to_tls: u64, to_socket: u64) {
        self.ended_to_tls.fetch_add(to_tls, Relaxed);
        self.ended_to_socket.fetch_add(to_socket, Relaxed);
    }

    pub fn handshake_done(&self, resumed: bool) {
        self.handshakes_ok.fetch_add(1, Relaxed);
        if resumed {
            self.handshakes_resumed.fetch_add(1, Relaxed);
        }
    }

    pub fn handshake_failed(&self, why: HandshakeReason) {
        self.handshakes_failed[why as usize].fetch_add(1, Relaxed);
    }

    pub fn refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Relaxed);
    }

    pub fn connect_failed(&self, target: &str) {
        let mut map = self
            .connect_failed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let key = if map.contains_key(target) || map.len() < MAX_TARGETS {
            target
        } else {
            OTHER_TARGETS
        };
        *map.entry(key.to_string()).or_insert(0) += 1;
    }

    /// What the counters say now.
    pub fn read(&self) -> CountersNow {
        CountersNow {
            sessions: self.sessions.load(Relaxed),
            ended_to_tls: self.ended_to_tls.load(Relaxed),
            ended_to_socket: self.ended_to_socket.load(Relaxed),
            handshakes_ok: self.handshakes_ok.load(Relaxed),
            handshakes_resumed: self.handshakes_resumed.load(Relaxed),
            handshakes_failed: HandshakeReason::ALL
                .map(|r| (r, self.handshakes_failed[r as usize].load(Relaxed))),
            refused: Refusal::ALL.map(|r| (r, self.refused[r as usize].load(Relaxed))),
            connect_failed: self
                .connect_failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// A copy of one service's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountersNow {
    pub sessions: u64,
    pub ended_to_tls: u64,
    pub ended_to_socket: u64,
    pub handshakes_ok: u64,
    pub handshakes_resumed: u64,
    pub handshakes_failed: [(HandshakeReason, u64); HandshakeReason::ALL.len()],
    pub refused: [(Refusal, u64); Refusal::ALL.len()],
    pub connect_failed: BTreeMap<String, u64>,
}

fn table() -> &'static Mutex<HashMap<String, Arc<ServiceCounters>>> {
    static TABLE: OnceLock<Mutex<HashMap<String, Arc<ServiceCounters>>>> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

/// The counters of the service called `name`, made on first use.
pub fn service(name: &str) -> Arc<ServiceCounters> {
    let mut t = table().lock().unwrap_or_else(|e| e.into_inner());
    Arc::clone(t.entry(name.to_string()).or_default())
}

/// After a reload: forget the services that are gone, once nothing holds their counters
/// any more. A removed service whose sessions still run keeps its entry (unlisted: only
/// running services are), so that one added back under its name continues from it: its
/// old sessions' bytes, added when they end, and the live ones summed by name, are one
/// count, and a scrape's totals never go back.
pub fn keep_only(names: &[&str]) {
    let mut t = table().lock().unwrap_or_else(|e| e.into_inner());
    t.retain(|name, counters| names.contains(&name.as_str()) || Arc::strong_count(counters) > 1);
}

/// Every service's counters, by name.
pub fn all() -> BTreeMap<String, Arc<ServiceCounters>> {
    let t = table().lock().unwrap_or_else(|e| e.into_inner());
    t.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect()
}

/// The process's own counters.
#[derive(Debug)]
pub struct ProcessCounters {
    pub started: Instant,
    pub started_unix: u64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Seconds since the epoch of the last good reload, 0 = none yet.
    pub last_reload_ok_unix: AtomicU64,
    /// Reloads of TLS contexts because their files changed (`watchCertificates`).
    pub certificate_reloads_ok: AtomicU64,
    pub certificate_reloads_failed: AtomicU64,
}

pub fn process() -> &'static ProcessCounters {
    static PROCESS: OnceLock<ProcessCounters> = OnceLock::new();
    PROCESS.get_or_init(|| ProcessCounters {
        started: Instant::now(),
        started_unix: unix_now(),
        reloads_ok: AtomicU64::new(0),
        reloads_failed: AtomicU64::new(0),
        last_reload_ok_unix: AtomicU64::new(0),
        certificate_reloads_ok: AtomicU64::new(0),
        certificate_reloads_failed: AtomicU64::new(0),
    })
}

impl ProcessCounters {
    pub fn reloaded(&self, ok: bool) {
        if ok {
            self.reloads_ok.fetch_add(1, Relaxed);
            self.last_reload_ok_unix.store(unix_now(), Relaxed);
        } else {
            self.reloads_failed.fetch_add(1, Relaxed);
        }
    }

    pub fn certificates_reloaded(&self, ok: bool) {
        if ok {
            self.certificate_reloads_ok.fetch_add(1, Relaxed);
        } else {
            self.certificate_reloads_failed.fetch_add(1, Relaxed);
        }
    }
}

/// Seconds since the epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each event moves its own counter by one; the rest stay.
    #[test]
    fn each_event_moves_its_counter() {
        let c = ServiceCounters::default();
        c.session_admitted();
        c.handshake_done(false);
        c.handshake_done(true);
        c.handshake_failed(HandshakeReason::Verify);
        c.handshake_failed(HandshakeReason::Verify);
        c.refused(Refusal::MaxConnections);
        c.add_ended_bytes(10, 20);
        c.connect_failed("127.0.0.1:1");
        let now = c.read();
        assert_eq!(
            (now.sessions, now.handshakes_ok, now.handshakes_resumed),
            (1, 2, 1)
        );
        assert_eq!((now.ended_to_tls, now.ended_to_socket), (10, 20));
        assert_eq!(now.handshakes_failed[0], (HandshakeReason::Verify, 2));
        assert!(now.handshakes_failed[1..].iter().all(|(_, n)| *n == 0));
        assert_eq!(now.refused[1], (Refusal::MaxConnections, 1));
        assert_eq!(now.connect_failed.get("127.0.0.1:1"), Some(&1));
    }

    /// A service connecting anywhere cannot grow the target map without bound.
    #[test]
    fn targets_past_the_bound_are_counted_together() {
        let c = ServiceCounters::default();
        for i in 0..MAX_TARGETS + 10 {
            c.connect_failed(&format!("192.0.2.1:{i}"));
        }
        c.connect_failed("192.0.2.1:0");
        let failed = c.read().connect_failed;
        assert_eq!(failed.len(), MAX_TARGETS + 1);
        assert_eq!(failed.get(OTHER_TARGETS), Some(&10));
        assert_eq!(failed.get("192.0.2.1:0"), Some(&2));
    }

    /// A reload keeps the counters of the services that stay, and of a removed one whose
    /// sessions still hold them; it forgets the rest.
    #[test]
    fn a_reload_keeps_the_counters_of_services_that_stay() {
        service("metrics-test-stays").session_admitted();
        service("metrics-test-goes").session_admitted();
        let held = service("metrics-test-held");
        held.session_admitted();
        let all: Vec<String> = all().into_keys().collect();
        let mut names: Vec<&str> = all
            .iter()
            .map(String::as_str)
            .filter(|n| !n.starts_with("metrics-test-"))
            .collect();
        names.push("metrics-test-stays");
        keep_only(&names);
        assert_eq!(service("metrics-test-stays").read().sessions, 1);
        assert_eq!(service("metrics-test-goes").read().sessions, 0);
        assert_eq!(service("metrics-test-held").read().sessions, 1);
        drop(held);
    }
}
