//! Listening sockets for `accept` addresses: TCP, or a Unix-domain socket path. Binding
//! happens at startup, before any thread exists or privileges are dropped; the sockets
//! are non-blocking so that one listener thread can poll all of a service's addresses and
//! its stop signal.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use socket2::{Domain, Protocol, Socket, Type};

use super::addr::Addr;
use super::sockopt::{self, SocketOption, Which};
use super::Stream;

/// A bound, listening socket.
#[derive(Debug)]
pub enum ListenSocket {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl ListenSocket {
    pub fn as_raw_fd(&self) -> RawFd {
        match self {
            ListenSocket::Tcp(l) => l.as_raw_fd(),
            ListenSocket::Unix(l) => l.as_raw_fd(),
        }
    }

    /// Accepts one connection: the stream and the peer as logs show it. `WouldBlock` when
    /// none is waiting.
    pub fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            ListenSocket::Tcp(l) => {
                let (stream, peer) = l.accept()?;
                Ok((Stream::from_tcp(stream), super::display_addr(&peer)))
            }
            ListenSocket::Unix(l) => {
                let (stream, _) = l.accept()?;
                Ok((Stream::from_unix(stream), "Unix socket".into()))
            }
        }
    }
}

/// Binds and listens on `addr`, close-on-exec and non-blocking. A TCP socket gets the
/// service's `socket = a:…` options (by default SO_REUSEADDR) before `bind`; a Unix socket
/// path left by an earlier run is removed first, and the new one is given to `owner`
/// (section `setuid`/`setgid`). Returns the socket and the address it really got (port 0
/// picks a free port).
pub fn bind(
    addr: &Addr,
    options: &[SocketOption],
    owner: (Option<libc::uid_t>, Option<libc::gid_t>),
    transparent: bool,
) -> io::Result<(ListenSocket, Addr)> {
    match addr {
        Addr::Inet(inet) => {
            let socket = Socket::new(
                Domain::for_address(*inet),
                Type::STREAM,
                Some(Protocol::TCP),
            )?;
            sockopt::apply_all(socket.as_raw_fd(), options, Which::Accept);
            if transparent {
                // For TPROXY; NAT redirection (the common case) does not need it, so
                // without CAP_NET_ADMIN this is only a warning.
                if let Err(e) = super::connect::set_transparent(socket.as_raw_fd(), inet.is_ipv6())
                {
                    log_warning!("setsockopt IP_TRANSPARENT on {addr}: {e}");
                }
            }
            socket.bind(&(*inet).into())?;
            socket.listen(libc::SOMAXCONN)?;
            socket.set_nonblocking(true)?;
            let listener: TcpListener = socket.into();
            let bound = listener.local_addr()?;
            Ok((ListenSocket::Tcp(listener), Addr::Inet(bound)))
        }
        Addr::Unix(path) => {
            remove_stale_socket(path);
            let listener = UnixListener::bind(path)?;
            listener.set_nonblocking(true)?;
            if owner.0.is_some() || owner.1.is_some() {
                std::os::unix::fs::chown(path, owner.0, owner.1)?;
            }
            Ok((ListenSocket::Unix(listener), addr.clone()))
        }
    }
}

/// A socket file from an earlier run would make bind() fail; anything else at that path
/// (a regular file) is left alone so that bind() reports it.
fn remove_stale_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}
