//! How the process gives memory back, in one place. glibc keeps what is freed, per arena
//! (one per thread group, and a session has three threads), so without a policy the RSS
//! of a relay follows its peak, not its load. The policy:
//! * `tune_malloc`, at startup: a fixed high trim threshold, so that the 64 KiB buffers a
//!   relay frees and takes again at every pause do not cost page faults each time;
//! * `sessions_fell_to` / `sessions_rose_to`, from the session registry: a `malloc_trim`
//!   when the live count has halved since the last one;
//! * `trim_after_quiet`, from a relay pump idle for a second: a `malloc_trim` at most
//!   every two seconds;
//! * `release_unused_stack`, from a pump when it starts and when it goes quiet: the stack
//!   pages below its frame go back (relay rule 9 keeps an idle session's buffers at zero);
//! * `heap_usage`, for SIGUSR2 and the soak's leak check.
//!
//! Owns the allocator calls (`mallopt`, `malloc_trim`, `mallinfo2`) and `madvise` on
//! thread stacks. Must not know about sessions, sockets or TLS: callers say when.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

/// glibc hands the top of a heap back to the system as soon as it exceeds 128 KiB of free
/// space, and takes it again on the next allocation. A relay frees and allocates 64 KiB
/// buffers (its own, and OpenSSL's with RELEASE_BUFFERS) at every pause in a transfer, so
/// that default turns into page faults on every cycle, depending on where the buffers land.
/// A fixed high threshold stops that; memory still goes back, in bulk, through the
/// `malloc_trim` the session registry runs when the session count halves (`sessions_fell_to`).
pub fn tune_malloc() {
    const TRIM_THRESHOLD: libc::c_int = 64 << 20;
    // SAFETY: mallopt only sets an allocator parameter; called before any thread exists.
    unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) };
}

/// Hands free heap pages back to the system when sessions go quiet, at most once per
/// `QUIET_TRIM_INTERVAL_MS`: a relay pump idle for a second has given back its buffer and
/// stack, and glibc (with the high trim threshold of `tune_malloc`) would keep the pages.
pub fn trim_after_quiet() {
    const QUIET_TRIM_INTERVAL_MS: u64 = 2000;
    static LAST_MS: AtomicU64 = AtomicU64::new(0);
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let now = u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(QUIET_TRIM_INTERVAL_MS);
    let last = LAST_MS.load(Ordering::SeqCst);
    if now.saturating_sub(last) >= QUIET_TRIM_INTERVAL_MS
        && LAST_MS
            .compare_exchange(last, now, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    {
        // SAFETY: malloc_trim has no preconditions; it only returns free pages.
        unsafe { libc::malloc_trim(0) };
    }
}

/// What the allocator holds, for SIGUSR2's listing and the soak's leak check: `in_use` is
/// what the program has allocated and not freed; `held` is what glibc keeps for it (in use
/// plus free chunks in its arenas). RSS alone cannot tell a leak from arena fragmentation:
/// with a pair of threads per session, freed chunks scatter over glibc's per-thread arenas
/// and RSS creeps up for a long time while `in_use` stays flat; a leak moves `in_use`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapUsage {
    pub in_use: u64,
    pub held: u64,
}

/// The allocator's totals over all its arenas, or `None` where the C library is not glibc.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn heap_usage() -> Option<HeapUsage> {
    type Mallinfo2 = unsafe extern "C" fn() -> libc::mallinfo2;
    // mallinfo2 (size_t fields) is glibc 2.33+; the old distributions this runs on have only
    // mallinfo, whose int fields wrap at 2 GiB. Look it up at run time so one binary runs on
    // both. glibc's RTLD_DEFAULT is the null handle.
    // SAFETY: dlsym with a NUL-terminated name only reads the loaded symbol tables.
    let sym = unsafe { libc::dlsym(std::ptr::null_mut(), c"mallinfo2".as_ptr()) };
    let (in_use, mmapped, free) = if sym.is_null() {
        // SAFETY: mallinfo takes no arguments and only reads the arenas under their locks.
        #[allow(deprecated)]
        let m = unsafe { libc::mallinfo() };
        let n = |v: libc::c_int| u64::from(v as libc::c_uint);
        (n(m.uordblks), n(m.hblkhd), n(m.fordblks))
    } else {
        // SAFETY: the symbol named mallinfo2 in glibc has exactly this signature.
        let f: Mallinfo2 = unsafe { std::mem::transmute::<*mut libc::c_void, Mallinfo2>(sym) };
        // SAFETY: as mallinfo: no arguments, reads the arenas under their locks.
        let m = unsafe { f() };
        (m.uordblks as u64, m.hblkhd as u64, m.fordblks as u64)
    };
    Some(HeapUsage {
        in_use: in_use + mmapped,
        held: in_use + mmapped + free,
    })
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn heap_usage() -> Option<HeapUsage> {
    None
}

/// The live count at the last heap trim (or the peak since): memory is handed back each
/// time the count halves from there.
static TRIM_MARK: AtomicUsize = AtomicUsize::new(0);

/// After a burst of sessions ends, gives glibc's free heap pages back to the system.
/// glibc keeps freed memory in its arenas (one per thread group), so without this the
/// RSS after 10,000 sessions stays at the peak for good. `malloc_trim` walks every
/// arena, so it runs only when the live count has halved since the last trim (and at
/// zero) after at least a few dozen, not per session.
pub fn sessions_fell_to(remaining: usize) {
    // Small swings (a few dozen sessions coming and going) are not worth a walk of
    // every arena; what they free is reused by the next sessions anyway.
    const WORTH_TRIMMING: usize = 64;
    let mark = TRIM_MARK.load(Ordering::SeqCst);
    if mark >= WORTH_TRIMMING
        && remaining <= mark / 2
        && TRIM_MARK
            .compare_exchange(mark, remaining, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    {
        // SAFETY: malloc_trim has no preconditions; it only returns free pages.
        unsafe { libc::malloc_trim(0) };
    }
}

/// Records a new live count on admission, for [`sessions_fell_to`].
pub fn sessions_rose_to(live: usize) {
    TRIM_MARK.fetch_max(live, Ordering::SeqCst);
}

/// Gives back the pages of this thread's stack below the current frame. glibc reuses the
/// stacks of exited threads, still holding whatever the previous owner (often a session
/// thread deep in a handshake) touched, and a pump's own deepest moments (parsing TLS 1.3
/// tickets, logging) touch more than its idle self needs: called when a pump starts and
/// when it settles into a quiet spell, this keeps an idle pump at two or three pages.
#[inline(never)] // its own frame must be the deepest live one (see MARGIN)
pub fn release_unused_stack() {
    // Below the current frame, leave room for the calls made from here (madvise's own
    // frame included): nothing lives there.
    const MARGIN: usize = 2 * 1024;
    let page = 4096;
    let here = std::ptr::addr_of!(page) as usize;
    // SAFETY: pthread_getattr_np fills `attr` for the calling thread, which is destroyed
    // after use; the range passed to madvise lies inside this thread's own stack mapping,
    // below the live frames, where MADV_DONTNEED only drops pages nothing refers to.
    unsafe {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
        if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) != 0 {
            return;
        }
        let mut attr = attr.assume_init();
        let mut low: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let got = libc::pthread_attr_getstack(&attr, &mut low, &mut size);
        let mut guard: libc::size_t = 0;
        let _ = libc::pthread_attr_getguardsize(&attr, &mut guard);
        libc::pthread_attr_destroy(&mut attr);
        if got != 0 {
            return;
        }
        // pthread_attr_getstack reports the usable stack, above the guard page.
        let low = (low as usize + page - 1) & !(page - 1);
        let high = here.saturating_sub(MARGIN) & !(page - 1);
        if high > low {
            libc::madvise(low as *mut libc::c_void, high - low, libc::MADV_DONTNEED);
        }
    }
}
