//! What the process fault tests (`tests/faults_process_signals.rs`,
//! `tests/faults_process_limits.rs`) share: a lock that runs their cases one at a time, their
//! `summary: proc …` line (scripts/test-faults.sh parses it), the descriptor limit, CPU time
//! and per-thread status fields of a process from `/proc`, and starting a daemon-mode
//! tunnel from its config. Nothing here reads a tunnel's log or talks to its sockets.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::process::pid_alive;
use super::tools;

/// Bound on a daemon's pid file appearing after its parent exited.
const START_WAIT: Duration = Duration::from_secs(10);

/// One case at a time within a test binary: the SIGTERM case alone runs ~10,000 threads, and
/// the CPU figures of the descriptor case mean more on a machine not also running it.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn summary(case: &str, load: &str, faults: &str, bad_inputs: u64, bytes_lost: u64) {
    println!(
        "summary: proc {case} | load={load} | faults={faults} | bad_inputs={bad_inputs} | bytes_lost={bytes_lost}"
    );
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit (children inherit it); returns
/// the new soft limit.
pub fn raise_nofile() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        if l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every target
    let soft = l.rlim_cur as u64;
    soft
}

/// CPU time (user + system, all threads) of `pid` in seconds, from /proc/PID/stat.
pub fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/stat: {e}"));
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    // After "(comm)": state(0) ppid … utime is field 14 of the line, i.e. index 11 here.
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// `key:` fields of /proc/PID/task/TID/status for every thread of `pid`.
pub fn task_fields(pid: i32, key: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let tid = e.file_name().to_string_lossy().into_owned();
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue; // the thread ended meanwhile
        };
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no {key}: in /proc/{pid}/task/{tid}/status"));
        out.push((
            tid,
            line[key.len() + 1..]
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        ));
    }
    out
}

pub fn read_text(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Last `n` lines of a file, for failure messages.
pub fn tail(p: &Path, n: usize) -> String {
    let text = read_text(p);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `program CONF` where CONF is a daemon-mode config (`foreground = no`, pid file,
/// output file); waits for the parent to exit 0 and for the pid file. Returns the pid.
pub fn start_daemon(program: &Path, conf: &Path, pid_file: &Path, log: &Path) -> i32 {
    let r = tools::run(program, &[conf.to_str().unwrap()], Duration::from_secs(15));
    assert_eq!(
        r.status.code(),
        Some(0),
        "{} {} must fork and exit 0\n{}",
        program.display(),
        conf.display(),
        r.describe()
    );
    let deadline = Instant::now() + START_WAIT;
    loop {
        if let Some(pid) = read_text(pid_file)
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|p| pid_alive(*p))
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no live pid in {} within {START_WAIT:?}; log:\n{}",
            pid_file.display(),
            tail(log, 30)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
