//! Logging in stunnel's format: `YYYY.MM.DD HH:MM:SS LOG<n>[<id>]: text` to stderr
//! (foreground) and/or the `output` file, and `LOG<n>[<id>]: text` to syslog.
//!
//! Owns the eight syslog levels, the sinks, and the per-thread context (the connection id
//! and that service's debug level, set by session threads). It formats and writes; it never
//! decides what is worth logging. (No dependency logs through the `log` crate, so there is
//! no bridge for it: every line comes from the `log_*!` macros below.)

use std::cell::RefCell;
use std::ffi::CString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

/// syslog severity, numbered as stunnel prints it in `LOG<n>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Emerg = 0,
    Alert = 1,
    Crit = 2,
    Err = 3,
    Warning = 4,
    Notice = 5,
    Info = 6,
    Debug = 7,
}

impl Level {
    pub fn from_index(index: usize) -> Option<Level> {
        const ALL: [Level; 8] = [
            Level::Emerg,
            Level::Alert,
            Level::Crit,
            Level::Err,
            Level::Warning,
            Level::Notice,
            Level::Info,
            Level::Debug,
        ];
        ALL.get(index).copied()
    }

    /// The mark stunnel puts before a line it dumps to stderr on a configuration error.
    pub fn mark(self) -> char {
        match self {
            Level::Emerg | Level::Alert | Level::Crit => '*',
            Level::Err => '!',
            Level::Warning => ':',
            Level::Notice => '.',
            Level::Info | Level::Debug => ' ',
        }
    }
}

struct Sinks {
    stderr: bool,
    file: Option<File>,
    syslog: bool,
    /// Lines of the startup, kept until it succeeds: on failure they go to stderr, as
    /// stunnel dumps its buffer, so that a daemon that cannot start says why.
    startup: Option<Vec<(Level, String)>>,
}

static SINKS: Mutex<Sinks> = Mutex::new(Sinks {
    stderr: true,
    file: None,
    syslog: false,
    startup: Some(Vec::new()),
});

/// Startup succeeded: stop keeping its lines.
pub fn end_startup() {
    SINKS.lock().unwrap_or_else(|e| e.into_inner()).startup = None;
}

/// Startup failed: prints the kept lines to stderr as `[c] text` unless they were shown
/// there already.
pub fn dump_startup_to_stderr() {
    let mut sinks = SINKS.lock().unwrap_or_else(|e| e.into_inner());
    let shown = sinks.stderr;
    if let Some(lines) = sinks.startup.take() {
        if !shown {
            for (level, text) in lines {
                eprintln!("[{}] {}", level.mark(), text);
            }
        }
    }
}

/// Level for threads that have no session context (listeners, the main thread).
static GLOBAL_LEVEL: AtomicU8 = AtomicU8::new(Level::Notice as u8);

/// The syslog ident must outlive every `syslog()` call; it is set once.
static SYSLOG_IDENT: Mutex<Option<CString>> = Mutex::new(None);

thread_local! {
    /// (connection id as printed in `LOG5[id]`, that session's level)
    static CONTEXT: RefCell<Option<(String, Option<Level>)>> = const { RefCell::new(None) };
    /// This thread's lines kept back (`hold`), as they would have been written.
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// Lines of one session held until it proves itself (`repeats`).
struct Held {
    lines: Vec<Line>,
    /// The text kept, in bytes.
    bytes: usize,
    /// Lines past `HELD_MAX_BYTES`, not kept (nor formatted).
    dropped: usize,
}

/// A session's lines before it relays are few (accepted, connected, the handshake's few
/// info lines; at debug level a dozen, about 1 KiB): past this, the rest are counted. A
/// bound in bytes, because thousands of unproven sessions may be holding at once.
const HELD_MAX_BYTES: usize = 4096;

/// One line, made when it was logged.
struct Line {
    level: Level,
    timestamp: String,
    /// `LOG<n>[<id>]: `, what every sink puts before the text.
    tag: String,
    text: String,
}

/// Where log lines go, from the global options.
pub struct LogSetup<'a> {
    pub stderr: bool,
    pub output: Option<(&'a Path, bool)>,
    /// `Some((ident, facility))` opens syslog.
    pub syslog: Option<(&'a str, libc::c_int)>,
    pub level: Level,
}

/// Installs the sinks. Opening the output file can fail; the caller reports it.
pub fn configure(setup: &LogSetup<'_>) -> std::io::Result<()> {
    let file = match setup.output {
        Some((path, overwrite)) => Some(open_output(path, overwrite)?),
        None => None,
    };
    if let Some((ident, facility)) = setup.syslog {
        let ident = CString::new(ident).unwrap_or_else(|_| CString::from(c"stunnel"));
        let mut slot = SYSLOG_IDENT.lock().unwrap_or_else(|e| e.into_inner());
        // No LOG_CONS: without a syslog daemon the lines would go to the console.
        // SAFETY: the ident pointer stays valid: the CString is kept in SYSLOG_IDENT for
        // the life of the process and only replaced after closelog().
        unsafe {
            libc::closelog();
            libc::openlog(ident.as_ptr(), libc::LOG_NDELAY, facility);
        }
        *slot = Some(ident);
    }
    let mut sinks = SINKS.lock().unwrap_or_else(|e| e.into_inner());
    sinks.stderr = setup.stderr;
    sinks.file = file;
    sinks.syslog = setup.syslog.is_some();
    GLOBAL_LEVEL.store(setup.level as u8, Ordering::Relaxed);
    Ok(())
}

fn open_output(path: &Path, overwrite: bool) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = OpenOptions::new();
    options.create(true).mode(0o640);
    if overwrite {
        options.write(true).truncate(true);
    } else {
        options.append(true);
    }
    options.open(path)
}

/// Tags this thread's lines with a connection id and filters them by the service's level.
pub fn set_thread_context(id: &str, level: Level) {
    CONTEXT.with(|c| *c.borrow_mut() = Some((id.to_string(), Some(level))));
}

/// Tags this thread's lines with `id` (`main` after daemonising) and keeps filtering them
/// by the global level.
pub fn set_thread_id(id: &str) {
    CONTEXT.with(|c| *c.borrow_mut() = Some((id.to_string(), None)));
}

/// This thread's connection id (`ui` outside sessions), to pass on to a helper thread.
pub fn thread_log_id() -> String {
    CONTEXT.with(|c| {
        c.borrow()
            .as_ref()
            .map_or_else(|| "ui".to_string(), |(id, _)| id.clone())
    })
}

/// Whether a line at `level` would be written by this thread.
pub fn enabled(level: Level) -> bool {
    let limit = CONTEXT.with(|c| c.borrow().as_ref().and_then(|(_, l)| l.map(|l| l as u8)));
    level as u8 <= limit.unwrap_or_else(|| GLOBAL_LEVEL.load(Ordering::Relaxed))
}

/// Writes one line to every sink, or keeps it while this thread holds its lines. Use the
/// `log_*!` macros, which check `enabled` first.
pub fn emit(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    // A held line past the bound is only counted, never formatted.
    let line = HELD.with(|held| match held.borrow_mut().as_mut() {
        Some(held) if held.bytes >= HELD_MAX_BYTES => {
            held.dropped += 1;
            None
        }
        Some(held) => {
            let line = make_line(level, &thread_log_id(), args);
            held.bytes += line.tag.len() + line.text.len();
            held.lines.push(line);
            None
        }
        None => Some(make_line(level, &thread_log_id(), args)),
    });
    if let Some(line) = line {
        write_line(&line);
    }
}

/// Writes one line now, with this thread's id and level, even while the thread holds its
/// lines: for lines about the service rather than the connection on whose thread they
/// happen (`health`'s "paused"), which must not be dropped with a failed session's.
pub fn emit_unheld(level: Level, args: fmt::Arguments<'_>) {
    if enabled(level) {
        write_line(&make_line(level, &thread_log_id(), args));
    }
}

/// Writes one line at the global level, tagged `ui`, whatever this thread's context or
/// hold: for lines about the process rather than one connection (`repeats`' summaries).
pub fn emit_detached(level: Level, args: fmt::Arguments<'_>) {
    if level as u8 <= GLOBAL_LEVEL.load(Ordering::Relaxed) {
        write_line(&make_line(level, "ui", args));
    }
}

/// From here on this thread's lines are kept, not written, until `release_held` writes
/// them or `discard_held` drops them.
pub fn hold() {
    HELD.with(|held| {
        *held.borrow_mut() = Some(Held {
            lines: Vec::new(),
            bytes: 0,
            dropped: 0,
        })
    });
}

/// Writes the kept lines and stops holding. On stderr and in the `output` file each has
/// the time it was logged; syslog stamps them as they arrive.
pub fn release_held() {
    let Some(held) = HELD.with(|held| held.borrow_mut().take()) else {
        return;
    };
    for line in &held.lines {
        write_line(line);
    }
    if held.dropped > 0 {
        emit(
            Level::Notice,
            format_args!(
                "{} more line(s) of this connection before it relayed were not kept",
                held.dropped
            ),
        );
    }
}

/// Drops the kept lines and stops holding.
pub fn discard_held() {
    HELD.with(|held| *held.borrow_mut() = None);
}

fn make_line(level: Level, id: &str, args: fmt::Arguments<'_>) -> Line {
    Line {
        level,
        timestamp: timestamp(),
        tag: format!("LOG{}[{}]: ", level as u8, id),
        text: sanitize(&args.to_string()),
    }
}

fn write_line(line: &Line) {
    let Line {
        level,
        timestamp,
        tag,
        text,
    } = line;
    let level = *level;
    let tagged = format!("{tag}{text}");
    let mut sinks = SINKS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(buffer) = sinks.startup.as_mut() {
        buffer.push((level, text.clone()));
    }
    if sinks.stderr || sinks.file.is_some() {
        let line = format!("{timestamp} {tagged}\n");
        if sinks.stderr {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
        if let Some(file) = sinks.file.as_mut() {
            let _ = file.write_all(line.as_bytes());
        }
    }
    if sinks.syslog {
        if let Ok(message) = CString::new(tagged) {
            // SAFETY: "%s" with one NUL-terminated string argument.
            unsafe { libc::syslog(level as libc::c_int, c"%s".as_ptr(), message.as_ptr()) };
        }
    }
}

/// Keeps a peer's bytes (certificate names, SNI) from forging log lines or terminal codes.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .collect()
}

/// Local time as stunnel prints it: `2026.11.26 18:59:27`.
fn timestamp() -> String {
    // SAFETY: time() and localtime_r() with valid pointers to stack values.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&now, &mut tm);
        format!(
            "{:04}.{:02}.{:02} {:02}:{:02}:{:02}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec
        )
    }
}

/// Prints a startup failure the way stunnel dumps its log buffer: `[!] text` on stderr.
pub fn startup_error(text: &str) {
    eprintln!("[{}] {}", Level::Err.mark(), sanitize(text));
}

#[macro_export]
macro_rules! log_at {
    ($level:expr, $($arg:tt)*) => {
        if $crate::log::enabled($level) {
            $crate::log::emit($level, format_args!($($arg)*))
        }
    };
}
/// `log_at!` for lines that must not wait in a held session's lines (`log::emit_unheld`).
#[macro_export]
macro_rules! log_unheld {
    ($level:expr, $($arg:tt)*) => {
        if $crate::log::enabled($level) {
            $crate::log::emit_unheld($level, format_args!($($arg)*))
        }
    };
}
#[macro_export]
macro_rules! log_err { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Err, $($arg)*) }; }
#[macro_export]
macro_rules! log_warning { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Warning, $($arg)*) }; }
#[macro_export]
macro_rules! log_notice { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Notice, $($arg)*) }; }
#[macro_export]
macro_rules! log_info { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Info, $($arg)*) }; }
#[macro_export]
macro_rules! log_debug { ($($arg:tt)*) => { $crate::log_at!($crate::log::Level::Debug, $($arg)*) }; }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_match_stunnel() {
        assert_eq!(Level::Err.mark(), '!');
        assert_eq!(Level::Warning.mark(), ':');
        assert_eq!(Level::Notice.mark(), '.');
        assert_eq!(Level::Debug.mark(), ' ');
    }

    #[test]
    fn control_characters_are_neutralised() {
        assert_eq!(sanitize("a\nLOG3[0]: fake\x1b[31m"), "a.LOG3[0]: fake.[31m");
    }

    #[test]
    fn timestamp_shape() {
        let t = timestamp();
        assert_eq!(t.len(), 19);
        assert_eq!(&t[4..5], ".");
        assert_eq!(&t[10..11], " ");
    }

    #[test]
    fn thread_context_filters_by_service_level() {
        std::thread::spawn(|| {
            set_thread_context("3", Level::Warning);
            assert!(enabled(Level::Err));
            assert!(!enabled(Level::Notice));
        })
        .join()
        .unwrap();
    }

    fn held_count() -> (usize, usize) {
        HELD.with(|h| {
            h.borrow()
                .as_ref()
                .map_or((0, 0), |h| (h.lines.len(), h.dropped))
        })
    }

    /// A held session's lines wait; lines about the service do not (the defect: a quiet
    /// session that paused its service dropped the "paused" line with its own); past
    /// `HELD_MAX_BYTES` lines are only counted.
    #[test]
    fn held_lines_wait_service_lines_do_not_and_the_hold_is_bounded() {
        std::thread::spawn(|| {
            set_thread_context("9", Level::Debug);
            hold();
            emit(Level::Notice, format_args!("accepted connection"));
            emit_unheld(Level::Notice, format_args!("Service [x] paused: test"));
            assert_eq!(held_count(), (1, 0), "the service line was not held");
            let filler = "x".repeat(200);
            for _ in 0..100 {
                emit(Level::Debug, format_args!("{filler}"));
            }
            let (kept, dropped) = held_count();
            assert!(kept * 200 <= HELD_MAX_BYTES + 400, "{kept} lines kept");
            assert_eq!(kept + dropped, 101);
            discard_held();
            assert_eq!(held_count(), (0, 0));
        })
        .join()
        .unwrap();
    }
}
