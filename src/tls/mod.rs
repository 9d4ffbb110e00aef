//! TLS: OpenSSL contexts built from a service's `config::TlsOptions` and the few facts
//! about the service in `facts::ServiceFacts` (`context`; never the whole
//! `ServiceOptions`), peer-certificate
//! policy (`verify`), revocation checks and stapling (`ocsp`), pre-shared keys (`psk`), and
//! the version-specific bits (`compat`); `error`, `facts`, `files` and `names` are leaves the others
//! share. Certificates and keys are loaded here at startup, so a bad file is a startup
//! error, never a per-connection surprise. The one socket I/O is `ocsp`'s: HTTP to OCSP
//! responders, at startup (stapling) and inside handshakes.

pub mod compat;
pub mod context;
pub mod error;
mod facts;
mod files;
pub mod names;
pub mod ocsp;
pub mod psk;
pub mod verify;

pub use context::{build_context, describe_session, sni_matches, ServiceTls, VirtualHost};
pub use error::TlsSetupError;
pub use facts::{Role, ServiceFacts};
