//! [`Tunnel`]: one running tunnel process (the built `rstunnel`, or the reference `stunnel4`)
//! owned by a test.
//!
//! The config is written to the test's dir with `foreground = yes` and `debug = 7` in front, so
//! the process logs to stderr; two reader threads copy its stderr and stdout line by line into a
//! shared [`LogBuf`] that tests wait on. Listeners use `accept = 127.0.0.1:0` and the real
//! ports are read back from the LOG6 `Service [NAME] (FD=N) bound to IP:PORT` lines.
//!
//! Drop (also while a test panics): SIGTERM, up to 5 s for it to exit, then SIGKILL; the log
//! is printed when the test failed (or always with `RSTUNNEL_TEST_LOGS`).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::certs::Pki;
use super::TestDir;

/// How long to wait for a daemon to bind its listeners.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a SIGTERM'd daemon gets before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Which tunnel implementation to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// The binary under test: `RSTUNNEL_TEST_BIN` if set, else the `rstunnel` cargo built.
    Rstunnel,
    /// The reference `stunnel4` (Debian 12, 5.68).
    Stunnel4,
}

impl Program {
    pub fn path(self) -> PathBuf {
        match self {
            Program::Rstunnel => match std::env::var_os("RSTUNNEL_TEST_BIN") {
                Some(p) => PathBuf::from(p),
                None => PathBuf::from(env!("CARGO_BIN_EXE_rstunnel")),
            },
            Program::Stunnel4 => super::tools::stunnel4(),
        }
    }
}

/// The path of the binary under test (see [`Program::Rstunnel`]).
pub fn rstunnel_bin() -> PathBuf {
    Program::Rstunnel.path()
}

/// True when `path` is the reference stunnel rather than rstunnel.
fn is_reference_stunnel(path: &Path) -> bool {
    path.file_name()
        .map(|n| n.to_string_lossy().starts_with("stunnel"))
        .unwrap_or(false)
}

/// Global lines every test config gets in front of `body`, for `program`: for Debian's
/// stunnel4 no pid file and no syslog noise; for rstunnel `pauseWhenDown = no` unless `body`
/// names the option. A pausing service probes its far side (a real connection to the test's
/// backend, an extra session on a far tunnel) and refuses while it is down; tests of other
/// things count connections and expect accept-then-fail, so they run without it. Tests of
/// pausing name the option (tests/pause.rs, the soak).
pub fn test_globals(program: &Path, body: &str) -> String {
    if is_reference_stunnel(program) {
        "pid =\nsyslog = no\n".into()
    } else if body.contains("pauseWhenDown") {
        String::new()
    } else {
        "pauseWhenDown = no\n".into()
    }
}

/// Writes `<label>.conf` in `dir` for `program`: `foreground = yes`, `debug = 7`, the
/// [`test_globals`], then `body`. Returns its path.
pub fn write_test_conf(dir: &TestDir, label: &str, program: &Path, body: &str) -> PathBuf {
    let conf = format!(
        "; {label}: written by the test harness (tests/common/daemon.rs)\n\
         foreground = yes\ndebug = 7\n{}{body}\n",
        test_globals(program, body)
    );
    dir.write(&format!("{label}.conf"), conf)
}

/// Lines captured from a process, with a condition variable to wait for new ones.
pub struct LogBuf {
    state: Mutex<LogState>,
    cv: Condvar,
}

struct LogState {
    lines: Vec<String>,
    /// Reader threads still running; 0 means the process closed its outputs (no more lines).
    open_streams: usize,
}

impl LogBuf {
    fn new(streams: usize) -> LogBuf {
        LogBuf {
            state: Mutex::new(LogState {
                lines: Vec::new(),
                open_streams: streams,
            }),
            cv: Condvar::new(),
        }
    }

    fn push(&self, line: String) {
        self.state.lock().unwrap().lines.push(line);
        self.cv.notify_all();
    }

    fn stream_closed(&self) {
        self.state.lock().unwrap().open_streams -= 1;
        self.cv.notify_all();
    }

    pub fn lines(&self) -> Vec<String> {
        self.state.lock().unwrap().lines.clone()
    }

    pub fn text(&self) -> String {
        let mut s = self.lines().join("\n");
        s.push('\n');
        s
    }

    /// Waits until `pred` holds for the captured lines, or the deadline passes, or the
    /// process closed its outputs. Returns whether `pred` held.
    pub fn wait_until(&self, timeout: Duration, mut pred: impl FnMut(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.state.lock().unwrap();
        loop {
            if pred(&st.lines) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || st.open_streams == 0 {
                return false;
            }
            // Bounded waits, so a missed notification costs at most 100 ms.
            let step = (deadline - now).min(Duration::from_millis(100));
            st = self.cv.wait_timeout(st, step).unwrap().0;
        }
    }
}

fn spawn_reader(r: impl Read + Send + 'static, log: Arc<LogBuf>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    while buf.last() == Some(&b'\n') || buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                    log.push(String::from_utf8_lossy(&buf).into_owned());
                }
            }
        }
        log.stream_closed();
    })
}

/// One parsed stunnel-format log line: `YYYY.MM.DD HH:MM:SS LOG<n>[<id>]: text`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub level: u8,
    pub id: String,
    pub text: String,
}

/// Parses a stunnel-format log line; `None` for anything else (e.g. `[!] …` config errors).
pub fn parse_log_line(line: &str) -> Option<LogLine> {
    let b = line.as_bytes();
    // "2026.11.26 20:00:35 " is 20 bytes.
    if b.len() < 27
        || b[4] != b'.'
        || b[7] != b'.'
        || b[10] != b' '
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let rest = line.get(20..)?;
    let rest = rest.strip_prefix("LOG")?;
    let level = rest.chars().next()?.to_digit(10)? as u8;
    let rest = rest[1..].strip_prefix('[')?;
    let close = rest.find("]: ")?;
    Some(LogLine {
        level,
        id: rest[..close].to_string(),
        text: rest[close + 3..].to_string(),
    })
}

/// Byte counts from a `Connection closed: N byte(s) sent to TLS, M byte(s) sent to socket`
/// line (also `reset`, `reset/closed`, `closed/reset`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseCounts {
    pub sent_to_tls: u64,
    pub sent_to_socket: u64,
    /// The word(s) between "Connection " and ":" (`closed`, `reset`, …).
    pub how: String,
    pub id: String,
}

pub fn parse_close_line(line: &str) -> Option<CloseCounts> {
    let l = parse_log_line(line)?;
    let rest = l.text.strip_prefix("Connection ")?;
    let (how, rest) = rest.split_once(": ")?;
    let (tls, rest) = rest.split_once(" byte(s) sent to TLS, ")?;
    let sock = rest.strip_suffix(" byte(s) sent to socket")?;
    Some(CloseCounts {
        sent_to_tls: tls.trim().parse().ok()?,
        sent_to_socket: sock.trim().parse().ok()?,
        how: how.to_string(),
        id: l.id,
    })
}

/// Parses `Service [NAME] (FD=N) bound to ADDR` into (NAME, ADDR). ADDR is `IP:PORT` with an
/// IPv6 address unbracketed, as stunnel prints it (split at the last `:`).
pub fn parse_bound_line(line: &str) -> Option<(String, SocketAddr)> {
    let l = parse_log_line(line)?;
    let rest = l.text.strip_prefix("Service [")?;
    let (name, rest) = rest.rsplit_once("] (FD=")?;
    let (_, addr) = rest.split_once(") bound to ")?;
    let (host, port) = addr.rsplit_once(':')?;
    let ip: std::net::IpAddr = host.parse().ok()?;
    let port: u16 = port.parse().ok()?;
    Some((name.to_string(), SocketAddr::new(ip, port)))
}

/// Section names (`[name]` headers) of a config text, in order.
pub fn section_names(config: &str) -> Vec<String> {
    config
        .lines()
        .map(str::trim)
        .filter(|l| l.len() >= 2 && l.starts_with('[') && l.ends_with(']'))
        .map(|l| l[1..l.len() - 1].to_string())
        .collect()
}

/// The count in a summary of repeated failures or refusals (src/repeats/):
/// `… N more connection(s) from …`.
pub fn summary_count(line: &str) -> Option<usize> {
    line.split(" more connection(s)")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
}

/// A running tunnel process. See the module docs.
pub struct Tunnel {
    pub label: String,
    pub conf: PathBuf,
    pub program: PathBuf,
    child: Option<Child>,
    status: Option<ExitStatus>,
    log: Arc<LogBuf>,
    readers: Vec<JoinHandle<()>>,
    bound: Vec<(String, SocketAddr)>,
}

impl Tunnel {
    /// Writes `<label>.conf` (foreground, debug 7, then `body`) and starts rstunnel on it
    /// under `prlimit --nofile=N:N`, so that its connection cap follows that limit; waits
    /// until every section of `body` is bound.
    pub fn start_with_open_files(dir: &TestDir, label: &str, nofile: u32, body: &str) -> Tunnel {
        let prlimit = super::tools::find_program("prlimit");
        let conf = dir.write(
            &format!("{label}.conf"),
            format!("foreground = yes\ndebug = 7\n{body}"),
        );
        let limit = format!("--nofile={nofile}:{nofile}");
        let bin = rstunnel_bin();
        let mut t = Tunnel::spawn(
            &prlimit,
            &[limit.as_ref(), bin.as_os_str(), conf.as_os_str()],
            label,
            conf.clone(),
        );
        t.wait_bound(&section_names(body), START_TIMEOUT);
        t
    }

    /// Sends SIGUSR2 and returns the service lines of that listing (between its "Listed" and
    /// "Memory" lines).
    pub fn usr2_services(&self) -> Vec<String> {
        let count = |pat: &str| self.log_lines().iter().filter(|l| l.contains(pat)).count();
        let (listed, memory) = (count("Listed "), count("Memory: heap "));
        self.signal(libc::SIGUSR2);
        self.wait_for_logs("Memory: heap ", memory + 1, Duration::from_secs(10));
        let lines = self.log_lines();
        let start = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains("Listed "))
            .nth(listed)
            .map(|(i, _)| i)
            .unwrap_or_else(|| self.fail("no Listed line"));
        lines[start..]
            .iter()
            .take_while(|l| !l.contains("Memory: heap "))
            .filter(|l| l.contains("since the start") || l.contains(" held on "))
            .cloned()
            .collect()
    }

    /// Connections refused with `reason` so far: those logged one by one plus those
    /// counted in the summaries of repeated refusals (src/repeats/), which a SIGUSR2
    /// makes the tunnel write now.
    pub fn refusals_logged_or_counted(&self, reason: &str) -> usize {
        let listed = |t: &Tunnel| {
            t.log_lines()
                .iter()
                .filter(|l| l.contains("Listed "))
                .count()
        };
        let before = listed(self);
        self.signal(libc::SIGUSR2);
        self.wait_for_logs("Listed ", before + 1, Duration::from_secs(10));
        self.log_lines()
            .iter()
            .map(|line| {
                if line.contains(&format!("rejected: {reason}")) {
                    1
                } else if line.contains(" refused in the last ")
                    && line.ends_with(&format!("the last: {reason}"))
                {
                    summary_count(line).unwrap_or_else(|| self.fail(&format!("no count in {line}")))
                } else {
                    0
                }
            })
            .sum()
    }

    /// Starts the binary under test with `body` (see [`Tunnel::start_program`]).
    pub fn start(dir: &TestDir, label: &str, body: &str) -> Tunnel {
        Tunnel::start_program(Program::Rstunnel, dir, label, body)
    }

    /// The usual server tunnel, labelled `server`: `[srv]` on 127.0.0.1:0 with `pki.server`,
    /// in front of `backend`, with `extra` lines in the section ([`server_body`]).
    pub fn server(dir: &TestDir, pki: &Pki, backend: SocketAddr, extra: &str) -> Tunnel {
        Tunnel::start(
            dir,
            "server",
            &server_body(backend, &pki.server.combined, extra),
        )
    }

    /// Writes `<label>.conf` = the standard global lines + `body`, starts `program` with it and
    /// waits (up to [`START_TIMEOUT`]) until every `[section]` in `body` logged its `bound to`
    /// line. Panics with the log if the process exits or the deadline passes first.
    ///
    /// `body` may begin with more global options before its first section header.
    pub fn start_program(program: Program, dir: &TestDir, label: &str, body: &str) -> Tunnel {
        let sections = section_names(body);
        let names: Vec<&str> = sections.iter().map(String::as_str).collect();
        Tunnel::start_waiting_for(program, dir, label, body, &names)
    }

    /// [`Tunnel::start_program`], waiting only for the `bound to` lines of `sections`: a
    /// virtual host (`sni = PRIMARY:…`) or an exec+connect section has no listener.
    pub fn start_waiting_for(
        program: Program,
        dir: &TestDir,
        label: &str,
        body: &str,
        sections: &[&str],
    ) -> Tunnel {
        let path = program.path();
        let conf_path = write_test_conf(dir, label, &path, body);
        let mut t = Tunnel::spawn(&path, &[conf_path.as_os_str()], label, conf_path.clone());
        let names: Vec<String> = sections.iter().map(|s| s.to_string()).collect();
        t.wait_bound(&names, START_TIMEOUT);
        t
    }

    /// Spawns `program args…` with stdout and stderr captured; does not wait for anything.
    pub fn spawn(program: &Path, args: &[&std::ffi::OsStr], label: &str, conf: PathBuf) -> Tunnel {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", program.display()));
        let log = Arc::new(LogBuf::new(2));
        let readers = vec![
            spawn_reader(child.stderr.take().unwrap(), log.clone()),
            spawn_reader(child.stdout.take().unwrap(), log.clone()),
        ];
        Tunnel {
            label: label.to_string(),
            conf,
            program: program.to_path_buf(),
            child: Some(child),
            status: None,
            log,
            readers,
            bound: Vec::new(),
        }
    }

    /// Waits for one `bound to` line per name in `sections`; panics with the log on failure
    /// or if the process exits first.
    pub fn wait_bound(&mut self, sections: &[String], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let bound: Vec<(String, SocketAddr)> = self
                .log
                .lines()
                .iter()
                .filter_map(|l| parse_bound_line(l))
                .collect();
            let missing: Vec<&String> = sections
                .iter()
                .filter(|s| !bound.iter().any(|(n, _)| n == *s))
                .collect();
            if missing.is_empty() {
                self.bound = bound;
                self.wait_first_probes(sections, deadline);
                return;
            }
            if let Some(st) = self.try_wait() {
                self.fail(&format!("exited with {st} before binding {missing:?}"));
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "no `bound to` line for {missing:?} within {timeout:?}"
                ));
            }
            self.log.wait_until(Duration::from_millis(100), |_| false);
        }
    }

    /// A pausing service binds without listening and listens once its first probe answers
    /// (`pauseWhenDown`): wait for that probe's verdict, so that a test that connects
    /// right after the start finds it listening (or, its far side down, paused).
    fn wait_first_probes(&mut self, sections: &[String], deadline: Instant) {
        let probing: Vec<&String> = sections
            .iter()
            .filter(|s| {
                let pat = format!("Service [{s}]: ");
                self.log.lines().iter().any(|l| {
                    l.contains(&pat) && l.contains("not listening until its far side answers")
                })
            })
            .collect();
        for s in probing {
            let (answers, paused) = (
                format!("Service [{s}]: far side answers"),
                format!("Service [{s}] paused: "),
            );
            let left = deadline.saturating_duration_since(Instant::now());
            if !self.log.wait_until(left, |lines| {
                lines
                    .iter()
                    .any(|l| l.contains(&answers) || l.contains(&paused))
            }) {
                self.fail(&format!(
                    "[{s}]: no first probe verdict within the start timeout"
                ));
            }
        }
    }

    /// Panics with `msg`, the config and the log.
    pub fn fail(&self, msg: &str) -> ! {
        let conf = std::fs::read_to_string(&self.conf).unwrap_or_default();
        panic!(
            "[{}] {msg}\n--- {} ---\n{conf}--- log of {} ---\n{}",
            self.label,
            self.conf.display(),
            self.program.display(),
            self.log.text()
        );
    }

    /// The first address service `section` is bound to.
    pub fn addr(&self, section: &str) -> SocketAddr {
        match self.bound.iter().find(|(n, _)| n == section) {
            Some((_, a)) => *a,
            None => self.fail(&format!(
                "service [{section}] has no bound address (have {:?})",
                self.bound
            )),
        }
    }

    pub fn port(&self, section: &str) -> u16 {
        self.addr(section).port()
    }

    /// All (service, address) pairs read from the `bound to` lines.
    pub fn bound(&self) -> &[(String, SocketAddr)] {
        &self.bound
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.lines()
    }

    pub fn log_text(&self) -> String {
        self.log.text()
    }

    /// Whether some captured line contains `pattern` now.
    pub fn has_log(&self, pattern: &str) -> bool {
        self.log.lines().iter().any(|l| l.contains(pattern))
    }

    /// Waits for a line containing `pattern` and returns it; panics with the log on timeout.
    pub fn wait_for_log(&self, pattern: &str, timeout: Duration) -> String {
        self.wait_for_logs(pattern, 1, timeout).remove(0)
    }

    /// Waits until at least `n` lines contain `pattern`; returns all such lines.
    pub fn wait_for_logs(&self, pattern: &str, n: usize, timeout: Duration) -> Vec<String> {
        let ok = self.log.wait_until(timeout, |ls| {
            ls.iter().filter(|l| l.contains(pattern)).count() >= n
        });
        let found: Vec<String> = self
            .log
            .lines()
            .into_iter()
            .filter(|l| l.contains(pattern))
            .collect();
        if !ok {
            self.fail(&format!(
                "expected {n} log line(s) containing {pattern:?} within {timeout:?}, found {}",
                found.len()
            ));
        }
        found
    }

    /// Waits for a line matching `pred`; returns it, or `None` at the deadline.
    pub fn try_wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        self.log
            .wait_until(timeout, |ls| ls.iter().any(|l| pred(l)));
        self.log.lines().into_iter().find(|l| pred(l))
    }

    /// Waits for `n` connection summary lines (`Connection closed: …`) and returns them parsed,
    /// in log order. Panics with the log on timeout.
    pub fn wait_close_counts(&self, n: usize, timeout: Duration) -> Vec<CloseCounts> {
        let ok = self.log.wait_until(timeout, |ls| {
            ls.iter().filter(|l| parse_close_line(l).is_some()).count() >= n
        });
        let got: Vec<CloseCounts> = self
            .log
            .lines()
            .iter()
            .filter_map(|l| parse_close_line(l))
            .collect();
        if !ok {
            self.fail(&format!(
                "expected {n} `Connection closed: … byte(s) sent to TLS, … byte(s) sent to socket` \
                 line(s) within {timeout:?}, found {}",
                got.len()
            ));
        }
        got
    }

    /// Log lines of level `max_level` or more severe from connection threads (see
    /// [`is_connection_problem`]).
    pub fn connection_problems(&self, max_level: u8) -> Vec<String> {
        self.log
            .lines()
            .into_iter()
            .filter(|l| is_connection_problem(l, max_level))
            .collect()
    }

    /// Sends signal `sig` to the process (no-op once it has been reaped).
    pub fn signal(&self, sig: libc::c_int) {
        if let Some(c) = &self.child {
            // SAFETY: plain kill(2) on a pid we spawned and have not reaped yet.
            unsafe {
                libc::kill(c.id() as libc::pid_t, sig);
            }
        }
    }

    /// Non-blocking check whether the process exited; remembers the status.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.status = Some(st);
                    self.child = None;
                }
            }
        }
        self.status
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, up to [`STOP_TIMEOUT`] to exit, then SIGKILL. Returns the exit status and
    /// whether SIGKILL was needed.
    pub fn stop_with(&mut self, sig: libc::c_int) -> (ExitStatus, bool) {
        if let Some(st) = self.try_wait() {
            return (st, false);
        }
        self.signal(sig);
        if let Some(st) = self.wait_exit(STOP_TIMEOUT) {
            return (st, false);
        }
        let mut c = self.child.take().expect("child present");
        let _ = c.kill();
        let st = c.wait().expect("wait after SIGKILL");
        self.status = Some(st);
        (st, true)
    }

    /// Stops the process with SIGTERM (SIGKILL after 5 s); returns its exit status. Panics if
    /// SIGKILL was needed.
    pub fn stop(&mut self) -> ExitStatus {
        let (st, killed) = self.stop_with(libc::SIGTERM);
        if killed {
            self.fail(&format!(
                "did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed"
            ));
        }
        st
    }

    /// Waits (briefly) for the output readers so the log is complete.
    fn join_readers(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        for r in self.readers.drain(..) {
            if r.is_finished() {
                let _ = r.join();
            }
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let (_, killed) = self.stop_with(libc::SIGTERM);
        self.join_readers();
        let show = std::thread::panicking() || std::env::var_os("RSTUNNEL_TEST_LOGS").is_some();
        if show || killed {
            eprintln!(
                "--- [{}] {} {} (exit: {:?}{}) ---\n{}--- end of [{}] ---",
                self.label,
                self.program.display(),
                self.conf.display(),
                self.status,
                if killed { ", needed SIGKILL" } else { "" },
                self.log.text(),
                self.label
            );
        }
    }
}

/// Config body of a server-mode service `[srv]` on `127.0.0.1:0` that connects to `backend`,
/// with `cert` (cert+key in one file) and `extra` option lines in the section.
pub fn server_body(backend: SocketAddr, cert: &Path, extra: &str) -> String {
    format!(
        "[srv]\naccept = 127.0.0.1:0\nconnect = {backend}\ncert = {}\n{extra}\n",
        cert.display()
    )
}

/// Config body of a client-mode service `[cli]` on `127.0.0.1:0` (`client = yes` in the
/// global part) that connects to `server`, with `extra` option lines in the section.
pub fn client_body(server: SocketAddr, extra: &str) -> String {
    format!("client = yes\n[cli]\naccept = 127.0.0.1:0\nconnect = {server}\n{extra}\n")
}

/// Whether `line` is a LOG0…LOG`max_level` line from a connection (id not `ui`, `main` or
/// `cron`): how a tunnel reports a refused or failed session.
pub fn is_connection_problem(line: &str, max_level: u8) -> bool {
    match parse_log_line(line) {
        Some(p) => p.level <= max_level && !matches!(p.id.as_str(), "ui" | "main" | "cron"),
        None => false,
    }
}

/// A client-mode tunnel in front of a server-mode tunnel in front of a backend:
///
/// ```text
/// test ──plain──▶ client [cli] ──TLS──▶ server [srv] ──plain──▶ backend
/// ```
///
/// The server section uses `pki.server` (cert+key in one file); extra option lines go into
/// each section. Fields drop in order: the client first, then the server.
pub struct TunnelPair {
    pub client: Tunnel,
    pub server: Tunnel,
}

impl TunnelPair {
    pub fn start(
        dir: &TestDir,
        pki: &Pki,
        backend: SocketAddr,
        server_extra: &str,
        client_extra: &str,
    ) -> TunnelPair {
        Self::start_programs(
            (Program::Rstunnel, Program::Rstunnel),
            dir,
            pki,
            backend,
            (server_extra, client_extra),
        )
    }

    /// [`TunnelPair::start`] with other programs: the first pair is the (client, server)
    /// programs, the last the (server, client) extra lines as in `start`.
    pub fn start_programs(
        (client_prog, server_prog): (Program, Program),
        dir: &TestDir,
        pki: &Pki,
        backend: SocketAddr,
        (server_extra, client_extra): (&str, &str),
    ) -> TunnelPair {
        Self::start_with_server_body(
            client_prog,
            server_prog,
            dir,
            &server_body(backend, &pki.server.combined, server_extra),
            client_extra,
        )
    }

    /// `server_prog` with `server_section` (a `[srv]` section, e.g. a PSK-only one), then
    /// `client_prog` with a `[cli]` section connecting to it, `client_extra` in it.
    pub fn start_with_server_body(
        client_prog: Program,
        server_prog: Program,
        dir: &TestDir,
        server_section: &str,
        client_extra: &str,
    ) -> TunnelPair {
        let server = Tunnel::start_program(server_prog, dir, "server", server_section);
        let client = Tunnel::start_program(
            client_prog,
            dir,
            "client",
            &client_body(server.addr("srv"), client_extra),
        );
        TunnelPair { client, server }
    }

    /// Where a test connects: the client tunnel's plain listener.
    pub fn entry(&self) -> SocketAddr {
        self.client.addr("cli")
    }
}

/// Writes `<label>.conf` (the standard global lines + `body`) and starts `prefix… rstunnel
/// conf` (`prefix` e.g. `ip netns exec NS`, or `setpriv …`), then waits for the `bound to`
/// lines of `sections` (an exec+connect section has none: pass only listening ones) and
/// for `Configuration successful`.
pub fn start_with(
    dir: &TestDir,
    label: &str,
    body: &str,
    prefix: &[&str],
    sections: &[&str],
) -> Tunnel {
    let bin = rstunnel_bin();
    // RSTUNNEL_TEST_BIN=/usr/bin/stunnel4 checks the tests against the reference.
    let conf_path = write_test_conf(dir, label, &bin, body);
    let (program, mut args): (PathBuf, Vec<&OsStr>) = match prefix.split_first() {
        Some((first, rest)) => (
            super::tools::find_program(first),
            rest.iter().map(|a| OsStr::new(*a)).collect(),
        ),
        None => (bin.clone(), Vec::new()),
    };
    if !prefix.is_empty() {
        args.push(bin.as_os_str());
    }
    args.push(conf_path.as_os_str());
    let mut t = Tunnel::spawn(&program, &args, label, conf_path.clone());
    let names: Vec<String> = sections.iter().map(|s| s.to_string()).collect();
    t.wait_bound(&names, START_TIMEOUT);
    t.wait_for_log("Configuration successful", START_TIMEOUT);
    t
}

/// A fresh test directory and [`Pki`] (returned together, to be kept alive), an echo
/// [`Backend`](super::net::Backend) and [`Tunnel::server`] in front of it: where many tests
/// start. Bound in one `let`, they drop in reverse order (tunnel, backend, directory).
pub fn echo_server(label: &str) -> ((TestDir, Pki), super::net::Backend, Tunnel) {
    let dir = TestDir::new(label);
    let pki = Pki::new(&dir);
    let echo = super::net::Backend::echo();
    let server = Tunnel::server(&dir, &pki, echo.addr(), "");
    ((dir, pki), echo, server)
}
