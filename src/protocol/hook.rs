//! What a protocol hook is and what it is given: `Exchange` (the options and the two
//! connections, in clear), `Hook`, and for `socks` the `Channel` over the TLS session and
//! `TargetHook`. Types only; a leaf of `protocol/`, shared by the table (`mod.rs`) and the
//! exchanges.

use std::io::{Read, Write};

use crate::config::ServiceOptions;
use crate::net::Stream;

/// What a protocol hook gets.
pub struct Exchange<'a> {
    pub opts: &'a ServiceOptions,
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

pub type TargetHook = fn(&ServiceOptions, &mut dyn Channel) -> Result<Stream, String>;
