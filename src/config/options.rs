//! The option table: every option stunnel 5.68 knows (plus the few 5.7x added), one row
//! each, with its scope, how its value is parsed into the typed config, its default as
//! `-version` prints it, and its `-help` text. Adding an option is one row plus tests.
//!
//! Rows whose behaviour rstunnel does not have yet use `Handler::NotYet`: such a line is a
//! startup error that says so, never silently ignored. This file parses values only; it
//! opens no files and calls no OpenSSL.

use std::path::PathBuf;
use std::time::Duration;

use super::types::{Foreground, GlobalOptions, LogId, ServiceOptions, SslOptionEdit, VerifyFlags};
use super::values;

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

pub type Setter = fn(&mut Target<'_>, &str) -> Result<(), String>;

#[derive(Clone, Copy)]
pub enum Handler {
    Set(Setter),
    /// `include = DIR`: handled by the parser, which reads the directory.
    Include,
    /// Known to stunnel, not built in rstunnel yet: using it is a startup error.
    NotYet,
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

use Handler::{Include, NotYet, Set};
use Scope::{Global, Service};

/// Names that stunnel accepts for another option.
pub const ALIASES: &[(&str, &str)] = &[("curve", "curves"), ("session", "sessionCacheTimeout")];

#[rustfmt::skip]
pub static OPTIONS: &[OptionSpec] = &[
    // ---- global-only options ----
    row("chroot", Global, Set(set_chroot), None, "directory to chroot the process to"),
    row("compression", Global, Set(set_compression), None, "deflate|zlib TLS compression type"),
    row("EGD", Global, NotYet, None, "path to Entropy Gathering Daemon socket"),
    row("engine", Global, NotYet, None, "auto|engine_id OpenSSL engine"),
    row("engineCtrl", Global, NotYet, None, "cmd[:arg] engine control command"),
    row("engineDefault", Global, NotYet, None, "TASK_LIST tasks to delegate to the engine"),
    row("fips", Global, Set(set_fips), Some("no"), "yes|no FIPS 140-2 mode"),
    row("foreground", Global, Set(set_foreground), Some("no"), "yes|quiet|no foreground mode (don't fork, log to stderr)"),
    row("log", Global, Set(set_log), Some("append"), "append|overwrite log file"),
    row("output", Global, Set(set_output), None, "file to append log messages"),
    row("pid", Global, Set(set_pid), None, "pid file"),
    row("provider", Global, NotYet, None, "OpenSSL provider to load (stunnel 5.70+)"),
    row("providerParameter", Global, NotYet, None, "provider:name=value provider parameter (stunnel 5.72+)"),
    row("RNDbytes", Global, NotYet, Some("1024"), "bytes to read from random seed files"),
    row("RNDfile", Global, NotYet, Some("/dev/urandom"), "path to file with random seed data"),
    row("RNDoverwrite", Global, NotYet, Some("yes"), "yes|no overwrite seed datafiles with new random data"),
    row("setEnv", Global, NotYet, None, "NAME=VALUE environment variable (stunnel 5.72+)"),
    row("syslog", Global, Set(set_syslog), Some("yes"), "yes|no send logging messages to syslog"),
    // ---- service-level options ----
    row("accept", Service, Set(add_accept), None, "[host:]port accept connections on specified host:port"),
    row("CAengine", Service, NotYet, None, "engine-specific CA certificate identifier"),
    row("CAfile", Service, Set(set_ca_file), None, "CA certificate file for peer verification"),
    row("CApath", Service, Set(set_ca_path), None, "CA certificate directory for peer verification"),
    row("CAstore", Service, NotYet, None, "CA certificate store URI (stunnel 5.75+)"),
    row("cert", Service, Set(set_cert), None, "certificate chain"),
    row("checkEmail", Service, Set(add_check_email), None, "peer certificate email address"),
    row("checkHost", Service, Set(add_check_host), None, "peer certificate host name pattern"),
    row("checkIP", Service, Set(add_check_ip), None, "peer certificate IP address"),
    row("ciphers", Service, Set(set_ciphers), Some("HIGH:!aNULL:!SSLv2:!DH:!kDHEPSK"), "permitted ciphers for TLS 1.2 or older"),
    row("ciphersuites", Service, Set(set_ciphersuites), Some("TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256"), "permitted ciphersuites for TLS 1.3"),
    row("client", Service, Set(set_client), Some("no"), "yes|no client mode (remote service uses TLS)"),
    row("config", Service, NotYet, None, "command[:parameter] to execute"),
    row("connect", Service, Set(add_connect), None, "[host:]port to connect"),
    row("CRLfile", Service, Set(set_crl_file), None, "CRL file"),
    row("CRLpath", Service, Set(set_crl_path), None, "CRL directory"),
    row("curves", Service, Set(set_curves), Some("X25519:P-256:X448:P-521:P-384"), "ECDH curve names"),
    row("debug", Service, Set(set_debug), Some("daemon.notice"), "[facility].level (e.g. daemon.info)"),
    row("delay", Service, Set(set_delay), Some("no"), "yes|no delay DNS lookup for 'connect' option"),
    row("engineId", Service, NotYet, None, "ID of engine to read the key from"),
    row("engineNum", Service, NotYet, None, "number of engine to read the key from"),
    row("exec", Service, Set(set_exec), None, "file execute local inetd-type program"),
    row("execArgs", Service, Set(set_exec_args), None, "arguments for 'exec' (including $0)"),
    row("failover", Service, Set(set_failover), Some("prio"), "rr|prio failover strategy"),
    row("ident", Service, NotYet, None, "username for IDENT (RFC 1413) checking"),
    row("include", Service, Include, None, "directory with configuration file snippets"),
    row("key", Service, Set(set_key), None, "certificate private key"),
    row("libwrap", Service, NotYet, Some("no"), "yes|no use /etc/hosts.allow and /etc/hosts.deny"),
    row("local", Service, Set(set_local), None, "IP address to be used as source for remote connections"),
    row("logId", Service, Set(set_log_id), Some("sequential"), "connection identifier type"),
    row("maxConnections", Service, Set(set_max_connections), Some("0"), "live sessions allowed for this service, 0 = no own limit (rstunnel extension)"),
    row("OCSP", Service, Set(set_ocsp), None, "OCSP responder URL"),
    row("OCSPaia", Service, Set(set_ocsp_aia), Some("no"), "yes|no check the AIA responders from certificates"),
    row("OCSPflag", Service, Set(add_ocsp_flag), None, "OCSP responder flags"),
    row("OCSPnonce", Service, Set(set_ocsp_nonce), Some("no"), "yes|no send and verify the OCSP nonce extension"),
    row("OCSPrequire", Service, Set(set_ocsp_require), Some("yes"), "yes|no require a conclusive OCSP response (stunnel 5.70+)"),
    row("options", Service, Set(add_ssl_option), Some("NO_SSLv2, NO_SSLv3"), "TLS option to set/reset"),
    row("pauseWhenDown", Service, Set(set_pause_when_down), Some("yes"), "yes|no refuse new connections while 'connect' is unreachable; no effect with 'exec' (rstunnel extension)"),
    row("protocol", Service, Set(set_protocol), None, "protocol to negotiate before TLS initialization"),
    row("protocolAuthentication", Service, Set(set_protocol_authentication), None, "authentication type for protocol negotiations"),
    row("protocolDomain", Service, Set(set_protocol_domain), None, "domain for protocol negotiations"),
    row("protocolHeader", Service, Set(add_protocol_header), None, "custom header for protocol negotiations"),
    row("protocolHost", Service, Set(set_protocol_host), None, "host:port for protocol negotiations"),
    row("protocolPassword", Service, Set(set_protocol_password), None, "password for protocol negotiations"),
    row("protocolUsername", Service, Set(set_protocol_username), None, "username for protocol negotiations"),
    row("PSKidentity", Service, Set(set_psk_identity), None, "identity for PSK authentication"),
    row("PSKsecrets", Service, Set(set_psk_secrets), None, "secrets for PSK authentication"),
    row("pty", Service, Set(set_pty), Some("no"), "yes|no allocate pseudo terminal for 'exec' option"),
    row("redirect", Service, Set(add_redirect), None, "[host:]port to redirect on authentication failures"),
    row("renegotiation", Service, Set(set_renegotiation), Some("no"), "yes|no support renegotiation (rstunnel always refuses it)"),
    row("requireCert", Service, Set(set_require_cert), Some("no"), "yes|no require client certificate"),
    row("reset", Service, Set(set_reset), Some("yes"), "yes|no send TCP RST on error"),
    row("retry", Service, Set(set_retry), Some("no"), "yes|no|milliseconds retry connect+exec section"),
    row("securityLevel", Service, Set(set_security_level), Some("2"), "set the security level"),
    row("service", Service, Set(set_service), Some("stunnel"), "service name"),
    row("sessionCacheSize", Service, Set(set_session_cache_size), Some("1000"), "session cache size"),
    row("sessionCacheTimeout", Service, Set(set_session_cache_timeout), Some("300"), "session cache timeout (in seconds)"),
    row("sessiond", Service, NotYet, None, "[host:]port use sessiond at host:port"),
    row("sessionResume", Service, Set(set_session_resume), Some("yes"), "yes|no enable session resumption"),
    row("setgid", Service, Set(set_setgid), None, "groupname for setgid()"),
    row("setuid", Service, Set(set_setuid), None, "username for setuid()"),
    row("sni", Service, Set(set_sni), None, "client: server name to send; server: primary_service:host_name"),
    row("socket", Service, Set(add_socket_option), None, "a|l|r:option=value[:value] set an option on accept/local/remote socket"),
    row("sslVersion", Service, Set(set_ssl_version), None, "all|SSLv3|TLSv1|TLSv1.1|TLSv1.2|TLSv1.3 TLS version"),
    row("sslVersionMax", Service, Set(set_ssl_version_max), Some("all"), "all|SSLv3|TLSv1|TLSv1.1|TLSv1.2|TLSv1.3 TLS version"),
    row("sslVersionMin", Service, Set(set_ssl_version_min), None, "all|SSLv3|TLSv1|TLSv1.1|TLSv1.2|TLSv1.3 TLS version"),
    row("stack", Service, Set(set_stack), Some("65536"), "thread stack size (in bytes)"),
    row("ticketKeySecret", Service, NotYet, None, "secret key for encryption/decryption TLSv1.3 tickets"),
    row("ticketMacSecret", Service, NotYet, None, "key for HMAC operations on TLSv1.3 tickets"),
    row("TIMEOUTbusy", Service, Set(set_timeout_busy), Some("300"), "seconds to wait for expected data"),
    row("TIMEOUTclose", Service, Set(set_timeout_close), Some("60"), "seconds to wait for close_notify"),
    row("TIMEOUTconnect", Service, Set(set_timeout_connect), Some("10"), "seconds to connect remote host"),
    row("TIMEOUTidle", Service, Set(set_timeout_idle), Some("43200"), "seconds to keep an idle connection"),
    row("TIMEOUTocsp", Service, Set(set_timeout_ocsp), Some("5"), "seconds to wait for an OCSP responder (stunnel 5.70+)"),
    row("transparent", Service, Set(set_transparent), Some("none"), "none|source|destination|both transparent proxy mode"),
    row("verify", Service, Set(set_verify), None, "level of peer certificate verification"),
    row("verifyChain", Service, Set(set_verify_chain), Some("no"), "yes|no verify certificate chain"),
    row("verifyPeer", Service, Set(set_verify_peer), Some("no"), "yes|no verify peer certificate"),
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

// ---- setters: each parses one value into the typed config ----

/// An empty value unsets a path option, as stunnel does for `pid =` and `CRLfile =`.
fn path(value: &str) -> Option<PathBuf> {
    (!value.is_empty()).then(|| PathBuf::from(value))
}

fn set_fips(_: &mut Target<'_>, value: &str) -> Result<(), String> {
    match values::yes_no(value)? {
        false => Ok(()),
        true => Err("FIPS mode is not available in this build".into()),
    }
}

fn set_foreground(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.global.foreground = match value.to_ascii_lowercase().as_str() {
        "yes" => Foreground::Yes,
        "quiet" => Foreground::Quiet,
        "no" => Foreground::No,
        _ => return Err("The argument needs to be either 'yes', 'quiet' or 'no'".into()),
    };
    Ok(())
}

fn set_log(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.global.log_overwrite = match value.to_ascii_lowercase().as_str() {
        "append" => false,
        "overwrite" => true,
        _ => return Err("The argument needs to be either 'append' or 'overwrite'".into()),
    };
    Ok(())
}

fn set_output(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.global.output = path(value);
    Ok(())
}

fn set_pid(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.global.pid = path(value);
    Ok(())
}

fn set_chroot(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.global.chroot = path(value);
    Ok(())
}

/// In the global part `setuid`/`setgid` are the user and group the process switches to;
/// in a section they own the service's Unix `accept` sockets.
/// With `Names::Skip` a name leaves the value unset (nothing runs under `--check`).
fn set_setuid(t: &mut Target<'_>, value: &str) -> Result<(), String> {
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

fn set_setgid(t: &mut Target<'_>, value: &str) -> Result<(), String> {
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

fn set_compression(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    match value.to_ascii_lowercase().as_str() {
        "deflate" | "zlib" => {
            t.global.compression = Some(value.to_ascii_lowercase());
            Ok(())
        }
        _ => Err("Specified compression type is not available".into()),
    }
}

fn set_delay(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.delay = values::yes_no(value)?;
    Ok(())
}

/// `OCSP = URL`: only the scheme and authority are checked here; `https://` is accepted
/// (stunnel does) but tls treats such a responder as giving no answer.
fn set_ocsp(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    super::url::ResponderUrl::parse(value)?;
    t.service.ocsp_url = Some(value.to_string());
    Ok(())
}

fn set_ocsp_aia(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.ocsp_aia = values::yes_no(value)?;
    Ok(())
}

/// Each line adds one flag; flags are never cleared (stunnel ORs them together).
fn add_ocsp_flag(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    let name = crate::openssl_names::ocsp_flag_name(value).ok_or("Illegal OCSP flag")?;
    t.service.ocsp_flags.push(name);
    Ok(())
}

fn set_ocsp_nonce(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.ocsp_nonce = values::yes_no(value)?;
    Ok(())
}

fn set_ocsp_require(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.ocsp_require = values::yes_no(value)?;
    Ok(())
}

fn set_failover(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.failover_rr = match value.to_ascii_lowercase().as_str() {
        "rr" => true,
        "prio" => false,
        _ => return Err("The argument needs to be either 'rr' or 'prio'".into()),
    };
    Ok(())
}

/// `local = HOST`: resolved now, as stunnel does; the first address is used.
fn set_local(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let ip = (value, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or("Failed to resolve local address")?
        .ip();
    t.service.local = Some(ip);
    Ok(())
}

fn set_log_id(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.log_id = match value.to_ascii_lowercase().as_str() {
        "sequential" => LogId::Sequential,
        "unique" => LogId::Unique,
        "thread" => LogId::Thread,
        "process" => LogId::Process,
        _ => return Err("Invalid connection identifier type".into()),
    };
    Ok(())
}

fn set_max_connections(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.max_connections = values::integer(value)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or("Illegal connection limit")?;
    Ok(())
}

fn set_exec(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.exec = path(value);
    Ok(())
}

/// Split on blanks, no quoting, as stunnel; the first word is argv[0].
fn set_exec_args(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.exec_args = value.split_whitespace().map(str::to_string).collect();
    Ok(())
}

fn set_pty(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.pty = values::yes_no(value)?;
    Ok(())
}

/// `retry = yes` (1000 ms), `no`, or a delay in milliseconds (stunnel 5.7x).
fn set_retry(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.retry = match values::yes_no(value) {
        Ok(true) => Some(Duration::from_millis(1000)),
        Ok(false) => None,
        Err(_) => {
            let ms = values::integer(value)
                .and_then(|n| u64::try_from(n).ok())
                .ok_or("The argument needs to be either 'yes', 'no' or a number of milliseconds")?;
            Some(Duration::from_millis(ms))
        }
    };
    Ok(())
}

fn set_protocol(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.protocol = Some(
        super::protocol_names::find(value)
            .ok_or("Unsupported protocol")?
            .name,
    );
    Ok(())
}

fn set_protocol_authentication(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    let known = ["basic", "ntlm", "plain", "login"];
    let name = known
        .iter()
        .find(|k| k.eq_ignore_ascii_case(value))
        .ok_or("Unsupported authentication type")?;
    t.service.protocol_authentication = Some(name);
    Ok(())
}

fn set_protocol_domain(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.protocol_domain = Some(value.to_string());
    Ok(())
}

fn add_protocol_header(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.protocol_headers.push(value.to_string());
    Ok(())
}

fn set_protocol_host(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.protocol_host = Some(value.to_string());
    Ok(())
}

fn set_protocol_password(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.protocol_password = Some(value.to_string());
    Ok(())
}

fn set_protocol_username(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.protocol_username = Some(value.to_string());
    Ok(())
}

fn add_redirect(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.redirect.push(value.to_string());
    Ok(())
}

/// `transparent = none|source|destination|both` (`no` = none, `yes` = source).
fn set_transparent(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    let (source, destination) = match value.to_ascii_lowercase().as_str() {
        "none" | "no" => (false, false),
        "source" | "yes" => (true, false),
        "destination" => (false, true),
        "both" => (true, true),
        _ => return Err("Selected transparent proxy mode is not available".into()),
    };
    t.service.transparent_source = source;
    t.service.transparent_destination = destination;
    Ok(())
}

fn set_pause_when_down(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.pause_when_down = values::yes_no(value)?;
    Ok(())
}

fn set_reset(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.reset = values::yes_no(value)?;
    Ok(())
}

fn set_session_resume(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.session_resume = values::yes_no(value)?;
    Ok(())
}

fn set_psk_identity(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.psk_identity = (!value.is_empty()).then(|| value.to_string());
    Ok(())
}

fn set_psk_secrets(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.psk_secrets = path(value);
    Ok(())
}

fn set_crl_file(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.crl_file = path(value);
    Ok(())
}

fn set_crl_path(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.crl_path = path(value);
    Ok(())
}

fn set_syslog(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.global.syslog = values::yes_no(value)?;
    Ok(())
}

fn add_accept(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.accept.push(value.to_string());
    Ok(())
}

fn add_connect(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.connect.push(value.to_string());
    Ok(())
}

fn set_ca_file(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.ca_file = path(value);
    Ok(())
}

fn set_ca_path(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.ca_path = path(value);
    Ok(())
}

fn set_cert(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.cert = path(value);
    Ok(())
}

fn set_key(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.key = path(value);
    Ok(())
}

fn add_check_email(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.check_email.push(value.to_string());
    Ok(())
}

fn add_check_host(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.check_host.push(value.to_string());
    Ok(())
}

fn add_check_ip(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    value
        .parse::<std::net::IpAddr>()
        .map_err(|_| String::from("Invalid IP address"))?;
    t.service.check_ip.push(value.to_string());
    Ok(())
}

fn set_ciphers(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.ciphers = Some(value.to_string());
    Ok(())
}

fn set_ciphersuites(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.ciphersuites = Some(value.to_string());
    Ok(())
}

fn set_client(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.client = values::yes_no(value)?;
    Ok(())
}

fn set_curves(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.curves = Some(value.to_string());
    Ok(())
}

fn set_debug(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    let (facility, level) = values::debug(value, t.in_global_part)?;
    if let Some(facility) = facility {
        t.global.facility = facility;
    }
    t.service.debug_level = level;
    Ok(())
}

fn add_ssl_option(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    let (set, name) = match value.strip_prefix('-') {
        Some(name) => (false, name),
        None => (true, value),
    };
    let name = crate::openssl_names::ssl_option(name)?;
    t.service.ssl_options.push(SslOptionEdit { name, set });
    Ok(())
}

fn set_renegotiation(_: &mut Target<'_>, value: &str) -> Result<(), String> {
    match values::yes_no(value)? {
        false => Ok(()),
        true => Err(
            "option 'renegotiation = yes' is not supported: rstunnel always refuses renegotiation"
                .into(),
        ),
    }
}

fn set_require_cert(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    let on = values::yes_no(value)?;
    t.service.verify.require_cert = on;
    if on {
        t.service.verify.request_cert = true;
    }
    Ok(())
}

fn set_security_level(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    match values::integer(value) {
        Some(level @ 0..=5) => {
            t.service.security_level = Some(level as u32);
            Ok(())
        }
        _ => Err("Invalid security level".into()),
    }
}

fn set_service(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    // In a section the name only matters to libwrap, which rstunnel leaves off (its
    // default), so only the global value (the syslog ident) has an effect.
    if t.in_global_part {
        t.global.service_name = value.to_string();
    }
    Ok(())
}

fn set_session_cache_size(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    let size = values::integer(value)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or("Illegal session cache size")?;
    t.service.session_cache_size = size;
    Ok(())
}

fn set_session_cache_timeout(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    let secs = values::integer(value)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or("Illegal session cache timeout")?;
    t.service.session_cache_timeout = Duration::from_secs(secs);
    Ok(())
}

fn set_sni(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.sni = Some(value.to_string());
    Ok(())
}

fn add_socket_option(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.socket_options.push(super::sockopt::parse(value)?);
    Ok(())
}

fn set_ssl_version(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    let version = values::tls_version(value)?;
    t.service.ssl_version_min = version;
    t.service.ssl_version_max = version;
    Ok(())
}

fn set_ssl_version_max(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.ssl_version_max = values::tls_version(value)?;
    Ok(())
}

fn set_ssl_version_min(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.ssl_version_min = values::tls_version(value)?;
    Ok(())
}

/// Below this a thread cannot run OpenSSL's handshake code safely.
const MIN_STACK: usize = 16384;

fn set_stack(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    let bytes = values::integer(value)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n >= MIN_STACK)
        .ok_or("Illegal thread stack size")?;
    t.service.stack = bytes;
    Ok(())
}

fn timeout(value: &str, what: &str) -> Result<Duration, String> {
    values::seconds(value, what).map(Duration::from_secs)
}

fn set_timeout_busy(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.timeouts.busy = timeout(value, "busy")?;
    Ok(())
}

fn set_timeout_close(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.timeouts.close = timeout(value, "close")?;
    Ok(())
}

fn set_timeout_connect(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.timeouts.connect = timeout(value, "connect")?;
    Ok(())
}

fn set_timeout_idle(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.timeouts.idle = timeout(value, "idle")?;
    Ok(())
}

fn set_timeout_ocsp(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    t.service.timeouts.ocsp = timeout(value, "OCSP")?;
    Ok(())
}

/// `verify = 0..4`, stunnel's legacy level that sets all four flags.
fn set_verify(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    let (request_cert, require_cert, chain, peer) = match values::integer(value) {
        Some(0) => (true, false, false, false),
        Some(1) => (true, false, true, false),
        Some(2) => (true, true, true, false),
        Some(3) => (true, true, true, true),
        Some(4) => (true, true, false, true),
        _ => return Err("Bad verify level".into()),
    };
    t.service.verify = VerifyFlags {
        request_cert,
        require_cert,
        chain,
        peer,
    };
    Ok(())
}

fn set_verify_chain(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    let on = values::yes_no(value)?;
    t.service.verify.chain = on;
    if on {
        t.service.verify.request_cert = true;
        t.service.verify.require_cert = true;
    }
    Ok(())
}

fn set_verify_peer(t: &mut Target<'_>, value: &str) -> Result<(), String> {
    let on = values::yes_no(value)?;
    t.service.verify.peer = on;
    if on {
        t.service.verify.request_cert = true;
        t.service.verify.require_cert = true;
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
        let Handler::Set(setter) = spec.handler else {
            return Err("not settable".into());
        };
        setter(
            &mut Target {
                global: &mut global,
                service: &mut service,
                in_global_part: true,
                names: Names::LookUp,
                not_checked: None,
            },
            value,
        )?;
        Ok((global, service))
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
            let (Handler::Set(_), Some(default)) = (spec.handler, spec.default) else {
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
        assert!(s.verify.request_cert && s.verify.require_cert && s.verify.chain && !s.verify.peer);
        let (_, s) = apply("verify", "4").unwrap();
        assert!(s.verify.peer && !s.verify.chain);
        assert_eq!(apply("verify", "5").unwrap_err(), "Bad verify level");
    }

    #[test]
    fn verify_chain_implies_require_cert() {
        let (_, s) = apply("verifyChain", "yes").unwrap();
        assert!(s.verify.chain && s.verify.require_cert && s.verify.request_cert);
    }

    #[test]
    fn ssl_version_sets_both_bounds() {
        use super::super::values::TlsVersion;
        let (_, s) = apply("sslVersion", "TLSv1.2").unwrap();
        assert_eq!(s.ssl_version_min, Some(TlsVersion::Tls1_2));
        assert_eq!(s.ssl_version_max, Some(TlsVersion::Tls1_2));
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

    #[test]
    fn options_names_and_clearing() {
        let (_, s) = apply("options", "-NO_SSLv3").unwrap();
        assert_eq!(
            s.ssl_options,
            vec![SslOptionEdit {
                name: "NO_SSLv3",
                set: false
            }]
        );
        let (_, s) = apply("options", "no_tlsv1").unwrap();
        assert_eq!(s.ssl_options[0].name, "NO_TLSv1");
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
            apply("securityLevel", "0").unwrap().1.security_level,
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
            s.ocsp_url.as_deref(),
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
        assert!(apply("OCSPaia", "yes").unwrap().1.ocsp_aia);
        assert!(!apply("OCSPaia", "no").unwrap().1.ocsp_aia);
        assert!(apply("OCSPnonce", "YES").unwrap().1.ocsp_nonce);
        assert!(!apply("OCSPrequire", "no").unwrap().1.ocsp_require);
        assert!(apply("OCSPrequire", "yes").unwrap().1.ocsp_require);
        for name in ["OCSPaia", "OCSPnonce", "OCSPrequire"] {
            assert!(apply(name, "maybe").is_err(), "{name}");
        }
    }

    #[test]
    fn ocsp_flags_by_name_and_cumulative() {
        let (_, s) = apply("OCSPflag", "noverify").unwrap();
        assert_eq!(s.ocsp_flags, vec!["NOVERIFY"]);
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
        assert_eq!(service.ocsp_flags, vec!["NOCERTS", "TRUSTOTHER"]);
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
