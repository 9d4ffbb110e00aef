//! Process-level steps of startup (spec §4.1): going into the background and the pid file.
//! `daemonize` must run before any thread exists (fork copies only the calling thread).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Forks into the background: the parent exits 0, the child continues in a new session
/// with its working directory at `/` and stdio on /dev/null.
pub fn daemonize() -> io::Result<()> {
    // SAFETY: daemon() forks; the caller guarantees no other thread exists yet.
    if unsafe { libc::daemon(0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A pid file that removes itself when dropped (at clean exit).
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Replaces any old file with one holding `PID\n`, mode 0644.
    pub fn create(path: &Path) -> io::Result<PidFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)?;
        writeln!(file, "{}", std::process::id())?;
        Ok(PidFile {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
