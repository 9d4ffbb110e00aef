//! Configuration errors, typed, each displayed the way stunnel prints it, so that users and
//! scripts that grep stunnel's messages find the same text.

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
        message: String,
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
                message,
            } => write!(f, "{file}:{line}: \"{raw}\": {message}"),
            ConfigError::Service { name, message } => write!(f, "Service [{name}]: {message}"),
            ConfigError::Global { message } => write!(f, "Global options: {message}"),
            ConfigError::GlobalTls { .. } => write!(f, "Global options: Failed to initialize TLS"),
            ConfigError::Inetd { message } => write!(f, "Inetd mode: {message}"),
        }
    }
}

impl std::error::Error for ConfigError {}
