//! Process-level steps of startup (docs/ARCHITECTURE.md, Startup): going into the
//! background, /dev/null, the pid file, chroot, the group and user switch, and systemd's
//! notify socket (`READY=1`, `RELOADING=1`, `STOPPING=1`). `daemonize` must run before any
//! thread exists (fork copies only the calling thread).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// /dev/null, opened before any chroot so that a jail needs no device nodes.
pub struct DevNull(std::os::fd::OwnedFd);

impl DevNull {
    pub fn open() -> io::Result<DevNull> {
        Ok(DevNull(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")?
                .into(),
        ))
    }
}

/// Forks into the background: the parent exits 0, the child continues in a new session
/// with its working directory at `/` and stdio on `null`.
pub fn daemonize(null: &DevNull) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: daemon() forks; the caller guarantees no other thread exists yet. With
    // noclose = 1 it leaves stdio alone; we point it at the /dev/null we opened.
    if unsafe { libc::daemon(0, 1) } != 0 {
        return Err(io::Error::last_os_error());
    }
    for fd in 0..=2 {
        // SAFETY: dup2 between valid descriptors.
        if unsafe { libc::dup2(null.0.as_raw_fd(), fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
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

/// `chroot = DIR`: confines the process to DIR (after binding, before dropping
/// privileges), then moves into its root.
pub fn enter_chroot(dir: &Path) -> io::Result<()> {
    let c_dir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: chroot with a valid NUL-terminated path.
    if unsafe { libc::chroot(c_dir.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    std::env::set_current_dir("/")
}

/// `setgid`/`setuid`: switches group (which also becomes the only supplementary group)
/// and then user, in that order since a non-root user can no longer change groups. When
/// only the user is given, root's supplementary groups are dropped too.
pub fn drop_privileges(gid: Option<libc::gid_t>, uid: Option<libc::uid_t>) -> io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: plain system calls with valid arguments (a one-element array for setgroups).
    unsafe {
        if let Some(gid) = gid {
            check(libc::setgroups(1, &gid))?;
            check(libc::setgid(gid))?;
        } else if uid.is_some() {
            check(libc::setgroups(0, std::ptr::null()))?;
        }
        if let Some(uid) = uid {
            check(libc::setuid(uid))?;
        }
    }
    Ok(())
}

/// The socket to systemd, connected before any chroot (the path would be unreachable
/// from inside the jail afterwards).
static NOTIFY: std::sync::OnceLock<Option<std::os::unix::net::UnixDatagram>> =
    std::sync::OnceLock::new();

fn connect_notify_socket() -> Option<std::os::unix::net::UnixDatagram> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let target = std::env::var_os("NOTIFY_SOCKET")?
        .to_string_lossy()
        .into_owned();
    let addr = match target.strip_prefix('@') {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes()),
        None => SocketAddr::from_pathname(&target),
    };
    let socket = UnixDatagram::unbound().ok()?;
    match addr.and_then(|addr| socket.connect_addr(&addr)) {
        Ok(()) => Some(socket),
        Err(e) => {
            log_warning!("NOTIFY_SOCKET {target}: {e}");
            None
        }
    }
}

/// Connects to systemd's notify socket if `NOTIFY_SOCKET` is set. Call before chroot.
pub fn prepare_systemd_notify() {
    NOTIFY.get_or_init(connect_notify_socket);
}

/// Tells systemd about a state change (`READY=1`, `RELOADING=1`, `STOPPING=1`) when it
/// started us as a `Type=notify` service (`NOTIFY_SOCKET` set); otherwise does nothing.
pub fn notify_systemd(state: &str) {
    if let Some(socket) = NOTIFY.get_or_init(connect_notify_socket) {
        if let Err(e) = socket.send(state.as_bytes()) {
            log_warning!("sd_notify {state}: {e}");
        }
    }
}

/// Whether systemd supervises us as a notify service; then rstunnel never forks.
pub fn under_systemd_notify() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}
