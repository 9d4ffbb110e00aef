//! TLS clients for the tests that are about what a tunnel does with a session rather than
//! about verification: made with the `openssl` crate, over any stream, optionally checking
//! the server's chain and name and optionally presenting a client certificate.
//!
//! Each one reads a FIN without close_notify as a plain EOF (`Ok(0)`), so a test can tell
//! "the tunnel closed" from a TLS error. The verifying client that returns its failure
//! instead of panicking is `process::tls_connect`.

use std::fmt::Debug;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

use openssl::ssl::{
    HandshakeError, SslConnector, SslFiletype, SslMethod, SslStream, SslVerifyMode,
};

use super::certs::LeafFiles;
use super::net::connect;

/// A TLS handshake over `stream`. `ca`: check the server's chain and the name `localhost`
/// (`None`: no check at all). `client`: present this certificate. Panics if the handshake
/// fails.
pub fn tls_over<S: Read + Write + Debug>(
    stream: S,
    ca: Option<&Path>,
    client: Option<&LeafFiles>,
) -> SslStream<S> {
    handshake(stream, ca, client).unwrap_or_else(|e| panic!("TLS handshake: {e}"))
}

/// [`tls_over`] a new TCP connection to `addr` (with the harness' timeouts); the panic names
/// `addr`.
pub fn tls_to(
    addr: SocketAddr,
    ca: Option<&Path>,
    client: Option<&LeafFiles>,
) -> SslStream<TcpStream> {
    handshake(connect(addr), ca, client)
        .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"))
}

fn handshake<S: Read + Write + Debug>(
    stream: S,
    ca: Option<&Path>,
    client: Option<&LeafFiles>,
) -> Result<SslStream<S>, HandshakeError<S>> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    // OpenSSL 1.1.1 reads such an EOF as EOF already, and has no IGNORE_UNEXPECTED_EOF.
    #[cfg(ossl300)]
    b.set_options(openssl::ssl::SslOptions::IGNORE_UNEXPECTED_EOF);
    match ca {
        Some(ca) => {
            b.set_ca_file(ca).unwrap();
            b.set_verify(SslVerifyMode::PEER);
        }
        None => b.set_verify(SslVerifyMode::NONE),
    }
    if let Some(c) = client {
        b.set_certificate_file(&c.cert, SslFiletype::PEM).unwrap();
        b.set_private_key_file(&c.key, SslFiletype::PEM).unwrap();
    }
    let c = b.build();
    let mut cfg = c.configure().unwrap();
    if ca.is_none() {
        cfg.set_verify_hostname(false);
    }
    cfg.connect("localhost", stream)
}

/// Sends close_notify, then reads until the peer closes; returns what arrived meanwhile.
pub fn tls_close<S: Read + Write>(s: &mut SslStream<S>, what: &str) -> Vec<u8> {
    let _ = s.shutdown();
    let mut rest = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => rest.extend_from_slice(&buf[..n]),
            Err(e) => panic!("{what}: waiting for the peer to close after close_notify: {e}"),
        }
    }
    rest
}

/// Close_notify, then read (briefly) what is left.
pub fn tls_finish<S: Read + Write>(s: &mut SslStream<S>) {
    let _ = s.shutdown();
    let mut buf = [0u8; 256];
    for _ in 0..64 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}
