//! TLS: OpenSSL contexts built from a service's options (`context`), peer-certificate
//! policy (`verify`), and the version-specific bits (`compat`). Certificates and keys are
//! loaded here at startup, so a bad file is a startup error, never a per-connection
//! surprise. Performs no socket I/O.

pub mod compat;
pub mod context;
pub mod ocsp;
pub mod psk;
pub mod verify;

pub use context::{
    build_context, describe_session, sni_matches, ServiceTls, TlsSetupError, VirtualHost,
};

/// stunnel's LOG4 `Insecure file permissions on FILE` for key material others can read.
pub fn warn_if_world_readable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o007 != 0 {
            log_warning!("Insecure file permissions on {}", path.display());
        }
    }
}
