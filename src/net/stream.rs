//! `Stream`: a connected byte stream as the session and relay use it, whatever it is: a
//! TCP or Unix-domain socket, or (inetd mode, exec'd programs) a pair of descriptors, one
//! to read and one to write. One type, so that the relay's rules are written once.
//!
//! Owns its descriptors and closes them on drop. Never blocks by itself: blocking or not is
//! the descriptor's mode (`set_nonblocking`).

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug)]
enum Kind {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// Separate descriptors for the two directions (stdin/stdout in inetd mode). They may
    /// be the same socket.
    Pair {
        input: File,
        output: File,
    },
}

#[derive(Debug)]
pub struct Stream {
    kind: Kind,
    /// Reads through `Read` that found input (bytes, EOF or an error; not EAGAIN). OpenSSL
    /// reads a TLS socket through `Read`, so the relay compares this before and after an
    /// SSL call to learn whether that call took input off the socket (relay rule 5).
    input_reads: AtomicU64,
    /// The output descriptor's status flags before `set_output_nonblocking` changed them
    /// (-1: unchanged), given back on drop: a descriptor pair may be inherited (inetd
    /// mode's stdin and stdout), and its open file description shared with other
    /// processes, which must not find it non-blocking after we are gone.
    output_flags_before: std::sync::atomic::AtomicI32,
}

fn shutdown_fd(fd: RawFd, how: libc::c_int) {
    // SAFETY: shutdown on a descriptor we own; on a non-socket it fails harmlessly.
    unsafe { libc::shutdown(fd, how) };
}

fn set_fd_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with plain integer arguments.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let wanted = if on {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        if wanted != flags && libc::fcntl(fd, libc::F_SETFL, wanted) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Stream {
    fn of(kind: Kind) -> Stream {
        Stream {
            kind,
            input_reads: AtomicU64::new(0),
            output_flags_before: std::sync::atomic::AtomicI32::new(-1),
        }
    }

    /// How many reads through `Read` have found input so far (see the field).
    pub fn input_reads(&self) -> u64 {
        self.input_reads.load(Relaxed)
    }

    pub fn from_tcp(tcp: TcpStream) -> Stream {
        Stream::of(Kind::Tcp(tcp))
    }

    pub fn from_unix(unix: UnixStream) -> Stream {
        Stream::of(Kind::Unix(unix))
    }

    /// A stream that reads from `input` and writes to `output`.
    pub fn from_pair(input: OwnedFd, output: OwnedFd) -> Stream {
        Stream::of(Kind::Pair {
            input: File::from(input),
            output: File::from(output),
        })
    }

    /// The descriptor to poll for input.
    pub fn read_fd(&self) -> RawFd {
        match &self.kind {
            Kind::Tcp(s) => s.as_raw_fd(),
            Kind::Unix(s) => s.as_raw_fd(),
            Kind::Pair { input, .. } => input.as_raw_fd(),
        }
    }

    /// The descriptor to poll for room to write.
    pub fn write_fd(&self) -> RawFd {
        match &self.kind {
            Kind::Tcp(s) => s.as_raw_fd(),
            Kind::Unix(s) => s.as_raw_fd(),
            Kind::Pair { output, .. } => output.as_raw_fd(),
        }
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        set_fd_nonblocking(self.read_fd(), on)?;
        if self.write_fd() != self.read_fd() {
            set_fd_nonblocking(self.write_fd(), on)?;
        }
        Ok(())
    }

    /// Ends our sending direction (half-close); the other direction stays open.
    pub fn shutdown_write(&self) {
        match &self.kind {
            Kind::Tcp(s) => {
                let _ = s.shutdown(Shutdown::Write);
            }
            Kind::Unix(s) => {
                let _ = s.shutdown(Shutdown::Write);
            }
            Kind::Pair { output, .. } => shutdown_fd(output.as_raw_fd(), libc::SHUT_WR),
        }
    }

    /// Ends both directions, which also wakes a thread blocked in read or write on it.
    pub fn shutdown_both(&self) {
        match &self.kind {
            Kind::Tcp(s) => {
                let _ = s.shutdown(Shutdown::Both);
            }
            Kind::Unix(s) => {
                let _ = s.shutdown(Shutdown::Both);
            }
            Kind::Pair { input, output } => {
                shutdown_fd(input.as_raw_fd(), libc::SHUT_RDWR);
                shutdown_fd(output.as_raw_fd(), libc::SHUT_RDWR);
            }
        }
    }

    /// Bounds how long one blocking read may wait (SO_RCVTIMEO); `None` waits forever.
    pub fn set_read_timeout(&self, timeout: Option<std::time::Duration>) {
        let timeout = timeout.filter(|t| !t.is_zero());
        let _ = match &self.kind {
            Kind::Tcp(s) => s.set_read_timeout(timeout),
            Kind::Unix(s) => s.set_read_timeout(timeout),
            Kind::Pair { input, .. } => socket2::SockRef::from(input).set_read_timeout(timeout),
        };
    }

    /// A TCP stream's peer address.
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        match &self.kind {
            Kind::Tcp(s) => s.peer_addr().ok(),
            _ => None,
        }
    }

    /// A TCP stream's own address.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match &self.kind {
            Kind::Tcp(s) => s.local_addr().ok(),
            _ => None,
        }
    }

    /// Where the client meant to connect before the firewall sent it here: the NAT
    /// original destination (iptables REDIRECT/DNAT, SO_ORIGINAL_DST). A connection that
    /// was not redirected has none (the error says why).
    pub fn original_destination(&self) -> io::Result<std::net::SocketAddr> {
        let Kind::Tcp(s) = &self.kind else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        const SO_ORIGINAL_DST: libc::c_int = 80; // linux/netfilter_ipv4.h
                                                 // SAFETY: getsockopt writes at most `len` bytes into a zeroed sockaddr_in.
        unsafe {
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let rc = libc::getsockopt(
                s.as_raw_fd(),
                libc::SOL_IP,
                SO_ORIGINAL_DST,
                (&mut addr as *mut libc::sockaddr_in).cast(),
                &mut len,
            );
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            let ip = std::net::Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
            Ok(std::net::SocketAddr::from((
                ip,
                u16::from_be(addr.sin_port),
            )))
        }
    }

    /// The peer's address as logs show it, when there is one.
    pub fn peer_description(&self) -> String {
        match &self.kind {
            Kind::Tcp(s) => s
                .peer_addr()
                .map(|a| super::display_addr(&a))
                .unwrap_or_else(|_| "unknown".into()),
            Kind::Unix(_) => "Unix socket".into(),
            Kind::Pair { .. } => "standard input".into(),
        }
    }
}

impl Stream {
    /// Reads what is waiting without blocking: `Ok(None)` when nothing is, `Ok(Some(0))`
    /// at end of stream. Returns how many bytes of the front of `buf` it wrote.
    pub fn try_read_uninit(
        &self,
        buf: &mut [std::mem::MaybeUninit<u8>],
    ) -> io::Result<Option<usize>> {
        let fd = self.read_fd();
        loop {
            let n = match &self.kind {
                // SAFETY: the pointer and length describe `buf`, which the kernel only writes.
                Kind::Tcp(_) | Kind::Unix(_) => unsafe {
                    libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
                },
                // A pipe has no per-call non-blocking flag: ask poll first.
                Kind::Pair { .. } => {
                    let mut fds = [libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    }];
                    // SAFETY: one valid pollfd, zero timeout.
                    match unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) } {
                        0 => return Ok(None),
                        // Interrupted: ask again rather than fall into a blocking read.
                        rc if rc < 0 => -1,
                        _ => {
                            // SAFETY: as for recv above: the kernel only writes `buf`.
                            unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) }
                        }
                    }
                }
            };
            if let Some(result) = settle(n) {
                return result;
            }
        }
    }
}

impl Stream {
    /// Makes writes to the output descriptor of a descriptor pair non-blocking, so that
    /// [`try_write`](Self::try_write) never sleeps in the kernel. Sockets need nothing:
    /// `try_write` asks for a non-blocking send per call. Pipes and pseudo-terminals have
    /// no per-call flag, no send timeout and no `shutdown()`, so a blocking write to one
    /// whose reader has stopped could never be interrupted (relay rule 8).
    pub fn set_output_nonblocking(&self) -> io::Result<()> {
        let Kind::Pair { output, .. } = &self.kind else {
            return Ok(());
        };
        let fd = output.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own, with plain integer arguments.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & libc::O_NONBLOCK == 0 {
            self.output_flags_before.store(flags, Relaxed);
        }
        set_fd_nonblocking(fd, true)
    }

    /// Writes what fits without blocking: `Ok(None)` when nothing does now. A descriptor
    /// pair must have been made non-blocking first ([`set_output_nonblocking`]).
    ///
    /// [`set_output_nonblocking`]: Self::set_output_nonblocking
    pub fn try_write(&self, buf: &[u8]) -> io::Result<Option<usize>> {
        let fd = self.write_fd();
        loop {
            let n = match &self.kind {
                // SAFETY: the pointer and length describe `buf`, which the kernel only reads.
                Kind::Tcp(_) | Kind::Unix(_) => unsafe {
                    libc::send(
                        fd,
                        buf.as_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                },
                // SAFETY: as above.
                Kind::Pair { .. } => unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) },
            };
            if n == 0 && !buf.is_empty() {
                // Never seen on Linux; looping on it would spin.
                return Err(io::ErrorKind::WriteZero.into());
            }
            if let Some(result) = settle(n) {
                return result;
            }
        }
    }
}

/// What a non-blocking read(2) or write(2) result `n` means: a count, "nothing now"
/// (EAGAIN), an error, or `None` when it was interrupted and must be made again.
fn settle(n: isize) -> Option<io::Result<Option<usize>>> {
    if n >= 0 {
        return Some(Ok(Some(n.unsigned_abs())));
    }
    let err = io::Error::last_os_error();
    match err.kind() {
        io::ErrorKind::Interrupted => None,
        io::ErrorKind::WouldBlock => Some(Ok(None)),
        _ => Some(Err(err)),
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let flags = self.output_flags_before.load(Relaxed);
        if flags >= 0 {
            // SAFETY: fcntl on a descriptor we still own (it closes after this).
            unsafe { libc::fcntl(self.write_fd(), libc::F_SETFL, flags) };
        }
    }
}

impl AsRawFd for Stream {
    /// The read descriptor (the only one for sockets), for socket options.
    fn as_raw_fd(&self) -> RawFd {
        self.read_fd()
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = match &self.kind {
            Kind::Tcp(s) => (&*s).read(buf),
            Kind::Unix(s) => (&*s).read(buf),
            Kind::Pair { input, .. } => (&*input).read(buf),
        };
        if !matches!(&result, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            self.input_reads.fetch_add(1, Relaxed);
        }
        result
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.kind {
            Kind::Tcp(s) => (&*s).write(buf),
            Kind::Unix(s) => (&*s).write(buf),
            Kind::Pair { output, .. } => (&*output).write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
