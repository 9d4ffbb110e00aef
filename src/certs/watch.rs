//! `watchCertificates = yes` (docs/ARCHITECTURE.md, Certificates): one thread with an
//! inotify instance on the directories of every `cert`, `key`, `CAfile` and `CRLfile` of
//! every service, and on every `CApath`/`CRLpath` directory. Directories, not files,
//! because renewals replace files by rename (a new inode the old watch would never see),
//! and for a symlink both the link's directory and its target's (certbot swaps the links
//! in `live/` that point into `archive/`).
//!
//! Events on the watched names are debounced (a renewal writes several files): once
//! `QUIET` has passed since the last event, or `AT_MOST` since the first, the changed paths
//! go to the main loop as one message. The thread polls the inotify descriptor and a stop
//! `WakeFd`, so dropping the `Watcher` (re-arming after a reload, exit) ends it at once;
//! what it had not yet sent is sent then, so a change seen just before a re-arm is not lost.
//!
//! Must not: read the files or decide anything about them.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use crate::config::Config;
use crate::wake::{self, WakeFd};

/// Quiet time after the last event before the change is reported.
pub const QUIET: Duration = Duration::from_millis(500);
/// The longest a change waits for quiet.
pub const AT_MOST: Duration = Duration::from_secs(5);

/// Which names of a directory matter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Names {
    /// A `CApath`/`CRLpath`: every file in it.
    All,
    Some(BTreeSet<OsString>),
}

/// The directories to watch and the names in each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchSet {
    dirs: BTreeMap<PathBuf, Names>,
}

impl WatchSet {
    /// Every certificate, key, CA and CRL file and directory of `config`'s services, as
    /// the paths resolve now.
    pub fn of(config: &Config) -> WatchSet {
        let mut set = WatchSet::default();
        for s in &config.services {
            let tls = &s.tls;
            for file in [&tls.cert, &tls.key, &tls.ca_file, &tls.crl_file]
                .into_iter()
                .flatten()
            {
                set.add_file(file);
            }
            for dir in [&tls.ca_path, &tls.crl_path].into_iter().flatten() {
                set.add_dir(dir);
            }
        }
        set
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// `file` in its directory, and, if it is a symlink, its target in the target's.
    fn add_file(&mut self, file: &Path) {
        let resolved = std::fs::canonicalize(file).ok();
        for path in std::iter::once(file).chain(resolved.as_deref()) {
            let Some(name) = path.file_name() else {
                continue;
            };
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            match self
                .dirs
                .entry(dir)
                .or_insert_with(|| Names::Some(BTreeSet::new()))
            {
                Names::All => {}
                Names::Some(names) => {
                    names.insert(name.to_os_string());
                }
            }
        }
    }

    fn add_dir(&mut self, dir: &Path) {
        let resolved = std::fs::canonicalize(dir).ok();
        for path in std::iter::once(dir).chain(resolved.as_deref()) {
            self.dirs.insert(path.to_path_buf(), Names::All);
        }
    }

    /// Whether a change to `name` in `dir` matters.
    fn matters(&self, dir: &Path, name: Option<&OsStr>) -> bool {
        match (self.dirs.get(dir), name) {
            (Some(Names::All), _) => true,
            (Some(Names::Some(names)), Some(name)) => names.contains(name),
            _ => false,
        }
    }
}

/// Collecting events until it is time to report them; plain data, the clock passed in.
#[derive(Debug, Default)]
pub struct Debounce {
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Debounce {
    pub fn event(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// How long to wait before reporting: `None` with nothing pending, zero when due.
    pub fn wait(&self, now: Instant) -> Option<Duration> {
        let (first, last) = (self.first?, self.last?);
        let due = (last + QUIET).min(first + AT_MOST);
        Some(due.saturating_duration_since(now))
    }

    pub fn reset(&mut self) {
        *self = Debounce::default();
    }
}

/// The running watcher thread; dropping it stops the thread (promptly: it polls a stop
/// descriptor) and waits for it.
pub struct Watcher {
    stop: Arc<WakeFd>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.kick();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts watching `set`; each debounced change is sent on `changed` as the paths that
/// changed (`set`'s directory joined with the name). A directory that cannot be watched
/// is logged and skipped. `None` (logged) when there is nothing to watch or no inotify.
pub fn start(set: WatchSet, changed: Sender<Vec<PathBuf>>) -> Option<Watcher> {
    if set.is_empty() {
        return None;
    }
    let inotify = match Inotify::init() {
        Ok(i) => i,
        Err(e) => {
            log_warning!(
                "Cannot watch certificate files (inotify: {e}); renewed certificates need a SIGHUP"
            );
            return None;
        }
    };
    let mask = WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_TO
        | WatchMask::MOVED_FROM
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::ATTRIB
        | WatchMask::ONLYDIR;
    let mut dirs: Vec<(WatchDescriptor, PathBuf)> = Vec::new();
    for dir in set.dirs.keys() {
        match inotify.watches().add(dir, mask) {
            Ok(wd) => {
                log_debug!("Watching {} for certificate changes", dir.display());
                dirs.push((wd, dir.clone()));
            }
            Err(e) => log_warning!(
                "Cannot watch {} for certificate changes: {e}",
                dir.display()
            ),
        }
    }
    if dirs.is_empty() {
        return None;
    }
    log_info!(
        "Watching {} director(ies) for changed certificate, key, CA and CRL files",
        dirs.len()
    );
    let stop = match WakeFd::new() {
        Ok(s) => Arc::new(s),
        Err(e) => {
            log_warning!("Cannot watch certificate files: {e}");
            return None;
        }
    };
    let thread_stop = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("certificate watch".into())
        .stack_size(128 * 1024)
        .spawn(move || run(inotify, &set, &dirs, &thread_stop, &changed));
    match thread {
        Ok(thread) => Some(Watcher {
            stop,
            thread: Some(thread),
        }),
        Err(e) => {
            log_warning!("Cannot start the certificate watch thread: {e}");
            None
        }
    }
}

fn run(
    mut inotify: Inotify,
    set: &WatchSet,
    dirs: &[(WatchDescriptor, PathBuf)],
    stop: &WakeFd,
    changed: &Sender<Vec<PathBuf>>,
) {
    crate::log::set_thread_id("certs");
    let mut pending: BTreeSet<PathBuf> = BTreeSet::new();
    let mut debounce = Debounce::default();
    let mut buffer = [0u8; 4096];
    let send = |pending: &mut BTreeSet<PathBuf>| {
        if !pending.is_empty() {
            let _ = changed.send(std::mem::take(pending).into_iter().collect());
        }
    };
    loop {
        let mut fds = [
            wake::pollfd(inotify.as_raw_fd(), libc::POLLIN),
            wake::pollfd(stop.as_raw_fd(), libc::POLLIN),
        ];
        if let Err(e) = wake::poll(&mut fds, debounce.wait(Instant::now())) {
            log_err!("Certificate watch stopped: poll: {e}");
            return;
        }
        if fds[1].revents != 0 {
            send(&mut pending);
            return;
        }
        if fds[0].revents != 0 {
            match inotify.read_events(&mut buffer) {
                Ok(events) => {
                    for event in events {
                        if event.mask.contains(EventMask::Q_OVERFLOW) {
                            // Events were lost: anything may have changed.
                            pending.extend(set.dirs.keys().cloned());
                            debounce.event(Instant::now());
                            continue;
                        }
                        // A directory and its canonical path share one descriptor
                        // (inotify watches inodes): any of its paths may be the one.
                        let dir = dirs
                            .iter()
                            .filter(|(wd, _)| *wd == event.wd)
                            .find(|(_, dir)| set.matters(dir, event.name));
                        if let Some((_, dir)) = dir {
                            pending.insert(event.name.map_or(dir.clone(), |n| dir.join(n)));
                            debounce.event(Instant::now());
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    log_err!("Certificate watch stopped: {e}");
                    return;
                }
            }
        }
        if debounce.wait(Instant::now()) == Some(Duration::ZERO) {
            send(&mut pending);
            debounce.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debounce_waits_for_quiet_but_not_forever() {
        let t0 = Instant::now();
        let mut d = Debounce::default();
        assert_eq!(d.wait(t0), None, "nothing pending");
        d.event(t0);
        assert_eq!(d.wait(t0), Some(QUIET));
        // An event every 400 ms keeps it waiting, up to AT_MOST after the first.
        let mut now = t0;
        while now < t0 + Duration::from_secs(6) {
            now += Duration::from_millis(400);
            if d.wait(now) == Some(Duration::ZERO) {
                break;
            }
            d.event(now);
        }
        assert_eq!(
            now - t0,
            Duration::from_millis(5200),
            "due at 5 s, seen at the next step"
        );
        d.reset();
        assert_eq!(d.wait(now), None);
    }

    /// A file's directory and name, a symlink's target too, and whole `CApath` directories.
    #[test]
    fn what_is_watched() {
        let dir = std::env::temp_dir().join(format!("rstunnel-watchset-{}", std::process::id()));
        let (live, archive) = (dir.join("live"), dir.join("archive"));
        std::fs::create_dir_all(&live).unwrap();
        std::fs::create_dir_all(&archive).unwrap();
        std::fs::write(archive.join("cert1.pem"), "x").unwrap();
        std::os::unix::fs::symlink("../archive/cert1.pem", live.join("cert.pem")).unwrap();
        let text = format!(
            "[s]\naccept = 127.0.0.1:0\nconnect = 127.0.0.1:1\ncert = {}\nkey = {}\nCApath = {}\n",
            live.join("cert.pem").display(),
            live.join("key.pem").display(),
            dir.join("hashes").display(),
        );
        let config = crate::config::parse_bytes("t.conf", text.as_bytes()).unwrap();
        let set = WatchSet::of(&config);
        let archive = std::fs::canonicalize(&archive).unwrap();
        assert!(set.matters(&live, Some(OsStr::new("cert.pem"))));
        assert!(set.matters(&live, Some(OsStr::new("key.pem"))));
        assert!(!set.matters(&live, Some(OsStr::new("other.pem"))));
        assert!(set.matters(&archive, Some(OsStr::new("cert1.pem"))));
        assert!(!set.matters(&archive, Some(OsStr::new("cert2.pem"))));
        assert!(set.matters(&dir.join("hashes"), Some(OsStr::new("abcd1234.0"))));
        assert!(!set.matters(&dir, Some(OsStr::new("live"))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A rename over a watched name is reported once, after the quiet time; the stop
    /// descriptor ends the thread at once.
    #[test]
    fn a_rename_is_reported_and_stop_is_prompt() {
        let dir = std::env::temp_dir().join(format!("rstunnel-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.pem");
        std::fs::write(&cert, "old").unwrap();
        let mut set = WatchSet::default();
        set.add_file(&cert);
        let (tx, rx) = crossbeam_channel::unbounded();
        let watcher = start(set, tx).expect("watching");
        std::fs::write(dir.join("unrelated"), "x").unwrap();
        std::fs::write(dir.join("cert.pem.new"), "new").unwrap();
        let renamed = Instant::now();
        std::fs::rename(dir.join("cert.pem.new"), &cert).unwrap();
        let got = rx.recv_timeout(Duration::from_secs(3)).expect("reported");
        assert!(renamed.elapsed() >= QUIET, "{:?}", renamed.elapsed());
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].ends_with("cert.pem"), "{got:?}");
        assert!(rx.recv_timeout(Duration::from_millis(800)).is_err(), "once");
        let stopping = Instant::now();
        drop(watcher);
        assert!(stopping.elapsed() < Duration::from_millis(200));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
