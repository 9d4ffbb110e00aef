//! The option table: every option stunnel 5.68 knows (plus the few 5.7x added), one row
//! each, with its scope, how its value is parsed into the typed config, its default as
//! `-version` prints it, and its `-help` text. Adding an option is one row plus tests.
//!
//! Most rows name their value's kind (`YesNo`, `Path`, `Seconds`, …) and the field it
//! sets; only options with logic of their own (implied flags, lookups, the other layers'
//! syntax) have a `Custom` setter below the table.
//!
//! Rows whose behaviour rstunnel does not have yet use `Handler::NotYet`: such a line is a
//! startup error that says so, never silently ignored; the ENGINE rows use `Handler::Engine`,
//! which says instead that the option cannot exist where the linked OpenSSL has no ENGINE
//! API (`openssl_names::ENGINE_MISSING`). This file parses values; it opens
//! no files and calls no OpenSSL, but two setters look things up as stunnel does: `local =
//! HOST` resolves the host, `setuid`/`setgid` read the user database (skipped with
//! `Names::Skip`).

use std::path::PathBuf;
use std::time::Duration;

use super::error::{LineError, ValueError};
use super::types::{Foreground, GlobalOptions, LogId, ServiceOptions, SslOptionEdit, VerifyFlags};
use super::values::{self, TlsVersion};
use crate::openssl_names::ENGINE_MISSING;

/// Where an option may appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only before the first `[section]`, once per process.
    Global,
    /// In a section, or in the global part as the default for every section.
    Service,
}

/// What a setter may change: the process-wide options and the service being read (the
/// global part's defaults while `in_global_part`).
pub struct Target<'a> {
    pub global: &'a mut GlobalOptions,
    pub service: &'a mut ServiceOptions,
    pub in_global_part: bool,
    /// Whether `setuid`/`setgid` names are looked up in this host's user database.
    pub names: Names,
    /// Set by a setter that skipped a host lookup (`Names::Skip`): what went unchecked,
    /// for the parser's note.
    pub not_checked: Option<String>,
}

/// `setuid`/`setgid` take a number or a name; a name is resolved while the line is read,
/// as stunnel does (`Illegal UID`/`Illegal GID` when it is unknown). A user database is
/// host state like a certificate file, so `--check --no-files`, which checks a config
/// away from its host, parses with `Skip`: numbers are still checked, names are noted as
/// not checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    LookUp,
    Skip,
}

/// The field of the typed config that a row sets (a closure such as
/// `|t| &mut t.service.delay`).
pub type Field<T> = for<'t, 'a> fn(&'t mut Target<'a>) -> &'t mut T;

/// How a row parses its value and where it puts it. Every kind refuses a value with a
/// `ValueError`; the parser adds the line (`config::error`).
pub enum Setter {
    /// `yes` or `no` (any case).
    YesNo(Field<bool>),
    /// Only `no` is accepted: `yes` asks for what rstunnel does not do, refused with
    /// the error given.
    OnlyNo(ValueError),
    /// A file or directory name; an empty value unsets it, as stunnel does for `pid =`
    /// and `CRLfile =`.
    Path(Field<Option<PathBuf>>),
    /// Text kept as written (an empty value included).
    Text(Field<Option<String>>),
    /// Text kept as written; an empty value unsets it.
    TextOrUnset(Field<Option<String>>),
    /// Each line adds its value to the list.
    List(Field<Vec<String>>),
    /// A whole number of seconds; the name is the timeout's in `Illegal NAME timeout`.
    Seconds(&'static str, Field<Duration>),
    /// A whole number from `min` to `max` (first two), refused with the error given,
    /// stored by the function.
    Number(u64, u64, ValueError, fn(&mut Target<'_>, u64)),
    /// `all` or a TLS version name (`values::tls_version`).
    Version(Field<Option<TlsVersion>>),
    /// One of the words (any case), refused with stunnel's "The argument needs to be
    /// either …" listing them; the function gets the word as listed.
    OneOf(&'static [&'static str], fn(&mut Target<'_>, &'static str)),
    /// One of the words (any case), refused with the error given; the function gets the
    /// word as listed.
    Keyword(
        &'static [&'static str],
        ValueError,
        fn(&mut Target<'_>, &'static str),
    ),
    /// An option with logic of its own.
    Custom(fn(&mut Target<'_>, &str) -> Result<(), ValueError>),
}

impl Setter {
    /// Parses `value` into `target`; on error `target` is unchanged.
    pub fn apply(&self, target: &mut Target<'_>, value: &str) -> Result<(), ValueError> {
        match self {
            Setter::YesNo(field) => *field(target) = values::yes_no(value)?,
            Setter::OnlyNo(refusal) => {
                if values::yes_no(value)? {
                    return Err(refusal.clone());
                }
            }
            Setter::Path(field) => *field(target) = (!value.is_empty()).then(|| value.into()),
            Setter::Text(field) => *field(target) = Some(value.to_string()),
            Setter::TextOrUnset(field) => {
                *field(target) = (!value.is_empty()).then(|| value.to_string());
            }
            Setter::List(field) => field(target).push(value.to_string()),
            Setter::Seconds(what, field) => {
                *field(target) = Duration::from_secs(values::seconds(value, what)?);
            }
            Setter::Number(min, max, refusal, set) => {
                let n = values::integer(value)
                    .and_then(|n| u64::try_from(n).ok())
                    .filter(|n| (*min..=*max).contains(n))
                    .ok_or_else(|| refusal.clone())?;
                set(target, n);
            }
            Setter::Version(field) => *field(target) = values::tls_version(value)?,
            Setter::OneOf(words, set) => {
                set(
                    target,
                    word(words, value).ok_or(ValueError::NotOneOf(words))?,
                );
            }
            Setter::Keyword(words, refusal, set) => {
                set(target, word(words, value).ok_or_else(|| refusal.clone())?);
            }
            Setter::Custom(set) => set(target, value)?,
        }
        Ok(())
    }
}

/// The listed word that `value` is, ignoring case.
fn word(words: &'static [&'static str], value: &str) -> Option<&'static str> {
    words
        .iter()
        .copied()
        .find(|word| word.eq_ignore_ascii_case(value))
}

pub enum Handler {
    Set(Setter),
    /// `include = DIR`: handled by the parser, which reads the directory.
    Include,
    /// Known to stunnel, not built in rstunnel yet: using it is a startup error.
    NotYet,
    /// An ENGINE option: `NotYet` where the linked OpenSSL has the ENGINE API, refused as
    /// not available (with the reason) where it has none (OpenSSL 4.0).
    Engine,
}

/// The startup error for a `Handler::Engine` row.
pub fn engine_refusal(name: &'static str) -> LineError {
    match ENGINE_MISSING {
        Some(why) => LineError::Unavailable { name, why },
        None => LineError::NotYet(name),
    }
}

impl Handler {
    /// What `-help` adds after a row that is refused whatever its value.
    pub fn help_note(&self) -> Option<String> {
        match self {
            Handler::NotYet => Some("not supported yet".into()),
            Handler::Engine => Some(match ENGINE_MISSING {
                Some(why) => format!("not available: {why}"),
                None => "not supported yet".into(),
            }),
            Handler::Set(_) | Handler::Include => None,
        }
    }
}

pub struct OptionSpec {
    pub name: &'static str,
    pub scope: Scope,
    pub handler: Handler,
    /// The default as `-version` prints it (`None`: no default value).
    pub default: Option<&'static str>,
    /// `-help` text after the name: value syntax and meaning.
    pub help: &'static str,
}

const fn row(
    name: &'static str,
    scope: Scope,
    handler: Handler,
    default: Option<&'static str>,
    help: &'static str,
) -> OptionSpec {
    OptionSpec {
        name,
        scope,
        handler,
        default,
        help,
    }
}

use Handler::{Engine, Include, NotYet, Set};
use Scope::{Global, Service};
use Setter::{
    Custom, Keyword, List, Number, OneOf, OnlyNo, Path, Seconds, Text, TextOrUnset, Version, YesNo,
};
use ValueError::{Illegal, Invalid, NotAvailable, Unsupported};

/// Names that stunnel accepts for another option.
pub const ALIASES: &[(&str, &str)] = &[("curve", "curves"), ("session", "sessionCacheTimeout")];

/// Below this a thread cannot run OpenSSL's handshake code safely.
const MIN_STACK: u64 = 16384;

/// `usize::MAX` as a `Number` bound (lossless: usize is at most 64 bits here).
const USIZE_MAX: u64 = usize::MAX as u64;

#[rustfmt::skip]
pub static OPTIONS: &[OptionSpec] = &[
    // ---- global-only options ----
    row("chroot", Global, Set(Path(|t| &mut t.global.chroot)), None, "directory to chroot the process to"),
    row("compression", Global, Set(Keyword(&["deflate", "zlib"], NotAvailable("Specified compression type"), |t, w| t.global.compression = Some(w.into()))), None, "deflate|zlib TLS compression type"),
    row("EGD", Global, NotYet, None, "path to Entropy Gathering Daemon socket"),
    row("engine", Global, Engine, None, "auto|engine_id OpenSSL engine"),
    row("engineCtrl", Global, Engine, None, "cmd[:arg] engine control command"),
    row("engineDefault", Global, Engine, None, "TASK_LIST tasks to delegate to the engine"),
    row("fips", Global, Set(OnlyNo(ValueError::FipsNotBuilt)), Some("no"), "yes|no FIPS 140-2 mode"),
    row("foreground", Global, Set(OneOf(&["yes", "quiet", "no"], set_foreground)), Some("no"), "yes|quiet|no foreground mode (don't fork, log to stderr)"),
    row("log", Global, Set(OneOf(&["append", "overwrite"], |t, w| t.global.log_overwrite = w == "overwrite")), Some("append"), "append|overwrite log file"),
    row("output", Global, Set(Path(|t| &mut t.global.output)), None, "file to append log messages"),
    row("pid", Global, Set(Path(|t| &mut t.global.pid)), None, "pid file"),
    row("provider", Global, NotYet, None, "OpenSSL provider to load (stunnel 5.70+)"),
    row("providerParameter", Global, NotYet, None, "provider:name=value provider parameter (stunnel 5.72+)"),
    row("RNDbytes", Global, NotYet, Some("1024"), "bytes to read from random seed files"),
    row("RNDfile", Global, NotYet, Some("/dev/urandom"), "path to file with random seed data"),
    row("RNDoverwrite", Global, NotYet, Some("yes"), "yes|no overwrite seed datafiles with new random data"),
    row("setEnv", Global, NotYet, None, "NAME=VALUE environment variable (stunnel 5.72+)"),
    row("sandbox", Global, Set(YesNo(|t| &mut t.global.sandbox)), Some("yes"), "yes|no restrict the files the process can reach after startup (Landlock; rstunnel extension)"),
    row("status", Global, Set(Custom(set_status)), None, "[host:]port|/path serve /metrics, /status and /healthz over HTTP (a port alone is 127.0.0.1:port; rstunnel extension)"),
    row("syslog", Global, Set(YesNo(|t| &mut t.global.syslog)), Some("yes"), "yes|no send logging messages to syslog"),
    row("unprovenMax", Global, Set(Number(0, USIZE_MAX, Illegal("unproven session limit"), |t, n| t.global.unproven_max = Some(n as usize))), None, "sessions before their handshake completes, in all; oldest dropped for a new one; default a quarter of the connection cap, at least 64, 0 = no limit (rstunnel extension)"),
    row("unprovenPerSource", Global, Set(Number(0, USIZE_MAX, Illegal("unproven session limit"), |t, n| t.global.unproven_per_source = Some(n as usize))), None, "sessions before their handshake completes, per source address (IPv6: per /64); default 256 or half of unprovenMax if less, 0 = no limit (rstunnel extension)"),
    row("watchCertificates", Global, Set(YesNo(|t| &mut t.global.watch_certificates)), Some("yes"), "yes|no reload TLS contexts when a certificate, key, CA or CRL file changes on disk (rstunnel extension)"),
    // ---- service-level options ----
    row("accept", Service, Set(List(|t| &mut t.service.accept)), None, "[host:]port accept connections on specified host:port"),
    row("CAengine", Service, Engine, None, "engine-specific CA certificate identifier"),
    row("CAfile", Service, Set(Path(|t| &mut t.service.tls.ca_file)), None, "CA certificate file for peer verification"),
    row("CApath", Service, Set(Path(|t| &mut t.service.tls.ca_path)), None, "CA certificate directory for peer verification"),
    row("CAstore", Service, NotYet, None, "CA certificate store URI (stunnel 5.75+)"),
    row("cert", Service, Set(Path(|t| &mut t.service.tls.cert)), None, "certificate chain"),
    row("checkEmail", Service, Set(List(|t| &mut t.service.tls.check_email)), None, "peer certificate email address"),
    row("checkHost", Service, Set(List(|t| &mut t.service.tls.check_host)), None, "peer certificate host name pattern"),
    row("checkIP", Service, Set(Custom(add_check_ip)), None, "peer certificate IP address"),
    row("ciphers", Service, Set(Text(|t| &mut t.service.tls.ciphers)), Some("HIGH:!aNULL:!SSLv2:!DH:!kDHEPSK"), "permitted ciphers for TLS 1.2 or older"),
    row("ciphersuites", Service, Set(Text(|t| &mut t.service.tls.ciphersuites)), Some("TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256"), "permitted ciphersuites for TLS 1.3"),
    row("client", Service, Set(YesNo(|t| &mut t.service.client)), Some("no"), "yes|no client mode (remote service uses TLS)"),
    row("config", Service, NotYet, None, "command[:parameter] to execute"),
    row("connect", Service, Set(List(|t| &mut t.service.connect)), None, "[host:]port to connect"),
    row("CRLfile", Service, Set(Path(|t| &mut t.service.tls.crl_file)), None, "CRL file"),
    row("CRLpath", Service, Set(Path(|t| &mut t.service.tls.crl_path)), None, "CRL directory"),
    row("curves", Service, Set(Text(|t| &mut t.service.tls.curves)), Some("X25519:P-256:X448:P-521:P-384"), "ECDH curve names"),
    row("debug", Service, Set(Custom(set_debug)), Some("daemon.notice"), "[facility].level (e.g. daemon.info)"),
    row("delay", Service, Set(YesNo(|t| &mut t.service.delay)), Some("no"), "yes|no delay DNS lookup for 'connect' option"),
    row("engineId", Service, Engine, None, "ID of engine to read the key from"),
    row("engineNum", Service, Engine, None, "number of engine to read the key from"),
    row("exec", Service, Set(Path(|t| &mut t.service.exec)), None, "file execute local inetd-type program"),
    row("execArgs", Service, Set(Custom(set_exec_args)), None, "arguments for 'exec' (including $0)"),
    row("failover", Service, Set(OneOf(&["rr", "prio"], |t, w| t.service.failover_rr = w == "rr")), Some("prio"), "rr|prio failover strategy"),
    row("ident", Service, NotYet, None, "username for IDENT (RFC 1413) checking"),
    row("include", Service, Include, None, "directory with configuration file snippets"),
    row("key", Service, Set(Path(|t| &mut t.service.tls.key)), None, "certificate private key"),
    row("libwrap", Service, NotYet, Some("no"), "yes|no use /etc/hosts.allow and /etc/hosts.deny"),
    row("local", Service, Set(Custom(set_local)), None, "IP address to be used as source for remote connections"),
    row("logId", Service, Set(Keyword(&["sequential", "unique", "thread", "process"], Invalid("connection identifier type"), set_log_id)), Some("sequential"), "connection identifier type"),
    row("maxConnections", Service, Set(Number(0, USIZE_MAX, Illegal("connection limit"), |t, n| t.service.max_connections = n as usize)), Some("0"), "live sessions allowed for this service, 0 = no own limit (rstunnel extension)"),
    row("OCSP", Service, Set(Custom(set_ocsp)), None, "OCSP responder URL"),
    row("OCSPaia", Service, Set(YesNo(|t| &mut t.service.tls.ocsp_aia)), Some("no"), "yes|no check the AIA responders from certificates"),
    row("OCSPflag", Service, Set(Custom(add_ocsp_flag)), None, "OCSP responder flags"),
    row("OCSPnonce", Service, Set(YesNo(|t| &mut t.service.tls.ocsp_nonce)), Some("no"), "yes|no send and verify the OCSP nonce extension"),
    row("OCSPrequire", Service, Set(YesNo(|t| &mut t.service.tls.ocsp_require)), Some("yes"), "yes|no require a conclusive OCSP response (stunnel 5.70+)"),
    row("options", Service, Set(Custom(add_ssl_option)), Some("NO_SSLv2, NO_SSLv3"), "TLS option to set/reset"),
    row("pauseWhenDown", Service, Set(YesNo(|t| &mut t.service.pause_when_down)), Some("yes"), "yes|no refuse new connections while 'connect' is unreachable; no effect with 'exec' (rstunnel extension)"),
    row("protocol", Service, Set(Custom(set_protocol)), None, "protocol to negotiate before TLS initialization"),
    row("protocolAuthentication", Service, Set(Keyword(&["basic", "ntlm", "plain", "login"], Unsupported("authentication type"), |t, w| t.service.protocol_authentication = Some(w))), None, "authentication type for protocol negotiations"),
    row("protocolDomain", Service, Set(Text(|t| &mut t.service.protocol_domain)), None, "domain for protocol negotiations"),
    row("protocolHeader", Service, Set(List(|t| &mut t.service.protocol_headers)), None, "custom header for protocol negotiations"),
    row("protocolHost", Service, Set(Text(|t| &mut t.service.protocol_host)), None, "host:port for protocol negotiations"),
    row("protocolPassword", Service, Set(Text(|t| &mut t.service.protocol_password)), None, "password for protocol negotiations"),
    row("protocolUsername", Service, Set(Text(|t| &mut t.service.protocol_username)), None, "username for protocol negotiations"),
    row("PSKidentity", Service, Set(TextOrUnset(|t| &mut t.service.tls.psk_identity)), None, "identity for PSK authentication"),
    row("PSKsecrets", Service, Set(Path(|t| &mut t.service.tls.psk_secrets)), None, "secrets for PSK authentication"),
    row("pty", Service, Set(YesNo(|t| &mut t.service.pty)), Some("no"), "yes|no allocate pseudo terminal for 'exec' option"),
    row("redirect", Service, Set(List(|t| &mut t.service.redirect)), None, "[host:]port to redirect on authentication failures"),
    row("renegotiation", Service, Set(OnlyNo(ValueError::RenegotiationRefused)), Some("no"), "yes|no support renegotiation (rstunnel always refuses it)"),
    row("requireCert", Service, Set(Custom(set_require_cert)), Some("no"), "yes|no require client certificate"),
    row("reset", Service, Set(YesNo(|t| &mut t.service.reset)), Some("yes"), "yes|no send TCP RST on error"),
    row("retry", Service, Set(Custom(set_retry)), Some("no"), "yes|no|milliseconds retry connect+exec section"),
    row("securityLevel", Service, Set(Number(0, 5, Invalid("security level"), |t, n| t.service.tls.security_level = Some(n as u32))), Some("2"), "set the security level"),
    row("service", Service, Set(Custom(set_service)), Some("stunnel"), "service name"),
    row("sessionCacheSize", Service, Set(Number(0, u32::MAX as u64, Illegal("session cache size"), |t, n| t.service.tls.session_cache_size = n as u32)), Some("1000"), "session cache size"),
    row("sessionCacheTimeout", Service, Set(Seconds("session cache", |t| &mut t.service.tls.session_cache_timeout)), Some("300"), "session cache timeout (in seconds)"),
    row("sessiond", Service, NotYet, None, "[host:]port use sessiond at host:port"),
    row("sessionResume", Service, Set(YesNo(|t| &mut t.service.tls.session_resume)), Some("yes"), "yes|no enable session resumption"),
    row("setgid", Service, Set(Custom(set_setgid)), None, "groupname for setgid()"),
    row("setuid", Service, Set(Custom(set_setuid)), None, "username for setuid()"),
    row("sni", Service, Set(Text(|t| &mut t.service.tls.sni)), None, "client: server name to send; server: primary_service:host_name"),
    row("socket", Service, Set(Custom(add_socket_option)), None, "a|l|r:option=value[:value] set an option on accept/local/remote socket"),
    row("sslVersion", Service, Set(Custom(set_ssl_version)), None, "all|SSLv3|TLSv1|TLSv1.1|TLSv1.2|TLSv1.3 TLS version"),
    row("sslVersionMax", Service, Set(Version(|t| &mut t.service.tls.ssl_version_max)), Some("all"), "all|SSLv3|TLSv1|TLSv1.1|TLSv1.2|TLSv1.3 TLS version"),
    row("sslVersionMin", Service, Set(Version(|t| &mut t.service.tls.ssl_version_min)), None, "all|SSLv3|TLSv1|TLSv1.1|TLSv1.2|TLSv1.3 TLS version"),
    row("stack", Service, Set(Number(MIN_STACK, USIZE_MAX, Illegal("thread stack size"), |t, n| t.service.stack = n as usize)), Some("65536"), "thread stack size (in bytes)"),
    row("ticketKeySecret", Service, NotYet, None, "secret key for encryption/decryption TLSv1.3 tickets"),
    row("ticketMacSecret", Service, NotYet, None, "key for HMAC operations on TLSv1.3 tickets"),
    row("TIMEOUTbusy", Service, Set(Seconds("busy", |t| &mut t.service.timeouts.busy)), Some("300"), "seconds to wait for expected data"),
    row("TIMEOUTclose", Service, Set(Seconds("close", |t| &mut t.service.timeouts.close)), Some("60"), "seconds to wait for close_notify"),
    row("TIMEOUTconnect", Service, Set(Seconds("connect", |t| &mut t.service.timeouts.connect)), Some("10"), "seconds to connect remote host"),
    row("TIMEOUTidle", Service, Set(Seconds("idle", |t| &mut t.service.timeouts.idle)), Some("43200"), "seconds to keep an idle connection"),
    row("TIMEOUTocsp", Service, Set(Seconds("OCSP", |t| &mut t.service.timeouts.ocsp)), Some("5"), "seconds to wait for an OCSP responder (stunnel 5.70+)"),
    row("transparent", Service, Set(Keyword(&["none", "no", "source", "yes", "destination", "both"], NotAvailable("Selected transparent proxy mode"), set_transparent)), Some("none"), "none|source|destination|both transparent proxy mode"),
    row("verify", Service, Set(Custom(set_verify)), None, "level of peer certificate verification"),
    row("verifyChain", Service, Set(Custom(set_verify_chain)), Some("no"), "yes|no verify certificate chain"),
    row("verifyPeer", Service, Set(Custom(set_verify_peer)), Some("no"), "yes|no verify peer certificate"),
];

/// Looks an option up by name, case-insensitively, following stunnel's aliases.
pub fn find(name: &str) -> Option<&'static OptionSpec> {
    let canonical = ALIASES
        .iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(name))
        .map_or(name, |&(_, target)| target);
    OPTIONS
        .iter()
        .find(|spec| spec.name.eq_ignore_ascii_case(canonical))
}

// ---- what the word rows store ----

fn set_foreground(t: &mut Target<'_>, word: &'static str) {
    t.global.foreground = match word {
        "yes" => Foreground::Yes,
        "quiet" => Foreground::Quiet,
        _ => Foreground::No,
    };
}

fn set_log_id(t: &mut Target<'_>, word: &'static str) {
    t.service.log_id = match word {
        "unique" => LogId::Unique,
        "thread" => LogId::Thread,
        "process" => LogId::Process,
        _ => LogId::Sequential,
    };
}

/// `transparent = none|source|destination|both` (`no` = none, `yes` = source).
fn set_transparent(t: &mut Target<'_>, word: &'static str) {
    t.service.transparent_source = matches!(word, "source" | "yes" | "both");
    t.service.transparent_destination = matches!(word, "destination" | "both");
}

// ---- custom setters: options with logic of their own ----

/// In the global part `setuid`/`setgid` are the user and group the process switches to;
/// in a section they own the service's Unix `accept` sockets.
/// With `Names::Skip` a name leaves the value unset (nothing runs under `--check`).
fn set_setuid(t: &mut Target<'_>, value: &str) -> Result<(), ValueError> {
    let uid = match (t.names, values::numeric_id(value)) {
        (_, Some(n)) => Some(n),
        (Names::LookUp, None) => Some(values::user_id(value)?),
        (Names::Skip, None) => {
            t.not_checked = Some(format!("user '{value}'"));
            None
        }
    };
    if t.in_global_part {
        t.global.setuid = uid;
    } else {
        t.service.unix_owner.0 = uid;
    }
    Ok(())
}

fn set_setgid(t: &mut Target<'_>, value: &str) -> Result<(), ValueError> {
    let gid = match (t.names, values::numeric_id(value)) {
        (_, Some(n)) => Some(n),
        (Names::LookUp, None) => Some(values::group_id(value)?),
        (Names::Skip, None) => {
            t.not_checked = Some(format!("group '{value}'"));
            None
        }
    };
    if t.in_global_part {
        t.global.setgid = gid;
    } else {
        t.service.unix_owner.1 = gid;
    }
    Ok(())
}

/// `OCSP = URL`: only the scheme and authority are checked here; `https://` is accepted
/// (stunnel does) but tls treats such a responder as giving no answer.
fn set_ocsp(t: &mut Target<'_>, value: &str) -> Result<(), ValueError> {
    super::url::ResponderUrl::parse(value)?;
    t.service.tls.ocsp_url = Some(value.to_string());
    Ok(())
}

/// Each line adds one flag; flags are never cleared (stunnel ORs them together).
fn add_ocsp_flag(t: &mut Target<'_>, value: &str) -> Result<(), ValueError> {
    let name =
        crate::openssl_names::ocsp_flag_name(value).ok_or(ValueError::Illegal("OCSP flag"))?;
    t.service.tls.ocsp_flags.push(name);
    Ok(())
}

/// `local = HOST`: resolved now, as stunnel does; the first address is used.
fn set_local(t: &mut Target<'_>, value: &str) -> Result<(), ValueError> {
    use std::net::ToSocketAddrs;
    let ip = (value, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or(ValueError::LocalNotResolved)?
        .ip();
    t.service.local = Some(ip);
    Ok(())
}

/// `status = PORT`, `HOST:PORT` (split at the last `:`; `[v6]:PORT` too) or `/PATH` (a
/// Unix socket); an empty value turns the endpoint off. Only the syntax here: the address
/// is resolved and bound at startup.
fn set_status(t: &mut Target<'_>, value: &str) -> Result<(), ValueError> {
    use super::types::StatusAddress;
    let refuse = || ValueError::Refused(format!("Invalid status address: {value}"));
    t.global.status = if value.is_empty() {
        None
    } else if value.starts_with('/') {
        Some(StatusAddress::Unix(value.into()))
    } else {
        let (host, port) = match value.rsplit_once(':') {
            Some((host, port)) => {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                if host.is_empty() {
                    return Err(refuse());
                }
                (Some(host.to_string()), port)
            }
            None => (None, value),
        };
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(refuse)?;
        Some(StatusAddress::Tcp { host, port })
    };
    Ok(())
}

/// Split on blanks, no quoting, as stunnel; the first word is argv[0].
fn set_exec_args(t: &mut Target<'_>, value: &str) -> Result<(), ValueError> {
    t.service.exec_args = value.split_whitespace().map(str::to_string).collect();
    Ok(())
}

/// `retry = yes` (1000 ms), `no`, or a delay in milliseconds (stunnel 5.7x).
fn set_retry(t: &mut Target<'_>, value: &str) -> Result<(), ValueError> {
    t.service.retry = match values::yes_no(value) {
        Ok(true) => Some(Duration::from_millis(1000)),
        Ok(false) => None,
        Err(_) => {
            let ms = values::integer(value)
                .and_then(|n| u64::try_from(n).ok())
                .ok_or(ValueError::NotYesNoOrMilliseconds)?;
            Some(Duration::from_millis(ms))
        }
    };
    Ok(())
}

fn set_protocol(t: &mut Target<'_>, value: &str) -> Result<(), ValueError> {
    t.service.protocol = Some(
        super::protocol_names::find(value)
            .ok_or(ValueError::Unsupported("protocol"))?
            .name,
    );
    Ok(())
}

fn add_check_ip(t: &mut Target<'_>, value: &str) -> Result<(), ValueError> {
    value
        .parse::<std::net::IpAddr>()
        .map_err(|_| ValueError::Invalid("IP address"))?;
    t.service.tls.check_ip.push(value.to_string());
    Ok(())
}

fn set_debug(t: &mut Target<'_>, value: &str) -> Result<(), ValueError> {
    let (facility, level) = values::debug(value, t.in_global_part)?;
    if let Some(facility) = facility {
        t.global.facility = facility;
    }
    t.service.debug_level = level;
    Ok(())
}

fn add_ssl_option(t: &mut Target<'_>, value: &str) -> Result<(), ValueError> {
    let (set, name) = match value.strip_prefix('-') {
        Some(name) => (false, name),
        None => (true, value),
    };
    let name = crate::openssl_names::ssl_option(name)?;
    t.service.tls.ssl_options.push(SslOptionEdit { name, set });
    Ok(())
}

fn set_require_cert(t: &mut Target<'_>, value: &str) -> Result<(), ValueError> {
    let on = values::yes_no(value)?;
    t.service.tls.verify.require_cert = on;
    if on {
        t.service.tls.verify.request_cert = true;
    }
    Ok(())
}

fn set_service(t: &mut Target<'_>, value: &str) -> Result<(), ValueError> {
    // In a section the name only matters to libwrap, which rstunnel leaves off (its
    // default), so only the global value (the syslog ident) has an effect.
    if t.in_global_part {
        t.global.service_name = value.to_string();
    }
    Ok(())
}

fn add_socket_option(t: &mut Target<'_>, value: &str) -> Result<(), ValueError> {
    t.service.socket_options.push(super::sockopt::parse(value)?);
    Ok(())
}

fn set_ssl_version(t: &mut Target<'_>, value: &str) -> Result<(), ValueError> {
    let version = values::tls_version(value)?;
    t.service.tls.ssl_version_min = version;
    t.service.tls.ssl_version_max = version;
    Ok(())
}

/// `verify = 0..4`, stunnel's legacy level that sets all four flags.
fn set_verify(t: &mut Target<'_>, value: &str) -> Result<(), ValueError> {
    let (request_cert, require_cert, chain, peer) = match values::integer(value) {
        Some(0) => (true, false, false, false),
        Some(1) => (true, false, true, false),
        Some(2) => (true, true, true, false),
        Some(3) => (true, true, true, true),
        Some(4) => (true, true, false, true),
        _ => return Err(ValueError::BadVerifyLevel),
    };
    t.service.tls.verify = VerifyFlags {
        request_cert,
        require_cert,
        chain,
        peer,
    };
    Ok(())
}

fn set_verify_chain(t: &mut Target<'_>, value: &str) -> Result<(), ValueError> {
    let on = values::yes_no(value)?;
    t.service.tls.verify.chain = on;
    if on {
        t.service.tls.verify.request_cert = true;
        t.service.tls.verify.require_cert = true;
    }
    Ok(())
}

fn set_verify_peer(t: &mut Target<'_>, value: &str) -> Result<(), ValueError> {
    let on = values::yes_no(value)?;
    t.service.tls.verify.peer = on;
    if on {
        t.service.tls.verify.request_cert = true;
        t.service.tls.verify.require_cert = true;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    fn apply(name: &str, value: &str) -> Result<(GlobalOptions, ServiceOptions), String> {
        let mut global = GlobalOptions::default();
        let mut service = ServiceOptions::default();
        let spec = find(name).expect("known option");
        let Handler::Set(setter) = &spec.handler else {
            return Err("not settable".into());
        };
        setter
            .apply(
                &mut Target {
                    global: &mut global,
                    service: &mut service,
                    in_global_part: true,
                    names: Names::LookUp,
                    not_checked: None,
                },
                value,
            )
            .map_err(|e| e.to_string())?;
        Ok((global, service))
    }

    const YES_NO: &str = "The argument needs to be either 'yes' or 'no'";

    /// An option, a value it accepts, and a value it refuses with the message.
    type Case = (
        &'static str,
        &'static str,
        Option<(&'static str, &'static str)>,
    );

    /// One case per settable row: a value the row accepts (not its default, where it has
    /// another, so that the test sees the row write its field), and a value it refuses
    /// with the message stunnel prints, for every row that can refuse one. A new row
    /// without its case fails `every_row_accepts_a_value_and_refuses_one_with_its_message`.
    #[rustfmt::skip]
    const CASES: &[Case] = &[
        ("chroot", "/var/empty", None),
        ("compression", "zlib", Some(("lz4", "Specified compression type is not available"))),
        ("fips", "no", Some(("yes", "FIPS mode is not available in this build"))),
        ("foreground", "quiet", Some(("maybe", "The argument needs to be either 'yes', 'quiet' or 'no'"))),
        ("log", "overwrite", Some(("truncate", "The argument needs to be either 'append' or 'overwrite'"))),
        ("output", "/var/log/rstunnel.log", None),
        ("pid", "/run/rstunnel.pid", None),
        ("sandbox", "no", Some(("maybe", YES_NO))),
        ("status", "127.0.0.1:9101", Some(("localhost:http", "Invalid status address: localhost:http"))),
        ("syslog", "no", Some(("off", YES_NO))),
        ("unprovenMax", "1000", Some(("-1", "Illegal unproven session limit"))),
        ("unprovenPerSource", "16", Some(("many", "Illegal unproven session limit"))),
        ("watchCertificates", "no", Some(("sometimes", YES_NO))),
        ("accept", "127.0.0.1:443", None),
        ("CAfile", "/etc/ssl/ca.pem", None),
        ("CApath", "/etc/ssl/certs", None),
        ("cert", "/etc/ssl/cert.pem", None),
        ("checkEmail", "admin@example.org", None),
        ("checkHost", "example.org", None),
        ("checkIP", "192.0.2.1", Some(("example.org", "Invalid IP address"))),
        ("ciphers", "HIGH", None),
        ("ciphersuites", "TLS_AES_128_GCM_SHA256", None),
        ("client", "yes", Some(("y", YES_NO))),
        ("connect", "127.0.0.1:80", None),
        ("CRLfile", "/etc/ssl/crl.pem", None),
        ("CRLpath", "/etc/ssl/crl", None),
        ("curves", "P-256", None),
        ("debug", "info", Some(("loud", "Illegal debug level"))),
        ("delay", "yes", Some(("later", YES_NO))),
        ("exec", "/bin/cat", None),
        ("execArgs", "cat -u", None),
        ("failover", "rr", Some(("random", "The argument needs to be either 'rr' or 'prio'"))),
        ("key", "/etc/ssl/key.pem", None),
        // A refused `local` needs a host name that does not resolve: a DNS query, left
        // to tests/transport_options.rs.
        ("local", "127.0.0.1", None),
        ("logId", "unique", Some(("random", "Invalid connection identifier type"))),
        ("maxConnections", "10", Some(("-1", "Illegal connection limit"))),
        ("OCSP", "http://ocsp.example.org/", Some(("ocsp.example.org", "Invalid OCSP URL"))),
        ("OCSPaia", "yes", Some(("maybe", YES_NO))),
        ("OCSPflag", "NOVERIFY", Some(("NOPE", "Illegal OCSP flag"))),
        ("OCSPnonce", "yes", Some(("maybe", YES_NO))),
        ("OCSPrequire", "no", Some(("maybe", YES_NO))),
        ("options", "NO_TLSv1", Some(("NO_TLSv1.1", "Illegal TLS option"))),
        ("pauseWhenDown", "no", Some(("sometimes", YES_NO))),
        ("protocol", "smtp", Some(("smtps", "Unsupported protocol"))),
        ("protocolAuthentication", "basic", Some(("digest", "Unsupported authentication type"))),
        ("protocolDomain", "EXAMPLE", None),
        ("protocolHeader", "X-Tunnel: 1", None),
        ("protocolHost", "example.org:443", None),
        ("protocolPassword", "secret", None),
        ("protocolUsername", "user", None),
        ("PSKidentity", "client1", None),
        ("PSKsecrets", "/etc/rstunnel/psk.txt", None),
        ("pty", "yes", Some(("maybe", YES_NO))),
        ("redirect", "127.0.0.1:8443", None),
        ("renegotiation", "no", Some(("yes", "option 'renegotiation = yes' is not supported: rstunnel always refuses renegotiation"))),
        ("requireCert", "yes", Some(("maybe", YES_NO))),
        ("reset", "no", Some(("maybe", YES_NO))),
        ("retry", "250", Some(("soon", "The argument needs to be either 'yes', 'no' or a number of milliseconds"))),
        ("securityLevel", "1", Some(("6", "Invalid security level"))),
        ("service", "rstunnel-test", None),
        ("sessionCacheSize", "10", Some(("-5", "Illegal session cache size"))),
        ("sessionCacheTimeout", "60", Some(("5m", "Illegal session cache timeout"))),
        ("sessionResume", "no", Some(("maybe", YES_NO))),
        ("setgid", "65534", Some(("no-such-group-rstunnel", "Illegal GID"))),
        ("setuid", "65534", Some(("no-such-user-rstunnel", "Illegal UID"))),
        ("sni", "example.org", None),
        ("socket", "r:SO_KEEPALIVE=yes", Some(("r:NOPE=1", "Illegal socket option"))),
        ("sslVersion", "TLSv1.2", Some(("TLSv9", "Invalid protocol version"))),
        ("sslVersionMax", "TLSv1.2", Some(("TLSv1_2", "Invalid protocol version"))),
        ("sslVersionMin", "TLSv1.2", Some(("SSLv2", "Invalid protocol version"))),
        ("stack", "32768", Some(("16383", "Illegal thread stack size"))),
        ("TIMEOUTbusy", "30", Some(("x", "Illegal busy timeout"))),
        ("TIMEOUTclose", "0", Some(("-1", "Illegal close timeout"))),
        ("TIMEOUTconnect", "5", Some(("5s", "Illegal connect timeout"))),
        ("TIMEOUTidle", "60", Some(("1h", "Illegal idle timeout"))),
        ("TIMEOUTocsp", "12", Some(("", "Illegal OCSP timeout"))),
        ("transparent", "source", Some(("sideways", "Selected transparent proxy mode is not available"))),
        ("verify", "2", Some(("5", "Bad verify level"))),
        ("verifyChain", "yes", Some(("maybe", YES_NO))),
        ("verifyPeer", "yes", Some(("maybe", YES_NO))),
    ];

    /// Parses one line in the global part through the whole parser; the error as printed.
    fn refused_line(line: &str) -> String {
        match crate::config::parse_bytes("t.conf", format!("{line}\n").as_bytes()) {
            Err(e @ crate::config::ConfigError::Line { .. }) => e.to_string(),
            other => panic!("{line}: expected a line error, got {other:?}"),
        }
    }

    /// The one test per row: every row of the table, by what its handler is.
    #[test]
    fn every_row_accepts_a_value_and_refuses_one_with_its_message() {
        for case in CASES {
            assert!(
                OPTIONS.iter().any(|spec| spec.name == case.0),
                "case {} names no row",
                case.0
            );
        }
        for spec in OPTIONS {
            let name = spec.name;
            let cases: Vec<_> = CASES.iter().filter(|case| case.0 == name).collect();
            match &spec.handler {
                Handler::NotYet => {
                    assert!(cases.is_empty(), "{name}: a case for a NotYet row");
                    assert_eq!(
                        refused_line(&format!("{name} = 1")),
                        format!("t.conf:1: \"{name} = 1\": option '{name}' is not supported yet")
                    );
                }
                Handler::Engine => {
                    assert!(cases.is_empty(), "{name}: a case for an ENGINE row");
                    // Judged by the version the library reports, not by the cfg the
                    // refusal is built from.
                    let running = crate::openssl_names::running_version();
                    let why = if running.starts_with("OpenSSL 4.") {
                        "is not available: OpenSSL 4.0 has no ENGINE API"
                    } else {
                        "is not supported yet"
                    };
                    assert_eq!(
                        refused_line(&format!("{name} = 1")),
                        format!("t.conf:1: \"{name} = 1\": option '{name}' {why}"),
                        "linked with {running}"
                    );
                }
                Handler::Include => {
                    assert!(cases.is_empty(), "{name}: a case for the include row");
                    let empty = std::env::temp_dir()
                        .join(format!("rstunnel-options-include-{}", std::process::id()));
                    std::fs::create_dir_all(&empty).expect("create an empty include dir");
                    let text = format!("client = yes\nconnect = 1\n{name} = {}\n", empty.display());
                    let parsed = crate::config::parse_bytes("t.conf", text.as_bytes());
                    let _ = std::fs::remove_dir(&empty);
                    assert!(parsed.is_ok(), "{name} of an empty directory: {parsed:?}");
                    let missing = "/nonexistent/rstunnel-include";
                    assert_eq!(
                        refused_line(&format!("{name} = {missing}")),
                        format!("t.conf:1: \"{name} = {missing}\": Failed to include directory")
                    );
                }
                Handler::Set(setter) => {
                    let [&(_, valid, refused)] = cases[..] else {
                        panic!("{name}: {} cases, one wanted", cases.len());
                    };
                    let (global, service) = apply(name, valid)
                        .unwrap_or_else(|e| panic!("{name} = {valid} refused: {e}"));
                    if spec.default != Some(valid) {
                        assert!(
                            global != GlobalOptions::default()
                                || service != ServiceOptions::default(),
                            "{name} = {valid} set nothing"
                        );
                    }
                    match refused {
                        Some((bad, message)) => {
                            assert_eq!(apply(name, bad).unwrap_err(), message, "{name} = {bad}");
                            assert_eq!(
                                refused_line(&format!("{name} = {bad}")),
                                format!("t.conf:1: \"{name} = {bad}\": {message}")
                            );
                        }
                        // Only these kinds take any text; the others must show a refusal.
                        None => assert!(
                            matches!(
                                setter,
                                Path(_) | Text(_) | TextOrUnset(_) | List(_) | Custom(_)
                            ),
                            "{name}: no refused value"
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn every_listed_word_is_accepted_in_any_case() {
        for spec in OPTIONS {
            let Handler::Set(OneOf(words, _) | Keyword(words, _, _)) = &spec.handler else {
                continue;
            };
            for word in *words {
                for value in [word.to_string(), word.to_ascii_uppercase()] {
                    assert!(apply(spec.name, &value).is_ok(), "{} = {value}", spec.name);
                }
            }
        }
    }

    #[test]
    fn names_are_unique_case_insensitively() {
        for (i, a) in OPTIONS.iter().enumerate() {
            for b in &OPTIONS[i + 1..] {
                assert!(!a.name.eq_ignore_ascii_case(b.name), "{} twice", a.name);
            }
        }
    }

    #[test]
    fn every_row_has_help() {
        for spec in OPTIONS {
            assert!(!spec.help.is_empty(), "{} has no help", spec.name);
        }
    }

    #[test]
    fn aliases_point_at_rows() {
        for (alias, target) in ALIASES {
            assert_eq!(find(alias).map(|s| s.name), Some(*target));
        }
    }

    #[test]
    fn every_settable_default_parses_and_matches_the_typed_default() {
        // These keep `None` in the typed config so that tls applies the built-in choice.
        const BUILT_IN: [&str; 5] = [
            "ciphers",
            "ciphersuites",
            "curves",
            "securityLevel",
            "options",
        ];
        for spec in OPTIONS {
            let (Handler::Set(_), Some(default)) = (&spec.handler, spec.default) else {
                continue;
            };
            if BUILT_IN.contains(&spec.name) {
                continue;
            }
            let (global, service) = apply(spec.name, default)
                .unwrap_or_else(|e| panic!("default of {} rejected: {e}", spec.name));
            assert_eq!(
                service,
                ServiceOptions::default(),
                "default of {}",
                spec.name
            );
            assert_eq!(global, GlobalOptions::default(), "default of {}", spec.name);
        }
    }

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(find("CLIENT").map(|s| s.name), Some("client"));
        assert_eq!(find("timeoutBUSY").map(|s| s.name), Some("TIMEOUTbusy"));
        assert!(find("nonsense").is_none());
    }

    #[test]
    fn verify_levels_map_to_flags() {
        let (_, s) = apply("verify", "2").unwrap();
        assert!(
            s.tls.verify.request_cert
                && s.tls.verify.require_cert
                && s.tls.verify.chain
                && !s.tls.verify.peer
        );
        let (_, s) = apply("verify", "4").unwrap();
        assert!(s.tls.verify.peer && !s.tls.verify.chain);
        assert_eq!(apply("verify", "5").unwrap_err(), "Bad verify level");
    }

    #[test]
    fn verify_chain_implies_require_cert() {
        let (_, s) = apply("verifyChain", "yes").unwrap();
        assert!(s.tls.verify.chain && s.tls.verify.require_cert && s.tls.verify.request_cert);
    }

    #[test]
    fn ssl_version_sets_both_bounds() {
        use super::super::values::TlsVersion;
        let (_, s) = apply("sslVersion", "TLSv1.2").unwrap();
        assert_eq!(s.tls.ssl_version_min, Some(TlsVersion::Tls1_2));
        assert_eq!(s.tls.ssl_version_max, Some(TlsVersion::Tls1_2));
        assert_eq!(
            apply("sslVersionMin", "TLSv9").unwrap_err(),
            "Invalid protocol version"
        );
    }

    #[test]
    fn timeouts_reject_junk_with_their_own_name() {
        assert_eq!(
            apply("TIMEOUTidle", "1h").unwrap_err(),
            "Illegal idle timeout"
        );
        assert_eq!(
            apply("TIMEOUTclose", "x").unwrap_err(),
            "Illegal close timeout"
        );
        let (_, s) = apply("TIMEOUTclose", "0").unwrap();
        assert_eq!(s.timeouts.close, Duration::ZERO);
    }

    #[test]
    fn foreground_and_log_values() {
        assert_eq!(
            apply("foreground", "QUIET").unwrap().0.foreground,
            Foreground::Quiet
        );
        assert!(apply("foreground", "maybe")
            .unwrap_err()
            .contains("'quiet'"));
        assert!(apply("log", "overwrite").unwrap().0.log_overwrite);
    }

    #[test]
    fn empty_pid_means_none() {
        assert_eq!(apply("pid", "").unwrap().0.pid, None);
        assert_eq!(
            apply("pid", "/run/x.pid").unwrap().0.pid,
            Some("/run/x.pid".into())
        );
    }

    /// `status`: a port alone is loopback; a host is kept as written (resolved at bind);
    /// `[v6]:PORT` loses its brackets; a path is a Unix socket; empty turns it off.
    #[test]
    fn status_addresses_as_written() {
        use crate::config::types::StatusAddress;
        let status = |v: &str| apply("status", v).map(|(g, _)| g.status);
        assert_eq!(
            status("9101").unwrap(),
            Some(StatusAddress::Tcp {
                host: None,
                port: 9101
            })
        );
        assert_eq!(
            status("9101").unwrap().unwrap().to_string(),
            "127.0.0.1:9101"
        );
        assert_eq!(
            status("[::1]:9101").unwrap().unwrap().to_string(),
            "[::1]:9101"
        );
        assert_eq!(
            status("0.0.0.0:9101").unwrap(),
            Some(StatusAddress::Tcp {
                host: Some("0.0.0.0".into()),
                port: 9101
            })
        );
        assert_eq!(
            status("/run/rstunnel/status.sock").unwrap(),
            Some(StatusAddress::Unix("/run/rstunnel/status.sock".into()))
        );
        assert_eq!(status("").unwrap(), None);
        for bad in ["0", ":9101", "host:", "host:99999", "x"] {
            assert!(status(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn options_names_and_clearing() {
        let (_, s) = apply("options", "-NO_SSLv3").unwrap();
        assert_eq!(
            s.tls.ssl_options,
            vec![SslOptionEdit {
                name: "NO_SSLv3",
                set: false
            }]
        );
        let (_, s) = apply("options", "no_tlsv1").unwrap();
        assert_eq!(s.tls.ssl_options[0].name, "NO_TLSv1");
        assert_eq!(
            apply("options", "NO_TLSv1.1").unwrap_err(),
            "Illegal TLS option"
        );
    }

    #[test]
    fn stack_and_security_level_bounds() {
        assert_eq!(apply("stack", "65536").unwrap().1.stack, 65536);
        assert!(apply("stack", "100").is_err());
        assert_eq!(
            apply("securityLevel", "0").unwrap().1.tls.security_level,
            Some(0)
        );
        assert!(apply("securityLevel", "6").is_err());
    }

    #[test]
    fn pause_when_down_is_on_by_default_and_takes_yes_or_no() {
        assert!(ServiceOptions::default().pause_when_down);
        assert!(!apply("pauseWhenDown", "no").unwrap().1.pause_when_down);
        assert!(apply("pauseWhenDown", "yes").unwrap().1.pause_when_down);
        assert!(apply("pauseWhenDown", "sometimes").is_err());
    }

    #[test]
    fn delay_and_compression() {
        assert!(apply("delay", "yes").unwrap().1.delay);
        assert_eq!(
            apply("compression", "Deflate")
                .unwrap()
                .0
                .compression
                .as_deref(),
            Some("deflate")
        );
        assert!(apply("compression", "lzma").is_err());
    }

    #[test]
    fn ocsp_url_needs_an_http_or_https_responder() {
        let (_, s) = apply("OCSP", "http://ocsp.example.org:8080/check").unwrap();
        assert_eq!(
            s.tls.ocsp_url.as_deref(),
            Some("http://ocsp.example.org:8080/check")
        );
        assert!(apply("OCSP", "HTTPS://ocsp.example.org").is_ok());
        assert!(apply("OCSP", "http://[::1]:2560").is_ok());
        for bad in [
            "ocsp.example.org",
            "ftp://x",
            "http://",
            "http://h:port/",
            "",
        ] {
            assert_eq!(apply("OCSP", bad).unwrap_err(), "Invalid OCSP URL", "{bad}");
        }
    }

    #[test]
    fn ocsp_aia_nonce_and_require_are_yes_no() {
        assert!(apply("OCSPaia", "yes").unwrap().1.tls.ocsp_aia);
        assert!(!apply("OCSPaia", "no").unwrap().1.tls.ocsp_aia);
        assert!(apply("OCSPnonce", "YES").unwrap().1.tls.ocsp_nonce);
        assert!(!apply("OCSPrequire", "no").unwrap().1.tls.ocsp_require);
        assert!(apply("OCSPrequire", "yes").unwrap().1.tls.ocsp_require);
        for name in ["OCSPaia", "OCSPnonce", "OCSPrequire"] {
            assert!(apply(name, "maybe").is_err(), "{name}");
        }
    }

    #[test]
    fn ocsp_flags_by_name_and_cumulative() {
        let (_, s) = apply("OCSPflag", "noverify").unwrap();
        assert_eq!(s.tls.ocsp_flags, vec!["NOVERIFY"]);
        let mut global = GlobalOptions::default();
        let mut service = ServiceOptions::default();
        let mut t = Target {
            global: &mut global,
            service: &mut service,
            in_global_part: false,
            names: Names::LookUp,
            not_checked: None,
        };
        add_ocsp_flag(&mut t, "NOCERTS").unwrap();
        add_ocsp_flag(&mut t, "TRUSTOTHER").unwrap();
        assert_eq!(service.tls.ocsp_flags, vec!["NOCERTS", "TRUSTOTHER"]);
        for bad in ["OCSP_NOCERTS", "NOPE", ""] {
            assert_eq!(
                apply("OCSPflag", bad).unwrap_err(),
                "Illegal OCSP flag",
                "{bad}"
            );
        }
    }

    #[test]
    fn ocsp_timeout_in_seconds() {
        assert_eq!(
            apply("TIMEOUTocsp", "12").unwrap().1.timeouts.ocsp,
            Duration::from_secs(12)
        );
        assert_eq!(
            apply("TIMEOUTocsp", "5s").unwrap_err(),
            "Illegal OCSP timeout"
        );
    }

    #[test]
    fn socket_lines_append_after_the_defaults() {
        let (_, s) = apply("socket", "r:SO_KEEPALIVE=yes").unwrap();
        assert_eq!(
            s.socket_options.len(),
            crate::config::sockopt::defaults().len() + 1
        );
        assert_eq!(
            apply("socket", "r:NOPE=1").unwrap_err(),
            "Illegal socket option"
        );
    }

    #[test]
    fn check_ip_needs_an_address() {
        assert!(apply("checkIP", "192.0.2.1").is_ok());
        assert!(apply("checkIP", "::1").is_ok());
        assert!(apply("checkIP", "host").is_err());
    }
}
