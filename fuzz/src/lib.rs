//! Shared harness code for rstunnel's fuzz targets (`fuzz_targets/*.rs`): process setup
//! (quiet logging, an isolated network namespace), the guard that keeps the config
//! parser away from the real file system, the runtime value parsers run on whatever a
//! parse accepted, and in-memory peers for the protocol negotiators.
//!
//! Nothing here judges the result of a parse or an exchange: `Ok` and `Err` are both
//! fine. A panic, a hang (libFuzzer `-timeout`) or runaway memory (`-rss_limit_mb`,
//! `-malloc_limit_mb`) is the bug the targets look for.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Once, OnceLock};
use std::time::Duration;

use rstunnel::config::lexer::{self, LineKind};
use rstunnel::config::options::{self, Handler};
use rstunnel::config::ServiceOptions;
use rstunnel::net::{display_addr, Addr, Endpoint, Stream};

/// Include directories the config targets may really read; every other existing path in
/// an `include` line makes the input uninteresting (it would read the host's files,
/// /proc/kcore included). Fixed paths, so that committed seeds can name them.
pub const INCLUDE_DIR: &str = "/tmp/rstunnel-fuzz-include/ok";
/// A directory whose only snippet includes the directory itself: the depth limit.
pub const INCLUDE_LOOP_DIR: &str = "/tmp/rstunnel-fuzz-include/loop";

/// Once per process: log lines are formatted and sanitised (hostile text passes through
/// there too) but written nowhere, and the startup buffer, which keeps every line until
/// a daemon has started, is closed so that it does not grow across runs.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let setup = rstunnel::log::LogSetup {
            stderr: false,
            output: None,
            syslog: None,
            level: rstunnel::log::Level::Debug,
        };
        rstunnel::log::configure(&setup).expect("log setup without sinks cannot fail");
        rstunnel::log::end_startup();
        write_include_dirs();
    });
}

fn write_include_dirs() {
    let files: [(&str, &str, String); 3] = [
        (
            INCLUDE_DIR,
            "10-global.conf",
            "debug = 5\nTIMEOUTidle = 30\n".into(),
        ),
        (
            INCLUDE_DIR,
            "20-section.conf",
            "[inc]\nclient = yes\naccept = 127.0.0.1:1\nconnect = 2\n".into(),
        ),
        (
            INCLUDE_LOOP_DIR,
            "self.conf",
            format!("include = {INCLUDE_LOOP_DIR}\n"),
        ),
    ];
    for (dir, name, text) in files {
        std::fs::create_dir_all(dir).expect("create the fuzz include dir");
        let path = Path::new(dir).join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&path, text).expect("write a fuzz include snippet");
        }
    }
}

/// Moves the process into a new, empty network namespace (only a down loopback), so that
/// values which make rstunnel resolve or connect (`local = HOST`, SOCKS targets) fail at
/// once instead of sending packets. Needs root (CAP_SYS_ADMIN); `false` if refused.
pub fn isolate_network() -> bool {
    static ISOLATED: OnceLock<bool> = OnceLock::new();
    // SAFETY: unshare(2) with a flag only changes this process's namespace membership;
    // called once, before any socket is opened by the target.
    *ISOLATED.get_or_init(|| unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0)
}

/// Whether `host` can be looked up without a resolver (an IP literal).
fn is_ip_literal(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok()
}

/// Whether a setter may be called with `value` for option `name` without touching the
/// outside world: `include` only of the fixed dirs or of paths that do not exist, and
/// `local = HOST` only as an IP literal unless the network is isolated.
pub fn value_is_contained(name: &str, value: &str, network_isolated: bool) -> bool {
    let Some(spec) = options::find(name) else {
        return true;
    };
    match spec.handler {
        Handler::Include => {
            value == INCLUDE_DIR
                || value == INCLUDE_LOOP_DIR
                || std::fs::symlink_metadata(value).is_err()
        }
        Handler::Set(_) if spec.name == "local" => network_isolated || is_ip_literal(value),
        _ => true,
    }
}

/// Runs the lexer alone on `bytes` and checks every option line with `value_is_contained`.
pub fn config_is_contained(bytes: &[u8], network_isolated: bool) -> bool {
    let file: Arc<str> = Arc::from("fuzz.conf");
    lexer::lex(&file, bytes)
        .iter()
        .all(|line| match &line.kind {
            LineKind::Option { name, value } => value_is_contained(name, value, network_isolated),
            _ => true,
        })
}

/// An address value as the runtime reads it (`accept`, `connect`, `redirect`): parsed,
/// then resolved where that needs no resolver, and every address printed.
pub fn exercise_address(value: &str, accept: bool) {
    let Ok(endpoint) = Endpoint::parse(value) else {
        return;
    };
    let _ = endpoint.host();
    let resolvable = match &endpoint {
        Endpoint::Unix(_) => true,
        Endpoint::Tcp { host: None, .. } => true,
        Endpoint::Tcp { host: Some(h), .. } => is_ip_literal(h) || (accept && h == "*"),
    };
    if !resolvable {
        return;
    }
    let addrs = if accept {
        endpoint.resolve_accept()
    } else {
        endpoint.resolve_connect()
    };
    for addr in addrs.into_iter().flatten() {
        match &addr {
            Addr::Inet(inet) => {
                let _ = display_addr(inet);
            }
            Addr::Unix(path) => {
                let _ = path.display().to_string();
            }
        }
        let _ = addr.is_ipv6();
    }
}

/// What the runtime derives from a section's options before it opens anything: endpoint
/// syntax, the server-side SNI split, the protocol's side check.
pub fn exercise_service(opts: &ServiceOptions) {
    for value in &opts.accept {
        exercise_address(value, true);
    }
    for value in opts.connect.iter().chain(&opts.redirect) {
        exercise_address(value, false);
    }
    let _ = opts.server_sni();
    let _ = opts.tls.key_file();
    if let Some(protocol) = opts
        .protocol
        .and_then(rstunnel::config::protocol_names::find)
    {
        let _ = rstunnel::config::protocol_names::unsupported_on(protocol, opts.client);
    }
}

/// The longest input written ahead into a socket pair: well under the kernel's socket
/// buffer, so the write cannot block with nobody reading yet.
pub const MAX_PEER_BYTES: usize = 64 * 1024;

/// A connected pair whose far end has already sent `bytes` and then shut its write side:
/// the returned `Stream` reads exactly `bytes`, then EOF. The peer end is returned too,
/// to keep it open (what the negotiator writes lands in its receive buffer).
pub fn scripted_peer(bytes: &[u8]) -> (Stream, UnixStream) {
    let (ours, mut theirs) = UnixStream::pair().expect("socketpair");
    theirs.write_all(bytes).expect("pre-write the peer's bytes");
    theirs
        .shutdown(std::net::Shutdown::Write)
        .expect("shut the peer's write side");
    // A safety net for the harness itself: a negotiator that writes more than the peer's
    // buffer holds fails instead of blocking. Reads never wait: EOF is already queued.
    // (Set on the socket: `Stream` has no write timeout of its own.)
    ours.set_write_timeout(Some(Duration::from_secs(2)))
        .expect("SO_SNDTIMEO on the socket pair");
    (Stream::from_unix(ours), theirs)
}

/// A byte stream over memory for negotiators that take `Read + Write` (SOCKS): reads the
/// peer's bytes then EOF; keeps at most `MAX_PEER_BYTES` of what is written to it.
pub struct MemoryChannel<'a> {
    input: &'a [u8],
    pub written: Vec<u8>,
}

impl<'a> MemoryChannel<'a> {
    pub fn new(input: &'a [u8]) -> MemoryChannel<'a> {
        MemoryChannel {
            input,
            written: Vec::new(),
        }
    }
}

impl Read for MemoryChannel<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for MemoryChannel<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written.len() + buf.len() > MAX_PEER_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the negotiator wrote more than the harness keeps",
            ));
        }
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
