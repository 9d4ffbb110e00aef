//! Listening sockets for `accept` addresses. Binding happens at startup, before any
//! thread exists or privileges are dropped; the sockets are non-blocking so that one
//! listener thread can poll all of a service's addresses and its stop signal.

use std::io;
use std::net::{SocketAddr, TcpListener};

use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

use super::sockopt::{self, SocketOption, Which};

/// Binds and listens on `addr`, close-on-exec and non-blocking, after setting the
/// service's `socket = a:…` options (by default SO_REUSEADDR). Returns the listener and
/// the address it really got (port 0 picks a free port).
pub fn bind(addr: SocketAddr, options: &[SocketOption]) -> io::Result<(TcpListener, SocketAddr)> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sockopt::apply_all(socket.as_raw_fd(), options, Which::Accept, addr.is_ipv6());
    socket.bind(&addr.into())?;
    socket.listen(libc::SOMAXCONN)?;
    socket.set_nonblocking(true)?;
    let listener: TcpListener = socket.into();
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}
