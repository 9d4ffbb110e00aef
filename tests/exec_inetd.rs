//! Programs instead of sockets, checked by what users see: `exec` on a server section,
//! exec+connect on a client section, and inetd mode (Unix sockets are in
//! `tests/unix_sockets.rs`):
//!
//! * `exec = /bin/cat`: 1 MiB from a TLS client comes back intact. A script run by
//!   `exec = /bin/sh` sees REMOTE_HOST, REMOTE_PORT, SSL_CLIENT_DN and SSL_CLIENT_I_DN.
//!   Parallel sessions each get their own program, a child of the tunnel holding no extra
//!   sockets; after the sessions end no child (zombie or not) is left.
//! * Inetd mode (a config with no `[section]`): one session on fd 0/1 (a socketpair here),
//!   then exit 0, logging to `output` and not to stderr; in server mode (TLS on the pair) and
//!   in client mode (plain on the pair, TLS to a server tunnel).
//! * exec+connect (`exec` + `connect`, no `accept`, client mode): the program talks to the
//!   TLS server through its stdio; `retry = 300` restarts it after each run, `retry = no`
//!   runs it once; `pty = yes` gives it a /dev/pts terminal.
//!
//! ```text
//! TLS client ──▶ server [srv] ──▶ exec program
//! exec program (stdio) ══ client [cli, exec + connect] ──TLS──▶ server [srv]
//! socketpair ══ rstunnel (inetd) ──▶ TCP echo | server [srv]
//! ```

mod common;

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::channel;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::daemon::start_with;
use common::daemon::{parse_close_line, rstunnel_bin};
use common::tls::tls_close;
use common::tls::{tls_over, tls_to};
use common::tools::wait_child;
use common::tools::ChildGuard;
use common::*;

const T: Duration = Duration::from_secs(10);
const RESULT_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// helpers

/// (state, ppid) of process `pid` from /proc/PID/stat, if it exists.
fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold blanks and parentheses; split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// (pid, state) of every process whose parent is `ppid`.
fn children_of(ppid: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("reading /proc") {
        let Some(pid) = entry
            .unwrap()
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((state, parent)) = proc_state(pid) {
            if parent == ppid {
                out.push((pid, state));
            }
        }
    }
    out
}

/// Descriptors above 2 of process `pid` that are sockets (`socket:[inode]`).
fn extra_sockets(pid: u32) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    rd.filter_map(|e| {
        let e = e.ok()?;
        let fd: u32 = e.file_name().to_str()?.parse().ok()?;
        let target = std::fs::read_link(e.path()).ok()?;
        let target = target.to_string_lossy().into_owned();
        (fd > 2 && target.starts_with("socket:")).then(|| format!("fd {fd} -> {target}"))
    })
    .collect()
}

// ---------------------------------------------------------------------------------------
// exec

/// A `[srv]` server section on 127.0.0.1:0 running `exec` with `exec_args`.
fn exec_body(cert: &Path, exec: &str, exec_args: &str, extra: &str) -> String {
    format!(
        "[srv]\naccept = 127.0.0.1:0\nexec = {exec}\nexecArgs = {exec_args}\ncert = {}\n{extra}\n",
        cert.display()
    )
}

#[test]
fn exec_cat_echoes_a_mebibyte() {
    let dir = TestDir::new("exec-cat");
    let pki = Pki::new(&dir);
    let server = Tunnel::start(
        &dir,
        "server",
        &exec_body(&pki.server.combined, "/bin/cat", "cat", ""),
    );
    let mut s = tls_to(server.addr("srv"), None, None);
    lockstep_echo(&mut s, 11, MIB as usize, "1 MiB through exec = /bin/cat");
    let rest = tls_close(&mut s, "exec = /bin/cat");
    assert!(rest.is_empty(), "bytes after the echo: {}", rest.len());
    let closes = server.wait_close_counts(1, T);
    assert_eq!(
        (closes[0].sent_to_tls, closes[0].sent_to_socket),
        (MIB, MIB),
        "byte counts of the exec session: {:?}",
        closes[0]
    );
}

/// `KEY=VALUE` lines printed by the env script, as pairs.
fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn env_value<'a>(env: &'a [(String, String)], key: &str) -> &'a str {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("the script printed no {key}= line: {env:?}"))
}

#[test]
fn exec_program_sees_the_peer_in_its_environment() {
    let dir = TestDir::new("exec-env");
    let pki = Pki::new(&dir);
    // execArgs has no quoting, so the shell code lives in a file.
    let script = dir.write(
        "env.sh",
        "echo \"REMOTE_HOST=$REMOTE_HOST\"\n\
         echo \"REMOTE_PORT=$REMOTE_PORT\"\n\
         echo \"SSL_CLIENT_DN=$SSL_CLIENT_DN\"\n\
         echo \"SSL_CLIENT_I_DN=$SSL_CLIENT_I_DN\"\n\
         echo END\n",
    );
    let server = Tunnel::start(
        &dir,
        "server",
        &exec_body(
            &pki.server.combined,
            "/bin/sh",
            &format!("sh {}", script.display()),
            &format!("CAfile = {}\nverifyChain = yes", pki.ca_file.display()),
        ),
    );
    let mut s = tls_to(server.addr("srv"), None, Some(&pki.client));
    let local_port = s.get_ref().local_addr().unwrap().port();
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("reading the script's output through TLS");
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(
        text.ends_with("END\n"),
        "the script's output is incomplete: {text:?}"
    );
    let env = parse_env(&text);
    assert_eq!(env_value(&env, "REMOTE_HOST"), "127.0.0.1", "{text}");
    assert_eq!(
        env_value(&env, "REMOTE_PORT"),
        local_port.to_string(),
        "REMOTE_PORT must be the client's source port\n{text}"
    );
    let dn = env_value(&env, "SSL_CLIENT_DN");
    assert!(
        dn.contains("CN=client.right.name"),
        "SSL_CLIENT_DN does not name the client certificate's CN: {dn:?}"
    );
    let idn = env_value(&env, "SSL_CLIENT_I_DN");
    assert!(
        idn.contains("CN=rstunnel test CA"),
        "SSL_CLIENT_I_DN does not name the issuing CA: {idn:?}"
    );
}

#[test]
fn parallel_exec_sessions_get_their_own_programs_and_leave_no_zombies() {
    const N: usize = 6;
    let dir = TestDir::new("exec-parallel");
    let pki = Pki::new(&dir);
    let script = dir.write("pid-cat.sh", "echo \"PID=$$\"\nexec cat\n");
    // `sandbox = no`: the script runs `cat`, a program the configuration does not name,
    // which the default sandbox refuses to execute (tests/sandbox.rs).
    let server = Tunnel::start(
        &dir,
        "server",
        &format!(
            "sandbox = no\n{}",
            exec_body(
                &pki.server.combined,
                "/bin/sh",
                &format!("sh {}", script.display()),
                "",
            )
        ),
    );
    let tunnel_pid = common::process::tunnel_pid(&server) as u32;
    let addr = server.addr("srv");

    // Each thread opens a session, reports its program's pid, waits for "go" (so all N are
    // open at once), echoes its own payload and closes.
    let (pid_tx, pid_rx) = channel::<(usize, u32)>();
    let mut go = Vec::new();
    let mut threads = Vec::new();
    for i in 0..N {
        let (go_tx, go_rx) = channel::<()>();
        go.push(go_tx);
        let pid_tx = pid_tx.clone();
        threads.push(std::thread::spawn(move || {
            let mut s = tls_to(addr, None, None);
            let line = read_line(&mut s, 100).expect("reading the program's PID line");
            let text = String::from_utf8_lossy(&line).into_owned();
            let pid: u32 = text
                .trim_end()
                .strip_prefix("PID=")
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("session {i}: bad first line {text:?}"));
            pid_tx.send((i, pid)).unwrap();
            go_rx.recv_timeout(RESULT_TIMEOUT).expect("no go signal");
            lockstep_echo(
                &mut s,
                100 + i as u64,
                128 * 1024,
                &format!("parallel session {i}"),
            );
            let rest = tls_close(&mut s, "parallel exec session");
            assert!(rest.is_empty(), "session {i}: bytes after the echo");
        }));
    }
    drop(pid_tx);
    let mut pids = Vec::new();
    for _ in 0..N {
        let (i, pid) = pid_rx.recv_timeout(RESULT_TIMEOUT).unwrap_or_else(|_| {
            panic!("only {} of {N} sessions reported a program pid", pids.len())
        });
        pids.push((i, pid));
    }
    let distinct: BTreeSet<u32> = pids.iter().map(|(_, p)| *p).collect();
    assert_eq!(distinct.len(), N, "sessions shared a program: {pids:?}");
    for &(i, pid) in &pids {
        let st = proc_state(pid);
        assert!(
            matches!(st, Some((s, ppid)) if ppid == tunnel_pid && s != 'Z'),
            "session {i}: program {pid} should be a live child of the tunnel {tunnel_pid}: {st:?}"
        );
        let leaked = extra_sockets(pid);
        assert!(
            leaked.is_empty(),
            "session {i}: program {pid} holds sockets besides its stdio (leaked from the \
             tunnel): {leaked:?}"
        );
    }
    for g in &go {
        g.send(()).unwrap();
    }
    for (i, t) in threads.into_iter().enumerate() {
        if t.join().is_err() {
            panic!("parallel session {i} failed (see its panic above)");
        }
    }
    server.wait_close_counts(N, T);

    // The programs have exited (cat saw EOF) and were reaped: no zombies, no children.
    let clean = wait_until(Duration::from_secs(5), || {
        children_of(tunnel_pid).is_empty()
    });
    let left = children_of(tunnel_pid);
    assert!(
        clean,
        "children of the tunnel {tunnel_pid} left after the sessions ended (state Z = zombie): \
         {left:?}"
    );
    for &(i, pid) in &pids {
        assert!(
            !matches!(proc_state(pid), Some((_, ppid)) if ppid == tunnel_pid),
            "session {i}: program {pid} is still around"
        );
    }
}

// ---------------------------------------------------------------------------------------
// inetd mode

/// A running inetd-mode rstunnel: `conf` (no sections) with fd 0 and 1 on one end of a
/// socketpair; `ours` is the other end. stderr is captured.
struct Inetd {
    guard: ChildGuard,
    ours: Option<UnixStream>,
    stderr: Option<JoinHandle<String>>,
    output: PathBuf,
}

impl Inetd {
    fn start(dir: &TestDir, label: &str, body: &str) -> Inetd {
        let output = dir.join(&format!("{label}.log"));
        let conf = dir.write(
            &format!("{label}.conf"),
            format!(
                "; {label}: inetd mode\nsyslog = no\noutput = {}\ndebug = 7\n{body}\n",
                output.display()
            ),
        );
        let (ours, theirs) = UnixStream::pair().unwrap();
        unix_timeouts(&ours);
        let theirs_out = theirs.try_clone().unwrap();
        let mut cmd = Command::new(rstunnel_bin());
        cmd.arg(&conf)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::from(OwnedFd::from(theirs_out)))
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning rstunnel in inetd mode");
        // Our copies of the child's end close with the Command, so only the child holds it.
        drop(cmd);
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Inetd {
            guard: ChildGuard(Some(child)),
            ours: Some(ours),
            stderr: Some(stderr),
            output,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Waits up to `timeout` for the process to exit; returns its status and stderr, or
    /// panics with the log file.
    /// After the one session: the process exits 0 within [`T`], wrote nothing to stderr
    /// (it may be the client's connection), and its output file has exactly one session
    /// summary with `counts` (to TLS, to socket). Returns the output file's text.
    fn finish_one_session(&mut self, what: &str, counts: (u64, u64)) -> String {
        let (st, stderr) = self.wait(T);
        assert_eq!(
            st.code(),
            Some(0),
            "{what} must exit 0 after its session: {st}"
        );
        assert!(
            stderr.trim().is_empty(),
            "{what} must not log to stderr (it may be the client's connection): {stderr:?}"
        );
        let log = self.log();
        let closes: Vec<_> = log.lines().filter_map(parse_close_line).collect();
        assert_eq!(
            closes.len(),
            1,
            "the output file should show exactly one session summary:\n{log}"
        );
        assert_eq!(
            (closes[0].sent_to_tls, closes[0].sent_to_socket),
            counts,
            "byte counts of the {what} session:\n{log}"
        );
        log
    }

    fn wait(&mut self, timeout: Duration) -> (ExitStatus, String) {
        let st = wait_child(self.guard.child(), timeout);
        let Some(st) = st else {
            panic!(
                "inetd-mode rstunnel still running {timeout:?} after the session ended\n--- {} ---\n{}",
                self.output.display(),
                self.log()
            );
        };
        self.guard.0 = None;
        let err = self.stderr.take().unwrap().join().unwrap();
        (st, err)
    }
}

impl Drop for Inetd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.output.display(), self.log());
        }
    }
}

#[test]
fn inetd_server_mode_serves_one_tls_session_on_stdio_and_exits_0() {
    let dir = TestDir::new("inetd-server");
    let pki = Pki::new(&dir);
    let echo = Backend::echo();
    let mut inetd = Inetd::start(
        &dir,
        "inetd",
        &format!(
            "cert = {}\nconnect = {}",
            pki.server.combined.display(),
            echo.addr()
        ),
    );
    let ours = inetd.ours.take().unwrap();
    let mut s = tls_over(ours, None, None);
    lockstep_echo(&mut s, 21, 200 * 1024, "inetd server-mode session");
    let rest = tls_close(&mut s, "inetd server mode");
    assert!(rest.is_empty(), "bytes after the echo: {}", rest.len());
    assert_eq!(
        echo.next_result(RESULT_TIMEOUT),
        payload_digest(21, 200 * 1024)
    );
    drop(s);

    let log = inetd.finish_one_session("inetd mode", (200 * 1024, 200 * 1024));
    assert!(
        log.contains("accepted connection"),
        "no accept line:\n{log}"
    );
}

#[test]
fn inetd_client_mode_relays_plain_stdio_to_a_tls_server() {
    let ((dir, _pki), echo, server) = echo_server("inetd-client");
    let mut inetd = Inetd::start(
        &dir,
        "inetd",
        &format!("client = yes\nconnect = {}", server.addr("srv")),
    );
    let mut ours = inetd.ours.take().unwrap();
    let data = payload(31, 300 * 1024);
    let mut w = ours.try_clone().unwrap();
    let out = data.clone();
    let writer = std::thread::spawn(move || -> io::Result<()> {
        w.write_all(&out)?;
        w.shutdown(Shutdown::Write)
    });
    let mut got = Vec::new();
    ours.read_to_end(&mut got)
        .expect("reading the echo from the inetd client's stdout");
    writer
        .join()
        .unwrap()
        .expect("writing to the inetd client's stdin");
    assert!(
        got == data,
        "inetd client mode: got {} bytes back for {} sent, or they differ",
        got.len(),
        data.len()
    );
    assert_eq!(echo.next_result(RESULT_TIMEOUT), Digest::of(&data));
    drop(ours);

    inetd.finish_one_session("inetd client mode", (300 * 1024, 300 * 1024));
    server.wait_close_counts(1, T);
}

// ---------------------------------------------------------------------------------------
// exec+connect

/// A client-mode exec+connect section `[ec]` running `sh <script>` against `server`.
fn exec_connect(
    dir: &TestDir,
    label: &str,
    server: SocketAddr,
    script: &Path,
    extra: &str,
) -> Tunnel {
    // `sandbox = no`: the scripts write their findings to files in the test directory and
    // run `tty` and `stty`, which the default sandbox refuses (tests/sandbox.rs).
    let body = format!(
        "client = yes\nsandbox = no\n[ec]\nexec = /bin/sh\nexecArgs = sh {}\nconnect = {server}\n{extra}\n",
        script.display()
    );
    start_with(dir, label, &body, &[], &[])
}

/// The script: sends `ping <pid>`, reads the echo, appends `got: <echo>` to `out`.
fn ping_script(dir: &TestDir, name: &str, out: &Path) -> PathBuf {
    dir.write(
        name,
        format!(
            "echo \"ping $$\"\nread line\necho \"got: $line\" >> {}\n",
            out.display()
        ),
    )
}

fn got_lines(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("got: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn exec_connect_with_retry_restarts_the_program() {
    let ((dir, _pki), echo, server) = echo_server("exec-connect-retry");
    let out = dir.join("runs.txt");
    let script = ping_script(&dir, "ping.sh", &out);
    let started = Instant::now();
    let t = exec_connect(&dir, "ec", server.addr("srv"), &script, "retry = 300");
    std::thread::sleep(Duration::from_millis(2200).saturating_sub(started.elapsed()));
    let runs = got_lines(&out);
    // Each run takes a few ms, then 300 ms pass: about 7 runs in 2.2 s, never more than 8.
    assert!(
        (3..=8).contains(&runs.len()),
        "retry = 300 (ms): expected several runs, 300 ms apart, within ~2.2 s; got {}: {runs:?}\n{}",
        runs.len(),
        t.log_text()
    );
    let mut pids = Vec::new();
    for r in &runs {
        let pid = r
            .strip_prefix("got: ping ")
            .unwrap_or_else(|| panic!("the echo did not come back intact: {r:?}"));
        pids.push(pid.to_string());
    }
    pids.sort();
    pids.dedup();
    assert_eq!(
        pids.len(),
        runs.len(),
        "each run is a new program: {runs:?}"
    );
    assert!(
        echo.connections() >= runs.len(),
        "each run is a TLS session to the server"
    );
}

#[test]
fn exec_connect_without_retry_runs_once() {
    let ((dir, _pki), echo, server) = echo_server("exec-connect-once");
    let out = dir.join("runs.txt");
    let script = ping_script(&dir, "ping.sh", &out);
    let mut t = exec_connect(&dir, "ec", server.addr("srv"), &script, "retry = no");
    assert!(
        wait_until(T, || !got_lines(&out).is_empty()),
        "the program did not complete one exchange\n{}",
        t.log_text()
    );
    std::thread::sleep(Duration::from_millis(2000));
    let runs = got_lines(&out);
    assert_eq!(runs.len(), 1, "retry = no: exactly one run: {runs:?}");
    assert!(runs[0].starts_with("got: ping "), "{runs:?}");
    assert_eq!(echo.connections(), 1);
    assert!(
        t.try_wait().is_none(),
        "the process stays up after the single run (it is stopped by signals)"
    );
    assert_eq!(t.stop().code(), Some(0));
}

#[test]
fn exec_connect_pty_gives_the_program_a_terminal() {
    let ((dir, _pki), _echo, server) = echo_server("exec-connect-pty");
    for (pty, expect_tty) in [("yes", true), ("no", false)] {
        let out = dir.join(&format!("tty-{pty}.txt"));
        // Raw mode without echo, so the terminal neither echoes the reply back nor turns
        // `\n` into `\r\n` (a no-op error without a terminal).
        let script = dir.write(
            &format!("tty-{pty}.sh"),
            format!(
                "stty raw -echo 2>/dev/null\ntty >> {o}\necho ping\nread line\necho \"got: $line\" >> {o}\n",
                o = out.display()
            ),
        );
        let t = exec_connect(
            &dir,
            &format!("ec-pty-{pty}"),
            server.addr("srv"),
            &script,
            &format!("pty = {pty}\nretry = no"),
        );
        assert!(
            wait_until(T, || std::fs::read_to_string(&out)
                .unwrap_or_default()
                .contains("got: ")),
            "pty = {pty}: the program did not complete its exchange; it wrote {:?}\n{}",
            std::fs::read_to_string(&out).unwrap_or_default(),
            t.log_text()
        );
        let text = std::fs::read_to_string(&out).unwrap();
        let first = text.lines().next().unwrap_or("");
        if expect_tty {
            assert!(
                first.starts_with("/dev/pts/"),
                "pty = yes: `tty` must name a /dev/pts device, got {first:?}"
            );
        } else {
            assert_eq!(first, "not a tty", "pty = no: stdin is a socket");
        }
        assert!(
            text.contains("got: ping"),
            "pty = {pty}: the echo came back as {text:?}"
        );
        drop(t);
    }
}
