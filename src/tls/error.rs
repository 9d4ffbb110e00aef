//! `TlsSetupError`: why a service's TLS context could not be built (a file, a setting,
//! OpenSSL's reason). Built by every part of `tls/` that loads or sets something at
//! startup; a leaf of `tls/`, so those parts need not import each other for it. Never
//! made per connection.

use std::fmt;

use openssl::error::ErrorStack;

/// Why a service's TLS context could not be built. Displayed as one line naming the file
/// or setting and OpenSSL's reason.
#[derive(Debug)]
pub struct TlsSetupError {
    pub what: String,
    pub source: Option<ErrorStack>,
}

impl TlsSetupError {
    pub(crate) fn new(what: impl Into<String>, source: ErrorStack) -> Self {
        TlsSetupError {
            what: what.into(),
            source: Some(source),
        }
    }
    pub(crate) fn plain(what: impl Into<String>) -> Self {
        TlsSetupError {
            what: what.into(),
            source: None,
        }
    }
}

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.what)?;
        if let Some(stack) = &self.source {
            for e in stack.errors() {
                write!(f, ": {}", e.reason().unwrap_or("unknown OpenSSL error"))?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for TlsSetupError {}
