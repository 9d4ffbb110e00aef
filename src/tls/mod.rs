//! TLS: OpenSSL contexts built from a service's options (`context`), peer-certificate
//! policy (`verify`), and the version-specific bits (`compat`). Certificates and keys are
//! loaded here at startup, so a bad file is a startup error, never a per-connection
//! surprise. Performs no socket I/O.

pub mod compat;
pub mod context;
pub mod error;
mod files;
mod names;
pub mod ocsp;
pub mod psk;
pub mod verify;

pub use context::{build_context, describe_session, sni_matches, ServiceTls, VirtualHost};
pub use error::TlsSetupError;
