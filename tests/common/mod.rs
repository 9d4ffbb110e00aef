//! Test harness for the integration tests in `tests/*.rs`: everything a test needs to run the
//! built `rstunnel` binary on loopback and to judge what came out of it.
//!
//! * [`TestDir`]: a private temp directory per test (atomic counter + pid), removed on drop
//!   unless `RSTUNNEL_KEEP_TEST_DIRS` is set.
//! * [`certs`]: CAs and leaf certificates made at run time with the `openssl` crate; [`Pki`]
//!   is the ready-made set most tests use (a CA, an unrelated "wrong" CA, server and client
//!   certs).
//! * [`daemon`]: [`Tunnel`], a guard around one running `rstunnel` (or `stunnel4`) process that
//!   reads the bound ports back from its log and stops it with SIGTERM, then SIGKILL, on drop.
//! * [`net`]: plain TCP backends (echo, sink, digest-after-EOF, greeter, source) and client
//!   helpers; every socket has read and write timeouts so no test can hang.
//! * [`forward`]: a transparent TCP forwarder from 127.0.0.1 into a test's namespace, for
//!   peers that listen on every address (gnutls-serv).
//! * [`netns`]: network namespaces a test owns, joined by veth pairs on 192.0.2.0/24;
//!   ports and listeners inside them.
//! * [`openssl_cli`]: `openssl s_client` and `s_server` as TLS peers.
//! * [`gnutls_cli`]: `gnutls-cli` and `gnutls-serv` (GnuTLS) as TLS peers, streaming
//!   payloads of any size through them with their SHA-256.
//! * [`process`]: root checks, free ports, a TLS client made with the `openssl` crate,
//!   config rewrites, log-file waits, finding a tunnel's pid, and a guard for daemonised
//!   processes that are not our children.
//! * [`proc_faults`]: what the process fault tests share: a one-case-at-a-time lock, their
//!   `summary:` line, /proc readings (CPU time, thread status), starting a daemon-mode tunnel.
//! * [`scripted`]: the protocol tests' scripted peers: a threaded server reporting one
//!   value per connection, clear-text scripts followed by a TLS echo, line helpers.
//! * [`status`]: the status endpoint as tests read it: curl GETs, the Prometheus text
//!   parsed back, `promtool check metrics`, `/status` as a `StatusDoc`.
//! * [`syslog`]: the mixed-fleet tests' numbered syslog lines, each-once counts, the
//!   clear-text check of a capture, README snippets filled with a run's values.
//! * [`tls`]: TLS clients over any stream (`tls_over`, `tls_to`), checking the server or
//!   not, with or without a client certificate.
//! * [`tls_peers`]: what the TLS option tests (`tests/tls_*.rs`) share: `openssl` commands,
//!   `s_client`/`s_server` with a fixed line, tunnels from a config body, refused-and-logged
//!   checks.
//! * [`tools`]: locating external programs (`openssl`, `stunnel4`, `gnutls-cli`, the unpacked
//!   syslog-ng, ...); a missing one fails the test with a pointer to `scripts/deps.sh`
//!   instead of passing silently; private rsyslogd and syslog-ng instances.
//!
//! Environment knobs:
//! * `RSTUNNEL_KEEP_TEST_DIRS=1`: keep the temp dirs (configs, certs) for inspection.
//! * `RSTUNNEL_TEST_LOGS=1`: print every daemon's log when it stops, not only on failure.
//! * `RSTUNNEL_TEST_BIN=/usr/bin/stunnel4`: run the tunnel tests against another binary (the
//!   reference stunnel), to check that a test itself is right. CLI tests of rstunnel-only
//!   flags (`--check`) then fail, as they should.
//!
//! Each test file does `mod common;` and uses a subset, hence the `dead_code` and `unused_imports` allowance.
#![allow(dead_code, unused_imports)]

pub mod certs;
pub mod daemon;
pub mod faults;
pub mod forward;
pub mod gnutls_cli;
pub mod net;
pub mod netns;
pub mod openssl_cli;
pub mod proc_faults;
pub mod process;
pub mod scripted;
pub mod status;
pub mod syslog;
pub mod tls;
pub mod tls_peers;
pub mod tools;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

pub use certs::{Ca, KeyKind, Leaf, LeafFiles, Pki};
pub use daemon::{client_body, echo_server, server_body, Program, Tunnel, TunnelPair};
pub use net::*;

/// Prints `SKIPPED <why>` straight to stderr: libtest captures `println!` of a passing test,
/// and `make test` must show every skip and its reason (README, Tests and benchmarks).
pub fn skipped(why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED {why}");
}

/// A directory of its own for one test, under `std::env::temp_dir()`.
///
/// The name carries the pid and a process-wide counter, so tests running in parallel (threads
/// of one test binary, or several test binaries) never share one. Dropped: removed with its
/// contents, unless `RSTUNNEL_KEEP_TEST_DIRS` is set (then its path is printed).
pub struct TestDir {
    path: PathBuf,
}

static DIR_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TestDir {
    /// Creates `rstunnel-test-<pid>-<n>-<label>`; panics if it cannot be created.
    pub fn new(label: &str) -> TestDir {
        let n = DIR_COUNTER.fetch_add(1, Ordering::SeqCst);
        let clean: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = std::env::temp_dir().join(format!(
            "rstunnel-test-{}-{}-{}",
            std::process::id(),
            n,
            clean
        ));
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .unwrap_or_else(|e| panic!("removing stale {}: {e}", path.display()));
        }
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        // Canonical, so expectations built from it match the realpath the binary reports.
        let path = std::fs::canonicalize(&path).expect("canonicalize test dir");
        TestDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `name` in this directory and returns the full path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.join(name);
        std::fs::write(&p, contents).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::env::var_os("RSTUNNEL_KEEP_TEST_DIRS").is_some() {
            eprintln!("[harness] keeping test dir {}", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
