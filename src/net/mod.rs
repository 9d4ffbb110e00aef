//! Sockets: address syntax and resolution (`addr`), listening (`listen`), outgoing
//! connections with a deadline (`connect`), and `Stream`, the one socket type the session
//! and relay see. Knows nothing about TLS.

pub mod addr;
pub mod connect;
pub mod listen;
pub mod sockopt;
mod stream;

pub use addr::{display_addr, Addr, Endpoint};
pub use stream::Stream;

/// Makes close() of `fd` send RST instead of FIN (SO_LINGER with a zero timeout).
pub fn set_linger_reset(fd: std::os::fd::RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads a valid linger struct; a bad fd only makes it fail.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}
