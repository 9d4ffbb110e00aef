//! Configuration errors, typed, each displayed the way stunnel prints it, so that users and
//! scripts that grep stunnel's messages find the same text.
//!
//! Layers wrap, they do not format: a value parser (`values`, the option table's setters)
//! says what was wrong with a value (`ValueError`), the parser wraps that with the line it
//! came from (`LineError` inside `ConfigError::Line`), and the text is made once, here,
//! when the error is displayed where it is reported.

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
    Service { name: String, message: String },
    /// The global part failed its checks: `Global options: message`.
    Global { message: String },
    /// A global TLS setting cannot be applied: stunnel prints the cause on its own line,
    /// then `Global options: Failed to initialize TLS`.
    GlobalTls { cause: String },
    /// A file without sections (inetd mode) failed its checks: `Inetd mode: message`.
    Inetd { message: String },
}

impl ConfigError {
    /// A line stunnel prints before this error (its cause), if any.
    pub fn cause(&self) -> Option<&str> {
        match self {
            ConfigError::GlobalTls { cause } => Some(cause),
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
            ConfigError::Service { name, message } => write!(f, "Service [{name}]: {message}"),
            ConfigError::Global { message } => write!(f, "Global options: {message}"),
            ConfigError::GlobalTls { .. } => write!(f, "Global options: Failed to initialize TLS"),
            ConfigError::Inetd { message } => write!(f, "Inetd mode: {message}"),
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
