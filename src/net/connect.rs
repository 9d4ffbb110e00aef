//! Outgoing connections: try each resolved address in order, each with its own
//! TIMEOUTconnect deadline, logging every attempt as stunnel does (`s_connect: …`).
//! Returns a blocking socket with TCP_NODELAY (stunnel's `r:TCP_NODELAY=yes` default).

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::addr::display_addr;

/// Connects to the first address that answers. Every failure is logged; `None` means all
/// failed (the caller ends the session).
pub fn connect_first(addrs: &[SocketAddr], timeout: Duration) -> Option<TcpStream> {
    for addr in addrs {
        log_info!("s_connect: connecting {}", display_addr(addr));
        // A zero timeout would be rejected by connect_timeout; stunnel then fails at once.
        let attempt = if timeout.is_zero() {
            Err(std::io::Error::from(std::io::ErrorKind::TimedOut))
        } else {
            TcpStream::connect_timeout(addr, timeout)
        };
        match attempt {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
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
