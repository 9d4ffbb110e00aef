//! External programs the interop tests drive (`openssl`, `stunnel4`), and running a program
//! with a deadline.
//!
//! A missing program is a test failure with a pointer to `scripts/deps.sh` (which `make test`
//! runs), never a silent pass: a green run must mean the interop was actually checked.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Finds `name` on `PATH`, then in the usual system directories; panics with install advice
/// if it is nowhere.
pub fn find_program(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
        dirs.push(PathBuf::from(d));
    }
    for d in dirs {
        let p = d.join(name);
        if is_executable(&p) {
            return p;
        }
    }
    panic!(
        "required program `{name}` was not found on PATH or in /usr/bin: run scripts/deps.sh \
         to install the test dependencies (`make test` does this for you)"
    );
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The `openssl` command-line tool.
pub fn openssl() -> PathBuf {
    find_program("openssl")
}

/// Debian's `stunnel4` binary (the reference implementation).
pub fn stunnel4() -> PathBuf {
    find_program("stunnel4")
}

/// Kills and reaps a child when dropped, so a panicking test leaves no process behind.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child already taken")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Result of [`run_with_timeout`].
pub struct RunResult {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl RunResult {
    /// stdout and stderr, for messages.
    pub fn describe(&self) -> String {
        format!(
            "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` with `stdin` fed to it (then closed), capturing stdout and stderr. Panics if it
/// has not exited after `timeout` (it is killed first), with what it printed so far.
pub fn run_with_timeout(mut cmd: Command, stdin: &[u8], timeout: Duration) -> RunResult {
    let desc = format!("{cmd:?}");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {desc}: {e}"));
    let mut guard = ChildGuard(Some(child));
    let mut stdin_pipe = guard.child().stdin.take().unwrap();
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin_pipe.write_all(&input);
        // Dropping the pipe closes the program's stdin.
    });
    let out = guard.child().stdout.take().unwrap();
    let err = guard.child().stderr.take().unwrap();
    let out_t = std::thread::spawn(move || read_all(out));
    let err_t = std::thread::spawn(move || read_all(err));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = guard.child().try_wait().expect("try_wait") {
            break Some(s);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let timed_out = status.is_none();
    if timed_out {
        let _ = guard.child().kill();
    }
    let status = match status {
        Some(s) => s,
        None => guard.child().wait().expect("wait"),
    };
    guard.0 = None;
    let _ = writer.join();
    let stdout = out_t.join().unwrap();
    let stderr = err_t.join().unwrap();
    let r = RunResult {
        status,
        stdout,
        stderr,
    };
    if timed_out {
        panic!(
            "{desc} did not finish within {timeout:?}; killed\n{}",
            r.describe()
        );
    }
    r
}

fn read_all(mut r: impl std::io::Read) -> String {
    let mut v = Vec::new();
    let _ = r.read_to_end(&mut v);
    String::from_utf8_lossy(&v).into_owned()
}

/// [`run_with_timeout`] with a plain `Command` built from `program` and `args`, no stdin.
pub fn run(program: &Path, args: &[&str], timeout: Duration) -> RunResult {
    let mut cmd = Command::new(program);
    cmd.args(args);
    run_with_timeout(cmd, b"", timeout)
}

/// (major, minor) of the OpenSSL that `rstunnel -version` says it runs with: for tests
/// whose right answer depends on it (`make test-openssl111`, `make test-openssl40`).
pub fn linked_openssl() -> (u32, u32) {
    let r = run(
        &super::daemon::rstunnel_bin(),
        &["-version"],
        Duration::from_secs(10),
    );
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("Running  with OpenSSL "))
        .unwrap_or_else(|| panic!("no `Running  with OpenSSL` line\n{}", r.describe()));
    let version = line["Running  with OpenSSL ".len()..]
        .split_whitespace()
        .next()
        .unwrap_or("");
    let mut parts = version.split('.');
    let major = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor)
}

/// An rstunnel run (`--check FILE`, or a start) that refused its configuration: exit status
/// 1, `message` on stderr, and `configuration OK` on neither stream.
pub fn assert_config_refused(r: &RunResult, message: &str) {
    assert_eq!(r.status.code(), Some(1), "{}", r.describe());
    assert!(
        r.stderr.contains(message),
        "stderr must contain {message:?}\n{}",
        r.describe()
    );
    assert!(
        !r.stdout.contains("configuration OK") && !r.stderr.contains("configuration OK"),
        "{}",
        r.describe()
    );
}

/// A private `rsyslogd -n` with `rules` (everything of its config after the
/// `global(workDirectory=…)` line, which points into `dir`), its output in `<dir>/rsyslogd.out`.
/// Returns once it has made `socket` (its input); panics with its output if it exits first or
/// `timeout` passes. The guard kills it on drop.
pub fn rsyslogd(
    dir: &super::TestDir,
    rules: &str,
    socket: &Path,
    timeout: Duration,
) -> (ChildGuard, PathBuf) {
    let work = dir.join("rsyslog-work");
    std::fs::create_dir_all(&work).unwrap();
    let conf = dir.write(
        "rsyslog.conf",
        format!("global(workDirectory=\"{}\")\n{rules}", work.display()),
    );
    let log = dir.join("rsyslogd.out");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(find_program("rsyslogd"))
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawning rsyslogd");
    let mut guard = ChildGuard(Some(child));
    let output = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + timeout;
    while !socket.exists() {
        if let Ok(Some(st)) = guard.child().try_wait() {
            panic!("rsyslogd exited with {st}:\n{}", output());
        }
        assert!(
            Instant::now() < deadline,
            "rsyslogd did not create its input socket {} within {timeout:?}:\n{}",
            socket.display(),
            output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (guard, log)
}

/// Polls `child` until it exits or `timeout` passes.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
