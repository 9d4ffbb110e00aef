//! Scratch files and configurations for the sandbox's unit tests (test code only).

use std::path::{Path, PathBuf};

use crate::config::Config;

pub(super) fn config(text: &str) -> Config {
    crate::config::parse_bytes("t.conf", text.as_bytes()).expect("valid")
}

/// A directory of its own under the temp dir for one test.
pub(super) fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rstunnel-sandbox-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(super) fn executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}
