//! The typed configuration (stage 2): what the option table fills in. Plain data: no I/O,
//! no OpenSSL. Defaults here must equal the table's printed defaults (a test checks it).

use std::path::PathBuf;
use std::time::Duration;

use super::values::TlsVersion;
use crate::log::Level;

/// `foreground = yes|quiet|no`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Foreground {
    /// Fork into the background (stunnel's default).
    No,
    /// Stay in the foreground and also log to stderr.
    Yes,
    /// Stay in the foreground without logging to stderr.
    Quiet,
}

/// Options that only exist once per process (the global part).
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalOptions {
    pub foreground: Foreground,
    /// `output = FILE`: log file.
    pub output: Option<PathBuf>,
    /// `log = overwrite` truncates `output` when it is opened.
    pub log_overwrite: bool,
    pub syslog: bool,
    /// `pid = FILE`; empty or absent means no pid file.
    pub pid: Option<PathBuf>,
    /// syslog facility from `debug = FACILITY.LEVEL` (global part only).
    pub facility: libc::c_int,
    /// syslog ident (`service` in the global part).
    pub service_name: String,
    /// Directory to chroot into after binding.
    pub chroot: Option<PathBuf>,
    /// User to switch to after binding (resolved when the line is read, as stunnel does).
    pub setuid: Option<libc::uid_t>,
    /// Group to switch to (also the only supplementary group).
    pub setgid: Option<libc::gid_t>,
    /// `compression = deflate|zlib`: the value is accepted, then the configuration is
    /// refused by the end-of-global checks in `config::parse` (`Configured compression is
    /// unsupported by OpenSSL`), before any service is built.
    pub compression: Option<String>,
    /// `unprovenPerSource` (rstunnel extension): sessions from one source address (IPv4,
    /// or IPv6 /64) that may be waiting for their handshake at once; `None` = 256 or half
    /// of `unprovenMax`, whichever is less; `Some(0)` = no limit.
    pub unproven_per_source: Option<usize>,
    /// `unprovenMax` (rstunnel extension): unproven sessions in all; `None` = a quarter of
    /// the connection cap, `Some(0)` = no limit.
    pub unproven_max: Option<usize>,
    /// `sandbox = yes|no` (rstunnel extension): restrict the files the process can reach
    /// after startup (`sandbox.rs`).
    pub sandbox: bool,
    /// `status = ADDRESS` (rstunnel extension): where the status endpoint listens
    /// (`status/`); `None` = no endpoint.
    pub status: Option<StatusAddress>,
    /// `watchCertificates = yes|no` (rstunnel extension): reload the TLS contexts when a
    /// certificate, key, CA or CRL file a service uses changes on disk.
    pub watch_certificates: bool,
}

/// `status = [HOST:]PORT | /PATH`, as written: resolved and checked (loopback unless the
/// host is written out) when it is bound, by `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusAddress {
    /// `PORT` alone is 127.0.0.1:PORT (not every interface, as `accept = PORT` is).
    Tcp {
        host: Option<String>,
        port: u16,
    },
    Unix(PathBuf),
}

impl std::fmt::Display for StatusAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatusAddress::Tcp { host: None, port } => write!(f, "127.0.0.1:{port}"),
            StatusAddress::Tcp {
                host: Some(host),
                port,
            } if host.contains(':') => write!(f, "[{host}]:{port}"),
            StatusAddress::Tcp {
                host: Some(host),
                port,
            } => write!(f, "{host}:{port}"),
            StatusAddress::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

impl Default for GlobalOptions {
    fn default() -> Self {
        GlobalOptions {
            foreground: Foreground::No,
            output: None,
            log_overwrite: false,
            syslog: true,
            pid: None,
            facility: libc::LOG_DAEMON,
            service_name: "stunnel".into(),
            chroot: None,
            setuid: None,
            setgid: None,
            compression: None,
            unproven_per_source: None,
            unproven_max: None,
            sandbox: true,
            status: None,
            watch_certificates: true,
        }
    }
}

/// The four verification switches that `verify = N` sets together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifyFlags {
    /// Ask the peer for a certificate (server side).
    pub request_cert: bool,
    /// Fail the handshake when the peer sends none.
    pub require_cert: bool,
    /// Check the chain against CAfile/CApath.
    pub chain: bool,
    /// The peer's own certificate must be among the trusted ones (pinning).
    pub peer: bool,
}

impl VerifyFlags {
    pub fn any_check(&self) -> bool {
        self.chain || self.peer
    }
}

/// One `options = [-]NAME` line: set or clear an OpenSSL option by its stunnel name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SslOptionEdit {
    pub name: &'static str,
    pub set: bool,
}

/// `logId`: the connection identifier in `LOG5[id]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogId {
    /// 0, 1, 2… across the process.
    Sequential,
    /// 22 random base62 characters per connection (`session::random_base62_id`), so an id
    /// is not repeated across restarts or processes.
    Unique,
    /// The id of the session's thread.
    Thread,
    /// The process id.
    Process,
}

/// The four TIMEOUT* options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Waiting for data the protocol expects (the TLS handshake).
    pub busy: Duration,
    /// Waiting for the peer's close_notify after ours (zero: don't wait).
    pub close: Duration,
    /// One outgoing connect().
    pub connect: Duration,
    /// A session with no traffic either way is closed after this.
    pub idle: Duration,
    /// One exchange with an OCSP responder (connect, send, read the answer).
    pub ocsp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            busy: Duration::from_secs(300),
            close: Duration::from_secs(60),
            connect: Duration::from_secs(10),
            idle: Duration::from_secs(43200),
            ocsp: Duration::from_secs(5),
        }
    }
}

/// The TLS options of one service: everything `tls` reads to build its context, its
/// verification policy and its OCSP checks, so that `tls` sees this and not the whole
/// `ServiceOptions`.
///
/// Borderline fields: `sni` is here, as a TLS setting in both of its meanings (the
/// name a client sends in its ClientHello; a server section's `PRIMARY:PATTERN`,
/// which makes it a virtual host of another section's context); which meaning applies
/// depends on the role, so `ServiceOptions::server_sni` (role and value together) stays
/// on the service. `client` stays on `ServiceOptions`: it is the service's role, which
/// decides far more than TLS (which side is encrypted, the protocol hooks, probing),
/// and reaches `tls` as `tls::Role`. `redirect` (addresses) and `TIMEOUTocsp` (one of
/// the service's timeouts) stay too; `tls` gets the facts it needs from them through
/// `tls::ServiceFacts`.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsOptions {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    /// `PSKsecrets`: file of `IDENTITY:KEY` lines.
    pub psk_secrets: Option<PathBuf>,
    /// `PSKidentity` (client): which identity to use; the file's first by default.
    pub psk_identity: Option<String>,
    pub ca_path: Option<PathBuf>,
    /// `CRLfile`/`CRLpath`: revocation lists; either turns CRL checking on.
    pub crl_file: Option<PathBuf>,
    pub crl_path: Option<PathBuf>,
    pub verify: VerifyFlags,
    pub check_host: Vec<String>,
    pub check_email: Vec<String>,
    pub check_ip: Vec<String>,
    pub ciphers: Option<String>,
    pub ciphersuites: Option<String>,
    pub curves: Option<String>,
    /// `None`: no lower limit beyond OpenSSL's own.
    pub ssl_version_min: Option<TlsVersion>,
    /// `None`: up to the newest version OpenSSL has.
    pub ssl_version_max: Option<TlsVersion>,
    pub security_level: Option<u32>,
    /// `options` lines in file order, applied on top of stunnel's default set.
    pub ssl_options: Vec<SslOptionEdit>,
    /// Client side: the SNI name to send; `Some("")` sends none; `None` derives it.
    /// Server side: `PRIMARY:PATTERN` (`ServiceOptions::server_sni`).
    pub sni: Option<String>,
    pub session_cache_size: u32,
    pub session_cache_timeout: Duration,
    /// `sessionResume = no` turns TLS session resumption off.
    pub session_resume: bool,
    /// `OCSP = URL`: the responder for peer certificates (and, on a server, for stapling
    /// our own); checked as `http://` or `https://` when read.
    pub ocsp_url: Option<String>,
    /// `OCSPaia = yes`: also ask the responders named in the certificates' AIA extension.
    pub ocsp_aia: bool,
    /// `OCSPflag` names (OpenSSL's `OCSP_*` without the prefix), cumulative, in file order.
    pub ocsp_flags: Vec<&'static str>,
    /// `OCSPnonce = yes`: send a nonce and require it back.
    pub ocsp_nonce: bool,
    /// `OCSPrequire = no` accepts a peer when no conclusive answer (good or revoked) came.
    pub ocsp_require: bool,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            cert: None,
            key: None,
            ca_file: None,
            psk_secrets: None,
            psk_identity: None,
            ca_path: None,
            crl_file: None,
            crl_path: None,
            verify: VerifyFlags::default(),
            check_host: Vec::new(),
            check_email: Vec::new(),
            check_ip: Vec::new(),
            ciphers: None,
            ciphersuites: None,
            curves: None,
            ssl_version_min: None,
            ssl_version_max: None,
            security_level: None,
            ssl_options: Vec::new(),
            sni: None,
            session_cache_size: 1000,
            session_cache_timeout: Duration::from_secs(300),
            session_resume: true,
            ocsp_url: None,
            ocsp_aia: false,
            ocsp_flags: Vec::new(),
            ocsp_nonce: false,
            ocsp_require: true,
        }
    }
}

impl TlsOptions {
    /// The private key file: `key`, or the `cert` file when `key` is not set.
    pub fn key_file(&self) -> Option<&PathBuf> {
        self.key.as_ref().or(self.cert.as_ref())
    }
}

/// Options of one service (`[section]`). The global part holds one too: its values are the
/// defaults that every section starts from.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceOptions {
    /// The section name, verbatim; empty for the global part and inetd mode.
    pub name: String,
    /// Listening addresses, as written (resolved when the service is built).
    pub accept: Vec<String>,
    /// Target addresses, as written, in file order.
    pub connect: Vec<String>,
    /// `transparent = source|both`: outgoing connections come from the client's address.
    pub transparent_source: bool,
    /// `transparent = destination|both`: the target is the address the client connected
    /// to (redirected here by the firewall), instead of `connect`.
    pub transparent_destination: bool,
    /// `redirect` (server): where sessions whose client certificate fails verification go
    /// instead of `connect`, as written, in file order.
    pub redirect: Vec<String>,
    /// `delay = yes`: resolve `connect` for each connection, not at startup.
    pub delay: bool,
    /// `failover = rr`: each connection starts at the next target (else in file order).
    pub failover_rr: bool,
    /// `local`: source address for outgoing connections.
    pub local: Option<std::net::IpAddr>,
    /// `reset = yes`: end failed sessions with a TCP RST rather than a FIN.
    pub reset: bool,
    /// `logId`: how connections are numbered in log lines.
    pub log_id: LogId,
    /// `protocol`: the clear-text exchange before TLS (a name from `protocol_names::PROTOCOL_NAMES`).
    pub protocol: Option<&'static str>,
    pub protocol_host: Option<String>,
    pub protocol_username: Option<String>,
    pub protocol_password: Option<String>,
    pub protocol_authentication: Option<&'static str>,
    pub protocol_domain: Option<String>,
    /// `protocolHeader` lines, in order.
    pub protocol_headers: Vec<String>,
    /// `exec`: a program run per connection as the far side, instead of `connect`.
    pub exec: Option<PathBuf>,
    /// `execArgs`: argv, including argv[0].
    pub exec_args: Vec<String>,
    /// `pty = yes`: the program gets a pseudo-terminal instead of a socket.
    pub pty: bool,
    /// `retry`: an exec+connect service (no `accept`) starts again this long after its
    /// session ends; `None` runs it once.
    pub retry: Option<Duration>,
    /// Section `setuid`/`setgid`: owner of the service's Unix `accept` sockets.
    pub unix_owner: (Option<libc::uid_t>, Option<libc::gid_t>),
    /// `maxConnections` (rstunnel extension): live sessions allowed for this service;
    /// 0 leaves only the process-wide cap, which follows RLIMIT_NOFILE.
    pub max_connections: usize,
    /// `pauseWhenDown` (rstunnel extension): while the `connect` target is unreachable
    /// the listener refuses connections instead of accepting and dropping them
    /// (`health`). No effect for `exec` services.
    pub pause_when_down: bool,
    /// TLS towards `connect`, plain on `accept`.
    pub client: bool,
    /// The TLS options: all that `tls` reads of this section, with `tls::ServiceFacts`.
    pub tls: TlsOptions,
    /// Connection logs of this service at or below this level are written.
    pub debug_level: Level,
    pub timeouts: Timeouts,
    /// Thread stack size in bytes for this service's session threads.
    pub stack: usize,
    /// `socket` lines after stunnel's defaults, in order (a later one wins).
    pub socket_options: Vec<super::sockopt::SocketOption>,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            name: String::new(),
            accept: Vec::new(),
            connect: Vec::new(),
            delay: false,
            redirect: Vec::new(),
            transparent_source: false,
            transparent_destination: false,
            failover_rr: false,
            local: None,
            reset: true,
            log_id: LogId::Sequential,
            max_connections: 0,
            pause_when_down: true,
            unix_owner: (None, None),
            protocol: None,
            protocol_host: None,
            protocol_username: None,
            protocol_password: None,
            protocol_authentication: None,
            protocol_domain: None,
            protocol_headers: Vec::new(),
            exec: None,
            exec_args: Vec::new(),
            pty: false,
            retry: None,
            client: false,
            tls: TlsOptions::default(),
            debug_level: Level::Notice,
            timeouts: Timeouts::default(),
            stack: 65536,
            socket_options: super::sockopt::defaults(),
        }
    }
}

impl ServiceOptions {
    /// Server side: `sni = PRIMARY:PATTERN` makes this section a virtual host of the
    /// earlier section PRIMARY. `Err` when a server section's `sni` lacks the colon.
    pub fn server_sni(&self) -> Option<Result<(&str, &str), ()>> {
        if self.client {
            return None;
        }
        let value = self.tls.sni.as_deref().filter(|v| !v.is_empty())?;
        Some(
            value
                .rsplit_once(':')
                .filter(|(p, pattern)| !p.is_empty() && !pattern.is_empty())
                .ok_or(()),
        )
    }
}

/// A whole configuration, ready to be built into a runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where it was read from, for messages.
    pub source: String,
    pub global: GlobalOptions,
    /// The global part's service-level values (what every section inherited).
    pub defaults: ServiceOptions,
    /// The sections in file order; empty in inetd mode.
    pub services: Vec<ServiceOptions>,
    /// One note per value that was not checked against this host (`setuid`/`setgid`
    /// names when parsed with `options::Names::Skip`), as `FILE:LINE: "RAW": what`.
    pub not_checked: Vec<String>,
    /// The `include` directories read, in the order read (the sandbox allows them).
    pub includes: Vec<PathBuf>,
}

impl Config {
    /// A file without any `[section]` runs one session on stdin/stdout (inetd mode).
    pub fn is_inetd_mode(&self) -> bool {
        self.services.is_empty()
    }
}
