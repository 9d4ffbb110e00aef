//! A transparent TCP forwarder from the host's loopback into a network namespace the test
//! owns: for a peer that cannot be told which address to listen on (`gnutls-serv` binds
//! every address), run inside a namespace with only `lo`, and reached from 127.0.0.1.
//!
//! Owns the listener on 127.0.0.1 and the byte pumps; must not look at or change the bytes:
//! each direction is copied as it comes, its EOF passed on as `shutdown(Write)` on the other
//! side (so half-close and the TLS close_notify sequence pass through unchanged), and an
//! error on either side (a reset) resets the other one too, since a peer's reaction to a
//! reset (a TLS alert followed by RST, say) differs from its reaction to a clean close. The
//! namespace itself is the caller's ([`super::netns::Namespaces`]).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::faults::in_named_netns;

/// Forwards every connection to its [`Forwarder::addr`] (127.0.0.1, a port of its own) to
/// `target` as reached inside namespace `ns`. On drop it stops accepting; connections
/// still open end with their peers (the server in the namespace is stopped first).
pub struct Forwarder {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Forwarder {
    pub fn start(ns: &str, target: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let ns = ns.to_string();
        let acceptor = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(outer) = conn else { continue };
                    // A socket keeps the namespace it was made in, so only the connect
                    // needs a thread inside it.
                    let ns = ns.clone();
                    let inner = in_named_netns(&ns, move || TcpStream::connect(target));
                    let Ok(inner) = inner else {
                        // Nothing listens inside (the server is gone): a reset, the
                        // nearest to the refused connect the client would have seen.
                        reset_on_close(&outer);
                        continue;
                    };
                    let _ = outer.set_nodelay(true);
                    let _ = inner.set_nodelay(true);
                    let (o2, i2) = (outer.try_clone().unwrap(), inner.try_clone().unwrap());
                    let aborted = Arc::new(AtomicBool::new(false));
                    let a2 = aborted.clone();
                    std::thread::spawn(move || pump(outer, i2, &aborted));
                    std::thread::spawn(move || pump(inner, o2, &a2));
                }
            })
        };
        Forwarder {
            addr,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// Where the host side connects: 127.0.0.1 and the forwarder's own port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Copies `from` to `to` until `from`'s EOF, passed on as `shutdown(Write)` on `to`. On an
/// error either way (a reset) both sockets are made to reset when closed (`SO_LINGER` 0)
/// and their reading side is shut, which wakes the other direction's pump without sending
/// anything; `aborted` tells it not to pass that on as an EOF. The sockets close, with RST,
/// when both pumps have dropped their descriptors.
fn pump(mut from: TcpStream, mut to: TcpStream, aborted: &AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => {
                if !aborted.load(Ordering::SeqCst) {
                    let _ = to.shutdown(Shutdown::Write);
                }
                return;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    aborted.store(true, Ordering::SeqCst);
    for s in [&from, &to] {
        reset_on_close(s);
        let _ = s.shutdown(Shutdown::Read);
    }
}

/// `SO_LINGER` with a zero timeout: closing the socket sends RST instead of FIN.
fn reset_on_close(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an open socket with a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept, which then sees `stop`.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}
