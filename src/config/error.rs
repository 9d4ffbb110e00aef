//! Configuration errors, typed, each displayed the way stunnel prints it, so that users and
//! scripts that grep stunnel's messages find the same text.
//!
//! Layers wrap, they do not format: a value parser (`values`, the option table's setters)
//! says what was wrong with a value (`ValueError`), the parser wraps that with the line it
//! came from (`LineError` inside `ConfigError::Line`); the end-of-part checks say which
//! rule a section broke (`CheckError`) and the parser wraps that with the section. The
//! text is made once, here, when the error is displayed where it is reported.

use std::fmt;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The configuration file itself cannot be read.
    File { path: String, reason: String },
    /// A line was rejected: `FILE:LINE: "RAW": message`.
    Line {
        file: Arc<str>,
        line: usize,
        raw: String,
        error: LineError,
    },
    /// A section failed its end-of-section checks: `Service [NAME]: message`.
    Service { name: String, error: CheckError },
    /// The global part failed its checks: `Global options: message`.
    Global { error: CheckError },
    /// A global TLS setting cannot be applied: stunnel prints the cause on its own line,
    /// then `Global options: Failed to initialize TLS`.
    GlobalTls { cause: CheckError },
    /// A file without sections (inetd mode) failed its checks: `Inetd mode: message`.
    Inetd { error: CheckError },
}

impl ConfigError {
    /// A line stunnel prints before this error (its cause), if any.
    pub fn cause(&self) -> Option<&str> {
        match self {
            ConfigError::GlobalTls { cause } => Some(cause.as_str()),
            _ => None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::File { path, reason } => {
                write!(f, "Invalid configuration file name \"{path}\": {reason}")
            }
            ConfigError::Line {
                file,
                line,
                raw,
                error,
            } => write!(f, "{file}:{line}: \"{raw}\": {error}"),
            ConfigError::Service { name, error } => write!(f, "Service [{name}]: {error}"),
            ConfigError::Global { error } => write!(f, "Global options: {error}"),
            ConfigError::GlobalTls { .. } => write!(f, "Global options: Failed to initialize TLS"),
            ConfigError::Inetd { error } => write!(f, "Inetd mode: {error}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why one line was refused (the part after `FILE:LINE: "RAW": `).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// Neither a comment, a `[section]` nor `name = value`.
    NoEquals,
    /// An unknown option, or a global-only one inside a section.
    NotValidHere,
    /// A row of the table that rstunnel does not implement (`Handler::NotYet`).
    NotYet(&'static str),
    /// A row the linked OpenSSL cannot support at all (`Handler::Engine` on OpenSSL 4.0),
    /// with the reason.
    Unavailable {
        name: &'static str,
        why: &'static str,
    },
    /// `include = DIR`: the directory or one of its files cannot be read.
    Include,
    /// `include` nested deeper than the parser allows (a directory including itself).
    IncludeTooDeep,
    /// The option's value was refused.
    Value(ValueError),
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::NoEquals => f.write_str("No '=' found"),
            LineError::NotValidHere => f.write_str("Specified option name is not valid here"),
            LineError::NotYet(name) => write!(f, "option '{name}' is not supported yet"),
            LineError::Unavailable { name, why } => {
                write!(f, "option '{name}' is not available: {why}")
            }
            LineError::Include => f.write_str("Failed to include directory"),
            LineError::IncludeTooDeep => {
                f.write_str("Failed to include directory: nested too deep")
            }
            LineError::Value(error) => error.fmt(f),
        }
    }
}

impl From<ValueError> for LineError {
    fn from(error: ValueError) -> Self {
        LineError::Value(error)
    }
}

/// What was wrong with one option value. The words are stunnel's: where stunnel names the
/// thing it refused (`Illegal busy timeout`, `Invalid protocol version`), the variant
/// carries that name, so that an option row can say it without a variant of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueError {
    /// Not one of the words the option takes (`yes`/`no`, `append`/`overwrite`, …):
    /// `The argument needs to be either 'a', 'b' or 'c'`.
    NotOneOf(&'static [&'static str]),
    /// `retry`: neither `yes`, `no` nor a number of milliseconds.
    NotYesNoOrMilliseconds,
    /// Not a whole number of seconds: `Illegal WHAT timeout`.
    Timeout(&'static str),
    /// A number out of range or a name not known, where stunnel says `Illegal WHAT`
    /// (`thread stack size`, `UID`, `debug level`).
    Illegal(&'static str),
    /// The same where stunnel says `Invalid WHAT` (`protocol version`, `IP address`).
    Invalid(&'static str),
    /// The same where stunnel says `Unsupported WHAT` (`protocol`, `authentication type`).
    Unsupported(&'static str),
    /// A value stunnel knows but cannot use here: `WHAT is not available`
    /// (`Specified compression type`, `Selected transparent proxy mode`).
    NotAvailable(&'static str),
    /// `verify` outside 0–4.
    BadVerifyLevel,
    /// `local = HOST` that does not resolve.
    LocalNotResolved,
    /// `fips = yes`: this build has no FIPS mode.
    FipsNotBuilt,
    /// `renegotiation = yes`: rstunnel always refuses renegotiation.
    RenegotiationRefused,
    /// Refused by the module that owns the value's syntax (`tls` for `options` and
    /// `OCSP`, `net` for `socket`), in its own words.
    Refused(String),
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueError::NotOneOf(words) => {
                f.write_str("The argument needs to be either ")?;
                for (i, word) in words.iter().enumerate() {
                    let separator = match i {
                        0 => "",
                        _ if i + 1 == words.len() => " or ",
                        _ => ", ",
                    };
                    write!(f, "{separator}'{word}'")?;
                }
                Ok(())
            }
            ValueError::NotYesNoOrMilliseconds => f.write_str(
                "The argument needs to be either 'yes', 'no' or a number of milliseconds",
            ),
            ValueError::Timeout(what) => write!(f, "Illegal {what} timeout"),
            ValueError::Illegal(what) => write!(f, "Illegal {what}"),
            ValueError::Invalid(what) => write!(f, "Invalid {what}"),
            ValueError::Unsupported(what) => write!(f, "Unsupported {what}"),
            ValueError::NotAvailable(what) => write!(f, "{what} is not available"),
            ValueError::BadVerifyLevel => f.write_str("Bad verify level"),
            ValueError::LocalNotResolved => f.write_str("Failed to resolve local address"),
            ValueError::FipsNotBuilt => f.write_str("FIPS mode is not available in this build"),
            ValueError::RenegotiationRefused => f.write_str(
                "option 'renegotiation = yes' is not supported: rstunnel always refuses renegotiation",
            ),
            ValueError::Refused(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for ValueError {}

/// The modules that own some values' syntax (`tls`, `net`) give their refusal as text.
impl From<String> for ValueError {
    fn from(message: String) -> Self {
        ValueError::Refused(message)
    }
}

/// Which end-of-part check failed (stunnel's checks when a section, the global part or an
/// inetd-mode file is complete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// Global part, daemon mode: `output` is a relative path.
    LogFileNotAbsolute,
    /// Global part, daemon mode: `pid` is a relative path.
    PidFileNotAbsolute,
    /// Global part: `compression` is set (the cause line of `GlobalTls`).
    CompressionUnsupported,
    /// A server with neither `cert` nor `PSKsecrets`.
    NoCertificate,
    /// `sslVersionMin` above `sslVersionMax`.
    VersionRange,
    /// A verify option on, but no CA to verify against.
    NoCa,
    /// `checkHost`/`checkEmail`/`checkIP` without `verifyChain` or `verifyPeer`.
    NoVerify,
    /// A server `sni = PRIMARY:PATTERN` whose primary is not an earlier server section.
    SniSectionNotFound,
    /// A server `sni` that is not `PRIMARY:PATTERN`.
    SniSyntax,
    /// `redirect` in a client section.
    RedirectInClient,
    /// `redirect` without a verify option.
    RedirectWithoutVerify,
    /// The `protocol` cannot be used this way, in the words of the module that owns the
    /// protocols (`protocol`) or of the parser's own protocol checks.
    Protocol(String),
    /// A section without a local and a remote endpoint.
    TwoEndpoints,
    /// Inetd mode: `accept` outside a section.
    AcceptInInetd,
    /// Inetd mode: not exactly one of `connect` and `exec`.
    InetdEndpoints,
}

impl CheckError {
    /// The message as stunnel prints it.
    pub fn as_str(&self) -> &str {
        match self {
            CheckError::LogFileNotAbsolute => "Log file must include full path name",
            CheckError::PidFileNotAbsolute => "Pid file must include full path name",
            CheckError::CompressionUnsupported => {
                "Configured compression is unsupported by OpenSSL"
            }
            CheckError::NoCertificate => "TLS server needs a certificate",
            CheckError::VersionRange => "Invalid protocol version range",
            CheckError::NoCa => r#"Either "CAengine", "CAfile" or "CApath" has to be configured"#,
            CheckError::NoVerify => r#"Either "verifyChain" or "verifyPeer" has to be enabled"#,
            CheckError::SniSectionNotFound => "SNI section name not found",
            CheckError::SniSyntax => {
                "Invalid SNI: 'sni = PRIMARY_SECTION:HOST_PATTERN' expected in a server section"
            }
            CheckError::RedirectInClient => "\"redirect\" is only available in server mode",
            CheckError::RedirectWithoutVerify => {
                r#""redirect" needs "verifyChain" or "verifyPeer""#
            }
            CheckError::Protocol(message) => message,
            CheckError::TwoEndpoints => "Each service must define two endpoints",
            CheckError::AcceptInInetd => "'accept' option is only allowed in a [section]",
            CheckError::InetdEndpoints => "Inetd mode must define one endpoint",
        }
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for CheckError {}
