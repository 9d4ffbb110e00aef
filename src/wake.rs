//! Waking a thread out of `poll`. Never blocks.
//!
//! * `WakeFd`: an eventfd that one thread writes and another polls. Listeners use it for
//!   their stop signal.
//! * `ThreadWaker`: the relay's pumps, one per pump and no file descriptor. An eventfd per
//!   pump would double a session's descriptors (two sockets, two eventfds), and with them
//!   halve the sessions a process holds under a given `ulimit -n`. The kick is a signal
//!   (`WAKE_SIGNAL`) sent to the thread with `pthread_kill`; the pump keeps it blocked
//!   except inside `ppoll`, which unblocks it atomically for the wait. A kick that lands
//!   while the pump is busy stays pending and ends its next `ppoll` at once, so no kick is
//!   ever lost; a non-real-time signal is pending at most once, so kicks never pile up.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

#[derive(Debug)]
pub struct WakeFd {
    fd: OwnedFd,
}

impl WakeFd {
    pub fn new() -> io::Result<WakeFd> {
        // SAFETY: eventfd has no pointer arguments; a non-negative result is a new fd we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by eventfd and is owned by nobody else.
        Ok(WakeFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Makes the fd readable until `drain`; cheap enough to call after every event.
    pub fn kick(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our own eventfd. A full counter
        // (EAGAIN) still leaves it readable, which is all a kick needs.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Clears the readable state.
    pub fn drain(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from our own non-blocking eventfd.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
    }
}

/// The signal of [`ThreadWaker`]. SIGURG is ignored by default, so one that strayed to a
/// thread not waiting for it would do nothing, and the kernel only sends it on its own to
/// a socket's owner (F_SETOWN), which rstunnel never sets.
const WAKE_SIGNAL: libc::c_int = libc::SIGURG;

/// Wakes one thread out of [`ThreadWaker::poll`]; see the module header.
pub struct ThreadWaker {
    /// The waiting thread and the signal mask for its waits, while it is attached.
    /// `kick` signals under this lock, and `detach` clears it, so a thread that has
    /// exited is never signalled.
    waiter: std::sync::Mutex<Option<(libc::pthread_t, libc::sigset_t)>>,
    /// Whether `attach` added the wake signal to the thread's blocked set, so `detach`
    /// gives the thread its mask back as it was.
    blocked_by_attach: std::sync::atomic::AtomicBool,
}

// SAFETY: pthread_t and sigset_t are plain values; they are only read and written under
// the mutex, and pthread_kill may be called from any thread.
unsafe impl Send for ThreadWaker {}
// SAFETY: as above.
unsafe impl Sync for ThreadWaker {}

extern "C" fn on_wake_signal(_: libc::c_int) {
    // Nothing: the signal only has to end a ppoll.
}

/// Installs the no-op handler once: the default action of SIGURG is to ignore it, and an
/// ignored signal does not interrupt ppoll.
fn install_wake_handler() -> io::Result<()> {
    static INSTALLED: std::sync::OnceLock<Result<(), i32>> = std::sync::OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        // SAFETY: a zeroed sigaction with a valid handler and an empty mask is a valid
        // argument; the handler is async-signal-safe (it does nothing).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_wake_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            action.sa_flags = libc::SA_RESTART;
            if libc::sigaction(WAKE_SIGNAL, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
            }
        }
        Ok(())
    });
    result.map_err(io::Error::from_raw_os_error)
}

impl ThreadWaker {
    pub fn new() -> ThreadWaker {
        ThreadWaker {
            waiter: std::sync::Mutex::new(None),
            blocked_by_attach: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn waiter(&self) -> std::sync::MutexGuard<'_, Option<(libc::pthread_t, libc::sigset_t)>> {
        self.waiter.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the calling thread the one this waker wakes: blocks the wake signal in it
    /// (from now on it arrives only inside [`poll`](Self::poll)). Call before the first
    /// wait, and [`detach`](Self::detach) before the thread ends.
    pub fn attach(&self) -> io::Result<()> {
        install_wake_handler()?;
        // SAFETY: the sigset_t values are initialised by sigemptyset/pthread_sigmask
        // before use; pthread_self has no preconditions.
        unsafe {
            let mut block: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut block);
            libc::sigaddset(&mut block, WAKE_SIGNAL);
            let mut previous: libc::sigset_t = std::mem::zeroed();
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut previous);
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            let was_blocked = libc::sigismember(&previous, WAKE_SIGNAL) == 1;
            self.blocked_by_attach
                .store(!was_blocked, std::sync::atomic::Ordering::SeqCst);
            // Waits run with the thread's usual mask, the wake signal let through.
            libc::sigdelset(&mut previous, WAKE_SIGNAL);
            *self.waiter() = Some((libc::pthread_self(), previous));
        }
        Ok(())
    }

    /// Ends the attachment; kicks after this do nothing. Must be called by the attached
    /// thread, which gets its signal mask back (a pump may have run on a thread that
    /// lives on, when no thread could be spawned for it).
    pub fn detach(&self) {
        let attached = self.waiter().take().is_some();
        if attached
            && self
                .blocked_by_attach
                .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            // SAFETY: a valid sigset_t built by sigemptyset/sigaddset; a pending kick is
            // delivered to the no-op handler, which is harmless.
            unsafe {
                let mut unblock: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut unblock);
                libc::sigaddset(&mut unblock, WAKE_SIGNAL);
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &unblock, std::ptr::null_mut());
            }
        }
    }

    /// Wakes the attached thread from its current or next `poll`.
    pub fn kick(&self) {
        if let Some((thread, _)) = *self.waiter() {
            // SAFETY: `thread` is attached, hence alive (it detaches before it ends, and
            // that waits for this lock).
            unsafe { libc::pthread_kill(thread, WAKE_SIGNAL) };
        }
    }

    /// Polls `fds` for at most `timeout` (None: forever) or until kicked. Returns the
    /// number of ready fds; 0 on timeout or kick (the caller re-checks its state either
    /// way). Must be called by the attached thread.
    pub fn poll(
        &self,
        fds: &mut [libc::pollfd],
        timeout: Option<std::time::Duration>,
    ) -> io::Result<usize> {
        let Some((_, mask)) = *self.waiter() else {
            return poll(fds, timeout);
        };
        let spec = timeout.map(|t| libc::timespec {
            tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
        });
        let spec_ptr = spec
            .as_ref()
            .map_or(std::ptr::null(), |s| s as *const libc::timespec);
        // SAFETY: fds is a valid slice for its length; spec_ptr is null or points to a
        // live timespec; mask is a valid sigset_t.
        let n =
            unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, spec_ptr, &mask) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0); // kicked (or another signal): the caller looks again
        }
        Err(e)
    }
}

impl Default for ThreadWaker {
    fn default() -> ThreadWaker {
        ThreadWaker::new()
    }
}

impl AsRawFd for WakeFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Polls `fds` for at most `timeout` (None: forever), retrying on EINTR. Returns the
/// number of ready fds (0 on timeout).
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<std::time::Duration>) -> io::Result<usize> {
    let ms = match timeout {
        None => -1,
        // Rounded up, so that a wait never ends just before its deadline.
        Some(t) => {
            libc::c_int::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(libc::c_int::MAX)
        }
    };
    loop {
        // SAFETY: fds is a valid slice of pollfd for the length given.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

pub fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}
