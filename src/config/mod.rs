//! Configuration: stunnel.conf text in, a typed `Config` out.
//!
//! Three named stages (docs/ARCHITECTURE.md, Modules): `lexer` turns bytes into `RawLine`s,
//! `parse` applies the option table (`options`) into `types::Config` with inheritance and
//! stunnel's checks, and the runtime (in `service`/`tls`) builds sockets and TLS contexts
//! from it. Files: the configuration and its include directories only; no certificate is
//! loaded and no socket is bound or connected here. Two kinds of lookup happen while
//! parsing, as in stunnel: `setuid`/`setgid` names in the user database (skipped with
//! `Names::Skip`) and `local = HOST`, resolved to an address by the system resolver (which
//! may ask DNS). Of OpenSSL only the names of its settings are used
//! (`crate::openssl_names`). It imports only leaf modules (`log`, `openssl_names`), so
//! every other layer may take its types.

pub mod error;
pub mod lexer;
pub mod options;
mod parse;
pub mod protocol_names;
pub mod sockopt;
pub mod types;
pub mod url;
pub mod values;

#[cfg(test)]
mod tests;

pub use error::ConfigError;
pub use options::Names;
pub use types::{Config, Foreground, GlobalOptions, ServiceOptions, TlsOptions};

use std::path::Path;

/// Reads and parses the configuration file at `path`. Errors name the file as given,
/// made absolute (stunnel prints the realpath).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with(path, Names::LookUp)
}

/// `load`, choosing whether `setuid`/`setgid` names are looked up on this host
/// (`Names::Skip` for `--check --no-files`).
pub fn load_with(path: &Path, names: Names) -> Result<Config, ConfigError> {
    let invalid = |e: std::io::Error| ConfigError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let absolute = std::fs::canonicalize(path).map_err(invalid)?;
    let bytes = if absolute.is_dir() {
        // stunnel reads a directory as an empty file, which is inetd mode.
        Vec::new()
    } else {
        std::fs::read(&absolute).map_err(invalid)?
    };
    parse::parse(&absolute.to_string_lossy(), &bytes, names)
}

/// Parses configuration text that did not come from a file (`-fd N`, tests).
pub fn parse_bytes(name: &str, bytes: &[u8]) -> Result<Config, ConfigError> {
    parse_bytes_with(name, bytes, Names::LookUp)
}

/// `parse_bytes` with a choice of `Names`.
pub fn parse_bytes_with(name: &str, bytes: &[u8], names: Names) -> Result<Config, ConfigError> {
    parse::parse(name, bytes, names)
}
