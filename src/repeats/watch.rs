//! The process-wide tallies behind one lock and what sessions and listeners call:
//! `Watch` (one session from begin to relay or failure, holding a quiet session's lines),
//! `refused`, `summarise_now`, and the short-lived thread that writes a window's summary.

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use super::tallies::{Key, Loudness, SourceKey, Summary, Tallies};
use crate::log;

static TALLIES: Mutex<Option<Tallies>> = Mutex::new(None);

fn tallies() -> MutexGuard<'static, Option<Tallies>> {
    TALLIES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` on the tallies, first ending the window if it is over and no flusher is
/// waiting to (then there is nothing to summarise but the counts to reset), and starts a
/// flusher when `f` left something to summarise. Summary lines are written after the
/// lock is released.
fn with_tallies<R>(f: impl FnOnce(&mut Tallies) -> R) -> R {
    let now = Instant::now();
    let (result, lines, start_flusher) = {
        let mut guard = tallies();
        let t = guard.get_or_insert_with(|| Tallies::new(now));
        let mut lines = Vec::new();
        if !t.flusher && now >= t.due() {
            lines = t.roll(now);
        }
        let result = f(t);
        let start = !t.flusher && t.has_news();
        if start {
            t.flusher = true;
        }
        (result, lines, start.then_some(t.due()))
    };
    write_summary(&lines);
    if let Some(due) = start_flusher {
        start_flusher_thread(due);
    }
    result
}

fn write_summary(lines: &[Summary]) {
    for (level, line) in lines {
        log::emit_detached(*level, format_args!("{line}"));
    }
}

/// Writes the window's summary when it ends. Without a thread (none could be made) the
/// next session or refusal after the window writes it instead.
fn start_flusher_thread(due: Instant) {
    let spawned = std::thread::Builder::new()
        .name("log summary".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut due = due;
            let lines = loop {
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                let mut guard = tallies();
                let Some(t) = guard.as_mut() else {
                    break Vec::new();
                };
                let now = Instant::now();
                // SIGUSR2 may have ended the window meanwhile and started a new one.
                if now >= t.due() || !t.has_news() {
                    t.flusher = false;
                    break if t.has_news() {
                        t.roll(now)
                    } else {
                        Vec::new()
                    };
                }
                due = t.due();
            };
            write_summary(&lines);
        });
    if spawned.is_err() {
        if let Some(t) = tallies().as_mut() {
            t.flusher = false;
        }
    }
}

/// Writes what has not been summarised yet (SIGUSR2, exit) and starts a new window.
pub fn summarise_now() {
    let lines = match tallies().as_mut() {
        Some(t) if t.has_news() => t.roll(Instant::now()),
        _ => Vec::new(),
    };
    write_summary(&lines);
}

/// A connection refused before it became a session: whether to log it (else it is
/// counted into the summary with `why`).
pub fn refused(service: &str, peer: Option<SocketAddr>, why: &str) -> bool {
    let key = (service.to_string(), SourceKey::of(peer));
    with_tallies(|t| t.refused(&key, why))
}

/// One session's place in the tallies, from its start to its end, on its own thread:
/// a quiet session's lines are held by this thread (`log::hold`) until `relayed` writes
/// them or `failed` drops them. Dropped without either (a panic), it counts as relayed.
pub struct Watch {
    key: Key,
    loudness: Loudness,
    ended: bool,
    /// Held lines belong to the thread that holds them.
    _same_thread: PhantomData<*const ()>,
}

impl Watch {
    /// A session of `service` from `peer` starts on this thread.
    pub fn begin(service: &str, peer: Option<SocketAddr>) -> Watch {
        let key = (service.to_string(), SourceKey::of(peer));
        let loudness = with_tallies(|t| t.begin(&key));
        if loudness == Loudness::Quiet {
            log::hold();
        }
        Watch {
            key,
            loudness,
            ended: false,
            _same_thread: PhantomData,
        }
    }

    /// The session starts relaying: it proved itself, its held lines are written.
    pub fn relayed(&mut self) {
        self.end(None);
    }

    /// The session failed before relaying, for `why`.
    pub fn failed(mut self, why: &str) {
        self.end(Some(why));
    }

    fn end(&mut self, failure: Option<&str>) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let (key, loudness) = (&self.key, self.loudness);
        with_tallies(|t| t.end(key, loudness, failure));
        if loudness == Loudness::Quiet {
            match failure {
                Some(_) => log::discard_held(),
                None => log::release_held(),
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.end(None);
    }
}
