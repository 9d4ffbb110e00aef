//! The counts behind `repeats` (docs/ARCHITECTURE.md, Logging under load): per service
//! and source, the loud sessions in flight and failed, what was counted instead of
//! logged, and the summary lines a window ends with. Plain data driven by the caller's
//! clock, so that its rules are tested without waiting a minute; no lock, no log, no
//! thread (those are `watch.rs`'s).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::log::Level;

/// How long one tally runs before its summary is written.
pub(super) const WINDOW: Duration = Duration::from_secs(60);
/// Loud sessions (in flight, or failed within the window) per service and source.
const LOUD_PER_SOURCE: u32 = 5;
/// Loud sessions over all services and sources: bounds the log when the failures come
/// from many addresses.
const LOUD_TOTAL: u32 = 50;
/// Services and sources tallied one by one; the rest share one tally.
const MAX_SOURCES: usize = 4096;
/// Summary lines per window that name a source; the rest are added up in at most two
/// more (failed, refused).
const SUMMARY_LINES: usize = 10;

/// Where connections come from, as far as budgets go: one address for IPv4, the /64
/// for IPv6 (one host's usual allocation), an IPv4-mapped IPv6 address as IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceKey {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
    /// Unix sockets, inetd, socket pairs: no address.
    Local,
}

impl SourceKey {
    pub fn of(peer: Option<SocketAddr>) -> SourceKey {
        match peer.map(|p| p.ip()) {
            Some(IpAddr::V4(v4)) => SourceKey::V4(v4.octets()),
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey::V4(v4.octets()),
                None => {
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    SourceKey::V6Prefix(prefix)
                }
            },
            None => SourceKey::Local,
        }
    }
}

impl fmt::Display for SourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceKey::V4(octets) => write!(f, "{}", std::net::Ipv4Addr::from(*octets)),
            SourceKey::V6Prefix(prefix) => {
                let mut full = [0u8; 16];
                full[..8].copy_from_slice(prefix);
                write!(f, "{}/64", std::net::Ipv6Addr::from(full))
            }
            SourceKey::Local => write!(f, "local sockets"),
        }
    }
}

/// One service and source's counts in the current window.
#[derive(Default)]
struct Tally {
    /// Loud sessions not yet ended.
    in_flight: u32,
    /// Loud sessions that failed, and refusals logged, in this window.
    failed_loud: u32,
    /// Quiet sessions that failed: counted, not logged.
    failed_quiet: u64,
    /// Refusals not logged.
    refused_quiet: u64,
    /// Refusals logged in this window.
    refused_loud: u32,
    /// The last reason of each kind, for the summary.
    last_failure: String,
    last_refusal: String,
}

impl Tally {
    fn loud_used(&self) -> u32 {
        self.in_flight + self.failed_loud
    }
    fn has_news(&self) -> bool {
        self.failed_quiet > 0 || self.refused_quiet > 0
    }
}

pub(super) type Key = (String, SourceKey);

/// All tallies; one lock, taken twice per session (begin, end) and once per refusal.
pub(super) struct Tallies {
    window_start: Instant,
    by_source: HashMap<Key, Tally>,
    /// What no longer fitted in `by_source` (`MAX_SOURCES`).
    others: Tally,
    in_flight: u32,
    failed_loud: u32,
    /// Failures and refusals counted but not logged in this window (what `has_news` asks).
    news: u64,
    /// A thread waits to write this window's summary.
    pub(super) flusher: bool,
}

/// Whether a session's lines are written as they happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Loudness {
    /// In `bucket`, which its end must count back from (a named tally can be full and
    /// the source later get one of its own: the session stays where it was counted).
    Loud(Bucket),
    Quiet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Bucket {
    Named,
    Others,
}

impl Tallies {
    pub(super) fn new(now: Instant) -> Tallies {
        Tallies {
            window_start: now,
            by_source: HashMap::new(),
            others: Tally::default(),
            in_flight: 0,
            failed_loud: 0,
            news: 0,
            flusher: false,
        }
    }

    /// `key`'s tally, made if there is room for one more, else the shared one.
    fn tally(&mut self, key: &Key) -> (&mut Tally, Bucket) {
        if !self.by_source.contains_key(key) && self.by_source.len() >= MAX_SOURCES {
            return (&mut self.others, Bucket::Others);
        }
        (
            self.by_source.entry(key.clone()).or_default(),
            Bucket::Named,
        )
    }

    fn has_room(&mut self, key: &Key) -> bool {
        let total_used = self.in_flight + self.failed_loud;
        total_used < LOUD_TOTAL && self.tally(key).0.loud_used() < LOUD_PER_SOURCE
    }

    pub(super) fn begin(&mut self, key: &Key) -> Loudness {
        if !self.has_room(key) {
            return Loudness::Quiet;
        }
        let (tally, bucket) = self.tally(key);
        tally.in_flight += 1;
        self.in_flight += 1;
        Loudness::Loud(bucket)
    }

    /// A session ended: `failure` is why, when it failed before relaying.
    pub(super) fn end(&mut self, key: &Key, loudness: Loudness, failure: Option<&str>) {
        match (loudness, failure) {
            (Loudness::Loud(bucket), failure) => {
                // A loud session's tally stays while it is in flight (`roll` keeps it).
                let tally = match bucket {
                    Bucket::Named => self.by_source.get_mut(key),
                    Bucket::Others => Some(&mut self.others),
                };
                if let Some(tally) = tally {
                    tally.in_flight = tally.in_flight.saturating_sub(1);
                    tally.failed_loud += u32::from(failure.is_some());
                }
                self.in_flight = self.in_flight.saturating_sub(1);
                self.failed_loud += u32::from(failure.is_some());
            }
            (Loudness::Quiet, Some(why)) => {
                let tally = self.tally(key).0;
                tally.failed_quiet += 1;
                tally.last_failure = why.to_string();
                self.news += 1;
            }
            // Relayed: nothing to count.
            (Loudness::Quiet, None) => {}
        }
    }

    /// A connection refused before it became a session: whether to log it. The first
    /// refusal of a source in a window is logged even when its sessions in flight use its
    /// places (a per-source limit is only reached that way): the admin sees at once that
    /// a limit bites, not a minute later.
    pub(super) fn refused(&mut self, key: &Key, why: &str) -> bool {
        let first =
            self.in_flight + self.failed_loud < LOUD_TOTAL && self.tally(key).0.refused_loud == 0;
        if first || self.has_room(key) {
            let tally = self.tally(key).0;
            tally.failed_loud += 1;
            tally.refused_loud += 1;
            self.failed_loud += 1;
            return true;
        }
        let tally = self.tally(key).0;
        tally.refused_quiet += 1;
        tally.last_refusal = why.to_string();
        self.news += 1;
        false
    }

    pub(super) fn has_news(&self) -> bool {
        self.news > 0
    }

    pub(super) fn due(&self) -> Instant {
        self.window_start + WINDOW
    }

    /// Ends the window: the summary lines of what was not logged, counts back to zero
    /// (sessions in flight stay counted).
    pub(super) fn roll(&mut self, now: Instant) -> Vec<Summary> {
        // At least 1: a SIGUSR2 just after a burst would otherwise say "in the last 0 s".
        let seconds = now
            .saturating_duration_since(self.window_start)
            .as_secs()
            .max(1);
        let mut news: Vec<(&Key, &Tally)> = self
            .by_source
            .iter()
            .filter(|(_, t)| t.has_news())
            .collect();
        // The busiest sources by name; the tail in one line.
        news.sort_by_key(|(_, t)| std::cmp::Reverse(t.failed_quiet + t.refused_quiet));
        let mut lines = Vec::new();
        let mut rest = Tally::default();
        let mut rest_sources = 0usize;
        for ((service, source), tally) in &news {
            if lines.len() < SUMMARY_LINES {
                lines.extend(summary_lines(
                    &format!("Service [{service}]: "),
                    &format!("from {source}"),
                    tally,
                    seconds,
                ));
            } else {
                add_into(&mut rest, tally);
                rest_sources += 1;
            }
        }
        if self.others.has_news() {
            add_into(&mut rest, &self.others);
            rest_sources += 1;
        }
        if rest.has_news() {
            let from = if self.others.has_news() {
                "from other sources".to_string()
            } else {
                format!("from {rest_sources} other sources")
            };
            lines.extend(summary_lines("", &from, &rest, seconds));
        }
        self.by_source.retain(|_, t| t.in_flight > 0);
        for tally in self.by_source.values_mut() {
            *tally = Tally {
                in_flight: tally.in_flight,
                ..Tally::default()
            };
        }
        self.others = Tally {
            in_flight: self.others.in_flight,
            ..Tally::default()
        };
        self.failed_loud = 0;
        self.news = 0;
        self.window_start = now;
        lines
    }
}

fn add_into(sum: &mut Tally, tally: &Tally) {
    sum.failed_quiet += tally.failed_quiet;
    sum.refused_quiet += tally.refused_quiet;
    if !tally.last_failure.is_empty() {
        sum.last_failure.clone_from(&tally.last_failure);
    }
    if !tally.last_refusal.is_empty() {
        sum.last_refusal.clone_from(&tally.last_refusal);
    }
}

/// A summary line, at the level of the lines it stands for: failed sessions log their
/// error at err, refusals are warnings.
pub(super) type Summary = (Level, String);

fn summary_lines(prefix: &str, from: &str, tally: &Tally, seconds: u64) -> Vec<Summary> {
    let mut lines = Vec::new();
    if tally.failed_quiet > 0 {
        lines.push((Level::Err, format!(
            "{prefix}{} more connection(s) {from} failed before relaying in the last {seconds} s, not logged one by one; the last: {}",
            tally.failed_quiet, tally.last_failure
        )));
    }
    if tally.refused_quiet > 0 {
        lines.push((Level::Warning, format!(
            "{prefix}{} more connection(s) {from} refused in the last {seconds} s, not logged one by one; the last: {}",
            tally.refused_quiet, tally.last_refusal
        )));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOUD: Loudness = Loudness::Loud(Bucket::Named);

    fn texts(lines: Vec<Summary>) -> Vec<String> {
        lines.into_iter().map(|(_, text)| text).collect()
    }

    fn key(source: &str) -> Key {
        let addr: SocketAddr = format!("{source}:1000").parse().unwrap();
        ("syslog".to_string(), SourceKey::of(Some(addr)))
    }

    #[test]
    fn sources_group_ipv6_by_64_and_mapped_addresses_as_ipv4() {
        let a = key("[2001:db8:1:2::1]");
        let b = key("[2001:db8:1:2:ffff::9]");
        let c = key("[2001:db8:1:3::1]");
        assert_eq!(a, b, "one /64 is one source");
        assert_ne!(a, c);
        assert_eq!(key("[::ffff:192.0.2.7]"), key("192.0.2.7"));
        assert_eq!(a.1.to_string(), "2001:db8:1:2::/64");
        assert_eq!(SourceKey::of(None).to_string(), "local sockets");
    }

    /// The flood case: after the source's budget, failures are counted, not logged, and
    /// the summary says how many and why.
    #[test]
    fn failures_beyond_the_budget_are_counted_and_summarised() {
        let start = Instant::now();
        let mut t = Tallies::new(start);
        let flood = key("127.0.0.2");
        let mut loud = 0;
        for _ in 0..200 {
            let l = t.begin(&flood);
            if l == LOUD {
                loud += 1;
            }
            t.end(&flood, l, Some("SSL_accept: TIMEOUTbusy exceeded"));
        }
        assert_eq!(loud, LOUD_PER_SOURCE);
        let lines = texts(t.roll(start + WINDOW));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("Service [syslog]: 195 more connection(s) from 127.0.0.2 failed before relaying in the last 60 s"),
            "{}",
            lines[0]
        );
        assert!(lines[0].ends_with("the last: SSL_accept: TIMEOUTbusy exceeded"));
        // A new window starts with the whole budget again.
        assert_eq!(t.begin(&flood), LOUD);
        assert!(
            texts(t.roll(start + WINDOW * 2)).is_empty(),
            "nothing to say"
        );
    }

    /// Hundreds of clients behind one NAT address that all succeed never use up the
    /// budget for long: a loud session that relays gives its place back.
    #[test]
    fn sessions_that_relay_give_the_budget_back() {
        let mut t = Tallies::new(Instant::now());
        let nat = key("192.0.2.1");
        for _ in 0..500 {
            let l = t.begin(&nat);
            assert_eq!(l, LOUD);
            t.end(&nat, l, None);
        }
        assert!(!t.has_news());
    }

    /// While the budget is used by sessions in flight, a new one is quiet (its lines
    /// held); when it then relays nothing is counted against the source.
    #[test]
    fn sessions_in_flight_use_the_budget() {
        let mut t = Tallies::new(Instant::now());
        let nat = key("192.0.2.1");
        let open: Vec<_> = (0..LOUD_PER_SOURCE).map(|_| t.begin(&nat)).collect();
        assert!(open.iter().all(|l| *l == LOUD));
        assert_eq!(t.begin(&nat), Loudness::Quiet);
        t.end(&nat, Loudness::Quiet, None);
        assert!(!t.has_news(), "a quiet session that relayed is no failure");
        assert_eq!(t.begin(&key("192.0.2.2")), LOUD, "others unaffected");
    }

    /// Many sources: the total budget bounds the loud lines, the summary names the
    /// busiest SUMMARY_LINES sources and adds up the rest in one line.
    #[test]
    fn many_sources_are_bounded_in_total_and_in_summary_lines() {
        let start = Instant::now();
        let mut t = Tallies::new(start);
        let mut loud = 0;
        for host in 0..100u32 {
            let source = key(&format!("10.0.{}.{}", host / 256, host % 256));
            for _ in 0..=host % 7 {
                let l = t.begin(&source);
                loud += u32::from(l == LOUD);
                t.end(&source, l, Some("SSL_accept: wrong version number"));
            }
        }
        assert_eq!(loud, LOUD_TOTAL);
        let lines = texts(t.roll(start + WINDOW));
        assert_eq!(lines.len(), SUMMARY_LINES + 1, "{lines:#?}");
        assert!(lines[SUMMARY_LINES].contains(" other sources failed before relaying"));
        let counted: u64 = lines
            .iter()
            .map(|l| {
                let after = l.split("]: ").nth(1).unwrap_or(l);
                after.split(' ').next().unwrap().parse::<u64>().unwrap()
            })
            .sum();
        let total: u64 = (0..100u64).map(|h| h % 7 + 1).sum();
        assert_eq!(
            counted + u64::from(loud),
            total,
            "every failure is counted once"
        );
    }

    #[test]
    fn refusals_share_the_budget_and_have_their_own_summary() {
        let start = Instant::now();
        let mut t = Tallies::new(start);
        let flood = key("127.0.0.2");
        let logged = (0..50)
            .filter(|_| t.refused(&flood, "too many clients (>=10)"))
            .count();
        assert_eq!(logged, LOUD_PER_SOURCE as usize);
        let lines = texts(t.roll(start + WINDOW));
        assert_eq!(
            lines,
            vec!["Service [syslog]: 45 more connection(s) from 127.0.0.2 refused in the last 60 s, not logged one by one; the last: too many clients (>=10)".to_string()]
        );
    }

    #[test]
    fn sources_beyond_the_limit_share_one_tally() {
        let start = Instant::now();
        let mut t = Tallies::new(start);
        // Use up the total so that every later session is quiet.
        for i in 0..LOUD_TOTAL {
            let source = key(&format!("10.1.0.{i}"));
            let l = t.begin(&source);
            t.end(&source, l, Some("x"));
        }
        for i in 0..(MAX_SOURCES as u32 + 10) {
            let source = key(&format!("10.2.{}.{}", i / 256, i % 256));
            let l = t.begin(&source);
            t.end(&source, l, Some("late"));
        }
        assert!(t.by_source.len() <= MAX_SOURCES);
        let lines = texts(t.roll(start + WINDOW));
        assert!(lines.len() <= SUMMARY_LINES + 1);
        assert!(lines.last().unwrap().contains("from other sources"));
        assert!(t.by_source.is_empty(), "nothing in flight is kept");
    }

    /// A failure summary stands for lines logged at err, a refusal summary for warnings:
    /// at `debug = 3` the failures are still counted where they can be seen.
    #[test]
    fn summaries_take_the_level_of_what_they_stand_for() {
        let start = Instant::now();
        let mut t = Tallies::new(start);
        let flood = key("127.0.0.2");
        for _ in 0..LOUD_PER_SOURCE {
            t.refused(&flood, "too many clients (>=1)");
        }
        t.end(&flood, Loudness::Quiet, Some("SSL_accept: http request"));
        t.refused(&flood, "too many clients (>=1)");
        let levels: Vec<Level> = t.roll(start + WINDOW).into_iter().map(|(l, _)| l).collect();
        assert_eq!(levels, vec![Level::Err, Level::Warning]);
    }

    /// A session counted in the shared tally (no room for its source's own) is counted
    /// back from it, even when a later window gives its source a tally of its own.
    #[test]
    fn a_session_in_the_shared_tally_ends_there_across_a_window() {
        let start = Instant::now();
        let mut t = Tallies::new(start);
        for i in 0..MAX_SOURCES as u32 {
            let source = key(&format!("10.3.{}.{}", i / 256, i % 256));
            t.by_source.insert(source, Tally::default());
        }
        let late = key("10.4.0.1");
        let loudness = t.begin(&late);
        assert_eq!(loudness, Loudness::Loud(Bucket::Others));
        assert_eq!(t.others.in_flight, 1);
        t.roll(start + WINDOW);
        assert!(t.by_source.is_empty());
        t.end(&late, loudness, None);
        assert_eq!(t.others.in_flight, 0, "counted back where it was counted");
        assert_eq!(t.in_flight, 0);
        assert!(!t.by_source.contains_key(&late), "no tally made to end it");
    }

    /// Quiet sessions that relay leave nothing behind: no tally per passing source.
    #[test]
    fn quiet_sessions_that_relay_make_no_tally() {
        let mut t = Tallies::new(Instant::now());
        let busy = key("192.0.2.9");
        let open: Vec<_> = (0..LOUD_PER_SOURCE).map(|_| t.begin(&busy)).collect();
        for i in 0..100 {
            let other = key(&format!("198.51.100.{i}"));
            t.end(&other, Loudness::Quiet, None);
        }
        assert_eq!(t.by_source.len(), 1);
        for l in open {
            t.end(&busy, l, None);
        }
    }

    /// The first refusal of a source is logged although its sessions in flight hold all
    /// its places (how a per-source limit is reached); the rest are counted.
    #[test]
    fn the_first_refusal_of_a_busy_source_is_logged() {
        let start = Instant::now();
        let mut t = Tallies::new(start);
        let busy = key("192.0.2.7");
        let open: Vec<_> = (0..LOUD_PER_SOURCE).map(|_| t.begin(&busy)).collect();
        assert!(t.refused(&busy, "limit"), "the first is logged");
        assert!(!t.refused(&busy, "limit"), "the next is counted");
        for l in open {
            t.end(&busy, l, None);
        }
        let lines = texts(t.roll(start + WINDOW));
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("1 more connection(s) from 192.0.2.7 refused"));
    }
}
