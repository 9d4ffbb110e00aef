//! Outgoing connections: try each resolved address in order, each with its own
//! TIMEOUTconnect deadline, logging every attempt as stunnel does (`s_connect: …`).
//! Returns a blocking socket with the service's `socket = r:…` options (by default
//! TCP_NODELAY).

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

use super::addr::display_addr;
use super::sockopt::{self, SocketOption, Which};

/// Connects to the first address that answers. Every failure is logged; `None` means all
/// failed (the caller ends the session).
pub fn connect_first(
    addrs: &[SocketAddr],
    timeout: Duration,
    options: &[SocketOption],
    local: Option<IpAddr>,
) -> Option<TcpStream> {
    for addr in addrs {
        log_info!("s_connect: connecting {}", display_addr(addr));
        // A zero timeout would be rejected by connect_timeout; stunnel then fails at once.
        let attempt = if timeout.is_zero() {
            Err(std::io::Error::from(std::io::ErrorKind::TimedOut))
        } else {
            connect_one(addr, timeout, options, local)
        };
        match attempt {
            Ok(stream) => {
                log_info!("s_connect: connected {}", display_addr(addr));
                return Some(stream);
            }
            Err(e) => log_err!(
                "s_connect: connect {}: {} ({})",
                display_addr(addr),
                describe(&e),
                e.raw_os_error().unwrap_or(0)
            ),
        }
    }
    log_err!("No more addresses to connect");
    None
}

/// One attempt: a socket with the `socket = r:…` options, connected within `timeout`.
fn connect_one(
    addr: &SocketAddr,
    timeout: Duration,
    options: &[SocketOption],
    local: Option<IpAddr>,
) -> std::io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(*addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    sockopt::apply_all(socket.as_raw_fd(), options, Which::Remote, addr.is_ipv6());
    if let Some(ip) = local {
        // `local`: the source address; the kernel picks the port.
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.connect_timeout(&(*addr).into(), timeout)?;
    Ok(socket.into())
}

/// The C library's text for an errno, as stunnel prints it (`Connection refused`).
pub fn describe(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        // SAFETY: strerror returns a valid NUL-terminated static string for any errno.
        Some(code) => unsafe { std::ffi::CStr::from_ptr(libc::strerror(code)) }
            .to_string_lossy()
            .into_owned(),
        None if e.kind() == std::io::ErrorKind::TimedOut => "Connection timed out".into(),
        None => e.to_string(),
    }
}
