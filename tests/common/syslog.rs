//! What the mixed-fleet tests (`tests/mixed_fleet_*.rs`) share: numbered syslog lines with a
//! per-run marker, feeding them to a sender daemon over its private Unix stream socket,
//! counting what a receiver wrote (each line exactly once), checking a capture for clear
//! text, and filling the README's snippets with a run's values.
//!
//! Starting the daemons themselves is [`super::tools::spawn_rsyslogd`] (rsyslog) and the
//! syslog-ng test's own config; this module never starts a process.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::faults::{contains, pcap_tcp_packets};

/// The README's server tunnel in front of a plain syslog receiver: `{accept}` (an address or
/// a port), the receiver's `{plain}` port, the tunnel's `{cert}` and `{key}`.
pub const SERVER_TUNNEL: &str = "[syslog-tls]
accept = {accept}
connect = 127.0.0.1:{plain}
cert = {cert}
key = {key}";

/// The README's client tunnel in front of a plain sender: listens on `{port}`, connects to
/// `{host}:{tls}`, checks the server's certificate for `{peer}` and presents its own.
pub const CLIENT_TUNNEL: &str = "[syslog-tls]
client = yes
accept = 127.0.0.1:{port}
connect = {host}:{tls}
cert = {cert}
key = {key}
CAfile = {ca}
verifyChain = yes
checkHost = {peer}";

/// How many lines each mixed-fleet case sends.
pub const LINES: usize = 1000;

/// How long a receiver's output is watched for duplicates after the last line arrived:
/// longer than the senders' 1 s retry interval, so a resend after a reconnect shows.
pub const SETTLE: Duration = Duration::from_secs(2);

static RUN: AtomicUsize = AtomicUsize::new(0);

/// `n` syslog message texts `<marker>-0000 …`, where the marker names the case and this run
/// (pid, counter), so a line found anywhere can only have come from this case.
pub struct Lines {
    pub marker: String,
    pub n: usize,
}

impl Lines {
    pub fn new(case: &str, n: usize) -> Lines {
        let run = RUN.fetch_add(1, Ordering::SeqCst);
        Lines {
            marker: format!("fleet-{case}-{}-{run}", std::process::id()),
            n,
        }
    }

    /// The text of line `i` (its unique token, then padding that makes a record look like
    /// a real log line).
    pub fn line(&self, i: usize) -> String {
        format!(
            "{}-{i:04} user login accepted from 198.51.100.{} session {i}",
            self.marker,
            i % 250
        )
    }

    /// Writes all lines as RFC 3164 messages (`<13>fleet: TEXT`, one per `\n`) to the Unix
    /// stream socket at `socket` (an rsyslog `imptcp path=` or syslog-ng `unix-stream()`
    /// input), then closes it.
    pub fn feed(&self, socket: &Path) {
        // The daemon binds (the file appears: what its readiness check sees) before it
        // listens, so a connect in between is refused: retry that, within a deadline.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut s = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e)
                    if e.kind() == std::io::ErrorKind::ConnectionRefused
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("connect {}: {e}", socket.display()),
            }
        };
        s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = String::new();
        for i in 0..self.n {
            buf.push_str(&format!("<13>fleet: {}\n", self.line(i)));
        }
        s.write_all(buf.as_bytes())
            .unwrap_or_else(|e| panic!("writing lines to {}: {e}", socket.display()));
    }

    /// How often each of this run's lines occurs in `text` (a receiver's output file, one
    /// message a line); tokens not of this run are ignored.
    pub fn counts(&self, text: &str) -> HashMap<usize, usize> {
        let prefix = format!("{}-", self.marker);
        let mut counts = HashMap::new();
        for l in text.lines() {
            let Some(at) = l.find(&prefix) else { continue };
            let rest = &l[at + prefix.len()..];
            if let Some(i) = rest.get(..4).and_then(|d| d.parse::<usize>().ok()) {
                if l[at..].starts_with(&self.line(i)) {
                    *counts.entry(i).or_insert(0) += 1;
                }
            }
        }
        counts
    }

    /// Polls `out` until every line is in it, then keeps watching it for [`SETTLE`] and
    /// checks each line is there exactly once. `Err` with what is missing or doubled, if not
    /// within `timeout` (plus the settle period).
    pub fn wait_all_once(&self, out: &Path, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let counts = self.counts(&super::tools::read_or_empty(out));
            if counts.len() == self.n {
                return self.stays_once(out);
            }
            if Instant::now() >= deadline {
                let missing: Vec<usize> = (0..self.n).filter(|i| !counts.contains_key(i)).collect();
                return Err(format!(
                    "{} of {} lines arrived in {} within {timeout:?}; first missing: {:?}",
                    counts.len(),
                    self.n,
                    out.display(),
                    &missing[..missing.len().min(10)]
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// With every line in `out`: duplicates come late (a sender resends what it had not
    /// seen acknowledged after reconnecting, `action.resumeInterval` 1 s here), so the
    /// count is taken again for [`SETTLE`] after the last line arrived, failing at the
    /// first line seen twice.
    fn stays_once(&self, out: &Path) -> Result<(), String> {
        let settled = Instant::now() + SETTLE;
        loop {
            let counts = self.counts(&super::tools::read_or_empty(out));
            let mut doubled: Vec<_> = counts.iter().filter(|(_, c)| **c != 1).collect();
            if !doubled.is_empty() {
                doubled.sort();
                return Err(format!(
                    "lines delivered more than once (line, times): {:?}",
                    &doubled[..doubled.len().min(10)]
                ));
            }
            if Instant::now() >= settled {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Checks a capture of the wire (a pcap file): TCP payload to or from `port` was seen
    /// (at least one byte per line sent, so the capture did see the traffic), and no
    /// line's marker appears anywhere in it. Returns the payload bytes seen on `port`.
    pub fn assert_not_in_clear(&self, pcap_file: &Path, port: u16) -> usize {
        let pcap = std::fs::read(pcap_file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", pcap_file.display()));
        let on_port: usize = pcap_tcp_packets(&pcap)
            .iter()
            .filter(|(s, d, _)| *s == port || *d == port)
            .map(|(_, _, len)| len)
            .sum();
        assert!(
            on_port >= self.n,
            "the capture saw only {on_port} payload byte(s) on port {port} for {} lines",
            self.n
        );
        assert!(
            !contains(&pcap, self.marker.as_bytes()),
            "line text {:?} found in clear on the wire ({})",
            self.marker,
            pcap_file.display()
        );
        on_port
    }
}

/// `template` with each `{name}` of `values` replaced: a README snippet made concrete, either
/// with the README's example values (to check the README shows it verbatim) or with a
/// run's paths, addresses and ports.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut s = template.to_string();
    for (k, v) in values {
        s = s.replace(&format!("{{{k}}}"), v);
    }
    if let Some(left) = placeholder(&s) {
        panic!("unfilled placeholder {left} in:\n{s}");
    }
    s
}

/// The first `{name}` (`name` of lowercase letters and `_`, as the snippets' placeholders
/// are) left in `s`. No snippet has such text of its own: rsyslog's and syslog-ng's
/// braces enclose blocks (`{` then a newline) and syslog-ng's macros are `${NAME}`.
fn placeholder(s: &str) -> Option<&str> {
    s.match_indices('{').find_map(|(at, _)| {
        let rest = &s[at + 1..];
        let name_len = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(rest.len());
        (name_len > 0 && rest[name_len..].starts_with('}')).then(|| &s[at..at + name_len + 2])
    })
}

/// Asserts that README.md contains `snippet` (a template filled with the README's example
/// values) verbatim, naming `what` if not.
pub fn assert_readme_shows(what: &str, snippet: &str) {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("reading README.md");
    assert!(
        readme.contains(snippet),
        "README.md (\"Mixed fleets\") must show the {what} snippet the tests run, verbatim:\n{snippet}"
    );
}
