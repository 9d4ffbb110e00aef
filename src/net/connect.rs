//! Outgoing connections: try each resolved address in order, each with its own
//! TIMEOUTconnect deadline, logging every attempt as stunnel does (`s_connect: …`).
//! Returns a blocking socket with the service's `socket = r:…` options (by default
//! TCP_NODELAY).

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

use std::os::unix::net::UnixStream;

use super::addr::{display_addr, Addr};
use super::sockopt;
use super::Stream;
use crate::config::sockopt::{SocketOption, Which};

/// Why every address of `connect_first` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectFailure {
    /// How the last attempt failed.
    pub why: String,
    /// Some attempt failed for a reason of this host, not of the far side (see
    /// `is_local_shortage`): the far side may well be up.
    pub local: bool,
}

/// Errors that say nothing about the far side: this process or host ran out of
/// descriptors, buffers or memory.
pub fn is_local_shortage(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// How a service makes its outgoing connections: TIMEOUTconnect per address, the `socket =
/// r:…` options, and where they come from. A narrow view that the callers (sessions,
/// probes, SOCKS) fill from their configuration.
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    pub timeout: Duration,
    pub socket_options: &'a [SocketOption],
    pub source: Option<Source>,
    /// Where a session's failed connects are counted, by target (`None`: a probe's).
    pub failures: Option<&'a crate::metrics::ServiceCounters>,
}

/// Connects to the first address that answers. Every failure is logged; `Err` means all
/// failed (the caller ends the session) and says how the last one did.
pub fn connect_first(addrs: &[Addr], spec: &Spec<'_>) -> Result<(Stream, String), ConnectFailure> {
    let (timeout, options, local) = (spec.timeout, spec.socket_options, spec.source);
    let mut last = String::from("no address to connect to");
    let mut shortage = false;
    for addr in addrs {
        log_info!("s_connect: connecting {addr}");
        // A zero timeout would be rejected by connect_timeout; stunnel then fails at once.
        let attempt = if timeout.is_zero() {
            Err(std::io::Error::from(std::io::ErrorKind::TimedOut))
        } else {
            match addr {
                Addr::Inet(inet) => connect_inet(inet, timeout, options, local),
                Addr::Unix(path) => {
                    UnixStream::connect(path).map(|s| (Stream::from_unix(s), addr.to_string()))
                }
            }
        };
        match attempt {
            Ok(connected) => {
                log_info!("s_connect: connected {addr}");
                return Ok(connected);
            }
            Err(e) => {
                shortage |= is_local_shortage(&e);
                if let Some(counters) = spec.failures {
                    counters.connect_failed(&addr.to_string());
                }
                last = format!("connect {addr}: {}", describe(&e));
                log_err!(
                    "s_connect: connect {addr}: {} ({})",
                    describe(&e),
                    e.raw_os_error().unwrap_or(0)
                )
            }
        }
    }
    log_err!("No more addresses to connect");
    Err(ConnectFailure {
        why: last,
        local: shortage,
    })
}

/// A probe's connect (`health`): one address, logged by the caller only, within `timeout`,
/// given up early when `cancel` becomes readable (the listener is being stopped). Returns a
/// non-blocking stream.
pub fn probe_connect(
    addr: &Addr,
    spec: &Spec<'_>,
    cancel: std::os::fd::RawFd,
) -> std::io::Result<Stream> {
    let (timeout, options, local) = (spec.timeout, spec.socket_options, spec.source);
    let inet = match addr {
        Addr::Inet(inet) => inet,
        Addr::Unix(path) => return probe_connect_unix(path),
    };
    // A probe repeats every few seconds while paused: an IP_TRANSPARENT failure is the
    // sessions' to report, once each, not the probe's.
    let socket = outgoing_socket(inet, options, local, false)?;
    socket.set_nonblocking(true)?;
    match socket.connect(&(*inet).into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            let mut fds = [
                crate::wake::pollfd(socket.as_raw_fd(), libc::POLLOUT),
                crate::wake::pollfd(cancel, libc::POLLIN),
            ];
            if crate::wake::poll(&mut fds, Some(timeout))? == 0 {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            if fds[1].revents != 0 && fds[0].revents == 0 {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            if let Some(e) = socket.take_error()? {
                return Err(e);
            }
        }
        Err(e) => return Err(e),
    }
    let stream: TcpStream = socket.into();
    Ok(Stream::from_tcp(stream))
}

/// A probe's Unix connect, non-blocking: the listener thread must never wait in the
/// kernel. A full backlog (EAGAIN) means the far side does not take connections now: not
/// answering. Linux completes or refuses a Unix connect at once otherwise.
fn probe_connect_unix(path: &std::path::Path) -> std::io::Result<Stream> {
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    match socket.connect(&socket2::SockAddr::unix(path)?) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "its listen backlog is full",
            ))
        }
        Err(e) => return Err(e),
    }
    let stream: UnixStream = socket.into();
    Ok(Stream::from_unix(stream))
}

/// One TCP attempt: a socket with the `socket = r:…` options and the `local` source
/// address, connected within `timeout`. Returns the stream and its local address.
fn connect_inet(
    addr: &SocketAddr,
    timeout: Duration,
    options: &[SocketOption],
    local: Option<Source>,
) -> std::io::Result<(Stream, String)> {
    let socket = outgoing_socket(addr, options, local, true)?;
    socket.connect_timeout(&(*addr).into(), timeout)?;
    let stream: TcpStream = socket.into();
    let from = stream
        .local_addr()
        .map(|a| display_addr(&a))
        .unwrap_or_else(|_| "unknown".into());
    Ok((Stream::from_tcp(stream), from))
}

/// The socket of an outgoing TCP connection, not yet connected: the `socket = r:…` options
/// and the `local` source address, shared by sessions and probes so that a probe tests the
/// same path. `report_transparent` logs an IP_TRANSPARENT failure.
fn outgoing_socket(
    addr: &SocketAddr,
    options: &[SocketOption],
    local: Option<Source>,
    report_transparent: bool,
) -> std::io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(*addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    sockopt::apply_all(socket.as_raw_fd(), options, Which::Remote);
    if let Some(source) = local {
        if source.transparent {
            // Needed to bind a foreign address; bind() itself says whether it works.
            if let Err(e) = set_transparent(socket.as_raw_fd(), addr.is_ipv6()) {
                if report_transparent {
                    log_err!(
                        "setsockopt IP_TRANSPARENT: {} ({})",
                        describe(&e),
                        e.raw_os_error().unwrap_or(0)
                    );
                }
            }
        }
        // The source address; the kernel picks the port.
        socket.bind(&SocketAddr::new(source.ip, 0).into())?;
    }
    Ok(socket)
}

/// Where an outgoing connection comes from: `local = IP`, or (transparent = source) the
/// client's own address, which needs IP_TRANSPARENT (CAP_NET_ADMIN) to bind.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    pub ip: IpAddr,
    pub transparent: bool,
}

/// IP_TRANSPARENT / IPV6_TRANSPARENT: bind to (or accept for) an address that is not
/// local, for transparent proxying (Linux, CAP_NET_ADMIN).
pub fn set_transparent(fd: std::os::fd::RawFd, ipv6: bool) -> std::io::Result<()> {
    let (level, name) = if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_TRANSPARENT)
    } else {
        (libc::IPPROTO_IP, libc::IP_TRANSPARENT)
    };
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
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
