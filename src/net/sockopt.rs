//! `socket = ...` options applied to sockets with setsockopt: the listening socket (`a`),
//! accepted connections (`l`, local) and outgoing connections (`r`, remote). The syntax,
//! the table of names and stunnel's defaults are `config::sockopt`'s; this file only sets
//! them.

use std::io;
use std::os::fd::RawFd;

use crate::config::sockopt::{SocketOption, Value, Which};

fn set(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: *const libc::c_void,
    len: usize,
) -> io::Result<()> {
    // SAFETY: `value` points to `len` readable bytes for the duration of the call.
    let rc = unsafe { libc::setsockopt(fd, level, name, value, len as libc::socklen_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl SocketOption {
    /// Sets the option on `fd`.
    pub fn apply(&self, fd: RawFd) -> io::Result<()> {
        match &self.value {
            Value::Int(n) => set(
                fd,
                self.level,
                self.optname,
                (n as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>(),
            ),
            Value::Linger { on, seconds } => {
                let linger = libc::linger {
                    l_onoff: libc::c_int::from(*on),
                    l_linger: *seconds,
                };
                set(
                    fd,
                    self.level,
                    self.optname,
                    (&linger as *const libc::linger).cast(),
                    std::mem::size_of::<libc::linger>(),
                )
            }
            Value::Time { seconds, micros } => {
                let tv = libc::timeval {
                    tv_sec: *seconds as libc::time_t,
                    tv_usec: *micros as libc::suseconds_t,
                };
                set(
                    fd,
                    self.level,
                    self.optname,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>(),
                )
            }
            Value::Text(text) => set(
                fd,
                self.level,
                self.optname,
                text.as_ptr().cast(),
                text.len(),
            ),
        }
    }
}

/// The address family of a socket (SO_DOMAIN), or `None` for a non-socket.
fn family(fd: RawFd) -> Option<libc::c_int> {
    let mut domain: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `domain`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&mut domain as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(domain)
}

/// Applies every option meant for `which` to `fd`, in order (a later line for the same
/// option wins). An option the kernel refuses is logged and skipped, as in stunnel.
/// Options of another protocol level than the socket's are skipped silently: IPv4
/// options on an IPv6 socket and the reverse, TCP and IP options on a Unix socket.
pub fn apply_all(fd: RawFd, options: &[SocketOption], which: Which) {
    let Some(domain) = family(fd) else {
        return;
    };
    for option in options.iter().filter(|o| o.which == which) {
        let applies = match option.level {
            libc::SOL_SOCKET => true,
            libc::IPPROTO_TCP => domain == libc::AF_INET || domain == libc::AF_INET6,
            libc::IPPROTO_IP => domain == libc::AF_INET,
            libc::IPPROTO_IPV6 => domain == libc::AF_INET6,
            _ => false,
        };
        if !applies {
            continue;
        }
        if let Err(e) = option.apply(fd) {
            log_err!("setsockopt {}: {e}", option.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::sockopt::parse;

    #[test]
    fn options_reach_the_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        use std::os::fd::AsRawFd;
        let opts = vec![
            parse("r:TCP_NODELAY=yes").unwrap(),
            parse("r:SO_KEEPALIVE=yes").unwrap(),
        ];
        apply_all(stream.as_raw_fd(), &opts, Which::Remote);
        assert!(stream.nodelay().unwrap());
        assert!(socket2::SockRef::from(&stream).keepalive().unwrap());
    }
}
