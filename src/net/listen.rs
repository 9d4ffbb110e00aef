//! Listening sockets for `accept` addresses. Binding happens at startup, before any
//! thread exists or privileges are dropped; the sockets are non-blocking so that one
//! listener thread can poll all of a service's addresses and its stop signal.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds and listens on `addr` with SO_REUSEADDR (stunnel's `a:SO_REUSEADDR=yes` default),
/// close-on-exec and non-blocking. Returns the listener and the address it really got
/// (port 0 picks a free port).
pub fn bind(addr: SocketAddr) -> io::Result<(TcpListener, SocketAddr)> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(libc::SOMAXCONN)?;
    socket.set_nonblocking(true)?;
    let listener: TcpListener = socket.into();
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}
