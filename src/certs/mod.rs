//! The certificates a service loaded, watched (docs/ARCHITECTURE.md, Certificates): what
//! each one is (`info`: subject, not-after, file, role, read when a service is built),
//! when to warn that one expires (`expiry`: the thresholds and what was already said,
//! plain data with an injected clock), and noticing that a certificate, key, CA or CRL
//! file changed on disk (`watch`: inotify on their directories, debounced, a message to
//! the main loop).
//!
//! Must not: build TLS contexts, reload anything or know about listeners: the main loop
//! (`runtime`) decides what a change or a warning leads to.

pub mod expiry;
pub mod info;
pub mod watch;

pub use expiry::Tracker;
pub use info::{CertInfo, CertRole};
pub use watch::{WatchSet, Watcher};
