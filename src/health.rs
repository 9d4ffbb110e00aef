//! Whether a service's far side (its `connect` targets) can be reached, as a small state
//! machine per service: `pauseWhenDown` (rstunnel extension, issue 14).
//!
//! Sessions report what they saw (`report`); the service's listener thread reads the state,
//! accepts nothing while it is not `Open` (and refuses connects while `Paused`), probes the
//! far side and feeds the result back (`probed`). The state outlives a reload: it is kept
//! per service name in one process-wide table, so a kept listener stays paused (or open)
//! across SIGHUP and sessions that started under the old configuration still report to it.
//!
//! Owns the state, its log lines ("paused", "resumed") and its counters. Must not do I/O on
//! any socket, probe, or know about sessions and listeners: it is used by `service`,
//! `resume`, `session`, `relay` and `probe`, and imports none of them.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::wake::WakeFd;

/// Where a service stands with its far side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// A new service before its first probe: its TCP sockets are bound but do not listen
    /// yet (connects are refused), until the probe answers (then `Open`) or fails (then
    /// `Paused`, so a service whose far side is down at startup starts paused).
    Starting,
    /// Accepting.
    Open,
    /// After a session's far side ended abnormally: not accepting, but still listening
    /// (connections wait in the backlog) until one probe answers. A probe that answers
    /// reopens at once, quietly (one failed request of a busy backend is no outage); one
    /// that fails makes it a pause.
    Checking { since: Instant, reason: String },
    /// Refusing: the far side did not answer. Probed with back-off until it does.
    Paused { since: Instant, reason: String },
}

/// What a session saw of the far side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// It could not be reached (connect failed, or in client mode the TLS handshake failed
    /// for a transport reason): pause at once.
    Unreachable(String),
    /// An established session's far side ended abnormally (reset, EOF without
    /// close_notify, TLS or write error): stop accepting and check.
    Broken(String),
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Answered,
    /// The far side did not answer: refused, unreachable, timed out, reset.
    Down(String),
    /// The probe could not be made for a reason of this process or host, not of the far
    /// side (descriptors or memory exhausted, no thread, a name lookup still running):
    /// nothing is learnt, the state stays as it is and the probe is repeated.
    Unknown(String),
}

/// Counts of what sessions told of the far side, compared before and after a canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct News {
    pub reached: u64,
    pub untested: u64,
}

/// What the listener should do after a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    KeepRefusing,
}

/// One service's far-side state.
#[derive(Debug)]
pub struct Health {
    name: String,
    state: Mutex<State>,
    /// Kicked on every change a listener must react to.
    wake: Option<WakeFd>,
    pauses: AtomicU64,
    checks: AtomicU64,
    /// Sessions that reached the far side (connected; in client mode, handshake done).
    reached: AtomicU64,
    /// Sessions that went to `redirect` targets instead (they tell nothing of `connect`).
    untested: AtomicU64,
    /// Set while the listener waits for a session to reach the far side (see `watch`):
    /// only then does `reached` kick, so the common case costs one atomic add.
    watching: AtomicBool,
    /// An `Unknown` probe was logged as a warning and no probe has answered or failed
    /// since: the next ones go to debug, so a long shortage logs once.
    unknown_logged: AtomicBool,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Health {
    fn new(name: &str) -> Health {
        Health {
            name: name.to_string(),
            state: Mutex::new(State::Starting),
            // Without an eventfd (descriptors exhausted) the listener still sees a change
            // at its next wake-up; it only reacts later.
            wake: WakeFd::new().ok(),
            pauses: AtomicU64::new(0),
            checks: AtomicU64::new(0),
            reached: AtomicU64::new(0),
            untested: AtomicU64::new(0),
            watching: AtomicBool::new(false),
            unknown_logged: AtomicBool::new(false),
        }
    }

    pub fn state(&self) -> State {
        lock(&self.state).clone()
    }

    pub fn is_open(&self) -> bool {
        matches!(*lock(&self.state), State::Open)
    }

    /// Pauses counted since the process started.
    pub fn pauses(&self) -> u64 {
        self.pauses.load(Ordering::Relaxed)
    }

    /// Checks (probes after an abnormal end) that found the far side answering.
    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    /// The descriptor a listener polls to learn of a change; `drain` it after waking.
    pub fn wake_fd(&self) -> Option<RawFd> {
        self.wake.as_ref().map(AsRawFd::as_raw_fd)
    }

    pub fn drain(&self) {
        if let Some(w) = &self.wake {
            w.drain();
        }
    }

    fn kick(&self) {
        if let Some(w) = &self.wake {
            w.kick();
        }
    }

    /// A session's news about the far side.
    pub fn report(&self, trigger: Trigger) {
        let mut state = lock(&self.state);
        let now = Instant::now();
        let next = match (&*state, trigger) {
            (State::Paused { .. }, _) => return,
            (State::Checking { .. } | State::Starting, Trigger::Broken(_)) => return,
            (_, Trigger::Unreachable(reason)) => {
                self.pause_logged(&reason);
                State::Paused { since: now, reason }
            }
            (State::Open, Trigger::Broken(reason)) => {
                // Reported on a session's thread: written even if that session's own lines
                // are held and then dropped (`repeats`), as this is news of the service.
                log_unheld!(
                    crate::log::Level::Debug,
                    "Service [{}]: far side ended a session abnormally ({reason}): checking it before accepting again",
                    self.name
                );
                State::Checking { since: now, reason }
            }
        };
        *state = next;
        drop(state);
        self.kick();
    }

    /// A session reached the far side.
    pub fn reached(&self) {
        self.tell(&self.reached);
    }

    /// A session went to its service's `redirect` targets: no news of the far side.
    pub fn untested(&self) {
        self.tell(&self.untested);
    }

    /// Counts a session's news and, while a listener watches, wakes it.
    fn tell(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::SeqCst);
        if self.watching.load(Ordering::SeqCst) {
            self.kick();
        }
    }

    /// What sessions have told of the far side so far (`reached`, `untested`).
    pub fn news_count(&self) -> News {
        News {
            reached: self.reached.load(Ordering::SeqCst),
            untested: self.untested.load(Ordering::SeqCst),
        }
    }

    /// While on, `reached` and `untested` kick the wake descriptor as a state change does.
    pub fn watch(&self, on: bool) {
        self.watching.store(on, Ordering::SeqCst);
    }

    fn pause_logged(&self, reason: &str) {
        self.pauses.fetch_add(1, Ordering::Relaxed);
        // Also reached from a session's thread (`news`): never held with its lines.
        log_unheld!(
            crate::log::Level::Notice,
            "Service [{}] paused: {reason}",
            self.name
        );
    }

    /// The listener's probe result.
    pub fn probed(&self, result: Probe) -> Verdict {
        let result = match result {
            Probe::Answered => Ok(()),
            Probe::Down(reason) => Err(reason),
            Probe::Unknown(reason) => return self.unknown(&reason),
        };
        self.unknown_logged.store(false, Ordering::Relaxed);
        let mut state = lock(&self.state);
        let now = Instant::now();
        match (&*state, result) {
            (State::Open, _) => Verdict::Accept,
            (State::Starting, Ok(())) => {
                log_debug!("Service [{}]: far side answers; accepting", self.name);
                *state = State::Open;
                Verdict::Accept
            }
            (State::Starting, Err(reason)) => {
                self.pause_logged(&reason);
                *state = State::Paused { since: now, reason };
                Verdict::KeepRefusing
            }
            (State::Checking { reason, .. }, Ok(())) => {
                self.checks.fetch_add(1, Ordering::Relaxed);
                log_debug!(
                    "Service [{}]: far side answers (checked after: {reason}); accepting",
                    self.name
                );
                *state = State::Open;
                Verdict::Accept
            }
            (State::Paused { since, .. }, Ok(())) => {
                log_notice!(
                    "Service [{}] resumed after {:.1} s",
                    self.name,
                    now.duration_since(*since).as_secs_f64()
                );
                *state = State::Open;
                Verdict::Accept
            }
            (State::Checking { .. }, Err(reason)) => {
                self.pause_logged(&reason);
                *state = State::Paused { since: now, reason };
                Verdict::KeepRefusing
            }
            (State::Paused { .. }, Err(reason)) => {
                log_debug!("Service [{}] still paused: {reason}", self.name);
                Verdict::KeepRefusing
            }
        }
    }

    /// A probe that learnt nothing: the state stays (a starting service keeps not
    /// listening, a checking one keeps its backlog, a paused one keeps refusing). Logged
    /// as a warning once, then at debug until a probe answers or fails.
    fn unknown(&self, reason: &str) -> Verdict {
        if self.is_open() {
            return Verdict::Accept;
        }
        if self.unknown_logged.swap(true, Ordering::Relaxed) {
            log_debug!("Service [{}]: still cannot probe: {reason}", self.name);
        } else {
            log_warning!(
                "Service [{}]: cannot probe its far side: {reason} (a shortage here, not an outage there: its state stays as it is, probing again)",
                self.name
            );
        }
        Verdict::KeepRefusing
    }
}

/// Back-off between probes while paused: from `PROBE_BACKOFF_MIN`, doubling, up to
/// `PROBE_BACKOFF_MAX`. Tunnels pause in a chain (the far tunnel on its target, the near one
/// on the far tunnel), so resuming takes up to one interval per tunnel after the target is
/// back, plus the sender's retry: at 2.5 s that was up to 6 s, long enough for the queued
/// burst to meet the next outage in flight (measured: 348 lines lost that way). At 1 s the
/// chain resumes within about 3 s, and a long outage costs one refused connect a second.
pub const PROBE_BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const PROBE_BACKOFF_MAX: Duration = Duration::from_millis(1000);
/// A probe waits at most this long (or TIMEOUTconnect if shorter) per step, so a
/// black-holed far side keeps the service paused rather than its listener stuck.
pub const PROBE_TIMEOUT_MAX: Duration = Duration::from_secs(3);

type Table = Mutex<HashMap<String, Arc<Health>>>;

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The state of service `name`, created (`Starting`) on first use and kept across reloads:
/// a service added by a reload is probed before it accepts, one kept keeps its state.
pub fn for_service(name: &str) -> Arc<Health> {
    let mut t = table().lock().unwrap_or_else(|e| e.into_inner());
    Arc::clone(
        t.entry(name.to_string())
            .or_insert_with(|| Arc::new(Health::new(name))),
    )
}

/// One service in the SIGUSR2 listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub state: State,
    pub pauses: u64,
    pub checks: u64,
}

/// For SIGUSR2: every service that is paused or checking now, or has paused or been
/// checked since the process started (the soak asserts there is none under churn).
pub fn listing() -> Vec<Listed> {
    let t = table().lock().unwrap_or_else(|e| e.into_inner());
    let mut v: Vec<Listed> = t
        .values()
        .filter(|h| {
            matches!(h.state(), State::Paused { .. } | State::Checking { .. })
                || h.pauses() > 0
                || h.checks() > 0
        })
        .map(|h| Listed {
            name: h.name.clone(),
            state: h.state(),
            pauses: h.pauses(),
            checks: h.checks(),
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// After a reload: forgets every service not in `pausing` (removed, or `pauseWhenDown =
/// no` now), so SIGUSR2 no longer lists a state nobody acts on, and a service that pauses
/// again later starts over (probed before it accepts). Sessions of the old configuration
/// still hold their entry and report to it unseen.
pub fn keep_only(pausing: &[&str]) {
    let mut t = table().lock().unwrap_or_else(|e| e.into_inner());
    t.retain(|name, _| pausing.contains(&name.as_str()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(name: &str) -> Health {
        let h = Health::new(name);
        assert_eq!(h.probed(Probe::Answered), Verdict::Accept);
        h
    }

    #[test]
    fn a_service_starts_unchecked_and_opens_on_a_good_probe() {
        let h = Health::new("t1");
        assert_eq!(h.state(), State::Starting);
        assert!(!h.is_open());
        assert_eq!(h.probed(Probe::Answered), Verdict::Accept);
        assert!(h.is_open());
        assert_eq!(h.pauses(), 0);
    }

    #[test]
    fn unreachable_pauses_at_once_and_a_good_probe_resumes() {
        let h = open("t2");
        h.report(Trigger::Unreachable("connect refused".into()));
        assert!(matches!(h.state(), State::Paused { .. }));
        assert_eq!(h.pauses(), 1);
        assert_eq!(
            h.probed(Probe::Down("still down".into())),
            Verdict::KeepRefusing
        );
        assert_eq!(
            h.pauses(),
            1,
            "a failed probe while paused is the same pause"
        );
        assert_eq!(h.probed(Probe::Answered), Verdict::Accept);
        assert!(h.is_open());
    }

    #[test]
    fn a_broken_session_is_only_a_check_when_the_probe_answers() {
        let h = open("t3");
        h.report(Trigger::Broken("reset".into()));
        assert!(matches!(h.state(), State::Checking { .. }));
        // More broken sessions while checking change nothing.
        h.report(Trigger::Broken("reset".into()));
        assert_eq!(h.probed(Probe::Answered), Verdict::Accept);
        assert_eq!((h.pauses(), h.checks()), (0, 1));
        h.report(Trigger::Broken("reset".into()));
        assert_eq!(
            h.probed(Probe::Down("refused".into())),
            Verdict::KeepRefusing
        );
        assert_eq!(h.pauses(), 1);
    }

    /// Issue 14's third read, F1: a probe that could not be made (descriptors exhausted in
    /// this process) made the service pause, and kept it paused for as long as the
    /// shortage lasted. Now it changes nothing: a starting service keeps not listening, a
    /// checking one keeps its backlog, a paused one stays paused, and none counts a pause.
    #[test]
    fn a_probe_that_learnt_nothing_keeps_the_state() {
        let shortage = || Probe::Unknown("socket: Too many open files".into());
        let h = Health::new("t5");
        assert_eq!(h.probed(shortage()), Verdict::KeepRefusing);
        assert_eq!(h.state(), State::Starting);
        assert_eq!(h.probed(Probe::Answered), Verdict::Accept);
        assert_eq!(h.probed(shortage()), Verdict::Accept, "open stays open");
        h.report(Trigger::Broken("reset".into()));
        assert_eq!(h.probed(shortage()), Verdict::KeepRefusing);
        assert!(matches!(h.state(), State::Checking { .. }));
        assert_eq!(h.pauses(), 0, "a shortage here is no pause");
        assert_eq!(
            h.probed(Probe::Down("refused".into())),
            Verdict::KeepRefusing
        );
        assert_eq!(h.probed(shortage()), Verdict::KeepRefusing);
        assert!(matches!(h.state(), State::Paused { .. }));
        assert_eq!(h.pauses(), 1);
        assert_eq!(h.probed(Probe::Answered), Verdict::Accept);
    }

    #[test]
    fn reached_counts_and_kicks_only_while_watched() {
        let h = Health::new("t6");
        let fd = h.wake_fd().expect("an eventfd");
        let kicked = || {
            let mut fds = [crate::wake::pollfd(fd, libc::POLLIN)];
            crate::wake::poll(&mut fds, Some(Duration::ZERO)).unwrap() == 1
        };
        h.reached();
        assert_eq!(h.news_count().reached, 1);
        assert!(!kicked(), "nobody watches: no kick");
        h.watch(true);
        h.reached();
        h.watch(false);
        assert_eq!(h.news_count().reached, 2);
        assert!(kicked());
    }

    #[test]
    fn the_table_keeps_one_state_per_name() {
        let a = for_service("health-test-a");
        a.probed(Probe::Answered);
        a.report(Trigger::Unreachable("down".into()));
        let again = for_service("health-test-a");
        assert!(matches!(again.state(), State::Paused { .. }));
        let listed = |name: &str| listing().into_iter().find(|l| l.name == name);
        assert!(matches!(
            listed("health-test-a"),
            Some(Listed {
                state: State::Paused { .. },
                pauses: 1,
                ..
            })
        ));
        again.probed(Probe::Answered);
        // Open again, still listed: it paused once since the start.
        assert_eq!(
            listed("health-test-a").map(|l| (l.state, l.pauses)),
            Some((State::Open, 1))
        );
        // A service that never paused and is open is not listed.
        for_service("health-test-b").probed(Probe::Answered);
        assert!(listed("health-test-b").is_none());
    }

    /// A reload that removes a service or turns its option off forgets its state: SIGUSR2
    /// no longer lists it, and turned on again it starts over.
    #[test]
    fn a_reload_forgets_services_that_no_longer_pause() {
        for name in ["health-test-kept", "health-test-dropped"] {
            let h = for_service(name);
            h.probed(Probe::Answered);
            h.report(Trigger::Unreachable("down".into()));
        }
        let names = |v: Vec<Listed>| v.into_iter().map(|l| l.name).collect::<Vec<_>>();
        keep_only(&["health-test-kept", "health-test-a", "health-test-b"]);
        let now = names(listing());
        assert!(now.contains(&"health-test-kept".to_string()), "{now:?}");
        assert!(!now.contains(&"health-test-dropped".to_string()), "{now:?}");
        assert_eq!(for_service("health-test-dropped").state(), State::Starting);
    }
}
