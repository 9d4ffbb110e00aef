//! Key material on disk: stunnel's warning about a key file that others can read. A leaf of
//! `tls/` (used by `context` for keys and by `psk` for secrets files); reads metadata only.

/// stunnel's LOG4 `Insecure file permissions on FILE` for key material others can read.
pub fn warn_if_world_readable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o007 != 0 {
            log_warning!("Insecure file permissions on {}", path.display());
        }
    }
}
