//! Listening sockets for `accept` addresses: TCP, or a Unix-domain socket path. Binding
//! happens at startup, before any thread exists or privileges are dropped; the sockets
//! are non-blocking so that one listener thread can poll all of a service's addresses and
//! its stop signal.
//!
//! A listener can be paused without closing it (`pauseWhenDown`, see `health`): a TCP
//! listener is taken out of the listening state with `shutdown(SHUT_RD)`, so the kernel
//! answers new SYNs with RST (the sender's connect fails with ECONNREFUSED at once), and
//! `listen()` again resumes it. Linux keeps the port bound meanwhile only if it was bound
//! to an explicit port (port 0 is bound once more by number below, for that reason), and
//! SO_REUSEADDR is switched off for the pause so that no other socket can bind the port
//! while this one does not listen. A Unix listener cannot do the same: after shutdown the
//! kernel refuses connects on it for good, listen() or not. So a paused Unix listener keeps
//! listening and is simply not accepted from (`Paused::Holding`): connections wait in its
//! backlog, their data unread, until the service resumes (or the backlog fills and the
//! kernel makes further connects wait or fail).

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

/// How a paused listener is paused, for `resume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paused {
    /// Not listening (TCP): connects are refused. `reuse_addr` is SO_REUSEADDR as it was.
    Refusing { reuse_addr: bool },
    /// Still listening but not accepted from (Unix): connects wait in the backlog.
    Holding,
}

impl ListenSocket {
    /// Stops taking connections without closing the socket (see the module header).
    pub fn pause(&self) -> io::Result<Paused> {
        match self {
            ListenSocket::Unix(_) => Ok(Paused::Holding),
            ListenSocket::Tcp(l) => {
                let socket = socket2::SockRef::from(l);
                let reuse_addr = socket.reuse_address()?;
                // No other socket may bind the port while this one is not listening.
                socket.set_reuse_address(false)?;
                // SAFETY: shutdown on our own descriptor; no memory is passed.
                if unsafe { libc::shutdown(l.as_raw_fd(), libc::SHUT_RD) } != 0 {
                    let e = io::Error::last_os_error();
                    let _ = socket.set_reuse_address(reuse_addr);
                    return Err(e);
                }
                Ok(Paused::Refusing { reuse_addr })
            }
        }
    }

    /// Takes connections again after `pause`; safe to call on a listening socket.
    pub fn resume(&self, paused: Paused) -> io::Result<()> {
        match (self, paused) {
            (ListenSocket::Tcp(l), Paused::Refusing { reuse_addr }) => {
                // SO_REUSEADDR back first: listen() checks the port again, against the
                // sockets of earlier connections too, as bind() did.
                socket2::SockRef::from(l).set_reuse_address(reuse_addr)?;
                // SAFETY: listen on our own descriptor; no memory is passed.
                if unsafe { libc::listen(l.as_raw_fd(), libc::SOMAXCONN) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

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
            let socket = if inet.port() == 0 {
                pin_port(socket, options)
            } else {
                socket
            };
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

/// Port 0: the kernel picked a port for `first`, but a socket bound that way gives its port
/// back when a pause takes it out of the listening state. So a second socket is bound to
/// the same port by number while `first` still holds it (both have SO_REUSEADDR, and
/// neither listens yet, so the kernel allows it), and `first` is closed. Without
/// SO_REUSEADDR that bind fails and `first` is used as it is (a pause may then lose its
/// port).
fn pin_port(first: Socket, options: &[SocketOption]) -> Socket {
    let pinned = || -> io::Result<Socket> {
        let addr = first.local_addr()?;
        let second = Socket::new(
            Domain::for_address(addr.as_socket().ok_or(io::ErrorKind::InvalidInput)?),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        sockopt::apply_all(second.as_raw_fd(), options, Which::Accept);
        second.bind(&addr)?;
        Ok(second)
    };
    pinned().unwrap_or(first)
}

/// A socket file from an earlier run would make bind() fail; anything else at that path
/// (a regular file) is left alone so that bind() reports it.
fn remove_stale_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, TcpStream};

    fn reuse_addr_on() -> Vec<SocketOption> {
        vec![sockopt::parse("a:SO_REUSEADDR=yes").expect("valid option")]
    }

    fn try_bind_again(addr: SocketAddr) -> io::Result<()> {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.bind(&addr.into())
    }

    /// What `pauseWhenDown` relies on, on the running kernel: while paused, connects are
    /// refused and the port cannot be bound by anyone else; after resume, connects work.
    #[test]
    fn a_paused_tcp_listener_refuses_keeps_its_port_and_resumes() {
        let (socket, bound) = bind(
            &Addr::Inet("127.0.0.1:0".parse().unwrap()),
            &reuse_addr_on(),
            (None, None),
            false,
        )
        .unwrap();
        let Addr::Inet(addr) = bound else { panic!() };
        TcpStream::connect(addr).expect("listening");
        let paused = socket.pause().unwrap();
        let refused = TcpStream::connect(addr).unwrap_err();
        assert_eq!(refused.raw_os_error(), Some(libc::ECONNREFUSED));
        let taken = try_bind_again(addr).unwrap_err();
        assert_eq!(taken.raw_os_error(), Some(libc::EADDRINUSE));
        socket.resume(paused).unwrap();
        let _c = TcpStream::connect(addr).expect("resumed");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(socket.accept().is_ok());
        // Paused and resumed twice: the same.
        let paused = socket.pause().unwrap();
        assert!(TcpStream::connect(addr).is_err());
        socket.resume(paused).unwrap();
        assert!(TcpStream::connect(addr).is_ok());
    }

    #[test]
    fn a_paused_unix_listener_holds_connections_until_resumed() {
        let dir = std::env::temp_dir().join(format!("rstunnel-pause-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("l.sock");
        let (socket, _) = bind(&Addr::Unix(path.clone()), &[], (None, None), false).unwrap();
        let paused = socket.pause().unwrap();
        assert_eq!(paused, Paused::Holding);
        let _waiting = std::os::unix::net::UnixStream::connect(&path).expect("held in backlog");
        socket.resume(paused).unwrap();
        assert!(socket.accept().is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
