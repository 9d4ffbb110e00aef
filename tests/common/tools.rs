//! External programs the interop tests drive (`openssl`, `stunnel4`, `gnutls-cli`,
//! `gnutls-serv`), and running a program with a deadline.
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

/// GnuTLS's command-line client (package gnutls-bin).
pub fn gnutls_cli() -> PathBuf {
    find_program("gnutls-cli")
}

/// GnuTLS's command-line server (package gnutls-bin).
pub fn gnutls_serv() -> PathBuf {
    find_program("gnutls-serv")
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
    let (mut guard, log) = spawn_rsyslogd(dir, "rsyslogd", &[], rules);
    let what = format!("rsyslogd's input socket {}", socket.display());
    wait_ready(&mut guard, &log, &what, timeout, || socket.exists());
    (guard, log)
}

/// Polls `ready` until it holds; panics with the daemon's output (`log`) if the daemon
/// exits first or `timeout` passes (`what`: what was awaited).
pub fn wait_ready(
    guard: &mut ChildGuard,
    log: &Path,
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if let Ok(Some(st)) = guard.child().try_wait() {
            panic!(
                "exited with {st} before {what} was ready:\n{}",
                read_or_empty(log)
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} not ready within {timeout:?}:\n{}",
            read_or_empty(log)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a private `rsyslogd -n` named `name` behind `prefix` (e.g. `ip netns exec NS`;
/// empty: none): config `<dir>/<name>.conf` (the `global(workDirectory=…)` line, then
/// `rules`), work directory `<dir>/<name>-work`, pid file `<dir>/<name>.pid`, its output in
/// `<dir>/<name>.out` (returned). Does not wait for anything: the caller knows what its
/// config makes ready. The guard kills it on drop.
pub fn spawn_rsyslogd(
    dir: &super::TestDir,
    name: &str,
    prefix: &[&str],
    rules: &str,
) -> (ChildGuard, PathBuf) {
    let work = dir.join(&format!("{name}-work"));
    std::fs::create_dir_all(&work).unwrap();
    let conf = dir.write(
        &format!("{name}.conf"),
        format!("global(workDirectory=\"{}\")\n{rules}", work.display()),
    );
    let log = dir.join(&format!("{name}.out"));
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(find_program(first));
            c.args(rest).arg(find_program("rsyslogd"));
            c
        }
        None => Command::new(find_program("rsyslogd")),
    };
    let child = cmd
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .arg("-i")
        .arg(dir.join(&format!("{name}.pid")))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawning rsyslogd");
    (ChildGuard(Some(child)), log)
}

/// The text of `path`, or "" if it cannot be read (yet).
pub fn read_or_empty(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
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

/// Where scripts/deps.sh unpacks the packages that cannot be installed next to the others
/// (its `UNPACK_ROOT`; syslog-ng-core, which conflicts with rsyslog): one tree per package.
pub const UNPACK_ROOT: &str = "/usr/local/lib/rstunnel-test";

/// Program `name` (in `usr/sbin` or `usr/bin`) of a package tree under [`UNPACK_ROOT`], and
/// that tree; panics with install advice if no tree has it. Only finished trees count: not
/// `P.new` (deps.sh unpacks there and leaves it when the unpacked program does not run),
/// and with the `P.version` file deps.sh writes once the checked tree is moved to `P`.
pub fn unpacked_program(name: &str) -> (PathBuf, PathBuf) {
    let root = Path::new(UNPACK_ROOT);
    let finished = |tree: &Path| {
        let Some(package) = tree.file_name().and_then(|n| n.to_str()) else {
            return false;
        };
        tree.is_dir()
            && !package.ends_with(".new")
            && root.join(format!("{package}.version")).is_file()
    };
    let trees = std::fs::read_dir(root).into_iter().flatten().flatten();
    for tree in trees.map(|e| e.path()).filter(|p| finished(p)) {
        for sub in ["usr/sbin", "usr/bin"] {
            let p = tree.join(sub).join(name);
            if is_executable(&p) {
                return (p, tree);
            }
        }
    }
    panic!(
        "required program `{name}` was not found under {UNPACK_ROOT}: run scripts/deps.sh, \
         which unpacks it there (`make test` does this for you)"
    );
}

/// syslog-ng from deps.sh's unpacked syslog-ng-core: the binary, and what it must be told
/// because it does not live where it was built for (its libraries' RUNPATH and its module
/// directory are /usr/lib/syslog-ng).
pub struct SyslogNg {
    pub bin: PathBuf,
    /// For `LD_LIBRARY_PATH`: libsyslog-ng and friends.
    pub lib_dir: PathBuf,
    /// For `--module-path`: the plugins (afsocket, affile, ...).
    pub module_dir: PathBuf,
}

pub fn syslog_ng() -> SyslogNg {
    let (bin, tree) = unpacked_program("syslog-ng");
    let lib_dir = tree.join("usr/lib/syslog-ng");
    let module_dir = std::fs::read_dir(&lib_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", lib_dir.display()))
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("libafsocket.so").exists())
        .unwrap_or_else(|| {
            panic!(
                "no module directory (libafsocket.so) in {}",
                lib_dir.display()
            )
        });
    SyslogNg {
        bin,
        lib_dir,
        module_dir,
    }
}

/// Starts a private `syslog-ng -F` named `name` behind `prefix` (e.g. `ip netns exec NS`):
/// config `<dir>/<name>.conf` (`config`, written as given), pid, persist and control files
/// in `dir`, its own messages (`-e`) in `<dir>/<name>.out` (returned). Does not wait.
pub fn spawn_syslog_ng(
    dir: &super::TestDir,
    name: &str,
    prefix: &[&str],
    config: &str,
) -> (ChildGuard, PathBuf) {
    let ng = syslog_ng();
    let conf = dir.write(&format!("{name}.conf"), config);
    let log = dir.join(&format!("{name}.out"));
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(find_program(first));
            c.args(rest).arg(&ng.bin);
            c
        }
        None => Command::new(&ng.bin),
    };
    let child = cmd
        .env("LD_LIBRARY_PATH", &ng.lib_dir)
        .arg("-F")
        .arg("-e")
        .arg("--no-caps")
        .arg(format!("--module-path={}", ng.module_dir.display()))
        .arg(format!("--cfgfile={}", conf.display()))
        .arg(format!(
            "--pidfile={}",
            dir.join(&format!("{name}.pid")).display()
        ))
        .arg(format!(
            "--persist-file={}",
            dir.join(&format!("{name}.persist")).display()
        ))
        .arg(format!(
            "--control={}",
            dir.join(&format!("{name}.ctl")).display()
        ))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawning syslog-ng");
    (ChildGuard(Some(child)), log)
}
