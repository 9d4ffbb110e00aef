//! GnuTLS's command-line peers (package gnutls-bin, 3.7.9 on Debian 12) as the interop tests
//! drive them:
//!
//! * [`cli`]: `gnutls-cli` run to completion with a bounded run time. Its informational
//!   messages (certificate status, the `- Description:` line naming the negotiated version,
//!   `*** This is a resumed session`) go to a `--logfile`, so its stdout carries only the
//!   data the server sent, hashed as it streams ([`CliRun::out`]). Its stdin is a fixed text
//!   or a generated payload of any size; at stdin's EOF gnutls-cli sends close_notify and
//!   keeps reading until the server closes, which is what the half-close tests rely on.
//! * [`Serv`]: `gnutls-serv` kept running (killed on drop). It has no option for the listen
//!   address and does not print the port it got for `-p 0`: it listens on every address,
//!   IPv4 and IPv6 on two different ports, and the IPv4 port is read from `/proc` (its
//!   listening socket's inode among its descriptors, in its own namespace's table). So that
//!   no port opens on the host's real interfaces, as root it runs in a network namespace of
//!   its own with only `lo` up, and a [`Forwarder`] on the host's 127.0.0.1 carries each
//!   connection to it unchanged (half-close included); [`Serv::addr`] is the forwarder's.
//!   Not root, there is no namespace: it runs on the host, listening on every address for
//!   its lifetime, and says so in one line on stderr. Tests connect to 127.0.0.1 only.
//!   Its output (in `--echo` mode every echoed line, twice) is kept up to
//!   [`SERV_KEPT_LINES`] lines for failure messages.
//!
//! `gnutls-serv --echo` echoes text lines, not bytes: a received record is handled as a C
//! string, so a NUL byte truncates it. Transfers through it use [`TextPayload`], lines of
//! printable bytes. Every wait here is bounded.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use openssl::sha::Sha256;

use super::forward::Forwarder;
use super::net::{Digest, Payload};
use super::netns::{exec_in, Namespaces};
use super::process::is_root;
use super::tools::{gnutls_cli, gnutls_serv, ChildGuard};
use super::{LeafFiles, TestDir};

/// How long `gnutls-serv` may take to listen.
pub const SERV_START: Duration = Duration::from_secs(15);
/// Lines of `gnutls-serv`'s output kept for failure messages.
pub const SERV_KEPT_LINES: usize = 4000;
/// Bytes of `gnutls-cli`'s stdout kept as text besides its digest.
const HEAD_KEPT: usize = 64 * 1024;

/// A GnuTLS priority string that allows only TLS 1.2.
pub const TLS12: &str = "NORMAL:-VERS-ALL:+VERS-TLS1.2";
/// A GnuTLS priority string that allows only TLS 1.3.
pub const TLS13: &str = "NORMAL:-VERS-ALL:+VERS-TLS1.3";

/// What `gnutls-cli` reads on stdin.
pub enum Input<'a> {
    /// These bytes, then EOF.
    Bytes(&'a [u8]),
    /// The binary payload (`seed`, `len`) of [`Payload`], then EOF.
    Binary(u64, u64),
    /// The text payload (`seed`, `len`) of [`TextPayload`], then EOF.
    Text(u64, u64),
}

/// Deterministic lines of printable ASCII (63 letters and digits, then `\n`): what
/// `gnutls-serv --echo` can carry, derived from [`Payload`] so that (seed, len) always gives
/// the same stream. 64 bytes a line, so 64 MiB is exactly 1 Mi lines.
pub struct TextPayload {
    raw: Payload,
    /// Bytes produced so far (the position in the line).
    pos: u64,
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

impl TextPayload {
    pub fn new(seed: u64, len: u64) -> TextPayload {
        TextPayload {
            raw: Payload::new(seed, len),
            pos: 0,
        }
    }

    /// Fills the front of `buf` with the next bytes; returns how many (0 at the end).
    pub fn fill(&mut self, buf: &mut [u8]) -> usize {
        let n = self.raw.fill(buf);
        for b in &mut buf[..n] {
            self.pos += 1;
            *b = if self.pos % 64 == 0 {
                b'\n'
            } else {
                ALPHABET[(*b & 63) as usize]
            };
        }
        n
    }
}

/// Digest of the text payload (`seed`, `len`).
pub fn text_digest(seed: u64, len: u64) -> Digest {
    stream_input(&Input::Text(seed, len), &mut io::sink()).expect("io::sink cannot fail")
}

/// An [`Input`] being produced.
enum Source<'a> {
    Bytes(&'a [u8]),
    Binary(Payload),
    Text(TextPayload),
}

impl<'a> Source<'a> {
    fn of(input: &'a Input) -> Source<'a> {
        match input {
            Input::Bytes(b) => Source::Bytes(b),
            Input::Binary(seed, len) => Source::Binary(Payload::new(*seed, *len)),
            Input::Text(seed, len) => Source::Text(TextPayload::new(*seed, *len)),
        }
    }

    fn fill(&mut self, buf: &mut [u8]) -> usize {
        match self {
            Source::Bytes(rest) => {
                let n = rest.len().min(buf.len());
                buf[..n].copy_from_slice(&rest[..n]);
                *rest = &rest[n..];
                n
            }
            Source::Binary(p) => p.fill(buf),
            Source::Text(p) => p.fill(buf),
        }
    }
}

/// Writes `input` to `w` in 64 KiB pieces and returns its digest.
pub fn stream_input(input: &Input, w: &mut impl Write) -> io::Result<Digest> {
    let mut h = Sha256::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let mut source = Source::of(input);
    loop {
        let n = source.fill(&mut buf);
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
        w.write_all(&buf[..n])?;
    }
    w.flush()?;
    Ok(Digest {
        sha: h.finish(),
        bytes: total,
    })
}

/// One finished `gnutls-cli` run.
pub struct CliRun {
    pub status: ExitStatus,
    /// Digest of everything it wrote on stdout: the data the server sent.
    pub out: Digest,
    /// The first [`HEAD_KEPT`] bytes of stdout, as text.
    pub head: String,
    /// Its `--logfile`: certificate status, negotiated parameters, resumption.
    pub log: String,
    pub stderr: String,
    /// Digest of what was fed to its stdin (all of it, or up to where it stopped reading).
    pub sent: Option<Digest>,
}

impl CliRun {
    /// Everything it printed, for failure messages (stdout only up to [`HEAD_KEPT`] bytes).
    pub fn describe(&self) -> String {
        format!(
            "status: {}\n--- stdout ({:?}; the start) ---\n{}\n--- logfile ---\n{}\n--- stderr ---\n{}",
            self.status, self.out, self.head, self.log, self.stderr
        )
    }

    /// The TLS version of the `- Description: (TLS1.3-X.509)-…` line (`TLS1.2`, `TLS1.3`).
    pub fn version(&self) -> Option<String> {
        let line = self
            .log
            .lines()
            .find_map(|l| l.strip_prefix("- Description: ("))?;
        Some(line.split([')', '-']).next()?.to_string())
    }

    /// Whether the handshake completed.
    pub fn handshake_done(&self) -> bool {
        self.log.contains("- Handshake was completed")
    }

    /// Whether gnutls-cli reported that the server's certificate verified.
    pub fn server_trusted(&self) -> bool {
        self.log.contains("- Status: The certificate is trusted.")
    }

    /// Whether the connection it ran on was a resumed session (`--resume`'s second one).
    pub fn resumed(&self) -> bool {
        self.log.contains("*** This is a resumed session")
    }
}

/// Client certificate options for gnutls-cli (`--x509certfile`, `--x509keyfile`).
pub fn cert_args(leaf: &LeafFiles) -> Vec<String> {
    vec![
        format!("--x509certfile={}", leaf.cert.display()),
        format!("--x509keyfile={}", leaf.key.display()),
    ]
}

/// Runs `gnutls-cli ARGS… -p PORT 127.0.0.1` with `--logfile=<dir>/<label>.log`, feeding it
/// `input` and hashing its stdout, for at most `timeout` (then it is killed and this
/// panics with what it printed). `args` names verification (`--x509cafile` with
/// `--verify-hostname`, or `--no-ca-verification`); with neither it verifies against the
/// system store and fails on the test CA.
pub fn cli<S: AsRef<str>>(
    dir: &TestDir,
    label: &str,
    port: u16,
    args: &[S],
    input: Input<'static>,
    timeout: Duration,
) -> CliRun {
    let logfile = dir.join(&format!("{label}.log"));
    let _ = fs::remove_file(&logfile);
    let mut cmd = Command::new(gnutls_cli());
    cmd.arg(format!("--logfile={}", logfile.display()))
        .args(args.iter().map(|a| a.as_ref()))
        .arg("-p")
        .arg(port.to_string())
        .arg("127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let desc = format!("{cmd:?}");
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {desc}: {e}"));
    let mut guard = ChildGuard(Some(child));
    let mut stdin = guard.child().stdin.take().unwrap();
    // Its stdin closes when this thread ends: EOF, and gnutls-cli sends close_notify.
    let writer = std::thread::spawn(move || stream_input(&input, &mut stdin).ok());
    let stdout = guard.child().stdout.take().unwrap();
    let reader = std::thread::spawn(move || hash_and_head(stdout));
    let mut stderr = guard.child().stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    });
    let status = super::tools::wait_child(guard.child(), timeout);
    let timed_out = status.is_none();
    let status = match status {
        Some(s) => s,
        None => {
            let _ = guard.child().kill();
            guard.child().wait().expect("wait after kill")
        }
    };
    guard.0 = None;
    // A gnutls-cli that stopped reading leaves the writer blocked only until the pipe's
    // reader is gone, which it now is.
    let sent = writer.join().unwrap();
    let (out, head) = reader.join().unwrap();
    let run = CliRun {
        status,
        out,
        head,
        log: fs::read_to_string(&logfile).unwrap_or_default(),
        stderr: err_reader.join().unwrap(),
        sent,
    };
    if timed_out {
        panic!(
            "{desc} did not finish within {timeout:?}; killed\n{}",
            run.describe()
        );
    }
    run
}

fn hash_and_head(mut r: impl Read) -> (Digest, String) {
    let mut h = Sha256::new();
    let mut head = Vec::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        h.update(&buf[..n]);
        total += n as u64;
        let keep = (HEAD_KEPT - head.len().min(HEAD_KEPT)).min(n);
        head.extend_from_slice(&buf[..keep]);
    }
    (
        Digest {
            sha: h.finish(),
            bytes: total,
        },
        String::from_utf8_lossy(&head).into_owned(),
    )
}

/// A running `gnutls-serv` (see the module docs). Killed on drop; its output is printed
/// then when the test failed.
pub struct Serv {
    pub label: String,
    args: Vec<String>,
    child: ChildGuard,
    /// Where tests reach it: the forwarder's port, or gnutls-serv's own without a namespace.
    port: u16,
    output: Arc<Mutex<Kept>>,
    readers: Vec<JoinHandle<()>>,
    /// Root only: the forwarder into `netns`, and the namespace gnutls-serv runs in (dropped
    /// in this order, after the child is killed).
    forwarder: Option<Forwarder>,
    netns: Option<Namespaces>,
}

/// Numbers the namespaces of the `Serv`s of one test process (tests run in parallel).
static SERV_SEQ: AtomicUsize = AtomicUsize::new(0);

#[derive(Default)]
struct Kept {
    lines: Vec<String>,
    dropped: usize,
}

impl Serv {
    /// Starts `gnutls-serv -p 0 ARGS…` presenting `leaf` and waits (up to [`SERV_START`])
    /// until it listens on IPv4.
    pub fn start<S: AsRef<str>>(label: &str, leaf: &LeafFiles, args: &[S]) -> Serv {
        let mut all = vec![
            "-p".to_string(),
            "0".to_string(),
            format!("--x509certfile={}", leaf.cert.display()),
            format!("--x509keyfile={}", leaf.key.display()),
        ];
        all.extend(args.iter().map(|a| a.as_ref().to_string()));
        let netns = if is_root() {
            let seq = SERV_SEQ.fetch_add(1, Ordering::SeqCst);
            Some(Namespaces::new(&format!("gs{seq}"), &["g"]))
        } else {
            eprintln!(
                "[{label}] note: not root, so no network namespace: gnutls-serv listens on \
                 every address of this host while it runs"
            );
            None
        };
        let mut cmd = match &netns {
            Some(ns) => {
                // `ip netns exec` execs the program itself: the child's pid is gnutls-serv's.
                let [ip, rest @ ..] = exec_in(ns.name("g"));
                let mut c = Command::new(ip);
                c.args(rest).arg(gnutls_serv());
                c
            }
            None => Command::new(gnutls_serv()),
        };
        let mut child = cmd
            .args(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning gnutls-serv: {e}"));
        let output = Arc::new(Mutex::new(Kept::default()));
        let readers = vec![
            keep_lines(child.stdout.take().unwrap(), output.clone()),
            keep_lines(child.stderr.take().unwrap(), output.clone()),
        ];
        let mut s = Serv {
            label: label.to_string(),
            args: all,
            child: ChildGuard(Some(child)),
            port: 0,
            output,
            readers,
            forwarder: None,
            netns,
        };
        let pid = s.child.child().id();
        let deadline = Instant::now() + SERV_START;
        loop {
            if let Some(port) = ipv4_listen_port(pid) {
                s.port = port;
                if let Some(ns) = &s.netns {
                    let fwd = Forwarder::start(ns.name("g"), ([127, 0, 0, 1], port).into());
                    s.port = fwd.addr().port();
                    s.forwarder = Some(fwd);
                }
                return s;
            }
            if let Ok(Some(st)) = s.child.child().try_wait() {
                s.fail(&format!("exited with {st} before listening"));
            }
            if Instant::now() >= deadline {
                s.fail(&format!("not listening on IPv4 within {SERV_START:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port to reach it on at 127.0.0.1 (the forwarder's, when it runs in a namespace).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// What it printed so far (up to [`SERV_KEPT_LINES`] lines).
    pub fn output(&self) -> String {
        let k = self.output.lock().unwrap();
        let mut s = k.lines.join("\n");
        if k.dropped > 0 {
            s.push_str(&format!("\n[{} more line(s) not kept]", k.dropped));
        }
        s
    }

    /// How many kept lines contain `pattern`.
    pub fn count(&self, pattern: &str) -> usize {
        let k = self.output.lock().unwrap();
        k.lines.iter().filter(|l| l.contains(pattern)).count()
    }

    /// Waits (polling, up to `timeout`) until `n` kept lines contain `pattern`; panics with
    /// its output if they do not.
    pub fn wait_for(&self, pattern: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.count(pattern) < n {
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "expected {n} line(s) containing {pattern:?} within {timeout:?}, found {}",
                    self.count(pattern)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Panics with `msg`, its command line and its output.
    pub fn fail(&self, msg: &str) -> ! {
        panic!(
            "[{}] {msg}\n--- gnutls-serv {} ---\n{}",
            self.label,
            self.args.join(" "),
            self.output()
        );
    }
}

impl Drop for Serv {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        if std::thread::panicking() || std::env::var_os("RSTUNNEL_TEST_LOGS").is_some() {
            eprintln!(
                "--- [{}] gnutls-serv {} ---\n{}\n--- end of [{}] ---",
                self.label,
                self.args.join(" "),
                self.output(),
                self.label
            );
        }
    }
}

fn keep_lines(r: impl Read + Send + 'static, kept: Arc<Mutex<Kept>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let mut k = kept.lock().unwrap();
                    if k.lines.len() < SERV_KEPT_LINES {
                        let line = String::from_utf8_lossy(&buf);
                        k.lines.push(line.trim_end().to_string());
                    } else {
                        k.dropped += 1;
                    }
                }
            }
        }
    })
}

/// The port of a socket of process `pid` listening on IPv4 (state 0A in
/// `/proc/<pid>/net/tcp`, the table of the process's own network namespace), if any yet.
fn ipv4_listen_port(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let table = fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
    table.lines().skip(1).find_map(|row| {
        let f: Vec<&str> = row.split_whitespace().collect();
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
        if f.len() < 10 || f[3] != "0A" || !inodes.iter().any(|i| i == f[9]) {
            return None;
        }
        u16::from_str_radix(f[1].rsplit_once(':')?.1, 16).ok()
    })
}

/// `--x509cafile=CA`: trust `ca` (gnutls-serv: the CA client certificates must chain to).
pub fn ca_arg(ca: &Path) -> String {
    format!("--x509cafile={}", ca.display())
}

/// Arguments that make gnutls-cli trust only `ca` and check the server's name as
/// `localhost` (it connects to 127.0.0.1, so the name must be given).
pub fn verifying(ca: &Path) -> Vec<String> {
    vec![
        ca_arg(ca),
        "--verify-hostname=localhost".into(),
        "--sni-hostname=localhost".into(),
    ]
}
