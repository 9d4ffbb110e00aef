//! What a protocol hook is and what it is given: `Exchange` (its `Settings` and the two
//! connections, in clear), `Hook`, and for `socks` the `Channel` over the TLS session and
//! `TargetHook`. Types only; a leaf of `protocol/`, shared by the table (`mod.rs`) and the
//! exchanges.

use std::io::{Read, Write};
use std::time::Duration;

use crate::net::connect::Spec;
use crate::net::Stream;

/// What the exchanges read of their service's configuration: a narrow view of it (the
/// caller fills it from `ServiceOptions`), so that `protocol` depends on these values and
/// on nothing else a service is configured with.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    /// `protocolHost`: the host an exchange names (SMTP's EHLO, HTTP CONNECT's target).
    pub host: Option<&'a str>,
    /// `protocolUsername` / `protocolPassword` (HTTP CONNECT's Basic authentication).
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    /// `protocolHeader` lines (HTTP CONNECT).
    pub headers: &'a [String],
    /// How SOCKS opens the connection its client asks for.
    pub connect: Spec<'a>,
}

impl Default for Settings<'_> {
    /// Nothing configured, and stunnel's TIMEOUTconnect of 10 s.
    fn default() -> Self {
        Settings {
            host: None,
            username: None,
            password: None,
            headers: &[],
            connect: Spec {
                timeout: Duration::from_secs(10),
                socket_options: &[],
                source: None,
                failures: None,
            },
        }
    }
}

/// What a protocol hook gets.
pub struct Exchange<'a> {
    pub settings: Settings<'a>,
    /// The accepted connection (client side: the local plain client).
    pub local: &'a Stream,
    /// The far connection, still in clear; `None` before it is made (server side, before
    /// the handshake).
    pub far: Option<&'a Stream>,
}

impl Exchange<'_> {
    pub(super) fn far(&self) -> Result<&Stream, String> {
        self.far.ok_or_else(|| "no far connection yet".to_string())
    }
}

pub type Hook = fn(&Exchange<'_>) -> Result<(), String>;

/// A blocking byte stream over the TLS session (reads and writes wait as needed).
pub trait Channel: Read + Write {}
impl<T: Read + Write> Channel for T {}

pub type TargetHook = fn(&Settings<'_>, &mut dyn Channel) -> Result<Stream, String>;
