//! Repeated failures from one source, logged as a count instead of one line each
//! (docs/ARCHITECTURE.md, Logging under load).
//!
//! A peer can make sessions fail as often as it can connect: 12,000 idle connections or
//! garbage ClientHellos would otherwise write 12,000 failures of three or four lines each,
//! at every debug level. Here each service and source (an IPv4 address, an IPv6 /64, or
//! "local" for Unix sockets and inetd) has a budget of sessions whose lines are written as
//! they happen, `LOUD_PER_SOURCE`, and all sources together `LOUD_TOTAL`: a loud session
//! uses the budget while it is in flight and, if it fails, until the end of the minute. A
//! session that starts when the budget is used is quiet: its lines are held
//! (`log::hold`) and written when it starts relaying, so a proven session loses no line,
//! or dropped when it fails, and the failure is counted. Refusals before a session starts
//! (too many clients, no thread) take from the same budget. Once a minute, and at exit
//! and on SIGUSR2, one line per service and source says how many were not logged one by
//! one and the last reason; the number of such lines per minute is bounded
//! (`SUMMARY_LINES`), as is the number of sources tallied (`MAX_SOURCES`).
//!
//! Owns the tallies and the summary lines. Never touches sockets or sessions; the caller
//! says when a session begins, relays or fails.
//!
//! `tallies.rs` holds the counts and their rules, `watch.rs` the lock, the calls and the
//! summary thread.

mod tallies;
mod watch;

pub use tallies::SourceKey;
pub use watch::{refused, summarise_now, Watch};
