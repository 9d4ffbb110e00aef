//! `Stream`: a connected socket as the session and relay use it. One type so that the
//! relay's rules are written once, whatever the socket; Unix sockets join it later.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

#[derive(Debug)]
pub struct Stream {
    tcp: TcpStream,
}

impl Stream {
    pub fn from_tcp(tcp: TcpStream) -> Stream {
        Stream { tcp }
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.tcp.set_nonblocking(on)
    }

    /// Ends our sending direction (half-close); the other direction stays open.
    pub fn shutdown_write(&self) {
        let _ = self.tcp.shutdown(Shutdown::Write);
    }

    /// Ends both directions, which also wakes a thread blocked in read or write on it.
    pub fn shutdown_both(&self) {
        let _ = self.tcp.shutdown(Shutdown::Both);
    }

    /// Bounds how long one blocking write may wait for the peer to read (SO_SNDTIMEO);
    /// a zero duration leaves writes unbounded.
    pub fn set_write_timeout(&self, timeout: std::time::Duration) {
        if !timeout.is_zero() {
            let _ = self.tcp.set_write_timeout(Some(timeout));
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.tcp).read(buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&self.tcp).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.tcp).read(buf)
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&self.tcp).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
